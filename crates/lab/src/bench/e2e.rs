//! `shroud bench e2e`: how many always-on clients one machine sustains through one proxy
//! and one storage server (TLS on both links, everything in this process), with zero missed
//! epochs, and the operation latency they see.
//!
//! For each client count: start the stack, start the clients (each with its own store),
//! keep every client busy with random reads and writes, wait until every client has run a
//! few epochs, then measure for the given time. A run passes when no epoch overran and no
//! client missed an epoch (the proxy's late-slot count stays at zero).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use shroud_client::Client;
use shroud_oram::Key;
use shroud_proto::Limits;

use shroud_proto::Shape;
use shroud_storage::{RedisBackend, RedisOptions};
use shroud_testkit::redis_cluster::RedisCluster;
use shroud_testkit::stack::Stack;

/// Where storage keeps its data in a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageBackend {
    /// sled, embedded (the default).
    Sled,
    /// A Redis Cluster of this many masters, one replica each, started on loopback for
    /// the run (the distribution's `redis-server`, `appendfsync always`).
    Cluster {
        /// Masters.
        masters: usize,
        /// Storage servers on it, each with its own proxy and an equal share of the
        /// clients.
        servers: usize,
    },
    /// An existing Redis Cluster.
    Url {
        /// `redis://HOST:PORT[,...]`.
        url: String,
        /// Storage servers on it, as for [`StorageBackend::Cluster`].
        servers: usize,
    },
}

impl StorageBackend {
    fn servers(&self) -> usize {
        match self {
            StorageBackend::Sled => 1,
            StorageBackend::Cluster { servers, .. } | StorageBackend::Url { servers, .. } => {
                (*servers).max(1)
            }
        }
    }
}

impl std::fmt::Display for StorageBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageBackend::Sled => write!(f, "sled"),
            StorageBackend::Cluster { masters, servers } => {
                write!(
                    f,
                    "{servers} server(s) on a redis cluster ({masters}+{masters})"
                )
            }
            StorageBackend::Url { url, servers } => write!(f, "{servers} server(s) on {url}"),
        }
    }
}

/// What one master of a cluster the run started did per epoch, during the measurement.
#[derive(Clone, Debug, Serialize)]
pub struct NodeLoad {
    /// Its port.
    pub port: u16,
    /// Commands processed per epoch.
    pub commands_per_epoch: f64,
    /// Bytes received per epoch.
    pub bytes_in_per_epoch: f64,
    /// Bytes sent per epoch.
    pub bytes_out_per_epoch: f64,
    /// CPU time (user and system) per epoch, ms.
    pub cpu_ms_per_epoch: f64,
}

/// A master's counters at one moment: commands, bytes in, bytes out, CPU seconds.
fn node_counters(cluster: &RedisCluster, port: u16) -> Result<[f64; 4]> {
    let text = format!(
        "{}{}",
        cluster.info(port, "stats")?,
        cluster.info(port, "cpu")?
    );
    let field = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Ok([
        field("total_commands_processed"),
        field("total_net_input_bytes"),
        field("total_net_output_bytes"),
        field("used_cpu_sys") + field("used_cpu_user"),
    ])
}

/// One line of `shroud bench e2e --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Clients run at once.
    pub clients: usize,
    /// Epoch length, ms (E).
    pub epoch_ms: u32,
    /// Slots per client per epoch (K).
    pub slots_per_epoch: u32,
    /// Blocks per store (N).
    pub capacity: u64,
    /// Bytes per block (B).
    pub block: u32,
    /// Levels cached by the client (T).
    pub cached_levels: u32,
    /// Wall time measured, seconds.
    pub seconds: f64,
    /// Epochs the proxy ran.
    pub epochs: u64,
    /// Epochs whose batch outlasted the epoch, during the measurement.
    pub overrun_epochs: u64,
    /// Slots that missed their epoch, during the measurement.
    pub late_slots: u64,
    /// True when nothing overran and nothing was late.
    pub sustained: bool,
    /// Operations completed.
    pub operations: u64,
    /// Median operation latency, in epochs.
    pub p50_latency_epochs: f64,
    /// 99th-percentile operation latency, in epochs.
    pub p99_latency_epochs: f64,
    /// Mean storage round trip of an epoch's batch (network, TLS, sled and fsync), ms.
    pub mean_batch_ms: f64,
    /// 99th-percentile batch round trip during the measurement, ms (the upper edge of its
    /// time class, at most 1/8 above it: [`shroud_proto::histogram`]).
    pub p99_batch_ms: f64,
    /// 99.9th-percentile batch round trip during the measurement, ms (likewise).
    pub p999_batch_ms: f64,
    /// Slowest batch during the measurement, ms (likewise).
    pub max_batch_ms: f64,
    /// Mean sled flush (fsync) at storage, ms.
    pub mean_flush_ms: f64,
    /// Client-side AES-GCM for one epoch of all clients, measured alone, ms.
    pub client_crypto_ms_per_epoch: f64,
    /// Where storage kept its data.
    pub backend: String,
    /// Per master of a cluster the run started: its work per epoch.
    pub nodes: Vec<NodeLoad>,
}

/// Measures `clients` busy clients for `seconds`, storage on `backend`.
pub async fn run_one(
    clients: usize,
    shape: Shape,
    seconds: f64,
    backend: &StorageBackend,
) -> Result<Report> {
    let cluster = match backend {
        StorageBackend::Cluster { masters, .. } => {
            let masters = *masters;
            Some(tokio::task::spawn_blocking(move || RedisCluster::start(masters, 1)).await??)
        }
        _ => None,
    };
    let url = match (backend, &cluster) {
        (StorageBackend::Url { url, .. }, _) => Some(url.clone()),
        (_, Some(c)) => Some(c.url()),
        _ => None,
    };
    let connect = |url: String| {
        tokio::task::spawn_blocking(move || RedisBackend::connect(&url, RedisOptions::default()))
    };
    let config = shroud_testkit::fixtures::storage_config();
    let stack = match &url {
        None => Stack::start(shape).await?,
        Some(url) => {
            let engine = connect(url.clone()).await??;
            Stack::start_with(
                shape,
                Arc::new(engine),
                config,
                shroud_testkit::stack::stack_dir()?,
            )
            .await?
        }
    };
    // More storage servers on the cluster, each with a proxy of its own (given the others
    // to go on through); clients are dealt out in turn.
    let mut proxies = vec![stack.proxy];
    let mut extra = Vec::new();
    if let Some(url) = &url {
        for _ in 1..backend.servers() {
            let engine = connect(url.clone()).await??;
            let (storage, task) = stack.another_storage(Arc::new(engine), config).await?;
            let (proxy, ptask) = stack.another_proxy_to(vec![storage, stack.storage]).await?;
            proxies.push(proxy);
            extra.push((task, ptask));
        }
    }
    let mut handles = Vec::new();
    let mut rng = StdRng::seed_from_u64(clients as u64);
    // Clients join over one eviction period, as they would over time: started together,
    // every Ring ORAM client would evict in the same epoch (its maintenance is fixed by its
    // own access count), a load no deployment sees.
    let period = shape.eviction_period_epochs().unwrap_or(1);
    let joined = Instant::now();
    let epoch = Duration::from_millis(u64::from(shape.epoch_ms));
    let mut order: Vec<usize> = (0..clients).collect();
    order.sort_by_key(|&i| i as u32 % period);
    for i in order {
        let at = joined + epoch * (i as u32 % period);
        tokio::time::sleep_until(at.into()).await;
        let key = Key::generate(&mut rng);
        handles.push(
            Client::start(
                stack.client_config_for(proxies[i % proxies.len()])?,
                key,
                shroud_client::random_grant(&mut rng),
            )
            .await?,
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let tasks: Vec<_> = handles
        .iter()
        .enumerate()
        .map(|(i, (c, _))| {
            let (c, stop, measuring, latencies) = (
                c.clone(),
                stop.clone(),
                measuring.clone(),
                latencies.clone(),
            );
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(i as u64);
                let block = c.shape().block_size as usize;
                while !stop.load(Ordering::Relaxed) {
                    let a = rng.random_range(0..c.shape().capacity);
                    let start = Instant::now();
                    let r = if rng.random_bool(0.5) {
                        c.write(a, vec![i as u8; block]).await
                    } else {
                        c.read(a).await.map(|_| ())
                    };
                    if r.is_err() {
                        break;
                    }
                    if measuring.load(Ordering::Relaxed) {
                        latencies.lock().push(start.elapsed());
                    }
                }
            })
        })
        .collect();
    // Warm up: every client through a few epochs.
    loop {
        tokio::time::sleep(epoch).await;
        if handles
            .iter()
            .all(|(c, _)| c.stats().epochs.load(Ordering::Relaxed) >= 3)
        {
            break;
        }
    }
    let tls = stack.tls.client()?;
    let masters = match &cluster {
        Some(c) => c.masters()?,
        None => Vec::new(),
    };
    let counters = |c: &RedisCluster| -> Result<Vec<[f64; 4]>> {
        masters.iter().map(|&p| node_counters(c, p)).collect()
    };
    let nodes_before = match &cluster {
        Some(c) => counters(c)?,
        None => Vec::new(),
    };
    let before = totals(&proxies, &tls).await?;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let after = totals(&proxies, &tls).await?;
    let nodes_after = match &cluster {
        Some(c) => counters(c)?,
        None => Vec::new(),
    };
    let secs = start.elapsed().as_secs_f64();
    measuring.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let storage = shroud_net::conn::Connection::connect(
        stack.storage,
        &stack.tls.proxy_client()?,
        Limits::default(),
    )
    .await?
    .stats()
    .await?;
    for (c, _) in &handles {
        drop(c.clone());
    }
    // The extra servers and proxies stop before the cluster under them does.
    for (storage, proxy) in extra {
        storage.abort();
        proxy.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut lat = std::mem::take(&mut *latencies.lock());
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| {
                d.as_secs_f64() * 1000.0 / f64::from(shape.epoch_ms)
            })
    };
    let epochs = after.epochs - before.epochs;
    let batches = after.batches - before.batches;
    let per_epoch = |a: f64, b: f64| (a - b) / epochs.max(1) as f64;
    let nodes = masters
        .iter()
        .zip(nodes_after.iter().zip(&nodes_before))
        .map(|(&port, (a, b))| NodeLoad {
            port,
            commands_per_epoch: per_epoch(a[0], b[0]),
            bytes_in_per_epoch: per_epoch(a[1], b[1]),
            bytes_out_per_epoch: per_epoch(a[2], b[2]),
            cpu_ms_per_epoch: per_epoch(a[3], b[3]) * 1000.0,
        })
        .collect();
    let overrun = after.overrun_epochs - before.overrun_epochs;
    let late = after.late_total - before.late_total;
    // The window's batches: the difference of the two histograms.
    let window: Vec<u64> = after
        .batch_histogram
        .iter()
        .zip(before.batch_histogram.iter().chain(std::iter::repeat(&0)))
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let tail = |q: f64| {
        shroud_proto::histogram::quantile_us(&window, q).map_or(0.0, |us| us as f64 / 1000.0)
    };
    let geom = shape;
    let mut crypto = crate::bench::engine::CryptoBound::new(std::iter::repeat_n(
        geom.bucket_len as usize,
        geom.path_len as usize,
    ));
    let per_access_ms = 1000.0 / crypto.measure(2000);
    Ok(Report {
        clients,
        epoch_ms: shape.epoch_ms,
        slots_per_epoch: shape.slots_per_epoch,
        capacity: shape.capacity,
        block: shape.block_size,
        cached_levels: shape.cached_levels,
        seconds: secs,
        epochs,
        overrun_epochs: overrun,
        late_slots: late,
        sustained: overrun == 0 && late == 0 && epochs > 0,
        operations: lat.len() as u64,
        p50_latency_epochs: pct(0.5),
        p99_latency_epochs: pct(0.99),
        mean_batch_ms: (after.batch_total_us - before.batch_total_us) as f64
            / batches.max(1) as f64
            / 1000.0,
        p99_batch_ms: tail(0.99),
        p999_batch_ms: tail(0.999),
        max_batch_ms: tail(1.0),
        mean_flush_ms: storage.flush_mean_us as f64 / 1000.0,
        client_crypto_ms_per_epoch: per_access_ms
            * (clients as f64)
            * f64::from(shape.slots_per_epoch),
        backend: backend.to_string(),
        nodes,
    })
}

/// What the proxies of a run counted, together.
struct Totals {
    /// Epochs of the busiest proxy (they run side by side).
    epochs: u64,
    /// Batches of all of them.
    batches: u64,
    overrun_epochs: u64,
    late_total: u64,
    batch_total_us: u64,
    batch_histogram: Vec<u64>,
}

async fn totals(
    proxies: &[std::net::SocketAddr],
    tls: &shroud_net::transport::ClientTls,
) -> Result<Totals> {
    let mut t = Totals {
        epochs: 0,
        batches: 0,
        overrun_epochs: 0,
        late_total: 0,
        batch_total_us: 0,
        batch_histogram: Vec::new(),
    };
    for &p in proxies {
        let s = shroud_proxy::fetch_stats(p, tls).await?;
        t.epochs = t.epochs.max(s.epochs);
        t.batches += s.epochs;
        t.overrun_epochs += s.overrun_epochs;
        t.late_total += s.late_total;
        t.batch_total_us += s.batch_total_us;
        if t.batch_histogram.len() < s.batch_histogram.len() {
            t.batch_histogram.resize(s.batch_histogram.len(), 0);
        }
        for (a, b) in t.batch_histogram.iter_mut().zip(&s.batch_histogram) {
            *a += b;
        }
    }
    Ok(t)
}

/// Runs each client count in turn (fresh stack each time).
pub fn run(
    counts: &[usize],
    shape: Shape,
    seconds: f64,
    backend: &StorageBackend,
    mut each: impl FnMut(&Report),
) -> Result<Vec<Report>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut out = Vec::new();
    for &c in counts {
        let r = rt.block_on(run_one(c, shape, seconds, backend))?;
        each(&r);
        out.push(r);
    }
    Ok(out)
}
