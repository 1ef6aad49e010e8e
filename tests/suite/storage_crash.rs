//! kill -9 a real `shroud storage` process at random moments while batches stream in from
//! several writers, restart it, and check: every acknowledged batch is there, whole, and the
//! one batch each writer had in flight is there whole or not at all.
//!
//! CI runs 20 kills. `SHROUD_CRASH_ITERS=100 cargo test --release --test suite storage_crash:: --
//! --ignored` runs the long version.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shroud_net::conn::Connection;
use shroud_net::transport::ClientTls;
use shroud_proto::{Batch, Geometry, Limits};

const WRITERS: usize = 4;
const BUCKETS: u64 = 32;
const LEN: usize = 48;
const PER_BATCH: u64 = 3;

struct Server {
    child: Child,
    addr: SocketAddr,
    tls: ClientTls,
}

/// TLS material for the server under test, made once per test database.
fn certs(db: &Path) -> shroud_net::certs::CertFiles {
    let dir = db.with_extension("certs");
    if dir.join("proxy.key").exists() {
        return shroud_net::certs::CertFiles::in_dir(&dir);
    }
    shroud_net::certs::generate(&dir, &shroud_net::certs::local_names()).expect("certs")
}

fn tls(db: &Path) -> ClientTls {
    crate::common::proxy_tls(&certs(db))
}

fn spawn(db: &Path) -> Server {
    let files = certs(db);
    let cmd = crate::common::storage_command(&files, db, "127.0.0.1:0");
    let (child, addr) = crate::common::spawn_listening(cmd);
    Server {
        child,
        addr,
        tls: tls(db),
    }
}

/// A failing test must not leave its server running.
impl Drop for Server {
    fn drop(&mut self) {
        // std's kill() sends SIGKILL on Unix.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGKILL, and reap.
fn kill9(s: Server) {
    drop(s);
}

/// The buckets batch `i` of writer `w` writes, and their contents.
fn batch_writes(w: usize, i: u64) -> Vec<(u64, Vec<u8>)> {
    (0..PER_BATCH)
        .map(|k| {
            let bucket = (i * 5 + k * 11) % BUCKETS;
            let mut data = vec![(i % 251) as u8; LEN];
            data[..8].copy_from_slice(&i.to_le_bytes());
            data[8] = w as u8;
            data[9..17].copy_from_slice(&bucket.to_le_bytes());
            (bucket, data)
        })
        .collect()
}

type State = Vec<Option<Vec<u8>>>;

fn apply(state: &mut State, w: usize, i: u64) {
    for (b, d) in batch_writes(w, i) {
        state[b as usize] = Some(d);
    }
}

async fn read_all(s: &Server, w: usize) -> State {
    let mut c = Connection::connect(s.addr, &s.tls, Limits::default())
        .await
        .expect("connect after restart");
    let reads = c
        .batch(Batch::reads(
            shroud_testkit::fixtures::writer(w),
            0..BUCKETS,
        ))
        .await
        .expect("read back");
    reads
        .into_iter()
        .map(|r| r.present.then_some(r.data))
        .collect()
}

/// Streams batches until the connection dies; returns how many were acknowledged and
/// whether one more was in flight.
async fn writer(addr: SocketAddr, tls: ClientTls, w: usize, start: u64) -> (u64, bool) {
    let Ok(mut c) = Connection::connect(addr, &tls, Limits::default()).await else {
        return (start, false);
    };
    let mut i = start;
    loop {
        match c
            .batch(Batch::writes(
                shroud_testkit::fixtures::writer(w),
                batch_writes(w, i),
            ))
            .await
        {
            Ok(_) => i += 1,
            Err(_) => return (i, true),
        }
    }
}

async fn crash_loop(iters: usize, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut states: Vec<State> = vec![vec![None; BUCKETS as usize]; WRITERS];
    let mut next = [0u64; WRITERS];
    let server = spawn(&db);
    {
        let mut c = Connection::connect(server.addr, &server.tls, Limits::default())
            .await
            .unwrap();
        for w in 0..WRITERS {
            c.create_store(
                &shroud_testkit::fixtures::writer(w),
                Geometry {
                    bucket_len: LEN as u32,
                    buckets: BUCKETS,
                },
            )
            .await
            .unwrap();
        }
    }
    let mut server = Some(server);
    let mut in_doubt = 0;
    for iter in 0..iters {
        let s = server.take().unwrap_or_else(|| spawn(&db));
        let addr = s.addr;
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(writer(addr, s.tls.clone(), w, next[w])))
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..250))).await;
        kill9(s);
        let results: Vec<(u64, bool)> = futures::future::join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let s = spawn(&db);
        for w in 0..WRITERS {
            let (acked, pending) = results[w];
            for i in next[w]..acked {
                apply(&mut states[w], w, i);
            }
            next[w] = acked;
            let got = read_all(&s, w).await;
            if got == states[w] {
                continue;
            }
            let mut with = states[w].clone();
            apply(&mut with, w, acked);
            assert!(
                pending && got == with,
                "iteration {iter}, writer {w}: after {acked} acknowledged batches the store holds neither them nor them plus the one in flight"
            );
            in_doubt += 1;
            states[w] = with;
            next[w] = acked + 1;
        }
        server = Some(s);
    }
    if let Some(s) = server {
        kill9(s);
    }
    let total: u64 = next.iter().sum();
    println!(
        "{iters} kills: {total} batches survived, {in_doubt} in-flight batches found applied whole"
    );
    assert!(total > iters as u64, "the writers made progress");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_batch() {
    crash_loop(20, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: SHROUD_CRASH_ITERS kills (default 100)"]
async fn kill_9_long() {
    let iters = crate::common::env_count("SHROUD_CRASH_ITERS", 100);
    crash_loop(iters, 2).await;
}

/// SIGTERM: the server flushes and exits with status 0, and the data is there on restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut s = spawn(&db);
    {
        let mut c = Connection::connect(s.addr, &s.tls, Limits::default())
            .await
            .unwrap();
        c.create_store(
            &shroud_testkit::fixtures::writer(0),
            Geometry {
                bucket_len: LEN as u32,
                buckets: BUCKETS,
            },
        )
        .await
        .unwrap();
        c.batch(Batch::writes(
            shroud_testkit::fixtures::writer(0),
            batch_writes(0, 0),
        ))
        .await
        .unwrap();
    }
    let status = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = s.child.wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    let s = spawn(&db);
    let mut want: State = vec![None; BUCKETS as usize];
    apply(&mut want, 0, 0);
    assert_eq!(read_all(&s, 0).await, want);
    kill9(s);
}
