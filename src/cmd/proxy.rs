//! `shroud proxy`: run the epoch proxy, or read its stats.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use shroud_net::transport::{ClientTls, ServerTls};
use shroud_proto::Shape;
use shroud_proto::proxy::ProxyStats;
use shroud_proxy::{Config, Proxy};
use tokio::net::TcpListener;

/// What `shroud proxy` serves.
pub struct ProxyOptions {
    /// The storage servers: the first, then the next after a failure (servers sharing one
    /// Redis Cluster are interchangeable).
    pub storage: Vec<SocketAddr>,
    /// TLS towards storage.
    pub storage_tls: ClientTls,
    /// Where clients connect.
    pub listen: SocketAddr,
    /// TLS towards clients.
    pub tls: ServerTls,
    /// The shape.
    pub shape: Shape,
    /// Clients served at once.
    pub max_connections: usize,
}

/// Binds, logs, serves until `shutdown`. Prints `listening on ADDR` on stdout once ready.
pub async fn serve(
    opts: ProxyOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let s = opts.shape;
    tracing::info!(
        "proxy: listening on {addr}, storage at {}; epochs of {} ms, {} slot(s) per client; {:?} ORAM, paths of {} buckets x {} bytes (N = {}, B = {}, Z = {}, T = {})",
        opts.storage
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        s.epoch_ms,
        s.slots_per_epoch,
        s.mode,
        s.path_len,
        s.bucket_len,
        s.capacity,
        s.block_size,
        s.bucket_slots,
        s.cached_levels
    );
    crate::cmd::announce(addr);
    let config = Config {
        max_connections: opts.max_connections,
        ..Config::new(opts.shape)
    };
    Proxy::new(config, opts.storage, opts.storage_tls, opts.tls)
        .run(listener, shutdown)
        .await?;
    Ok(())
}

/// The counters as `shroud proxy stats` prints them: the batch histogram as its nonzero
/// classes (each class's upper edge in microseconds, and its count), and its quantiles.
pub fn readable(stats: &ProxyStats) -> Result<serde_json::Value> {
    use shroud_proto::histogram::{quantile_us, upper_us};
    let mut v = serde_json::to_value(stats)?;
    let h = &stats.batch_histogram;
    if let Some(o) = v.as_object_mut() {
        let classes: serde_json::Map<String, serde_json::Value> = h
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(|(i, &n)| (format!("<{}", upper_us(i)), n.into()))
            .collect();
        o.insert("batch_histogram".into(), classes.into());
        for (name, q) in [
            ("batch_p50_us", 0.5),
            ("batch_p99_us", 0.99),
            ("batch_p999_us", 0.999),
        ] {
            o.insert(name.into(), quantile_us(h, q).into());
        }
    }
    Ok(v)
}

/// Fetches a running proxy's counters.
pub async fn stats(addr: SocketAddr, tls: &ClientTls) -> Result<ProxyStats> {
    Ok(shroud_proxy::fetch_stats(addr, tls).await?)
}
