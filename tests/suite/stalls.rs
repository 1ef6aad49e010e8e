//! Issue 12, finding 5: one client must not stall every epoch. Registration ran on the
//! connection to storage that the epoch clock needs, any number of times per connection, and
//! a client that deleted its own store made every later batch fall back to one storage round
//! trip per client. Here 200 connections loop `Register` and a client deletes its own store
//! while honest clients run their schedule: they miss no epoch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use shroud_net::conn::Connection;
use shroud_net::frame_codec;
use shroud_proto::proxy::{ClientMsg, ProxyMsg};
use shroud_proto::{ErrorCode, Hello, Limits, Shape, decode, encode};
use tokio_util::codec::Framed;

fn shape() -> Shape {
    Shape::new(256, 64, 2)
        .expect("shape")
        .with_schedule(1, 50)
        .expect("shape")
        .with_mail(0, 0)
}

/// One connection that registers a fresh store, tries a second registration (refused), and
/// closes: returns whether the second was refused.
async fn register_twice(stack: &shroud_testkit::stack::Stack) -> Option<bool> {
    let tls = stack.tls.client().ok()?;
    let io = tls.connect(stack.proxy).await.ok()?;
    let mut conn = Framed::new(io, frame_codec(Limits::default()));
    let send = |m: &ClientMsg| Bytes::from(encode(m, Limits::default()).expect("encode"));
    conn.send(send(&ClientMsg::Hello(Hello::current())))
        .await
        .ok()?;
    conn.next().await?.ok()?;
    let grant = shroud_client::random_grant(&mut rand::rng());
    conn.send(send(&ClientMsg::Register(grant))).await.ok()?;
    let first: ProxyMsg = decode(&conn.next().await?.ok()?, Limits::default()).ok()?;
    if first != ProxyMsg::Registered {
        return None;
    }
    let again = shroud_client::random_grant(&mut rand::rng());
    conn.send(send(&ClientMsg::Register(again))).await.ok()?;
    let second: ProxyMsg = decode(&conn.next().await?.ok()?, Limits::default()).ok()?;
    Some(second == ProxyMsg::Error(ErrorCode::Unauthorized))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_and_a_deleted_store_stall_nobody() {
    let stack = Arc::new(
        shroud_testkit::stack::Stack::start(shape())
            .await
            .expect("stack"),
    );
    let mut rng = rand::rng();
    let mut honest = Vec::new();
    for _ in 0..4 {
        let (client, task) = shroud_client::Client::start(
            stack.client_config().expect("config"),
            shroud_oram::Key::generate(&mut rng),
            shroud_client::random_grant(&mut rng),
        )
        .await
        .expect("client");
        honest.push((client, task));
    }
    // The client that will delete its own store.
    let doomed = shroud_client::random_grant(&mut rng);
    let (rogue, rogue_task) = shroud_client::Client::start(
        stack.client_config().expect("config"),
        shroud_oram::Key::generate(&mut rng),
        doomed.clone(),
    )
    .await
    .expect("rogue client");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats: Vec<_> = honest.iter().map(|(c, _)| c.stats()).collect();
    let before: Vec<(u64, u64)> = stats
        .iter()
        .map(|s| (s.epochs.load(Relaxed), s.failed_exchanges.load(Relaxed)))
        .collect();
    let started = Instant::now();
    // 200 connections registering in a loop, each trying twice.
    let stop = Arc::new(AtomicBool::new(false));
    let (registered, refused_again) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let loops: Vec<_> = (0..200)
        .map(|_| {
            let (stack, stop) = (stack.clone(), stop.clone());
            let (registered, refused_again) = (registered.clone(), refused_again.clone());
            tokio::spawn(async move {
                while !stop.load(Relaxed) {
                    if let Some(refused) = register_twice(&stack).await {
                        registered.fetch_add(1, Relaxed);
                        refused_again.fetch_add(u64::from(refused), Relaxed);
                    }
                }
            })
        })
        .collect();
    // Meanwhile the rogue deletes its store behind the proxy's back.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut direct = Connection::connect(
        stack.storage,
        &stack.tls.client().expect("tls"),
        Limits::default(),
    )
    .await
    .expect("storage");
    direct.delete_store(&doomed).await.expect("delete");
    tokio::time::sleep(Duration::from_millis(4000)).await;
    stop.store(true, Relaxed);
    for l in loops {
        let _ = tokio::time::timeout(Duration::from_secs(10), l).await;
    }
    let took = started.elapsed();
    let expected = took.as_millis() as u64 / u64::from(shape().epoch_ms);
    let after: Vec<(u64, u64)> = stats
        .iter()
        .map(|s| (s.epochs.load(Relaxed), s.failed_exchanges.load(Relaxed)))
        .collect();
    drop(rogue);
    let _ = tokio::time::timeout(Duration::from_secs(2), rogue_task).await;
    for (c, t) in honest {
        drop(c);
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let (registered, refused_again) = (registered.load(Relaxed), refused_again.load(Relaxed));
    println!(
        "{registered} registrations in {took:?} ({refused_again} second ones refused); honest clients: {:?} epochs of {expected}, failed {:?}",
        before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.0 - b.0)
            .collect::<Vec<_>>(),
        before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.1 - b.1)
            .collect::<Vec<_>>()
    );
    assert!(
        registered > 200,
        "the registration loops hardly ran: {registered}"
    );
    assert_eq!(
        refused_again, registered,
        "a second registration on a connection was accepted"
    );
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.1 - b.1, 0, "an honest client's epoch failed");
        assert!(
            a.0 - b.0 + 5 >= expected,
            "an honest client made {} epochs of {expected}",
            a.0 - b.0
        );
    }
}
