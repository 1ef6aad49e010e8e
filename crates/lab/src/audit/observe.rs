//! What the operators saw of one client, extracted from their transcripts: storage's batches
//! (slots, bytes and leaves per epoch, by store) and the proxy's frames (by connection).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use shroud_proto::Shape;
use shroud_proxy::transcript::{Entry as ProxyEntry, FrameKind, Transcript as ProxyTranscript};
use shroud_storage::Transcript;

/// Storage's view of one store: per batch (one per epoch), its slots and the sizes of their
/// requests; and the leaf of every path it read.
#[derive(Clone, Debug, Default)]
pub struct StoreView {
    /// Per batch the store is in, in order: (batch index at storage, slots, bytes written,
    /// buckets read).
    pub epochs: Vec<(usize, u64, u64, u64)>,
    /// The leaf of every path read.
    pub leaves: Vec<u64>,
    /// Ring ORAM: the store's batches (positions in `epochs`) whose sizes hold an early
    /// reshuffle, the reads of one (a bucket storage's own counts show out of unread
    /// dummies) or its rewrite in the next batch. Public, and compared apart.
    pub reshuffled: BTreeSet<usize>,
    /// Ring ORAM: the store's batches whose sizes are not those the public pattern
    /// ([`Shape::ring_maintenance`]) and storage's own read counts give.
    pub off_pattern: Vec<usize>,
}

/// Storage's view of every store, from its transcript.
pub fn stores(transcript: &Path, shape: &Shape) -> std::io::Result<BTreeMap<String, StoreView>> {
    let height = shape.path_len + shape.cached_levels - 1;
    let first_leaf = (1u64 << height) - 1;
    let online = shape.path_len as usize;
    let mut out: BTreeMap<String, StoreView> = BTreeMap::new();
    let mut counts: BTreeMap<String, RingCounts> = BTreeMap::new();
    let batches = Transcript::read(transcript)?
        .into_iter()
        .filter(|e| e.op == shroud_storage::Op::Batch);
    for (i, e) in batches.enumerate() {
        let mut per: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
        let mut grants: BTreeMap<&str, Vec<Vec<u64>>> = BTreeMap::new();
        for (g, store) in e.stores.iter().enumerate() {
            let reads: Vec<u64> = e
                .reads
                .iter()
                .filter(|r| r.0 as usize == g)
                .map(|r| r.1)
                .collect();
            let written: u64 = e
                .writes
                .iter()
                .filter(|w| w.0 as usize == g)
                .map(|w| u64::from(w.2))
                .sum();
            let v = out.entry(store.clone()).or_default();
            // The online reads come first: a whole path below the cached levels (Path
            // ORAM's slot reads nothing else).
            if let Some(&leaf) = reads.get(online - 1)
                && leaf >= first_leaf
            {
                v.leaves.push(leaf - first_leaf);
            }
            let p = per.entry(store.as_str()).or_default();
            p.0 += 1;
            p.1 += written;
            p.2 += reads.len() as u64;
            grants.entry(store.as_str()).or_default().push(reads);
        }
        for (store, (slots, written, reads)) in per {
            let Some(v) = out.get_mut(store) else {
                continue;
            };
            if shape.is_ring() {
                let written: Vec<u64> = e
                    .writes
                    .iter()
                    .filter(|w| e.stores.get(w.0 as usize).is_some_and(|s| s == store))
                    .map(|w| w.1)
                    .collect();
                let c = counts.entry(store.to_string()).or_default();
                c.batch(shape, v, &written, &grants[store]);
            }
            v.epochs.push((i, slots, written, reads));
        }
    }
    Ok(out)
}

/// What storage can count of one Ring ORAM store: the reads of each bucket since its last
/// write, and early reshuffles whose rewrite is owed to the next batch.
#[derive(Default)]
struct RingCounts {
    read: BTreeMap<u64, u32>,
    owed: usize,
}

impl RingCounts {
    /// Checks the store's next batch (its position: `v.epochs.len()`) against the public
    /// pattern: `written` the buckets it rewrote, `grants` each slot's reads (the online
    /// path first, then the first slot's maintenance reads).
    fn batch(&mut self, shape: &Shape, v: &mut StoreView, written: &[u64], grants: &[Vec<u64>]) {
        let shroud_proto::Mode::Ring { dummy_slots, .. } = shape.mode else {
            return;
        };
        let k = v.epochs.len();
        let z = shape.bucket_slots as usize;
        let online = shape.path_len as usize;
        // A bucket the next batch could find no unread dummy in (engine docs).
        let limit = (dummy_slots + 1).saturating_sub(shape.slots_per_epoch);
        let mut off = false;
        let owed_writes = match k {
            0 => 0,
            _ => shape.ring_maintenance(k as u64 - 1).0,
        } + self.owed;
        off |= written.len() != owed_writes;
        // Storage applies a batch's writes before its reads.
        for b in written {
            self.read.remove(b);
        }
        let mut fetched = BTreeSet::new();
        for reads in grants {
            for &b in reads.iter().take(online) {
                *self.read.entry(b).or_default() += 1;
                fetched.insert(b);
            }
        }
        let low = fetched
            .iter()
            .filter(|b| self.read.get(b).is_some_and(|&n| n >= limit))
            .count();
        let maintenance: Vec<u64> = grants
            .iter()
            .flat_map(|r| r.iter().skip(online).copied())
            .collect();
        let pattern = shape.ring_maintenance(k as u64).1;
        self.owed = match maintenance.len().checked_sub(pattern) {
            Some(extra) if extra % z == 0 && extra / z <= low => extra / z,
            _ => {
                off = true;
                0
            }
        };
        for b in maintenance {
            *self.read.entry(b).or_default() += 1;
        }
        if self.owed > 0 {
            v.reshuffled.extend([k, k + 1]);
        }
        if off {
            v.off_pattern.push(k);
        }
    }
}

/// One frame as the proxy sees it: (from the client, kind, bytes).
pub type Frame = (bool, FrameKind, u64);

/// The proxy's view of one connection.
#[derive(Clone, Debug, Default)]
pub struct ConnView {
    /// Per epoch (the proxy's clock), the frames in and out, sorted.
    pub epochs: BTreeMap<u64, Vec<Frame>>,
    /// The frames in turns, in the order they passed: a turn is what the client sent and
    /// then the proxy's replies to it, sorted. What a client sends is compared turn by turn
    /// (content), apart from which epoch it fell in (timing): a slow storage batch delays
    /// the replies, and with them the next frames, into the next epoch in one run and not
    /// another, which says nothing of the workload.
    pub turns: Vec<Vec<Frame>>,
    /// The mail rounds' frames, in order: the client's round frames (one per round, in the
    /// turn whose epoch opens a round: which turn that is depends on where in the round
    /// clock a run started) and their outcomes (answers, or a round that did not run, on
    /// storage's timing). Compared apart from the turns.
    pub rounds: Vec<Frame>,
    /// Per turn, the client's batch it carried (its slot frames: the n-th turn with slots
    /// holds batch n), if any: how a turn is matched to storage's view of the batch.
    pub batch_of_turn: Vec<Option<usize>>,
}

/// The proxy's view of every client connection (one that registered a store), in accept
/// order, numbered from 0. Connections that only made an outbox (`mail init`) are left out.
pub fn connections(transcript: &Path) -> std::io::Result<BTreeMap<u64, ConnView>> {
    let mut out: BTreeMap<u64, ConnView> = BTreeMap::new();
    let mut clients = std::collections::BTreeSet::new();
    for ProxyEntry {
        epoch,
        conn,
        inbound,
        kind,
        bytes,
        ..
    } in ProxyTranscript::read(transcript)?
    {
        if kind == FrameKind::Stats {
            continue;
        }
        if kind == FrameKind::Register {
            clients.insert(conn);
        }
        let view = out.entry(conn).or_default();
        if matches!(
            kind,
            FrameKind::Round | FrameKind::RoundDone | FrameKind::RoundFailed
        ) {
            view.rounds.push((inbound, kind, bytes));
            continue;
        }
        view.epochs
            .entry(epoch)
            .or_default()
            .push((inbound, kind, bytes));
        // A frame from the client after a reply opens the next turn.
        let replied = view
            .turns
            .last()
            .and_then(|t| t.last())
            .is_some_and(|f| !f.0);
        match view.turns.last_mut() {
            Some(turn) if !(inbound && replied) => turn.push((inbound, kind, bytes)),
            _ => view.turns.push(vec![(inbound, kind, bytes)]),
        }
    }
    for view in out.values_mut() {
        view.epochs.values_mut().for_each(|f| f.sort());
        view.turns.iter_mut().for_each(|f| f.sort());
        let mut batches = 0;
        view.batch_of_turn = view
            .turns
            .iter()
            .map(|t| {
                t.iter().any(|f| f.0 && f.1 == FrameKind::Slot).then(|| {
                    batches += 1;
                    batches - 1
                })
            })
            .collect();
    }
    Ok(out
        .into_iter()
        .filter(|(c, _)| clients.contains(c))
        .enumerate()
        .map(|(i, (_, v))| (i as u64, v))
        .collect())
}

/// The leaves as a histogram of `bins` equal bins over `leaves` leaves.
pub fn histogram(leaves: &[u64], count: u64, bins: usize) -> Vec<u64> {
    let mut h = vec![0u64; bins];
    for &l in leaves {
        let b = (l.min(count - 1) as u128 * bins as u128 / count as u128) as usize;
        h[b] += 1;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// K = 2 accesses per batch, Z = 16, S = 32, A = 20: an eviction every 10 batches.
    fn shape() -> Shape {
        Shape::with_ring(shroud_oram::ring::RingConfig {
            z: 16,
            s: 32,
            a: 20,
            cached_levels: 4,
            ..shroud_oram::ring::RingConfig::new(1 << 12, 64)
        })
        .and_then(|s| s.with_schedule(2, 100))
        .expect("shape")
    }

    /// The buckets of the leftmost path below the cached levels.
    fn path(s: &Shape) -> Vec<u64> {
        (s.cached_levels..s.cached_levels + s.path_len)
            .map(|l| (1u64 << l) - 1)
            .collect()
    }

    /// Storage's view of one batch: the pattern's rewrites plus `owed`, both slots reading
    /// the leftmost path, and the pattern's maintenance reads plus `extra` slots.
    fn batch(s: &Shape, c: &mut RingCounts, v: &mut StoreView, owed: usize, extra: usize) {
        let k = v.epochs.len() as u64;
        let writes = if k == 0 {
            0
        } else {
            s.ring_maintenance(k - 1).0
        } + owed;
        let written: Vec<u64> = (0..writes as u64).map(|i| 10_000 + i).collect();
        let mut first = path(s);
        first.extend((0..s.ring_maintenance(k).1 + extra).map(|i| 20_000 + i as u64));
        c.batch(s, v, &written, &[first, path(s)]);
        v.epochs.push((k as usize, 2, 0, 0));
    }

    #[test]
    fn batches_in_the_pattern_pass_and_unexplained_reads_do_not() {
        let s = shape();
        let (mut c, mut v) = (RingCounts::default(), StoreView::default());
        // Few reads yet on the path: 16 extra slots are no early reshuffle storage could
        // predict.
        for n in 0..30 {
            batch(&s, &mut c, &mut v, 0, usize::from(n == 3) * 16);
        }
        assert_eq!(v.off_pattern, vec![3]);
        assert!(v.reshuffled.is_empty());
    }

    #[test]
    fn an_early_reshuffle_is_explained_by_storage_counts_and_owes_a_rewrite() {
        let s = shape();
        let (mut c, mut v) = (RingCounts::default(), StoreView::default());
        // Two reads of the path per batch, none rewritten: by batch 16 its buckets have
        // 32 reads, past S + 1 - K = 31.
        for _ in 0..16 {
            batch(&s, &mut c, &mut v, 0, 0);
        }
        batch(&s, &mut c, &mut v, 0, 16);
        assert!(v.off_pattern.is_empty(), "{:?}", v.off_pattern);
        assert_eq!(v.reshuffled, BTreeSet::from([16, 17]));
        // The next batch must carry the rewrite; without it, the batch is off the pattern.
        batch(&s, &mut c, &mut v, 0, 0);
        assert_eq!(v.off_pattern, vec![17]);
    }
}
