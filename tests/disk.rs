//! Issue 14, "The client's own disk": a `shroud agent` process writes at most 64 KiB to its
//! disk per epoch at the default store shape (N = 2^14 blocks of 1 KiB, 8 cached levels),
//! idle or busy with SETs. Measured from `/proc/PID/io` (`write_bytes`: everything the
//! process made the kernel write, the state's sealed records and pages and the state
//! database's own log alike), over 150 epochs after the first save (which writes all of
//! the state once, about 1.1 MB). Rewriting the whole engine state every epoch, as the
//! client did before, wrote about 1.2 MB an epoch.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use redis_protocol::resp2::types::OwnedFrame;
use shroud_proto::Shape;

/// The budget: bytes written to the client's disk per epoch.
const BUDGET: u64 = 64 * 1024;
/// Epochs measured, idle and then busy.
const EPOCHS: u64 = 150;

/// The default store (N, B, T) at 100 ms epochs (the bytes an epoch writes do not depend on
/// its length), one slot, without mail.
fn shape() -> Shape {
    let d = Shape::default();
    Shape::new(d.capacity, d.block_size, d.cached_levels)
        .expect("shape")
        .with_schedule(1, 100)
        .expect("shape")
        .with_mail(0, 0)
}

/// What the process `pid` has made the kernel write to storage so far.
fn write_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/PID/io");
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("write_bytes")
}

/// A field of the agent's INFO.
async fn info(s: &mut tokio::net::TcpStream, field: &str) -> u64 {
    let reply = shroud_client::resp::call(s, &[b"INFO"])
        .await
        .expect("INFO");
    let OwnedFrame::BulkString(text) = reply else {
        panic!("INFO answered {reply:?}");
    };
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO"))
}

async fn until_epoch(s: &mut tokio::net::TcpStream, epoch: u64) {
    while info(s, "epochs").await < epoch {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_writes_at_most_64_kib_an_epoch() {
    // On the target directory's file system, not a tmpfs that would count nothing.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let certs =
        shroud_net::certs::generate(&dir.path().join("certs"), &shroud_net::certs::local_names())
            .expect("certs");
    let (storage, storage_addr) = common::spawn_listening(common::storage_command(
        &certs,
        &dir.path().join("db"),
        "127.0.0.1:0",
    ));
    let _storage = common::Reaped(storage);
    let (proxy, proxy_addr) = common::spawn_listening(common::proxy_command(
        &certs,
        storage_addr,
        "127.0.0.1:0",
        shape(),
    ));
    let _proxy = common::Reaped(proxy);
    let state = dir.path().join("agent");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_shroud"));
    cmd.args(["agent", "--listen", "127.0.0.1:0", "--proxy"])
        .arg(proxy_addr.to_string())
        .arg("--ca")
        .arg(&certs.ca)
        .arg("--state")
        .arg(&state)
        .arg("--key-file")
        .arg(common::key_file(&state));
    let (agent, agent_addr): (_, SocketAddr) = common::spawn_listening(cmd);
    let pid = agent.id();
    let _agent = common::Reaped(agent);
    let mut s = common::agent_connection(agent_addr, &common::agent_token(&state))
        .await
        .expect("agent");

    until_epoch(&mut s, 10).await;
    let first = write_bytes(pid);
    assert!(
        first > 1_000_000,
        "the first save (the whole state) was not seen: {first} bytes; is the disk a tmpfs?"
    );
    let measure = |from: (u64, u64), to: (u64, u64)| (to.1 - from.1) / (to.0 - from.0);

    let start = (info(&mut s, "epochs").await, write_bytes(pid));
    until_epoch(&mut s, start.0 + EPOCHS).await;
    let end = (info(&mut s, "epochs").await, write_bytes(pid));
    let idle = measure(start, end);

    let start = end;
    let mut sets = 0u64;
    while info(&mut s, "epochs").await < start.0 + EPOCHS {
        let key = format!("key{}", sets % 64);
        let reply = shroud_client::resp::call(&mut s, &[b"SET", key.as_bytes(), &[7u8; 100]])
            .await
            .expect("SET");
        assert_eq!(reply, OwnedFrame::SimpleString(b"OK".to_vec()));
        sets += 1;
    }
    let end = (info(&mut s, "epochs").await, write_bytes(pid));
    let busy = measure(start, end);
    let payload = info(&mut s, "state_bytes_written").await;
    println!(
        "bytes written per epoch: idle {idle}, busy {busy} ({sets} SETs); state records and pages handed to the database since start: {payload}"
    );
    assert!(idle <= BUDGET, "idle: {idle} bytes an epoch");
    assert!(busy <= BUDGET, "busy: {busy} bytes an epoch");
}
