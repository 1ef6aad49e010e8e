//! Mailbox routing headers: the recipient's inbox id, sealed to the storage server's public
//! key with HPKE (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! ChaCha20-Poly1305), as a [`crate::sealed`] request whose response is the deposit's status
//! for the sender alone. The proxy and the network carry it but cannot read it; storage opens it
//! to file the envelope, and never learns the sender (batches come shuffled, from the proxy).
//!
//! Clients pin storage's routing public key; a header sealed to any other key is unreadable
//! to storage, so a substituted key is caught at once (deliveries fail).

use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, Serializable};

use crate::sealed::{Responder, seal_request};
use rand::CryptoRng;

type Kem = X25519HkdfSha256;

const INFO: &[u8] = b"shroud-routing-v1";

/// Bytes of an inbox id.
pub const INBOX_LEN: usize = 16;
/// Bytes of a sealed routing header: encapsulated key, inbox id, tag.
pub const ROUTING_LEN: usize = 32 + INBOX_LEN + 16;
/// The inbox that dummy envelopes go to; storage drops what it receives.
pub const NULL_INBOX: [u8; INBOX_LEN] = [0; INBOX_LEN];

/// A routing-header failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoutingError {
    /// Not a header sealed to this key (or altered).
    #[error("routing header does not open")]
    Open,
    /// A key of the wrong form.
    #[error("bad routing key")]
    Key,
}

/// Storage's routing key pair.
///
/// # Security
/// The private half is storage's own secret (it reveals inbox ids, which storage sees anyway).
pub struct RoutingKey {
    sk: <Kem as hpke::Kem>::PrivateKey,
    pk: <Kem as hpke::Kem>::PublicKey,
}

impl RoutingKey {
    /// A fresh key pair.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut ikm = [0u8; 32];
        rng.fill_bytes(&mut ikm);
        let (sk, pk) = Kem::derive_keypair(&ikm);
        RoutingKey { sk, pk }
    }

    /// From stored private bytes.
    pub fn from_secret(bytes: &[u8]) -> Result<Self, RoutingError> {
        let sk =
            <Kem as hpke::Kem>::PrivateKey::from_bytes(bytes).map_err(|_| RoutingError::Key)?;
        let pk = Kem::sk_to_pk(&sk);
        Ok(RoutingKey { sk, pk })
    }

    /// The private bytes, to store.
    pub fn secret(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.sk.to_bytes());
        out
    }

    /// The public key clients pin.
    pub fn public(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.pk.to_bytes());
        out
    }

    /// Opens a header: the inbox id, and what seals the deposit's status for its sender.
    pub fn open(&self, header: &[u8]) -> Result<([u8; INBOX_LEN], Responder), RoutingError> {
        if header.len() != ROUTING_LEN {
            return Err(RoutingError::Open);
        }
        let (plain, responder) = self.open_request(INFO, header)?;
        let inbox = plain[..].try_into().map_err(|_| RoutingError::Open)?;
        Ok((inbox, responder))
    }

    pub(crate) fn private(&self) -> &<Kem as hpke::Kem>::PrivateKey {
        &self.sk
    }
}

/// Seals `inbox` to storage's routing public key; returns the header and what opens
/// storage's sealed answer about it.
pub fn seal<R: CryptoRng>(
    storage_pk: &[u8; 32],
    inbox: &[u8; INBOX_LEN],
    rng: &mut R,
) -> Result<([u8; ROUTING_LEN], Responder), RoutingError> {
    let (bytes, responder) = seal_request(storage_pk, INFO, inbox, rng)?;
    let header = bytes.try_into().map_err(|_| RoutingError::Key)?;
    Ok((header, responder))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_storage_reads_the_inbox() {
        let mut rng = rand::rng();
        let storage = RoutingKey::generate(&mut rng);
        let other = RoutingKey::generate(&mut rng);
        let (h, _) = seal(&storage.public(), &[7; INBOX_LEN], &mut rng).unwrap();
        assert_eq!(storage.open(&h).unwrap().0, [7; INBOX_LEN]);
        assert!(other.open(&h).is_err());
        let mut bad = h;
        bad[40] ^= 1;
        assert!(storage.open(&bad).is_err());
        let again = RoutingKey::from_secret(&storage.secret()).unwrap();
        assert_eq!(again.public(), storage.public());
        assert_eq!(again.open(&h).unwrap().0, [7; INBOX_LEN]);
        // Two headers for one inbox share nothing.
        let (h2, _) = seal(&storage.public(), &[7; INBOX_LEN], &mut rng).unwrap();
        assert_ne!(h, h2);
    }
}
