//! Issue 12, finding 4: a request whose work or answer is out of proportion to its size is
//! refused, with a typed error, before any of the work starts. Against a real storage process
//! with an honest client running its schedule through a real proxy: every attack below is
//! refused, storage's resident memory stays under 256 MiB throughout (sampled from /proc),
//! and the honest client misses no epoch. These requests come from a holder of a proxy's
//! client certificate (a hostile proxy): without one, storage refuses the handshake itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use shroud_net::conn::{ConnError, Connection};
use shroud_net::transport::ClientTls;
use shroud_proto::mail::{MailBatch, Sealed};
use shroud_proto::{
    Batch, BatchOp, Capability, Envelope, ErrorCode, Geometry, Grant, Limits, Request, Shape,
};

use crate::common::{Reaped, proxy_command, spawn_listening, storage_command};

const RSS_LIMIT: u64 = 256 << 20;

fn shape() -> Shape {
    Shape::new(256, 64, 2)
        .expect("shape")
        .with_schedule(1, 100)
        .expect("shape")
        .with_mail(0, 0)
}

/// A process's resident memory, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// The refusal a request gets on a fresh connection.
async fn refusal(addr: std::net::SocketAddr, tls: &ClientTls, req: &Request) -> ErrorCode {
    let mut c = Connection::connect(addr, tls, Limits::default())
        .await
        .expect("connect");
    match c.call(req).await {
        Err(ConnError::Refused(code)) => code,
        other => panic!("not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplifying_requests_are_refused_and_nobody_else_notices() {
    let dir = tempfile::tempdir().expect("dir");
    let certs =
        shroud_net::certs::generate(&dir.path().join("certs"), &shroud_net::certs::local_names())
            .expect("certs");
    let db = dir.path().join("db");
    let (storage, storage_addr) = spawn_listening(storage_command(&certs, &db, "127.0.0.1:0"));
    let storage = Reaped(storage);
    let (proxy, proxy_addr) =
        spawn_listening(proxy_command(&certs, storage_addr, "127.0.0.1:0", shape()));
    let _proxy = Reaped(proxy);
    let tls = ClientTls::with_ca_file(&certs.ca, "localhost").expect("tls");
    // Only proxies reach storage: a client without a certificate from storage's CA, or with
    // the server's certificate (not issued for client authentication), is refused before
    // it can send a request.
    let server_as_client = shroud_net::transport::Identity::from_pem_files(&certs.cert, &certs.key)
        .expect("server identity");
    let other = shroud_net::certs::generate(
        &dir.path().join("other-certs"),
        &shroud_net::certs::local_names(),
    )
    .expect("certs");
    let stranger =
        shroud_net::transport::Identity::from_pem_files(&other.proxy_cert, &other.proxy_key)
            .expect("stranger identity");
    for (who, identity) in [
        ("no certificate", None),
        ("the server's certificate", Some(&server_as_client)),
        ("another CA's proxy certificate", Some(&stranger)),
    ] {
        let tls = ClientTls::with_ca_file_as(&certs.ca, "localhost", identity).expect("tls");
        let answer = match Connection::connect(storage_addr, &tls, Limits::default()).await {
            Ok(mut c) => c.stats().await.map(|_| ()),
            Err(e) => Err(e),
        };
        assert!(answer.is_err(), "storage served a client with {who}");
    }
    let proxy_tls = crate::common::proxy_tls(&certs);
    let key_hex = std::fs::read_to_string(db.join("routing.pub")).expect("routing.pub");
    let key: [u8; 32] = data_encoding::HEXLOWER
        .decode(key_hex.trim().as_bytes())
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    // The honest client, on its schedule.
    let mut rng = rand::rng();
    let config = shroud_client::ClientConfig::new(proxy_addr, tls.clone()).with_storage_key(key);
    let (client, task) = shroud_client::Client::start(
        config,
        shroud_oram::Key::generate(&mut rng),
        shroud_client::random_grant(&mut rng),
    )
    .await
    .expect("honest client");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Storage's memory, sampled throughout.
    let (pid, stop, peak) = (
        storage.0.id(),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                peak.fetch_max(rss(pid), Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let stats = client.stats();
    let (epochs0, failed0) = (
        stats.epochs.load(Relaxed),
        stats.failed_exchanges.load(Relaxed) + stats.reconnects.load(Relaxed),
    );
    let started = Instant::now();
    // 1. A mail request of a million empty drains, each to be answered with a padded reply.
    let drains = Request::Mail(MailBatch {
        envelope_len: 1024,
        drain_max: 2,
        deposits: Vec::new(),
        drains: vec![Sealed(Vec::new()); 1_000_000],
    });
    assert_eq!(
        refusal(storage_addr, &proxy_tls, &drains).await,
        ErrorCode::TooLarge
    );
    // 2. A store with 16 MiB buckets; then one with 1 MiB ones and 100k absent reads.
    let owner = Grant::of(Capability([7; 32]));
    let create = |bucket_len| Request::CreateStore {
        store: owner.store,
        capability: owner.capability.clone(),
        geometry: Geometry {
            bucket_len,
            buckets: 1 << 20,
        },
        // Paid for at the test difficulty: what is refused is the size, not the price.
        work: shroud_proto::Work::find(&owner.store, shroud_testkit::fixtures::TEST_DIFFICULTY),
    };
    assert_eq!(
        refusal(storage_addr, &proxy_tls, &create(16 << 20)).await,
        ErrorCode::BadGeometry
    );
    let mut c = Connection::connect(storage_addr, &proxy_tls, Limits::default())
        .await
        .expect("connect");
    assert!(c.call(&create(1 << 20)).await.is_ok());
    let reads = Request::Batch(Batch {
        grants: vec![owner.clone()],
        ops: (0..100_000)
            .map(|b| BatchOp::Read {
                grant: 0,
                bucket: b,
            })
            .collect(),
    });
    assert_eq!(
        refusal(storage_addr, &proxy_tls, &reads).await,
        ErrorCode::TooLarge
    );
    // 3. A drain of that store, padded to 1,024 of its buckets.
    let drain = Request::Drain {
        grant: owner.clone(),
        ack_through: 0,
        max: 1024,
    };
    assert_eq!(
        refusal(storage_addr, &proxy_tls, &drain).await,
        ErrorCode::TooLarge
    );
    let drain = Request::Drain {
        grant: owner.clone(),
        ack_through: 0,
        max: u32::MAX,
    };
    assert_eq!(
        refusal(storage_addr, &proxy_tls, &drain).await,
        ErrorCode::TooLarge
    );
    // 4. Junk deposits: past the cap refused; under it, opened outside the lock every batch
    // needs (the honest client's epochs go on meanwhile).
    let junk = |n: usize| vec![Envelope(vec![0x5a; 1024]); n];
    let too_many = Request::Deposit(junk(20_000));
    assert_eq!(
        refusal(storage_addr, &proxy_tls, &too_many).await,
        ErrorCode::TooLarge
    );
    for _ in 0..3 {
        let statuses = c
            .deposit(junk(16_000))
            .await
            .expect("deposit under the cap");
        assert_eq!(statuses.len(), 16_000);
        let m = MailBatch {
            envelope_len: 1024,
            drain_max: 1,
            deposits: junk(8_000),
            drains: vec![Sealed(vec![1; 120]); 4_000],
        };
        let r = c.mail(m).await.expect("mail under the caps");
        assert_eq!(r.drained.len(), 4_000);
    }
    // 5. The counters: cheap (no scan), and from the storage host only (a unit test covers
    // other peers); this loopback peer may read them.
    c.stats().await.expect("stats from the storage host");
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Relaxed);
    sampler.join().expect("sampler");
    let peak = peak.load(Relaxed);
    let epochs = stats.epochs.load(Relaxed) - epochs0;
    let failed = stats.failed_exchanges.load(Relaxed) + stats.reconnects.load(Relaxed) - failed0;
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    println!(
        "attacks took {took:?}; storage peak RSS {} MiB; honest client: {epochs} epochs, {failed} failed",
        peak >> 20
    );
    assert!(peak > 0, "no RSS samples");
    assert!(peak < RSS_LIMIT, "storage RSS reached {} MiB", peak >> 20);
    assert_eq!(failed, 0, "the honest client missed epochs");
    let expected = took.as_millis() as u64 / u64::from(shape().epoch_ms);
    assert!(
        epochs + 3 >= expected,
        "{epochs} epochs in {took:?} ({expected} expected)"
    );
}
