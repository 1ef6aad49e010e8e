//! Identities and addresses: an X25519 identity key pair, and the shareable address that
//! names it, its outbox on storage's mail board, the outbox key its rows are tagged with, and
//! the Olm identity key and pre-key that start sessions with it ([`super::session`]).
//!
//! An address is `shroud:` followed by base32 (RFC 4648, no padding) of
//! `public key (32) || outbox number (4, big-endian) || outbox key (32) || Olm identity key
//! (32) || Olm pre-key (32) || checksum (4)`, the checksum being the first four bytes of
//! SHA-256 over the rest: a mistyped address fails to parse (a random error slips through
//! with probability 2^-32).
//!
//! Two contacts compare a **safety number** ([`safety_number`]) to know that the addresses
//! they exchanged are the ones their contacts made.
//!
//! Two contacts share a **pair key** per direction, from their identity keys alone: X25519
//! (RFC 7748) between one's secret and the other's public key, through HKDF-SHA256 (RFC
//! 5869) with both public keys, writer first, in the info (the static-static exchange of
//! NaCl's `crypto_box` and Noise's `ss`). Nothing travels to set it up, so no server learns
//! who adds whom. It has no forward secrecy, and it protects only how chunks are numbered and
//! acknowledged: what they say is also encrypted in the pair's Olm session, which has.

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;
use hkdf::Hkdf;
use rand::CryptoRng;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::row::{OutboxKey, PairKey};

const PREFIX: &str = "shroud:";
const RAW_LEN: usize = 32 + 4 + 32 + 32 + 32;
const PAIR_SALT: &[u8] = b"shroud-pair-v1";

/// A bad address string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// Not `shroud:` and base32 of the right length.
    #[error("not a shroud address")]
    Format,
    /// The checksum does not match: a typo.
    #[error("address checksum mismatch (a typo?)")]
    Checksum,
    /// The key is not usable: a low-order point, whose exchange gives no secret.
    #[error("bad public key in address")]
    Key,
}

/// Who someone is and where their mail is.
///
/// # Security
/// Public by design: share it with contacts to be reachable. It names the outbox its owner
/// writes, and holds the outbox key: whoever has it can tell the owner's authentic rows
/// from forged ones (and could forge their tags, not their contents, which need a pair key).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Address {
    /// The X25519 identity public key.
    pub public_key: [u8; 32],
    /// The outbox's number on storage's board.
    pub outbox: u32,
    /// The key of the outbox's row tags.
    pub outbox_key: [u8; 32],
    /// The Olm identity key (Curve25519).
    pub olm_key: [u8; 32],
    /// The Olm pre-key its sessions start on (vodozemac's fallback key).
    pub prekey: [u8; 32],
}

fn checksum(body: &[u8]) -> [u8; 4] {
    let d = Sha256::digest(body);
    [d[0], d[1], d[2], d[3]]
}

impl Address {
    /// The outbox key, for checking this contact's rows.
    pub fn outbox_key(&self) -> OutboxKey {
        OutboxKey::from_bytes(self.outbox_key)
    }

    fn raw(&self) -> [u8; RAW_LEN] {
        let mut raw = [0u8; RAW_LEN];
        raw[..32].copy_from_slice(&self.public_key);
        raw[32..36].copy_from_slice(&self.outbox.to_be_bytes());
        raw[36..68].copy_from_slice(&self.outbox_key);
        raw[68..100].copy_from_slice(&self.olm_key);
        raw[100..].copy_from_slice(&self.prekey);
        raw
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = self.raw().to_vec();
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
        if raw.len() != RAW_LEN + 4 {
            return Err(AddressError::Format);
        }
        if checksum(&raw[..RAW_LEN]) != raw[RAW_LEN..] {
            return Err(AddressError::Checksum);
        }
        let key_at = |i: usize| -> [u8; 32] {
            let mut k = [0u8; 32];
            k.copy_from_slice(&raw[i..i + 32]);
            k
        };
        let address = Address {
            public_key: key_at(0),
            outbox: u32::from_be_bytes([raw[32], raw[33], raw[34], raw[35]]),
            outbox_key: key_at(36),
            olm_key: key_at(68),
            prekey: key_at(100),
        };
        // A low-order point would make every key exchange with it public.
        let probe = StaticSecret::from([7u8; 32]);
        for k in [address.public_key, address.olm_key, address.prekey] {
            if !probe.diffie_hellman(&PublicKey::from(k)).was_contributory() {
                return Err(AddressError::Key);
            }
        }
        Ok(address)
    }
}

/// Iterations of Signal's numeric fingerprint (libsignal `NumericFingerprintGenerator`: 5200
/// gives more than 112 bits against finding a second address with the same number).
const FINGERPRINT_ITERATIONS: usize = 5200;

/// The 30 digits of one party, as Signal's numeric fingerprint computes them (libsignal
/// `rust/protocol/src/fingerprint.rs`): `h = SHA-512(0x0000 || key || id || key)`, then
/// `h = SHA-512(h || key)` 5,199 more times; six 5-byte big-endian chunks of `h`, each mod
/// 100,000.
fn fingerprint_digits(key: &[u8], id: &[u8]) -> String {
    use sha2::Sha512;
    let mut h = Sha512::new();
    h.update([0u8, 0]);
    h.update(key);
    h.update(id);
    h.update(key);
    let mut digest = h.finalize();
    for _ in 1..FINGERPRINT_ITERATIONS {
        let mut h = Sha512::new();
        h.update(digest);
        h.update(key);
        digest = h.finalize();
    }
    (0..6)
        .map(|i| {
            let chunk = digest[i * 5..i * 5 + 5]
                .iter()
                .fold(0u64, |n, &b| (n << 8) | u64::from(b));
            format!("{:05}", chunk % 100_000)
        })
        .collect()
}

/// The safety number of two addresses: 60 digits, the same on both sides, shown in 12
/// groups of 5. Signal's numeric fingerprint, over each address's identity key (as Signal's
/// `0x05 || key`) with the rest of the address (outbox, outbox key, Olm keys) as the stable
/// id: two people who read the same number over a channel they trust hold each other's
/// real addresses, every key in them included.
pub fn safety_number(a: &Address, b: &Address) -> String {
    let digits = |x: &Address| {
        let mut key = [0u8; 33];
        key[0] = 0x05;
        key[1..].copy_from_slice(&x.public_key);
        fingerprint_digits(&key, &x.raw()[32..])
    };
    let (mut x, mut y) = (digits(a), digits(b));
    if y < x {
        std::mem::swap(&mut x, &mut y);
    }
    let all = x + &y;
    all.as_bytes()
        .chunks(5)
        .map(|g| String::from_utf8_lossy(g).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// An identity key pair.
///
/// # Security
/// The private key is the account: whoever holds it reads the mail sent to it and sends as
/// it. Wiped on drop (`x25519-dalek`'s `zeroize`).
pub struct Identity {
    sk: StaticSecret,
    pk: PublicKey,
}

impl Identity {
    /// A fresh identity.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Identity::from_secret(&bytes)
    }

    /// The identity of a kept secret.
    pub fn from_secret(bytes: &[u8; 32]) -> Self {
        let sk = StaticSecret::from(*bytes);
        let pk = PublicKey::from(&sk);
        Identity { sk, pk }
    }

    /// The secret to keep in the client state.
    pub fn to_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.sk.to_bytes())
    }

    /// The public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.pk.to_bytes()
    }

    /// The key of rows from `writer` to `reader` (one of them this identity, the other a
    /// contact's public key), or `None` for a contact whose key gives no secret.
    fn pair_key(&self, other: &[u8; 32], writer: &[u8; 32], reader: &[u8; 32]) -> Option<PairKey> {
        let shared = self.sk.diffie_hellman(&PublicKey::from(*other));
        if !shared.was_contributory() {
            return None;
        }
        let mut info = [0u8; 64];
        info[..32].copy_from_slice(writer);
        info[32..].copy_from_slice(reader);
        let mut key = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(PAIR_SALT), shared.as_bytes())
            .expand(&info, key.as_mut())
            .ok()?;
        Some(PairKey::from_bytes(*key))
    }

    /// The key of the rows this identity writes to `contact`.
    pub fn key_to(&self, contact: &Address) -> Option<PairKey> {
        let me = self.public_key();
        self.pair_key(&contact.public_key, &me, &contact.public_key)
    }

    /// The key of the rows `contact` writes to this identity.
    pub fn key_from(&self, contact: &Address) -> Option<PairKey> {
        let me = self.public_key();
        self.pair_key(&contact.public_key, &contact.public_key, &me)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::row::{self, CHUNK_LEN, Opened, Place};

    fn address(id: &Identity, outbox: u32) -> Address {
        Address {
            public_key: id.public_key(),
            outbox,
            outbox_key: [outbox as u8; 32],
            olm_key: Identity::generate(&mut rand::rng()).public_key(),
            prekey: Identity::generate(&mut rand::rng()).public_key(),
        }
    }

    /// libsignal's own test vector for its numeric fingerprint (`fingerprint.rs`), then the
    /// properties of ours: the same on both sides, and any key of either address changes it.
    #[test]
    fn safety_numbers_follow_signal_and_see_every_key() {
        let hex = |s: &str| data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap();
        let alice = hex("0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868");
        let bob = hex("05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b");
        let (x, y) = (
            fingerprint_digits(&alice, b"+14152222222"),
            fingerprint_digits(&bob, b"+14153333333"),
        );
        let (lo, hi) = if x < y { (x, y) } else { (y, x) };
        assert_eq!(
            lo + &hi,
            "300354477692869396892869876765458257569162576843440918079131"
        );
        let mut rng = rand::rng();
        let (a, b) = (
            address(&Identity::generate(&mut rng), 1),
            address(&Identity::generate(&mut rng), 2),
        );
        let n = safety_number(&a, &b);
        assert_eq!(n, safety_number(&b, &a));
        assert_eq!(n.split(' ').count(), 12);
        assert!(n.split(' ').all(|g| g.len() == 5));
        for changed in [
            Address {
                olm_key: address(&Identity::generate(&mut rng), 1).olm_key,
                ..b
            },
            Address {
                prekey: address(&Identity::generate(&mut rng), 1).prekey,
                ..b
            },
            Address {
                outbox_key: [9; 32],
                ..b
            },
            Address { outbox: 3, ..b },
            Address {
                public_key: Identity::generate(&mut rng).public_key(),
                ..b
            },
        ] {
            assert_ne!(safety_number(&a, &changed), n);
        }
    }

    #[test]
    fn addresses_round_trip_and_catch_typos() {
        let mut rng = rand::rng();
        let id = Identity::generate(&mut rng);
        let a = address(&id, 77_000);
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
        for i in PREFIX.len()..s.len() {
            let mut t: Vec<char> = s.chars().collect();
            t[i] = if t[i] == 'a' { 'b' } else { 'a' };
            let t: String = t.into_iter().collect();
            assert!(t.parse::<Address>().is_err(), "typo at {i} accepted");
        }
        assert_eq!("nope".parse::<Address>(), Err(AddressError::Format));
        let back = Identity::from_secret(&id.to_secret());
        assert_eq!(back.public_key(), id.public_key());
        // A low-order key is refused, checksum or not, wherever it is.
        for zero in [
            Address {
                public_key: [0; 32],
                ..a
            },
            Address {
                olm_key: [0; 32],
                ..a
            },
            Address {
                prekey: [0; 32],
                ..a
            },
        ] {
            assert_eq!(zero.to_string().parse::<Address>(), Err(AddressError::Key));
        }
    }

    /// Both ends of a pair derive the same key per direction, the two directions differ, and
    /// a third party's keys open nothing of theirs.
    #[test]
    fn pair_keys_agree_per_direction() {
        let mut rng = rand::rng();
        let (alice, bob, carol) = (
            Identity::generate(&mut rng),
            Identity::generate(&mut rng),
            Identity::generate(&mut rng),
        );
        let (a, b) = (address(&alice, 1), address(&bob, 2));
        let place = Place { round: 5, row: 2 };
        let chunk = [9u8; CHUNK_LEN];
        let row = row::seal(
            &a.outbox_key(),
            &alice.key_to(&b).unwrap(),
            place,
            &chunk,
            &mut rng,
        );
        let opened = |reader: &Identity, from: &Address| {
            row::open(
                &from.outbox_key(),
                &reader.key_from(from).unwrap(),
                place,
                &row[..],
            )
        };
        assert!(matches!(opened(&bob, &a), Ok(Opened::Mine(_))));
        assert_eq!(opened(&carol, &a), Ok(Opened::NotMine));
        // Bob's key to Alice is another key.
        let back = row::seal(
            &b.outbox_key(),
            &bob.key_to(&a).unwrap(),
            place,
            &chunk,
            &mut rng,
        );
        assert_eq!(
            row::open(
                &b.outbox_key(),
                &bob.key_from(&a).unwrap(),
                place,
                &back[..]
            ),
            Ok(Opened::NotMine)
        );
    }
}
