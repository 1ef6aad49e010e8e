//! The scheduler's side of the mailbox: every epoch, exactly D envelopes and one drain request
//! go out in the mail slot, real or dummy; the sealed answers come back and are read here.
//!
//! What it keeps ([`MailState`]) is saved with the engine in the write-ahead record, before the
//! next slot leaves. So:
//! - a message accepted for sending stays in the outbox until storage says each envelope is
//!   queued (a `Full` inbox keeps it there, and it goes again next epoch, sealed afresh so the
//!   proxy cannot tell a retry from a new envelope);
//! - a drained envelope is acknowledged (`ack_through`) only in a slot sent after it was saved
//!   here, so a crash between fetching and storing loses nothing; a re-drained envelope is
//!   caught by the replay window;
//! - whole messages wait in the spool until the [`Mailbox`](super::Mailbox) has stored them in
//!   the oblivious KV, and are offered again after a restart (storing is idempotent).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use rand::CryptoRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use shroud_proto::Shape;
use shroud_proto::mail::{
    DRAIN_INFO, DrainReply, DrainRequest, DrainStatus, NULL_DRAIN, STATUS_LEN, Sealed,
    drain_reply_len,
};
use shroud_proto::proxy::{MailDone, MailSlot};
use shroud_proto::sealed::{Responder, seal_request};
use shroud_proto::{Capability, DepositStatus, Difficulty, Grant, Work};
use tokio::sync::{mpsc, oneshot};

use super::ReplayWindow;
use super::account::Account;
use super::envelope::{self, CHUNK_LEN, ENVELOPE_LEN, EnvelopeError, Header, Reassembly};
use super::identity::{Address, Identity};
use crate::error::ClientError;
use crate::schedule::Rider;
use crate::stats::ClientStats;

/// The longest message, bytes (it must fit one value of the KV history).
pub const MAX_MESSAGE: usize = 60 * 1024;
/// Most chunks of a message we accept.
const MAX_MESSAGE_CHUNKS: u16 = MAX_MESSAGE.div_ceil(CHUNK_LEN) as u16;
/// Most messages being reassembled at once.
const MAX_PARTIAL: usize = 256;
/// Envelopes from unknown senders kept for when their sender becomes a contact.
const MAX_HELD: usize = 256;
/// Epochs a gap in a contact's counters may last (a retried envelope is late) before the
/// envelopes in it are declared missing.
const MISSING_AFTER_EPOCHS: u64 = 100;
/// Envelopes past a gap kept track of, per sender.
const MAX_AHEAD: usize = 1024;
/// Epochs of unreadable answers before the mailbox gives up on this storage server.
const MAX_UNREADABLE: u32 = 3;

/// A mailbox failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MailError {
    /// No account yet (`shroud mail init`).
    #[error("no mailbox account: run `shroud mail init`")]
    NoAccount,
    /// The proxy has no mailbox, or this client has no pinned storage key.
    #[error("mail is not available: {0}")]
    Unavailable(String),
    /// A message longer than [`MAX_MESSAGE`].
    #[error("message of {0} bytes; at most {MAX_MESSAGE}")]
    TooLong(usize),
    /// No contact by that name.
    #[error("unknown contact {0:?}")]
    UnknownContact(String),
    /// Storage knows no inbox for the recipient (a wrong address, or one never opened).
    #[error("the recipient has no inbox at this storage server")]
    NoInbox,
    /// Storage's answers do not open with the pinned routing key: a different server, or
    /// tampering on the way.
    #[error("storage's answers do not open: it does not hold the pinned routing key")]
    StorageKey,
    /// Our inbox exists under another capability.
    #[error("our inbox is held by someone else")]
    InboxTaken,
    /// An envelope problem.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
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
    /// When it was sent (delivered to storage) or received (whole), ms since the Unix epoch.
    pub time_ms: u64,
    /// The message.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Outgoing {
    id: u64,
    ticket: u64,
    to: Address,
    header: Header,
    #[serde(with = "serde_bytes")]
    chunk: Vec<u8>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Ticket {
    to: Address,
    message: u64,
    remaining: u32,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
}

/// What the courier keeps across crashes (saved in the write-ahead record).
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct MailState {
    ack_through: u64,
    outbox: VecDeque<Outgoing>,
    tickets: BTreeMap<u64, Ticket>,
    next_id: u64,
    counters: BTreeMap<[u8; 32], u64>,
    replay: ReplayWindow,
    partial: Reassembly,
    spool: BTreeMap<u64, Record>,
    /// Envelopes that opened with no contact's key (a stranger's, or altered), oldest first:
    /// tried again when a contact is added, the oldest dropped past [`MAX_HELD`].
    held: VecDeque<Vec<u8>>,
    /// Per contact: which of its counters arrived, to notice envelopes that never do.
    arrivals: BTreeMap<[u8; 32], Arrivals>,
    /// Epochs run (mail slots prepared).
    epochs: u64,
    /// Envelopes refused: unopenable, replayed or malformed.
    pub rejected: u64,
    /// Deposits refused because the recipient's inbox was full (and retried).
    pub full: u64,
}

/// A contact's counters: all below `next` arrived; `ahead` arrived past a gap that opened
/// in epoch `since`.
///
/// Senders number their envelopes to each recipient 1, 2, 3, ... and send them in order (at
/// most D at a time, shuffled by the proxy, a full inbox delaying some), so a gap that stays
/// open while later envelopes keep arriving means storage dropped an envelope. It cannot be
/// told from a very late one at once, hence the grace period; and a dropped last envelope
/// shows only when the next one arrives.
#[derive(Clone, Default, Serialize, Deserialize)]
struct Arrivals {
    next: u64,
    ahead: std::collections::BTreeSet<u64>,
    since: Option<u64>,
}

impl Arrivals {
    fn arrived(&mut self, counter: u64, epoch: u64) {
        if self.next == 0 {
            self.next = 1;
        }
        if counter == self.next {
            self.next += 1;
            while self.ahead.remove(&self.next) {
                self.next += 1;
            }
        } else if counter > self.next {
            self.ahead.insert(counter);
        }
        self.since = match (self.ahead.is_empty(), self.since) {
            (true, _) => None,
            (false, Some(s)) => Some(s),
            (false, None) => Some(epoch),
        };
    }

    /// Closes a gap that has lasted too long; returns how many envelopes it held.
    fn expire(&mut self, epoch: u64) -> u64 {
        let overdue = self
            .since
            .is_some_and(|s| epoch.saturating_sub(s) > MISSING_AFTER_EPOCHS)
            || self.ahead.len() > MAX_AHEAD;
        let Some(&first) = self.ahead.first() else {
            return 0;
        };
        if !overdue {
            return 0;
        }
        let missing = first - self.next;
        self.ahead.remove(&first);
        self.next = first;
        self.since = None;
        self.arrived(first, epoch);
        missing
    }
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
    /// The contacts are loaded (or one was added): drain, and retry held envelopes.
    Contacts,
}

/// The mailbox's way to its courier, which rides on the scheduler.
pub(crate) struct MailPort {
    pub jobs: mpsc::UnboundedSender<MailJob>,
    pub contacts: Arc<RwLock<Vec<Address>>>,
    pub records: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<(u64, Record)>>>,
    pub address: RwLock<Option<Address>>,
}

/// A courier for a client of `shape` (resuming from `state`), and the mailbox's port to it.
pub(crate) fn attach(
    shape: &Shape,
    difficulty: Difficulty,
    storage_key: [u8; 32],
    account: Option<Account>,
    stats: Arc<ClientStats>,
    state: MailState,
) -> Result<(Courier, MailPort), ClientError> {
    let (job_tx, job_rx) = mpsc::unbounded_channel();
    let (rec_tx, rec_rx) = mpsc::unbounded_channel();
    let contacts = Arc::new(RwLock::new(Vec::new()));
    let address = match &account {
        Some(a) => Some(
            a.identity()
                .map_err(|e| ClientError::State(crate::error::source(e)))?
                .address(),
        ),
        None => None,
    };
    let courier = Courier::new(
        CourierSetup {
            stats,
            difficulty,
            storage_key,
            account,
            contacts: contacts.clone(),
            records: rec_tx,
            jobs: job_rx,
        },
        shape,
        state,
    )
    .map_err(|e| ClientError::WrongShape(crate::error::source(e)))?;
    let port = MailPort {
        jobs: job_tx,
        contacts,
        records: parking_lot::Mutex::new(Some(rec_rx)),
        address: RwLock::new(address),
    };
    Ok((courier, port))
}

/// What the courier is built from.
pub(crate) struct CourierSetup {
    pub stats: Arc<ClientStats>,
    /// The work storage asks for a new store (the inbox, on its first drain).
    pub difficulty: Difficulty,
    pub storage_key: [u8; 32],
    pub account: Option<Account>,
    pub contacts: Arc<RwLock<Vec<Address>>>,
    pub records: mpsc::UnboundedSender<(u64, Record)>,
    pub jobs: mpsc::UnboundedReceiver<MailJob>,
}

/// The answers' keys for one mail slot in flight.
pub(crate) struct InFlight {
    deposits: Vec<(Option<u64>, Responder)>,
    drain: Responder,
}

pub(crate) struct Courier {
    stats: Arc<ClientStats>,
    storage_key: [u8; 32],
    d: usize,
    m: u32,
    envelope_len: u32,
    account: Option<(Identity, Grant)>,
    contacts: Arc<RwLock<Vec<Address>>>,
    state: MailState,
    waiters: HashMap<u64, oneshot::Sender<Result<(), MailError>>>,
    /// Ticket outcomes to report once the state is saved.
    finished: Vec<(u64, Result<(), MailError>)>,
    records: mpsc::UnboundedSender<(u64, Record)>,
    announced: u64,
    jobs: mpsc::UnboundedReceiver<MailJob>,
    unreadable: u32,
    fatal: Option<MailError>,
    /// False until the mailbox has loaded the contacts: until then the drain is a dummy, so
    /// nothing is fetched that could not be opened.
    ready: bool,
    /// The throwaway keys dummy envelopes are sealed with.
    decoy: envelope::Decoy,
    /// One dummy envelope, opened in place of each drained envelope that was not there, so
    /// that every epoch opens M envelopes against every contact, mail or not.
    stand_in: Option<Vec<u8>>,
    difficulty: Difficulty,
    /// The work that pays for the inbox, found by a thread of its own when the account is
    /// set (until then the drain is a dummy: the epoch's timing does not show the search).
    inbox_work: Arc<OnceLock<Work>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Courier {
    pub fn new(setup: CourierSetup, shape: &Shape, state: MailState) -> Result<Self, MailError> {
        if shape.envelope_len as usize != ENVELOPE_LEN {
            return Err(MailError::Unavailable(format!(
                "the proxy's envelopes are {} bytes, this build's {ENVELOPE_LEN}",
                shape.envelope_len
            )));
        }
        let decoy = envelope::Decoy::generate(&mut rand::rng());
        let stand_in = envelope::dummy(&decoy, &setup.storage_key, &mut rand::rng())
            .ok()
            .map(|e| e.0);
        let mut c = Courier {
            stats: setup.stats,
            storage_key: setup.storage_key,
            d: shape.deposits_per_epoch as usize,
            m: shape.drains_per_epoch,
            envelope_len: shape.envelope_len,
            account: None,
            contacts: setup.contacts,
            state,
            waiters: HashMap::new(),
            finished: Vec::new(),
            records: setup.records,
            announced: 0,
            jobs: setup.jobs,
            unreadable: 0,
            fatal: None,
            ready: false,
            decoy,
            stand_in,
            difficulty: setup.difficulty,
            inbox_work: Arc::new(OnceLock::new()),
        };
        if let Some(a) = setup.account {
            c.set_account(&a)?;
        }
        Ok(c)
    }

    fn set_account(&mut self, a: &Account) -> Result<(), MailError> {
        let id = a
            .identity()
            .map_err(|e| MailError::Store(format!("account: {e}")))?;
        let inbox = a
            .inbox()
            .map_err(|e| MailError::Store(format!("account: {e}")))?;
        let work = Arc::new(OnceLock::new());
        let (found, store, difficulty) = (work.clone(), inbox.store, self.difficulty);
        std::thread::Builder::new()
            .name("inbox-work".into())
            .spawn(move || {
                let _ = found.set(Work::find(&store, difficulty));
            })
            .map_err(|e| MailError::Unavailable(format!("starting the inbox's work: {e}")))?;
        self.inbox_work = work;
        self.account = Some((id, inbox));
        Ok(())
    }

    /// The state to save.
    /// Takes the mailbox's requests (called at the start of every epoch).
    pub fn take_jobs(&mut self) {
        while let Ok(job) = self.jobs.try_recv() {
            match job {
                MailJob::Send { to, body, done } => match self.enqueue(to, body) {
                    Ok(ticket) => {
                        self.waiters.insert(ticket, done);
                    }
                    Err(e) => {
                        let _ = done.send(Err(e));
                    }
                },
                MailJob::Stored(id) => {
                    self.state.spool.remove(&id);
                }
                MailJob::Account(a) => {
                    if let Err(e) = self.set_account(&a) {
                        tracing::error!("mailbox account: {e}");
                    }
                }
                MailJob::Contacts => {
                    self.ready = true;
                    self.retry_held();
                }
            }
        }
    }

    fn enqueue(&mut self, to: Address, body: Vec<u8>) -> Result<u64, MailError> {
        if let Some(e) = &self.fatal {
            return Err(e.clone());
        }
        if self.account.is_none() {
            return Err(MailError::NoAccount);
        }
        if body.len() > MAX_MESSAGE {
            return Err(MailError::TooLong(body.len()));
        }
        let parts: Vec<Vec<u8>> = super::envelope::chunks(&body)?
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        let ticket = self.state.next_id;
        self.state.next_id += 1;
        let message = rand::random::<u64>();
        let n = parts.len() as u16;
        let counter = self.state.counters.entry(to.public_key).or_insert(0);
        for (i, chunk) in parts.into_iter().enumerate() {
            *counter += 1;
            let id = self.state.next_id;
            self.state.next_id += 1;
            self.state.outbox.push_back(Outgoing {
                id,
                ticket,
                to,
                header: Header {
                    counter: *counter,
                    message,
                    chunk: i as u16,
                    chunks: n,
                },
                chunk,
            });
        }
        self.state.tickets.insert(
            ticket,
            Ticket {
                to,
                message,
                remaining: u32::from(n),
                body,
            },
        );
        Ok(ticket)
    }

    /// This epoch's mail slot: the first D envelopes of the outbox (sealed afresh), dummies
    /// for the rest, and a drain of our inbox (or a dummy drain without an account).
    pub fn prepare<R: CryptoRng>(
        &mut self,
        seq: u64,
        rng: &mut R,
    ) -> Result<(MailSlot, InFlight), MailError> {
        self.state.epochs += 1;
        let epoch = self.state.epochs;
        for (who, a) in self.state.arrivals.iter_mut() {
            let missing = a.expire(epoch);
            if missing > 0 {
                self.stats.mail_missing.fetch_add(missing, Relaxed);
                tracing::error!(
                    "{missing} envelope(s) from contact {} never arrived though later ones did: storage dropped them",
                    who.iter()
                        .take(4)
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                );
            }
        }
        let mut deposits = Vec::with_capacity(self.d);
        let mut keys = Vec::with_capacity(self.d);
        for o in self.state.outbox.iter().take(self.d) {
            let (id, _) = self.account.as_ref().ok_or(MailError::NoAccount)?;
            let (env, responder) =
                envelope::seal_routed(id, &o.to, &self.storage_key, o.header, &o.chunk, rng)?;
            deposits.push(env);
            keys.push((Some(o.id), responder));
        }
        while deposits.len() < self.d {
            let (env, responder) = envelope::dummy_routed(&self.decoy, &self.storage_key, rng)?;
            deposits.push(env);
            keys.push((None, responder));
        }
        let real = match &self.account {
            Some((_, g)) if self.ready => self.inbox_work.get().map(|w| (g.clone(), *w)),
            _ => None,
        };
        let (grant, work) = real.unwrap_or((
            Grant {
                store: NULL_DRAIN,
                capability: Capability([0; 32]),
            },
            Work(0),
        ));
        let req = DrainRequest {
            grant,
            ack_through: self.state.ack_through,
            work,
        };
        self.stats.mail_slots.fetch_add(1, Relaxed);
        let (drain, responder) = seal_request(&self.storage_key, DRAIN_INFO, &req.to_bytes(), rng)
            .map_err(|_| MailError::StorageKey)?;
        Ok((
            MailSlot {
                seq,
                deposits,
                drain: Sealed(drain),
            },
            InFlight {
                deposits: keys,
                drain: responder,
            },
        ))
    }

    /// Reads storage's answers to a slot. Nothing changes unless every answer opens.
    pub fn complete(&mut self, flight: InFlight, done: MailDone) {
        let opened = match self.read_answers(&flight, &done) {
            Ok((statuses, reply)) => {
                self.unreadable = 0;
                self.apply_statuses(&flight, &statuses);
                self.apply_drain(reply)
            }
            Err(e) => {
                self.unreadable += 1;
                tracing::warn!("mail answers did not open ({e}); the slot's mail goes again");
                if self.unreadable >= MAX_UNREADABLE && self.fatal.is_none() {
                    tracing::error!("{e}: mail stops");
                    self.fatal = Some(e.clone());
                    for (t, w) in self.waiters.drain() {
                        self.state.tickets.remove(&t);
                        let _ = w.send(Err(e.clone()));
                    }
                    self.state.outbox.clear();
                }
                0
            }
        };
        self.open_stand_ins(opened);
    }

    /// Opens the stand-in envelope for each of the epoch's M drained envelopes beyond the
    /// `opened` that were real: an epoch's work (an X25519 operation per contact, per
    /// envelope) is then the same with mail and without, and so is how the machine's
    /// scheduler treats the client's threads when the CPU is shared (issue 12, finding 3).
    fn open_stand_ins(&self, opened: usize) {
        let (Some((me, _)), Some(stand_in)) = (&self.account, &self.stand_in) else {
            return;
        };
        let contacts = self.contacts.read().clone();
        for _ in opened..self.m as usize {
            let _ = std::hint::black_box(envelope::open(stand_in, me, &contacts));
        }
    }

    fn read_answers(
        &self,
        flight: &InFlight,
        done: &MailDone,
    ) -> Result<(Vec<DepositStatus>, DrainReply), MailError> {
        if done.deposited.len() != flight.deposits.len()
            || done.drained.0.len() != drain_reply_len(self.m, self.envelope_len)
        {
            return Err(MailError::StorageKey);
        }
        let mut statuses = Vec::with_capacity(flight.deposits.len());
        for ((_, r), sealed) in flight.deposits.iter().zip(&done.deposited) {
            if sealed.0.len() != STATUS_LEN {
                return Err(MailError::StorageKey);
            }
            let plain = r.open(&sealed.0).map_err(|_| MailError::StorageKey)?;
            statuses.push(DepositStatus::from_byte(plain[0]).ok_or(MailError::StorageKey)?);
        }
        let plain = flight
            .drain
            .open(&done.drained.0)
            .map_err(|_| MailError::StorageKey)?;
        let reply = DrainReply::from_bytes(&plain, self.m, self.envelope_len)
            .ok_or(MailError::StorageKey)?;
        Ok((statuses, reply))
    }

    fn apply_statuses(&mut self, flight: &InFlight, statuses: &[DepositStatus]) {
        for ((id, _), status) in flight.deposits.iter().zip(statuses) {
            let Some(id) = id else { continue };
            let Some(pos) = self.state.outbox.iter().position(|o| o.id == *id) else {
                continue;
            };
            let ticket = self.state.outbox[pos].ticket;
            match status {
                DepositStatus::Delivered => {
                    self.state.outbox.remove(pos);
                    let Some(t) = self.state.tickets.get_mut(&ticket) else {
                        continue;
                    };
                    t.remaining = t.remaining.saturating_sub(1);
                    if t.remaining == 0
                        && let Some(t) = self.state.tickets.remove(&ticket)
                    {
                        let id = self.state.next_id;
                        self.state.next_id += 1;
                        self.state.spool.insert(
                            id,
                            Record {
                                peer: t.to,
                                outgoing: true,
                                message: t.message,
                                time_ms: now_ms(),
                                body: t.body,
                            },
                        );
                        self.finished.push((ticket, Ok(())));
                    }
                }
                DepositStatus::Full => {
                    // It stays at the head of the outbox and goes again next epoch.
                    self.state.full += 1;
                    self.stats.mail_full.fetch_add(1, Relaxed);
                }
                DepositStatus::NoInbox | DepositStatus::Dropped | DepositStatus::Unreadable => {
                    self.state.outbox.retain(|o| o.ticket != ticket);
                    self.state.tickets.remove(&ticket);
                    self.finished.push((ticket, Err(MailError::NoInbox)));
                }
            }
        }
    }

    /// Files the drained envelopes; returns how many were opened.
    fn apply_drain(&mut self, reply: DrainReply) -> usize {
        match reply.status {
            DrainStatus::Ok => {}
            DrainStatus::Unauthorized => {
                if self.account.is_some() {
                    tracing::error!("{}", MailError::InboxTaken);
                }
                return 0;
            }
            DrainStatus::Failed => {
                tracing::warn!("storage could not drain our inbox this epoch");
                return 0;
            }
        }
        if self.account.is_none() || !self.ready {
            return 0;
        }
        // An honest server returns the entries after `ack_through`, in order, with no gaps:
        // anything else is a lie about the queue, and the whole reply is refused (nothing is
        // acknowledged, so nothing is lost while the server behaves).
        let present: Vec<_> = reply.envelopes.into_iter().filter(|d| d.present).collect();
        let expected = (1..=present.len() as u64).map(|i| self.state.ack_through + i);
        if !present.iter().map(|d| d.seq).eq(expected) {
            self.state.rejected += 1;
            self.stats.mail_rejected.fetch_add(1, Relaxed);
            tracing::warn!("storage returned inbox entries out of order: the drain is refused");
            return 0;
        }
        let opened = present.len();
        for d in present {
            self.state.ack_through = d.seq;
            self.accept(d.envelope.0, true);
        }
        opened
    }

    /// Tries the held envelopes again (a contact was added).
    fn retry_held(&mut self) {
        let held: Vec<Vec<u8>> = self.state.held.drain(..).collect();
        for env in held {
            self.accept(env, false);
        }
    }

    /// Opens one envelope and files its chunk; `fresh` is false for a held one.
    fn accept(&mut self, envelope: Vec<u8>, fresh: bool) {
        let Some((me, _)) = &self.account else {
            return;
        };
        let contacts = self.contacts.read().clone();
        let opened = envelope::open(&envelope, me, &contacts);
        let (from, h, chunk) = match opened {
            Ok(x) => x,
            Err(EnvelopeError::Open) => {
                // A stranger's (kept for when they become a contact) or altered (never
                // opens): refused for now either way.
                if fresh {
                    self.state.rejected += 1;
                    self.stats.mail_rejected.fetch_add(1, Relaxed);
                    tracing::warn!("an envelope opens with no contact's key: held");
                }
                if self.state.held.len() >= MAX_HELD {
                    self.state.held.pop_front();
                }
                self.state.held.push_back(envelope);
                return;
            }
            Err(e) => {
                self.state.rejected += 1;
                self.stats.mail_rejected.fetch_add(1, Relaxed);
                tracing::warn!("envelope refused: {e}");
                return;
            }
        };
        let checked = if h.chunks > MAX_MESSAGE_CHUNKS {
            Err(EnvelopeError::TooLong)
        } else {
            self.state.replay.accept(&from, h.counter)
        };
        if checked.is_ok() {
            let epoch = self.state.epochs;
            self.state
                .arrivals
                .entry(from.public_key)
                .or_default()
                .arrived(h.counter, epoch);
        }
        if let Err(e) = checked {
            self.state.rejected += 1;
            self.stats.mail_rejected.fetch_add(1, Relaxed);
            tracing::warn!("envelope from {from} refused: {e}");
            return;
        }
        if self.state.partial.pending() >= MAX_PARTIAL && h.chunks > 1 {
            self.state.rejected += 1;
            self.stats.mail_rejected.fetch_add(1, Relaxed);
            tracing::warn!("too many messages half-received; chunk refused");
            return;
        }
        if let Some(body) = self.state.partial.add(&from, h, chunk) {
            self.stats.mail_received.fetch_add(1, Relaxed);
            let id = self.state.next_id;
            self.state.next_id += 1;
            self.state.spool.insert(
                id,
                Record {
                    peer: from,
                    outgoing: false,
                    message: h.message,
                    time_ms: now_ms(),
                    body,
                },
            );
        }
    }

    /// After the state is saved: reports finished sends and offers new whole messages to
    /// the mailbox.
    pub fn after_save(&mut self) {
        for (ticket, r) in self.finished.drain(..) {
            if let Some(w) = self.waiters.remove(&ticket) {
                let _ = w.send(r);
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

    fn board(&mut self, seq: u64, rng: &mut StdRng) -> Option<(MailSlot, InFlight)> {
        self.take_jobs();
        match self.prepare(seq, rng) {
            Ok(boarded) => Some(boarded),
            Err(e) => {
                tracing::error!("cannot seal this epoch's mail: {e}");
                None
            }
        }
    }

    fn arrive(&mut self, flight: InFlight, answer: MailDone) {
        self.complete(flight, answer);
    }

    fn state(&self) -> &MailState {
        &self.state
    }

    fn saved(&mut self) {
        self.after_save();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_that_stays_open_is_declared_missing_once() {
        let mut a = Arrivals::default();
        for c in [1, 2, 4, 3] {
            a.arrived(c, 1);
        }
        assert_eq!((a.next, a.ahead.len(), a.since), (5, 0, None));
        // 5 and 6 never come; 7 and 8 do.
        a.arrived(7, 10);
        a.arrived(8, 11);
        assert_eq!(a.expire(10 + MISSING_AFTER_EPOCHS), 0, "still in grace");
        assert_eq!(a.expire(11 + MISSING_AFTER_EPOCHS), 2);
        assert_eq!((a.next, a.since), (9, None));
        assert_eq!(a.expire(1_000), 0, "reported once");
        // A late envelope within the grace period closes its gap quietly.
        a.arrived(10, 2_000);
        a.arrived(9, 2_001);
        assert_eq!((a.next, a.expire(5_000)), (11, 0));
    }
}
