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

/// Where storage keeps its data, from a TOML file (`shroud storage --config FILE`), for
/// example:
///
/// ```toml
/// backend = "redis://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000"
/// [redis]
/// replicas = 1        # that confirm each write (WAIT) before it is acknowledged
/// wait_ms = 2000      # how long WAIT waits for them
/// retry_ms = 10000    # how long a failed command is retried (longer than a failover)
/// connect_timeout_ms = 1000
/// ```
///
/// Flags given on the command line win over the file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineFile {
    /// `sled` (the default) or a Redis Cluster's `redis://HOST:PORT[,...]`.
    pub backend: Option<String>,
    /// How the Redis Cluster is used.
    pub redis: Option<RedisFile>,
}

/// The `[redis]` table of an [`EngineFile`]; see [`RedisOptions`].
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisFile {
    /// Replicas that confirm each write.
    pub replicas: Option<u32>,
    /// How long `WAIT` waits, ms.
    pub wait_ms: Option<u64>,
    /// How long a failed command is retried, ms.
    pub retry_ms: Option<u64>,
    /// How long a connection attempt may take, ms.
    pub connect_timeout_ms: Option<u64>,
}

/// The engine to open: `None` for sled, or a Redis Cluster's URL and options; from the
/// flags (`backend`, `replicas`) over the file's text (`file`, TOML).
pub fn engine(
    backend: Option<String>,
    replicas: Option<u32>,
    file: Option<&str>,
) -> Result<(Option<String>, RedisOptions)> {
    let file: EngineFile = match file {
        Some(text) => toml::from_str(text).context("the storage engine's settings")?,
        None => EngineFile::default(),
    };
    let redis = file.redis.unwrap_or_default();
    let defaults = RedisOptions::default();
    let ms = |v: Option<u64>, d: std::time::Duration| v.map_or(d, std::time::Duration::from_millis);
    let options = RedisOptions {
        replicas: replicas.or(redis.replicas).unwrap_or(defaults.replicas),
        wait: ms(redis.wait_ms, defaults.wait),
        retry_for: ms(redis.retry_ms, defaults.retry_for),
        connect_timeout: ms(redis.connect_timeout_ms, defaults.connect_timeout),
    };
    let url = match backend.or(file.backend).as_deref() {
        None | Some("sled") => None,
        Some(url) if url.starts_with("redis://") => Some(url.to_string()),
        Some(other) => anyhow::bail!("backend {other}: `sled` or a redis:// URL"),
    };
    Ok((url, options))
}

/// Fetches a server's counters.
pub async fn stats(addr: SocketAddr, tls: &ClientTls) -> Result<StatsReply> {
    let mut conn = Connection::connect(addr, tls, Limits::default()).await?;
    Ok(conn.stats().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_comes_from_flags_over_the_file() {
        let file = "backend = \"redis://127.0.0.1:7000\"\n[redis]\nreplicas = 2\nretry_ms = 500\n";
        let (url, o) = engine(None, None, Some(file)).expect("file");
        assert_eq!(url.as_deref(), Some("redis://127.0.0.1:7000"));
        assert_eq!(
            (o.replicas, o.retry_for),
            (2, std::time::Duration::from_millis(500))
        );
        assert_eq!(o.wait, RedisOptions::default().wait);
        let (url, o) = engine(Some("sled".into()), Some(0), Some(file)).expect("flags win");
        assert_eq!((url, o.replicas), (None, 0));
        assert_eq!(engine(None, None, None).expect("default").0, None);
        assert!(engine(None, None, Some("backend = \"postgres://x\"")).is_err());
        assert!(
            engine(None, None, Some("replica = 1")).is_err(),
            "unknown keys refused"
        );
    }
}
