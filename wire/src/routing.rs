//! Mailbox routing headers: the recipient's inbox id, sealed to the storage server's public
//! key with HPKE (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! ChaCha20-Poly1305). The proxy and the network carry it but cannot read it; storage opens it
//! to file the envelope, and never learns the sender (batches come shuffled, from the proxy).
//!
//! Clients pin storage's routing public key; a header sealed to any other key is unreadable
//! to storage, so a substituted key is caught at once (deliveries fail).

use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use rand::CryptoRng;

type Kem = X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

const INFO: &[u8] = b"shroud-routing-v1";

/// Bytes of an inbox id.
pub const INBOX_LEN: usize = 16;
/// Bytes of a sealed routing header: encapsulated key, inbox id, tag.
pub const ROUTING_LEN: usize = 32 + INBOX_LEN + 16;
/// The inbox that dummy envelopes go to; storage drops what it receives.
pub const NULL_INBOX: [u8; INBOX_LEN] = [0; INBOX_LEN];

/// A routing-header failure.
#[derive(Debug, thiserror::Error)]
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

    /// Opens a header: the inbox id.
    pub fn open(&self, header: &[u8]) -> Result<[u8; INBOX_LEN], RoutingError> {
        if header.len() != ROUTING_LEN {
            return Err(RoutingError::Open);
        }
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&header[..32])
            .map_err(|_| RoutingError::Open)?;
        let plain = hpke::single_shot_open::<Aead, Kdf, Kem>(
            &OpModeR::Base,
            &self.sk,
            &enc,
            INFO,
            &header[32..],
            b"",
        )
        .map_err(|_| RoutingError::Open)?;
        plain.try_into().map_err(|_| RoutingError::Open)
    }
}

/// Seals `inbox` to storage's routing public key.
pub fn seal<R: CryptoRng>(
    storage_pk: &[u8; 32],
    inbox: &[u8; INBOX_LEN],
    rng: &mut R,
) -> Result<[u8; ROUTING_LEN], RoutingError> {
    let pk =
        <Kem as hpke::Kem>::PublicKey::from_bytes(storage_pk).map_err(|_| RoutingError::Key)?;
    let (enc, ct) = hpke::single_shot_seal_with_rng::<Aead, Kdf, Kem>(
        &OpModeS::Base,
        &pk,
        INFO,
        inbox,
        b"",
        rng,
    )
    .map_err(|_| RoutingError::Key)?;
    let mut out = [0u8; ROUTING_LEN];
    out[..32].copy_from_slice(&enc.to_bytes());
    out[32..].copy_from_slice(&ct);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_storage_reads_the_inbox() {
        let mut rng = rand::rng();
        let storage = RoutingKey::generate(&mut rng);
        let other = RoutingKey::generate(&mut rng);
        let h = seal(&storage.public(), &[7; INBOX_LEN], &mut rng).unwrap();
        assert_eq!(storage.open(&h).unwrap(), [7; INBOX_LEN]);
        assert!(other.open(&h).is_err());
        let mut bad = h;
        bad[40] ^= 1;
        assert!(storage.open(&bad).is_err());
        let again = RoutingKey::from_secret(&storage.secret()).unwrap();
        assert_eq!(again.public(), storage.public());
        assert_eq!(again.open(&h).unwrap(), [7; INBOX_LEN]);
        // Two headers for one inbox share nothing.
        let h2 = seal(&storage.public(), &[7; INBOX_LEN], &mut rng).unwrap();
        assert_ne!(h, h2);
    }
}
