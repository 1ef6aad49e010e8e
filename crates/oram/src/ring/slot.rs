//! Sealing one slot: AES-256-GCM with a nonce the client knows in advance.
//!
//! A sealed slot is `AES-GCM(block) || tag (16)`: no nonce or lineage on the wire, because
//! the client's bucket metadata names both (the lineage that wrote the bucket and its
//! first nonce counter; slot `j` has counter `first + j`). The nonce is `lineage id (first
//! 4 bytes) || counter (u64 BE)` as for Path ORAM buckets ([`crate::seal`]), under the
//! lineage's HKDF subkey, so no (key, nonce) pair repeats. The associated data is
//! `"shroud-ring-v1" || store id (16) || tree (1) || bucket (u64 LE) || slot (u16 LE)`: a
//! slot opens only where it was written.
//!
//! A dummy slot is the sealing of B zero bytes under its own nonce. The client can compute
//! it again at will, which is what lets storage XOR slots together (Ren et al. 2015): the
//! client XORs the dummies it asked for back out of the answer.

use crate::aead::{Aes256Gcm, TAG_LEN};
use crate::bucket::{LINEAGE_LEN, NONCE_LEN};
use crate::integrity::IntegrityError;
use crate::{BucketId, Error};

/// Bytes a sealed slot adds to its block: the GCM tag.
pub const SLOT_OVERHEAD: usize = TAG_LEN;

const AAD_PREFIX: &[u8; 14] = b"shroud-ring-v1";
const AAD_LEN: usize = AAD_PREFIX.len() + 16 + 1 + 8 + 2;

/// The keys of every lineage that wrote a bucket still held, and the store id.
pub(crate) struct Slots {
    store_id: [u8; 16],
    /// Lineage ids, oldest first; the last is this run's.
    lineages: Vec<[u8; LINEAGE_LEN]>,
    ciphers: Vec<Aes256Gcm>,
}

/// Where a slot's nonce comes from: the lineage (an index into [`Slots`]) and counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct NonceAt {
    pub lineage: u32,
    pub counter: u64,
}

impl Slots {
    pub fn new(store_id: [u8; 16]) -> Self {
        Slots {
            store_id,
            lineages: Vec::new(),
            ciphers: Vec::new(),
        }
    }

    /// Adds a lineage and its subkey; returns its index.
    pub fn push_lineage(&mut self, lineage: [u8; LINEAGE_LEN], cipher: Aes256Gcm) -> u32 {
        self.lineages.push(lineage);
        self.ciphers.push(cipher);
        (self.lineages.len() - 1) as u32
    }

    /// The store id bound into every slot.
    pub fn store_id(&self) -> [u8; 16] {
        self.store_id
    }

    /// Every lineage id, oldest first.
    pub fn lineages(&self) -> &[[u8; LINEAGE_LEN]] {
        &self.lineages
    }

    /// This run's lineage index.
    pub fn current(&self) -> u32 {
        (self.lineages.len() - 1) as u32
    }

    fn nonce(&self, at: NonceAt) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        n[..4].copy_from_slice(&self.lineages[at.lineage as usize][..4]);
        n[4..].copy_from_slice(&at.counter.to_be_bytes());
        n
    }

    fn aad(&self, bucket: BucketId, slot: u16) -> [u8; AAD_LEN] {
        let mut a = [0u8; AAD_LEN];
        let (p, rest) = a.split_at_mut(AAD_PREFIX.len());
        p.copy_from_slice(AAD_PREFIX);
        rest[..16].copy_from_slice(&self.store_id);
        rest[16] = bucket.tree;
        rest[17..25].copy_from_slice(&bucket.index.to_le_bytes());
        rest[25..].copy_from_slice(&slot.to_le_bytes());
        a
    }

    /// Seals the block in `out[..B]` in place and writes the tag after it.
    pub fn seal(
        &self,
        at: NonceAt,
        bucket: BucketId,
        slot: u16,
        out: &mut [u8],
    ) -> Result<(), Error> {
        let n = out.len() - TAG_LEN;
        let tag = self.ciphers[at.lineage as usize]
            .seal(&self.nonce(at), &self.aad(bucket, slot), &mut out[..n])
            .map_err(|_| Error::Crypto)?;
        out[n..].copy_from_slice(&tag);
        Ok(())
    }

    /// The dummy slot at `at`: B sealed zero bytes and their tag, XORed into `acc`.
    pub fn xor_dummy(
        &self,
        at: NonceAt,
        bucket: BucketId,
        slot: u16,
        scratch: &mut [u8],
        acc: &mut [u8],
    ) -> Result<(), Error> {
        scratch.fill(0);
        self.seal(at, bucket, slot, scratch)?;
        xor_into(acc, scratch);
        Ok(())
    }

    /// Checks and decrypts a sealed slot in place: `sealed[..B]` is then the block.
    pub fn open(
        &self,
        at: NonceAt,
        bucket: BucketId,
        slot: u16,
        sealed: &mut [u8],
    ) -> Result<(), IntegrityError> {
        let n = sealed.len() - TAG_LEN;
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&sealed[n..]);
        self.ciphers[at.lineage as usize]
            .open(
                &self.nonce(at),
                &self.aad(bucket, slot),
                &mut sealed[..n],
                &tag,
            )
            .map_err(|_| IntegrityError::Tampered(bucket))
    }
}

/// `acc ^= x`, byte for byte (the slices have one length).
pub(crate) fn xor_into(acc: &mut [u8], x: &[u8]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a ^= b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots() -> Slots {
        let mut s = Slots::new([3; 16]);
        s.push_lineage([1; 32], Aes256Gcm::new(&[9; 32]));
        s
    }

    #[test]
    fn a_slot_opens_only_where_and_as_it_was_sealed() {
        let s = slots();
        let b = BucketId { tree: 0, index: 4 };
        let at = NonceAt {
            lineage: 0,
            counter: 7,
        };
        let mut buf = vec![5u8; 16 + TAG_LEN];
        s.seal(at, b, 2, &mut buf).unwrap();
        let sealed = buf.clone();
        s.open(at, b, 2, &mut buf).unwrap();
        assert_eq!(&buf[..16], &[5u8; 16]);
        let other = BucketId { tree: 0, index: 5 };
        assert!(s.open(at, other, 2, &mut sealed.clone()).is_err());
        assert!(s.open(at, b, 3, &mut sealed.clone()).is_err());
        let older = NonceAt {
            lineage: 0,
            counter: 6,
        };
        assert!(s.open(older, b, 2, &mut sealed.clone()).is_err());
    }

    #[test]
    fn dummies_xor_out() {
        let s = slots();
        let b = BucketId { tree: 0, index: 1 };
        let at = NonceAt {
            lineage: 0,
            counter: 1,
        };
        let mut dummy = vec![0u8; 16 + TAG_LEN];
        s.seal(at, b, 0, &mut dummy).unwrap();
        let mut real = vec![8u8; 16 + TAG_LEN];
        let real_at = NonceAt {
            lineage: 0,
            counter: 2,
        };
        s.seal(real_at, b, 1, &mut real).unwrap();
        let mut combined = real.clone();
        xor_into(&mut combined, &dummy);
        let mut scratch = vec![0u8; 16 + TAG_LEN];
        s.xor_dummy(at, b, 0, &mut scratch, &mut combined).unwrap();
        assert_eq!(combined, real);
        s.open(real_at, b, 1, &mut combined).unwrap();
        assert_eq!(&combined[..16], &[8u8; 16]);
    }
}
