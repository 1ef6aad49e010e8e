//! Storage's side of the outbox delivery (issue 13; docs/mail-delivery.md): the mail board
//! behind its lock, the readers' PIR keys, and the last closed round's board that queries
//! are answered against.
//!
//! A round, from storage's side: the proxy hands in every outbox write of the round at once
//! ([`Delivery::write_round`]), which closes the round and prepares its board for PIR; then
//! the round's queries, in as many requests as the frame size needs ([`Delivery::answer`]),
//! each on every core. A reader's key is kept while its connection lasts
//! ([`Delivery::keep_key`], [`Delivery::drop_key`]), at most `max_readers` at once, and each
//! session gets at most [`MAX_QUERIES_PER_ROUND`] answers a round.
//!
//! # Security
//! Sealed pieces are opened outside the board's lock. A write that does not open is answered
//! with random bytes of a status's length. Queries name a reader session, never a row.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use rand::Rng;
use rayon::prelude::*;
use shroud_pir::{Board, ROW_LEN, ReaderKey};
use shroud_proto::board::{
    OUTBOX_INFO, OUTBOX_REPLY_LEN, OutboxReply, OutboxRequest, OutboxStatus, OutboxWrite,
    WRITE_INFO, WRITE_STATUS_LEN, WriteStatus,
};
use shroud_proto::routing::RoutingKey;
use shroud_proto::{Difficulty, ErrorCode};

use crate::backend::Backend;
use crate::board::{BoardError, MailBoard};

/// Queries answered per reader session and round; more get random bytes, without work. A
/// Spiral answer costs a third of a second of one core or more, so this, times the sessions
/// kept, bounds what a round can make storage do.
pub const MAX_QUERIES_PER_ROUND: u32 = 8;

/// The board, the readers' keys and the last round's prepared board.
pub struct Delivery {
    board: Mutex<MailBoard>,
    rows_len: usize,
    readers: Mutex<HashMap<[u8; 16], Arc<ReaderKey>>>,
    /// Keys kept at most (a Spiral key takes about 41 MiB of memory at 2^13 rows).
    max_readers: usize,
    /// Queries answered this round, per session.
    answered: Mutex<HashMap<[u8; 16], u32>>,
    prepared: RwLock<Option<Arc<Board>>>,
}

/// Random bytes: the answer to a piece that does not open, of the size a real one has.
fn noise(len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    rand::rng().fill_bytes(&mut b);
    b
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Delivery {
    /// Serves rounds on `board`, whose outboxes have `rows_per_outbox` rows, keeping at most
    /// `max_readers` readers' keys.
    pub fn new(board: MailBoard, rows_per_outbox: u32, max_readers: usize) -> Self {
        Delivery {
            board: Mutex::new(board),
            rows_len: rows_per_outbox as usize * ROW_LEN,
            readers: Mutex::new(HashMap::new()),
            max_readers,
            answered: Mutex::new(HashMap::new()),
            prepared: RwLock::new(None),
        }
    }

    /// Serves a sealed [`OutboxRequest`]: opened outside the board's lock, the work checked
    /// only for a new outbox; the answer sealed back, or random bytes of the same length if
    /// the request does not open.
    pub fn outbox(
        &self,
        backend: &dyn Backend,
        routing: &RoutingKey,
        difficulty: Difficulty,
        sealed: &[u8],
    ) -> Vec<u8> {
        let Ok((plain, responder)) = routing.open_request(OUTBOX_INFO, sealed) else {
            return noise(OUTBOX_REPLY_LEN);
        };
        let reply = |status, outbox| OutboxReply { status, outbox };
        let reply = match OutboxRequest::from_bytes(&plain) {
            None => reply(OutboxStatus::Failed, 0),
            Some(req) => {
                let mut board = locked(&self.board);
                match board.find(&req.capability) {
                    Some(i) => reply(OutboxStatus::Ok, i),
                    None if !req.work.meets(&req.work_id(), difficulty) => {
                        reply(OutboxStatus::NeedsWork, 0)
                    }
                    None => match board.create(backend, &req.capability) {
                        Ok(i) => reply(OutboxStatus::Ok, i),
                        Err(BoardError::Full(_)) => reply(OutboxStatus::Full, 0),
                        Err(e) => {
                            tracing::error!("making an outbox: {e}");
                            reply(OutboxStatus::Failed, 0)
                        }
                    },
                }
            }
        };
        responder.seal(&reply.to_bytes(), &mut rand::rng())
    }

    /// Keeps a reader's key for `session` (replacing an earlier one of that session).
    pub fn keep_key(&self, session: [u8; 16], key: &[u8]) -> Result<(), ErrorCode> {
        let geometry = locked(&self.board).geometry();
        let key = ReaderKey::decode(geometry, key).map_err(|_| ErrorCode::WrongShape)?;
        let mut readers = locked(&self.readers);
        if readers.len() >= self.max_readers && !readers.contains_key(&session) {
            return Err(ErrorCode::TooManyConnections);
        }
        readers.insert(session, Arc::new(key));
        Ok(())
    }

    /// Forgets a session's key.
    pub fn drop_key(&self, session: &[u8; 16]) {
        locked(&self.readers).remove(session);
    }

    /// Takes in a round's sealed writes, closes the round and prepares its board; returns
    /// one sealed status per write, in order.
    pub fn write_round(
        &self,
        backend: &dyn Backend,
        routing: &RoutingKey,
        writes: &[Vec<u8>],
    ) -> Result<Vec<Vec<u8>>, BoardError> {
        let mut rng = rand::rng();
        // Opened outside the lock.
        let opened: Vec<_> = writes
            .iter()
            .map(|w| {
                routing
                    .open_request(WRITE_INFO, w)
                    .ok()
                    .and_then(|(plain, responder)| {
                        OutboxWrite::from_bytes(&plain, self.rows_len).map(|w| (w, responder))
                    })
            })
            .collect();
        let mut statuses = Vec::with_capacity(writes.len());
        // The last round's prepared board goes before the next is made (answers still
        // running keep their own reference): one prepared board in memory, not two (a
        // board of 2^13 rows is 256 MiB in the form answers use).
        self.prepared
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let board = {
            let mut board = locked(&self.board);
            // An outbox this server has not seen was made through another on the same
            // engine: learn it before refusing its write.
            if opened
                .iter()
                .flatten()
                .any(|(w, _)| w.outbox >= board.outboxes())
            {
                board.sync(backend)?;
            }
            for o in &opened {
                statuses.push(o.as_ref().map(|(w, _)| {
                    match board.write(w.outbox, &w.capability, &w.rows) {
                        Ok(()) => WriteStatus::Written,
                        Err(BoardError::Twice(_)) => WriteStatus::Twice,
                        Err(BoardError::Length { .. }) => WriteStatus::Unreadable,
                        Err(_) => WriteStatus::Unauthorized,
                    }
                }));
            }
            board.close()?
        };
        *self.prepared.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(board));
        locked(&self.answered).clear();
        Ok(opened
            .into_iter()
            .zip(statuses)
            .map(|(o, status)| match (o, status) {
                (Some((_, responder)), Some(s)) => responder.seal(&[s.to_byte()], &mut rng),
                _ => noise(WRITE_STATUS_LEN),
            })
            .collect())
    }

    /// Answers queries against the last closed round's board, on every core: one answer per
    /// query, in order. A query of an unknown session, or one the scheme refuses, is
    /// answered with random bytes of an answer's length.
    pub fn answer(&self, queries: &[([u8; 16], Vec<u8>)]) -> Result<Vec<Vec<u8>>, ErrorCode> {
        let Some(board) = self
            .prepared
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return Err(ErrorCode::WrongShape);
        };
        // Each query's key, or none (noise, no work): an unknown session, or one past its
        // round's allowance.
        let keys: Vec<Option<Arc<ReaderKey>>> = {
            let readers = locked(&self.readers);
            let mut answered = locked(&self.answered);
            queries
                .iter()
                .map(|(s, _)| {
                    let key = readers.get(s)?;
                    let n = answered.entry(*s).or_insert(0);
                    *n += 1;
                    (*n <= MAX_QUERIES_PER_ROUND).then(|| key.clone())
                })
                .collect()
        };
        let len = board.geometry().answer_len();
        // One pool for everything: spiral-rs runs parts of each answer on rayon's global pool,
        // so the queries go there too rather than on threads of our own beside it (measured:
        // the same users per round either way, docs/benchmarks.md; this is the simpler).
        let out = queries
            .par_iter()
            .zip(keys.par_iter())
            .map(|((_, query), key)| {
                key.as_ref()
                    .and_then(|k| board.answer(k, query).ok())
                    .unwrap_or_else(|| noise(len))
            })
            .collect();
        Ok(out)
    }
}
