//! The accept loop and one connection: hello, limits, timeouts, in-order replies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use shroud_net::frame_codec;
use shroud_net::transport::{BoxIo, ServerTls};
use shroud_proto::{ErrorCode, Hello, Limits, Request, Response, decode, encode};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::codec::Framed;

use crate::backend::Backend;
use crate::batch::Executor;
use crate::commit::GroupCommit;
use crate::stats::Stats;
use crate::transcript::{Entry, Transcript};

/// Server limits.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Connections served at once; more are refused with `TooManyConnections`.
    pub max_connections: usize,
    /// Requests a connection may have queued before the server stops reading from it.
    pub max_in_flight: usize,
    /// Time allowed for the hello.
    pub hello_timeout: Duration,
    /// Time allowed between requests, and to receive one whole frame.
    pub idle_timeout: Duration,
    /// Frame size limit.
    pub limits: Limits,
    /// What a new store costs, and how many there may be.
    pub new_stores: crate::NewStores,
    /// The mail board of the outbox delivery (issue 13): its rows (a power of two from 2^8
    /// to 2^16) and the rows of one outbox.
    pub board: (u64, u32),
    /// Readers' PIR keys kept at once: each is large in memory (at a board of 2^13 rows, a
    /// key of 6.1 MiB on the wire takes about 41 MiB resident, in the NTT form answers
    /// need), so this bounds what readers can make storage hold.
    pub max_readers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: 1024,
            max_in_flight: 4,
            hello_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            limits: Limits::default(),
            new_stores: crate::NewStores::default(),
            board: (1 << 13, 4),
            max_readers: 128,
        }
    }
}

/// Everything connections share.
pub(crate) struct Shared {
    pub backend: Arc<dyn Backend>,
    pub exec: Executor,
    pub commit: Arc<GroupCommit>,
    pub stats: Arc<Stats>,
    pub transcript: Option<Transcript>,
    pub config: Config,
    tls: ServerTls,
    routing: shroud_proto::routing::RoutingKey,
    /// The outbox delivery, if the board's shape is valid and its outboxes load.
    delivery: Option<crate::delivery::Delivery>,
    next_conn: AtomicU64,
}

/// Makes the storage directory if it is missing.
fn create_dir(dir: &std::path::Path) -> Result<(), crate::keys::OpenError> {
    std::fs::create_dir_all(dir).map_err(|source| crate::keys::OpenError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// The storage server.
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    /// The server of the storage directory `dir`: its sled database, and its routing key
    /// (made on first start, see [`crate::keys`]). Blocking: call it off the async runtime.
    pub fn open(
        dir: &std::path::Path,
        config: Config,
        tls: ServerTls,
        transcript: Option<Transcript>,
    ) -> Result<Self, crate::keys::OpenError> {
        create_dir(dir)?;
        let backend = Arc::new(crate::SledBackend::open(dir)?);
        let routing = crate::keys::routing_key(dir)?;
        Ok(Self::new(backend, routing, config, tls, transcript))
    }

    /// The server of the storage directory `dir` (its routing key only) over `backend`,
    /// for an engine that keeps the data elsewhere (a Redis Cluster): servers sharing the
    /// engine share the directory's `routing.key` too (copy it). Blocking.
    pub fn open_with(
        dir: &std::path::Path,
        backend: Arc<dyn Backend>,
        config: Config,
        tls: ServerTls,
        transcript: Option<Transcript>,
    ) -> Result<Self, crate::keys::OpenError> {
        create_dir(dir)?;
        let routing = crate::keys::routing_key(dir)?;
        Ok(Self::new(backend, routing, config, tls, transcript))
    }

    /// A server over `backend`, opening what clients seal to it with `routing`, accepting
    /// connections as `tls` says; `transcript` logs every request.
    pub fn new(
        backend: Arc<dyn Backend>,
        routing: shroud_proto::routing::RoutingKey,
        config: Config,
        tls: ServerTls,
        transcript: Option<Transcript>,
    ) -> Self {
        let commit = Arc::new(GroupCommit::default());
        let stats = Arc::new(Stats::default());
        if let Ok(u) = backend.usage() {
            stats.stores.store(u.stores, Relaxed);
            stats.stored_bytes.store(u.bucket_bytes, Relaxed);
        }
        let board = shroud_pir::Geometry::new(config.board.0)
            .map_err(crate::board::BoardError::from)
            .and_then(|g| crate::board::MailBoard::open(backend.as_ref(), g, config.board.1))
            .map_err(|e| tracing::error!("no mail board (outboxes refused): {e}"))
            .ok()
            .map(|b| crate::delivery::Delivery::new(b, config.board.1, config.max_readers));
        let exec = Executor::new(
            backend.clone(),
            commit.clone(),
            config.limits.max_frame,
            config.new_stores,
        );
        Server {
            shared: Arc::new(Shared {
                backend,
                exec,
                commit,
                stats,
                transcript,
                config,
                tls,
                routing,
                delivery: board,
                next_conn: AtomicU64::new(0),
            }),
        }
    }

    /// What the backend holds (blocking: a sled size walk).
    pub fn usage(&self) -> Result<crate::Usage, crate::BackendError> {
        self.shared.backend.usage()
    }

    /// Storage's routing public key, for clients to pin.
    pub fn routing_public_key(&self) -> [u8; 32] {
        self.shared.routing.public()
    }

    /// Serves `listener` until `shutdown` completes, then flushes.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let shared = self.shared;
        let flusher = tokio::spawn(
            shared
                .commit
                .clone()
                .run_flusher(shared.backend.clone(), shared.stats.clone()),
        );
        let max = shared.config.max_connections;
        let mut tasks =
            shroud_net::accept::accept_loop(&listener, max, shutdown, |stream, peer, permit| {
                let shared = shared.clone();
                async move {
                    // Over the limit: refused before any TLS handshake (whose cost is what a
                    // flood of connections would buy); plain TCP still gets a typed refusal.
                    let Some(permit) = permit else {
                        shared.stats.rejected.fetch_add(1, Relaxed);
                        if !matches!(shared.tls, ServerTls::Plain) {
                            return;
                        }
                        if let Ok(io) = shared.tls.accept(stream, shared.config.hello_timeout).await
                        {
                            let mut framed = Framed::new(io, frame_codec(shared.config.limits));
                            let _ = send(
                                &shared,
                                &mut framed,
                                &Response::Error(ErrorCode::TooManyConnections),
                            )
                            .await;
                        }
                        return;
                    };
                    // The permit was taken in accept order; the handshake runs here.
                    let io = match shared.tls.accept(stream, shared.config.hello_timeout).await {
                        Ok(io) => io,
                        Err(e) => {
                            shared.stats.rejected.fetch_add(1, Relaxed);
                            tracing::debug!("connection from {peer}: handshake failed: {e}");
                            return;
                        }
                    };
                    shared.stats.active_connections.fetch_add(1, Relaxed);
                    connection(&shared, io, peer).await;
                    shared.stats.active_connections.fetch_sub(1, Relaxed);
                    drop(permit);
                }
            })
            .await;
        // Open connections finish on their own (each answers what it has read).
        tasks.detach_all();
        flusher.abort();
        let backend = shared.backend.clone();
        match tokio::task::spawn_blocking(move || backend.flush()).await {
            Ok(Ok(())) => tracing::info!("storage: flushed, exiting"),
            Ok(Err(e)) => tracing::error!("final flush failed: {e}"),
            Err(e) => tracing::error!("final flush task failed: {e}"),
        }
        Ok(())
    }
}

type Conn = Framed<BoxIo, tokio_util::codec::LengthDelimitedCodec>;

async fn send(shared: &Shared, framed: &mut Conn, resp: &Response) -> Result<u64, ()> {
    let bytes = encode(resp, shared.config.limits).map_err(|_| ())?;
    let n = bytes.len() as u64;
    framed.send(Bytes::from(bytes)).await.map_err(|_| ())?;
    shared.stats.bytes_out.fetch_add(n, Relaxed);
    Ok(n)
}

/// What the reader hands the writer: a decoded request and its size, or why to close.
type Item = Result<(Request, u64), ErrorCode>;

fn frame_error(e: std::io::Error) -> ErrorCode {
    // tokio-util reports an oversized length prefix as InvalidData.
    if e.kind() == std::io::ErrorKind::InvalidData {
        ErrorCode::TooLarge
    } else {
        ErrorCode::Malformed
    }
}

async fn connection(shared: &Arc<Shared>, stream: BoxIo, peer: SocketAddr) {
    let conn = shared.next_conn.fetch_add(1, Relaxed);
    let limits = shared.config.limits;
    let mut framed = Framed::new(stream, frame_codec(limits));
    // The hello.
    let first = match timeout(shared.config.hello_timeout, framed.next()).await {
        Err(_) => Err(ErrorCode::Timeout),
        Ok(None) => return,
        Ok(Some(Err(e))) => Err(frame_error(e)),
        Ok(Some(Ok(f))) => {
            shared.stats.bytes_in.fetch_add(f.len() as u64, Relaxed);
            match decode::<Request>(&f, limits) {
                Ok(Request::Hello(h)) => h.check(),
                Ok(_) => Err(ErrorCode::HelloRequired),
                Err(_) => Err(ErrorCode::Malformed),
            }
        }
    };
    if let Err(code) = first {
        reject(shared, &mut framed, code, peer).await;
        return;
    }
    let hello = Response::Hello(Hello::current(), shared.config.new_stores.difficulty);
    if send(shared, &mut framed, &hello).await.is_err() {
        return;
    }
    // Requests: a reader decodes ahead (at most `max_in_flight`), the writer answers in order.
    let (mut sink, mut stream) = framed.split();
    let (tx, mut rx) = mpsc::channel::<Item>(shared.config.max_in_flight.max(1));
    let idle = shared.config.idle_timeout;
    let reader_shared = shared.clone();
    let reader = tokio::spawn(async move {
        loop {
            let item = match timeout(idle, stream.next()).await {
                Err(_) => Err(ErrorCode::Timeout),
                Ok(None) => break,
                Ok(Some(Err(e))) => Err(frame_error(e)),
                Ok(Some(Ok(f))) => {
                    reader_shared
                        .stats
                        .bytes_in
                        .fetch_add(f.len() as u64, Relaxed);
                    decode::<Request>(&f, limits)
                        .map_err(|_| ErrorCode::Malformed)
                        .and_then(|r| {
                            crate::admission::admit(&r, limits.max_frame)?;
                            Ok((r, f.len() as u64))
                        })
                }
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    while let Some(item) = rx.recv().await {
        let (req, size) = match item {
            Ok(x) => x,
            Err(code) => {
                shared.stats.rejected.fetch_add(1, Relaxed);
                tracing::debug!("connection {conn} from {peer}: closing on {code:?}");
                if let Ok(b) = encode(&Response::Error(code), limits) {
                    let _ = sink.send(Bytes::from(b)).await;
                }
                break;
            }
        };
        let mut entry = shared
            .transcript
            .as_ref()
            .map(|_| Entry::of(conn, &req, size));
        let (resp, close) = handle(shared, req, peer).await;
        let Ok(bytes) = encode(&resp, limits) else {
            break;
        };
        if let (Some(e), Some(t)) = (entry.as_mut(), shared.transcript.as_ref()) {
            e.response_bytes = bytes.len() as u64;
            match &resp {
                Response::Error(code) => e.error = Some(*code),
                Response::Batch(reply) => e.refused.clone_from(&reply.refused),
                _ => {}
            }
            t.record(e);
        }
        shared
            .stats
            .bytes_out
            .fetch_add(bytes.len() as u64, Relaxed);
        if sink.send(Bytes::from(bytes)).await.is_err() || close {
            break;
        }
    }
    reader.abort();
}

async fn reject(shared: &Shared, framed: &mut Conn, code: ErrorCode, peer: SocketAddr) {
    shared.stats.rejected.fetch_add(1, Relaxed);
    tracing::debug!("connection from {peer}: refused hello: {code:?}");
    let _ = send(shared, framed, &Response::Error(code)).await;
}

/// Runs one request; returns the response and whether to close the connection.
/// Whether a peer may read the counters: the operator, on the storage host itself. The
/// counters tell when stores appear and how much is stored, which clients and proxies must
/// not learn (issue 12, finding 4).
pub(crate) fn stats_allowed(peer: SocketAddr) -> bool {
    peer.ip().is_loopback()
}

async fn handle(shared: &Arc<Shared>, req: Request, peer: SocketAddr) -> (Response, bool) {
    let s = shared.clone();
    let result = match req {
        Request::Hello(_) => return (Response::Error(ErrorCode::UnexpectedHello), true),
        Request::Stats if !stats_allowed(peer) => {
            return (Response::Error(ErrorCode::Unauthorized), false);
        }
        Request::Stats => {
            // Counters and the engine's file sizes: no scan of what is stored.
            let backend = shared.backend.clone();
            let disk = tokio::task::spawn_blocking(move || backend.disk_bytes().unwrap_or(0))
                .await
                .unwrap_or(0);
            return (Response::Stats(shared.stats.reply(disk)), false);
        }
        Request::CreateStore {
            store,
            capability,
            geometry,
            work,
        } => {
            tokio::task::spawn_blocking(move || {
                s.exec
                    .create(&store, &capability, geometry, work, &s.stats)
                    .map(|o| (Response::Created, o.seq))
            })
            .await
        }
        Request::DeleteStore(grant) => {
            tokio::task::spawn_blocking(move || {
                s.exec
                    .delete(&grant, &s.stats)
                    .map(|o| (Response::Deleted, o.seq))
            })
            .await
        }
        Request::Batch(batch) => {
            tokio::task::spawn_blocking(move || {
                s.exec
                    .batch(&batch, &s.stats)
                    .map(|o| (Response::Batch(o.value), o.seq))
            })
            .await
        }
        Request::RoutingKey => return (Response::RoutingKey(shared.routing.public()), false),
        Request::Outbox(_)
        | Request::ReaderKey { .. }
        | Request::ForgetReader(_)
        | Request::Round(_)
        | Request::Answer(_) => {
            if shared.delivery.is_none() {
                return (Response::Error(ErrorCode::Internal), false);
            }
            let done = tokio::task::spawn_blocking(move || delivery(&s, req)).await;
            return match done {
                Ok(Ok(resp)) => (resp, false),
                Ok(Err(code)) => (Response::Error(code), matches!(code, ErrorCode::Internal)),
                Err(_) => (Response::Error(ErrorCode::Internal), true),
            };
        }
    };
    match result {
        Ok(Ok((resp, seq))) => match shared.commit.durable(seq).await {
            Ok(()) => (resp, false),
            Err(_) => (Response::Error(ErrorCode::Internal), true),
        },
        Ok(Err(code)) => {
            let close = matches!(code, ErrorCode::Internal);
            (Response::Error(code), close)
        }
        Err(_) => (Response::Error(ErrorCode::Internal), true),
    }
}

/// Serves one request of the outbox delivery (blocking: PIR work and sealed pieces).
fn delivery(s: &Shared, req: Request) -> Result<Response, ErrorCode> {
    use shroud_proto::board::PirBytes;
    use shroud_proto::sealed::Sealed;
    let d = s.delivery.as_ref().ok_or(ErrorCode::Internal)?;
    match req {
        Request::Outbox(sealed) => Ok(Response::Outbox(Sealed(d.outbox(
            s.backend.as_ref(),
            &s.routing,
            s.config.new_stores.difficulty,
            &sealed.0,
        )))),
        Request::ReaderKey { session, key } => d.keep_key(session, &key.0).map(|()| Response::Kept),
        Request::ForgetReader(session) => {
            d.drop_key(&session);
            Ok(Response::Forgotten)
        }
        Request::Round(writes) => {
            let writes: Vec<Vec<u8>> = writes.into_iter().map(|w| w.0).collect();
            d.write_round(s.backend.as_ref(), &s.routing, &writes)
                .map(|st| Response::Round(st.into_iter().map(Sealed).collect()))
                .map_err(|e| {
                    tracing::error!("closing a round: {e}");
                    ErrorCode::Internal
                })
        }
        Request::Answer(queries) => {
            let queries: Vec<([u8; 16], Vec<u8>)> = queries
                .into_iter()
                .map(|q| (q.session, q.query.0))
                .collect();
            d.answer(&queries)
                .map(|a| Response::Answers(a.into_iter().map(PirBytes).collect()))
        }
        _ => Err(ErrorCode::Internal),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_storage_host_reads_the_counters() {
        let at = |a: &str| super::stats_allowed(a.parse().expect("address"));
        assert!(at("127.0.0.1:9000"));
        assert!(at("[::1]:9000"));
        assert!(!at("10.1.2.3:9000"));
        assert!(!at("192.168.0.7:7300"));
    }
}
