//! `shroud bench kv`: what obliviousness costs a key-value store, measured against what it
//! must cost in theory.
//!
//! - **Engine**: puts and gets of one-block values through the Path ORAM or the Ring ORAM
//!   engine, with its buckets in sled in this process, back to back (no epoch pacing), so the figure is the
//!   algorithm's cost and not the schedule's.
//! - **Plain**: the same values AES-256-GCM sealed and stored in sled, one key each.
//! - **Theory**: Path ORAM moves a whole path down and up per access, `2 x path x bucket`
//!   bytes, and Ring ORAM what its requests and replies carry (counted), where the plain
//!   store moves one sealed value; the ratio of the two is the byte blow-up. The measured slowdown (plain ops/s over ORAM ops/s) should be close to it: if
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
use shroud_oram::ring::{RingConfig, RingOram, RingReply, RingRequest, RingStore, SlotId};
use shroud_oram::{BucketStore, Config, Fetch, Key, Oram, WriteBack};
use shroud_proto::StoreId;
use shroud_storage::{Backend, Put, SledBackend};

/// One line of `shroud bench kv --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The ORAM mode (`path` or `ring`).
    pub oram: String,
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
    /// Bytes the engine moves per access over a sealed value's (`block + 28`): in Path
    /// ORAM `2 x path x bucket`; in Ring ORAM counted from its requests and replies.
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
        self.backend.apply(&puts(self.store, writes.iter()))
    }
}

/// The backend's puts of whole buckets of `store`.
fn puts<'a>(
    store: StoreId,
    writes: impl Iterator<Item = (shroud_oram::BucketId, &'a [u8])>,
) -> Vec<Put<'a>> {
    writes
        .map(|(id, data)| Put {
            store,
            bucket: id.index,
            data,
        })
        .collect()
}

fn per_s(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// The engine's Ring ORAM store on sled, in this process: a request's buckets applied
/// together, its online slots XORed and its maintenance slots read from the stored
/// buckets; the bytes each way counted.
pub struct SledRingStore {
    backend: SledBackend,
    store: StoreId,
    /// Bytes of sealed buckets written and slots read back.
    moved: u64,
}

impl RingStore for SledRingStore {
    type Error = shroud_storage::BackendError;

    fn exchange(&mut self, req: &RingRequest, slot_len: usize) -> Result<RingReply, Self::Error> {
        let puts = puts(self.store, req.writes.iter().map(|(id, d)| (*id, &d[..])));
        self.backend.apply(&puts)?;
        let slot = |id: &SlotId, out: &mut [u8]| {
            let at = usize::from(id.slot) * slot_len;
            self.backend
                .xor_range(&self.store, id.bucket.index, at, out)
        };
        let mut online = Vec::with_capacity(req.online.len());
        for ids in &req.online {
            let mut acc = vec![0u8; slot_len];
            for id in ids {
                slot(id, &mut acc)?;
            }
            online.push(acc);
        }
        let mut reads = Vec::with_capacity(req.reads.len());
        for id in &req.reads {
            let mut out = vec![0u8; slot_len];
            reads.push(slot(id, &mut out)?.then_some(out));
        }
        let reply = RingReply { online, reads };
        self.moved +=
            (puts.iter().map(|p| p.data.len()).sum::<usize>() + reply.down_bytes()) as u64;
        Ok(reply)
    }
}

/// One side of the measurement: a key-value store that puts and gets one-block values.
trait Side {
    /// Puts value number `i` at `a`.
    fn put(&mut self, i: usize, a: u64) -> Result<()>;
    /// Gets `a`.
    fn get(&mut self, a: u64) -> Result<()>;
}

/// Path ORAM with its buckets in sled (formatted first).
struct PathSide {
    oram: Oram,
    store: SledStore,
    rng: StdRng,
    value: Vec<u8>,
}

impl PathSide {
    fn new(dir: &std::path::Path, config: Config) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut oram = Oram::new(config, Key::generate(&mut rng), &mut rng)?;
        let store = SledStore {
            backend: SledBackend::open(&dir.join("oram"))?,
            store: StoreId([1; 16]),
            buf: Vec::new(),
        };
        let mut formatted = Vec::new();
        oram.format(|id, b| {
            formatted.push((id.index, b.to_vec()));
            Ok::<(), Infallible>(())
        })?;
        for chunk in formatted.chunks(4096) {
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
        Ok(PathSide {
            oram,
            store,
            rng,
            value: vec![0u8; config.block_size as usize],
        })
    }

    /// `2 x path x bucket`.
    fn bytes_per_access(&self) -> Result<f64> {
        let geom = self
            .oram
            .trees()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no tree"))?;
        Ok(2.0 * geom.fetched_levels() as f64 * geom.ciphertext_len() as f64)
    }
}

impl Side for PathSide {
    fn put(&mut self, i: usize, a: u64) -> Result<()> {
        self.value[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let op = shroud_oram::Op::Write(a, &self.value);
        self.oram.run(&mut self.store, &[op], &mut self.rng)?;
        Ok(())
    }

    fn get(&mut self, a: u64) -> Result<()> {
        let op = shroud_oram::Op::Read(a);
        self.oram.run(&mut self.store, &[op], &mut self.rng)?;
        std::hint::black_box(self.oram.result(0));
        Ok(())
    }
}

/// Ring ORAM with its buckets in sled (lazily initialized, then filled), its bytes counted.
struct RingSide {
    oram: RingOram,
    store: SledRingStore,
    rng: StdRng,
    value: Vec<u8>,
}

impl RingSide {
    fn new(dir: &std::path::Path, config: RingConfig) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(7);
        let oram = RingOram::new(config, Key::generate(&mut rng), &mut rng)?;
        let store = SledRingStore {
            backend: SledBackend::open(&dir.join("ring"))?,
            store: StoreId([2; 16]),
            moved: 0,
        };
        let mut side = RingSide {
            oram,
            store,
            rng,
            value: vec![0u8; config.block_size as usize],
        };
        // Steady state, as Path ORAM's formatted tree is: the tree is lazily initialized,
        // and its first accesses find buckets never written (cheaper to read, no slots to
        // open), so N / 2 untimed writes fill it first (their bytes are not counted).
        let mut warm = StdRng::seed_from_u64(8);
        for i in 0..config.capacity / 2 {
            side.put(i as usize, warm.random_range(0..config.capacity))?;
        }
        side.store.moved = 0;
        Ok(side)
    }
}

impl Side for RingSide {
    fn put(&mut self, i: usize, a: u64) -> Result<()> {
        self.value[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let op = shroud_oram::Op::Write(a, &self.value);
        self.oram.run(&mut self.store, op, &mut self.rng)?;
        Ok(())
    }

    fn get(&mut self, a: u64) -> Result<()> {
        let op = shroud_oram::Op::Read(a);
        std::hint::black_box(self.oram.run(&mut self.store, op, &mut self.rng)?);
        Ok(())
    }
}

/// The plain side: AES-GCM sealed values, one sled key each, with the engine's own AES-GCM
/// (so that the ratio measures the ORAM, not two AEADs).
struct PlainSide {
    db: sled::Db,
    cipher: shroud_oram::aead::Aes256Gcm,
    counter: u64,
    value: Vec<u8>,
}

impl Side for PlainSide {
    fn put(&mut self, i: usize, a: u64) -> Result<()> {
        self.value[..8].copy_from_slice(&(i as u64).to_le_bytes());
        self.counter += 1;
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&self.counter.to_be_bytes());
        let mut sealed = Vec::with_capacity(12 + self.value.len() + 16);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&self.value);
        let end = sealed.len();
        let tag = self
            .cipher
            .seal(&nonce, &a.to_le_bytes(), &mut sealed[12..end])
            .map_err(|_| anyhow::anyhow!("aead"))?;
        sealed.extend_from_slice(&tag);
        self.db.insert(a.to_be_bytes(), sealed)?;
        Ok(())
    }

    fn get(&mut self, a: u64) -> Result<()> {
        if let Some(v) = self.db.get(a.to_be_bytes())? {
            let mut body = v[12..v.len() - 16].to_vec();
            let nonce: [u8; 12] = v[..12].try_into()?;
            let tag: [u8; 16] = v[v.len() - 16..].try_into()?;
            self.cipher
                .open(&nonce, &a.to_le_bytes(), &mut body, &tag)
                .map_err(|_| anyhow::anyhow!("aead"))?;
            std::hint::black_box(&body);
        }
        Ok(())
    }
}

/// Times puts of every address, then gets, on both sides, interleaved in 5 chunks so that
/// the machine's drift (these machines are noisy) weighs on both alike: returns
/// `[oram put, oram get, plain put, plain get]`.
fn interleaved(oram: &mut dyn Side, plain: &mut dyn Side, addrs: &[u64]) -> Result<[Duration; 4]> {
    let mut t = [Duration::ZERO; 4];
    let chunk = addrs.len().div_ceil(5).max(1);
    for put in [true, false] {
        for (c, part) in addrs.chunks(chunk).enumerate() {
            for slot in [0, 2] {
                let side: &mut dyn Side = if slot == 0 { &mut *oram } else { &mut *plain };
                let start = Instant::now();
                for (j, &a) in part.iter().enumerate() {
                    if put {
                        side.put(c * chunk + j, a)?;
                    } else {
                        side.get(a)?;
                    }
                }
                t[slot + usize::from(!put)] += start.elapsed();
            }
        }
    }
    Ok(t)
}

/// Measures `ops` puts then `ops` gets of random one-block values on both stores, the
/// oblivious one in `mode` (`path` or `ring`, at its defaults).
pub fn run(ring: bool, n: u64, block: u32, cached: u32, ops: u64) -> Result<Report> {
    let dir = tempfile::tempdir()?;
    let mut rng = StdRng::seed_from_u64(7);
    let addrs: Vec<u64> = (0..ops).map(|_| rng.random_range(0..n)).collect();
    let mut plain = PlainSide {
        db: sled::Config::new().path(dir.path().join("plain")).open()?,
        cipher: shroud_oram::aead::Aes256Gcm::new(&[9u8; 32]),
        counter: 0,
        value: vec![0u8; block as usize],
    };
    let (t, bytes_per_access, z) = if ring {
        let config = RingConfig {
            cached_levels: cached,
            ..RingConfig::new(n, block)
        };
        let mut side = RingSide::new(dir.path(), config)?;
        let t = interleaved(&mut side, &mut plain, &addrs)?;
        let bytes = side.store.moved as f64 / (2 * addrs.len()) as f64;
        (t, bytes, config.z)
    } else {
        let config = Config {
            cached_levels: cached,
            ..Config::new(n, block)
        };
        let mut side = PathSide::new(dir.path(), config)?;
        let t = interleaved(&mut side, &mut plain, &addrs)?;
        (t, side.bytes_per_access()?, config.bucket_slots)
    };
    let [oram_put, oram_get, plain_put, plain_get] = t;
    let measured =
        (plain_put + plain_get).as_secs_f64().recip() / (oram_put + oram_get).as_secs_f64().recip();
    let theory = bytes_per_access / (f64::from(block) + 28.0);
    Ok(Report {
        oram: if ring { "ring" } else { "path" }.into(),
        n,
        block,
        z,
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
