//! Inbox queues: mailbox envelopes filed by their routing headers, drained by their owners,
//! deleted only once acknowledged, bounded with backpressure.
//!
//! An inbox is a store used as a queue (`head..tail` of sequence numbers, starting at 1), its
//! geometry's `bucket_len` the envelope length and `buckets` the most it holds. A proxy's
//! [`Request::Mail`](shroud_proto::Request::Mail) carries every client's envelopes and sealed
//! drain requests for an epoch; the answers go back sealed to each requester
//! ([`shroud_proto::sealed`]), so the proxy learns neither where an envelope went nor whether it
//! was a dummy, and cannot match what it carried in to what it carries out.

use std::collections::HashMap;

use rand::Rng;
use shroud_proto::mail::{
    DRAIN_INFO, DrainReply, DrainRequest, DrainStatus, MailBatch, MailReply, NULL_DRAIN,
    STATUS_LEN, Sealed, drain_reply_len,
};
use shroud_proto::routing::{INBOX_LEN, NULL_INBOX, ROUTING_LEN, RoutingKey};
use shroud_proto::sealed::RESPONSE_OVERHEAD;
use shroud_proto::{DepositStatus, Drained, Envelope, ErrorCode, Geometry, Grant, StoreId};

use crate::admission::reply_fits;
use crate::backend::{QueueOp, StoreMeta};
use crate::batch::{Executor, Outcome, internal};
use crate::capability;
use crate::stats::Stats;

/// The most envelopes one drain returns.
pub const MAX_DRAIN: u32 = 1024;
/// The largest envelope an inbox may take.
pub const MAX_ENVELOPE_LEN: u32 = 64 * 1024;

/// Queue changes gathered under the execution lock, applied at once.
#[derive(Default)]
struct Filing<'a> {
    states: HashMap<StoreId, (u64, u64)>,
    ops: Vec<QueueOp<'a>>,
    delivered: u64,
}

fn noise(len: usize) -> Sealed {
    let mut b = vec![0u8; len];
    rand::rng().fill_bytes(&mut b);
    Sealed(b)
}

impl Executor {
    /// Files one envelope for `inbox` (the lock is held).
    fn file<'a>(
        &self,
        envelope: &'a [u8],
        inbox: [u8; INBOX_LEN],
        filing: &mut Filing<'a>,
    ) -> Result<DepositStatus, ErrorCode> {
        if inbox == NULL_INBOX {
            return Ok(DepositStatus::Dropped);
        }
        let store = StoreId(inbox);
        let Some(meta) = self.backend.meta(&store).map_err(internal)? else {
            return Ok(DepositStatus::NoInbox);
        };
        if envelope.len() != meta.geometry.bucket_len as usize {
            return Ok(DepositStatus::NoInbox);
        }
        let (head, tail) = match filing.states.get(&store) {
            Some(&s) => s,
            None => self.backend.queue_state(&store).map_err(internal)?,
        };
        if tail - head >= meta.geometry.buckets {
            return Ok(DepositStatus::Full);
        }
        filing.ops.push(QueueOp::Push {
            store,
            seq: tail,
            data: envelope,
        });
        filing.states.insert(store, (head, tail + 1));
        filing.delivered += 1;
        Ok(DepositStatus::Delivered)
    }

    /// Applies a filing; true if it changed anything.
    fn apply_filing(&self, mut filing: Filing<'_>, stats: &Stats) -> Result<bool, ErrorCode> {
        if filing.ops.is_empty() {
            return Ok(false);
        }
        let states: Vec<_> = filing.states.drain().collect();
        filing.ops.extend(
            states
                .into_iter()
                .map(|(store, (head, tail))| QueueOp::SetState { store, head, tail }),
        );
        self.backend.apply_queue(&filing.ops).map_err(internal)?;
        stats
            .buckets_written
            .fetch_add(filing.delivered, std::sync::atomic::Ordering::Relaxed);
        Ok(true)
    }

    /// Deletes `store`'s envelopes up to `ack_through` and returns the next `max` (the lock
    /// is held; the capability was checked). True if it deleted anything.
    fn take(
        &self,
        store: StoreId,
        ack_through: u64,
        max: u32,
        stats: &Stats,
    ) -> Result<(Vec<Drained>, bool), ErrorCode> {
        let (head, tail) = self.backend.queue_state(&store).map_err(internal)?;
        let new_head = head.max(ack_through.saturating_add(1).min(tail));
        let changed = new_head > head;
        if changed {
            let mut ops: Vec<QueueOp<'_>> = (head..new_head)
                .map(|s| QueueOp::Pop { store, seq: s })
                .collect();
            ops.push(QueueOp::SetState {
                store,
                head: new_head,
                tail,
            });
            self.backend.apply_queue(&ops).map_err(internal)?;
        }
        let out: Vec<Drained> = self
            .backend
            .queue_read(&store, new_head, max as usize)
            .map_err(internal)?
            .into_iter()
            .map(|(s, data)| Drained {
                present: true,
                seq: s,
                envelope: Envelope(data),
            })
            .collect();
        stats
            .buckets_read
            .fetch_add(out.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok((out, changed))
    }

    /// Files envelopes in their inboxes; all queued or, on an engine error, none.
    pub fn deposit(
        &self,
        envelopes: &[Envelope],
        routing: &RoutingKey,
        stats: &Stats,
    ) -> Result<Outcome<Vec<DepositStatus>>, ErrorCode> {
        // The X25519 work, outside the lock that every batch needs.
        let inboxes: Vec<Option<[u8; INBOX_LEN]>> = envelopes
            .iter()
            .map(|env| {
                routing
                    .open(&env.0[..ROUTING_LEN.min(env.0.len())])
                    .ok()
                    .map(|(inbox, _)| inbox)
            })
            .collect();
        let _g = self.lock.lock();
        let mut filing = Filing::default();
        let mut out = Vec::with_capacity(envelopes.len());
        for (env, inbox) in envelopes.iter().zip(inboxes) {
            out.push(match inbox {
                Some(inbox) => self.file(&env.0, inbox, &mut filing)?,
                None => DepositStatus::Unreadable,
            });
        }
        let seq = if self.apply_filing(filing, stats)? {
            self.commit.applied()
        } else {
            self.commit.current()
        };
        Ok(Outcome { value: out, seq })
    }

    /// Deletes an inbox's envelopes up to `ack_through`, then returns the next `max` (padded
    /// with absent slots of the inbox's envelope size, so every reply has one size).
    pub fn drain(
        &self,
        grant: &Grant,
        ack_through: u64,
        max: u32,
        stats: &Stats,
    ) -> Result<Outcome<Vec<Drained>>, ErrorCode> {
        if max > MAX_DRAIN {
            return Err(ErrorCode::BucketOutOfRange);
        }
        let _g = self.lock.lock();
        let meta = self.backend.meta(&grant.store).map_err(internal)?;
        if !capability::check(meta.as_ref(), &grant.capability) {
            return Err(ErrorCode::Unauthorized);
        }
        let len = meta.map_or(0, |m| m.geometry.bucket_len as usize);
        // Padded to `max` slots of the store's bucket length: bounded before it is built.
        let reply = (max as usize).saturating_mul(len.saturating_add(17));
        if len > MAX_ENVELOPE_LEN as usize || !reply_fits(reply, self.max_reply) {
            return Err(ErrorCode::TooLarge);
        }
        let (mut out, changed) = self.take(grant.store, ack_through, max, stats)?;
        out.resize(
            max as usize,
            Drained {
                present: false,
                seq: 0,
                envelope: Envelope(vec![0; len]),
            },
        );
        let seq = if changed {
            self.commit.applied()
        } else {
            self.commit.current()
        };
        Ok(Outcome { value: out, seq })
    }

    /// One drain of a proxy's mail batch (the lock is held): creates the inbox on first use
    /// with `capacity` envelopes. True if it changed anything.
    fn sealed_drain(
        &self,
        req: &DrainRequest,
        batch: &MailBatch,
        capacity: u64,
        stats: &Stats,
    ) -> Result<(DrainReply, bool), ErrorCode> {
        let empty = |status| DrainReply {
            status,
            envelopes: Vec::new(),
        };
        let store = req.grant.store;
        if store == NULL_DRAIN {
            return Ok((empty(DrainStatus::Ok), false));
        }
        let mut changed = false;
        match self.backend.meta(&store).map_err(internal)? {
            // Created only under the id its capability names: an inbox id is public in its
            // owner's address, and a squatter who knows it must not create it first.
            None if !req.grant.names_its_store() => {
                return Ok((empty(DrainStatus::Unauthorized), false));
            }
            None => {
                let meta = StoreMeta {
                    cap_hash: capability::hash(&req.grant.capability),
                    geometry: Geometry {
                        bucket_len: batch.envelope_len,
                        buckets: capacity,
                    },
                };
                match self.create_paid(&store, &meta, req.work, stats) {
                    Err(ErrorCode::NeedsWork) => {
                        return Ok((empty(DrainStatus::Unauthorized), false));
                    }
                    Err(ErrorCode::Internal) => return Err(ErrorCode::Internal),
                    Err(_) => return Ok((empty(DrainStatus::Failed), false)),
                    Ok(_) => {}
                }
                changed = true;
            }
            Some(m) if !capability::check(Some(&m), &req.grant.capability) => {
                return Ok((empty(DrainStatus::Unauthorized), false));
            }
            Some(m) if m.geometry.bucket_len != batch.envelope_len => {
                return Ok((empty(DrainStatus::Failed), false));
            }
            Some(_) => {}
        }
        let (envelopes, took) = self.take(store, req.ack_through, batch.drain_max, stats)?;
        Ok((
            DrainReply {
                status: DrainStatus::Ok,
                envelopes,
            },
            changed || took,
        ))
    }

    /// A proxy's pooled mail for one epoch: every deposit filed, then every drain served;
    /// each answer sealed to its requester. A piece that does not open gets noise of the
    /// right length.
    pub fn mail(
        &self,
        batch: &MailBatch,
        routing: &RoutingKey,
        capacity: u64,
        stats: &Stats,
    ) -> Result<Outcome<MailReply>, ErrorCode> {
        if batch.envelope_len < ROUTING_LEN as u32
            || batch.envelope_len > MAX_ENVELOPE_LEN
            || batch.drain_max > MAX_DRAIN
        {
            return Err(ErrorCode::WrongShape);
        }
        let mut rng = rand::rng();
        // The X25519 work (opening every header and drain request), outside the lock that
        // every batch needs.
        let headers: Vec<_> = batch
            .deposits
            .iter()
            .map(|env| {
                (env.0.len() == batch.envelope_len as usize)
                    .then(|| routing.open(&env.0[..ROUTING_LEN]).ok())
                    .flatten()
            })
            .collect();
        let requests: Vec<_> = batch
            .drains
            .iter()
            .map(|sealed| {
                let opened = routing.open_request(DRAIN_INFO, &sealed.0).ok();
                opened.and_then(|(plain, r)| Some((DrainRequest::from_bytes(&plain)?, r)))
            })
            .collect();
        let _g = self.lock.lock();
        let mut filing = Filing::default();
        let mut deposited = Vec::with_capacity(batch.deposits.len());
        for (env, opened) in batch.deposits.iter().zip(headers) {
            deposited.push(match opened {
                Some((inbox, responder)) => {
                    let status = self.file(&env.0, inbox, &mut filing)?;
                    Sealed(responder.seal(&[status.to_byte()], &mut rng))
                }
                None => noise(STATUS_LEN),
            });
        }
        let mut changed = self.apply_filing(filing, stats)?;
        let reply_len = drain_reply_len(batch.drain_max, batch.envelope_len);
        let mut drained = Vec::with_capacity(batch.drains.len());
        for parsed in requests {
            drained.push(match parsed {
                Some((req, responder)) => {
                    let (reply, c) = self.sealed_drain(&req, batch, capacity, stats)?;
                    changed |= c;
                    let plain = reply.to_bytes(batch.drain_max, batch.envelope_len);
                    debug_assert_eq!(plain.len() + RESPONSE_OVERHEAD, reply_len);
                    Sealed(responder.seal(&plain, &mut rng))
                }
                None => noise(reply_len),
            });
        }
        let seq = if changed {
            self.commit.applied()
        } else {
            self.commit.current()
        };
        Ok(Outcome {
            value: MailReply { deposited, drained },
            seq,
        })
    }
}
