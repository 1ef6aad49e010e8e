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

/// The proxy's view of one connection: per epoch, the frames in and out as (kind, bytes).
pub type ConnView = BTreeMap<u64, Vec<(bool, FrameKind, u64)>>;

/// The proxy's view of every connection, in accept order.
pub fn connections(transcript: &Path) -> std::io::Result<BTreeMap<u64, ConnView>> {
    let mut out: BTreeMap<u64, ConnView> = BTreeMap::new();
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
        out.entry(conn)
            .or_default()
            .entry(epoch)
            .or_default()
            .push((inbound, kind, bytes));
    }
    for view in out.values_mut() {
        for frames in view.values_mut() {
            frames.sort();
        }
    }
    Ok(out)
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
