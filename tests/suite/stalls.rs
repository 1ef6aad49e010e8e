//! Issue 12, finding 5: one client must not stall every epoch or fill the disk. Registration
//! ran on the connection to storage that the epoch clock needs, any number of times per
//! connection, for free, and a client that deleted its own store made every later batch
//! fall back to one storage round trip per client. Here, while honest clients run their
//! schedule, 200 connections loop `Register` without the work a new store costs, one client
//! creates stores (paying) in a loop until storage's limit on stores stops it, and a client
//! deletes its own store: the honest clients miss no epoch, and storage never holds more
//! stores than its limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use shroud_net::conn::Connection;
use shroud_net::frame_codec;
use shroud_proto::Difficulty;
use shroud_proto::proxy::{ClientMsg, ProxyMsg};
use shroud_proto::{ErrorCode, Hello, Limits, Shape, Work, decode, encode};
use tokio_util::codec::Framed;

/// Storage's limit on stores in this test.
const MAX_STORES: u64 = 40;
/// Storage's difficulty in this test: 12 bits, so that an unpaid registration (work 0)
/// passes by chance once in 4,096.
const DIFFICULTY: Difficulty = Difficulty(12);

fn shape() -> Shape {
    Shape::new(256, 64, 2)
        .expect("shape")
        .with_schedule(1, 50)
        .expect("shape")
        .with_mail(0, 0)
}

/// One connection: hello, then `Register` of a fresh store with `work` (or the work that
/// pays for it at the test difficulty, if `None`); returns the proxy's answer, and whether
/// a second registration on the same connection was refused (if the first succeeded).
async fn register(
    stack: &shroud_testkit::stack::Stack,
    work: Option<Work>,
) -> Option<(ProxyMsg, bool)> {
    let tls = stack.tls.client().ok()?;
    let io = tls.connect(stack.proxy).await.ok()?;
    let mut conn = Framed::new(io, frame_codec(Limits::default()));
    let send = |m: &ClientMsg| Bytes::from(encode(m, Limits::default()).expect("encode"));
    conn.send(send(&ClientMsg::Hello(Hello::current())))
        .await
        .ok()?;
    conn.next().await?.ok()?;
    let grant = shroud_client::random_grant(&mut rand::rng());
    let work = work.unwrap_or_else(|| Work::find(&grant.store, DIFFICULTY));
    conn.send(send(&ClientMsg::Register(grant, work)))
        .await
        .ok()?;
    let first: ProxyMsg = decode(&conn.next().await?.ok()?, Limits::default()).ok()?;
    if first != ProxyMsg::Registered {
        return Some((first, false));
    }
    let again = shroud_client::random_grant(&mut rand::rng());
    let work = Work::find(&again.store, DIFFICULTY);
    conn.send(send(&ClientMsg::Register(again, work)))
        .await
        .ok()?;
    let second: ProxyMsg = decode(&conn.next().await?.ok()?, Limits::default()).ok()?;
    Some((first, second == ProxyMsg::Error(ErrorCode::Unauthorized)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_store_creation_and_a_deleted_store_stall_nobody() {
    let dir = tempfile::tempdir().expect("dir");
    let backend = Arc::new(shroud_storage::SledBackend::open(&dir.path().join("db")).expect("db"));
    let mut config = shroud_testkit::fixtures::storage_config();
    config.new_stores.max_stores = MAX_STORES;
    config.new_stores.difficulty = DIFFICULTY;
    let stack = Arc::new(
        shroud_testkit::stack::Stack::start_with(shape(), backend, config, dir)
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
    let proxy_before = crate::common::proxy_epochs(&stack).await;
    let started = Instant::now();
    // 200 connections registering in a loop, without paying for the store.
    let stop = Arc::new(AtomicBool::new(false));
    let (unpaid, unpaid_refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let loops: Vec<_> = (0..200)
        .map(|_| {
            let (stack, stop) = (stack.clone(), stop.clone());
            let (unpaid, unpaid_refused) = (unpaid.clone(), unpaid_refused.clone());
            tokio::spawn(async move {
                while !stop.load(Relaxed) {
                    // Work(0) meets 12 bits for one store id in 4,096: count refusals.
                    if let Some((answer, _)) = register(&stack, Some(Work(0))).await {
                        unpaid.fetch_add(1, Relaxed);
                        let refused = answer == ProxyMsg::Error(ErrorCode::NeedsWork);
                        unpaid_refused.fetch_add(u64::from(refused), Relaxed);
                    }
                }
            })
        })
        .collect();
    // One client creating stores in a loop, paying for each, until storage's limit refuses
    // it three times (however long that takes on a loaded machine; at most a minute); each
    // connection also tries a second registration (refused).
    let creator = {
        let stack = stack.clone();
        tokio::spawn(async move {
            let (mut created, mut limited, mut second_refused) = (0u64, 0u64, 0u64);
            let give_up = Instant::now() + Duration::from_secs(60);
            while limited < 3 && Instant::now() < give_up {
                match register(&stack, None).await {
                    Some((ProxyMsg::Registered, refused)) => {
                        created += 1;
                        second_refused += u64::from(refused);
                    }
                    Some((ProxyMsg::Error(ErrorCode::StoreLimit), _)) => limited += 1,
                    _ => {}
                }
            }
            (created, limited, second_refused)
        })
    };
    // Meanwhile the rogue deletes its store behind the proxy's back.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut direct = Connection::connect(
        stack.storage,
        &stack.tls.proxy_client().expect("tls"),
        Limits::default(),
    )
    .await
    .expect("storage");
    direct.delete_store(&doomed).await.expect("delete");
    // At least 5 s in all, and until the creator is done.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let (created, limited, second_refused) = tokio::time::timeout(Duration::from_secs(70), creator)
        .await
        .expect("creator stops")
        .expect("creator");
    stop.store(true, Relaxed);
    for l in loops {
        let _ = tokio::time::timeout(Duration::from_secs(10), l).await;
    }
    let stores = direct.stats().await.expect("storage stats").stores;
    let took = started.elapsed();
    let expected = took.as_millis() as u64 / u64::from(shape().epoch_ms);
    // The proxy's window lies inside the clients': its counter is read after theirs at the
    // start and before theirs at the end (the stats connection's handshake may take a few
    // epochs on a loaded machine).
    let ran = crate::common::proxy_epochs(&stack).await - proxy_before;
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
    let (unpaid, unpaid_refused) = (unpaid.load(Relaxed), unpaid_refused.load(Relaxed));
    println!(
        "in {took:?}: {unpaid} unpaid registrations ({unpaid_refused} refused NeedsWork); \
         {created} paid stores created, then {limited} refused StoreLimit; storage holds {stores} \
         stores (limit {MAX_STORES}); the proxy ran {ran} epochs of {expected}; honest clients: \
         {:?} epochs, failed {:?}",
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
    assert!(unpaid > 200, "the registration loops hardly ran: {unpaid}");
    assert!(
        unpaid_refused * 100 >= unpaid * 99,
        "unpaid registrations were accepted: {unpaid_refused} of {unpaid} refused"
    );
    assert!(
        limited > 0,
        "the creator never reached the limit ({created} created)"
    );
    assert!(stores <= MAX_STORES, "storage holds {stores} stores");
    assert_eq!(
        second_refused, created,
        "a second registration on a connection was accepted"
    );
    // The clock kept going: the flood shares these two cores with the proxy, so a batch
    // may outlast its epoch now and then (6 of 100 on a loaded CI machine), but a stall of
    // every epoch, the finding, would lose most of them.
    assert!(
        ran * 100 >= expected * 85,
        "the proxy ran {ran} epochs of {expected}"
    );
    // And every client was served in every epoch the proxy ran (give or take the epoch in
    // flight when the counters were read).
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.1 - b.1, 0, "an honest client's epoch failed");
        assert!(
            a.0 - b.0 + 2 >= ran,
            "an honest client made {} epochs of the {ran} the proxy ran",
            a.0 - b.0
        );
    }
}
