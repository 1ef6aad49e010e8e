//! The epoch clock: at every boundary, one shuffled batch of every slot that arrived in
//! time, writes first, then reads; replies go back to their owners without waiting on any.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use shroud_proto::mail::{MailBatch, Sealed};
use shroud_proto::proxy::{MailDone, ProxyMsg, SlotDone};
use shroud_proto::{Batch, BatchOp, BatchReply, ErrorCode, ReadResult};

use crate::{Pending, PendingMail, Shared};

/// Builds the storage batch for `slots` (already shuffled): one grant per slot, all
/// write-backs first, then all reads.
fn batch(slots: &[Pending]) -> Batch {
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
        for &bucket in &p.slot.reads {
            ops.push(BatchOp::Read {
                grant: g as u32,
                bucket,
            });
        }
    }
    Batch { grants, ops }
}

/// Sends each slot its reads (`path_len` each, in slot order), or its failure: a slot whose
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
                let mine: Vec<ReadResult> = reads.by_ref().take(p.slot.reads.len()).collect();
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
    up.batch(batch(slots)).await.map_err(|e| match e {
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

/// Runs one epoch's mail: every envelope of every client in one shuffled list, every drain
/// request in another; each client gets its own sealed answers back.
async fn run_mail(shared: &Shared, epoch: u64, mail: Vec<PendingMail>) {
    let shape = shared.config.shape;
    // Where each pooled envelope came from: (client, index in its slot).
    let (from, drains) = {
        let mut rng = rand::rng();
        let mut from: Vec<(usize, usize)> = mail
            .iter()
            .enumerate()
            .flat_map(|(c, m)| (0..m.mail.deposits.len()).map(move |j| (c, j)))
            .collect();
        from.shuffle(&mut rng);
        let mut drains: Vec<usize> = (0..mail.len()).collect();
        drains.shuffle(&mut rng);
        (from, drains)
    };
    let batch = MailBatch {
        envelope_len: shape.envelope_len,
        drain_max: shape.drains_per_epoch,
        deposits: from
            .iter()
            .map(|&(c, j)| mail[c].mail.deposits[j].clone())
            .collect(),
        drains: drains.iter().map(|&c| mail[c].mail.drain.clone()).collect(),
    };
    let result = shared.upstream.lock().await.mail(batch).await;
    shared
        .stats
        .mail_slots
        .fetch_add(mail.len() as u64, Relaxed);
    match result {
        Ok(reply) => {
            let mut deposited: Vec<Vec<Option<Sealed>>> = mail
                .iter()
                .map(|m| vec![None; m.mail.deposits.len()])
                .collect();
            for (&(c, j), s) in from.iter().zip(reply.deposited) {
                deposited[c][j] = Some(s);
            }
            let mut drained: Vec<Option<Sealed>> = vec![None; mail.len()];
            for (&c, s) in drains.iter().zip(reply.drained) {
                drained[c] = Some(s);
            }
            for ((m, dep), dr) in mail.into_iter().zip(deposited).zip(drained) {
                let (Some(deposited), Some(drained)) =
                    (dep.into_iter().collect::<Option<Vec<_>>>(), dr)
                else {
                    let _ = m
                        .reply
                        .try_send(ProxyMsg::MailFailed(m.mail.seq, ErrorCode::Internal));
                    continue;
                };
                let _ = m.reply.try_send(ProxyMsg::MailDone(MailDone {
                    seq: m.mail.seq,
                    epoch,
                    deposited,
                    drained,
                }));
            }
        }
        Err(e) => {
            let code = match e {
                shroud_net::conn::ConnError::Refused(code) => code,
                other => {
                    tracing::warn!("storage unreachable for mail: {other}");
                    ErrorCode::Unavailable
                }
            };
            for m in mail {
                let _ = m.reply.try_send(ProxyMsg::MailFailed(m.mail.seq, code));
            }
        }
    }
}

/// The clock: runs until aborted.
pub(crate) async fn run(shared: Arc<Shared>) {
    let period = Duration::from_millis(u64::from(shared.config.shape.epoch_ms.max(1)));
    let k = u64::from(shared.config.shape.slots_per_epoch);
    let mut next = tokio::time::Instant::now() + period;
    loop {
        tokio::time::sleep_until(next).await;
        let (epoch, slots, mail) = {
            let mut open = shared.open.lock();
            let e = open.epoch;
            open.epoch += 1;
            (
                e,
                std::mem::take(&mut open.slots),
                std::mem::take(&mut open.mail),
            )
        };
        let clients = shared.stats.clients.load(Relaxed);
        let n = slots.len() as u64;
        let start = Instant::now();
        if n > 0 {
            run_epoch(&shared, epoch, slots).await;
        }
        if !mail.is_empty() {
            run_mail(&shared, epoch, mail).await;
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
                "proxy: epoch {epoch}: {clients} clients, {n} slots, batch {us} us, {} overruns so far",
                s.overrun_epochs.load(Relaxed)
            );
        }
        next += period;
        let now = tokio::time::Instant::now();
        while next <= now {
            // The batch outlasted the epoch: skip the boundaries it missed.
            s.overrun_epochs.fetch_add(1, Relaxed);
            next += period;
        }
    }
}
