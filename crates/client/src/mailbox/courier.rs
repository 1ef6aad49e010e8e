//! The scheduler's side of the mailbox: in the first epoch of every round, one round frame,
//! its outbox write (R rows, real or dummy) and its Q PIR queries (real or dummy); the
//! answers, when the round is answered, are read here (docs/mail-delivery.md).
//!
//! What it keeps ([`MailState`]) is saved with the engine in the write-ahead record, before the
//! next frame leaves. So:
//! - a message accepted for sending is in the state before `send` returns, and stays there,
//!   chunk by chunk, until the recipient acknowledges it, across restarts of either side;
//! - a chunk received is acknowledged only in a row sent after it was saved here, so a crash
//!   between reading and saving loses nothing (the writer sends it again); a chunk seen
//!   twice is taken once;
//! - whole messages wait in the spool until the [`Mailbox`](super::Mailbox) has stored them in
//!   the oblivious KV, and are offered again after a restart (storing is idempotent).
//!
//! # Security
//! Every round's frame has the same size and shape whatever the user does: R rows sealed
//! through one code path (a dummy row is a real seal under a throwaway key), one sealed write,
//! Q queries of one size. What is read and written each round follows [`Plan`], which depends
//! only on the contacts and on what was delivered, never on an answer that failed. Every
//! answer is decoded and every row checked, real or not, so the work per round is the same.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use parking_lot::RwLock;
use rand::rngs::StdRng;
use rand::{CryptoRng, Rng, RngExt};
use serde::{Deserialize, Serialize};
use shroud_pir::Reader;
use shroud_proto::Shape;
use shroud_proto::board::{OutboxWrite, PirBytes, WRITE_INFO, WriteStatus};
use shroud_proto::proxy::{RoundDone, RoundFrame};
use shroud_proto::sealed::Sealed;
use shroud_proto::sealed::{Responder, seal_request};
use tokio::sync::{mpsc, oneshot};

use super::account::Account;
use super::chunk::{Chunk, Content};
use super::identity::{Address, Identity};
use super::plan::Plan;
use super::row::{self, Opened, OutboxKey, Place, ROW_LEN, RowError};
use super::session::{SessionError, Sessions};
use super::stream::Stream;
use crate::error::ClientError;
use crate::link::Link;
use crate::schedule::Rider;
use crate::stats::ClientStats;

/// The longest message, bytes (it must fit one value of the KV history).
pub const MAX_MESSAGE: usize = 60 * 1024;
/// Rounds of answers that do not open before the mailbox gives up on this storage server.
const MAX_UNREADABLE: u32 = 3;
/// The ticket of session confirmations (no send waits on them).
const CONFIRMATION: u64 = u64::MAX;

/// A mailbox failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MailError {
    /// No account yet (`shroud mail init`).
    #[error("no mailbox account: run `shroud mail init`")]
    NoAccount,
    /// The proxy has no mail, or this client has no pinned storage key.
    #[error("mail is not available: {0}")]
    Unavailable(String),
    /// A message longer than [`MAX_MESSAGE`].
    #[error("message of {0} bytes; at most {MAX_MESSAGE}")]
    TooLong(usize),
    /// No contact by that name, or a recipient who is not a contact.
    #[error("unknown contact {0:?}")]
    UnknownContact(String),
    /// A contact's name given an address with other keys: not taken.
    #[error(
        "the keys of contact {name:?} changed: safety number was {was}, would be {now}; compare the new one with them, then replace the contact"
    )]
    KeyChanged {
        /// The contact's name.
        name: String,
        /// The safety number with the address it has.
        was: String,
        /// The safety number with the address offered.
        now: String,
    },
    /// Storage's answers do not open with the pinned storage key: a different server, or
    /// tampering on the way.
    #[error("storage's answers do not open: it does not hold the pinned storage key")]
    StorageKey,
    /// Storage's board has no room for another outbox.
    #[error("storage's mail board is full: no outbox for a new account")]
    BoardFull,
    /// Storage refuses our outbox's capability.
    #[error("storage refuses our outbox: it is not ours, or storage lost it")]
    OutboxRefused,
    /// The block store or state failed.
    #[error("{0}")]
    Store(String),
    /// The client has stopped.
    #[error("the client has stopped")]
    Closed,
}

/// A whole message, sent or received, on its way to the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The other party.
    pub peer: Address,
    /// True if we sent it.
    pub outgoing: bool,
    /// The sender's message id.
    pub message: u64,
    /// When it was sent (accepted for sending) or received (whole), ms since the Unix epoch.
    pub time_ms: u64,
    /// The message.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// What the courier keeps across crashes (saved in the write-ahead record).
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct MailState {
    next_id: u64,
    /// Per contact (by public key), both streams of chunks.
    streams: BTreeMap<[u8; 32], Stream>,
    /// Per contact (by public key), the Olm sessions.
    sessions: BTreeMap<[u8; 32], Sessions>,
    /// Per send (ticket), its chunks not yet acknowledged.
    tickets: BTreeMap<u64, u32>,
    /// Whole messages not yet stored in the history.
    spool: BTreeMap<u64, Record>,
    /// Rounds run (frames prepared).
    pub rounds: u64,
    /// Rows refused: forged, altered, replayed, or not fitting their stream.
    pub rejected: u64,
}

/// Requests from the [`Mailbox`](super::Mailbox) to the courier.
pub(crate) enum MailJob {
    Send {
        to: Address,
        body: Vec<u8>,
        done: oneshot::Sender<Result<(), MailError>>,
    },
    Stored(u64),
    Account(Box<Account>),
}

/// The mailbox's way to its courier, which rides on the scheduler.
pub(crate) struct MailPort {
    pub jobs: mpsc::UnboundedSender<MailJob>,
    pub contacts: Arc<RwLock<Vec<Address>>>,
    pub records: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<(u64, Record)>>>,
    pub address: RwLock<Option<Address>>,
    /// The account, with or without its outbox yet.
    pub account: parking_lot::Mutex<Option<Account>>,
    /// How `mail init` reaches the proxy to make the outbox.
    pub link: Link,
    pub storage_key: [u8; 32],
}

/// A courier for a client of `shape` (resuming from `state`), and the mailbox's port to it.
/// Makes the connection's PIR keys (a fraction of a second of CPU).
pub(crate) fn attach(
    shape: &Shape,
    link: Link,
    storage_key: [u8; 32],
    account: Option<Account>,
    stats: Arc<ClientStats>,
    state: MailState,
) -> Result<(Courier, MailPort), ClientError> {
    let (job_tx, job_rx) = mpsc::unbounded_channel();
    let (rec_tx, rec_rx) = mpsc::unbounded_channel();
    let contacts = Arc::new(RwLock::new(Vec::new()));
    let address = account.as_ref().and_then(Account::address);
    let known = account.clone();
    let courier = Courier::new(
        shape,
        stats,
        storage_key,
        account,
        contacts.clone(),
        rec_tx,
        job_rx,
        state,
    )
    .map_err(|e| ClientError::WrongShape(crate::error::source(e)))?;
    let port = MailPort {
        jobs: job_tx,
        contacts,
        records: parking_lot::Mutex::new(Some(rec_rx)),
        address: RwLock::new(address),
        account: parking_lot::Mutex::new(known),
        link,
        storage_key,
    };
    Ok((courier, port))
}

/// The account as the courier uses it.
struct Me {
    identity: Identity,
    account: Account,
    outbox_key: OutboxKey,
    olm: vodozemac::olm::Account,
}

/// What a round frame in flight needs to read its answers.
pub(crate) struct InFlight {
    round: u64,
    /// Per query: the first row it reads, and whose outbox that is (`None`: a random row).
    reads: Vec<(u64, Option<Address>)>,
    /// The sealed write's responder (`None`: a dummy write without an account).
    write: Option<Responder>,
}

pub(crate) struct Courier {
    stats: Arc<ClientStats>,
    storage_key: [u8; 32],
    shape: Shape,
    reader: Reader,
    me: Option<Me>,
    contacts: Arc<RwLock<Vec<Address>>>,
    plan: Plan,
    state: MailState,
    waiters: HashMap<u64, oneshot::Sender<Result<(), MailError>>>,
    /// Sends accepted this epoch, reported once the state is saved.
    accepted: Vec<u64>,
    records: mpsc::UnboundedSender<(u64, Record)>,
    announced: u64,
    jobs: mpsc::UnboundedReceiver<MailJob>,
    unreadable: u32,
    /// True once storage's answers opened with the pinned key: later failures are tampering
    /// (refused and counted), not a wrong server.
    verified: bool,
    fatal: Option<MailError>,
    /// The outbox key rows of a random read are checked against (the same work as a real
    /// read's).
    stand_in: OutboxKey,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Courier {
    #[allow(clippy::too_many_arguments)]
    fn new(
        shape: &Shape,
        stats: Arc<ClientStats>,
        storage_key: [u8; 32],
        account: Option<Account>,
        contacts: Arc<RwLock<Vec<Address>>>,
        records: mpsc::UnboundedSender<(u64, Record)>,
        jobs: mpsc::UnboundedReceiver<MailJob>,
        state: MailState,
    ) -> Result<Self, MailError> {
        let geometry = shroud_pir::Geometry::new(shape.board_rows)
            .map_err(|e| MailError::Unavailable(format!("the proxy's mail board: {e}")))?;
        let mut rng = rand::rng();
        let mut c = Courier {
            stats,
            storage_key,
            shape: *shape,
            reader: Reader::new(geometry, &mut rng),
            me: None,
            contacts,
            plan: Plan::new(shape.queries_per_round as usize, shape.outbox_rows as usize),
            state,
            waiters: HashMap::new(),
            accepted: Vec::new(),
            records,
            announced: 0,
            jobs,
            unreadable: 0,
            verified: false,
            fatal: None,
            stand_in: OutboxKey::generate(&mut rng),
        };
        if let Some(a) = account {
            c.set_account(a);
        }
        Ok(c)
    }

    fn set_account(&mut self, account: Account) {
        let Some(olm) = account.olm() else {
            tracing::error!("the account's Olm record does not parse: mail stops");
            self.fatal = Some(MailError::NoAccount);
            return;
        };
        self.me = Some(Me {
            identity: account.identity(),
            outbox_key: account.outbox_key(),
            account,
            olm,
        });
    }

    /// Takes the mailbox's requests (every epoch).
    fn take_jobs(&mut self) {
        while let Ok(job) = self.jobs.try_recv() {
            match job {
                MailJob::Send { to, body, done } => match self.enqueue(to, body) {
                    Ok(ticket) => {
                        self.waiters.insert(ticket, done);
                        self.accepted.push(ticket);
                    }
                    Err(e) => {
                        let _ = done.send(Err(e));
                    }
                },
                MailJob::Stored(id) => {
                    self.state.spool.remove(&id);
                }
                MailJob::Account(a) => self.set_account(*a),
            }
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.state.next_id;
        self.state.next_id += 1;
        id
    }

    fn enqueue(&mut self, to: Address, body: Vec<u8>) -> Result<u64, MailError> {
        if let Some(e) = &self.fatal {
            return Err(e.clone());
        }
        if self.me.as_ref().and_then(|m| m.account.outbox()).is_none() {
            return Err(MailError::NoAccount);
        }
        if body.len() > MAX_MESSAGE {
            return Err(MailError::TooLong(body.len()));
        }
        if !self.contacts.read().contains(&to) {
            return Err(MailError::UnknownContact(to.to_string()));
        }
        let ticket = self.next_id();
        let message = rand::random::<u64>();
        let contents = Content::split(message, &body).ok_or(MailError::TooLong(body.len()))?;
        let me = self.me.as_ref().ok_or(MailError::NoAccount)?;
        // Each chunk's content is encrypted once, now: the state that holds the Olm
        // messages and the advanced session is saved before any of them leaves.
        let sessions = self.state.sessions.entry(to.public_key).or_default();
        let mut olm = Vec::with_capacity(contents.len());
        for c in &contents {
            let sealed = sessions
                .encrypt_content(&me.olm, &to, c)
                .map_err(|e| MailError::Unavailable(format!("the contact's keys: {e}")))?;
            olm.push(sealed);
        }
        let chunks = contents.len();
        self.state
            .streams
            .entry(to.public_key)
            .or_default()
            .queue(ticket, olm);
        self.state.tickets.insert(ticket, chunks as u32);
        let id = self.next_id();
        self.state.spool.insert(
            id,
            Record {
                peer: to,
                outgoing: true,
                message,
                time_ms: now_ms(),
                body,
            },
        );
        Ok(ticket)
    }

    /// A random first row of an outbox (what an unused query reads).
    fn random_row<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> u64 {
        let outboxes = self.shape.outboxes().max(1);
        rng.random_range(0..outboxes) * u64::from(self.shape.outbox_rows)
    }

    /// The first row of a contact's outbox, if it is on this board.
    fn first_row(&self, a: &Address) -> Option<u64> {
        (u64::from(a.outbox) < self.shape.outboxes())
            .then(|| u64::from(a.outbox) * u64::from(self.shape.outbox_rows))
    }

    /// Round `round`'s frame: the rows the plan writes, sealed into one outbox write, and
    /// the queries it reads.
    pub fn prepare(
        &mut self,
        seq: u64,
        round: u64,
        rng: &mut StdRng,
    ) -> Result<(RoundFrame, InFlight), MailError> {
        self.state.rounds += 1;
        self.stats.mail_rounds.fetch_add(1, Relaxed);
        let contacts = self.contacts.read().clone();
        self.plan.set_contacts(contacts.len());
        let r = self.shape.outbox_rows as usize;
        // Reads.
        let mut reads = Vec::with_capacity(self.shape.queries_per_round as usize);
        for c in self.plan.reads(round) {
            let contact = c.and_then(|c| contacts.get(c)).copied();
            let read = match contact.and_then(|a| self.first_row(&a).map(|row| (row, a))) {
                Some((row, a)) => (row, Some(a)),
                None => (self.random_row(rng), None),
            };
            reads.push(read);
        }
        let queries = reads
            .iter()
            .map(|(row, _)| self.reader.query(*row).map(PirBytes))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| MailError::Unavailable(format!("PIR query: {e}")))?;
        // Writes.
        let outbox = self.me.as_ref().and_then(|m| m.account.outbox());
        let write = match (self.me.take(), outbox) {
            (Some(me), Some(outbox)) => {
                let rows = self.rows(&me, outbox, round, &contacts, rng);
                let write = OutboxWrite {
                    outbox: u64::from(outbox),
                    capability: me.account.capability(),
                    rows,
                };
                self.me = Some(me);
                write
            }
            (me, _) => {
                self.me = me;
                // No outbox yet: rows of the same making, for an outbox we do not have.
                let throwaway = OutboxKey::generate(rng);
                let mut rows = Vec::with_capacity(r * ROW_LEN);
                for j in 0..r {
                    let place = Place {
                        round,
                        row: j as u64,
                    };
                    rows.extend_from_slice(&row::seal_dummy(&throwaway, place, rng)[..]);
                }
                let mut capability = [0u8; 32];
                rng.fill_bytes(&mut capability);
                OutboxWrite {
                    outbox: 0,
                    capability: shroud_proto::Capability(capability),
                    rows,
                }
            }
        };
        let (sealed, responder) =
            seal_request(&self.storage_key, WRITE_INFO, &write.to_bytes(), rng)
                .map_err(|_| MailError::StorageKey)?;
        Ok((
            RoundFrame {
                seq,
                round,
                write: Sealed(sealed),
                queries,
            },
            InFlight {
                round,
                reads,
                write: outbox.map(|_| responder),
            },
        ))
    }

    /// Our outbox's R rows for `round`, addressed as the plan says.
    fn rows(
        &mut self,
        me: &Me,
        outbox: u32,
        round: u64,
        contacts: &[Address],
        rng: &mut StdRng,
    ) -> Vec<u8> {
        let r = self.shape.outbox_rows as usize;
        let owed: Vec<usize> = contacts
            .iter()
            .enumerate()
            .filter(|(_, a)| {
                self.state
                    .streams
                    .get(&a.public_key)
                    .is_some_and(Stream::owed)
            })
            .map(|(i, _)| i)
            .collect();
        let first = u64::from(outbox) * r as u64;
        let mut rows = Vec::with_capacity(r * ROW_LEN);
        for (j, to) in self.plan.writes(&owed, round).into_iter().enumerate() {
            let place = Place {
                round,
                row: first + j as u64,
            };
            let real = to.and_then(|c| {
                let a = contacts.get(c)?;
                let key = me.identity.key_to(a)?;
                let (chunk, new) = self.state.streams.get_mut(&a.public_key)?.next_row();
                if new {
                    self.plan.exchanged(c, round);
                }
                Some((key, chunk.to_bytes()?))
            });
            let sealed = match real {
                Some((key, plain)) => row::seal(&me.outbox_key, &key, place, &plain, rng),
                None => row::seal_dummy(&me.outbox_key, place, rng),
            };
            rows.extend_from_slice(&sealed[..]);
        }
        rows
    }

    /// Reads a round's answers: every answer decoded, every row checked.
    pub fn complete(&mut self, flight: InFlight, done: RoundDone) {
        if done.round != flight.round || done.answers.len() != flight.reads.len() {
            self.unreadable("a round's answers do not fit its frame");
            return;
        }
        if let Some(responder) = &flight.write {
            match responder
                .open(&done.written.0)
                .ok()
                .and_then(|p| p.first().copied())
                .and_then(WriteStatus::from_byte)
            {
                Some(WriteStatus::Written) => {}
                Some(WriteStatus::Unauthorized) => {
                    tracing::error!("{}", MailError::OutboxRefused);
                }
                Some(other) => tracing::warn!("our outbox write was not taken: {other:?}"),
                None => {
                    self.unreadable("storage's write status does not open");
                    return;
                }
            }
        }
        self.unreadable = 0;
        self.verified |= flight.write.is_some();
        let r = u64::from(self.shape.outbox_rows);
        for ((first, from), answer) in flight.reads.into_iter().zip(done.answers) {
            let rows = match self.reader.decode_rows(first, r, &answer.0) {
                Ok(rows) => rows,
                Err(e) => {
                    self.reject(format!("a PIR answer does not decode: {e}"));
                    continue;
                }
            };
            for (j, bytes) in rows.chunks(ROW_LEN).enumerate() {
                let place = Place {
                    round: flight.round,
                    row: first + j as u64,
                };
                self.read_row(from.as_ref(), place, bytes);
            }
        }
    }

    /// Checks one fetched row and takes what it carries for us.
    fn read_row(&mut self, from: Option<&Address>, place: Place, bytes: &[u8]) {
        let (Some(me), Some(from)) = (&self.me, from) else {
            // A random read, or no account: the same work on a throwaway key.
            let _ = std::hint::black_box(row::open(
                &self.stand_in,
                &row::PairKey::from_bytes([0; 32]),
                place,
                bytes,
            ));
            return;
        };
        let Some(key) = me.identity.key_from(from) else {
            return;
        };
        match row::open(&from.outbox_key(), &key, place, bytes) {
            Ok(Opened::Mine(plain)) => match Chunk::from_bytes(&plain) {
                Some(chunk) => self.take(from, place.round, chunk),
                None => self.reject(format!("a chunk from {from} does not parse")),
            },
            Ok(Opened::NotMine) => {}
            // A blank row: its writer was offline this round (or storage dropped the write,
            // which delays, never loses: the writer keeps writing until acknowledged).
            Err(RowError::Forged) if bytes.iter().all(|&b| b == 0) => {}
            Err(e) => self.reject(format!("a row of {from}'s outbox: {e}")),
        }
    }

    /// Takes a chunk from a contact: its content decrypted in the pair's sessions if it is
    /// new; a session the contact started is confirmed with a chunk back.
    fn take(&mut self, from: &Address, round: u64, chunk: Chunk) {
        let Some(me) = self.me.as_mut() else {
            return;
        };
        let MailState {
            streams, sessions, ..
        } = &mut self.state;
        let sessions = sessions.entry(from.public_key).or_default();
        let stream = streams.entry(from.public_key).or_default();
        let (mut started, mut failed) = (false, None);
        let got = stream.receive(&chunk, |olm| {
            match sessions.decrypt(&mut me.olm, from, olm) {
                Ok(d) => {
                    started = d.started;
                    Content::from_bytes(&d.plain)
                }
                Err(e) => {
                    failed = Some(e);
                    None
                }
            }
        });
        if started {
            // The ratchet turns when we answer on the new session: answer at once.
            match sessions.encrypt_content(&me.olm, from, &Content::confirmation()) {
                Ok(olm) => stream.queue(CONFIRMATION, vec![olm]),
                Err(e) => tracing::warn!("cannot confirm {from}'s session: {e}"),
            }
        }
        match failed {
            Some(SessionError::KeyChanged) => self.reject(format!(
                "{from} wrote with another identity key than its address has: refused (compare safety numbers)"
            )),
            Some(e) => self.reject(format!("a chunk from {from} does not open: {e}")),
            None if got.refused => {
                self.reject(format!("a chunk from {from} does not fit its stream"))
            }
            None => {}
        }
        if got.new
            && let Some(c) = self.contacts.read().iter().position(|a| a == from)
        {
            self.plan.exchanged(c, round);
        }
        for ticket in got.acked {
            if let Some(left) = self.state.tickets.get_mut(&ticket) {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    self.state.tickets.remove(&ticket);
                    self.stats.mail_delivered.fetch_add(1, Relaxed);
                }
            }
        }
        if let Some((message, body)) = got.message {
            self.stats.mail_received.fetch_add(1, Relaxed);
            let id = self.next_id();
            self.state.spool.insert(
                id,
                Record {
                    peer: *from,
                    outgoing: false,
                    message,
                    time_ms: now_ms(),
                    body,
                },
            );
        }
    }

    fn reject(&mut self, why: String) {
        self.state.rejected += 1;
        self.stats.mail_rejected.fetch_add(1, Relaxed);
        tracing::warn!("mail refused: {why}");
    }

    /// A round whose answers cannot be read at all: refused and counted. If no answer has
    /// ever opened, after [`MAX_UNREADABLE`] such rounds the storage server is not the pinned
    /// one, and mail stops with that error; after one has, it is tampering on the way (which
    /// only delays: every unacknowledged chunk goes again).
    fn unreadable(&mut self, why: &str) {
        self.unreadable += 1;
        self.reject(why.to_string());
        if !self.verified && self.unreadable >= MAX_UNREADABLE && self.fatal.is_none() {
            tracing::error!("{}: mail stops", MailError::StorageKey);
            self.fatal = Some(MailError::StorageKey);
        }
    }

    /// After the state is saved: reports accepted sends and offers new whole messages to
    /// the mailbox.
    fn after_save(&mut self) {
        for ticket in self.accepted.drain(..) {
            if let Some(w) = self.waiters.remove(&ticket) {
                let _ = w.send(Ok(()));
            }
        }
        for (&id, rec) in self.state.spool.range(self.announced..) {
            let _ = self.records.send((id, rec.clone()));
        }
        self.announced = self.state.next_id;
    }
}

impl Rider for Courier {
    type State = MailState;
    type Flight = InFlight;

    fn key(&self) -> Vec<u8> {
        self.reader.public_key().to_vec()
    }

    fn epoch(&mut self) {
        self.take_jobs();
    }

    fn board(&mut self, seq: u64, round: u64, rng: &mut StdRng) -> Option<(RoundFrame, InFlight)> {
        match self.prepare(seq, round, rng) {
            Ok(boarded) => Some(boarded),
            Err(e) => {
                tracing::error!("cannot make this round's mail: {e}");
                None
            }
        }
    }

    fn arrive(&mut self, flight: InFlight, answer: RoundDone) {
        self.complete(flight, answer);
    }

    fn state(&self) -> &MailState {
        &self.state
    }

    fn saved(&mut self) {
        self.after_save();
    }
}
