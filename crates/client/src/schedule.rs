//! The cover-traffic scheduler: while connected, exactly K slots every epoch, each carrying a
//! queued real access or else a dummy, indistinguishable byte for byte.
//!
//! One task owns the ORAM engine. Every epoch it takes up to K queued operations (in order),
//! pads them with dummies to K, begins one engine batch of K accesses, and sends K slots:
//! slot j carries the write-back of path j of the previous batch and the read of path j of
//! this one. When the K replies return it verifies and finishes the batch, completes the reads
//! it served, and completes the writes of the previous batch (their write-back is now durable
//! at storage). A write is therefore acknowledged only once it is on storage.
//!
//! If the proxy goes away, the task reconnects with exponential backoff and resends the same
//! slots: queued operations wait, and the resent write-back is idempotent.
//!
//! # Spent leaves
//! Once a path has been sent, its leaf is spent: nothing may read it again unless it is the
//! very same request (issue 12, finding 2). A server that corrupts one reply and watches
//! whether the path comes back could otherwise tell a real access (whose caller retries, on
//! the block's unchanged leaf) from a dummy, and link accesses. So:
//! - a batch whose reads fail verification is not undone: its identical slots (same bucket
//!   ids) are sent again every epoch until a verifying answer arrives, and its operations
//!   wait for that; nothing new is revealed by a resend;
//! - each batch's randomness is a seed drawn before the batch, and the seed and the batch's
//!   accesses (addresses, or dummies) are in the write-ahead record saved before its reads
//!   leave ([`Plan`]); after a crash the restarted client replays that batch first, as reads,
//!   and so fetches the very same paths and moves the blocks to fresh leaves.
//!
//! # When frames leave
//! An epoch's frames are built while the previous replies are processed, and leave at a fixed
//! offset after those replies arrived ([`SEND_OFFSET`] of the epoch), not when the work is
//! done, timed and released by the connection's own thread ([`shroud_net::punctual`]):
//! processing takes longer with real mail (opening against every contact, sealing, a
//! write-ahead record that grows with the outbox), and a send right after it showed that to
//! anyone timing the socket (issue 12, finding 3). Work that overruns the offset is counted
//! (`ClientStats::late_sends`) and logged.
//!
//! # Security
//! The proxy and storage see K slots of one size per epoch whatever the caller does: a dummy
//! is a genuine access of a random leaf with a freshly sealed write-back. Operation latency
//! is visible only to the caller.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shroud_oram::Op;
use shroud_proto::proxy::{ClientMsg, ProxyMsg, Reads, RoundDone, RoundFrame, Slot, SlotWrite};
use shroud_proto::{Grant, Shape};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use crate::durable::{Durable, Pages, StateRecord};
use crate::engine::{Engine, SlotBody, Verified};
use crate::error::{ClientError, source, state_err};
use crate::link::{Conn, Link, connect, flush, recv, send, upload_key};
use crate::stats::ClientStats;
use shroud_net::punctual::When;

/// Whoever rides on the schedule beside the K ORAM slots (the mailbox's courier): a PIR key
/// on every new connection, and one round frame of its own in the first epoch of every mail
/// round, real or dummy, whose answer comes when the proxy has the whole round answered
/// (epochs later); its state is saved in the write-ahead record of every batch. The
/// scheduler carries the frames and keeps the write-ahead rule for them; it knows nothing
/// of what they mean.
pub(crate) trait Rider: Send + 'static {
    /// What is saved with every batch, and handed back to the rider after a restart.
    type State: Serialize + DeserializeOwned + Clone + Send + 'static;
    /// What the rider keeps while its frame is out.
    type Flight: Send + 'static;
    /// The PIR key its queries are answered with, sent on every new connection.
    fn key(&self) -> Vec<u8>;
    /// Called at the start of every epoch (to take requests).
    fn epoch(&mut self);
    /// Round `round`'s frame, numbered `seq` (`None` if the rider cannot make one; it reports
    /// why itself).
    fn board(
        &mut self,
        seq: u64,
        round: u64,
        rng: &mut StdRng,
    ) -> Option<(RoundFrame, Self::Flight)>;
    /// The answer to a round frame.
    fn arrive(&mut self, flight: Self::Flight, answer: RoundDone);
    /// The state to save with this batch.
    fn state(&self) -> &Self::State;
    /// The state is saved: what waited on it may go ahead.
    fn saved(&mut self);
}

/// The write-ahead record of one finished batch (the rule is in [`crate::durable`]). It is
/// saved with the pages that changed in the batch: the engine's, named `oram/NAME`
/// ([`shroud_oram::pages`]), and the rider's state, [`RIDER_PAGE`].
#[derive(Clone, Serialize, Deserialize)]
pub struct Wal {
    /// The write-back the server is owed, one path per slot.
    pub pending: Option<Vec<Vec<SlotWrite>>>,
    /// The next slot sequence number.
    pub seq: u64,
    /// The next batch, fixed before its reads leave (see "Spent leaves").
    pub plan: Option<Plan>,
}

/// The page of the rider's state (the mailbox's outbox, spool, sessions and counters).
pub const RIDER_PAGE: &str = "rider";
/// The prefix of the engine's pages.
pub const ORAM_PAGES: &str = "oram/";

/// A batch fixed before its reads leave: its randomness and its accesses, so that a restarted
/// client fetches the same paths again instead of revealing a block's old leaf.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The seed of the batch's randomness (its new leaves, its dummies' paths).
    pub seed: [u8; 32],
    /// Per slot, the address accessed, or `None` for a dummy.
    pub reads: Vec<Option<u64>>,
}

impl StateRecord for Wal {
    const NAME: &'static str = "wal";
}

/// One queued operation and where its answer goes.
pub(crate) enum Job {
    /// Read a block.
    Read(u64, oneshot::Sender<Result<Vec<u8>, ClientError>>),
    /// Write a block.
    Write(u64, Vec<u8>, oneshot::Sender<Result<(), ClientError>>),
}

/// The scheduler task: it ends once every [`crate::Client`] handle is dropped and the last
/// write-back is stored.
pub type SchedulerTask = tokio::task::JoinHandle<Result<(), ClientError>>;

/// Everything a scheduler starts from.
pub(crate) struct Start<R> {
    /// Where and how to reach the proxy again after a failure.
    pub link: Link,
    /// The store.
    pub grant: Grant,
    /// The proxy's shape.
    pub shape: Shape,
    /// The engine.
    pub engine: Engine,
    /// The engine's randomness.
    pub rng: StdRng,
    /// The registered connection.
    pub conn: Conn,
    /// Where each batch is saved, if anywhere.
    pub durable: Option<Arc<Durable>>,
    /// Where a restored scheduler picks up.
    pub resume: Resume,
    /// Whoever rides on the schedule.
    pub rider: Option<R>,
    /// The client's counters.
    pub stats: Arc<ClientStats>,
}

/// Round frames whose answers are waited for at once. The proxy answers every frame it took
/// (with its answers, or as skipped when storage fell behind), rounds in order; an answer it
/// could not hand over (a full reply queue) is given up once this many newer frames wait,
/// and its rows go again.
const MAX_FLIGHTS: usize = 64;

/// How far into the epoch, after the previous epoch's replies arrived, the next epoch's
/// frames leave: two fifths, which leaves the rest for the proxy's round trip to storage.
pub const SEND_OFFSET: (u32, u32) = (2, 5);

/// Starts the schedule: returns where to queue operations, and the task.
pub(crate) fn spawn<R: Rider>(start: Start<R>) -> (mpsc::Sender<Job>, SchedulerTask) {
    let (tx, rx) = mpsc::channel(1024);
    let sched = Scheduler {
        link: start.link,
        grant: start.grant,
        shape: start.shape,
        engine: start.engine,
        rng: start.rng,
        conn: Some(start.conn),
        jobs: rx,
        seq: start.resume.seq,
        pending: start.resume.pending.clone(),
        waiting: Vec::new(),
        stats: start.stats,
        durable: start.durable,
        rider: start.rider,
        flights: std::collections::VecDeque::new(),
        next_epoch: None,
        landed: None,
        boarded: None,
        ready: None,
        paced: false,
        plan: start.resume.plan,
        closing: false,
        unsaved: Pages::new(),
        rider_saved: start.resume.rider,
    };
    (tx, tokio::spawn(sched.run()))
}

/// Where a (restored) scheduler picks up.
pub(crate) struct Resume {
    /// The write-back owed to storage, one path per slot.
    pub pending: Option<Vec<Vec<SlotWrite>>>,
    /// The next slot sequence number.
    pub seq: u64,
    /// The batch planned before a crash, replayed first.
    pub plan: Option<Plan>,
    /// The rider's state as saved (its page's bytes).
    pub rider: Option<Zeroizing<Vec<u8>>>,
}

/// The task that owns the engine and keeps the schedule.
struct Scheduler<R: Rider> {
    link: Link,
    grant: Grant,
    shape: Shape,
    engine: Engine,
    rng: StdRng,
    conn: Option<Conn>,
    jobs: mpsc::Receiver<Job>,
    seq: u64,
    /// The previous batch's write-back, one path per slot.
    pending: Option<Vec<Vec<SlotWrite>>>,
    /// Writes of the previous batch, acknowledged when `pending` is stored.
    waiting: Vec<oneshot::Sender<Result<(), ClientError>>>,
    stats: Arc<ClientStats>,
    /// Where each finished batch is saved before anything depends on it.
    durable: Option<Arc<Durable>>,
    /// Whoever rides on the schedule (the mailbox, when the proxy runs one).
    rider: Option<R>,
    /// Round frames out, oldest first, by `seq`: their answers come epochs later.
    flights: std::collections::VecDeque<(u64, R::Flight)>,
    /// The proxy's epoch the next frames will land in, from its last replies: the last
    /// epoch they landed in plus the epochs between the last two (`None` until a reply on
    /// this connection said). A client whose frames always land an epoch late (a slow link)
    /// is then told apart from one that is on time.
    next_epoch: Option<u64>,
    /// The epoch the last frames landed in.
    landed: Option<u64>,
    /// The last round a frame was made for.
    boarded: Option<u64>,
    /// The round frame made for the next epoch, saved with the last batch.
    ready: Option<(RoundFrame, R::Flight)>,
    /// The next epoch's frames leave [`SEND_OFFSET`] after the last replies arrived (false:
    /// at once, as on a new connection or for the last write-back).
    paced: bool,
    /// The next batch, as the write-ahead record has it.
    plan: Option<Plan>,
    /// Every handle is gone: store the last write-back and stop.
    closing: bool,
    /// Pages changed and not yet saved (a save that failed keeps them for the next).
    unsaved: Pages,
    /// The rider's state as last saved.
    rider_saved: Option<Zeroizing<Vec<u8>>>,
}

impl<R: Rider> Scheduler<R> {
    async fn run(mut self) -> Result<(), ClientError> {
        // A batch planned before a crash goes first, as reads of the same paths.
        let mut jobs = match self.plan.clone() {
            Some(_) => Vec::new(),
            None => {
                let jobs = self.take_jobs();
                self.plan = Some(self.plan_for(&jobs));
                jobs
            }
        };
        loop {
            if self.closing && jobs.is_empty() {
                return self.flush().await;
            }
            jobs = self.epoch(jobs).await?;
        }
    }

    /// Up to K queued operations, in order.
    fn take_jobs(&mut self) -> Vec<Job> {
        let k = self.shape.slots_per_epoch as usize;
        let mut jobs = Vec::with_capacity(k);
        while jobs.len() < k && !self.closing {
            match self.jobs.try_recv() {
                Ok(j) => jobs.push(j),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => self.closing = true,
            }
        }
        jobs
    }

    /// The plan of a batch of `jobs`: a fresh seed and their addresses.
    fn plan_for(&mut self, jobs: &[Job]) -> Plan {
        let k = self.shape.slots_per_epoch as usize;
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        Plan {
            seed,
            reads: (0..k)
                .map(|j| match jobs.get(j) {
                    Some(Job::Read(a, _) | Job::Write(a, _, _)) => Some(*a),
                    None => None,
                })
                .collect(),
        }
    }

    /// Makes the next epoch's round frame, if its frames should land in the window of a
    /// round not yet boarded: before the state is saved, so that whatever making it changed
    /// in the rider (chunks sent, a session's ratchet advanced) is on disk before the frame
    /// leaves, and no key is used twice after a crash.
    fn board_next(&mut self) {
        let round = self
            .next_epoch
            .and_then(|e| self.shape.round_of(e))
            .filter(|&r| self.boarded.is_none_or(|b| r > b));
        let (Some(round), Some(r)) = (round, self.rider.as_mut()) else {
            return;
        };
        let seq = self.seq + u64::from(self.shape.slots_per_epoch);
        // What was asked of the rider meanwhile goes in this frame.
        r.epoch();
        if let Some(made) = r.board(seq, round, &mut self.rng) {
            self.boarded = Some(round);
            self.ready = Some(made);
        }
    }

    /// Saves the owed write-back with the pages of the engine and the rider that changed
    /// (the write-ahead rule in [`crate::durable`]). While a batch is fetching (saving what
    /// the rider read after a failed verification) the engine has nothing new to save.
    async fn save(&mut self) -> Result<(), ClientError> {
        let Some(d) = self.durable.clone() else {
            return Ok(());
        };
        if !self.engine.in_flight() {
            for (name, page) in self.engine.changed_pages().map_err(state_err)? {
                self.unsaved.insert(format!("{ORAM_PAGES}{name}"), page);
            }
        }
        let rider = match self.rider.as_ref() {
            Some(r) => Some(crate::durable::encode_page(r.state()).map_err(state_err)?),
            None => None,
        };
        if let Some(bytes) = rider
            .as_ref()
            .filter(|b| self.rider_saved.as_ref() != Some(*b))
        {
            self.unsaved.insert(RIDER_PAGE.into(), bytes.clone());
        }
        let wal = Wal {
            pending: self.pending.clone(),
            seq: self.seq,
            plan: self.plan.clone(),
        };
        let pages = std::mem::take(&mut self.unsaved);
        let disk = d.clone();
        let (saved, pages) = tokio::task::spawn_blocking(move || {
            let saved = disk.save_with_pages(&wal, &pages);
            (saved, pages)
        })
        .await
        .map_err(state_err)?;
        if let Err(e) = saved {
            // Kept for the next save, under anything changed since.
            for (name, page) in pages {
                self.unsaved.entry(name).or_insert(page);
            }
            return Err(state_err(e));
        }
        if rider.is_some() {
            self.rider_saved = rider;
        }
        self.stats.state_bytes.store(d.bytes_written(), Relaxed);
        Ok(())
    }

    /// One epoch: the planned batch of K accesses (`jobs`, real ones first, or a replayed
    /// plan's reads), resent until its reads verify. Returns the next batch's jobs, planned
    /// and saved with this batch's write-ahead record.
    async fn epoch(&mut self, jobs: Vec<Job>) -> Result<Vec<Job>, ClientError> {
        let k = self.shape.slots_per_epoch as usize;
        let plan = match self.plan.clone() {
            Some(p) => p,
            None => self.plan_for(&jobs),
        };
        let replay = jobs.is_empty() && plan.reads.iter().any(Option::is_some);
        let ops: Vec<Op<'_>> = (0..k)
            .map(
                |j| match (jobs.get(j), plan.reads.get(j).copied().flatten()) {
                    (Some(Job::Read(a, _)), _) => Op::Read(*a),
                    (Some(Job::Write(a, d, _)), _) => Op::Write(*a, d),
                    // A batch planned before a crash: its accesses again, as reads.
                    (None, Some(a)) if replay => Op::Read(a),
                    _ => Op::Dummy,
                },
            )
            .collect();
        self.stats.real.fetch_add(jobs.len() as u64, Relaxed);
        self.stats.dummy.fetch_add((k - jobs.len()) as u64, Relaxed);
        let mut batch_rng = StdRng::from_seed(plan.seed);
        if let Err(e) = self.engine.begin(&ops, &mut batch_rng) {
            if matches!(e, ClientError::State(_)) {
                tracing::error!("the engine cannot plan a batch, stopping: {e}");
                fail(jobs, e.clone());
                return Err(e);
            }
            // Refused before anything left (a bad address): nothing was revealed.
            fail(jobs, e);
            self.plan = None;
            let next = self.take_jobs();
            self.plan = Some(self.plan_for(&next));
            return Ok(next);
        }
        drop(ops);
        let mut acked = false;
        loop {
            if let Some(r) = self.rider.as_mut() {
                r.epoch();
            }
            // The round frame made at the end of the last epoch and saved with it, if it is
            // still this epoch's to send.
            let next_seq = self.seq + k as u64;
            let (frame, flight) = match self.ready.take() {
                Some((f, flight)) if f.seq == next_seq => (Some(f), Some(flight)),
                _ => (None, None),
            };
            let bodies = self.engine.slots(&self.shape, self.pending.as_ref());
            let frame_seq = frame.as_ref().map(|f| f.seq);
            let (replies, rounds) = self.exchange(bodies, frame).await;
            if let (Some(seq), Some(f)) = (frame_seq, flight) {
                self.flights.push_back((seq, f));
                // An answer the proxy could not hand over is not waited for forever.
                while self.flights.len() > MAX_FLIGHTS {
                    self.flights.pop_front();
                }
            }
            self.take_rounds(rounds).await?;
            if !acked {
                // The write-back this epoch carried is durable: the previous batch's writes
                // are done.
                for w in self.waiting.drain(..) {
                    let _ = w.send(Ok(()));
                }
                acked = true;
            }
            match self.engine.supply(&replies, &mut self.rng) {
                Verified::Done => break,
                Verified::Tampered(e) => {
                    // The batch stays as it is; the same slots go again next epoch.
                    tracing::error!(
                        "epoch batch failed verification ({e}); sending the same slots again"
                    );
                    self.stats.integrity_failures.fetch_add(1, Relaxed);
                    // What the rider read this epoch must be saved before its next frame
                    // acknowledges it.
                    if self.rider.is_some() {
                        self.save().await?;
                        if let Some(r) = self.rider.as_mut() {
                            r.saved();
                        }
                    }
                }
                Verified::Failed(e @ ClientError::State(_)) => {
                    // The engine's state is not one a batch can continue from.
                    tracing::error!("epoch batch failed, stopping: {e}");
                    fail(jobs, e.clone());
                    return Err(e);
                }
                Verified::Failed(e) => {
                    tracing::error!("epoch batch failed: {e}");
                    fail(jobs, e);
                    self.plan = None;
                    let next = self.take_jobs();
                    self.plan = Some(self.plan_for(&next));
                    return Ok(next);
                }
            }
        }
        self.pending = self.engine.write_back(self.shape.path_len);
        // The next batch is fixed now and saved with this one, before its reads leave.
        let next = self.take_jobs();
        self.plan = Some(self.plan_for(&next));
        self.board_next();
        // Write-ahead: nothing below (answers, the next slots, the next round frame) may
        // happen before this is on disk.
        if let Err(e) = self.save().await {
            tracing::error!("cannot save the client state, stopping: {e}");
            fail(jobs, e.clone());
            fail(next, e.clone());
            return Err(e);
        }
        if let Some(r) = self.rider.as_mut() {
            r.saved();
        }
        let ring = matches!(self.engine, Engine::Ring(_));
        for (j, job) in jobs.into_iter().enumerate() {
            match job {
                Job::Read(_, done) => {
                    let _ = done.send(Ok(self.engine.result(j)));
                }
                // Ring ORAM keeps a written block in the stash, saved above, until an
                // eviction places it: the write is as durable now as it will be.
                Job::Write(_, _, done) if ring => {
                    let _ = done.send(Ok(()));
                }
                Job::Write(_, _, done) => self.waiting.push(done),
            }
        }
        self.stats.epochs.fetch_add(1, Relaxed);
        Ok(next)
    }

    /// Hands the round answers that came to the rider (failed rounds are dropped: their rows
    /// go again in a later round).
    async fn take_rounds(&mut self, rounds: Vec<ProxyMsg>) -> Result<(), ClientError> {
        for msg in rounds {
            let (seq, done) = match msg {
                ProxyMsg::RoundDone(d) => (d.seq, Some(d)),
                ProxyMsg::RoundFailed(seq, code) => {
                    tracing::debug!("round frame {seq} did not run: {code:?}");
                    (seq, None)
                }
                _ => continue,
            };
            let Some(at) = self.flights.iter().position(|(s, _)| *s == seq) else {
                continue;
            };
            let Some((_, flight)) = self.flights.remove(at) else {
                continue;
            };
            let Some(done) = done else { continue };
            let Some(mut r) = self.rider.take() else {
                continue;
            };
            // Decoding answers and opening rows is CPU work: off the async workers, which
            // other tasks (other clients in one process) need on time.
            let back = tokio::task::spawn_blocking(move || {
                r.arrive(flight, done);
                r
            })
            .await
            .map_err(|e| ClientError::State(source(e)))?;
            self.rider = Some(back);
        }
        Ok(())
    }

    /// Stores the last write-back (with random reads in the read half, ignored), so that
    /// every acknowledged write is on storage, then stops. (Ring ORAM owes nothing here:
    /// its rewrites wait in its saved state for its next request.)
    async fn flush(&mut self) -> Result<(), ClientError> {
        if self.pending.is_none() {
            return Ok(());
        }
        // Stopping shows anyway (the connection closes): store the last write-back at once.
        self.paced = false;
        let leaves = 1u64 << (self.shape.path_len + self.shape.cached_levels - 1);
        let pending = self.pending.clone().unwrap_or_default();
        let bodies = pending
            .into_iter()
            .map(|writes| {
                let leaf = u64::from(self.rng.next_u32()) % leaves;
                let levels = u64::from(self.shape.path_len + self.shape.cached_levels);
                let reads = (u64::from(self.shape.cached_levels)..levels)
                    .map(|d| (1u64 << d) - 1 + (leaf >> (levels - 1 - d)))
                    .collect();
                (true, writes, Reads::Buckets(reads))
            })
            .collect();
        self.exchange(bodies, None).await;
        self.pending = None;
        self.save().await?;
        for w in self.waiting.drain(..) {
            let _ = w.send(Ok(()));
        }
        Ok(())
    }

    /// Sends this epoch's K slots (and round frame) and waits for their K replies,
    /// reconnecting and resending the very same frames until they go through. Returns the
    /// reads, and the round answers (or failures) that came meanwhile.
    async fn exchange(
        &mut self,
        bodies: Vec<SlotBody>,
        frame: Option<RoundFrame>,
    ) -> (Vec<Vec<shroud_proto::ReadResult>>, Vec<ProxyMsg>) {
        let first = self.seq;
        let slots: Vec<Slot> = bodies
            .into_iter()
            .enumerate()
            .map(|(j, (write, writes, reads))| Slot {
                seq: first + j as u64,
                grant: self.grant.clone(),
                write,
                writes,
                reads,
            })
            .collect();
        self.seq += slots.len() as u64 + u64::from(frame.is_some());
        let mut backoff = self.link.min_backoff;
        let mut rounds = Vec::new();
        loop {
            match self.try_exchange(&slots, frame.as_ref(), &mut rounds).await {
                Ok(r) => return (r, rounds),
                Err(e) => {
                    self.stats.failed_exchanges.fetch_add(1, Relaxed);
                    if matches!(e, ClientError::Refused(_)) {
                        tracing::warn!(
                            "the proxy refused the epoch's slots ({e}); retrying in {backoff:?}"
                        );
                    } else {
                        tracing::debug!("slot exchange failed ({e}); reconnecting in {backoff:?}");
                    }
                    self.conn = None;
                    self.next_epoch = None;
                    self.landed = None;
                    // Answers to frames sent on the old connection never come.
                    self.flights.clear();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.link.max_backoff);
                    if let Ok(mut c) = connect(&self.link, &self.grant).await
                        && c.shape == self.shape
                    {
                        let keyed = match self.rider.as_ref().map(Rider::key) {
                            Some(key) => upload_key(&mut c.conn, key).await,
                            None => Ok(()),
                        };
                        match keyed {
                            Ok(()) => {
                                self.conn = Some(c.conn);
                                self.stats.reconnects.fetch_add(1, Relaxed);
                            }
                            Err(e) => tracing::debug!("the PIR key was not kept ({e})"),
                        }
                    }
                }
            }
        }
    }

    async fn try_exchange(
        &mut self,
        slots: &[Slot],
        frame: Option<&RoundFrame>,
        rounds: &mut Vec<ProxyMsg>,
    ) -> Result<Vec<Vec<shroud_proto::ReadResult>>, ClientError> {
        let conn = self.conn.as_mut().ok_or(ClientError::Closed)?;
        // Leave at the fixed time, however long building this epoch took: the frames are
        // sealed now into the held connection, and a thread that does nothing else, and
        // that saw the replies arrive, lets them go at the offset (`shroud_net::punctual`).
        let paced = std::mem::take(&mut self.paced);
        if paced {
            conn.gate.hold();
        }
        for s in slots {
            send(conn, &ClientMsg::Slot(s.clone())).await?;
        }
        if let Some(f) = frame {
            send(conn, &ClientMsg::Round(f.clone())).await?;
        }
        if paced {
            let (num, den) = SEND_OFFSET;
            let offset = Duration::from_millis(
                u64::from(self.shape.epoch_ms) * u64::from(num) / u64::from(den),
            );
            let released = conn.gate.release(When::AfterReply(offset)).await;
            if released.late {
                self.stats.late_sends.fetch_add(1, Relaxed);
                tracing::warn!(
                    "an epoch's frames were ready after their send time: its timing may show the client's work"
                );
            }
            flush(conn).await?;
        }
        let deadline = Duration::from_millis(u64::from(self.shape.epoch_ms) * 20 + 5_000);
        let mut out: Vec<Option<Vec<shroud_proto::ReadResult>>> = vec![None; slots.len()];
        let first = slots.first().map_or(0, |s| s.seq);
        let mut failed = None;
        let mut replies = 0;
        let mut landed = None;
        while replies < slots.len() {
            let msg = tokio::time::timeout(deadline, recv(conn))
                .await
                .map_err(|_| ClientError::Protocol("no reply"))??;
            match msg {
                ProxyMsg::Done(d) => {
                    let i = d
                        .seq
                        .checked_sub(first)
                        .filter(|&i| (i as usize) < slots.len())
                        .ok_or(ClientError::Protocol("stray reply"))?;
                    if d.reads.len() != slots[i as usize].reads.answers() {
                        return Err(ClientError::Protocol("reply of the wrong shape"));
                    }
                    out[i as usize] = Some(d.reads);
                    landed = landed.max(Some(d.epoch));
                    replies += 1;
                }
                ProxyMsg::Failed(_, code) => {
                    failed = Some(code);
                    replies += 1;
                }
                ProxyMsg::RoundDone(_) | ProxyMsg::RoundFailed(..) => rounds.push(msg),
                ProxyMsg::Error(code) => return Err(ClientError::Refused(code)),
                _ => return Err(ClientError::Protocol("unexpected message")),
            }
        }
        self.paced = true;
        if let Some(now) = landed {
            let stride = self
                .landed
                .map_or(1, |before| now.saturating_sub(before).clamp(1, 2));
            self.next_epoch = Some(now + stride);
            self.landed = Some(now);
        }
        if let Some(code) = failed {
            return Err(ClientError::Refused(code));
        }
        out.into_iter()
            .map(|o| o.ok_or(ClientError::Protocol("missing reply")))
            .collect()
    }
}

fn fail(jobs: Vec<Job>, e: ClientError) {
    for j in jobs {
        match j {
            Job::Read(_, done) => {
                let _ = done.send(Err(e.clone()));
            }
            Job::Write(_, _, done) => {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}
