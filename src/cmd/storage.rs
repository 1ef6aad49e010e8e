//! `shroud storage`: run the storage server, or read a server's stats.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use shroud_client::remote::Connection;
use shroud_storage::{Backend, Config, Server, SledBackend, Transcript};
use shroud_wire::transport::{ClientTls, ServerTls};
use shroud_wire::{Limits, StatsReply};
use tokio::net::TcpListener;

/// What `shroud storage` serves.
pub struct ServeOptions {
    /// The database directory.
    pub db: PathBuf,
    /// Where to listen (port 0 picks one).
    pub listen: SocketAddr,
    /// Where to write the operator's transcript, if anywhere.
    pub transcript: Option<PathBuf>,
    /// Limits and timeouts.
    pub config: Config,
    /// TLS, or plain TCP.
    pub tls: ServerTls,
}

/// Opens the database, binds, logs where the data is and how much, and serves until
/// `shutdown`; then flushes. Prints `listening on ADDR` on stdout once ready.
pub async fn serve(
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    std::fs::create_dir_all(&opts.db).with_context(|| format!("creating {}", opts.db.display()))?;
    let db = opts.db.clone();
    let backend = tokio::task::spawn_blocking(move || SledBackend::open(&db)).await??;
    let backend: Arc<dyn Backend> = Arc::new(backend);
    let b = backend.clone();
    let usage = tokio::task::spawn_blocking(move || b.usage()).await??;
    let transcript = match &opts.transcript {
        Some(p) => Some(
            Transcript::create(p)
                .with_context(|| format!("creating transcript {}", p.display()))?,
        ),
        None => None,
    };
    let routing = load_routing_key(&opts.db)?;
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        "storage: data in {}: {} stores, {} buckets, {} bytes of buckets, {} bytes on disk",
        opts.db.display(),
        usage.stores,
        usage.buckets,
        usage.bucket_bytes,
        usage.disk_bytes
    );
    if let Some(t) = &opts.transcript {
        tracing::info!("storage: transcript in {}", t.display());
    }
    let transport = if matches!(opts.tls, ServerTls::Plain) {
        "PLAIN TCP"
    } else {
        "TLS"
    };
    tracing::info!("storage: listening on {addr} ({transport})");
    println!("listening on {addr}");
    let public: String = routing
        .public()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    tracing::info!("storage: mailbox routing key {public} (clients pin this)");
    // The public half beside the private one, for operators to hand to clients.
    let pub_path = opts.db.join("routing.pub");
    if let Err(e) = std::fs::write(&pub_path, format!("{public}\n")) {
        tracing::warn!("cannot write {}: {e}", pub_path.display());
    }
    Server::new(backend, opts.config, opts.tls, transcript)
        .with_routing_key(routing)
        .run(listener, shutdown)
        .await?;
    Ok(())
}

/// The mailbox routing key in `DIR/routing.key`, made (mode 0600) on first start.
pub fn load_routing_key(dir: &std::path::Path) -> Result<shroud_wire::routing::RoutingKey> {
    use shroud_wire::routing::RoutingKey;
    let path = dir.join("routing.key");
    if path.exists() {
        let bytes = zeroize::Zeroizing::new(std::fs::read(&path)?);
        return RoutingKey::from_secret(&bytes)
            .with_context(|| format!("bad routing key in {}", path.display()));
    }
    let key = RoutingKey::generate(&mut rand::rng());
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(&zeroize::Zeroizing::new(key.secret())[..])?;
    f.sync_all()?;
    Ok(key)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signals() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("signal received: shutting down");
}

/// Fetches a server's counters.
pub async fn stats(addr: SocketAddr, tls: &ClientTls) -> Result<StatsReply> {
    let mut conn = Connection::connect(addr, tls, Limits::default()).await?;
    Ok(conn.stats().await?)
}
