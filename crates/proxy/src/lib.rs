//! The stateless epoch proxy: what makes an idle client look exactly like a busy one.
//!
//! Time is cut into epochs of E ms. Every client owns K slots per epoch and sends exactly K
//! [`Slot`](shroud_proto::proxy::Slot)s, real or dummy, all of one size. At each boundary the
//! proxy sends storage one batch holding every slot that arrived in time, in random order,
//! and returns each slot's reads to its owner. A slot that misses the boundary rides in the
//! next epoch; it never delays the others.
//!
//! # Phasing, and why it is safe
//! A slot carries the write-back of the client's previous access and the read of its next.
//! The proxy puts *every write of the epoch first, then every read*, each group shuffled:
//! - A client's K slots of epoch e write back the K paths its batch of epoch e-1 read, and
//!   read the K paths of its batch of epoch e. Because all writes precede all reads, every read
//!   sees the client's latest write-backs, even where its paths overlap (the root always
//!   does). Stores of different clients are disjoint, so their order does not matter.
//! - A client sends epoch e+1's slots only after epoch e's replies, so its slots never race
//!   each other across epochs.
//! - Storage applies the batch atomically and durably before replying. If the proxy dies (or
//!   storage fails) after applying and before replying, the client resends the same slot: the
//!   write-back rewrites the same bytes to the same buckets (idempotent), and the read reads
//!   the same path again, which reveals only that this was a retry.
//!
//! # Mail
//! When the shape has mail (docs/mail-delivery.md), every client sends its PIR key once per
//! connection (kept at storage under a session id the proxy draws, forgotten when the
//! connection ends), and one [`RoundFrame`](shroud_proto::proxy::RoundFrame) in the first
//! epoch of every round: its outbox write, sealed to storage, and Q PIR queries, all of
//! fixed sizes, real or dummy. At that epoch's boundary the proxy hands the round to its own
//! task (PIR answers take seconds; the epoch clock never waits for them), which sends storage
//! every write of the round in one shuffled request, then every query, shuffled, tagged only
//! with its session; once the whole round is answered, the clock hands every client its
//! answers at the next epoch boundary, right after the slot replies. The proxy cannot tell a real write or query from a dummy, or which
//! rows a query reads.
//!
//! # Stateless
//! Nothing is written to disk; per-client state (the registered grant, the slot count of the
//! open epoch, the reply channel) lives in the connection and dies with it. Slots a dead
//! connection left in the open epoch still go to storage (harmless: the client resends them).
//! Several proxies can serve one storage server.
//!
//! # Security
//! The proxy sees which clients are connected (presence), their capabilities and store ids
//! (it must forward them), and fixed-size slots whose bucket ids are uniformly random paths
//! and whose contents are sealed. It learns nothing of what a client does: every connected
//! client sends exactly K slots of one size per epoch. Storage sees one batch per epoch with
//! (on-time clients x K) slots, shuffled, with no connection identity. A client's first slot
//! after connecting has no write-back (`write = false`), so storage sees one write-back fewer
//! for each client that (re)connected in that epoch: the same presence the proxy sees.

mod connection;
mod epoch;
mod round;
pub mod session;
mod stats;
pub mod transcript;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use shroud_net::transport::{ClientTls, ServerTls};
use shroud_proto::Limits;
use shroud_proto::Shape;
use tokio::net::TcpListener;

pub use stats::{FetchStatsError, Stats, fetch_stats};

/// The longest storage may take over one request of a round (a batch of PIR answers).
const ROUND_TIMEOUT: Duration = Duration::from_secs(120);

/// Proxy settings.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The one shape and schedule every client uses.
    pub shape: Shape,
    /// Clients served at once.
    pub max_connections: usize,
    /// Time allowed for the TLS handshake and the hello.
    pub hello_timeout: Duration,
    /// Time a client may stay silent (or take to send one frame).
    pub idle_timeout: Duration,
    /// Frame limit towards storage.
    pub storage_limits: Limits,
    /// Time storage has to answer a request; past it the connection is dropped and the
    /// epoch's slots fail (their clients resend them).
    pub storage_timeout: Duration,
}

impl Config {
    /// Defaults around `shape`: 1,024 clients, 10 s for the handshake, 30 s idle.
    pub fn new(shape: Shape) -> Self {
        Config {
            shape,
            max_connections: 1024,
            hello_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            storage_limits: Limits::default(),
            storage_timeout: Duration::from_secs(10),
        }
    }
}

/// A slot waiting for its epoch's batch, and where its reply goes.
pub(crate) struct Pending {
    pub slot: shroud_proto::proxy::Slot,
    pub reply: tokio::sync::mpsc::Sender<shroud_proto::proxy::ProxyMsg>,
}

/// A round frame waiting for its round, the session whose key answers its queries, and
/// where its answers go.
pub(crate) struct PendingRound {
    pub frame: shroud_proto::proxy::RoundFrame,
    pub session: [u8; 16],
    pub reply: tokio::sync::mpsc::Sender<shroud_proto::proxy::ProxyMsg>,
}

/// A round handed from the epoch clock to the round task: its closing epoch and its frames.
pub(crate) type ClosedRound = (u64, Vec<PendingRound>);

/// A reply the epoch clock hands out at the next boundary, and where it goes.
pub(crate) type Deferred = (
    tokio::sync::mpsc::Sender<shroud_proto::proxy::ProxyMsg>,
    shroud_proto::proxy::ProxyMsg,
);

/// The open epoch: its number and the slots (and round frames) that arrived in it.
pub(crate) struct Open {
    pub epoch: u64,
    pub slots: Vec<Pending>,
    pub rounds: Vec<PendingRound>,
}

pub(crate) struct Shared {
    pub config: Config,
    pub open: Mutex<Open>,
    pub stats: Stats,
    /// The epoch clock's connection to storage: batches only.
    pub upstream: tokio::sync::Mutex<upstream::Upstream>,
    /// The round task's connection to storage: rounds' writes and queries.
    pub round_upstream: tokio::sync::Mutex<upstream::Upstream>,
    /// Where the epoch clock hands each round to the round task.
    pub round_tx: tokio::sync::mpsc::UnboundedSender<ClosedRound>,
    pub round_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<ClosedRound>>>,
    /// A round's answers, handed out by the epoch clock right after the next epoch's slot
    /// replies: a client's replies then always open with its slot replies, which its send
    /// time is anchored on, and every client gets its answers at the same boundary.
    pub answered: Mutex<Vec<Deferred>>,
    /// Registrations' own connection to storage, off the clock's path: a slow or flooded
    /// registration never delays an epoch.
    pub registrar: tokio::sync::Mutex<upstream::Upstream>,
    /// Stores storage refused in a batch (deleted, or never theirs): their slots are refused
    /// at the door from then on (until the store is registered again), so they stop
    /// reaching storage; storage refuses grants one by one, so they never failed others.
    pub refused: Mutex<std::collections::HashSet<shroud_proto::StoreId>>,
    /// What storage's hello said a new store costs, once any upstream has connected.
    pub difficulty: Arc<Mutex<Option<shroud_proto::Difficulty>>>,
    pub tls: ServerTls,
    pub transcript: Option<transcript::Transcript>,
    pub next_conn: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// The work storage asks for a new store, for the hello: known once any connection to
    /// storage has been made, else learned by the registrar connecting now.
    pub async fn difficulty(
        &self,
    ) -> Result<shroud_proto::Difficulty, shroud_net::conn::ConnError> {
        if let Some(d) = *self.difficulty.lock() {
            return Ok(d);
        }
        self.registrar.lock().await.difficulty().await
    }

    /// Records a frame in the transcript, if there is one.
    pub fn record(&self, conn: u64, inbound: bool, kind: transcript::FrameKind, frame: &[u8]) {
        if let Some(t) = &self.transcript {
            t.record(self.open.lock().epoch, conn, inbound, kind, frame);
        }
    }
}

/// The proxy.
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy in front of the storage servers `storage` (the first, then the next after a
    /// failure: servers sharing one engine are interchangeable), reached as `storage_tls`
    /// says, accepting clients as `tls` says.
    pub fn new(
        config: Config,
        storage: Vec<SocketAddr>,
        storage_tls: ClientTls,
        tls: ServerTls,
    ) -> Self {
        let difficulty = Arc::new(Mutex::new(None));
        let upstream = upstream::Upstream::new(
            storage.clone(),
            storage_tls.clone(),
            config.storage_limits,
            config.storage_timeout,
            difficulty.clone(),
        );
        let registrar = upstream::Upstream::new(
            storage.clone(),
            storage_tls.clone(),
            config.storage_limits,
            config.storage_timeout,
            difficulty.clone(),
        );
        // PIR answers to a whole round take seconds: the round connection waits longer.
        let round_upstream = upstream::Upstream::new(
            storage,
            storage_tls,
            config.storage_limits,
            config.storage_timeout.max(ROUND_TIMEOUT),
            difficulty.clone(),
        );
        let (round_tx, round_rx) = tokio::sync::mpsc::unbounded_channel();
        Proxy {
            shared: Arc::new(Shared {
                config,
                open: Mutex::new(Open {
                    epoch: 0,
                    slots: Vec::new(),
                    rounds: Vec::new(),
                }),
                stats: Stats::default(),
                upstream: tokio::sync::Mutex::new(upstream),
                round_upstream: tokio::sync::Mutex::new(round_upstream),
                round_tx,
                round_rx: Mutex::new(Some(round_rx)),
                answered: Mutex::new(Vec::new()),
                registrar: tokio::sync::Mutex::new(registrar),
                refused: Mutex::new(std::collections::HashSet::new()),
                difficulty,
                tls,
                transcript: None,
                next_conn: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Logs every client frame, in and out, to `transcript` (what the operator could see).
    pub fn with_transcript(mut self, transcript: transcript::Transcript) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.transcript = Some(transcript);
        }
        self
    }

    /// Serves clients on `listener` and runs the epoch clock until `shutdown`.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let shared = self.shared;
        // The clock and every connection live in join sets, so dropping `run` (or the process
        // dying) takes them all with it: nothing outlives the proxy.
        let mut clock = tokio::task::JoinSet::new();
        clock.spawn(epoch::run(shared.clone()));
        if let Some(rx) = shared.round_rx.lock().take() {
            clock.spawn(round::run(shared.clone(), rx));
        }
        let max = shared.config.max_connections;
        let mut tasks =
            shroud_net::accept::accept_loop(&listener, max, shutdown, |stream, peer, permit| {
                connection::serve(shared.clone(), stream, peer, permit)
            })
            .await;
        clock.abort_all();
        tasks.abort_all();
        Ok(())
    }
}
