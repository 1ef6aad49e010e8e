//! Requests sealed to storage, and their responses sealed back to the requester, so that the
//! proxy in between can neither read them nor match a reply to what it carried earlier.
//!
//! This is the encapsulation of Oblivious HTTP (RFC 9458, sections 4.3 and 4.4), with our own
//! labels and without the HTTP: the request is HPKE base mode (RFC 9180: DHKEM(X25519,
//! HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305) to storage's routing key; the response key
//! comes from the HPKE context's exporter, mixed with a fresh random response nonce through
//! HKDF, so a replayed request never makes storage reuse a (key, nonce) pair:
//!
//! ```text
//! request  = enc (32) || HPKE-Seal(plaintext) (+16)
//! secret   = Export("shroud response", 32)
//! salt     = enc || response_nonce (32, random)
//! prk      = HKDF-Extract(salt, secret)
//! key      = HKDF-Expand(prk, "key", 32);  nonce = HKDF-Expand(prk, "nonce", 12)
//! response = response_nonce || ChaCha20-Poly1305(key, nonce, "", plaintext) (+16)
//! ```

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hkdf::Hkdf;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use rand::CryptoRng;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::routing::{RoutingError, RoutingKey};

type Kem = X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

const EXPORT_LABEL: &[u8] = b"shroud response";
const NONCE_LEN: usize = 32;
const TAG: usize = 16;

/// Bytes a sealed request adds to its plaintext: the encapsulated key and the tag.
pub const REQUEST_OVERHEAD: usize = 32 + TAG;
/// Bytes a sealed response adds to its plaintext: the response nonce and the tag.
pub const RESPONSE_OVERHEAD: usize = NONCE_LEN + TAG;

/// Sealed bytes, opaque to whoever carries them: a request or response of this module, or a
/// row sealed under a client's own key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sealed(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// What seals (at storage) or opens (at the requester) the one response to a request.
///
/// # Security
/// Holds the exported secret; wiped on drop.
pub struct Responder {
    enc: [u8; 32],
    secret: Zeroizing<[u8; 32]>,
}

impl Responder {
    fn cipher(&self, response_nonce: &[u8]) -> (ChaCha20Poly1305, Nonce) {
        let mut salt = [0u8; 32 + NONCE_LEN];
        salt[..32].copy_from_slice(&self.enc);
        salt[32..].copy_from_slice(response_nonce);
        let prk = Hkdf::<Sha256>::new(Some(&salt), &self.secret[..]);
        let mut key = Zeroizing::new([0u8; 32]);
        let mut nonce = [0u8; 12];
        // Both lengths are far below HKDF-SHA256's 8,160-byte limit.
        let _ = prk.expand(b"key", &mut key[..]);
        let _ = prk.expand(b"nonce", &mut nonce);
        (ChaCha20Poly1305::new(&(*key).into()), Nonce::from(nonce))
    }

    /// Seals the response (storage's side).
    pub fn seal<R: CryptoRng + ?Sized>(&self, response: &[u8], rng: &mut R) -> Vec<u8> {
        let mut out = vec![0u8; NONCE_LEN];
        rng.fill_bytes(&mut out);
        let (cipher, nonce) = self.cipher(&out);
        let mut body = response.to_vec();
        match cipher.encrypt_inout_detached(&nonce, b"", (&mut body[..]).into()) {
            Ok(tag) => {
                out.extend_from_slice(&body);
                out.extend_from_slice(&tag);
            }
            // Unreachable for ChaCha20-Poly1305 below 256 GiB; answer with noise of the
            // right length rather than panic.
            Err(_) => {
                out.resize(NONCE_LEN + response.len() + TAG, 0);
                rng.fill_bytes(&mut out);
            }
        }
        out
    }

    /// Opens the response (the requester's side).
    pub fn open(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, RoutingError> {
        if sealed.len() < RESPONSE_OVERHEAD {
            return Err(RoutingError::Open);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG);
        let (cipher, aead_nonce) = self.cipher(nonce);
        let mut plain = Zeroizing::new(body.to_vec());
        let tag: [u8; TAG] = tag.try_into().map_err(|_| RoutingError::Open)?;
        cipher
            .decrypt_inout_detached(&aead_nonce, b"", (&mut plain[..]).into(), &tag.into())
            .map_err(|_| RoutingError::Open)?;
        Ok(plain)
    }
}

/// Seals `plaintext` to storage's routing key under the context label `info`; returns the
/// request and what opens its response.
pub fn seal_request<R: CryptoRng>(
    storage_pk: &[u8; 32],
    info: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Result<(Vec<u8>, Responder), RoutingError> {
    let pk =
        <Kem as hpke::Kem>::PublicKey::from_bytes(storage_pk).map_err(|_| RoutingError::Key)?;
    let (enc, mut ctx) =
        hpke::setup_sender_with_rng::<Aead, Kdf, Kem>(&OpModeS::Base, &pk, info, rng)
            .map_err(|_| RoutingError::Key)?;
    let ct = ctx.seal(plaintext, b"").map_err(|_| RoutingError::Key)?;
    let mut secret = Zeroizing::new([0u8; 32]);
    ctx.export(EXPORT_LABEL, &mut secret[..])
        .map_err(|_| RoutingError::Key)?;
    let mut enc_bytes = [0u8; 32];
    enc_bytes.copy_from_slice(&enc.to_bytes());
    let mut out = Vec::with_capacity(REQUEST_OVERHEAD + plaintext.len());
    out.extend_from_slice(&enc_bytes);
    out.extend_from_slice(&ct);
    Ok((
        out,
        Responder {
            enc: enc_bytes,
            secret,
        },
    ))
}

impl RoutingKey {
    /// Opens a request sealed with [`seal_request`] under `info`: the plaintext, and what
    /// seals the response.
    pub fn open_request(
        &self,
        info: &[u8],
        sealed: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, Responder), RoutingError> {
        if sealed.len() < REQUEST_OVERHEAD {
            return Err(RoutingError::Open);
        }
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&sealed[..32])
            .map_err(|_| RoutingError::Open)?;
        let mut ctx =
            hpke::setup_receiver::<Aead, Kdf, Kem>(&OpModeR::Base, self.private(), &enc, info)
                .map_err(|_| RoutingError::Open)?;
        let plain = Zeroizing::new(
            ctx.open(&sealed[32..], b"")
                .map_err(|_| RoutingError::Open)?,
        );
        let mut secret = Zeroizing::new([0u8; 32]);
        ctx.export(EXPORT_LABEL, &mut secret[..])
            .map_err(|_| RoutingError::Open)?;
        let mut enc_bytes = [0u8; 32];
        enc_bytes.copy_from_slice(&sealed[..32]);
        Ok((
            plain,
            Responder {
                enc: enc_bytes,
                secret,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_requester_opens_the_response() {
        let mut rng = rand::rng();
        let storage = RoutingKey::generate(&mut rng);
        let (req, mine) =
            seal_request(&storage.public(), b"t", b"make my outbox", &mut rng).unwrap();
        assert_eq!(req.len(), 14 + REQUEST_OVERHEAD);
        let (plain, theirs) = storage.open_request(b"t", &req).unwrap();
        assert_eq!(&plain[..], b"make my outbox");
        // The wrong label, the wrong key or one flipped bit: refused.
        assert!(storage.open_request(b"u", &req).is_err());
        let other = RoutingKey::generate(&mut rng);
        assert!(other.open_request(b"t", &req).is_err());
        let mut bad = req.clone();
        bad[40] ^= 1;
        assert!(storage.open_request(b"t", &bad).is_err());
        // The response opens only with the requester's responder, and two responses to one
        // (replayed) request share no nonce.
        let r1 = theirs.seal(b"here", &mut rng);
        let r2 = theirs.seal(b"here", &mut rng);
        assert_eq!(r1.len(), 4 + RESPONSE_OVERHEAD);
        assert_ne!(r1, r2);
        assert_eq!(&mine.open(&r1).unwrap()[..], b"here");
        let (_, stranger) = seal_request(&storage.public(), b"t", b"x", &mut rng).unwrap();
        assert!(stranger.open(&r1).is_err());
        let mut bad = r1.clone();
        bad[50] ^= 1;
        assert!(mine.open(&bad).is_err());
        assert!(mine.open(&r1[..20]).is_err());
    }
}
