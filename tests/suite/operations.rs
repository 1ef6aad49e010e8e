//! Issue 12, item 10: the processes as an operator or a new user meets them, as real
//! processes. SIGTERM ends every service within a second in every state (an agent whose
//! proxy is gone, an agent stuck connecting, storage, the proxy); a startup failure names its
//! cause and the flag that fixes it; a closed stdout ends a command quietly.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shroud_net::certs::CertFiles;
use shroud_proto::Shape;

use crate::common::{Reaped, proxy_command, spawn_listening, storage_command};

fn shape() -> Shape {
    Shape::new(256, 64, 2)
        .expect("shape")
        .with_schedule(1, 200)
        .expect("shape")
        .with_mail(50, 1)
}

/// Storage and a proxy as processes, with TLS, in `dir`.
struct Servers {
    certs: CertFiles,
    storage: Reaped,
    proxy: Reaped,
    proxy_addr: SocketAddr,
    storage_addr: SocketAddr,
    storage_key: String,
}

impl Servers {
    fn start(dir: &Path) -> Servers {
        let certs =
            shroud_net::certs::generate(&dir.join("certs"), &shroud_net::certs::local_names())
                .expect("certs");
        let db = dir.join("db");
        let (storage, storage_addr) = spawn_listening(storage_command(&certs, &db, "127.0.0.1:0"));
        let (proxy, proxy_addr) =
            spawn_listening(proxy_command(&certs, storage_addr, "127.0.0.1:0", shape()));
        let storage_key = std::fs::read_to_string(db.join("routing.pub"))
            .expect("routing.pub")
            .trim()
            .to_string();
        Servers {
            certs,
            storage: Reaped(storage),
            proxy: Reaped(proxy),
            proxy_addr,
            storage_addr,
            storage_key,
        }
    }

    /// `shroud agent` for `state`, against `proxy`, with or without the storage key.
    fn agent(&self, proxy: SocketAddr, state: &Path, with_key: bool) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shroud"));
        cmd.args(["agent", "--listen", "127.0.0.1:0", "--proxy"])
            .arg(proxy.to_string())
            .arg("--ca")
            .arg(&self.certs.ca)
            .arg("--state")
            .arg(state)
            .arg("--key-file")
            .arg(crate::common::key_file(state));
        if with_key {
            cmd.args(["--storage-key", &self.storage_key]);
        }
        cmd
    }
}

/// Sends SIGTERM and waits for the exit; panics (after SIGKILL) past `limit`.
fn terminate(child: &mut Child, what: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            let took = start.elapsed();
            assert!(exit.success(), "{what}: exit status {exit:?} after SIGTERM");
            return took;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running {limit:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

const SECOND: Duration = Duration::from_secs(1);

/// A process's core file size limits, soft and hard, as /proc shows them.
fn core_limit(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("a core limit");
    let words: Vec<&str> = line.split_whitespace().collect();
    format!("{} {}", words[4], words[5])
}

#[test]
fn the_state_key_lives_where_the_user_says() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Servers::start(dir.path());
    let state = dir.path().join("alice");
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shroud"));
        cmd.args(["agent", "--listen", "127.0.0.1:0", "--proxy"])
            .arg(s.proxy_addr.to_string())
            .arg("--ca")
            .arg(&s.certs.ca)
            .arg("--state")
            .arg(&state)
            .args(["--storage-key", &s.storage_key])
            .args(extra)
            .env("RUST_BACKTRACE", "0");
        let out = cmd.output().expect("run");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    // No default key file beside the state.
    let err = run(&[]);
    assert!(
        err.contains("--key-file") && err.contains("--passphrase-env"),
        "{err}"
    );
    let inside = state.join("state.key");
    let err = run(&["--key-file", &inside.to_string_lossy()]);
    assert!(err.contains("inside the state directory"), "{err}");
    assert!(!state.join("state.db").exists(), "nothing was created");
    // A state key file an older version left inside: named, with what to do.
    std::fs::create_dir_all(&state).expect("dir");
    std::fs::write(&inside, [1u8; 32]).expect("old key");
    let err = run(&[]);
    assert!(err.contains("move it out"), "{err}");
}

#[test]
fn sigterm_stops_every_service_within_a_second() {
    let dir = tempfile::tempdir().expect("dir");
    let mut s = Servers::start(dir.path());
    let state = dir.path().join("alice");
    // A running agent, its proxy up.
    let (agent, _) = spawn_listening(s.agent(s.proxy_addr, &state, true));
    let mut agent = Reaped(agent);
    // It holds keys: no core file may ever carry them (issue 12, finding 8).
    for pid in [agent.0.id(), s.storage.0.id(), s.proxy.0.id()] {
        assert_eq!(core_limit(pid), "0 0", "process {pid} may dump core");
    }
    std::thread::sleep(Duration::from_millis(600));
    let up = terminate(&mut agent.0, "agent, proxy up", SECOND);
    // Again on the same state (it opens after that stop); then the proxy stops first.
    let (agent, _) = spawn_listening(s.agent(s.proxy_addr, &state, true));
    let mut agent = Reaped(agent);
    std::thread::sleep(Duration::from_millis(600));
    let proxy = terminate(&mut s.proxy.0, "proxy", SECOND);
    std::thread::sleep(Duration::from_millis(1500));
    let gone = terminate(&mut agent.0, "agent, proxy gone", SECOND);
    // An agent stuck connecting: a "proxy" that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut stuck = Reaped(
        s.agent(
            silent.local_addr().expect("addr"),
            &dir.path().join("bob"),
            true,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn"),
    );
    std::thread::sleep(Duration::from_millis(800));
    let connecting = terminate(&mut stuck.0, "agent, connecting", SECOND);
    let storage = terminate(&mut s.storage.0, "storage", SECOND);
    println!(
        "SIGTERM to exit: agent {up:?} (proxy up), {gone:?} (proxy gone), {connecting:?} (connecting); proxy {proxy:?}; storage {storage:?}"
    );
}

#[test]
fn an_agent_without_the_storage_key_names_the_flag_at_once() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Servers::start(dir.path());
    let start = Instant::now();
    let out = s
        .agent(s.proxy_addr, &dir.path().join("alice"), false)
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .output()
        .expect("run");
    let took = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--storage-key"), "{err}");
    assert!(err.contains("routing.pub"), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // A proxy that is not there: the error names the address and the flag.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = nobody.local_addr().expect("addr");
    drop(nobody);
    let out = s
        .agent(addr, &dir.path().join("bob"), true)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&addr.to_string()) && err.contains("--proxy"),
        "{err}"
    );
}

#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Servers::start(dir.path());
    for (what, addr) in [("proxy", s.proxy_addr), ("storage", s.storage_addr)] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shroud"));
        cmd.args([what, "stats", &addr.to_string(), "--ca"])
            .arg(&s.certs.ca);
        if what == "storage" {
            // Storage serves only holders of a proxy certificate (its operator included).
            cmd.arg("--client-cert")
                .arg(&s.certs.proxy_cert)
                .arg("--client-key")
                .arg(&s.certs.proxy_key);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // Like `| head -0`: the reader is gone before anything is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{what}: {:?} {err}", out.status);
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
}

/// `shroud proxy stats` prints the counters and the batch round trips' tail: the histogram
/// as its nonzero classes, and its quantiles (none yet on an idle proxy).
#[test]
fn proxy_stats_print_the_batch_tail() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Servers::start(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_shroud"))
        .args(["proxy", "stats", &s.proxy_addr.to_string(), "--ca"])
        .arg(&s.certs.ca)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(v["epochs"].is_u64(), "{v}");
    assert!(v["batch_histogram"].is_object(), "{v}");
    for q in ["batch_p50_us", "batch_p99_us", "batch_p999_us"] {
        assert!(v[q].is_null() || v[q].is_u64(), "{q}: {v}");
    }
    let counted: u64 = v["batch_histogram"]
        .as_object()
        .expect("object")
        .values()
        .map(|n| n.as_u64().expect("a count"))
        .sum();
    assert_eq!(v["batch_p99_us"].is_null(), counted == 0, "{v}");
}
