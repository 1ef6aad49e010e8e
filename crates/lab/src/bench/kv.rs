//! `shroud bench kv`: what obliviousness costs a key-value store, measured against what it
//! must cost in theory.
//!
//! - **Engine**: puts and gets of one-block values through the Path ORAM engine, with its
//!   buckets in sled in this process, back to back (no epoch pacing), so the figure is the
//!   algorithm's cost and not the schedule's.
//! - **Plain**: the same values AES-256-GCM sealed and stored in sled, one key each.
//! - **Theory**: Path ORAM moves a whole path down and up per access, `2 x path x bucket`
//!   bytes, where the plain store moves one sealed value; the ratio of the two is the byte
//!   blow-up. The measured slowdown (plain ops/s over ORAM ops/s) should be close to it: if
//!   it is, the overhead comes from the algorithm and nothing else.
//! - **Schedule**: one client through the full stack (TLS, proxy, storage) under the default
//!   schedule: its throughput and latency.
//!
//! Neither side fsyncs per operation here (the storage bench measures durable writes); both
//! write through sled's log.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use shroud_oram::{BucketStore, Config, Fetch, Key, Oram, WriteBack};
use shroud_proto::StoreId;
use shroud_storage::{Backend, Put, SledBackend};

/// One line of `shroud bench kv --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Blocks per store (N).
    pub n: u64,
    /// Bytes per block (B).
    pub block: u32,
    /// Slots per bucket (Z).
    pub z: u32,
    /// Levels cached by the client (T).
    pub cached_levels: u32,
    /// Operations completed.
    pub operations: u64,
    /// Puts per second through the oblivious KV store.
    pub oram_put_per_s: f64,
    /// Gets per second through the oblivious KV store.
    pub oram_get_per_s: f64,
    /// Puts per second through a plain sealed KV store on sled.
    pub plain_put_per_s: f64,
    /// Gets per second through a plain sealed KV store on sled.
    pub plain_get_per_s: f64,
    /// Plain ops/s over ORAM ops/s, puts and gets together.
    pub measured_slowdown: f64,
    /// `2 x path x bucket / (block + 28)`.
    pub theoretical_blowup: f64,
    /// `measured_slowdown / theoretical_blowup` (target: at most 1.2).
    pub cost_vs_theory: f64,
}

/// The engine's bucket store on sled, in this process.
pub struct SledStore {
    backend: SledBackend,
    store: StoreId,
    buf: Vec<u8>,
}

impl BucketStore for SledStore {
    type Error = shroud_storage::BackendError;

    fn read_path(&mut self, fetch: &mut Fetch<'_>) -> Result<(), Self::Error> {
        for i in 0..fetch.ids().len() {
            let id = fetch.ids()[i];
            if self.backend.read(&self.store, id.index, &mut self.buf)? {
                let _ = fetch.supply(i, Some(&self.buf));
            } else {
                let _ = fetch.supply(i, None);
            }
        }
        Ok(())
    }

    fn write_path(&mut self, writes: &WriteBack<'_>) -> Result<(), Self::Error> {
        let puts: Vec<Put<'_>> = writes
            .iter()
            .map(|(id, data)| Put {
                store: self.store,
                bucket: id.index,
                data,
            })
            .collect();
        self.backend.apply(&puts)
    }
}

fn per_s(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Measures `ops` puts then `ops` gets of random one-block values on both stores.
pub fn run(n: u64, block: u32, cached: u32, ops: u64) -> Result<Report> {
    let dir = tempfile::tempdir()?;
    let mut rng = StdRng::seed_from_u64(7);
    // The ORAM side.
    let config = Config {
        cached_levels: cached,
        ..Config::new(n, block)
    };
    let mut oram = Oram::new(config, Key::generate(&mut rng), &mut rng)?;
    let mut store = SledStore {
        backend: SledBackend::open(&dir.path().join("oram"))?,
        store: StoreId([1; 16]),
        buf: Vec::new(),
    };
    let geom = oram
        .trees()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no tree"))?;
    {
        let mut puts = Vec::new();
        oram.format(|id, b| {
            puts.push((id.index, b.to_vec()));
            Ok::<(), Infallible>(())
        })?;
        for chunk in puts.chunks(4096) {
            let p: Vec<Put<'_>> = chunk
                .iter()
                .map(|(i, d)| Put {
                    store: store.store,
                    bucket: *i,
                    data: d,
                })
                .collect();
            store.backend.apply(&p)?;
        }
    }
    let mut value = vec![0u8; block as usize];
    let addrs: Vec<u64> = (0..ops).map(|_| rng.random_range(0..n)).collect();
    let start = Instant::now();
    for (i, &a) in addrs.iter().enumerate() {
        value[..8].copy_from_slice(&(i as u64).to_le_bytes());
        oram.run(&mut store, &[shroud_oram::Op::Write(a, &value)], &mut rng)?;
    }
    let oram_put = start.elapsed();
    let start = Instant::now();
    for &a in &addrs {
        oram.run(&mut store, &[shroud_oram::Op::Read(a)], &mut rng)?;
        std::hint::black_box(oram.result(0));
    }
    let oram_get = start.elapsed();
    // The plain side: AES-GCM sealed values, one sled key each.
    let db = sled::Config::new().path(dir.path().join("plain")).open()?;
    // The engine's own AES-GCM, so that the ratio measures the ORAM, not two AEADs.
    let cipher = shroud_oram::aead::Aes256Gcm::new(&[9u8; 32]);
    let mut counter = 0u64;
    let start = Instant::now();
    for (i, &a) in addrs.iter().enumerate() {
        value[..8].copy_from_slice(&(i as u64).to_le_bytes());
        counter += 1;
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&counter.to_be_bytes());
        let mut sealed = Vec::with_capacity(12 + value.len() + 16);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&value);
        let end = sealed.len();
        let tag = cipher
            .seal(&nonce, &a.to_le_bytes(), &mut sealed[12..end])
            .map_err(|_| anyhow::anyhow!("aead"))?;
        sealed.extend_from_slice(&tag);
        db.insert(a.to_be_bytes(), sealed)?;
    }
    let plain_put = start.elapsed();
    let start = Instant::now();
    for &a in &addrs {
        if let Some(v) = db.get(a.to_be_bytes())? {
            let mut body = v[12..v.len() - 16].to_vec();
            let nonce: [u8; 12] = v[..12].try_into()?;
            let tag: [u8; 16] = v[v.len() - 16..].try_into()?;
            cipher
                .open(&nonce, &a.to_le_bytes(), &mut body, &tag)
                .map_err(|_| anyhow::anyhow!("aead"))?;
            std::hint::black_box(&body);
        }
    }
    let plain_get = start.elapsed();
    let measured =
        (plain_put + plain_get).as_secs_f64().recip() / (oram_put + oram_get).as_secs_f64().recip();
    let theory = 2.0 * geom.fetched_levels() as f64 * geom.ciphertext_len() as f64
        / (f64::from(block) + 28.0);
    Ok(Report {
        n,
        block,
        z: 4,
        cached_levels: cached,
        operations: ops,
        oram_put_per_s: per_s(ops, oram_put),
        oram_get_per_s: per_s(ops, oram_get),
        plain_put_per_s: per_s(ops, plain_put),
        plain_get_per_s: per_s(ops, plain_get),
        measured_slowdown: measured,
        theoretical_blowup: theory,
        cost_vs_theory: measured / theory,
    })
}

/// One client through the full stack under `shape`, busy for `seconds`.
#[derive(Clone, Debug, Serialize)]
pub struct ScheduleReport {
    /// Epoch length, ms (E).
    pub epoch_ms: u32,
    /// Slots per client per epoch (K).
    pub slots_per_epoch: u32,
    /// Wall time measured, seconds.
    pub seconds: f64,
    /// Operations completed.
    pub operations: u64,
    /// Operations per second.
    pub ops_per_s: f64,
    /// Median latency, ms.
    pub p50_latency_ms: f64,
    /// 99th-percentile latency, ms.
    pub p99_latency_ms: f64,
    /// Every operation's latency, ms, in order of completion.
    pub latencies_ms: Vec<f64>,
}

/// Measures one busy client through the stack.
pub async fn schedule(shape: shroud_proto::Shape, seconds: f64) -> Result<ScheduleReport> {
    let stack = shroud_testkit::stack::Stack::start(shape).await?;
    let mut rng = StdRng::seed_from_u64(3);
    let grant = shroud_client::random_grant(&mut rng);
    let (client, task) =
        shroud_client::Client::start(stack.client_config()?, Key::generate(&mut rng), grant)
            .await?;
    let kv = shroud_client::Kv::new(client, shroud_client::kv::DEFAULT_MAX_VALUE);
    let value = vec![7u8; 100];
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut lat = Vec::new();
    let started = Instant::now();
    let mut i = 0u64;
    while Instant::now() < deadline {
        let t = Instant::now();
        let key = format!("k{}", i % 32);
        if i.is_multiple_of(2) {
            kv.put(key.as_bytes(), &value).await?;
        } else {
            kv.get(key.as_bytes()).await?;
        }
        lat.push(t.elapsed());
        i += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let latencies_ms: Vec<f64> = lat.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    drop(kv);
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    drop(Arc::new(stack));
    Ok(ScheduleReport {
        epoch_ms: shape.epoch_ms,
        slots_per_epoch: shape.slots_per_epoch,
        seconds: secs,
        operations: i,
        ops_per_s: i as f64 / secs,
        p50_latency_ms: pct(0.5),
        p99_latency_ms: pct(0.99),
        latencies_ms,
    })
}
