//! The round task: each mail round's frames, pooled by the epoch clock over the round's
//! window ([`shroud_proto::shape::ROUND_WINDOW`]), go to storage as one shuffled request of writes, then the queries, shuffled, in
//! requests of at most [`QUERIES_PER_REQUEST`]; once the whole round is answered, the epoch
//! clock hands every client its answers at the next boundary, after the slot replies, so no
//! answer leaves earlier than another.
//!
//! Rounds run one at a time, in order: a round's queries are answered against its own board,
//! and the next round's writes close it. A round that storage takes longer than a round to
//! answer makes the next one start late; when several wait, only the newest runs and the
//! others fail (both counted as `late_rounds`), so what waits is bounded.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use rand::seq::SliceRandom;
use shroud_net::conn::ConnError;
use shroud_proto::ErrorCode;
use shroud_proto::board::{PirBytes, Query};
use shroud_proto::proxy::{ProxyMsg, RoundDone};
use shroud_proto::sealed::Sealed;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::{ClosedRound, PendingRound, Shared};

/// Queries per request to storage (storage takes at most 1,024; 256 queries of 16 KiB keep
/// a frame near 4 MiB).
pub(crate) const QUERIES_PER_REQUEST: usize = 256;

fn code(e: ConnError) -> ErrorCode {
    match e {
        ConnError::Refused(code) => code,
        other => {
            tracing::warn!("storage unreachable for a round: {other}");
            ErrorCode::Unavailable
        }
    }
}

/// Storage's answers to one round: per frame, its write status and its answers.
async fn answer(
    shared: &Shared,
    frames: &[PendingRound],
) -> Result<Vec<(Sealed, Vec<PirBytes>)>, ErrorCode> {
    let mut writes: Vec<usize> = (0..frames.len()).collect();
    let mut queries: Vec<(usize, usize)> = frames
        .iter()
        .enumerate()
        .flat_map(|(f, p)| (0..p.frame.queries.len()).map(move |q| (f, q)))
        .collect();
    {
        let mut rng = rand::rng();
        writes.shuffle(&mut rng);
        queries.shuffle(&mut rng);
    }
    let mut up = shared.round_upstream.lock().await;
    let statuses = up
        .round(
            writes
                .iter()
                .map(|&f| frames[f].frame.write.clone())
                .collect(),
        )
        .await
        .map_err(code)?;
    let mut written: Vec<Option<Sealed>> = vec![None; frames.len()];
    for (&f, s) in writes.iter().zip(statuses) {
        written[f] = Some(s);
    }
    let mut answers: Vec<Vec<Option<PirBytes>>> = frames
        .iter()
        .map(|p| vec![None; p.frame.queries.len()])
        .collect();
    for chunk in queries.chunks(QUERIES_PER_REQUEST) {
        let request = chunk
            .iter()
            .map(|&(f, q)| Query {
                session: frames[f].session,
                query: frames[f].frame.queries[q].clone(),
            })
            .collect();
        let got = up.answer(request).await.map_err(code)?;
        for (&(f, q), a) in chunk.iter().zip(got) {
            answers[f][q] = Some(a);
        }
    }
    written
        .into_iter()
        .zip(answers)
        .map(|(w, a)| Some((w?, a.into_iter().collect::<Option<Vec<_>>>()?)))
        .collect::<Option<Vec<_>>>()
        .ok_or(ErrorCode::Internal)
}

/// Runs rounds as the clock hands them over, until the clock stops.
pub(crate) async fn run(shared: Arc<Shared>, mut rounds: UnboundedReceiver<ClosedRound>) {
    let round_epochs = u64::from(shared.config.shape.round_epochs.max(1));
    while let Some(mut next) = rounds.recv().await {
        // Storage fell behind: only the newest waiting round runs; the older ones fail (their
        // rows go again), so the queue never grows.
        while let Ok(newer) = rounds.try_recv() {
            let (old, frames) = std::mem::replace(&mut next, newer);
            tracing::warn!("round {} skipped: storage is behind", old / round_epochs);
            shared.stats.late_rounds.fetch_add(1, Relaxed);
            shared.answered.lock().extend(frames.into_iter().map(|p| {
                (
                    p.reply,
                    ProxyMsg::RoundFailed(p.frame.seq, ErrorCode::Unavailable),
                )
            }));
        }
        let (epoch, frames) = next;
        let round = epoch / round_epochs;
        if shared.open.lock().epoch > epoch + round_epochs {
            shared.stats.late_rounds.fetch_add(1, Relaxed);
            tracing::warn!("round {round} starts late: storage's answers outlast a round");
        }
        let start = Instant::now();
        let result = answer(&shared, &frames).await;
        let s = &shared.stats;
        s.last_round_us
            .store(start.elapsed().as_micros() as u64, Relaxed);
        s.rounds.fetch_add(1, Relaxed);
        s.round_frames.fetch_add(frames.len() as u64, Relaxed);
        let replies: Vec<_> = match result {
            Ok(answered) => frames
                .into_iter()
                .zip(answered)
                .map(|(p, (written, answers))| {
                    let done = ProxyMsg::RoundDone(RoundDone {
                        seq: p.frame.seq,
                        round,
                        written,
                        answers,
                    });
                    (p.reply, done)
                })
                .collect(),
            Err(code) => {
                tracing::warn!("round {round} failed at storage ({code:?})");
                frames
                    .into_iter()
                    .map(|p| (p.reply, ProxyMsg::RoundFailed(p.frame.seq, code)))
                    .collect()
            }
        };
        shared.answered.lock().extend(replies);
    }
}
