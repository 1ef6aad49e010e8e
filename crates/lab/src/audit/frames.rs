//! The frames clients sent, byte for byte, as a proxy that keeps them read them
//! (`Stack::start_keeping_frames`), for the bit tests: with the fields blanked that name a
//! client by design, and those fields returned, to be checked on their own.
//!
//! Blanked: a slot's grant (the proxy must know whose store it serves); each written
//! Path ORAM bucket's lineage and nonce (Ring ORAM sends none), `lineage || lineage prefix || counter` (the lineage names the
//! client's run; the counter counts its bucket writes); and the `seq` of slots and round
//! frames (the client's count of the frames it has sent, so two clients' differ by when each
//! started). [`Blanked::check`] checks that the counters and numbers only count. Every other
//! bit is kept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use shroud_proto::proxy::{ClientMsg, Reads};
use shroud_proto::{Capability, Grant, Limits, StoreId};
use shroud_proxy::transcript::{FrameKind, Transcript};

/// Frames of one connection and kind, in order, with the proxy's epoch of each.
pub type Frames = BTreeMap<(u64, FrameKind), Vec<(u64, Vec<u8>)>>;

/// What [`inbound`] took out of the frames, per connection.
#[derive(Clone, Debug, Default)]
pub struct Blanked {
    /// Each write slot's bucket nonce counters.
    pub counters: BTreeMap<u64, Vec<Vec<u64>>>,
    /// The `seq` of every slot and round frame, in the order sent.
    pub seqs: BTreeMap<u64, Vec<u64>>,
}

impl Blanked {
    /// Checks that what was blanked only counts: a connection's nonce counters count its
    /// bucket writes (each epoch's `k` write-backs take the next consecutive values; two
    /// paths share their top buckets, sent with the same sealed bytes), and its frame
    /// numbers its frames (each new frame the next; a batch resent after a failure repeats
    /// its own).
    pub fn check(&self, k: usize) -> Result<(), String> {
        for (conn, frames) in &self.counters {
            let mut next = None;
            for epoch in frames.chunks_exact(k) {
                let values: BTreeSet<u64> = epoch.iter().flatten().copied().collect();
                let (Some(&first), Some(&last)) = (values.first(), values.last()) else {
                    continue;
                };
                if next.is_some_and(|n| n != first) {
                    return Err(format!(
                        "connection {conn}: a gap or a reuse in its nonce counters"
                    ));
                }
                if last - first + 1 != values.len() as u64 {
                    return Err(format!(
                        "connection {conn}: an epoch's counters are not consecutive"
                    ));
                }
                next = Some(last + 1);
            }
        }
        for (conn, seqs) in &self.seqs {
            let mut top: Option<u64> = None;
            for &seq in seqs {
                if let Some(t) = top
                    && seq != t + 1
                    && seq > t
                {
                    return Err(format!("connection {conn}: frame number {seq} after {t}"));
                }
                top = Some(top.map_or(seq, |t| t.max(seq)));
            }
        }
        Ok(())
    }
}

/// Every frame clients sent, from a transcript that kept them, blanked as the module says.
pub fn inbound(transcript: &Path) -> Result<(Frames, Blanked)> {
    let mut out = Frames::new();
    let mut blanked = Blanked::default();
    let limits = Limits::default();
    for e in Transcript::read(transcript)? {
        if !e.inbound {
            continue;
        }
        let Some(hex) = e.frame else { continue };
        let mut bytes = data_encoding::HEXLOWER
            .decode(hex.as_bytes())
            .context("a frame that is not hex")?;
        match (e.kind, shroud_proto::decode::<ClientMsg>(&bytes, limits)) {
            (FrameKind::Round, Ok(ClientMsg::Round(mut frame))) => {
                blanked.seqs.entry(e.conn).or_default().push(frame.seq);
                frame.seq = 0;
                bytes = shroud_proto::encode(&ClientMsg::Round(frame), limits)?;
            }
            (FrameKind::Slot, Ok(ClientMsg::Slot(mut slot))) => {
                blanked.seqs.entry(e.conn).or_default().push(slot.seq);
                slot.seq = 0;
                slot.grant = Grant {
                    store: StoreId([0; 16]),
                    capability: Capability([0; 32]),
                };
                // Path ORAM buckets carry their nonce; Ring ORAM slots carry only
                // ciphertext and tag (the client keeps the nonces), so nothing to blank.
                if slot.write && matches!(slot.reads, Reads::Buckets(_)) {
                    let mut cs = Vec::new();
                    for w in &mut slot.writes {
                        // lineage (32) || nonce: lineage prefix (4) || counter (8, big-endian).
                        let counter = w.data.get(36..44).context("a bucket without a nonce")?;
                        cs.push(u64::from_be_bytes(counter.try_into()?));
                        w.data[..44].fill(0);
                    }
                    blanked.counters.entry(e.conn).or_default().push(cs);
                }
                bytes = shroud_proto::encode(&ClientMsg::Slot(slot), limits)?;
            }
            (FrameKind::Round | FrameKind::Slot, _) => {
                bail!("a {:?} frame that is not one", e.kind)
            }
            _ => {}
        }
        out.entry((e.conn, e.kind))
            .or_default()
            .push((e.epoch, bytes));
    }
    Ok((out, blanked))
}

/// The connections that registered a store, in the order they did (the order clients were
/// started in; a connection that only made an outbox registers nothing).
pub fn clients(frames: &Frames) -> Vec<u64> {
    frames
        .keys()
        .filter(|(_, k)| *k == FrameKind::Register)
        .map(|(c, _)| *c)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_numbers_that_do_more_than_count_are_caught() {
        let mut b = Blanked::default();
        b.counters
            .insert(1, vec![vec![1, 2], vec![3, 3], vec![4], vec![5, 6]]);
        b.seqs.insert(1, vec![7, 8, 9, 8, 9, 10]);
        assert_eq!(b.check(2), Ok(()));
        let mut gap = b.clone();
        gap.counters.insert(2, vec![vec![1, 2], vec![4, 5]]);
        assert!(gap.check(2).is_err());
        let mut jump = b.clone();
        jump.seqs.insert(3, vec![1, 2, 4]);
        assert!(jump.check(2).is_err());
    }
}
