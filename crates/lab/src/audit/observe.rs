//! What the operators saw of one client, extracted from their transcripts: storage's batches
//! (slots, bytes and leaves per epoch, by store) and the proxy's frames (by connection).

use std::collections::BTreeMap;
use std::path::Path;

use shroud_proto::Shape;
use shroud_proxy::transcript::{Entry as ProxyEntry, FrameKind, Transcript as ProxyTranscript};
use shroud_storage::Transcript;

/// Storage's view of one store: per batch (one per epoch), its slots and the sizes of their
/// requests; and the leaf of every path it read.
#[derive(Clone, Debug, Default)]
pub struct StoreView {
    /// Per batch: (batch index, slots, bytes written, buckets read) for this store.
    pub epochs: Vec<(usize, u64, u64, u64)>,
    /// The leaf of every path read.
    pub leaves: Vec<u64>,
}

/// Storage's view of every store, from its transcript.
pub fn stores(transcript: &Path, shape: &Shape) -> std::io::Result<BTreeMap<String, StoreView>> {
    let height = shape.path_len + shape.cached_levels - 1;
    let first_leaf = (1u64 << height) - 1;
    let mut out: BTreeMap<String, StoreView> = BTreeMap::new();
    let batches = Transcript::read(transcript)?
        .into_iter()
        .filter(|e| e.op == shroud_storage::Op::Batch);
    for (i, e) in batches.enumerate() {
        let mut per: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
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
            if let Some(&leaf) = reads.last()
                && leaf >= first_leaf
            {
                v.leaves.push(leaf - first_leaf);
            }
            let p = per.entry(store.as_str()).or_default();
            p.0 += 1;
            p.1 += written;
            p.2 += reads.len() as u64;
        }
        for (store, (slots, written, reads)) in per {
            if let Some(v) = out.get_mut(store) {
                v.epochs.push((i, slots, written, reads));
            }
        }
    }
    Ok(out)
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
