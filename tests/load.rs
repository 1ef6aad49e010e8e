//! 1,000 concurrent clients, each on its own TLS connection to one proxy on loopback, each
//! running the real schedule (an ORAM store, K slots per epoch) for a bounded time, against
//! `shroud storage` and `shroud proxy` processes: the schedule holds for those that keep up,
//! and the proxy's memory per connection is bounded and reported. Mail is off here: each
//! mail client keeps a PIR key of several MiB at storage, and mail's capacity is what
//! `shroud bench mail` measures.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use shroud_client::Client;
use shroud_client::ClientConfig;
use shroud_net::certs::local_names;
use shroud_net::transport::ClientTls;
use shroud_oram::Key;
use shroud_proto::Shape;

const CLIENTS: usize = 1000;

/// Two-second epochs: 1,000 clients' crypto, TLS and both servers share two cores here, and
/// at one second a CPU hog beside the test (half the machine) made 4% of the slots late.
const EPOCH_MS: u32 = 2000;

/// A child process, killed when dropped.
struct Proc((std::process::Child, std::net::SocketAddr));

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.0.kill();
        let _ = self.0.0.wait();
    }
}

/// Resident memory of process `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tls_clients_keep_the_schedule() {
    let limit = open_files_limit();
    assert!(
        limit >= 4 * CLIENTS as u64,
        "this test needs {} open files (ulimit -n), has {limit}",
        4 * CLIENTS
    );
    let shape = Shape::new(16, 16, 2)
        .expect("shape")
        .with_schedule(1, EPOCH_MS)
        .expect("shape")
        .with_mail(0, 0);
    // Storage and the proxy as their own processes, so that the proxy's memory is its own.
    let dir = tempfile::tempdir().unwrap();
    let certs =
        shroud_net::certs::generate(&dir.path().join("certs"), &local_names()).expect("certs");
    let storage = Proc(common::spawn_listening(common::storage_command(
        &certs,
        &dir.path().join("db"),
        "127.0.0.1:0",
    )));
    let mut cmd = common::proxy_command(&certs, storage.0.1, "127.0.0.1:0", shape);
    cmd.args(["--max-connections", "1100"]);
    let proxy = Proc(common::spawn_listening(cmd));
    let key = std::fs::read_to_string(dir.path().join("db").join("routing.pub")).unwrap();
    let storage_key = shroud::cmd::agent::parse_key(&key).unwrap();
    let tls = ClientTls::with_ca_file(&certs.ca, "localhost").unwrap();
    let config = ClientConfig::new(proxy.0.1, tls.clone()).with_storage_key(storage_key);
    let proxy_base = rss_kib(proxy.0.0.id());
    let started = Instant::now();
    let base = rss_kib(std::process::id());
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let r = Client::start(
            config.clone(),
            Key::generate(&mut rng),
            shroud_client::random_grant(&mut rng),
        )
        .await;
        match r {
            Ok(c) => clients.push(c),
            Err(e) => panic!("client {i} could not connect: {e}"),
        }
    }
    let connected = started.elapsed();
    let at_start = shroud::cmd::proxy::stats(proxy.0.1, &tls).await.unwrap();
    // Measure ten epochs with everyone connected.
    tokio::time::sleep(Duration::from_millis(10 * u64::from(EPOCH_MS))).await;
    let at_end = shroud::cmd::proxy::stats(proxy.0.1, &tls).await.unwrap();
    let per_client = rss_kib(std::process::id()).saturating_sub(base) / CLIENTS as u64;
    let per_conn = rss_kib(proxy.0.0.id()).saturating_sub(proxy_base) / CLIENTS as u64;
    let epochs = at_end.epochs - at_start.epochs;
    let slots = at_end.slots - at_start.slots;
    let late = at_end.late_total - at_start.late_total;
    let kept_up = clients
        .iter()
        .filter(|(c, _)| c.stats().epochs.load(Relaxed) >= 9)
        .count();
    println!(
        "{CLIENTS} TLS clients connected in {:.1} s; over {epochs} epochs: {slots} slots, {late} late, {} overruns, slowest batch {} ms; {kept_up} clients kept up; proxy memory {per_conn} KiB per connection; each client (ORAM state, TLS, scheduler) {per_client} KiB",
        connected.as_secs_f64(),
        at_end.overrun_epochs - at_start.overrun_epochs,
        at_end.max_batch_us / 1000,
    );
    assert_eq!(at_end.clients, CLIENTS as u64, "all connected at once");
    assert!(epochs >= 9, "{epochs} epochs in 10");
    // Every client that keeps up sends exactly K slots per epoch, one size.
    assert!(kept_up >= CLIENTS * 99 / 100, "{kept_up} kept up");
    assert!(
        late <= epochs * CLIENTS as u64 / 100,
        "{late} late slots of {}",
        epochs * CLIENTS as u64
    );
    assert_eq!(at_end.slot_frame_min, at_end.slot_frame_max);
    assert!(per_conn < 256, "{per_conn} KiB per proxy connection");
    // The test stops itself: every client flushes and stops, then the stack.
    let stop = Instant::now();
    for (c, task) in clients {
        drop(c);
        task.abort();
    }
    drop((proxy, storage));
    assert!(stop.elapsed() < Duration::from_secs(30));
}
