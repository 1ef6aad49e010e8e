//! `shroud storage`: run the storage server, or read a server's stats.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use shroud_net::conn::Connection;
use shroud_net::transport::{ClientTls, ServerTls};
use shroud_proto::{Limits, StatsReply};
use shroud_storage::{Config, RedisBackend, RedisOptions, Server, Transcript, keys};
use tokio::net::TcpListener;

/// What `shroud storage` serves.
pub struct ServeOptions {
    /// The database directory (with a Redis Cluster engine: the routing key only).
    pub db: PathBuf,
    /// The engine: `None` for sled in `db`, or a Redis Cluster's `redis://` URL.
    pub backend: Option<String>,
    /// How the Redis Cluster engine is used.
    pub redis: RedisOptions,
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
/// `shutdown` (which also cuts a long open short); then flushes. Prints `listening on ADDR`
/// on stdout once ready.
pub async fn serve(
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(shutdown);
    let transcript = match &opts.transcript {
        Some(p) => Some(
            Transcript::create(p)
                .with_context(|| format!("creating transcript {}", p.display()))?,
        ),
        None => None,
    };
    let plain = matches!(opts.tls, ServerTls::Plain);
    let db = opts.db.clone();
    let place = match &opts.backend {
        None => format!("in {}", opts.db.display()),
        Some(url) => format!("in the Redis Cluster {url}"),
    };
    let opening = tokio::task::spawn_blocking(move || -> Result<_> {
        let server = match &opts.backend {
            None => Server::open(&db, opts.config, opts.tls, transcript)
                .with_context(|| format!("opening the storage directory {}", db.display()))?,
            Some(url) => {
                let backend = RedisBackend::connect(url, opts.redis)
                    .with_context(|| format!("connecting to the Redis Cluster {url}"))?;
                Server::open_with(&db, Arc::new(backend), opts.config, opts.tls, transcript)
                    .with_context(|| format!("opening the storage directory {}", db.display()))?
            }
        };
        let usage = server.usage()?;
        Ok((server, usage))
    });
    let (server, usage) = tokio::select! {
        r = opening => r??,
        () = &mut shutdown => return Ok(()),
    };
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        "storage: data {place}: {} stores, {} buckets, {} bytes of buckets, {} bytes on disk",
        usage.stores,
        usage.buckets,
        usage.bucket_bytes,
        usage.disk_bytes
    );
    if let Some(t) = &opts.transcript {
        tracing::info!("storage: transcript in {}", t.display());
    }
    let transport = if plain { "PLAIN TCP" } else { "TLS" };
    tracing::info!("storage: listening on {addr} ({transport})");
    crate::cmd::announce(addr);
    tracing::info!(
        "storage: mailbox routing key {} (clients pin this; also in {})",
        keys::hex(&server.routing_public_key()),
        opts.db.join(keys::ROUTING_PUB_FILE).display()
    );
    server.run(listener, shutdown).await?;
    Ok(())
}

/// Fetches a server's counters.
pub async fn stats(addr: SocketAddr, tls: &ClientTls) -> Result<StatsReply> {
    let mut conn = Connection::connect(addr, tls, Limits::default()).await?;
    Ok(conn.stats().await?)
}
