//! Executing requests against the backend: capability checks, validation, and atomic,
//! serialized batches.
//!
//! Batches, creations and deletions run one at a time under an execution lock, so each sees
//! a consistent state and their effects are serializable; only the flush (group commit)
//! happens outside the lock. A batch's reads see its earlier writes, and reads outside the
//! lock can never see a half-applied batch.

use std::collections::HashMap;

use parking_lot::Mutex;
use shroud_proto::{Batch, BatchOp, BatchReply, ErrorCode, Geometry, Grant, ReadResult, StoreId};

use crate::admission::{MAX_BUCKET_LEN, reply_fits};
use crate::backend::{Backend, Fetch, Put, StoreMeta, Want};
use crate::capability;
use crate::stats::Stats;

/// What a mutation did, for the caller to wait on and count.
pub struct Outcome<T> {
    /// The reply payload.
    pub value: T,
    /// The commit sequence number to wait for before replying.
    pub seq: u64,
}

/// Checks one operation against its store's geometry.
fn check(op: &BatchOp, geometry: &Geometry) -> Result<(), ErrorCode> {
    match op {
        BatchOp::Read { bucket, .. } if *bucket >= geometry.buckets => {
            Err(ErrorCode::BucketOutOfRange)
        }
        BatchOp::Write { bucket, data, .. } => {
            if *bucket >= geometry.buckets {
                Err(ErrorCode::BucketOutOfRange)
            } else if data.len() != geometry.bucket_len as usize {
                Err(ErrorCode::WrongBucketSize)
            } else {
                Ok(())
            }
        }
        BatchOp::ReadSlots {
            slot_len, slots, ..
        } => {
            let fits = |s: &shroud_proto::SlotRef| {
                s.bucket < geometry.buckets
                    && (u64::from(s.slot) + 1) * u64::from(*slot_len)
                        <= u64::from(geometry.bucket_len)
            };
            if *slot_len == 0 || !slots.iter().all(fits) {
                Err(ErrorCode::BucketOutOfRange)
            } else {
                Ok(())
            }
        }
        BatchOp::Read { .. } => Ok(()),
    }
}

/// Where one part of an answer comes from.
#[derive(Clone, Copy)]
enum Source {
    /// An earlier write of the batch (an index into its puts).
    Pending(usize),
    /// The engine (an index into the batch's fetches).
    Fetched(usize),
}

/// One part of an answer: where it comes from and which bytes of the bucket.
#[derive(Clone, Copy)]
struct Part {
    source: Source,
    want: Want,
}

/// Makes one answer of `len` bytes from its parts, XORed together (one part for a bucket
/// read or an unXORed slot).
fn answer(
    len: usize,
    parts: &[Part],
    puts: &[Put<'_>],
    fetched: &[Option<Vec<u8>>],
) -> Result<ReadResult, ErrorCode> {
    let mut acc = ReadResult {
        present: false,
        data: vec![0; len],
    };
    for part in parts {
        let offset = match part.want {
            Want::Range { offset, .. } => offset,
            Want::Bucket | Want::Exists => 0,
        };
        let bytes = match part.source {
            // Checked against the geometry: a write of the batch holds every slot.
            Source::Pending(i) => puts[i]
                .data
                .get(offset..offset.saturating_add(len))
                .ok_or_else(|| internal("a slot outside its written bucket"))?,
            Source::Fetched(i) => match &fetched[i] {
                Some(b) => b,
                None => continue,
            },
        };
        // A stored bucket of another length would break the fixed reply size; treat it as
        // the engine's corruption.
        if bytes.len() != len {
            return Err(internal("a stored bucket has the wrong length"));
        }
        acc.present = true;
        for (o, b) in acc.data.iter_mut().zip(bytes) {
            *o ^= b;
        }
    }
    Ok(acc)
}

/// Runs requests against a backend, one at a time.
pub struct Executor {
    pub(crate) backend: std::sync::Arc<dyn Backend>,
    pub(crate) lock: Mutex<()>,
    pub(crate) commit: std::sync::Arc<crate::commit::GroupCommit>,
    /// The largest answer (the frame limit): checked before a request's reads.
    pub(crate) max_reply: usize,
    /// What a new store costs.
    pub(crate) new_stores: crate::NewStores,
}

pub(crate) fn internal<E: std::fmt::Display>(e: E) -> ErrorCode {
    tracing::error!("storage engine: {e}");
    ErrorCode::Internal
}

impl Executor {
    /// An executor over `backend`, sequencing mutations through `commit`, whose answers
    /// must fit in `max_reply` bytes, making new stores as `new_stores` allows.
    pub fn new(
        backend: std::sync::Arc<dyn Backend>,
        commit: std::sync::Arc<crate::commit::GroupCommit>,
        max_reply: usize,
        new_stores: crate::NewStores,
    ) -> Self {
        Executor {
            backend,
            lock: Mutex::new(()),
            commit,
            max_reply,
            new_stores,
        }
    }

    /// Makes a new store if `work` pays for it and the limit has room (the lock is held):
    /// `NeedsWork` or `StoreLimit` if not, false if the id was taken meanwhile.
    pub(crate) fn create_paid(
        &self,
        store: &StoreId,
        meta: &StoreMeta,
        work: shroud_proto::Work,
        stats: &Stats,
    ) -> Result<bool, ErrorCode> {
        use std::sync::atomic::Ordering::Relaxed;
        self.new_stores
            .admit(store, work, stats.stores.load(Relaxed))?;
        let created = self.backend.create(store, meta).map_err(internal)?;
        if created {
            stats.stores.fetch_add(1, Relaxed);
        }
        Ok(created)
    }

    /// Creates a store paid for by `work`, or confirms one its owner made before.
    pub fn create(
        &self,
        store: &StoreId,
        cap: &shroud_proto::Capability,
        geometry: Geometry,
        work: shroud_proto::Work,
        stats: &Stats,
    ) -> Result<Outcome<()>, ErrorCode> {
        if geometry.bucket_len == 0 || geometry.bucket_len > MAX_BUCKET_LEN || geometry.buckets == 0
        {
            return Err(ErrorCode::BadGeometry);
        }
        // Only under the id its capability names: nobody squats a store whose id they know.
        if *store != StoreId::of(cap) {
            return Err(ErrorCode::Unauthorized);
        }
        let meta = StoreMeta {
            cap_hash: capability::hash(cap),
            geometry,
        };
        let _g = self.lock.lock();
        if let Some(existing) = self.backend.meta(store).map_err(internal)? {
            // Idempotent for the owner (a reconnection, or a retry after a lost reply), at no
            // cost; refused for anyone else.
            if capability::check(Some(&existing), cap) && existing.geometry == geometry {
                return Ok(Outcome {
                    value: (),
                    seq: self.commit.current(),
                });
            }
            return Err(ErrorCode::Unauthorized);
        }
        if !self.create_paid(store, &meta, work, stats)? {
            return Err(ErrorCode::Unauthorized);
        }
        Ok(Outcome {
            value: (),
            seq: self.commit.applied(),
        })
    }

    /// Deletes a store its owner names.
    pub fn delete(&self, grant: &Grant, stats: &Stats) -> Result<Outcome<()>, ErrorCode> {
        let _g = self.lock.lock();
        let meta = self.backend.meta(&grant.store).map_err(internal)?;
        if !capability::check(meta.as_ref(), &grant.capability) {
            return Err(ErrorCode::Unauthorized);
        }
        let removed = self.backend.delete(&grant.store).map_err(internal)?;
        use std::sync::atomic::Ordering::Relaxed;
        stats.stores.fetch_sub(1, Relaxed);
        let _ = stats
            .stored_bytes
            .fetch_update(Relaxed, Relaxed, |b| Some(b.saturating_sub(removed)));
        Ok(Outcome {
            value: (),
            seq: self.commit.applied(),
        })
    }

    /// Runs a batch: every grant checked, every op validated, then reads and writes in
    /// order, the writes applied atomically.
    pub fn batch(&self, batch: &Batch, stats: &Stats) -> Result<Outcome<BatchReply>, ErrorCode> {
        let _g = self.lock.lock();
        // Each grant's store, or why the grant is refused: a refused grant's operations are
        // skipped, and every other grant's run (one bad grant fails nobody else).
        let stores: Vec<StoreId> = batch.grants.iter().map(|g| g.store).collect();
        let found = self.backend.metas(&stores).map_err(internal)?;
        if found.len() != stores.len() {
            return Err(internal("the engine answered a different number of stores"));
        }
        let mut metas: Vec<Result<StoreMeta, ErrorCode>> = batch
            .grants
            .iter()
            .zip(found)
            .map(|(g, meta)| match meta {
                Some(m) if capability::check(Some(&m), &g.capability) => Ok(m),
                _ => Err(ErrorCode::Unauthorized),
            })
            .collect();
        for op in &batch.ops {
            // An operation naming no grant is malformed: the whole batch is refused.
            let entry = metas
                .get_mut(op.grant() as usize)
                .ok_or(ErrorCode::BucketOutOfRange)?;
            let Ok(meta) = entry else { continue };
            if let Err(code) = check(op, &meta.geometry) {
                *entry = Err(code);
            }
        }
        let admitted = |grant: u32| metas[grant as usize].as_ref().ok();
        // The answer's size and the bytes read to make it, bounded before any read: a
        // slot XORed into one answer costs its read all the same.
        let reply: usize = batch
            .ops
            .iter()
            .map(|op| match op {
                BatchOp::Read { grant, .. } => {
                    admitted(*grant).map_or(0, |m| m.geometry.bucket_len as usize + 9)
                }
                BatchOp::Write { .. } => 0,
                BatchOp::ReadSlots {
                    grant,
                    slot_len,
                    slots,
                    ..
                } => admitted(*grant).map_or(0, |_| {
                    (*slot_len as usize + 9).saturating_mul(slots.len()) + 9
                }),
            })
            .fold(0usize, usize::saturating_add)
            .saturating_add(batch.grants.len().saturating_mul(8));
        if !reply_fits(reply, self.max_reply) {
            return Err(ErrorCode::TooLarge);
        }
        // Reads see earlier writes of the same batch through `pending`, keyed by store (not by
        // grant: a batch may name one store under several grants, as the proxy does for a
        // client's K slots). The engine is read before anything is applied, so every read
        // that no earlier write answers goes into one `fetch`: one round trip to a networked
        // engine. First the plan, then the reads, then the answers.
        let mut puts: Vec<Put<'_>> = Vec::new();
        let mut pending: HashMap<(StoreId, u64), usize> = HashMap::new();
        let mut fetches: Vec<Fetch> = Vec::new();
        // Per answer: its length and its parts (XORed together).
        let mut plan: Vec<(usize, Vec<Part>)> = Vec::new();
        let mut part = |store: StoreId, bucket: u64, want: Want, pending: &HashMap<_, _>| {
            let source = match pending.get(&(store, bucket)) {
                Some(&i) => Source::Pending(i),
                None => {
                    fetches.push(Fetch {
                        store,
                        bucket,
                        want,
                    });
                    Source::Fetched(fetches.len() - 1)
                }
            };
            Part { source, want }
        };
        for op in &batch.ops {
            let Some(meta) = admitted(op.grant()) else {
                continue;
            };
            let store = batch.grants[op.grant() as usize].store;
            match op {
                BatchOp::ReadSlots {
                    slot_len,
                    xor,
                    slots,
                    ..
                } => {
                    let len = *slot_len as usize;
                    let parts = slots.iter().map(|s| {
                        let offset = usize::from(s.slot) * len;
                        part(store, s.bucket, Want::Range { offset, len }, &pending)
                    });
                    if *xor {
                        plan.push((len, parts.collect()));
                    } else {
                        plan.extend(parts.map(|p| (len, vec![p])));
                    }
                }
                BatchOp::Read { bucket, .. } => {
                    let len = meta.geometry.bucket_len as usize;
                    plan.push((len, vec![part(store, *bucket, Want::Bucket, &pending)]));
                }
                BatchOp::Write { bucket, data, .. } => {
                    pending.insert((store, *bucket), puts.len());
                    puts.push(Put {
                        store,
                        bucket: *bucket,
                        data,
                    });
                }
            }
        }
        let fetched = if fetches.is_empty() {
            Vec::new()
        } else {
            self.backend.fetch(&fetches).map_err(internal)?
        };
        if fetched.len() != fetches.len() {
            return Err(internal("the engine answered a different number of reads"));
        }
        let mut reads = Vec::with_capacity(plan.len());
        for (len, parts) in &plan {
            reads.push(answer(*len, parts, &puts, &fetched)?);
        }
        let (seq, new_bytes) = if puts.is_empty() {
            (self.commit.current(), 0)
        } else {
            let new_bytes = self.backend.apply_new(&puts).map_err(internal)?;
            (self.commit.applied(), new_bytes)
        };
        use std::sync::atomic::Ordering::Relaxed;
        stats.batches.fetch_add(1, Relaxed);
        stats.buckets_read.fetch_add(reads.len() as u64, Relaxed);
        stats.buckets_written.fetch_add(puts.len() as u64, Relaxed);
        stats.stored_bytes.fetch_add(new_bytes, Relaxed);
        let refused = metas
            .iter()
            .enumerate()
            .filter_map(|(g, m)| m.as_ref().err().map(|&code| (g as u32, code)))
            .collect();
        Ok(Outcome {
            value: BatchReply { refused, reads },
            seq,
        })
    }
}
