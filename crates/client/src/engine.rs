//! The scheduler's engine: Path ORAM or Ring ORAM, as the proxy's shape says, behind the
//! few steps the schedule takes (plan a batch, the slots it sends, the answers it takes,
//! what it saves), so that [`crate::schedule`] keeps one write-ahead rule and one
//! resend rule for both.

use rand::rngs::StdRng;
use shroud_oram::pages::Pages;
use shroud_oram::ring::{RingOram, RingReply, SlotId};
use shroud_oram::{Key, Op, Oram, Progress};
use shroud_proto::proxy::{Reads, SlotWrite};
use shroud_proto::{ReadResult, Shape, SlotRef};

use crate::error::{ClientError, message, source};

/// One store's engine.
pub(crate) enum Engine {
    /// Path ORAM: the write-back of a batch travels with the next batch's slots, held by
    /// the scheduler (and its write-ahead record).
    Path(Oram),
    /// Ring ORAM: the engine holds the buckets it rewrote until its next request (and
    /// saves them in its own pages).
    Ring(RingOram),
}

/// What one slot of an epoch carries: whether its writes are real, the writes, the reads.
pub(crate) type SlotBody = (bool, Vec<SlotWrite>, Reads);

/// How a batch's answers went.
pub(crate) enum Verified {
    /// Every read verified: the batch is complete.
    Done,
    /// Some read did not verify: nothing changed, the same slots go again.
    Tampered(shroud_oram::Error),
    /// The engine failed otherwise: the batch cannot go on.
    Failed(ClientError),
}

/// Ring ORAM slot ids as the storage protocol names them.
pub(crate) fn slot_refs(ids: &[SlotId]) -> Vec<SlotRef> {
    ids.iter()
        .map(|s| SlotRef {
            bucket: s.bucket.index,
            slot: s.slot,
        })
        .collect()
}

impl Engine {
    /// A fresh engine of `shape`'s mode under `key`.
    pub fn new(shape: &Shape, key: Key, rng: &mut StdRng) -> Result<Engine, ClientError> {
        let wrong = |e: shroud_oram::Error| ClientError::WrongShape(source(e));
        let engine = match shape.ring_config() {
            Some(c) => Engine::Ring(RingOram::new(c, key, rng).map_err(wrong)?),
            None => Engine::Path(Oram::new(shape.engine_config(), key, rng).map_err(wrong)?),
        };
        engine.check_shape(shape)?;
        Ok(engine)
    }

    /// An engine rebuilt from its saved pages (looked up by name), checked against `shape`.
    pub fn from_pages<'a>(
        shape: &Shape,
        page: impl Fn(&str) -> Option<&'a [u8]>,
        key: Key,
    ) -> Result<Engine, shroud_oram::Error> {
        Ok(if shape.is_ring() {
            Engine::Ring(RingOram::from_pages(page, key)?)
        } else {
            Engine::Path(Oram::from_pages(page, key)?)
        })
    }

    /// Refuses an engine that does not have the store shape the proxy serves.
    pub fn check_shape(&self, shape: &Shape) -> Result<(), ClientError> {
        let fits = match self {
            Engine::Path(oram) => {
                let trees: Vec<_> = oram.trees().collect();
                matches!(trees.as_slice(), [g] if g.fetched_levels() == shape.path_len as usize
                    && g.ciphertext_len() == shape.bucket_len as usize
                    && g.bucket_count() == shape.buckets)
            }
            Engine::Ring(ring) => Some(*ring.config()) == shape.ring_config(),
        };
        if fits {
            Ok(())
        } else {
            Err(ClientError::WrongShape(message(format!(
                "the engine's store is not the shape {shape:?}"
            ))))
        }
    }

    /// Plans a batch of `ops` (one per slot). A refusal before anything was planned (a bad
    /// address or length) is [`ClientError::BadRequest`]; any other is fatal.
    pub fn begin(&mut self, ops: &[Op<'_>], rng: &mut StdRng) -> Result<(), ClientError> {
        let refused = match self {
            Engine::Path(oram) => oram.begin(ops, rng).err(),
            Engine::Ring(ring) => ring.begin_batch(ops, rng).err(),
        };
        match refused {
            None => Ok(()),
            Some(
                e @ (shroud_oram::Error::AddressOutOfBounds { .. }
                | shroud_oram::Error::WrongBlockSize { .. }
                | shroud_oram::Error::BatchSize { .. }),
            ) => Err(ClientError::BadRequest(source(e))),
            Some(e) if matches!(self, Engine::Path(_)) => Err(ClientError::BadRequest(source(e))),
            Some(e) => Err(ClientError::State(source(e))),
        }
    }

    /// The slots of the batch in flight, one per access: Path ORAM's carry `pending` (the
    /// last batch's write-back, or zeros), Ring ORAM's first carries the engine's rewrites
    /// and maintenance reads.
    pub fn slots(&mut self, shape: &Shape, pending: Option<&Vec<Vec<SlotWrite>>>) -> Vec<SlotBody> {
        match self {
            Engine::Path(oram) => {
                let n = shape.path_len as usize;
                let zeros = || {
                    vec![
                        SlotWrite {
                            bucket: 0,
                            data: vec![0u8; shape.bucket_len as usize]
                        };
                        n
                    ]
                };
                let reads: Vec<Vec<u64>> = match oram.fetch() {
                    Some(f) => f
                        .ids()
                        .chunks(n)
                        .map(|p| p.iter().map(|id| id.index).collect())
                        .collect(),
                    None => Vec::new(),
                };
                reads
                    .into_iter()
                    .enumerate()
                    .map(|(j, r)| {
                        let writes = pending.and_then(|p| p.get(j).cloned());
                        (
                            writes.is_some(),
                            writes.unwrap_or_else(zeros),
                            Reads::Buckets(r),
                        )
                    })
                    .collect()
            }
            Engine::Ring(ring) => {
                let Some(req) = ring.request() else {
                    return Vec::new();
                };
                req.online
                    .iter()
                    .enumerate()
                    .map(|(j, online)| {
                        let (writes, each) = if j == 0 {
                            let writes: Vec<SlotWrite> = req
                                .writes
                                .iter()
                                .map(|(id, data)| SlotWrite {
                                    bucket: id.index,
                                    data: data.clone(),
                                })
                                .collect();
                            (writes, slot_refs(&req.reads))
                        } else {
                            (Vec::new(), Vec::new())
                        };
                        (
                            !writes.is_empty(),
                            writes,
                            Reads::Slots {
                                online: slot_refs(online),
                                each,
                            },
                        )
                    })
                    .collect()
            }
        }
    }

    /// Takes the answers to the batch's slots (in slot order) and verifies them.
    pub fn supply(&mut self, replies: &[Vec<ReadResult>], rng: &mut StdRng) -> Verified {
        match self {
            Engine::Path(oram) => {
                if let Some(mut fetch) = oram.fetch() {
                    for (i, r) in replies.iter().flatten().enumerate() {
                        let _ = fetch.supply(i, r.present.then_some(&r.data[..]));
                    }
                }
                match oram.advance() {
                    Ok(Progress::Done) => Verified::Done,
                    Err(e @ shroud_oram::Error::Integrity(_)) => Verified::Tampered(e),
                    other => {
                        oram.abort();
                        Verified::Failed(ClientError::Integrity(match other {
                            Err(e) => source(e),
                            Ok(_) => message("more rounds than a flat map needs"),
                        }))
                    }
                }
            }
            Engine::Ring(ring) => {
                let mut reply = RingReply::default();
                for (j, r) in replies.iter().enumerate() {
                    let mut answers = r.iter();
                    // An XOR answer always has its bytes (zeros where no slot read was
                    // ever written, which storage marks absent); the engine checks them.
                    reply
                        .online
                        .push(answers.next().map(|a| a.data.clone()).unwrap_or_default());
                    if j == 0 {
                        reply
                            .reads
                            .extend(answers.map(|a| a.present.then(|| a.data.clone())));
                    }
                }
                match ring.finish(&reply, rng) {
                    Ok(()) => Verified::Done,
                    Err(e @ shroud_oram::Error::Integrity(_)) => Verified::Tampered(e),
                    Err(e @ shroud_oram::Error::StashOverflow { .. }) => {
                        // The accesses completed and no block was lost: the stash grew
                        // past its bound, which the next evictions drain.
                        tracing::error!("{e}");
                        Verified::Done
                    }
                    Err(e) => Verified::Failed(ClientError::State(source(e))),
                }
            }
        }
    }

    /// After a verified batch, Path ORAM's write-back, one path per slot (Ring ORAM keeps
    /// its own).
    pub fn write_back(&self, path_len: u32) -> Option<Vec<Vec<SlotWrite>>> {
        let Engine::Path(oram) = self else {
            return None;
        };
        oram.write_back().map(|wb| {
            let items: Vec<SlotWrite> = wb
                .iter()
                .map(|(id, b)| SlotWrite {
                    bucket: id.index,
                    data: b.to_vec(),
                })
                .collect();
            items
                .chunks(path_len as usize)
                .map(<[SlotWrite]>::to_vec)
                .collect()
        })
    }

    /// What access `j` of the last verified batch read.
    pub fn result(&self, j: usize) -> Vec<u8> {
        match self {
            Engine::Path(oram) => oram.result(j).map(<[u8]>::to_vec).unwrap_or_default(),
            Engine::Ring(ring) => ring
                .results()
                .nth(j)
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
        }
    }

    /// True while a batch waits for verifying answers.
    pub fn in_flight(&self) -> bool {
        match self {
            Engine::Path(oram) => oram.in_flight(),
            Engine::Ring(ring) => ring.request().is_some(),
        }
    }

    /// The pages changed since the last call (all of them after a restore).
    pub fn changed_pages(&mut self) -> Result<Pages, shroud_oram::Error> {
        match self {
            Engine::Path(oram) => oram.changed_pages(),
            Engine::Ring(ring) => ring.changed_pages(),
        }
    }
}
