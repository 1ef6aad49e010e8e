//! One round on one tree: the paths of a batch's accesses, fetched together, verified from
//! the top down, evicted and sealed from the bottom up.
//!
//! Positions: access `j` at depth `d` is position `p = j * levels + d`. When the paths of two
//! accesses share a bucket, the later position points at the earlier one (`first[p]`); that
//! bucket is verified, evicted into and sealed once, and both positions carry the same sealed
//! bytes back, so every path stays full length and overlapping paths stay consistent.
//!
//! All buffers are allocated once, for `max_batch` paths: a round allocates nothing.

use std::sync::Arc;

use zeroize::Zeroize;

use crate::bucket::Layout;
use crate::geometry::TreeGeometry;
use crate::helper::{Helper, Item};
use crate::integrity::{self, Digest, EMPTY, IntegrityError};
use crate::seal::Sealer;
use crate::stash::Stash;
use crate::{BucketId, Error};

const NONE: u32 = u32::MAX;

/// Where a candidate block's bytes are during a round.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Src {
    /// Entry `i` of the committed stash.
    Stash(u32),
    /// Slot `s` of the verified bucket at position `p`.
    Path(u32, u32),
    /// Slot `s` of the cached bucket with heap index `i`.
    Cached(u32, u32),
    /// Block `m` of the round's scratch blocks (a copy an access modifies).
    Scratch(u32),
    /// The data of the batch's access `j` (a write).
    Payload(u32),
    /// A new block of zeros.
    Zero,
}

/// Whether the helper thread opened a fetched bucket ([`crate::helper`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opened {
    /// Still sealed: `verify` opens it.
    No,
    /// Tag checked and decrypted in place; `verify` still checks its digest.
    Yes,
    /// The tag did not check.
    Failed,
}

/// Where a fetched bucket's buffer is while the helper thread works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    Here,
    /// Complete, in the queue for the next group.
    Queued,
    /// With the helper.
    Away,
}

/// About how many bytes of buckets go to the helper in one message: a group of 16 KiB
/// takes a few microseconds to open, against a few hundred nanoseconds per message. Paths
/// of smaller buckets than one group stay on the caller's thread.
const GROUP_BYTES: usize = 16 << 10;

/// The helper thread and the sealer it opens buckets with, lent to a round while the store
/// supplies it.
pub(crate) struct Lend<'a> {
    pub helper: &'a mut Helper,
    pub sealer: &'a Arc<Sealer>,
}

/// The scratch and staged results of one tree's round.
pub(crate) struct Round {
    pub geom: TreeGeometry,
    pub tree: u8,
    layout: Layout,
    clen: usize,
    /// Accesses in the current batch.
    pub k: usize,
    pub leaves: Vec<u32>,
    first: Vec<u32>,
    ids: Vec<BucketId>,
    present: Vec<bool>,
    /// A length error seen by `supply`, reported by `verify` even if the caller ignored it.
    refused: Option<IntegrityError>,
    /// The fetched bucket at each position (sealed, then decrypted in place).
    input: Vec<Vec<u8>>,
    /// Per position: what the helper did with it.
    opened: Vec<Opened>,
    /// Per position: the bucket is also at another position of this round (copies are
    /// compared before either is opened, so these stay with the caller's thread).
    shared: Vec<bool>,
    /// Per position: where the buffer is.
    held: Vec<Held>,
    /// Complete positions waiting to go to the helper as one group.
    queue: Vec<usize>,
    /// Buckets per group handed to the helper: about [`GROUP_BYTES`].
    group: usize,
    /// The position whose buffer [`Round::slot_mut`] lent out: complete at the next call.
    lent: Option<usize>,
    output: Vec<u8>,
    digests: Vec<Digest>,
    // Candidate blocks: the stash plus every block on the fetched paths.
    pub cand_src: Vec<Src>,
    pub cand_addr: Vec<u64>,
    pub cand_leaf: Vec<u32>,
    cand_next: Vec<u32>,
    head: Vec<u32>,
    tail: Vec<u32>,
    /// Blocks that accesses modify in place (position blocks).
    pub scratch: Vec<u8>,
    pub scratch_used: usize,
    /// The stash that this round leaves, committed with the batch.
    pub staged: Stash,
    pub new_root: Digest,
}

impl Round {
    pub fn new(geom: TreeGeometry, tree: u8, max_batch: usize, stash_limit: usize) -> Self {
        let levels = geom.levels();
        let clen = geom.ciphertext_len();
        let block = geom.block_size as usize;
        let positions = max_batch * levels;
        let cands = stash_limit + positions * geom.slots as usize + max_batch;
        Round {
            geom,
            tree,
            layout: Layout { block },
            clen,
            k: 0,
            leaves: vec![0; max_batch],
            first: vec![0; positions],
            ids: Vec::with_capacity(max_batch * geom.fetched_levels()),
            present: vec![false; positions],
            refused: None,
            input: vec![vec![0; clen]; positions],
            opened: vec![Opened::No; positions],
            shared: vec![false; positions],
            held: vec![Held::Here; positions],
            queue: Vec::with_capacity(positions),
            group: GROUP_BYTES.div_ceil(clen).max(1),
            lent: None,
            output: vec![0; positions * clen],
            digests: vec![EMPTY; positions],
            cand_src: Vec::with_capacity(cands),
            cand_addr: Vec::with_capacity(cands),
            cand_leaf: Vec::with_capacity(cands),
            cand_next: Vec::with_capacity(cands),
            head: vec![NONE; positions],
            tail: vec![NONE; positions],
            scratch: vec![0; max_batch * block],
            scratch_used: 0,
            staged: Stash::new(block, stash_limit),
            new_root: EMPTY,
        }
    }

    /// The most groups a round hands to the helper, and buckets per group.
    pub fn groups(&self) -> (usize, usize) {
        (self.input.len().div_ceil(self.group), self.group)
    }

    fn levels(&self) -> usize {
        self.geom.levels()
    }

    /// The verified plaintext at position `p`: from the cache for cached levels.
    fn bucket<'a>(&'a self, p: usize, cache: &'a [u8]) -> &'a [u8] {
        let (levels, clen) = (self.levels(), self.clen);
        let d = p % levels;
        if d < self.geom.cached_levels as usize {
            let at = self.geom.bucket_index(d, self.leaves[p / levels]) as usize * clen;
            &cache[at..at + clen]
        } else {
            &self.input[p]
        }
    }

    fn buf(&self, p: usize) -> &[u8] {
        &self.input[p]
    }

    /// The bucket at position `p`.
    fn id_at(&self, p: usize) -> BucketId {
        let levels = self.levels();
        BucketId {
            tree: self.tree,
            index: self.geom.bucket_index(p % levels, self.leaves[p / levels]),
        }
    }

    /// Plans the round for the given leaves: which buckets, and which positions coincide.
    pub fn setup(&mut self, leaves: &[u32]) {
        let levels = self.levels();
        self.k = leaves.len();
        self.leaves[..leaves.len()].copy_from_slice(leaves);
        self.ids.clear();
        for j in 0..self.k {
            for d in 0..levels {
                let p = j * levels + d;
                let pre = self.geom.prefix(d, leaves[j]);
                self.first[p] = (0..j)
                    .find(|&i| self.geom.prefix(d, leaves[i]) == pre)
                    .map_or(p as u32, |i| self.first[i * levels + d]);
                self.present[p] = false;
            }
            self.refused = None;
            self.lent = None;
            for d in self.geom.cached_levels as usize..levels {
                self.ids.push(BucketId {
                    tree: self.tree,
                    index: self.geom.bucket_index(d, leaves[j]),
                });
            }
        }
        let positions = self.k * levels;
        self.shared[..positions].fill(false);
        self.opened[..positions].fill(Opened::No);
        for p in 0..positions {
            let q = self.first[p] as usize;
            if q != p {
                self.shared[p] = true;
                self.shared[q] = true;
            }
        }
    }

    /// Position of fetch slot `i`.
    fn position(&self, i: usize) -> usize {
        let f = self.geom.fetched_levels();
        (i / f) * self.levels() + self.geom.cached_levels as usize + i % f
    }

    pub fn ids(&self) -> &[BucketId] {
        &self.ids
    }

    /// Takes the server's bytes for fetch slot `i` (`None`: the server has no such bucket).
    pub fn supply(
        &mut self,
        i: usize,
        bucket: Option<&[u8]>,
        mut lend: Option<Lend<'_>>,
    ) -> Result<(), IntegrityError> {
        let id = self.ids[i];
        let p = self.position(i);
        self.refill(p, &mut lend);
        match bucket {
            None => self.present[p] = false,
            Some(b) if b.len() != self.clen => {
                self.present[p] = false;
                let e = IntegrityError::WrongLength {
                    id,
                    got: b.len(),
                    expected: self.clen,
                };
                self.refused = Some(e.clone());
                return Err(e);
            }
            Some(b) => {
                self.input[p].copy_from_slice(b);
                self.present[p] = true;
                self.hand_over(p, &mut lend);
            }
        }
        Ok(())
    }

    /// A buffer for fetch slot `i` that the caller fills directly; marks it present.
    pub fn slot_mut(&mut self, i: usize, mut lend: Option<Lend<'_>>) -> &mut [u8] {
        let p = self.position(i);
        self.refill(p, &mut lend);
        self.present[p] = true;
        self.lent = Some(p);
        &mut self.input[p]
    }

    /// Before position `p` is supplied: the buffer lent last is complete; `p` itself, if
    /// supplied before, comes back (or leaves the queue) and counts as unopened.
    fn refill(&mut self, p: usize, lend: &mut Option<Lend<'_>>) {
        if let Some(q) = self.lent.take() {
            self.hand_over(q, lend);
        }
        match self.held[p] {
            Held::Here => {}
            Held::Queued => {
                self.queue.retain(|&q| q != p);
                self.held[p] = Held::Here;
            }
            Held::Away => {
                if let Some(l) = lend {
                    self.settle(l.helper);
                }
            }
        }
        self.opened[p] = Opened::No;
    }

    /// Queues the complete bucket at position `p` for the helper, unless it has copies
    /// elsewhere in the round (those are compared first, in `verify`); a full queue goes to
    /// the helper as one group.
    fn hand_over(&mut self, p: usize, lend: &mut Option<Lend<'_>>) {
        let Some(l) = lend else { return };
        if self.shared[p] || !self.present[p] || self.held[p] != Held::Here {
            return;
        }
        self.held[p] = Held::Queued;
        self.queue.push(p);
        if self.queue.len() < self.group {
            return;
        }
        let mut items = l.helper.group();
        for &q in &self.queue {
            items.push(Item {
                id: self.id_at(q),
                position: q,
                buf: std::mem::take(&mut self.input[q]),
                opened: false,
            });
            self.held[q] = Held::Away;
        }
        self.queue.clear();
        if let Err(items) = l.helper.open(l.sealer, items) {
            self.take_back(l.helper, items, false);
        }
    }

    /// The store is done: every buffer comes back. Call before [`Round::verify`] when a
    /// helper was lent. What is still queued (the last, incomplete group) stays here:
    /// `verify` opens it while the helper finishes the group before.
    pub fn finish_supply(&mut self, helper: &mut Helper) {
        self.lent = None;
        self.settle(helper);
    }

    /// Takes back every buffer the helper holds, and empties the queue.
    pub fn settle(&mut self, helper: &mut Helper) {
        for q in self.queue.drain(..) {
            self.held[q] = Held::Here;
        }
        while let Some(items) = helper.take() {
            self.take_back(helper, items, true);
        }
        // A helper that died lost what it held: those buckets count as never supplied.
        for p in 0..self.held.len() {
            if self.held[p] == Held::Away {
                self.input[p] = vec![0; self.clen];
                self.held[p] = Held::Here;
                self.present[p] = false;
                self.opened[p] = Opened::No;
            }
        }
    }

    /// Puts a group's buffers back in place; `worked`: the helper saw them (else they come
    /// back unopened, from a helper that was gone).
    fn take_back(&mut self, helper: &mut Helper, mut items: Vec<Item>, worked: bool) {
        for mut item in items.drain(..) {
            let p = item.position;
            self.input[p] = std::mem::take(&mut item.buf);
            self.held[p] = Held::Here;
            self.opened[p] = match (worked, item.opened) {
                (false, _) => Opened::No,
                (true, true) => Opened::Yes,
                (true, false) => Opened::Failed,
            };
        }
        helper.recycle(items);
    }

    /// Verifies every fetched bucket against the digests the client holds, top down, and
    /// decrypts it in place. Cached levels are copied in from `cache`. On error the caller
    /// must supply every bucket again.
    pub fn verify(
        &mut self,
        sealer: &Sealer,
        root: &Digest,
        cache: &[u8],
    ) -> Result<(), IntegrityError> {
        let r = match self.refused.take() {
            Some(e) => Err(e),
            None => self.verify_inner(sealer, root, cache),
        };
        if r.is_err() {
            self.reset_present();
        }
        r
    }

    fn verify_inner(
        &mut self,
        sealer: &Sealer,
        root: &Digest,
        cache: &[u8],
    ) -> Result<(), IntegrityError> {
        let (levels, t) = (self.levels(), self.geom.cached_levels as usize);
        // Copies of one bucket must agree before any is decrypted in place.
        for j in 0..self.k {
            for d in t..levels {
                let p = j * levels + d;
                let q = self.first[p] as usize;
                if q != p
                    && (self.present[p] != self.present[q]
                        || (self.present[p] && self.buf(p) != self.buf(q)))
                {
                    return Err(IntegrityError::Inconsistent(self.id_at(p)));
                }
            }
        }
        for d in 0..levels {
            for j in 0..self.k {
                let p = j * levels + d;
                if self.first[p] as usize != p {
                    continue;
                }
                let index = self.geom.bucket_index(d, self.leaves[j]);
                if d < t {
                    continue;
                }
                let expected = if d == 0 {
                    *root
                } else {
                    let parent = self.first[p - 1] as usize;
                    let right = self.leaves[j] >> (self.geom.height as usize - d) & 1 == 1;
                    self.layout.child(self.bucket(parent, cache), right)
                };
                let id = BucketId {
                    tree: self.tree,
                    index,
                };
                match (expected == EMPTY, self.present[p]) {
                    (true, true) => return Err(IntegrityError::Unexpected(id)),
                    (true, false) => self.input[p].fill(0),
                    (false, false) => return Err(IntegrityError::Missing(id)),
                    (false, true) => match self.opened[p] {
                        Opened::No => sealer.open(id, &expected, &mut self.input[p])?,
                        // Opened by the helper: its digest must still be the one recorded.
                        Opened::Yes if integrity::matches(&self.input[p], &expected) => {}
                        _ => return Err(IntegrityError::Tampered(id)),
                    },
                }
            }
        }
        Ok(())
    }

    /// Forgets every supplied bucket: after a failure they must all be supplied again.
    pub fn reset_present(&mut self) {
        self.present.fill(false);
        self.opened.fill(Opened::No);
        self.lent = None;
        self.refused = None;
    }

    /// Loads the committed stash and every block of the verified paths as candidates.
    pub fn gather(&mut self, stash: &Stash, cache: &[u8]) {
        self.cand_src.clear();
        self.cand_addr.clear();
        self.cand_leaf.clear();
        self.scratch_used = 0;
        for i in 0..stash.len() {
            self.push_cand(Src::Stash(i as u32), stash.addr(i), stash.leaf(i));
        }
        let levels = self.levels();
        for p in 0..self.k * levels {
            if self.first[p] as usize != p {
                continue;
            }
            let d = p % levels;
            let cached = d < self.geom.cached_levels as usize;
            let index = self.geom.bucket_index(d, self.leaves[p / levels]) as u32;
            for s in 0..self.geom.slots as usize {
                if let Some((addr, leaf)) = self.layout.slot(self.bucket(p, cache), s) {
                    let src = if cached {
                        Src::Cached(index, s as u32)
                    } else {
                        Src::Path(p as u32, s as u32)
                    };
                    self.push_cand(src, addr, leaf);
                }
            }
        }
    }

    pub fn push_cand(&mut self, src: Src, addr: u64, leaf: u32) -> usize {
        self.cand_src.push(src);
        self.cand_addr.push(addr);
        self.cand_leaf.push(leaf);
        self.cand_src.len() - 1
    }

    pub fn find(&self, addr: u64) -> Option<usize> {
        self.cand_addr.iter().position(|&a| a == addr)
    }

    /// The bytes of a candidate.
    pub fn data<'a>(&'a self, c: usize, inputs: &'a Inputs<'a>) -> &'a [u8] {
        let src = Sources {
            layout: &self.layout,
            input: &self.input,
            clen: self.clen,
            scratch: &self.scratch,
            inputs,
        };
        src.bytes(self.cand_src[c])
    }

    /// Gives candidate `c` a private copy in scratch and returns it for modification.
    pub fn make_mut(&mut self, c: usize, inputs: &Inputs<'_>) -> &mut [u8] {
        let b = self.layout.block;
        let m = match self.cand_src[c] {
            Src::Scratch(m) => m as usize,
            other => {
                let m = self.scratch_used;
                self.scratch_used += 1;
                let src = Sources {
                    layout: &self.layout,
                    input: &self.input,
                    clen: self.clen,
                    scratch: &[],
                    inputs,
                };
                self.scratch[m * b..(m + 1) * b].copy_from_slice(src.bytes(other));
                self.cand_src[c] = Src::Scratch(m as u32);
                m
            }
        };
        &mut self.scratch[m * b..(m + 1) * b]
    }

    /// Greedy eviction over the union of the round's paths (deepest bucket first, as in
    /// Stefanov et al., section 3) into the output buffers. Leftovers go to the staged stash.
    pub fn evict(&mut self, inputs: &Inputs<'_>) -> Result<(), Error> {
        let levels = self.levels();
        let positions = self.k * levels;
        self.head[..positions].fill(NONE);
        self.tail[..positions].fill(NONE);
        self.cand_next.clear();
        self.cand_next.resize(self.cand_src.len(), NONE);
        // Each block starts at the deepest bucket of the union that lies on its own path.
        for c in 0..self.cand_src.len() {
            let leaf = self.cand_leaf[c];
            let (mut best_d, mut best_j) = (0, 0);
            for j in 0..self.k {
                let d = self.geom.common_depth(leaf, self.leaves[j]);
                if d > best_d || j == 0 {
                    (best_d, best_j) = (d, j);
                }
            }
            let p = self.first[best_j * levels + best_d] as usize;
            self.append(p, c as u32, c as u32);
        }
        self.staged.clear();
        let mut output = std::mem::take(&mut self.output);
        let result = self.fill(&mut output, inputs);
        self.output = output;
        result
    }

    fn fill(&mut self, output: &mut [u8], inputs: &Inputs<'_>) -> Result<(), Error> {
        let (levels, clen) = (self.levels(), self.clen);
        let z = self.geom.slots as usize;
        for d in (0..levels).rev() {
            for j in 0..self.k {
                let p = j * levels + d;
                if self.first[p] as usize != p {
                    continue;
                }
                let out = &mut output[p * clen..(p + 1) * clen];
                let src = Sources {
                    layout: &self.layout,
                    input: &self.input,
                    clen,
                    scratch: &self.scratch,
                    inputs,
                };
                // Fill up to Z slots from this bucket's pending list.
                let mut c = self.head[p];
                let mut s = 0;
                while c != NONE && s < z {
                    let ci = c as usize;
                    let dst = self
                        .layout
                        .put(out, s, self.cand_addr[ci], self.cand_leaf[ci]);
                    dst.copy_from_slice(src.bytes(self.cand_src[ci]));
                    s += 1;
                    c = self.cand_next[ci];
                }
                self.layout.clear_from(out, s, z);
                // The rest may still fit higher up; at the root they stay in the stash.
                if c != NONE && d == 0 {
                    while c != NONE {
                        let ci = c as usize;
                        if !self.staged.push(
                            self.cand_addr[ci],
                            self.cand_leaf[ci],
                            src.bytes(self.cand_src[ci]),
                        ) {
                            return Err(Error::StashOverflow {
                                limit: self.staged.limit(),
                            });
                        }
                        c = self.cand_next[ci];
                    }
                } else if c != NONE {
                    let parent = self.first[p - 1] as usize;
                    let tail = self.tail[p];
                    self.append(parent, c, tail);
                }
            }
        }
        Ok(())
    }

    /// Seals the evicted buckets from the leaves up, so that each parent records its
    /// children's new digests. Cached levels get their child digests but stay plaintext.
    /// Runs only once every round of the batch has succeeded, so a failed batch consumes no
    /// nonces.
    pub fn seal(&mut self, sealer: &Sealer, counter: &mut u64, cache: &[u8]) -> Result<(), Error> {
        let (levels, clen, t) = (self.levels(), self.clen, self.geom.cached_levels as usize);
        for d in (0..levels).rev() {
            for j in 0..self.k {
                let p = j * levels + d;
                if self.first[p] as usize != p {
                    continue;
                }
                // Child digests: fresh for children in the union, unchanged otherwise.
                let mut children = [EMPTY; 2];
                if d + 1 < levels {
                    for (right, digest) in children.iter_mut().enumerate() {
                        let child = (self.geom.prefix(d, self.leaves[j]) << 1) | right as u32;
                        *digest = match (0..self.k)
                            .find(|&i| self.geom.prefix(d + 1, self.leaves[i]) == child)
                        {
                            Some(i) => self.digests[self.first[i * levels + d + 1] as usize],
                            None => self.layout.child(self.bucket(p, cache), right == 1),
                        };
                    }
                }
                let out = &mut self.output[p * clen..(p + 1) * clen];
                self.layout.set_child(out, false, &children[0]);
                self.layout.set_child(out, true, &children[1]);
                if d >= t {
                    let id = BucketId {
                        tree: self.tree,
                        index: self.geom.bucket_index(d, self.leaves[j]),
                    };
                    self.digests[p] = sealer.seal(counter, id, out)?;
                }
            }
        }
        self.new_root = if t == 0 { self.digests[0] } else { EMPTY };
        Ok(())
    }

    /// Appends the list `from..=to` (linked by `cand_next`) to position `p`'s pending list.
    fn append(&mut self, p: usize, from: u32, to: u32) {
        if self.head[p] == NONE {
            self.head[p] = from;
        } else {
            let tail = self.tail[p] as usize;
            self.cand_next[tail] = from;
        }
        self.tail[p] = to;
    }

    /// Copies the new cached buckets into the tree-top cache, and names the regions
    /// ([`crate::pages::region`]) of each that changed.
    pub fn commit_cache(&self, cache: &mut [u8], mut changed: impl FnMut(usize, usize)) {
        let (levels, clen) = (self.levels(), self.clen);
        for j in 0..self.k {
            for d in 0..self.geom.cached_levels as usize {
                let p = j * levels + d;
                if self.first[p] as usize == p {
                    let index = self.geom.bucket_index(d, self.leaves[j]) as usize;
                    let (old, new) = (
                        &mut cache[index * clen..(index + 1) * clen],
                        &self.output[p * clen..(p + 1) * clen],
                    );
                    for r in 0..crate::pages::regions(&self.geom) {
                        let range = crate::pages::region(&self.geom, r);
                        if old[range.clone()] != new[range] {
                            changed(index, r);
                        }
                    }
                    old.copy_from_slice(new);
                }
            }
        }
    }

    /// The sealed buckets to write back, in fetch order.
    pub fn write_back(&self) -> impl Iterator<Item = (BucketId, &[u8])> + '_ {
        let clen = self.clen;
        self.ids.iter().enumerate().map(move |(i, id)| {
            let q = self.first[self.position(i)] as usize;
            (*id, &self.output[q * clen..(q + 1) * clen])
        })
    }

    /// Bytes held by this round's allocations.
    pub fn memory(&self) -> usize {
        self.leaves.capacity() * 4
            + self.first.capacity() * 4
            + self.ids.capacity() * std::mem::size_of::<BucketId>()
            + self.present.capacity()
            + self.input.iter().map(Vec::capacity).sum::<usize>()
            + self.input.capacity() * std::mem::size_of::<Vec<u8>>()
            + self.opened.capacity()
            + self.shared.capacity()
            + self.held.capacity()
            + self.queue.capacity() * 8
            + self.output.capacity()
            + self.digests.capacity() * std::mem::size_of::<Digest>()
            + self.cand_src.capacity() * std::mem::size_of::<Src>()
            + self.cand_addr.capacity() * 8
            + self.cand_leaf.capacity() * 4
            + self.cand_next.capacity() * 4
            + (self.head.capacity() + self.tail.capacity()) * 4
            + self.scratch.capacity()
            + self.staged.memory()
    }
}

/// The buffers hold decrypted buckets and copies of blocks: wiped when dropped.
impl Drop for Round {
    fn drop(&mut self) {
        for b in &mut self.input {
            b.zeroize();
        }
        self.output.zeroize();
        self.scratch.zeroize();
    }
}

/// What a round reads besides its own buffers.
pub(crate) struct Inputs<'a> {
    /// The tree's committed stash.
    pub stash: &'a Stash,
    /// The tree's committed tree-top cache.
    pub cache: &'a [u8],
    /// The batch's write data.
    pub payload: &'a [u8],
    /// A block of zeros.
    pub zero: &'a [u8],
}

/// The places a candidate's bytes may be, borrowed together.
struct Sources<'a> {
    layout: &'a Layout,
    input: &'a [Vec<u8>],
    clen: usize,
    scratch: &'a [u8],
    inputs: &'a Inputs<'a>,
}

impl<'a> Sources<'a> {
    fn bytes(&self, src: Src) -> &'a [u8] {
        let b = self.layout.block;
        match src {
            Src::Stash(i) => self.inputs.stash.data(i as usize),
            Src::Path(p, s) => self.layout.data(&self.input[p as usize], s as usize),
            Src::Scratch(m) => &self.scratch[m as usize * b..(m as usize + 1) * b],
            Src::Cached(i, s) => {
                let i = i as usize;
                self.layout.data(
                    &self.inputs.cache[i * self.clen..(i + 1) * self.clen],
                    s as usize,
                )
            }
            Src::Payload(j) => &self.inputs.payload[j as usize * b..(j as usize + 1) * b],
            Src::Zero => &self.inputs.zero[..b],
        }
    }
}
