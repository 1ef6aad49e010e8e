//! The epoch clock: at every boundary, one shuffled batch of every slot that arrived in
//! time, writes first, then reads; replies go back to their owners without waiting on any.
//! A round's frames are handed to the round task ([`crate::round`]).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use shroud_proto::proxy::{ProxyMsg, Reads, SlotDone};
use shroud_proto::{Batch, BatchOp, BatchReply, ErrorCode, ReadResult};

use crate::{Pending, Shared};

/// Builds the storage batch for `slots` (already shuffled): one grant per slot, all
/// write-backs first, then all reads (Ring ORAM slots of `slot_len` bytes).
fn batch(slots: &[Pending], slot_len: u32) -> Batch {
    let grants = slots.iter().map(|p| p.slot.grant.clone()).collect();
    let mut ops = Vec::new();
    for (g, p) in slots.iter().enumerate() {
        if p.slot.write {
            for w in &p.slot.writes {
                ops.push(BatchOp::Write {
                    grant: g as u32,
                    bucket: w.bucket,
                    data: w.data.clone(),
                });
            }
        }
    }
    for (g, p) in slots.iter().enumerate() {
        let grant = g as u32;
        match &p.slot.reads {
            Reads::Buckets(buckets) => {
                ops.extend(
                    buckets
                        .iter()
                        .map(|&bucket| BatchOp::Read { grant, bucket }),
                );
            }
            Reads::Slots { online, each } => {
                ops.push(BatchOp::ReadSlots {
                    grant,
                    slot_len,
                    xor: true,
                    slots: online.clone(),
                });
                if !each.is_empty() {
                    ops.push(BatchOp::ReadSlots {
                        grant,
                        slot_len,
                        xor: false,
                        slots: each.clone(),
                    });
                }
            }
        }
    }
    Batch { grants, ops }
}

/// Sends each slot its reads (its [`Reads::answers`], in slot order), or its failure: a slot whose
/// grant storage refused fails alone, and a refused store is closed out at the door from
/// then on.
fn dispatch(
    slots: Vec<Pending>,
    epoch: u64,
    result: Result<BatchReply, ErrorCode>,
    shared: &Shared,
) {
    match result {
        Ok(mut reply) => {
            let mut reads = std::mem::take(&mut reply.reads).into_iter();
            for (g, p) in slots.into_iter().enumerate() {
                // A slow or gone client never holds up the others.
                if let Some(code) = reply.refuses(g as u32) {
                    shared.stats.failed_slots.fetch_add(1, Relaxed);
                    if code == ErrorCode::Unauthorized {
                        // This store is gone (or was never this grant's).
                        shared.refused.lock().insert(p.slot.grant.store);
                        tracing::warn!(
                            "epoch {epoch}: a client's store is refused; closing it out"
                        );
                    }
                    let _ = p.reply.try_send(ProxyMsg::Failed(p.slot.seq, code));
                    continue;
                }
                let mine: Vec<ReadResult> = reads.by_ref().take(p.slot.reads.answers()).collect();
                let _ = p.reply.try_send(ProxyMsg::Done(SlotDone {
                    seq: p.slot.seq,
                    epoch,
                    reads: mine,
                }));
            }
        }
        Err(code) => {
            shared
                .stats
                .failed_slots
                .fetch_add(slots.len() as u64, Relaxed);
            for p in slots {
                let _ = p.reply.try_send(ProxyMsg::Failed(p.slot.seq, code));
            }
        }
    }
}

async fn send(shared: &Shared, slots: &[Pending]) -> Result<BatchReply, ErrorCode> {
    let mut up = shared.upstream.lock().await;
    up.batch(batch(slots, shared.config.shape.slot_len))
        .await
        .map_err(|e| match e {
            shroud_net::conn::ConnError::Refused(code) => code,
            other => {
                tracing::warn!("storage unreachable: {other}");
                ErrorCode::Unavailable
            }
        })
}

/// Runs one epoch's slots in one batch. Storage refuses grants one by one, so one client's
/// bad grant (a deleted store, say) fails only that client's slots.
async fn run_epoch(shared: &Shared, epoch: u64, mut slots: Vec<Pending>) {
    slots.shuffle(&mut rand::rng());
    let result = send(shared, &slots).await;
    if let Err(code) = result
        && code != ErrorCode::Unavailable
    {
        tracing::warn!("epoch {epoch}: storage refused the whole batch ({code:?})");
    }
    dispatch(slots, epoch, result, shared);
}

/// The clock: runs until aborted.
pub(crate) async fn run(shared: Arc<Shared>) {
    let period = Duration::from_millis(u64::from(shared.config.shape.epoch_ms.max(1)));
    let k = u64::from(shared.config.shape.slots_per_epoch);
    let mut next = tokio::time::Instant::now() + period;
    loop {
        tokio::time::sleep_until(next).await;
        let (epoch, slots, rounds) = {
            let mut open = shared.open.lock();
            let e = open.epoch;
            open.epoch += 1;
            // A round's frames gather over its window; its last epoch's boundary closes it.
            let rounds = if shared.config.shape.closes_round(e) {
                std::mem::take(&mut open.rounds)
            } else {
                Vec::new()
            };
            (e, std::mem::take(&mut open.slots), rounds)
        };
        if !rounds.is_empty() {
            // The round's PIR work runs on its own task: the clock never waits for it.
            let _ = shared.round_tx.send((epoch, rounds));
        }
        let clients = shared.stats.clients.load(Relaxed);
        let n = slots.len() as u64;
        let start = Instant::now();
        if n > 0 {
            run_epoch(&shared, epoch, slots).await;
        }
        // Answered rounds go out after the slot replies.
        let answered = std::mem::take(&mut *shared.answered.lock());
        for (reply, msg) in answered {
            let _ = reply.try_send(msg);
        }
        let us = start.elapsed().as_micros() as u64;
        let s = &shared.stats;
        s.epochs.fetch_add(1, Relaxed);
        s.slots.fetch_add(n, Relaxed);
        s.last_slots.store(n, Relaxed);
        s.last_late.store((clients * k).saturating_sub(n), Relaxed);
        s.late_total
            .fetch_add((clients * k).saturating_sub(n), Relaxed);
        s.batch_total_us.fetch_add(us, Relaxed);
        s.last_batch_us.store(us, Relaxed);
        s.max_batch_us.fetch_max(us, Relaxed);
        s.batch_histogram[shroud_proto::histogram::class(us)].fetch_add(1, Relaxed);
        tracing::debug!(
            epoch,
            clients,
            slots = n,
            late = (clients * k).saturating_sub(n),
            batch_us = us,
            "epoch"
        );
        if epoch % 100 == 99 {
            tracing::info!(
                "proxy: epoch {epoch}: {clients} clients, {n} slots, batch {us} us, {} overruns and {} stretched epochs so far",
                s.overrun_epochs.load(Relaxed),
                s.stretched_epochs.load(Relaxed)
            );
        }
        next = next_boundary(next, period, tokio::time::Instant::now(), s);
    }
}

/// The boundary after `last`, for a batch whose replies went out at `done`: on the grid,
/// skipping the boundaries a batch that outlasted its epoch missed (overruns), and never
/// sooner than [`LEAD`] of an epoch after `done`. Clients send a fixed 2/5 of an epoch after
/// their replies arrive (`shroud_client::schedule::SEND_OFFSET`), so a batch that ran past
/// the epoch's middle would push every client's next frames past the next boundary too:
/// one slow batch, two late epochs. The stretched epoch follows storage's time alone, the
/// same for every client, and the grid carries on from it.
fn next_boundary(
    last: tokio::time::Instant,
    period: Duration,
    done: tokio::time::Instant,
    s: &crate::stats::Stats,
) -> tokio::time::Instant {
    let mut next = last + period;
    while next <= done {
        // The batch outlasted the epoch: skip the boundaries it missed.
        s.overrun_epochs.fetch_add(1, Relaxed);
        next += period;
    }
    let earliest = done + period * LEAD.0 / LEAD.1;
    if next < earliest {
        s.stretched_epochs.fetch_add(1, Relaxed);
        tracing::debug!(
            "epoch stretched by {:?}: the batch ran late",
            earliest - next
        );
        next = earliest;
    }
    next
}

/// The least time between an epoch's replies and the next boundary, as a fraction of the
/// epoch: the clients' send offset (2/5) and a tenth for their frames to arrive.
pub(crate) const LEAD: (u32, u32) = (1, 2);
