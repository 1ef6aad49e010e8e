//! `shroud demo`: the whole system in one process, in under a minute, on a fresh machine.
//!
//! It starts an embedded storage server (sled in a temp dir), a proxy, and two agents (Alice
//! and Bob) each with its own store and a Redis front on 127.0.0.1. Alice runs a workload
//! through `SET`/`GET` over RESP; Bob does nothing. Then it prints what each did next to what
//! storage saw of each: the same slots per epoch, the same bytes, and leaves that the same
//! statistics cannot tell apart. Then the mailbox: Alice, Bob and Carol, two runs (Alice
//! writes to Bob, then to Carol), and the storage and proxy views of each
//! ([`crate::demo::mail`]).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::SeedableRng;
use rand::rngs::StdRng;
use redis_protocol::resp2::types::OwnedFrame;
use shroud_client::{Client, Kv};
use shroud_oram::Key;
use shroud_storage::Transcript;
use tokio::net::{TcpListener, TcpStream};

use shroud_proto::Shape;
use shroud_testkit::stack::Stack;

struct Agent {
    name: &'static str,
    kv: Kv,
    store: String,
    addr: std::net::SocketAddr,
    token: shroud_client::token::AccessToken,
    task: tokio::task::JoinHandle<Result<(), shroud_client::ClientError>>,
    front: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn agent(stack: &Stack, name: &'static str, rng: &mut StdRng) -> Result<Agent> {
    let grant = shroud_client::random_grant(rng);
    let store = grant.store.to_string();
    let (client, task) = Client::start(stack.client_config()?, Key::generate(rng), grant).await?;
    let kv = Kv::new(client, shroud_client::kv::DEFAULT_MAX_VALUE);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // The front admits only clients with the token, as a real agent's does.
    let token = shroud_client::token::AccessToken::generate(rng);
    let front = tokio::spawn(shroud_client::agent::serve(
        kv.clone(),
        listener,
        Some(token.clone()),
        std::future::pending(),
    ));
    Ok(Agent {
        name,
        kv,
        store,
        addr,
        token,
        task,
        front,
    })
}

/// Runs the demo; `seconds` of schedule in all.
pub async fn run(seconds: f64) -> Result<()> {
    let started = Instant::now();
    let shape = Shape::new(1 << 12, 1024, 4)?
        .with_schedule(1, 100)?
        .with_mail(0, 0);
    crate::outln!(
        "shroud demo: storage (sled, temp dir) + proxy + two agents, TLS on every link, in one process"
    );
    let stack = Stack::start(shape)
        .await
        .context("starting storage and proxy")?;
    let s = stack.shape;
    crate::outln!(
        "  proxy shape: every client sends {} slot(s) of {} buckets x {} bytes every {} ms (N = {}, B = {}, Z = {}, T = {})\n",
        s.slots_per_epoch,
        s.path_len,
        s.bucket_len,
        s.epoch_ms,
        s.capacity,
        s.block_size,
        s.bucket_slots,
        s.cached_levels
    );
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let alice = agent(&stack, "alice", &mut rng).await?;
    let bob = agent(&stack, "bob", &mut rng).await?;
    crate::outln!(
        "  alice's agent: redis://{}   bob's agent: redis://{}",
        alice.addr,
        bob.addr
    );
    // Alice works, over the Redis protocol; Bob stays idle.
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut conn = TcpStream::connect(alice.addr).await?;
    shroud_client::resp::call(&mut conn, &[b"AUTH", alice.token.as_str().as_bytes()]).await?;
    let mut ops = 0u64;
    let mut sizes = Vec::new();
    for i in 0u64.. {
        if Instant::now() + Duration::from_millis(600) > deadline {
            break;
        }
        let key = format!("note:{}", i % 12);
        let len = [10usize, 900, 3000, 20_000][(i % 4) as usize];
        let value: Vec<u8> = (0..len)
            .map(|j| b'a' + ((i as usize + j) % 26) as u8)
            .collect();
        let r = shroud_client::resp::call(&mut conn, &[b"SET", key.as_bytes(), &value]).await?;
        anyhow::ensure!(
            r == OwnedFrame::SimpleString(b"OK".to_vec()),
            "SET failed: {r:?}"
        );
        let r = shroud_client::resp::call(&mut conn, &[b"GET", key.as_bytes()]).await?;
        anyhow::ensure!(
            r == OwnedFrame::BulkString(value),
            "GET returned something else"
        );
        ops += 2;
        sizes.push(len);
    }
    let keys = alice.kv.len().await;
    tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
    let stats = |a: &Agent| {
        let st = a.kv.client().stats();
        use std::sync::atomic::Ordering::Relaxed;
        (
            st.epochs.load(Relaxed),
            st.real.load(Relaxed),
            st.dummy.load(Relaxed),
        )
    };
    let (ae, ar, ad) = stats(&alice);
    let (be, br, bd) = stats(&bob);
    crate::outln!("\nWhat the clients did:");
    crate::outln!(
        "  alice: {ops} Redis commands (SET/GET of values from 10 B to 20 KB; {keys} keys), {ar} real and {ad} dummy ORAM accesses over {ae} epochs"
    );
    crate::outln!(
        "  bob:   nothing: 0 commands, {br} real and {bd} dummy ORAM accesses over {be} epochs"
    );
    drop(conn);
    // What storage saw.
    let seen = crate::audit::observe::stores(&stack.transcript, &s)?;
    let batches = Transcript::read(&stack.transcript)?
        .iter()
        .filter(|e| e.op == shroud_storage::Op::Batch)
        .count();
    let leaves = 1u64 << (s.path_len + s.cached_levels - 1);
    crate::outln!("\nWhat storage saw ({batches} batches, one per epoch, from its transcript):");
    crate::outln!(
        "  {:<6} {:>8} {:>14} {:>14}   leaf histogram (8 bins)",
        "store",
        "slots",
        "bytes read",
        "bytes written"
    );
    let mut hists = Vec::new();
    for a in [&alice, &bob] {
        let v = seen.get(&a.store).cloned().unwrap_or_default();
        let slots: u64 = v.epochs.iter().map(|e| e.1).sum();
        let written: u64 = v.epochs.iter().map(|e| e.2).sum();
        let read: u64 = v.epochs.iter().map(|e| e.3).sum::<u64>() * u64::from(s.bucket_len);
        let h = crate::audit::observe::histogram(&v.leaves, leaves, 8);
        crate::outln!(
            "  {:<6} {:>8} {:>14} {:>14}   {:?}",
            a.name,
            slots,
            read,
            written,
            h
        );
        hists.push(h);
    }
    let t = crate::stats::chi2_two_sample(&hists[0], &hists[1]);
    crate::outln!(
        "\n  Alice's and Bob's leaves: chi-squared two-sample p = {:.2} (a small p would mean storage can tell them apart).",
        t.p_value
    );
    crate::outln!(
        "  Busy and idle look the same: same slots per epoch, same bytes, uniformly random paths."
    );
    crate::outln!(
        "  (Any difference in slot counts is at the edges: when each agent connected, and when the demo stopped.)"
    );
    // Stop the Redis fronts and drop the handles: each scheduler stores its last write-back
    // and stops.
    for a in [alice, bob] {
        a.front.abort();
        let _ = a.front.await;
        drop(a.kv);
        let _ = tokio::time::timeout(Duration::from_secs(5), a.task).await;
    }
    drop(stack);
    crate::demo::mail::run(4.0).await?;
    crate::outln!(
        "\nDone in {:.1} s; temporary files removed.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
