//! Storage's routing key: the X25519 key pair that clients seal their outbox requests and
//! outbox writes to ([`crate::sealed`], HPKE per RFC 9180), so that the proxy carrying them
//! reads neither. Clients pin its public half; a request sealed to any other key does not
//! open at storage, so a substituted key is caught at once.

use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, Serializable};
use rand::CryptoRng;

type Kem = X25519HkdfSha256;

/// A routing-key failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoutingError {
    /// Not sealed to this key (or altered).
    #[error("sealed request does not open")]
    Open,
    /// A key of the wrong form.
    #[error("bad routing key")]
    Key,
}

/// Storage's routing key pair.
///
/// # Security
/// The private half is storage's own secret: it opens what clients seal to storage (which
/// outbox a client makes, the rows it writes), never shown to the proxy.
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

    pub(crate) fn private(&self) -> &<Kem as hpke::Kem>::PrivateKey {
        &self.sk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_key_is_the_same_key() {
        let mut rng = rand::rng();
        let storage = RoutingKey::generate(&mut rng);
        let again = RoutingKey::from_secret(&storage.secret()).unwrap();
        assert_eq!(again.public(), storage.public());
        assert_ne!(RoutingKey::generate(&mut rng).public(), storage.public());
        assert!(RoutingKey::from_secret(&[0; 7]).is_err());
    }
}
