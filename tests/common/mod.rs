//! Helpers shared by the root integration tests: real servers on 127.0.0.1, port 0.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use shroud_net::transport::ServerTls;
use shroud_storage::{
    Backend, Config, RedisBackend, RedisOptions, Server, SledBackend, Transcript,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The storage engine a test's server runs on.
#[derive(Clone, Debug)]
pub enum Engine {
    /// sled, in the server's temporary directory.
    Sled,
    /// The Redis Cluster of this URL (its data outlives the server).
    Redis(String),
}

impl Engine {
    fn open(&self, dir: &std::path::Path) -> Arc<dyn Backend> {
        match self {
            Engine::Sled => Arc::new(SledBackend::open(&dir.join("db")).expect("open sled")),
            Engine::Redis(url) => Arc::new(
                RedisBackend::connect(url, RedisOptions::default()).expect("connect to redis"),
            ),
        }
    }
}

/// An in-process storage server on a temporary database.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub transcript: Option<PathBuf>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(config: Config, with_transcript: bool) -> Self {
        Self::start_on(&Engine::Sled, config, with_transcript).await
    }

    /// A server on `engine`.
    pub async fn start_on(engine: &Engine, config: Config, with_transcript: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_inner(engine, dir, config, with_transcript, None).await
    }

    /// A server on `dir` whose mailbox routing key is `key`.
    pub async fn start_in_with_routing(
        dir: tempfile::TempDir,
        config: Config,
        key: shroud_proto::routing::RoutingKey,
    ) -> Self {
        Self::start_inner(&Engine::Sled, dir, config, false, Some(key)).await
    }

    pub async fn start_in(dir: tempfile::TempDir, config: Config, with_transcript: bool) -> Self {
        Self::start_inner(&Engine::Sled, dir, config, with_transcript, None).await
    }

    async fn start_inner(
        engine: &Engine,
        dir: tempfile::TempDir,
        config: Config,
        with_transcript: bool,
        routing: Option<shroud_proto::routing::RoutingKey>,
    ) -> Self {
        let backend = engine.open(dir.path());
        let transcript_path = with_transcript.then(|| dir.path().join("transcript.jsonl"));
        let transcript = transcript_path
            .as_ref()
            .map(|p| Transcript::create(p).expect("transcript"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let routing = routing
            .unwrap_or_else(|| shroud_proto::routing::RoutingKey::generate(&mut rand::rng()));
        let server = Server::new(backend, routing, config, ServerTls::Plain, transcript);
        let handle = tokio::spawn(server.run(listener, async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            dir,
            transcript: transcript_path,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// Stops the server (it flushes) and returns its directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
        // Give sled's background threads a moment to release the directory lock.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

#[allow(unused_imports)]
pub use shroud_testkit::stack::Stack;

/// Spawns `cmd` (a `shroud` service given `--listen 127.0.0.1:0`) and waits for the
/// `listening on ADDR` line it prints once ready.
pub fn spawn_listening(mut cmd: std::process::Command) -> (std::process::Child, SocketAddr) {
    use std::io::{BufRead, BufReader};
    // Its errors go to a file, shown if it does not start.
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut child = cmd
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(log.reopen().expect("log file"))
        .spawn()
        .expect("spawn shroud");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_default();
    let Some(addr) = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
    else {
        let _ = child.kill();
        let _ = child.wait();
        let errors = std::fs::read_to_string(log.path()).unwrap_or_default();
        panic!("the service did not start: it said {line:?}; its errors: {errors}");
    };
    (child, addr)
}

/// A child process killed (SIGKILL) and reaped when dropped, so that a failing test leaves
/// no process behind.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A count from the environment variable `name` (how long a long run runs), or `default`.
pub fn env_count<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// TLS toward storage as a proxy has it: verifying the CA, presenting `proxy.pem`.
#[allow(dead_code)]
pub fn proxy_tls(certs: &shroud_net::certs::CertFiles) -> shroud_net::transport::ClientTls {
    let identity =
        shroud_net::transport::Identity::from_pem_files(&certs.proxy_cert, &certs.proxy_key)
            .expect("proxy identity");
    shroud_net::transport::ClientTls::with_ca_file_as(&certs.ca, "localhost", Some(&identity))
        .expect("proxy TLS")
}

/// `shroud storage` on `db`, listening at `listen`, with TLS from `certs`.
pub fn storage_command(
    certs: &shroud_net::certs::CertFiles,
    db: &std::path::Path,
    listen: &str,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_shroud"));
    cmd.args(["storage", "--listen", listen, "--tls-cert"])
        .arg(&certs.cert)
        .arg("--tls-key")
        .arg(&certs.key)
        .arg("--client-ca")
        .arg(&certs.ca)
        .args(["--store-work-bits", "8"])
        .arg("--db")
        .arg(db);
    cmd
}

/// `shroud proxy` in front of `storage`, listening at `listen`, serving `shape`, with TLS
/// from `certs` on both sides.
pub fn proxy_command(
    certs: &shroud_net::certs::CertFiles,
    storage: SocketAddr,
    listen: &str,
    shape: shroud_proto::Shape,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_shroud"));
    cmd.args(["proxy", "--listen", listen, "--storage"])
        .arg(storage.to_string())
        .args(["--epoch-ms", &shape.epoch_ms.to_string()])
        .args(["--slots", &shape.slots_per_epoch.to_string()])
        .args(["--capacity", &shape.capacity.to_string()])
        .args(["--block", &shape.block_size.to_string()])
        .args(["--cached", &shape.cached_levels.to_string()])
        .args(["--round-epochs", &shape.round_epochs.to_string()])
        .args(["--queries", &shape.queries_per_round.to_string()])
        .arg("--tls-cert")
        .arg(&certs.cert)
        .arg("--tls-key")
        .arg(&certs.key)
        .arg("--storage-ca")
        .arg(&certs.ca)
        .arg("--storage-client-cert")
        .arg(&certs.proxy_cert)
        .arg("--storage-client-key")
        .arg(&certs.proxy_key);
    cmd.args(["--oram", if shape.is_ring() { "ring" } else { "path" }]);
    if shape.mail() {
        // Storage's board, which a storage process started by these tests must run too.
        cmd.args(["--board-rows", &shape.board_rows.to_string()])
            .args(["--outbox-rows", &shape.outbox_rows.to_string()]);
    }
    cmd
}

/// An agent's key file in tests: beside its state directory, never inside it.
#[allow(dead_code)]
pub fn key_file(state: &std::path::Path) -> std::path::PathBuf {
    state.with_extension("key")
}

/// The token an agent started on `state` wrote (its default `STATE/agent.token`).
#[allow(dead_code)]
pub fn agent_token(state: &std::path::Path) -> String {
    std::fs::read_to_string(state.join("agent.token"))
        .expect("the agent's token")
        .trim()
        .to_string()
}

/// A connection to an agent's Redis front, authenticated with `token`.
#[allow(dead_code)]
pub async fn agent_connection(
    addr: SocketAddr,
    token: &str,
) -> std::io::Result<tokio::net::TcpStream> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let reply = shroud_client::resp::call(&mut s, &[b"AUTH", token.as_bytes()]).await?;
    if reply != redis_protocol::resp2::types::OwnedFrame::SimpleString(b"OK".to_vec()) {
        return Err(std::io::Error::other(format!("AUTH refused: {reply:?}")));
    }
    Ok(s)
}

/// Has `sender` mail `to` in every round (messages of `chunks` chunks, queued back to back)
/// for `rounds` more rounds.
#[allow(dead_code)]
pub async fn keep_sending(
    sender: &shroud_testkit::stack::MailUser,
    to: shroud_client::mailbox::Address,
    chunks: usize,
    rounds: u64,
) {
    let done = || {
        sender
            .stats()
            .mail_rounds
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let first = done();
    let body = vec![0x5a; chunks * shroud_client::mailbox::chunk::PAYLOAD_LEN];
    let busy = async {
        while done() < first + rounds {
            sender.mail.send(&to, &body).await.expect("send");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), busy)
        .await
        .expect("the sender's epochs");
}

/// The epochs a proxy has run since it started (its counters, over a connection of their
/// own).
#[allow(dead_code)]
pub async fn proxy_epochs(stack: &shroud_testkit::stack::Stack) -> u64 {
    let tls = stack.tls.client().expect("tls");
    shroud_proxy::fetch_stats(stack.proxy, &tls)
        .await
        .expect("proxy stats")
        .epochs
}
