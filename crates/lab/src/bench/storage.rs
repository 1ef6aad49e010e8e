//! `shroud bench storage`: full ORAM paths per second through the storage server (TCP,
//! capability checks, atomic batch, group commit) with 1 to 64 concurrent writers, next to
//! raw sled `apply_batch` + `flush` of the same bytes with as many threads, in the same run.
//!
//! Geometry: N = 2^16, B = 1 KiB, Z = 4, so a path is 16 buckets of 4,228 bytes (67,648
//! bytes); every write carries fresh bytes (sled skips writes of equal values).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use shroud_net::conn::Connection;
use shroud_net::transport::{ClientTls, ServerTls};
use shroud_oram::TreeGeometry;
use shroud_proto::{Batch, Geometry, Limits};
use shroud_storage::{Backend, Server, SledBackend};

/// One line of `shroud bench storage --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Concurrent writers.
    pub writers: usize,
    /// Buckets per path written.
    pub path_buckets: usize,
    /// Bytes of one sealed bucket.
    pub bucket_bytes: usize,
    /// Wall time measured, seconds.
    pub seconds: f64,
    /// Paths written per second through the server.
    pub paths_per_s: f64,
    /// Paths written per second by raw sled, same bytes, same number of threads.
    pub raw_sled_paths_per_s: f64,
    /// `paths_per_s / raw_sled_paths_per_s`.
    pub vs_raw_sled: f64,
    /// Mean batches per flush at the server (group commit at work).
    pub batches_per_flush: f64,
    /// Server's on-disk bytes per byte of live bucket data.
    pub disk_bytes_per_logical_byte: f64,
    /// Raw sled's on-disk bytes per byte of live data.
    pub raw_disk_bytes_per_logical_byte: f64,
}

/// The benchmark's tree: N = 2^16, B = 1 KiB, Z = 4.
pub fn geometry() -> TreeGeometry {
    TreeGeometry::for_blocks(1 << 16, 4, 1024, 0)
}

/// A random full path of `geom`, with fresh bytes: (bucket, data) pairs.
fn path(geom: &TreeGeometry, rng: &mut StdRng, stamp: u64) -> Vec<(u64, Vec<u8>)> {
    let leaf = rng.random_range(0..geom.leaves()) as u32;
    (0..geom.levels())
        .map(|d| {
            let mut data = vec![0u8; geom.ciphertext_len()];
            rng.fill(&mut data[..64]);
            data[64..72].copy_from_slice(&stamp.to_le_bytes());
            (geom.bucket_index(d, leaf), data)
        })
        .collect()
}

/// A storage server on a temporary database with `writers` connections, each owning a
/// store: the setup that [`Harness::rounds`] times.
pub struct Harness {
    dir: tempfile::TempDir,
    backend: Arc<SledBackend>,
    conns: Vec<(Connection, StdRng, u64)>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Harness {
    /// Starts the server and connects the writers.
    pub async fn start(writers: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let backend = Arc::new(SledBackend::open(&dir.path().join("db"))?);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let dynamic: Arc<dyn Backend> = backend.clone();
        let server = tokio::spawn(
            Server::new(
                dynamic,
                shroud_proto::routing::RoutingKey::generate(&mut rand::rng()),
                shroud_testkit::fixtures::storage_config(),
                ServerTls::Plain,
                None,
            )
            .run(listener, async move {
                let _ = stop_rx.await;
            }),
        );
        let geom = geometry();
        let geometry = Geometry {
            bucket_len: geom.ciphertext_len() as u32,
            buckets: geom.bucket_count(),
        };
        let mut conns = Vec::new();
        for w in 0..writers {
            let mut c = Connection::connect(addr, &ClientTls::Plain, Limits::default()).await?;
            c.create_store(&shroud_testkit::fixtures::writer(w), geometry)
                .await?;
            conns.push((c, StdRng::seed_from_u64(w as u64), 0));
        }
        Ok(Harness {
            dir,
            backend,
            conns,
            stop: Some(stop_tx),
            server: Some(server),
        })
    }

    /// Every writer writes `rounds` paths, one durable batch each, all concurrently;
    /// returns the elapsed time.
    pub async fn rounds(&mut self, rounds: u64) -> anyhow::Result<Duration> {
        let geom = geometry();
        let start = Instant::now();
        let tasks: Vec<_> = self
            .conns
            .drain(..)
            .enumerate()
            .map(|(w, (mut c, mut rng, mut i))| {
                tokio::spawn(async move {
                    for _ in 0..rounds {
                        c.batch(Batch::writes(
                            shroud_testkit::fixtures::writer(w),
                            path(&geom, &mut rng, i),
                        ))
                        .await?;
                        i += 1;
                    }
                    Ok::<_, shroud_client::direct::DirectError>((c, rng, i))
                })
            })
            .collect();
        for t in tasks {
            self.conns.push(t.await??);
        }
        Ok(start.elapsed())
    }

    /// Batches per flush and disk bytes per live byte, so far.
    pub async fn figures(&mut self) -> anyhow::Result<(f64, f64)> {
        let stats = self.conns[0].0.stats().await?;
        let b = self.backend.clone();
        let usage = tokio::task::spawn_blocking(move || b.usage()).await??;
        Ok((
            stats.batches as f64 / stats.flushes.max(1) as f64,
            usage.disk_bytes as f64 / usage.bucket_bytes.max(1) as f64,
        ))
    }

    /// Stops the server and deletes its database.
    pub async fn stop(mut self) {
        self.conns.clear();
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
        let _ = &self.dir;
    }
}

/// Raw sled with `threads` threads, each applying a path as one batch and flushing it.
pub struct RawSled {
    _dir: tempfile::TempDir,
    db: sled::Db,
    threads: usize,
    round: AtomicU64,
}

impl RawSled {
    /// A fresh database.
    pub fn open(threads: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let db = sled::Config::new().path(dir.path().join("raw")).open()?;
        Ok(RawSled {
            _dir: dir,
            db,
            threads,
            round: AtomicU64::new(0),
        })
    }

    /// Every thread writes `rounds` paths; returns the elapsed time.
    pub fn rounds(&self, rounds: u64) -> anyhow::Result<Duration> {
        let geom = geometry();
        let base = self.round.fetch_add(rounds, Ordering::Relaxed);
        let start = Instant::now();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..self.threads)
                .map(|t| {
                    let db = &self.db;
                    scope.spawn(move || -> sled::Result<()> {
                        let mut rng = StdRng::seed_from_u64((t as u64) << 32 | base);
                        for i in base..base + rounds {
                            let mut batch = sled::Batch::default();
                            for (bucket, data) in path(&geom, &mut rng, i) {
                                let mut key = [0u8; 25];
                                key[..8].copy_from_slice(&(t as u64).to_le_bytes());
                                key[16] = 1;
                                key[17..].copy_from_slice(&bucket.to_be_bytes());
                                batch.insert(&key[..], data);
                            }
                            db.apply_batch(batch)?;
                            db.flush()?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("raw sled thread panicked"))??;
            }
            Ok::<_, anyhow::Error>(())
        })?;
        Ok(start.elapsed())
    }

    /// Disk bytes per live byte.
    pub fn amplification(&self) -> anyhow::Result<f64> {
        let live: u64 = self
            .db
            .iter()
            .values()
            .map(|v| v.map_or(0, |v| v.len() as u64))
            .sum();
        Ok(self.db.size_on_disk()? as f64 / live.max(1) as f64)
    }
}

/// Runs `rounds(n)` with `n` chosen so that it takes about `duration`; returns paths per
/// second per writer-round.
fn calibrated(
    mut rounds: impl FnMut(u64) -> anyhow::Result<Duration>,
    duration: Duration,
) -> anyhow::Result<(u64, Duration)> {
    let probe = rounds(5)?;
    let n = ((duration.as_secs_f64() / probe.as_secs_f64().max(1e-6)) * 5.0).clamp(5.0, 1e6) as u64;
    Ok((n, rounds(n)?))
}

/// Measures each writer count: the server, then raw sled.
pub fn run(
    writers: &[usize],
    duration: Duration,
    mut each: impl FnMut(&Report),
) -> anyhow::Result<Vec<Report>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let geom = geometry();
    let mut out = Vec::new();
    for &w in writers {
        let mut harness = rt.block_on(Harness::start(w))?;
        let (n, took) = calibrated(|r| rt.block_on(harness.rounds(r)), duration)?;
        let paths_per_s = (n * w as u64) as f64 / took.as_secs_f64();
        let (batches_per_flush, amp) = rt.block_on(harness.figures())?;
        rt.block_on(harness.stop());
        let raw = RawSled::open(w)?;
        let (rn, rtook) = calibrated(|r| raw.rounds(r), duration)?;
        let raw_per_s = (rn * w as u64) as f64 / rtook.as_secs_f64();
        let r = Report {
            writers: w,
            path_buckets: geom.levels(),
            bucket_bytes: geom.ciphertext_len(),
            seconds: took.as_secs_f64(),
            paths_per_s,
            raw_sled_paths_per_s: raw_per_s,
            vs_raw_sled: paths_per_s / raw_per_s,
            batches_per_flush,
            disk_bytes_per_logical_byte: amp,
            raw_disk_bytes_per_logical_byte: raw.amplification()?,
        };
        each(&r);
        out.push(r);
    }
    Ok(out)
}
