//! Bucket metadata, held by the client: what each slot holds, which slots were read since
//! the bucket was written, how many times, and the nonces it was sealed with.
//!
//! # Security
//! Client-side only (see the module docs of [`crate::ring`]). Read counts and which slots
//! were read are public anyway (storage sees every read); what each slot holds is secret.

use rand::{CryptoRng, RngExt};

use super::slot::NonceAt;

/// The address of a slot holding no block.
pub(crate) const DUMMY: u32 = u32::MAX;

/// The metadata of every bucket of one tree, by heap index.
///
/// A bucket holds at most Z blocks in its Z + S slots, so the blocks are kept as a list of
/// Z (slot, address) entries, in slot order, and the dummies as a mask: 5 bytes a real
/// slot instead of 4 bytes a slot (209 bytes a bucket at Z = 32, S = 64, against 417 when
/// every slot's address was kept). Pages keep the address of every slot, as before.
pub(crate) struct Meta {
    slots: usize,
    /// Z: the most blocks a bucket holds.
    z: usize,
    /// 64-bit words of one bucket's slot masks: `ceil(slots / 64)`.
    words: usize,
    /// Per bucket, `z` entries: the slot of each block held, in slot order (entries past
    /// the bucket's blocks hold [`DUMMY`] in `addr` and 0 here).
    slot: Vec<u8>,
    /// Per bucket, `z` entries: the address of each block held, or [`DUMMY`].
    addr: Vec<u32>,
    /// Per bucket, `words` words: bit `j % 64` of word `j / 64` set when slot `j` holds a
    /// block.
    real: Vec<u64>,
    /// Per bucket, `words` words: bit `j % 64` of word `j / 64` set while slot `j` is
    /// unread since the bucket was written. (One word a bucket up to 64 slots: the format
    /// of stores made before buckets could hold more.)
    unread: Vec<u64>,
    /// Per bucket: slots read since the bucket was written.
    count: Vec<u8>,
    /// Per bucket: the lineage and nonce counter of slot 0 at its last write; counter 0 for
    /// a bucket never written (storage holds nothing; the engine's counter starts at 1).
    written: Vec<NonceAt>,
}

impl Meta {
    /// Metadata of `buckets` buckets of `slots` slots holding at most `z` blocks each, none
    /// written (`slots` at most 256).
    pub fn new(buckets: usize, slots: usize, z: usize) -> Self {
        let words = words(slots);
        Meta {
            slots,
            z,
            words,
            slot: vec![0; buckets * z],
            addr: vec![DUMMY; buckets * z],
            real: vec![0; buckets * words],
            unread: (0..buckets).flat_map(|_| full(slots)).collect(),
            count: vec![0; buckets],
            written: vec![
                NonceAt {
                    lineage: 0,
                    counter: 0
                };
                buckets
            ],
        }
    }

    /// The tables of buckets `range`, for a page: the address each slot holds ([`DUMMY`]
    /// for a dummy), the unread masks (the words of [`Meta::words`] a bucket), the read
    /// counts and the nonces of the last writes.
    pub fn page_parts(
        &self,
        range: std::ops::Range<usize>,
    ) -> (Vec<u32>, &[u64], &[u8], &[NonceAt]) {
        let mut held = vec![DUMMY; range.len() * self.slots];
        for (i, b) in range.clone().enumerate() {
            for (j, a) in self.blocks(b) {
                held[i * self.slots + usize::from(j)] = a;
            }
        }
        let w = self.words;
        (
            held,
            &self.unread[range.start * w..range.end * w],
            &self.count[range.clone()],
            &self.written[range],
        )
    }

    /// Metadata from the tables of [`Meta::page_parts`] of all `buckets` buckets of `slots`
    /// slots, `None` if the lengths do not fit, a mask names a slot past `slots`, or a
    /// bucket holds more than `z` blocks.
    pub fn from_parts(
        buckets: usize,
        slots: usize,
        z: usize,
        held: &[u32],
        unread: Vec<u64>,
        count: Vec<u8>,
        written: Vec<NonceAt>,
    ) -> Option<Self> {
        let words = words(slots);
        let fits = slots <= 256
            && held.len() == buckets.checked_mul(slots)?
            && unread.len() == buckets.checked_mul(words)?
            && count.len() == buckets
            && written.len() == buckets
            && unread
                .chunks(words)
                .all(|u| u.iter().zip(full(slots)).all(|(&u, f)| u & !f == 0));
        if !fits {
            return None;
        }
        let mut m = Meta::new(buckets, slots, z);
        for (b, h) in held.chunks(slots).enumerate() {
            if h.iter().filter(|&&a| a != DUMMY).count() > z {
                return None;
            }
            m.set_blocks(b, h);
        }
        m.unread = unread;
        m.count = count;
        m.written = written;
        Some(m)
    }

    /// Words of mask per bucket, for `slots` slots.
    pub fn words(slots: usize) -> usize {
        words(slots)
    }

    /// The blocks bucket `b` was written with, read or not: `(slot, address)`, in slot
    /// order.
    pub fn blocks(&self, b: usize) -> impl Iterator<Item = (u16, u32)> + '_ {
        let r = b * self.z..(b + 1) * self.z;
        self.slot[r.clone()]
            .iter()
            .zip(&self.addr[r])
            .take_while(|&(_, &a)| a != DUMMY)
            .map(|(&j, &a)| (u16::from(j), a))
    }

    /// Records that bucket `b` holds `held[j]` in slot `j` (at most `z` blocks).
    fn set_blocks(&mut self, b: usize, held: &[u32]) {
        let (z, w) = (self.z, self.words);
        self.addr[b * z..(b + 1) * z].fill(DUMMY);
        self.slot[b * z..(b + 1) * z].fill(0);
        self.real[b * w..(b + 1) * w].fill(0);
        let mut i = 0;
        for (j, &a) in held.iter().enumerate() {
            if a != DUMMY && i < z {
                self.slot[b * z + i] = j as u8;
                self.addr[b * z + i] = a;
                self.real[b * w + j / 64] |= 1 << (j % 64);
                i += 1;
            }
        }
    }

    fn is_unread(&self, b: usize, j: usize) -> bool {
        self.unread[b * self.words + j / 64] >> (j % 64) & 1 == 1
    }

    /// The unread slot of bucket `b` holding `addr`.
    pub fn find(&self, b: usize, addr: u32) -> Option<u16> {
        self.blocks(b)
            .find(|&(j, a)| a == addr && self.is_unread(b, usize::from(j)))
            .map(|(j, _)| j)
    }

    /// A uniformly random unread dummy slot of bucket `b` (`None` if every dummy was read,
    /// which the engine's reshuffles rule out).
    pub fn random_dummy<R: CryptoRng + ?Sized>(&self, b: usize, rng: &mut R) -> Option<u16> {
        let dummies: Vec<u16> = self.unread_dummies(b).collect();
        (!dummies.is_empty()).then(|| dummies[rng.random_range(0..dummies.len())])
    }

    /// `count` slots to read from bucket `b` for a reshuffle or an eviction: every unread
    /// slot holding a block, then uniformly random unread dummies up to `count`. The
    /// blocks' addresses come with their slots (`DUMMY` for a dummy).
    pub fn pick<R: CryptoRng + ?Sized>(
        &self,
        b: usize,
        count: usize,
        rng: &mut R,
    ) -> Vec<(u16, u32)> {
        let mut out: Vec<(u16, u32)> = self
            .blocks(b)
            .filter(|&(j, _)| self.is_unread(b, usize::from(j)))
            .collect();
        let mut dummies: Vec<u16> = self.unread_dummies(b).collect();
        while out.len() < count && !dummies.is_empty() {
            let j = dummies.swap_remove(rng.random_range(0..dummies.len()));
            out.push((j, DUMMY));
        }
        out
    }

    /// The unread dummy slots of bucket `b`, in slot order.
    fn unread_dummies(&self, b: usize) -> impl Iterator<Item = u16> + '_ {
        let w = self.words;
        let masks = self.unread[b * w..(b + 1) * w]
            .iter()
            .zip(&self.real[b * w..(b + 1) * w]);
        masks.enumerate().flat_map(|(i, (&u, &r))| {
            let mut m = u & !r;
            std::iter::from_fn(move || {
                (m != 0).then(|| {
                    let j = m.trailing_zeros();
                    m &= m - 1;
                    (i * 64) as u16 + j as u16
                })
            })
        })
    }

    /// The blocks still unread in bucket `b`: `(slot, address)`, in slot order.
    pub fn unread_blocks(&self, b: usize) -> impl Iterator<Item = (u16, u32)> + '_ {
        self.blocks(b)
            .filter(move |&(j, _)| self.is_unread(b, usize::from(j)))
    }

    /// The block unread in slot `j` of bucket `b`, if any.
    #[cfg(test)]
    pub fn holds(&self, b: usize, j: u16) -> Option<u32> {
        self.unread_blocks(b).find(|&(s, _)| s == j).map(|(_, a)| a)
    }

    /// Marks slot `j` of bucket `b` read.
    pub fn read(&mut self, b: usize, j: u16) {
        let j = usize::from(j);
        self.unread[b * self.words + j / 64] &= !(1u64 << (j % 64));
        self.count[b] = self.count[b].saturating_add(1);
    }

    /// Reads of bucket `b` since it was written.
    pub fn count(&self, b: usize) -> u32 {
        u32::from(self.count[b])
    }

    /// The nonce slot `j` of bucket `b` was sealed with, or `None` if the bucket was
    /// never written.
    pub fn nonce(&self, b: usize, j: u16) -> Option<NonceAt> {
        let w = self.written[b];
        (w.counter != 0).then_some(NonceAt {
            lineage: w.lineage,
            counter: w.counter + u64::from(j),
        })
    }

    /// Records a rewrite of bucket `b`: `held[j]` in slot `j` (at most Z blocks), sealed
    /// from nonce `first`.
    pub fn write(&mut self, b: usize, held: &[u32], first: NonceAt) {
        debug_assert!(held.iter().filter(|&&a| a != DUMMY).count() <= self.z);
        self.set_blocks(b, held);
        let w = self.words;
        for (u, f) in self.unread[b * w..(b + 1) * w]
            .iter_mut()
            .zip(full(self.slots))
        {
            *u = f;
        }
        self.count[b] = 0;
        self.written[b] = first;
    }

    /// Bytes of client memory held.
    pub fn memory(&self) -> usize {
        self.slot.capacity()
            + self.addr.capacity() * 4
            + self.real.capacity() * 8
            + self.unread.capacity() * 8
            + self.count.capacity()
            + self.written.capacity() * std::mem::size_of::<NonceAt>()
    }
}

/// Words of a bucket's unread mask.
fn words(slots: usize) -> usize {
    slots.div_ceil(64).max(1)
}

/// The words of the mask of `slots` unread slots.
fn full(slots: usize) -> impl Iterator<Item = u64> {
    (0..words(slots)).map(move |w| {
        let left = slots - (w * 64).min(slots);
        if left >= 64 {
            u64::MAX
        } else {
            (1u64 << left) - 1
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_consume_slots_and_a_write_restores_them() {
        let mut rng = rand::rng();
        let mut m = Meta::new(3, 6, 2);
        assert_eq!(m.nonce(1, 0), None);
        let held = [DUMMY, 7, DUMMY, DUMMY, 9, DUMMY];
        let first = NonceAt {
            lineage: 0,
            counter: 11,
        };
        m.write(1, &held, first);
        assert_eq!(m.find(1, 9), Some(4));
        assert_eq!(m.nonce(1, 4).map(|n| n.counter), Some(15));
        m.read(1, 4);
        assert_eq!((m.find(1, 9), m.count(1)), (None, 1));
        for _ in 0..4 {
            let d = m.random_dummy(1, &mut rng).unwrap();
            assert_eq!(held[usize::from(d)], DUMMY);
            m.read(1, d);
        }
        assert_eq!(m.random_dummy(1, &mut rng), None);
        // One block left unread, no dummy: a pick of 2 returns just the block.
        assert_eq!(m.pick(1, 2, &mut rng), vec![(1, 7)]);
        m.write(1, &held, first);
        let p = m.pick(1, 3, &mut rng);
        assert_eq!(p.len(), 3);
        assert_eq!(&p[..2], &[(1, 7), (4, 9)]);
    }

    #[test]
    fn buckets_past_64_slots_keep_a_mask_of_two_words() {
        let mut rng = rand::rng();
        let slots = 80;
        let mut m = Meta::new(2, slots, 4);
        let mut held = vec![DUMMY; slots];
        held[70] = 5;
        let first = NonceAt {
            lineage: 0,
            counter: 1,
        };
        m.write(1, &held, first);
        assert_eq!(m.find(1, 5), Some(70));
        assert_eq!(m.holds(1, 70), Some(5));
        m.read(1, 70);
        assert_eq!((m.find(1, 5), m.holds(1, 70)), (None, None));
        for _ in 0..slots - 1 {
            let d = m.random_dummy(1, &mut rng).unwrap();
            assert_ne!(d, 70);
            m.read(1, d);
        }
        assert_eq!(m.random_dummy(1, &mut rng), None);
        // Bucket 0 untouched: every slot unread.
        assert_eq!(m.pick(0, slots, &mut rng).len(), slots);
        let (held, unread, count, written) = m.page_parts(0..2);
        assert_eq!(held[slots + 70], 5);
        assert_eq!(held.iter().filter(|&&a| a != DUMMY).count(), 1);
        assert_eq!(unread.len(), 4);
        assert_eq!(unread[..2], [u64::MAX, (1 << 16) - 1]);
        assert_eq!(unread[2..], [0, 0]);
        let back = Meta::from_parts(
            2,
            slots,
            4,
            &held,
            unread.to_vec(),
            count.to_vec(),
            written.to_vec(),
        )
        .unwrap();
        assert_eq!(back.random_dummy(1, &mut rng), None);
        assert_eq!(back.blocks(1).collect::<Vec<_>>(), vec![(70, 5)]);
        let mut bad = unread.to_vec();
        bad[1] |= 1 << 16;
        assert!(
            Meta::from_parts(2, slots, 4, &held, bad, count.to_vec(), written.to_vec()).is_none()
        );
        // More blocks in a bucket than Z: refused.
        let mut crowded = held.clone();
        crowded[..5].copy_from_slice(&[1, 2, 3, 4, 6]);
        assert!(
            Meta::from_parts(
                2,
                slots,
                4,
                &crowded,
                unread.to_vec(),
                count.to_vec(),
                written.to_vec()
            )
            .is_none()
        );
    }
}
