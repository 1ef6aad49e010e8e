//! `shroud proxy`: run the epoch proxy, or read its stats.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use shroud_oram::TreeGeometry;
use shroud_proxy::{Config, Proxy};
use shroud_wire::proxy::{ClientMsg, ProxyMsg, ProxyStats, SlotShape};
use shroud_wire::transport::{ClientTls, ServerTls};
use shroud_wire::{Hello, Limits, decode, encode, frame_codec};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

/// The store shape and schedule a proxy announces.
#[derive(Clone, Copy, Debug)]
pub struct ShapeOptions {
    /// Blocks per store.
    pub capacity: u64,
    /// Bytes per block.
    pub block: u32,
    /// Slots per bucket.
    pub z: u32,
    /// Cached top levels.
    pub cached: u32,
    /// Slots per client per epoch.
    pub slots: u32,
    /// Epoch length, ms.
    pub epoch_ms: u32,
    /// Mailbox envelopes every client deposits per epoch (D; 0 with `drains` 0: no mailbox).
    pub deposits: u32,
    /// Mailbox envelopes every client drains per epoch (M).
    pub drains: u32,
}

impl Default for ShapeOptions {
    /// The defaults the README's cost table argues for: N = 2^14 blocks of 1 KiB (16 MiB per
    /// user), Z = 4, 8 cached levels (about 1 MiB of client memory), one slot every 2 s:
    /// about 1.1 GB a day each way, and a few seconds per operation.
    fn default() -> Self {
        ShapeOptions {
            capacity: 1 << 14,
            block: 1024,
            z: 4,
            cached: 8,
            slots: 1,
            epoch_ms: 2000,
            deposits: 1,
            drains: 2,
        }
    }
}

/// The slot shape of these options, from the engine's own geometry.
pub fn shape(o: ShapeOptions) -> Result<SlotShape> {
    if o.slots == 0 || o.epoch_ms == 0 {
        bail!("slots and epoch length must be positive");
    }
    let g = TreeGeometry::for_blocks(o.capacity, o.z, o.block, o.cached);
    if g.cached_levels != o.cached {
        bail!(
            "{} cached levels is more than a tree of {} blocks has",
            o.cached,
            o.capacity
        );
    }
    Ok(SlotShape {
        capacity: o.capacity,
        block_size: o.block,
        bucket_slots: o.z,
        cached_levels: o.cached,
        path_len: g.fetched_levels() as u32,
        bucket_len: g.ciphertext_len() as u32,
        buckets: g.bucket_count(),
        slots_per_epoch: o.slots,
        epoch_ms: o.epoch_ms,
        deposits_per_epoch: o.deposits,
        drains_per_epoch: o.drains,
        envelope_len: if o.deposits > 0 || o.drains > 0 {
            shroud_client::mailbox::envelope::ENVELOPE_LEN as u32
        } else {
            0
        },
    })
}

/// What `shroud proxy` serves.
pub struct ProxyOptions {
    /// The storage server.
    pub storage: SocketAddr,
    /// TLS towards storage.
    pub storage_tls: ClientTls,
    /// Where clients connect.
    pub listen: SocketAddr,
    /// TLS towards clients.
    pub tls: ServerTls,
    /// The shape.
    pub shape: SlotShape,
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
        "proxy: listening on {addr}, storage at {}; epochs of {} ms, {} slot(s) per client; slot = {} buckets x {} bytes (N = {}, B = {}, Z = {}, T = {})",
        opts.storage,
        s.epoch_ms,
        s.slots_per_epoch,
        s.path_len,
        s.bucket_len,
        s.capacity,
        s.block_size,
        s.bucket_slots,
        s.cached_levels
    );
    println!("listening on {addr}");
    let config = Config {
        max_connections: opts.max_connections,
        ..Config::new(opts.shape)
    };
    Proxy::new(config, opts.storage, opts.storage_tls, opts.tls)
        .run(listener, shutdown)
        .await?;
    Ok(())
}

/// Fetches a running proxy's counters.
pub async fn stats(addr: SocketAddr, tls: &ClientTls) -> Result<ProxyStats> {
    let io = tls.connect(addr).await?;
    let mut conn = Framed::new(io, frame_codec(Limits::default()));
    for msg in [ClientMsg::Hello(Hello::current()), ClientMsg::Stats] {
        conn.send(Bytes::from(encode(&msg, Limits::default())?))
            .await?;
    }
    let deadline = Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout(deadline, conn.next())
            .await?
            .context("proxy closed the connection")??;
        match decode::<ProxyMsg>(&frame, Limits::default())? {
            ProxyMsg::Stats(s) => return Ok(s),
            ProxyMsg::Hello(..) => continue,
            other => bail!("unexpected reply {other:?}"),
        }
    }
}
