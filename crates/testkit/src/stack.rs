//! An embedded deployment in one process: a TLS storage server on a temporary sled
//! database, and a TLS proxy in front of it, on 127.0.0.1 with ports picked by the OS. Used
//! by the tests, `shroud bench e2e` and `shroud demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use shroud_net::transport::{ClientTls, Identity, ServerTls};
use shroud_proto::Shape;
use shroud_storage::{Backend, Config, Server, SledBackend, Transcript};
use tokio::task::JoinHandle;

use shroud_net::certs::{CertFiles, generate, local_names};

/// TLS material from `shroud certs`, in a temporary directory.
pub struct Tls {
    /// Where the files are (deleted on drop).
    pub dir: tempfile::TempDir,
    /// The CA, certificate and key.
    pub files: CertFiles,
}

impl Tls {
    /// A fresh development CA and server certificate.
    pub fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let files = generate(dir.path(), &local_names())?;
        Ok(Tls { dir, files })
    }

    /// The servers' side.
    pub fn server(&self) -> Result<ServerTls> {
        Ok(ServerTls::from_pem_files(
            &self.files.cert,
            &self.files.key,
        )?)
    }

    /// Storage's side: TLS that admits only clients with a certificate from the CA.
    pub fn storage_server(&self) -> Result<ServerTls> {
        Ok(ServerTls::mutual(
            &self.files.cert,
            &self.files.key,
            &self.files.ca,
        )?)
    }

    /// The clients' side, verifying against the CA.
    pub fn client(&self) -> Result<ClientTls> {
        Ok(ClientTls::with_ca_file(&self.files.ca, "localhost")?)
    }

    /// A proxy's side toward storage: verifying against the CA, presenting `proxy.pem`.
    pub fn proxy_client(&self) -> Result<ClientTls> {
        let identity = Identity::from_pem_files(&self.files.proxy_cert, &self.files.proxy_key)?;
        Ok(ClientTls::with_ca_file_as(
            &self.files.ca,
            "localhost",
            Some(&identity),
        )?)
    }
}

/// The name every stack's directory starts with (see [`stack_dir`]).
const DIR_PREFIX: &str = "shroud-stack-";

/// A fresh directory for a stack's database and transcripts, holding this process's id.
///
/// A stack's drop deletes its directory only once storage has closed the database, on a
/// thread of its own (sled waits forever if its files go first), and a process that exits
/// meanwhile (a test binary, after its last test) cuts that thread short: the directories of
/// finished processes piled up, tens of gigabytes on a machine that runs the suite often.
/// So the first call in a process also deletes the stack directories whose process is gone.
pub fn stack_dir() -> Result<tempfile::TempDir> {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| sweep(&std::env::temp_dir()));
    let dir = tempfile::Builder::new().prefix(DIR_PREFIX).tempdir()?;
    std::fs::write(dir.path().join("pid"), std::process::id().to_string())?;
    Ok(dir)
}

/// Deletes the stack directories in `tmp` whose `pid` names a process that no longer
/// runs. One without a `pid` file (being made now) is left alone, and so is every one where
/// processes cannot be looked up (only Linux's `/proc` is read).
fn sweep(tmp: &std::path::Path) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let path = entry.path();
        let pid = std::fs::read_to_string(path.join("pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// A TLS storage server and a TLS proxy in front of it, in this process.
pub struct Stack {
    /// The certificates both servers use.
    pub tls: Tls,
    /// Storage's address.
    pub storage: SocketAddr,
    /// The proxy's address.
    pub proxy: SocketAddr,
    /// Storage's transcript file.
    pub transcript: PathBuf,
    /// The proxy's transcript file (every client frame, in and out).
    pub proxy_transcript: PathBuf,
    /// The proxy's shape.
    pub shape: Shape,
    /// The database directory (deleted on drop).
    pub dir: tempfile::TempDir,
    /// Storage's mailbox routing public key (clients pin it).
    pub storage_key: [u8; 32],
    /// Its secret half: storage's own, which tests playing storage and the proxy together
    /// use to open what storage opens (the outbox writes).
    pub storage_secret: [u8; 32],
    /// How long the proxy waits for storage (applies from the next [`Stack::start_proxy`]).
    pub storage_timeout: std::time::Duration,
    /// Whether the proxy's transcript keeps every frame's bytes (applies from the next
    /// [`Stack::start_proxy`]).
    pub proxy_frames: bool,
    storage_task: JoinHandle<std::io::Result<()>>,
    proxy_task: Option<JoinHandle<std::io::Result<()>>>,
    /// The proxy's port while it is killed: bound, not listening (connections are refused),
    /// so that no other socket of the machine takes it before the proxy starts again.
    proxy_port: Option<tokio::net::TcpSocket>,
    /// Storage's backend, to know when it is closed.
    backend: std::sync::Weak<dyn Backend>,
}

impl Stack {
    /// Starts storage (with a transcript) and the proxy with this shape.
    pub async fn start(shape: Shape) -> Result<Self> {
        let dir = stack_dir()?;
        let backend = Arc::new(SledBackend::open(&dir.path().join("db"))?);
        Self::start_with(shape, backend, crate::fixtures::storage_config(), dir).await
    }

    /// [`Stack::start`] with a proxy whose transcript keeps every frame's bytes from the
    /// first ([`Stack::proxy_frames`]).
    pub async fn start_keeping_frames(shape: Shape) -> Result<Self> {
        let dir = stack_dir()?;
        let backend = Arc::new(SledBackend::open(&dir.path().join("db"))?);
        let config = crate::fixtures::storage_config();
        Self::start_inner(shape, backend, config, dir, true).await
    }

    /// [`Stack::start`] over any backend (a test's hostile one, say) and storage settings;
    /// `dir` holds the transcript and is deleted with the stack (make it with [`stack_dir`],
    /// so that a process's exit cannot leave it behind for good). Storage runs the mail board
    /// the shape names.
    pub async fn start_with(
        shape: Shape,
        backend: Arc<dyn Backend>,
        config: Config,
        dir: tempfile::TempDir,
    ) -> Result<Self> {
        Self::start_inner(shape, backend, config, dir, false).await
    }

    async fn start_inner(
        shape: Shape,
        backend: Arc<dyn Backend>,
        mut config: Config,
        dir: tempfile::TempDir,
        proxy_frames: bool,
    ) -> Result<Self> {
        if shape.mail() {
            config.board = (shape.board_rows, shape.outbox_rows);
        }
        let tls = Tls::new()?;
        let transcript = dir.path().join("transcript.jsonl");
        let t = Transcript::create(&transcript)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let storage = listener.local_addr()?;
        let routing = shroud_proto::routing::RoutingKey::generate(&mut rand::rng());
        let storage_secret = routing.secret();
        let weak = Arc::downgrade(&backend);
        let server = Server::new(backend, routing, config, tls.storage_server()?, Some(t));
        let storage_key = server.routing_public_key();
        let storage_task = tokio::spawn(server.run(listener, std::future::pending()));
        let mut stack = Stack {
            tls,
            storage,
            proxy: SocketAddr::from(([127, 0, 0, 1], 0)),
            proxy_transcript: dir.path().join("proxy.jsonl"),
            transcript,
            shape,
            dir,
            storage_key,
            storage_secret,
            storage_timeout: std::time::Duration::from_secs(10),
            proxy_frames,
            storage_task,
            proxy_task: None,
            proxy_port: None,
            backend: weak,
        };
        stack.start_proxy().await?;
        Ok(stack)
    }

    /// Starts the proxy (again, on the same address after [`Stack::kill_proxy`]).
    pub async fn start_proxy(&mut self) -> Result<()> {
        let socket = match self.proxy_port.take() {
            Some(socket) => socket,
            None => reusable_port(self.proxy)?,
        };
        let listener = socket.listen(1024)?;
        self.proxy = listener.local_addr()?;
        let config = shroud_proxy::Config {
            storage_timeout: self.storage_timeout,
            ..shroud_proxy::Config::new(self.shape)
        };
        let mut transcript = shroud_proxy::transcript::Transcript::append(&self.proxy_transcript)?;
        if self.proxy_frames {
            transcript = transcript.with_frames();
        }
        let proxy = shroud_proxy::Proxy::new(
            config,
            vec![self.storage],
            self.tls.proxy_client()?,
            self.tls.server()?,
        )
        .with_transcript(transcript);
        self.proxy_task = Some(tokio::spawn(proxy.run(listener, std::future::pending())));
        Ok(())
    }

    /// Starts one more, independent proxy in front of the same storage server; it stops
    /// when the handle is aborted or dropped with the runtime.
    pub async fn another_proxy(&self) -> Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
        self.another_proxy_to(vec![self.storage]).await
    }

    /// Starts one more, independent proxy in front of the storage servers `storage` (the
    /// first, then the next after a failure).
    pub async fn another_proxy_to(
        &self,
        storage: Vec<SocketAddr>,
    ) -> Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let config = shroud_proxy::Config::new(self.shape);
        let proxy = shroud_proxy::Proxy::new(
            config,
            storage,
            self.tls.proxy_client()?,
            self.tls.server()?,
        );
        Ok((
            addr,
            tokio::spawn(proxy.run(listener, std::future::pending())),
        ))
    }

    /// Starts a second storage server over `backend`, an engine whose data the first one
    /// shares (a Redis Cluster): this stack's routing key, TLS and mail board. It stops when
    /// the handle is aborted or dropped with the runtime.
    pub async fn another_storage(
        &self,
        backend: Arc<dyn Backend>,
        mut config: Config,
    ) -> Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
        if self.shape.mail() {
            config.board = (self.shape.board_rows, self.shape.outbox_rows);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let routing = shroud_proto::routing::RoutingKey::from_secret(&self.storage_secret)?;
        let server = Server::new(backend, routing, config, self.tls.storage_server()?, None);
        Ok((
            addr,
            tokio::spawn(server.run(listener, std::future::pending())),
        ))
    }

    /// How a client reaches the proxy at `proxy` (another of this stack's).
    pub fn client_config_for(&self, proxy: SocketAddr) -> Result<shroud_client::ClientConfig> {
        Ok(shroud_client::ClientConfig::new(proxy, self.tls.client()?)
            .with_storage_key(self.storage_key))
    }

    /// Kills the proxy: its task and every connection it had.
    pub async fn kill_proxy(&mut self) {
        // The port is held before the listener closes: a port picked by the OS is free for
        // anyone's next connection the moment it closes (a CI run lost it so, once).
        self.proxy_port = reusable_port(self.proxy).ok();
        if let Some(t) = self.proxy_task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// How a client reaches this proxy.
    pub fn client_config(&self) -> Result<shroud_client::ClientConfig> {
        self.client_config_for(self.proxy)
    }
}

/// A socket bound to `addr` that another such socket may bind while it is listening
/// (`SO_REUSEPORT`, same user): how a port passes from a proxy to the next.
fn reusable_port(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// An in-process mailbox user of a [`Stack`]: a client with a fresh account and its own
/// store, a KV store and a mailbox, all in memory.
pub struct MailUser {
    /// The KV store.
    pub kv: shroud_client::Kv,
    /// The mailbox.
    pub mail: shroud_client::mailbox::Mailbox,
    /// The scheduler.
    pub task: shroud_client::schedule::SchedulerTask,
    /// The account's address.
    pub address: shroud_client::mailbox::Address,
}

impl MailUser {
    /// Starts a client with `config` (which names the account), a KV store and a mailbox
    /// over it, on the current runtime.
    async fn start(
        config: shroud_client::ClientConfig,
        key: shroud_oram::Key,
        grant: shroud_proto::Grant,
    ) -> Result<MailUser> {
        let (client, task) = shroud_client::Client::start(config, key, grant).await?;
        let kv = shroud_client::Kv::new(client, shroud_client::kv::DEFAULT_MAX_VALUE);
        let mail = shroud_client::mailbox::Mailbox::open(kv.clone(), None).await?;
        // Makes the account's outbox at storage, if it has none yet.
        let address = mail.init().await?;
        Ok(MailUser {
            kv,
            mail,
            task,
            address,
        })
    }

    /// Stops the client, storing its last write-back.
    pub async fn stop(self) {
        drop(self.mail);
        drop(self.kv);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), self.task).await;
    }

    /// The client's counters.
    pub fn stats(&self) -> &shroud_client::ClientStats {
        self.kv.client().stats()
    }
}

/// Makes every named user a contact of every other, under the names given.
pub async fn befriend(users: &[(&str, &MailUser)]) -> Result<()> {
    for (_, u) in users {
        for (name, other) in users {
            if other.address != u.address {
                u.mail.add_contact(name, other.address).await?;
            }
        }
    }
    Ok(())
}

impl Stack {
    /// Starts a mailbox user with `account` (this stack's proxy must run a mailbox).
    pub async fn mail_user_with<R: rand::CryptoRng>(
        &self,
        account: shroud_client::mailbox::Account,
        rng: &mut R,
    ) -> Result<MailUser> {
        let config = self.client_config()?.with_account(account);
        MailUser::start(
            config,
            shroud_oram::Key::generate(rng),
            shroud_client::random_grant(rng),
        )
        .await
    }

    /// Starts a mailbox user with a fresh account whose client runs on `runtime` (its own
    /// threads, as a client on its own machine has), not on the caller's.
    pub async fn mail_user_on<R: rand::CryptoRng>(
        &self,
        runtime: &tokio::runtime::Handle,
        rng: &mut R,
    ) -> Result<MailUser> {
        let config = self
            .client_config()?
            .with_account(shroud_client::mailbox::Account::generate(rng));
        let (key, grant) = (
            shroud_oram::Key::generate(rng),
            shroud_client::random_grant(rng),
        );
        runtime.spawn(MailUser::start(config, key, grant)).await?
    }

    /// Starts a mailbox user with a fresh account that reaches the proxy through `via` (a
    /// test's relay in front of it).
    pub async fn mail_user_through<R: rand::CryptoRng>(
        &self,
        via: SocketAddr,
        rng: &mut R,
    ) -> Result<MailUser> {
        let config = shroud_client::ClientConfig::new(via, self.tls.client()?)
            .with_storage_key(self.storage_key);
        self.mail_user_configured(config, rng).await
    }

    /// Starts a mailbox user with a fresh account and `config` (a relay, a backoff).
    pub async fn mail_user_configured<R: rand::CryptoRng>(
        &self,
        config: shroud_client::ClientConfig,
        rng: &mut R,
    ) -> Result<MailUser> {
        let config = config.with_account(shroud_client::mailbox::Account::generate(rng));
        MailUser::start(
            config,
            shroud_oram::Key::generate(rng),
            shroud_client::random_grant(rng),
        )
        .await
    }

    /// Starts a mailbox user with a fresh account.
    pub async fn mail_user<R: rand::CryptoRng>(&self, rng: &mut R) -> Result<MailUser> {
        let account = shroud_client::mailbox::Account::generate(rng);
        self.mail_user_with(account, rng).await
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.storage_task.abort();
        if let Some(t) = self.proxy_task.take() {
            t.abort();
        }
        // Storage's connections may still hold the database for a moment (a request in
        // flight on a blocking thread): sled flushes it when the last handle goes, and
        // waits forever if its files are gone by then (seen: `bench e2e` hung at exit). So
        // the directory is deleted once the backend is closed, or after a minute.
        if self.backend.strong_count() > 0 {
            self.dir.disable_cleanup(true);
            let (backend, dir) = (self.backend.clone(), self.dir.path().to_owned());
            std::thread::spawn(move || {
                let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while backend.strong_count() > 0 && std::time::Instant::now() < until {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                let _ = std::fs::remove_dir_all(dir);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The directories of processes that are gone are deleted; this process's, and one
    /// without a process id yet, are kept.
    #[test]
    fn the_sweep_deletes_only_what_dead_processes_left() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut child = std::process::Command::new("true").spawn().expect("true");
        let dead = child.id();
        child.wait().expect("wait");
        let make = |name: &str, pid: Option<u32>| {
            let d = tmp.path().join(format!("{DIR_PREFIX}{name}"));
            std::fs::create_dir_all(d.join("db")).expect("dir");
            if let Some(pid) = pid {
                std::fs::write(d.join("pid"), pid.to_string()).expect("pid");
            }
            d
        };
        let gone = make("gone", Some(dead));
        let mine = make("mine", Some(std::process::id()));
        let young = make("young", None);
        let other = tmp.path().join("other-dir");
        std::fs::create_dir_all(&other).expect("other");
        sweep(tmp.path());
        assert_eq!(gone.exists(), !cfg!(target_os = "linux"));
        assert!(mine.exists() && young.exists() && other.exists());
    }
}
