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
//! # Security
//! The proxy and storage see K slots of one size per epoch whatever the caller does: a dummy
//! is a genuine access of a random leaf with a freshly sealed write-back. Operation latency
//! is visible only to the caller.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shroud_net::frame_codec;
use shroud_net::transport::{BoxIo, ClientTls};
use shroud_oram::{Key, Op, Oram, Progress};
use shroud_proto::Shape;
use shroud_proto::proxy::{ClientMsg, MailDone, MailSlot, ProxyMsg, Slot, SlotWrite};
use shroud_proto::{ErrorCode, Grant, Hello, Limits, decode, encode};
use tokio::sync::{mpsc, oneshot};

use crate::durable::{Durable, Meta, Unlock, Wal};
use crate::mailbox::courier::{Courier, CourierSetup, MailJob, MailState, Record};
use crate::mailbox::{Account, Address};
use parking_lot::RwLock;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// The cause of a [`ClientError`], kept (not flattened into text) and shareable, because
/// one failure can end the operations of many callers.
pub type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A scheduler failure.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The proxy refused us.
    #[error("proxy refused: {0:?}")]
    Refused(ErrorCode),
    /// The proxy's shape does not fit this client's store.
    #[error("the proxy's slot shape does not fit this store: {0}")]
    WrongShape(#[source] Source),
    /// Connecting, sending or receiving failed.
    #[error("connection: {0}")]
    Io(#[source] Source),
    /// The proxy answered something the protocol does not allow.
    #[error("protocol: {0}")]
    Protocol(&'static str),
    /// The server's data failed verification; the operation was not applied.
    #[error("integrity: {0}")]
    Integrity(#[source] Source),
    /// An address or value the store cannot take.
    #[error("bad request: {0}")]
    BadRequest(#[source] Source),
    /// The scheduler has stopped.
    #[error("the client has stopped")]
    Closed,
    /// The local state store failed; the scheduler stopped rather than go on unsafely.
    #[error("client state: {0}")]
    State(#[source] Source),
}

/// Wraps any error as a [`Source`].
pub(crate) fn source(e: impl std::error::Error + Send + Sync + 'static) -> Source {
    Arc::new(e)
}

/// A [`Source`] that is only a message (no error value underneath).
pub(crate) fn message(text: impl Into<String>) -> Source {
    let boxed: Box<dyn std::error::Error + Send + Sync> = text.into().into();
    Arc::from(boxed)
}

/// Where and how to reach the proxy.
#[derive(Clone)]
pub struct ClientConfig {
    /// The proxy's address.
    pub proxy: SocketAddr,
    /// TLS towards the proxy.
    pub tls: ClientTls,
    /// The longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Storage's mailbox routing key, pinned (needed when the proxy runs a mailbox; answers
    /// that do not open with it are refused).
    pub storage_key: Option<[u8; 32]>,
    /// The mailbox account (a durable client keeps its own in the state instead).
    pub account: Option<Account>,
}

impl ClientConfig {
    /// Reconnection backoff up to 2 s.
    pub fn new(proxy: SocketAddr, tls: ClientTls) -> Self {
        ClientConfig {
            proxy,
            tls,
            max_backoff: Duration::from_secs(2),
            storage_key: None,
            account: None,
        }
    }

    /// Pins storage's mailbox routing key.
    pub fn with_storage_key(mut self, key: [u8; 32]) -> Self {
        self.storage_key = Some(key);
        self
    }

    /// Uses this mailbox account.
    pub fn with_account(mut self, account: Account) -> Self {
        self.account = Some(account);
        self
    }
}

enum Job {
    Read(u64, oneshot::Sender<Result<Vec<u8>, ClientError>>),
    Write(u64, Vec<u8>, oneshot::Sender<Result<(), ClientError>>),
}

/// Counters of one client.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Epochs completed.
    pub epochs: AtomicU64,
    /// Real accesses served.
    pub real: AtomicU64,
    /// Dummy accesses sent.
    pub dummy: AtomicU64,
    /// Reconnections.
    pub reconnects: AtomicU64,
    /// Mail slots sent (one per epoch when the proxy runs a mailbox).
    pub mail_slots: AtomicU64,
    /// Drained envelopes refused: altered, replayed, from strangers, or malformed.
    pub mail_rejected: AtomicU64,
    /// Deposits a full inbox pushed back (each retried later).
    pub mail_full: AtomicU64,
    /// Whole messages received.
    pub mail_received: AtomicU64,
    /// Epochs whose reads failed verification (the server's data was refused, the batch
    /// undone, the operations failed with [`ClientError::Integrity`]).
    pub integrity_failures: AtomicU64,
    /// Epochs the proxy reported failed at storage, or that got no reply: resent.
    pub failed_exchanges: AtomicU64,
    /// Envelopes a contact sent that never arrived while later ones did (storage dropped
    /// them), declared missing after a grace period.
    pub mail_missing: AtomicU64,
}

/// A handle to a running scheduler: `Send + Sync + Clone`, usable from many tasks.
#[derive(Clone)]
pub struct Client {
    jobs: mpsc::Sender<Job>,
    shape: Shape,
    stats: Arc<ClientStats>,
    mail: Option<Arc<MailPort>>,
}

/// The mailbox's way into the scheduler.
pub(crate) struct MailPort {
    pub jobs: mpsc::UnboundedSender<MailJob>,
    pub contacts: Arc<RwLock<Vec<Address>>>,
    pub records: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<(u64, Record)>>>,
    pub address: RwLock<Option<Address>>,
}

fn check_shape(oram: &Oram, shape: &Shape) -> Result<(), ClientError> {
    let trees: Vec<_> = oram.trees().collect();
    match trees.as_slice() {
        [g] if g.fetched_levels() == shape.path_len as usize
            && g.ciphertext_len() == shape.bucket_len as usize
            && g.bucket_count() == shape.buckets =>
        {
            Ok(())
        }
        _ => Err(ClientError::WrongShape(message(format!(
            "{trees:?} vs {shape:?}"
        )))),
    }
}

type Conn = Framed<BoxIo, LengthDelimitedCodec>;

/// Connects and exchanges hellos; returns the proxy's shape.
async fn hello(config: &ClientConfig) -> Result<(Conn, Shape), ClientError> {
    let io = config
        .tls
        .connect(config.proxy)
        .await
        .map_err(|e| ClientError::Io(source(e)))?;
    let mut conn = Framed::new(io, frame_codec(Limits::default()));
    send(&mut conn, &ClientMsg::Hello(Hello::current())).await?;
    match recv(&mut conn).await? {
        ProxyMsg::Hello(_, shape) => Ok((conn, shape)),
        ProxyMsg::Error(code) => Err(ClientError::Refused(code)),
        _ => Err(ClientError::Protocol("unexpected reply to hello")),
    }
}

/// Connects, exchanges hellos and registers `grant`'s store.
async fn connect(config: &ClientConfig, grant: &Grant) -> Result<(Conn, Shape), ClientError> {
    let (mut conn, shape) = hello(config).await?;
    send(&mut conn, &ClientMsg::Register(grant.clone())).await?;
    match recv(&mut conn).await? {
        ProxyMsg::Registered => Ok((conn, shape)),
        ProxyMsg::Error(code) => Err(ClientError::Refused(code)),
        _ => Err(ClientError::Protocol("unexpected reply to register")),
    }
}

async fn send(conn: &mut Conn, msg: &ClientMsg) -> Result<(), ClientError> {
    let b = encode(msg, Limits::default()).map_err(|e| ClientError::Io(source(e)))?;
    conn.send(Bytes::from(b))
        .await
        .map_err(|e| ClientError::Io(source(e)))
}

async fn recv(conn: &mut Conn) -> Result<ProxyMsg, ClientError> {
    let f = conn
        .next()
        .await
        .ok_or_else(|| ClientError::Protocol("proxy closed the connection"))?
        .map_err(|e| ClientError::Io(source(e)))?;
    decode(&f, Limits::default()).map_err(|e| ClientError::Io(source(e)))
}

/// The scheduler task: it ends once every [`Client`] handle is dropped and the last
/// write-back is stored.
pub type SchedulerTask = tokio::task::JoinHandle<Result<(), ClientError>>;

fn state_err(e: impl std::error::Error + Send + Sync + 'static) -> ClientError {
    ClientError::State(source(e))
}

impl Client {
    /// Connects to the proxy, registers the store named by `grant`, and starts the schedule
    /// with a fresh engine under `key`, keeping no state on disk (tests, demos).
    pub async fn start(
        config: ClientConfig,
        key: Key,
        grant: Grant,
    ) -> Result<(Client, SchedulerTask), ClientError> {
        let (conn, shape) = connect(&config, &grant).await?;
        let mut rng = StdRng::from_rng(&mut rand::rng());
        let oram = Oram::new(shape.engine_config(), key, &mut rng)
            .map_err(|e| ClientError::WrongShape(source(e)))?;
        check_shape(&oram, &shape)?;
        let start = Resume {
            pending: None,
            seq: 0,
            mail: MailState::default(),
        };
        let account = config.account.clone();
        Self::launch(config, grant, shape, oram, rng, conn, None, start, account)
    }

    /// Starts the schedule from the state in `durable` (made by [`Client::create`]):
    /// restores the engine, resends the write-back it owes, and saves every batch.
    pub async fn open(
        config: ClientConfig,
        durable: Arc<Durable>,
        meta: &Meta,
    ) -> Result<(Client, SchedulerTask), ClientError> {
        let (conn, shape) = connect(&config, &meta.grant).await?;
        if shape != meta.shape {
            return Err(ClientError::WrongShape(message(format!(
                "the state was made for {:?}, the proxy serves {shape:?}",
                meta.shape
            ))));
        }
        let mut rng = StdRng::from_rng(&mut rand::rng());
        let key = Key::from_bytes(meta.oram_key);
        let d = durable.clone();
        let wal = tokio::task::spawn_blocking(move || d.load_wal())
            .await
            .map_err(state_err)?
            .map_err(state_err)?;
        let (oram, start) = match wal {
            Some(w) => (
                Oram::restore(&w.snapshot, key, &mut rng).map_err(state_err)?,
                Resume {
                    pending: w.pending.clone(),
                    seq: w.seq,
                    mail: w.mail.clone().unwrap_or_default(),
                },
            ),
            None => (
                Oram::new(shape.engine_config(), key, &mut rng)
                    .map_err(|e| ClientError::WrongShape(source(e)))?,
                Resume {
                    pending: None,
                    seq: 0,
                    mail: MailState::default(),
                },
            ),
        };
        check_shape(&oram, &shape)?;
        let d = durable.clone();
        let stored = tokio::task::spawn_blocking(move || d.load_account())
            .await
            .map_err(state_err)?
            .map_err(state_err)?;
        let account = stored.or_else(|| config.account.clone());
        Self::launch(
            config,
            meta.grant.clone(),
            shape,
            oram,
            rng,
            conn,
            Some(durable),
            start,
            account,
        )
    }

    /// Makes a new store's state under `dir`: asks the proxy for its shape, draws an ORAM key
    /// and a grant, and saves them encrypted as `unlock` says.
    pub async fn create(
        config: &ClientConfig,
        dir: &std::path::Path,
        unlock: &Unlock,
    ) -> Result<(), ClientError> {
        let (_, shape) = hello(config).await?;
        let mut rng = rand::rng();
        let meta = Meta {
            version: 1,
            shape,
            grant: crate::random_grant(&mut rng),
            oram_key: *Key::generate(&mut rng).as_bytes(),
        };
        let (dir, unlock) = (dir.to_path_buf(), unlock.clone());
        tokio::task::spawn_blocking(move || Durable::create(&dir, &unlock, &meta).map(|_| ()))
            .await
            .map_err(state_err)?
            .map_err(state_err)
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(
        config: ClientConfig,
        grant: Grant,
        shape: Shape,
        oram: Oram,
        rng: StdRng,
        conn: Conn,
        durable: Option<Arc<Durable>>,
        start: Resume,
        account: Option<Account>,
    ) -> Result<(Client, SchedulerTask), ClientError> {
        let (tx, rx) = mpsc::channel(1024);
        let stats = Arc::new(ClientStats::default());
        let (courier, mail) = if shape.mail() {
            let storage_key = config.storage_key.ok_or_else(|| {
                ClientError::WrongShape(message(
                    "the proxy runs a mailbox: pin storage's routing key (storage_key)",
                ))
            })?;
            let (job_tx, job_rx) = mpsc::unbounded_channel();
            let (rec_tx, rec_rx) = mpsc::unbounded_channel();
            let contacts = Arc::new(RwLock::new(Vec::new()));
            let address = match &account {
                Some(a) => Some(
                    a.identity()
                        .map_err(|e| ClientError::State(source(e)))?
                        .address(),
                ),
                None => None,
            };
            let courier = Courier::new(
                CourierSetup {
                    stats: stats.clone(),
                    storage_key,
                    account,
                    contacts: contacts.clone(),
                    records: rec_tx,
                    jobs: job_rx,
                },
                &shape,
                start.mail,
            )
            .map_err(|e| ClientError::WrongShape(source(e)))?;
            let port = MailPort {
                jobs: job_tx,
                contacts,
                records: parking_lot::Mutex::new(Some(rec_rx)),
                address: RwLock::new(address),
            };
            (Some(courier), Some(Arc::new(port)))
        } else {
            (None, None)
        };
        let sched = Scheduler {
            config,
            grant,
            shape,
            oram,
            rng,
            conn: Some(conn),
            jobs: rx,
            seq: start.seq,
            pending: start.pending,
            waiting: Vec::new(),
            stats: stats.clone(),
            durable,
            courier,
        };
        Ok((
            Client {
                jobs: tx,
                shape,
                stats,
                mail,
            },
            tokio::spawn(sched.run()),
        ))
    }

    /// The mailbox's way in, if the proxy runs a mailbox.
    pub(crate) fn mail_port(&self) -> Option<&Arc<MailPort>> {
        self.mail.as_ref()
    }

    /// The proxy's shape (capacity and block size of this store).
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Reads block `addr` (zeros if never written).
    pub async fn read(&self, addr: u64) -> Result<Vec<u8>, ClientError> {
        if addr >= self.shape.capacity {
            return Err(ClientError::BadRequest(message(format!(
                "address {addr} past capacity {}",
                self.shape.capacity
            ))));
        }
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Read(addr, tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Writes block `addr`; returns once the write is durable at storage.
    pub async fn write(&self, addr: u64, data: Vec<u8>) -> Result<(), ClientError> {
        if addr >= self.shape.capacity || data.len() != self.shape.block_size as usize {
            return Err(ClientError::BadRequest(message(format!(
                "address {addr} (capacity {}) or {} bytes (blocks are {})",
                self.shape.capacity,
                data.len(),
                self.shape.block_size
            ))));
        }
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Write(addr, data, tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }
}

/// Where a restored scheduler picks up.
struct Resume {
    pending: Option<Vec<Vec<SlotWrite>>>,
    seq: u64,
    mail: MailState,
}

/// The task that owns the engine and keeps the schedule.
struct Scheduler {
    config: ClientConfig,
    grant: Grant,
    shape: Shape,
    oram: Oram,
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
    /// The mailbox's sending and draining, when the proxy runs a mailbox.
    courier: Option<Courier>,
}

impl Scheduler {
    async fn run(mut self) -> Result<(), ClientError> {
        let k = self.shape.slots_per_epoch as usize;
        let mut closing = false;
        loop {
            let mut jobs = Vec::with_capacity(k);
            while jobs.len() < k && !closing {
                match self.jobs.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => closing = true,
                }
            }
            if closing && jobs.is_empty() {
                return self.flush().await;
            }
            self.epoch(jobs).await?;
        }
    }

    /// Saves the engine and its owed write-back (the write-ahead rule in
    /// [`crate::durable`]).
    async fn save(&mut self) -> Result<(), ClientError> {
        let Some(d) = self.durable.clone() else {
            return Ok(());
        };
        let snapshot = self
            .oram
            .snapshot()
            .map_err(|e| ClientError::State(source(e)))?;
        let wal = Wal {
            snapshot: snapshot.to_vec(),
            pending: self.pending.clone(),
            seq: self.seq,
            mail: self.courier.as_ref().map(|c| c.state().clone()),
        };
        tokio::task::spawn_blocking(move || d.save_wal(&wal))
            .await
            .map_err(|e| ClientError::State(source(e)))?
            .map_err(|e| ClientError::State(source(e)))
    }

    /// One epoch: K accesses, real ones first.
    async fn epoch(&mut self, jobs: Vec<Job>) -> Result<(), ClientError> {
        let k = self.shape.slots_per_epoch as usize;
        let ops: Vec<Op<'_>> = (0..k)
            .map(|j| match jobs.get(j) {
                Some(Job::Read(a, _)) => Op::Read(*a),
                Some(Job::Write(a, d, _)) => Op::Write(*a, d),
                None => Op::Dummy,
            })
            .collect();
        self.stats.real.fetch_add(jobs.len() as u64, Relaxed);
        self.stats.dummy.fetch_add((k - jobs.len()) as u64, Relaxed);
        if let Err(e) = self.oram.begin(&ops, &mut self.rng) {
            fail(jobs, ClientError::BadRequest(source(e)));
            return Ok(());
        }
        drop(ops);
        let mail = match self.courier.as_mut() {
            Some(c) => {
                c.take_jobs();
                match c.prepare(self.seq + k as u64, &mut self.rng) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::error!("cannot seal this epoch's mail: {e}");
                        None
                    }
                }
            }
            None => None,
        };
        let (slot_mail, flight) = match mail {
            Some((m, f)) => (Some(m), Some(f)),
            None => (None, None),
        };
        let reads: Vec<Vec<u64>> = match self.oram.fetch() {
            Some(f) => f
                .ids()
                .chunks(self.shape.path_len as usize)
                .map(|p| p.iter().map(|id| id.index).collect())
                .collect(),
            None => Vec::new(),
        };
        let (replies, mail_done) = self.exchange(reads, slot_mail).await;
        if let (Some(c), Some(f), Some(d)) = (self.courier.as_mut(), flight, mail_done) {
            c.complete(f, d);
        }
        // The write-back this epoch carried is durable: the previous batch's writes are done.
        for w in self.waiting.drain(..) {
            let _ = w.send(Ok(()));
        }
        if let Some(mut fetch) = self.oram.fetch() {
            for (i, r) in replies.iter().flatten().enumerate() {
                let _ = fetch.supply(i, r.present.then_some(&r.data[..]));
            }
        }
        match self.oram.advance() {
            Ok(Progress::Done) => {}
            other => {
                self.oram.abort();
                let why = match other {
                    Err(e) => source(e),
                    Ok(_) => message("more rounds than a flat map needs"),
                };
                tracing::error!("epoch batch failed verification: {why}");
                self.stats.integrity_failures.fetch_add(1, Relaxed);
                fail(jobs, ClientError::Integrity(why));
                // The mail read this epoch must be saved before the next slot acknowledges it.
                if self.courier.is_some() {
                    self.save().await?;
                    if let Some(c) = self.courier.as_mut() {
                        c.after_save();
                    }
                }
                return Ok(());
            }
        }
        self.pending = self.oram.write_back().map(|wb| {
            let items: Vec<SlotWrite> = wb
                .iter()
                .map(|(id, b)| SlotWrite {
                    bucket: id.index,
                    data: b.to_vec(),
                })
                .collect();
            items
                .chunks(self.shape.path_len as usize)
                .map(<[SlotWrite]>::to_vec)
                .collect()
        });
        // Write-ahead: nothing below (answers, the next slots) may happen before this is on disk.
        if let Err(e) = self.save().await {
            tracing::error!("cannot save the client state, stopping: {e}");
            fail(jobs, e.clone());
            return Err(e);
        }
        if let Some(c) = self.courier.as_mut() {
            c.after_save();
        }
        for (j, job) in jobs.into_iter().enumerate() {
            match job {
                Job::Read(_, done) => {
                    let _ = done.send(Ok(self
                        .oram
                        .result(j)
                        .map(<[u8]>::to_vec)
                        .unwrap_or_default()));
                }
                Job::Write(_, _, done) => self.waiting.push(done),
            }
        }
        self.stats.epochs.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Stores the last write-back (with random reads in the read half, ignored), so that
    /// every acknowledged write is on storage, then stops.
    async fn flush(&mut self) -> Result<(), ClientError> {
        if self.pending.is_none() {
            return Ok(());
        }
        let leaves = 1u64 << (self.shape.path_len + self.shape.cached_levels - 1);
        let reads = (0..self.shape.slots_per_epoch)
            .map(|_| {
                let leaf = u64::from(self.rng.next_u32()) % leaves;
                let levels = u64::from(self.shape.path_len + self.shape.cached_levels);
                (u64::from(self.shape.cached_levels)..levels)
                    .map(|d| (1u64 << d) - 1 + (leaf >> (levels - 1 - d)))
                    .collect()
            })
            .collect();
        self.exchange(reads, None).await;
        self.pending = None;
        self.save().await?;
        for w in self.waiting.drain(..) {
            let _ = w.send(Ok(()));
        }
        Ok(())
    }

    /// Sends this epoch's K slots and waits for their K replies, reconnecting and resending
    /// the very same slots until they go through.
    async fn exchange(
        &mut self,
        reads: Vec<Vec<u64>>,
        mail: Option<MailSlot>,
    ) -> (Vec<Vec<shroud_proto::ReadResult>>, Option<MailDone>) {
        let n = self.shape.path_len as usize;
        let zeros = vec![
            SlotWrite {
                bucket: 0,
                data: vec![0u8; self.shape.bucket_len as usize]
            };
            n
        ];
        let first = self.seq;
        let slots: Vec<Slot> = reads
            .into_iter()
            .enumerate()
            .map(|(j, reads)| Slot {
                seq: first + j as u64,
                grant: self.grant.clone(),
                write: self.pending.is_some(),
                writes: self
                    .pending
                    .as_ref()
                    .and_then(|p| p.get(j).cloned())
                    .unwrap_or_else(|| zeros.clone()),
                reads,
            })
            .collect();
        self.seq += slots.len() as u64 + u64::from(mail.is_some());
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.try_exchange(&slots, mail.as_ref()).await {
                Ok(r) => return r,
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
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    if let Ok((c, shape)) = connect(&self.config, &self.grant).await
                        && shape == self.shape
                    {
                        self.conn = Some(c);
                        self.stats.reconnects.fetch_add(1, Relaxed);
                    }
                }
            }
        }
    }

    async fn try_exchange(
        &mut self,
        slots: &[Slot],
        mail: Option<&MailSlot>,
    ) -> Result<(Vec<Vec<shroud_proto::ReadResult>>, Option<MailDone>), ClientError> {
        let conn = self.conn.as_mut().ok_or(ClientError::Closed)?;
        for s in slots {
            send(conn, &ClientMsg::Slot(s.clone())).await?;
        }
        if let Some(m) = mail {
            send(conn, &ClientMsg::Mail(m.clone())).await?;
        }
        let mut mail_done = None;
        let deadline = Duration::from_millis(u64::from(self.shape.epoch_ms) * 20 + 5_000);
        let mut out: Vec<Option<Vec<shroud_proto::ReadResult>>> = vec![None; slots.len()];
        let first = slots.first().map_or(0, |s| s.seq);
        let mut failed = None;
        for _ in 0..slots.len() + usize::from(mail.is_some()) {
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
                    if d.reads.len() != self.shape.path_len as usize {
                        return Err(ClientError::Protocol("reply of the wrong shape"));
                    }
                    out[i as usize] = Some(d.reads);
                }
                ProxyMsg::Failed(_, code) | ProxyMsg::MailFailed(_, code) => failed = Some(code),
                ProxyMsg::MailDone(d) if mail.is_some_and(|m| m.seq == d.seq) => {
                    mail_done = Some(d);
                }
                ProxyMsg::Error(code) => return Err(ClientError::Refused(code)),
                _ => return Err(ClientError::Protocol("unexpected message")),
            }
        }
        if let Some(code) = failed {
            return Err(ClientError::Refused(code));
        }
        let reads = out
            .into_iter()
            .map(|o| o.ok_or(ClientError::Protocol("missing reply")))
            .collect::<Result<Vec<_>, _>>()?;
        if mail.is_some() && mail_done.is_none() {
            return Err(ClientError::Protocol("missing mail reply"));
        }
        Ok((reads, mail_done))
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
