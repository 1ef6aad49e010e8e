//! The KV store through the whole stack: the agent's Redis front, the proxy and storage, with
//! TLS. A proptest against a `BTreeMap`; kill -9 of a real `shroud agent` process during a
//! write-heavy workload (CI: 30 kills; `SHROUD_CRASH_ITERS=200 cargo test --release --test
//! agent -- --ignored` for the long run); and the real `redis-cli`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use redis_protocol::resp2::types::OwnedFrame;
use shroud_proto::Shape;
use shroud_testkit::stack::Stack;
use tokio::net::TcpStream;

fn shape() -> Shape {
    Shape::new(512, 64, 2)
        .expect("shape")
        .with_schedule(2, 20)
        .expect("shape")
        .with_mail(0, 0)
}

/// The same store in Ring ORAM (an eviction every 20 accesses: every 10th epoch).
fn ring_shape() -> Shape {
    Shape::ring(512, 64, 2)
        .expect("shape")
        .with_schedule(2, 20)
        .expect("shape")
        .with_mail(0, 0)
}

/// A minimal RESP client.
struct Resp(TcpStream);

impl Resp {
    /// To a front without a token (in-process).
    async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Resp(TcpStream::connect(addr).await?))
    }

    /// To an agent process, with its token.
    async fn agent(a: &Agent) -> std::io::Result<Self> {
        Ok(Resp(
            crate::common::agent_connection(a.addr, &a.token).await?,
        ))
    }

    async fn call(&mut self, args: &[&[u8]]) -> std::io::Result<OwnedFrame> {
        shroud_client::resp::call(&mut self.0, args).await
    }
}

/// A key and a value.
type Pair = (String, Vec<u8>);

struct Agent {
    child: Child,
    addr: SocketAddr,
    token: String,
}

fn spawn_agent(stack: &Stack, state: &Path) -> Agent {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shroud"));
    cmd.args([
        "agent",
        "--listen",
        "127.0.0.1:0",
        "--proxy",
        &stack.proxy.to_string(),
        "--ca",
    ])
    .arg(&stack.tls.files.ca)
    .arg("--state")
    .arg(state)
    .arg("--key-file")
    .arg(crate::common::key_file(state));
    let (child, addr) = crate::common::spawn_listening(cmd);
    Agent {
        child,
        addr,
        token: crate::common::agent_token(state),
    }
}

/// A failing test must not leave its agent running.
impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGKILL (std's `kill` on Unix), and reap.
fn kill9(a: Agent) {
    drop(a);
}

async fn crash_loop(iters: usize, seed: u64, shape: Shape) {
    let stack = Stack::start(shape).await.expect("stack");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut rng = StdRng::seed_from_u64(seed);
    let model: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    let inflight: Arc<Mutex<Option<Pair>>> = Arc::default();
    let mut next = 0u64;
    let mut recovered_in_flight = 0;
    for iter in 0..iters {
        let agent = spawn_agent(&stack, &state);
        let mut c = Resp::agent(&agent).await.expect("connect");
        // Every acknowledged write is there; the one in flight is there whole or not at all.
        let keys: Vec<String> = model
            .lock()
            .keys()
            .cloned()
            .chain(inflight.lock().iter().map(|(k, _)| k.clone()))
            .collect();
        for k in keys {
            let got = match c
                .call(&[b"GET", k.as_bytes()])
                .await
                .expect("GET after restart")
            {
                OwnedFrame::BulkString(v) => Some(v),
                OwnedFrame::Null => None,
                other => panic!("iteration {iter}: GET {k} gave {other:?}"),
            };
            let acked = model.lock().get(&k).cloned();
            let flying = inflight
                .lock()
                .clone()
                .filter(|(fk, _)| *fk == k)
                .map(|(_, v)| v);
            if got == acked {
                continue;
            }
            assert!(
                flying.is_some() && got == flying,
                "iteration {iter}: key {k} holds neither its acknowledged value nor the one in flight"
            );
            model.lock().insert(k.clone(), got.expect("present"));
            recovered_in_flight += 1;
        }
        *inflight.lock() = None;
        // Write until killed.
        let (m, f) = (model.clone(), inflight.clone());
        let start = next;
        let writer = tokio::spawn(async move {
            let mut i = start;
            loop {
                let k = format!("key{}", i % 8);
                let len = [5usize, 64, 200, 130][(i % 4) as usize];
                let v: Vec<u8> = (0..len)
                    .map(|j| b'a' + ((i as usize * 7 + j) % 26) as u8)
                    .collect();
                *f.lock() = Some((k.clone(), v.clone()));
                match c.call(&[b"SET", k.as_bytes(), &v]).await {
                    Ok(OwnedFrame::SimpleString(ok)) if ok == b"OK" => {
                        m.lock().insert(k, v);
                        *f.lock() = None;
                        i += 1;
                    }
                    _ => return i,
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        kill9(agent);
        next = writer.await.expect("writer");
    }
    println!(
        "{iters} kills of the agent: {next} acknowledged SETs kept, {recovered_in_flight} in-flight SETs found applied whole"
    );
    assert!(next > iters as u64, "the workload made progress");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_kill_9_keeps_every_acknowledged_write() {
    crash_loop(30, 1, shape()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_kill_9_keeps_every_acknowledged_write_in_ring_oram() {
    crash_loop(30, 3, ring_shape()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: SHROUD_CRASH_ITERS kills (default 200)"]
async fn agent_kill_9_long() {
    let iters = crate::common::env_count("SHROUD_CRASH_ITERS", 200);
    crash_loop(iters, 2, shape()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: SHROUD_CRASH_ITERS kills (default 200)"]
async fn agent_kill_9_long_in_ring_oram() {
    let iters = crate::common::env_count("SHROUD_CRASH_ITERS", 200);
    crash_loop(iters, 4, ring_shape()).await;
}

#[derive(Clone, Debug)]
enum KvOp {
    Put(u8, Vec<u8>),
    Get(u8),
    Del(u8),
}

fn kv_ops() -> impl Strategy<Value = Vec<KvOp>> {
    proptest::collection::vec(
        prop_oneof![
            (0u8..6, proptest::collection::vec(any::<u8>(), 0..300))
                .prop_map(|(k, v)| KvOp::Put(k, v)),
            (0u8..6).prop_map(KvOp::Get),
            (0u8..6).prop_map(KvOp::Del),
        ],
        1..12,
    )
}

#[test]
fn kv_through_the_full_stack_agrees_with_a_btreemap() {
    kv_model(shape());
}

#[test]
fn kv_through_the_full_stack_agrees_with_a_btreemap_in_ring_oram() {
    kv_model(ring_shape());
}

/// The same on a real Redis Cluster (issue 15): 3 masters, 3 replicas, storage on the
/// cluster engine.
#[test]
fn kv_through_the_full_stack_on_a_redis_cluster_agrees_with_a_btreemap() {
    let cluster = shroud_testkit::redis_cluster::RedisCluster::start(3, 1).expect("cluster");
    kv_model_on(shape(), Some(&cluster.url()));
}

fn kv_model(shape: Shape) {
    kv_model_on(shape, None);
}

/// The model test, with storage on sled or on the Redis Cluster of `redis`.
fn kv_model_on(shape: Shape, redis: Option<&str>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stack, agent, _dir) = rt.block_on(async {
        let stack = match redis {
            None => Stack::start(shape).await.expect("stack"),
            Some(url) => {
                let backend = shroud_storage::RedisBackend::connect(url, Default::default())
                    .expect("connect to the cluster");
                let dir = tempfile::tempdir().expect("tempdir");
                let config = shroud_testkit::fixtures::storage_config();
                Stack::start_with(shape, std::sync::Arc::new(backend), config, dir)
                    .await
                    .expect("stack")
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let settings = shroud::cmd::agent::AgentSettings {
            proxy: Some(stack.proxy),
            state: Some(dir.path().join("state")),
            ca: Some(stack.tls.files.ca.clone()),
            key_file: Some(dir.path().join("state.key")),
            ..Default::default()
        };
        let running = shroud::cmd::agent::start(&settings).await.expect("agent");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(shroud_client::agent::serve(
            running.kv.clone(),
            listener,
            None,
            std::future::pending(),
        ));
        (stack, (addr, running), dir)
    });
    let addr = agent.0;
    let case = std::sync::atomic::AtomicU32::new(0);
    proptest!(ProptestConfig { cases: 12, ..ProptestConfig::default() }, |(ops in kv_ops())| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("case{n}:");
        rt.block_on(async {
            let mut c = Resp::connect(addr).await.unwrap();
            let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            for op in &ops {
                match op {
                    KvOp::Put(k, v) => {
                        let key = format!("{prefix}{k}");
                        assert_eq!(c.call(&[b"SET", key.as_bytes(), v]).await.unwrap(), OwnedFrame::SimpleString(b"OK".to_vec()));
                        model.insert(key, v.clone());
                    }
                    KvOp::Get(k) => {
                        let key = format!("{prefix}{k}");
                        let want = model.get(&key).map_or(OwnedFrame::Null, |v| OwnedFrame::BulkString(v.clone()));
                        assert_eq!(c.call(&[b"GET", key.as_bytes()]).await.unwrap(), want);
                    }
                    KvOp::Del(k) => {
                        let key = format!("{prefix}{k}");
                        let n = i64::from(model.remove(&key).is_some());
                        assert_eq!(c.call(&[b"DEL", key.as_bytes()]).await.unwrap(), OwnedFrame::Integer(n));
                    }
                }
            }
            let pattern = format!("{prefix}*");
            let keys = c.call(&[b"KEYS", pattern.as_bytes()]).await.unwrap();
            let want: Vec<OwnedFrame> = model.keys().map(|k| OwnedFrame::BulkString(k.clone().into_bytes())).collect();
            assert_eq!(keys, OwnedFrame::Array(want));
        });
    });
    drop(stack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_round_trips() {
    let stack = Stack::start(shape()).await.expect("stack");
    let dir = tempfile::tempdir().unwrap();
    let agent = spawn_agent(&stack, &dir.path().join("state"));
    let port = agent.addr.port().to_string();
    let cli_port = port.clone();
    let token = agent.token.clone();
    let cli_token = token.clone();
    let token_file = dir.path().join("state").join("agent.token");
    let cli = move |args: &[&str]| -> String {
        let out = Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &cli_port,
                "--no-auth-warning",
                "-a",
                &cli_token,
            ])
            .args(args)
            .output()
            .expect("redis-cli is installed (.ci/run installs redis-tools)");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let run = tokio::task::spawn_blocking(move || {
        assert_eq!(cli(&["PING"]), "PONG");
        assert_eq!(cli(&["SET", "greeting", "hello world"]), "OK");
        assert_eq!(cli(&["GET", "greeting"]), "hello world");
        assert_eq!(cli(&["SET", "other", "2"]), "OK");
        // A nil prints as an empty line, which trim() drops.
        assert_eq!(
            cli(&["MGET", "greeting", "other", "missing"]),
            "hello world\n2"
        );
        assert_eq!(cli(&["DEL", "other", "missing"]), "1");
        assert_eq!(cli(&["EXISTS", "greeting", "other"]), "1");
        assert_eq!(cli(&["DBSIZE"]), "1");
        assert!(cli(&["FLUSHALL"]).contains("unknown command"));
        // redis-benchmark, unmodified.
        let out = Command::new("redis-benchmark")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                "set,get",
                "-n",
                "20",
                "-c",
                "2",
                "-q",
                "-a",
                &token,
            ])
            .output()
            .expect("redis-benchmark is installed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("SET") && text.contains("GET"),
            "{text}"
        );
        // The `shroud kv` CLI against the running agent.
        let kv = |args: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_shroud"))
                .args([
                    "kv",
                    "--agent",
                    &format!("127.0.0.1:{port}"),
                    "--token-file",
                ])
                .arg(&token_file)
                .args(args)
                .output()
                .expect("shroud kv")
        };
        assert!(kv(&["put", "cli-key", "cli value"]).status.success());
        assert_eq!(
            String::from_utf8_lossy(&kv(&["get", "cli-key"]).stdout).trim(),
            "cli value"
        );
        assert!(String::from_utf8_lossy(&kv(&["ls", "cli-*"]).stdout).contains("cli-key"));
        assert!(kv(&["del", "cli-key"]).status.success());
        assert!(!kv(&["get", "cli-key"]).status.success());
        // Another local process without the token gets nothing (issue 12, finding 8).
        let stranger = |auth: &[&str], args: &[&str]| -> String {
            let out = Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &port, "--no-auth-warning"])
                .args(auth)
                .args(args)
                .output()
                .expect("redis-cli");
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        assert!(stranger(&[], &["GET", "greeting"]).contains("NOAUTH"));
        assert!(stranger(&[], &["MAIL.ADDRESS"]).contains("NOAUTH"));
        let wrong = "0".repeat(64);
        assert!(stranger(&["-a", &wrong], &["GET", "greeting"]).contains("WRONGPASS"));
        let no_token = Command::new(env!("CARGO_BIN_EXE_shroud"))
            .args([
                "kv",
                "--agent",
                &format!("127.0.0.1:{port}"),
                "get",
                "greeting",
            ])
            .env_remove("SHROUD_TOKEN_FILE")
            .output()
            .expect("shroud kv");
        assert!(!no_token.status.success());
        assert!(String::from_utf8_lossy(&no_token.stderr).contains("--token-file"));
    });
    run.await.expect("redis-cli checks");
    kill9(agent);
}

/// A value over the limit, or more than the store holds, is refused with a typed error and
/// nothing already stored is harmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_typed_and_harmless() {
    use shroud_client::KvError;
    let small = Shape::new(16, 64, 1)
        .expect("shape")
        .with_schedule(2, 20)
        .expect("shape")
        .with_mail(0, 0);
    let stack = Stack::start(small).await.expect("stack");
    let mut rng = StdRng::seed_from_u64(9);
    let grant = shroud_client::random_grant(&mut rng);
    let (client, _task) = shroud_client::Client::start(
        stack.client_config().unwrap(),
        shroud_oram::Key::generate(&mut rng),
        grant,
    )
    .await
    .unwrap();
    let kv = shroud_client::Kv::new(client, 512);
    kv.put(b"keep", &[1u8; 300]).await.unwrap();
    assert!(matches!(
        kv.put(b"big", &[0u8; 513]).await,
        Err(KvError::ValueTooLarge { got: 513, max: 512 })
    ));
    assert!(matches!(
        kv.put(&[b'k'; 1025], b"v").await,
        Err(KvError::KeyTooLong(1025))
    ));
    // 16 blocks of 64 bytes: "keep" holds 5; 12 more do not fit.
    assert!(matches!(
        kv.put(b"fill", &[2u8; 64 * 12]).await,
        Err(KvError::ValueTooLarge { .. }) | Err(KvError::Full { .. })
    ));
    kv.put(b"fill", &[2u8; 64 * 8]).await.unwrap();
    assert!(matches!(
        kv.put(b"more", &[3u8; 64 * 4]).await,
        Err(KvError::Full { needed: 4, free: 3 })
    ));
    assert_eq!(kv.get(b"keep").await.unwrap().unwrap(), vec![1u8; 300]);
    assert_eq!(kv.get(b"fill").await.unwrap().unwrap(), vec![2u8; 512]);
    assert_eq!(kv.get(b"more").await.unwrap(), None);
    // Overwriting frees the old blocks.
    kv.put(b"fill", b"small").await.unwrap();
    kv.put(b"more", &[3u8; 64 * 4]).await.unwrap();
    assert_eq!(kv.len().await, 3);
}

/// Operations run concurrently (their block accesses share epochs) and stay linearizable:
/// readers of a key that writers keep overwriting, while other writers take the blocks those
/// overwrites free, only ever see whole values that were put, in order; and concurrent
/// operations finish in fewer epochs than one after another. (When freed blocks may be
/// reused is `kv`'s unit test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_operations_share_epochs_and_read_only_values_put() {
    let shape = Shape::new(64, 64, 1)
        .expect("shape")
        .with_schedule(4, 20)
        .expect("shape")
        .with_mail(0, 0);
    let stack = Stack::start(shape).await.expect("stack");
    let mut rng = StdRng::seed_from_u64(3);
    let (client, _task) = shroud_client::Client::start(
        stack.client_config().unwrap(),
        shroud_oram::Key::generate(&mut rng),
        shroud_client::random_grant(&mut rng),
    )
    .await
    .unwrap();
    let kv = shroud_client::Kv::new(client, 1024);
    // A value of three blocks, each block naming the version and its part.
    let value = |key: u8, version: u32| -> Vec<u8> {
        (0..3u8)
            .flat_map(|part| {
                let mut block = vec![key; 64];
                block[..4].copy_from_slice(&version.to_le_bytes());
                block[4] = part;
                block
            })
            .collect()
    };
    kv.put(b"hot", &value(1, 0)).await.unwrap();
    let epochs = || {
        kv.client()
            .stats()
            .epochs
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let start = epochs();
    let writer = |key: u8, times: u32| {
        let kv = kv.clone();
        async move {
            for version in 1..=times {
                let k = if key == 1 { b"hot".to_vec() } else { vec![key] };
                kv.put(&k, &value(key, version)).await.unwrap();
            }
        }
    };
    let reader = || {
        let kv = kv.clone();
        async move {
            let mut last = 0;
            for _ in 0..12 {
                let v = kv.get(b"hot").await.unwrap().expect("hot is there");
                let version = u32::from_le_bytes(v[..4].try_into().unwrap());
                assert_eq!(v, value(1, version), "a torn or foreign value");
                assert!(version >= last, "went back from {last} to {version}");
                last = version;
            }
        }
    };
    tokio::join!(
        writer(1, 12),
        writer(2, 12),
        writer(3, 12),
        reader(),
        reader()
    );
    let concurrent = epochs() - start;
    // The same operations one after another.
    let start = epochs();
    writer(1, 12).await;
    writer(2, 12).await;
    writer(3, 12).await;
    reader().await;
    reader().await;
    let serial = epochs() - start;
    println!("epochs: concurrent {concurrent}, one after another {serial}");
    assert!(
        concurrent * 2 < serial,
        "concurrent {concurrent} epochs, serial {serial}"
    );
}
