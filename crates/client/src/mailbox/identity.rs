//! Accounts: an X25519 identity key pair and an inbox id, and the shareable address that
//! names them.
//!
//! An address is `shroud:` followed by base32 (RFC 4648, no padding) of
//! `public key (32) || inbox id (16) || checksum (4)`, the checksum being the first four bytes
//! of SHA-256 over the rest: a mistyped address fails to parse (a random error slips through
//! with probability 2^-32).

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, Serializable};
use rand::CryptoRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub(crate) type Kem = X25519HkdfSha256;

const PREFIX: &str = "shroud:";

/// A bad address string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// Not `shroud:` and base32.
    #[error("not a shroud address")]
    Format,
    /// The checksum does not match: a typo.
    #[error("address checksum mismatch (a typo?)")]
    Checksum,
    /// The key is not a valid X25519 public key.
    #[error("bad public key in address")]
    Key,
}

/// Who someone is and where their mail goes.
///
/// # Security
/// Public by design: share it to be reachable. It names the inbox storage files mail under.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Address {
    /// The X25519 identity public key.
    pub public_key: [u8; 32],
    /// The inbox id.
    pub inbox: [u8; 16],
}

fn checksum(body: &[u8]) -> [u8; 4] {
    let d = Sha256::digest(body);
    [d[0], d[1], d[2], d[3]]
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(52);
        raw.extend_from_slice(&self.public_key);
        raw.extend_from_slice(&self.inbox);
        let c = checksum(&raw);
        raw.extend_from_slice(&c);
        write!(f, "{PREFIX}{}", BASE32_NOPAD.encode(&raw).to_lowercase())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let body = s.trim().strip_prefix(PREFIX).ok_or(AddressError::Format)?;
        let raw = BASE32_NOPAD
            .decode(body.to_uppercase().as_bytes())
            .map_err(|_| AddressError::Format)?;
        if raw.len() != 52 {
            return Err(AddressError::Format);
        }
        if checksum(&raw[..48]) != raw[48..] {
            return Err(AddressError::Checksum);
        }
        let mut public_key = [0u8; 32];
        public_key.copy_from_slice(&raw[..32]);
        <Kem as hpke::Kem>::PublicKey::from_bytes(&public_key).map_err(|_| AddressError::Key)?;
        let mut inbox = [0u8; 16];
        inbox.copy_from_slice(&raw[32..48]);
        Ok(Address { public_key, inbox })
    }
}

/// An account: the identity key pair and the inbox id.
///
/// # Security
/// The private key is the account: whoever holds it reads the mail and sends as this address.
/// It is wiped on drop.
pub struct Identity {
    pub(crate) sk: <Kem as hpke::Kem>::PrivateKey,
    pub(crate) pk: <Kem as hpke::Kem>::PublicKey,
    inbox: [u8; 16],
}

impl Identity {
    /// A fresh account.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut ikm = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut ikm[..]);
        let mut inbox = [0u8; 16];
        rng.fill_bytes(&mut inbox);
        let (sk, pk) = Kem::derive_keypair(&ikm[..]);
        Identity { sk, pk, inbox }
    }

    /// This identity with another inbox id (an account's: the id its capability names).
    pub(crate) fn with_inbox(mut self, inbox: [u8; 16]) -> Self {
        self.inbox = inbox;
        self
    }

    /// The secret bytes (private key, inbox id) to keep in the client state.
    pub fn to_secret(&self) -> Zeroizing<[u8; 48]> {
        let mut out = Zeroizing::new([0u8; 48]);
        out[..32].copy_from_slice(&self.sk.to_bytes());
        out[32..].copy_from_slice(&self.inbox);
        out
    }

    /// Back from [`Identity::to_secret`].
    pub fn from_secret(bytes: &[u8; 48]) -> Result<Self, AddressError> {
        let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(&bytes[..32])
            .map_err(|_| AddressError::Key)?;
        let pk = Kem::sk_to_pk(&sk);
        let mut inbox = [0u8; 16];
        inbox.copy_from_slice(&bytes[32..]);
        Ok(Identity { sk, pk, inbox })
    }

    /// The shareable address.
    pub fn address(&self) -> Address {
        let mut public_key = [0u8; 32];
        public_key.copy_from_slice(&self.pk.to_bytes());
        Address {
            public_key,
            inbox: self.inbox,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_catch_typos() {
        let mut rng = rand::rng();
        let id = Identity::generate(&mut rng);
        let a = id.address();
        let s = a.to_string();
        assert!(s.starts_with("shroud:"));
        assert_eq!(s.parse::<Address>().unwrap(), a);
        assert_eq!(
            s.to_uppercase()
                .replacen("SHROUD:", "shroud:", 1)
                .parse::<Address>()
                .unwrap(),
            a
        );
        // Every single-character substitution is caught.
        let body_start = PREFIX.len();
        for i in body_start..s.len() {
            let mut t: Vec<char> = s.chars().collect();
            t[i] = if t[i] == 'a' { 'b' } else { 'a' };
            let t: String = t.into_iter().collect();
            assert!(t.parse::<Address>().is_err(), "typo at {i} accepted");
        }
        assert_eq!("nope".parse::<Address>(), Err(AddressError::Format));
        let back = Identity::from_secret(&id.to_secret()).unwrap();
        assert_eq!(back.address(), a);
    }
}
