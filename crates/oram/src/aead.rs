//! AES-256-GCM (NIST SP 800-38D), the AEAD that seals buckets, from one of two
//! implementations chosen at build time:
//!
//! - **`aws-lc`** (the default feature): `aws-lc-rs`, over AWS-LC's assembly (AES-NI and
//!   carry-less multiplication, with VAES and AVX-512 where the CPU has them; chosen at run
//!   time). It is already in every build through rustls, and seals about four times as fast
//!   as the `aes-gcm` crate on the machines this was measured on (docs/benchmarks.md).
//! - **`portable`**: the RustCrypto `aes-gcm` crate, pure Rust, for targets AWS-LC does not
//!   build on. Used only when `aws-lc` is off.
//!
//! Both compute the same function: same key, nonce, associated data and plaintext give the
//! same ciphertext and tag (`tests::both_implementations_agree` checks it byte for byte).

#[cfg(not(any(feature = "aws-lc", feature = "portable")))]
compile_error!("shroud-oram needs an AES-GCM implementation: enable `aws-lc` or `portable`");

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of a tag.
pub const TAG_LEN: usize = 16;

/// The AEAD refused: a wrong tag when opening, or (never in practice) a failure inside the
/// library when sealing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("AES-GCM refused")]
pub struct AeadError;

/// An AES-256-GCM key, expanded for use.
///
/// # Security
/// The caller must never seal twice under one key with one nonce (the engine's nonces are a
/// counter per lineage key: see [`crate::seal`]). The expanded key is wiped when dropped:
/// `aes-gcm` with its `zeroize` feature; AWS-LC frees its context with `OPENSSL_free`, which
/// cleanses the allocation first (AWS-LC `crypto/mem.c`). `Debug` does not print it.
pub struct Aes256Gcm {
    #[cfg(feature = "aws-lc")]
    key: aws_lc_rs::aead::LessSafeKey,
    #[cfg(not(feature = "aws-lc"))]
    key: aes_gcm::Aes256Gcm,
}

impl Aes256Gcm {
    /// Expands `key`.
    ///
    /// ```
    /// let cipher = shroud_oram::aead::Aes256Gcm::new(&[7; 32]);
    /// let mut data = *b"bucket";
    /// let tag = cipher.seal(&[1; 12], b"where", &mut data).unwrap();
    /// cipher.open(&[1; 12], b"where", &mut data, &tag).unwrap();
    /// assert_eq!(&data, b"bucket");
    /// ```
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        #[cfg(feature = "aws-lc")]
        {
            use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
            // `UnboundKey::new` fails only for a key of the wrong length, which the type
            // rules out.
            let unbound = UnboundKey::new(&AES_256_GCM, key)
                .unwrap_or_else(|_| unreachable!("a 32-byte key is AES-256's length"));
            Aes256Gcm {
                key: LessSafeKey::new(unbound),
            }
        }
        #[cfg(not(feature = "aws-lc"))]
        {
            use aes_gcm::KeyInit;
            Aes256Gcm {
                key: aes_gcm::Aes256Gcm::new(key.into()),
            }
        }
    }

    /// Encrypts `in_out` in place and returns the tag over it and `aad`.
    pub fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError> {
        #[cfg(feature = "aws-lc")]
        {
            use aws_lc_rs::aead::{Aad, Nonce};
            let tag = self
                .key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(*nonce),
                    Aad::from(aad),
                    in_out,
                )
                .map_err(|_| AeadError)?;
            let mut out = [0u8; TAG_LEN];
            out.copy_from_slice(tag.as_ref());
            Ok(out)
        }
        #[cfg(not(feature = "aws-lc"))]
        {
            use aes_gcm::AeadInOut;
            let tag = self
                .key
                .encrypt_inout_detached(&(*nonce).into(), aad, in_out.into())
                .map_err(|_| AeadError)?;
            Ok(tag.into())
        }
    }

    /// Checks `tag` over `in_out` and `aad`, then decrypts `in_out` in place. On failure
    /// `in_out` holds unspecified bytes, which the caller must not use.
    pub fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        #[cfg(feature = "aws-lc")]
        {
            use aws_lc_rs::aead::{Aad, Nonce};
            // The tag is compared in constant time inside AWS-LC (`CRYPTO_memcmp`).
            self.key
                .open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(*nonce),
                    Aad::from(aad),
                    tag,
                    in_out,
                )
                .map(|_| ())
                .map_err(|_| AeadError)
        }
        #[cfg(not(feature = "aws-lc"))]
        {
            use aes_gcm::AeadInOut;
            // aes-gcm compares the tag in constant time (`subtle`).
            self.key
                .decrypt_inout_detached(&(*nonce).into(), aad, in_out.into(), &(*tag).into())
                .map_err(|_| AeadError)
        }
    }
}

impl std::fmt::Debug for Aes256Gcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Aes256Gcm(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::{AeadInOut, KeyInit};
    use rand::{RngExt, SeedableRng};

    /// The build's implementation against the RustCrypto crate (a dev-dependency, so this
    /// runs in every build): equal ciphertexts and tags for random keys, nonces, associated
    /// data and plaintexts of every length class a bucket or a test uses, and each opens the
    /// other's output.
    #[test]
    fn both_implementations_agree() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(14);
        for len in [0usize, 1, 15, 16, 17, 255, 1024, 4096 + 60, 16_384 + 7] {
            let key: [u8; 32] = rng.random();
            let nonce: [u8; 12] = rng.random();
            let aad: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
            let plain: Vec<u8> = (0..len).map(|_| rng.random()).collect();

            let ours = Aes256Gcm::new(&key);
            let mut a = plain.clone();
            let tag_a = ours.seal(&nonce, &aad, &mut a).unwrap();

            let theirs = aes_gcm::Aes256Gcm::new(&key.into());
            let mut b = plain.clone();
            let tag_b: [u8; 16] = theirs
                .encrypt_inout_detached(&nonce.into(), &aad, b.as_mut_slice().into())
                .unwrap()
                .into();
            assert_eq!(a, b, "ciphertext, {len} bytes");
            assert_eq!(tag_a, tag_b, "tag, {len} bytes");

            let mut opened = b.clone();
            ours.open(&nonce, &aad, &mut opened, &tag_b).unwrap();
            assert_eq!(opened, plain);
            theirs
                .decrypt_inout_detached(&nonce.into(), &aad, a.as_mut_slice().into(), &tag_a.into())
                .unwrap();
            assert_eq!(a, plain);
        }
    }

    /// A flipped bit anywhere (ciphertext, tag, associated data, nonce) is refused.
    #[test]
    fn any_change_is_refused() {
        let c = Aes256Gcm::new(&[3; 32]);
        let (nonce, aad) = ([5u8; 12], *b"bucket 9");
        let mut sealed = vec![0x42u8; 100];
        let tag = c.seal(&nonce, &aad, &mut sealed).unwrap();
        let mut flipped = sealed.clone();
        flipped[57] ^= 1;
        assert_eq!(c.open(&nonce, &aad, &mut flipped, &tag), Err(AeadError));
        let mut bad_tag = tag;
        bad_tag[15] ^= 0x80;
        assert!(c.open(&nonce, &aad, &mut sealed.clone(), &bad_tag).is_err());
        assert!(
            c.open(&nonce, b"bucket 8", &mut sealed.clone(), &tag)
                .is_err()
        );
        let mut other_nonce = nonce;
        other_nonce[0] ^= 1;
        assert!(
            c.open(&other_nonce, &aad, &mut sealed.clone(), &tag)
                .is_err()
        );
        c.open(&nonce, &aad, &mut sealed, &tag).unwrap();
        assert_eq!(sealed, vec![0x42; 100]);
    }
}
