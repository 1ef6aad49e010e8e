//! Helpers shared by the root integration tests: real servers on 127.0.0.1, port 0.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use shroud_storage::{Config, Server, SledBackend, Transcript};
use shroud_wire::transport::ServerTls;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, config, with_transcript).await
    }

    pub async fn start_in(dir: tempfile::TempDir, config: Config, with_transcript: bool) -> Self {
        let backend = Arc::new(SledBackend::open(&dir.path().join("db")).expect("open sled"));
        let transcript_path = with_transcript.then(|| dir.path().join("transcript.jsonl"));
        let transcript = transcript_path
            .as_ref()
            .map(|p| Transcript::create(p).expect("transcript"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let server = Server::new(backend, config, ServerTls::Plain, transcript);
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

/// TLS material for a test, from `shroud certs`.
pub struct Tls {
    pub dir: tempfile::TempDir,
    pub files: shroud::cmd::certs::CertFiles,
}

impl Tls {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = shroud::cmd::certs::generate(dir.path(), &shroud::cmd::certs::local_names())
            .expect("certs");
        Tls { dir, files }
    }

    pub fn server(&self) -> shroud_wire::transport::ServerTls {
        ServerTls::from_pem_files(&self.files.cert, &self.files.key).expect("server TLS")
    }

    pub fn client(&self) -> shroud_wire::transport::ClientTls {
        shroud_wire::transport::ClientTls::with_ca_file(&self.files.ca, "localhost")
            .expect("client TLS")
    }
}

/// A TLS storage server and a TLS proxy in front of it, in process.
pub struct Stack {
    pub tls: Tls,
    pub storage: SocketAddr,
    pub proxy: SocketAddr,
    pub transcript: PathBuf,
    pub shape: shroud_wire::proxy::SlotShape,
    pub dir: tempfile::TempDir,
    storage_task: JoinHandle<std::io::Result<()>>,
    proxy_task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Stack {
    pub async fn start(shape: shroud::cmd::proxy::ShapeOptions) -> Self {
        let tls = Tls::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Arc::new(SledBackend::open(&dir.path().join("db")).expect("open sled"));
        let transcript = dir.path().join("transcript.jsonl");
        let t = Transcript::create(&transcript).expect("transcript");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let storage = listener.local_addr().expect("addr");
        let storage_task = tokio::spawn(
            Server::new(backend, Config::default(), tls.server(), Some(t))
                .run(listener, std::future::pending()),
        );
        let shape = shroud::cmd::proxy::shape(shape).expect("shape");
        let mut stack = Stack {
            tls,
            storage,
            proxy: "127.0.0.1:0".parse().expect("addr"),
            transcript,
            shape,
            dir,
            storage_task,
            proxy_task: None,
        };
        stack.start_proxy().await;
        stack
    }

    /// Starts the proxy (again, on the same address after a kill).
    pub async fn start_proxy(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.proxy)
            .await
            .expect("bind proxy");
        self.proxy = listener.local_addr().expect("addr");
        let config = shroud_proxy::Config::new(self.shape);
        let proxy =
            shroud_proxy::Proxy::new(config, self.storage, self.tls.client(), self.tls.server());
        self.proxy_task = Some(tokio::spawn(proxy.run(listener, std::future::pending())));
    }

    /// Kills the proxy: its task and every connection it had.
    pub async fn kill_proxy(&mut self) {
        if let Some(t) = self.proxy_task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    pub fn client_config(&self) -> shroud_client::ClientConfig {
        shroud_client::ClientConfig::new(self.proxy, self.tls.client())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.storage_task.abort();
        if let Some(t) = self.proxy_task.take() {
            t.abort();
        }
    }
}
