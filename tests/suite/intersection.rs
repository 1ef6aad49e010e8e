//! Issue 13: the intersection attack. Bob stays online; five candidates come and go, each
//! online in a round with probability 1/2 (and in every episode both online and offline at
//! least once), through links the test switches off and on
//! (`shroud_testkit::switch`: the operators see connections close and new ones open). In
//! each of six episodes of six rounds (of 3 s) a random candidate writes to Bob whenever it is
//! online, and the others write to each other now and then. Storage and the proxy together
//! ([`shroud_lab::audit::intersection`]) then rank the candidates as Bob's correspondent in
//! each episode from everything the proxy's transcript holds, frame by frame, joined per
//! client over its connections.
//!
//! The same attack given only the ideal leakage (who was online in which round) cannot do
//! better than chance: the candidates' comings and goings are drawn alike. shroud's
//! transcripts must not help it beyond that: the true senders' ranks are no better than
//! random senders' (p >= 10^-3). The removed inbox delivery, modelled as the leak it had
//! (which inbox got a deposit in each round), must fail the same test.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shroud_lab::audit::intersection::{Episode, Observed, inbox_model, rank_test};
use shroud_proto::Shape;
use shroud_testkit::switch::Switch;

use crate::common::Stack;

const CANDIDATES: usize = 5;
const EPISODES: usize = 6;
const EPISODE_ROUNDS: usize = 6;
/// The test's significance level.
const ALPHA: f64 = 1e-3;

/// 100 ms epochs, a round every 30 (3 s: storage answers six clients' queries, and the
/// keys of those reconnecting, within most rounds; at 2 s it skipped most rounds and Bob
/// received 3 or 4 messages). Two queries a round: with one, Bob reads only his active
/// conversation while he has one (for up to `ACTIVE_ROUNDS` after it, longer than an
/// episode), and otherwise one of five contacts, each online half the time (an offline
/// writer's rows are blank), so about one run in 30 delivered nothing at all.
fn shape() -> Shape {
    Shape::new(1024, 512, 3)
        .expect("shape")
        .with_schedule(2, 100)
        .expect("shape")
        .with_board(256, 2)
        .expect("board")
        .with_mail(30, 2)
}

/// Waits until the proxy reaches epoch `e`.
async fn until_epoch(stack: &Stack, e: u64) {
    while crate::common::proxy_epochs(stack).await < e {
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_intersection_attack_does_no_better_than_online_times() {
    let shape = shape();
    let stack = Stack::start_keeping_frames(shape).await.expect("stack");
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let bob = stack.mail_user(&mut rng).await.expect("bob");
    let mut switches = Vec::new();
    let mut candidates = Vec::new();
    for _ in 0..CANDIDATES {
        let switch = Switch::start(stack.proxy).await.expect("switch");
        let mut config =
            shroud_client::ClientConfig::new(switch.addr(), stack.tls.client().unwrap())
                .with_storage_key(stack.storage_key);
        // Back within a few epochs of the link coming back.
        config.max_backoff = Duration::from_millis(300);
        candidates.push(
            stack
                .mail_user_configured(config, &mut rng)
                .await
                .expect("candidate"),
        );
        switches.push(switch);
    }
    let mut named: Vec<(String, &shroud_testkit::MailUser)> = vec![("bob".into(), &bob)];
    for (i, c) in candidates.iter().enumerate() {
        named.push((format!("c{i}"), c));
    }
    let named: Vec<(&str, &shroud_testkit::MailUser)> =
        named.iter().map(|(n, u)| (n.as_str(), *u)).collect();
    shroud_testkit::befriend(&named).await.expect("contacts");

    // The script: who is online in each round, and each episode's sender.
    let rounds = EPISODES * EPISODE_ROUNDS;
    // Each candidate comes and goes within every episode (online in at least one of its
    // rounds and offline in another: the same rule for all, so they stay alike), so that
    // an episode's sender is never online throughout, which would hide even the inbox leak.
    let mut pattern = || loop {
        let p: Vec<bool> = (0..EPISODE_ROUNDS).map(|_| rng.random_bool(0.5)).collect();
        if p.contains(&true) && p.contains(&false) {
            break p;
        }
    };
    // Per candidate, its rounds; and per round, the candidates.
    let columns: Vec<Vec<bool>> = (0..CANDIDATES)
        .map(|_| (0..EPISODES).flat_map(|_| pattern()).collect())
        .collect();
    let online: Vec<Vec<bool>> = (0..rounds)
        .map(|i| columns.iter().map(|col| col[i]).collect())
        .collect();
    let senders: Vec<usize> = (0..EPISODES)
        .map(|_| rng.random_range(0..CANDIDATES))
        .collect();
    let round_epochs = u64::from(shape.round_epochs);
    let first = crate::common::proxy_epochs(&stack).await / round_epochs + 2;
    for (i, now) in online.iter().enumerate() {
        // Links go off two epochs before the round (a client cut then sends nothing in
        // it) and come back as it begins (a client let in earlier would show in the round
        // before).
        until_epoch(&stack, (first + i as u64) * round_epochs - 2).await;
        for (s, &on) in switches.iter().zip(now) {
            if !on {
                s.set(false);
            }
        }
        until_epoch(&stack, (first + i as u64) * round_epochs).await;
        for (s, &on) in switches.iter().zip(now) {
            if on {
                s.set(true);
            }
        }
        let sender = senders[i / EPISODE_ROUNDS];
        for (c, user) in candidates.iter().enumerate() {
            if !now[c] {
                continue;
            }
            let to = if c == sender {
                Some(bob.address)
            } else if rng.random_bool(0.3) {
                // Chatter among the others (never to Bob).
                let other = (c + rng.random_range(1..CANDIDATES)) % CANDIDATES;
                Some(candidates[other].address)
            } else {
                None
            };
            if let Some(to) = to {
                let body = format!("round {i} from {c}");
                user.mail.send(&to, body.as_bytes()).await.expect("send");
            }
        }
    }
    until_epoch(&stack, (first + rounds as u64) * round_epochs).await;
    let received = bob.stats().mail_received.load(Relaxed);
    let mut stores = Vec::new();
    for e in shroud_storage::Transcript::read(&stack.transcript).expect("storage transcript") {
        // In the order first created (a client that reconnects registers again).
        if e.op == shroud_storage::Op::Create
            && let Some(s) = e.stores.first()
            && !stores.contains(s)
        {
            stores.push(s.clone());
        }
    }
    bob.stop().await;
    for c in candidates {
        c.stop().await;
    }
    drop(switches);

    assert_eq!(stores.len(), 1 + CANDIDATES, "{stores:?}");
    let observed =
        Observed::from_transcript(&stack.proxy_transcript, &shape, &stores).expect("transcript");
    let first = first as usize;
    assert!(observed.len() >= first + rounds, "rounds observed");
    let episodes: Vec<Episode> = senders
        .iter()
        .enumerate()
        .map(|(e, &sender)| Episode {
            rounds: first + e * EPISODE_ROUNDS..first + (e + 1) * EPISODE_ROUNDS,
            sender,
        })
        .collect();
    // The clients came and went as scripted (as the operators saw it).
    let seen: Vec<usize> = (1..=CANDIDATES)
        .map(|c| {
            (first..first + rounds)
                .filter(|&r| observed.rounds[c][r].is_some())
                .count()
        })
        .collect();
    let scripted: Vec<usize> = columns
        .iter()
        .map(|col| col.iter().filter(|&&on| on).count())
        .collect();
    println!("online rounds seen {seen:?}, scripted {scripted:?}; Bob received {received}");
    for (c, col) in columns.iter().enumerate() {
        let row = |f: &dyn Fn(usize) -> bool| -> String {
            (0..rounds).map(|i| if f(i) { '#' } else { '.' }).collect()
        };
        println!("  c{c} scripted {}", row(&|i| col[i]));
        println!(
            "  c{c} seen     {}",
            row(&|i| observed.rounds[c + 1][first + i].is_some())
        );
    }
    for (c, col) in columns.iter().enumerate() {
        let off = (0..rounds)
            .filter(|&i| col[i] != observed.rounds[c + 1][first + i].is_some())
            .count();
        assert!(
            off <= 2,
            "c{c} was seen otherwise than scripted in {off} rounds"
        );
    }
    assert!(
        received >= 1,
        "nothing reached Bob: the senders were not busy"
    );

    let who: Vec<usize> = (1..=CANDIDATES).collect();
    let per_round: Vec<Option<usize>> = (0..observed.len())
        .map(|r| {
            r.checked_sub(first)
                .filter(|&i| i < rounds)
                .map(|i| senders[i / EPISODE_ROUNDS] + 1)
        })
        .collect();
    let draws = 99_999;
    let full = rank_test(&observed, 0, &who, &episodes, draws, &mut rng);
    let ideal = rank_test(&observed.ideal(), 0, &who, &episodes, draws, &mut rng);
    let inbox = rank_test(
        &inbox_model(&observed, 0, &per_round),
        0,
        &who,
        &episodes,
        draws,
        &mut rng,
    );
    println!("the true senders' ranks (1 = most suspected, of {CANDIDATES}):");
    println!(
        "  shroud's transcripts: {:?}, p = {:.4}",
        full.ranks, full.p_value
    );
    println!(
        "  ideal leakage only:   {:?}, p = {:.4}",
        ideal.ranks, ideal.p_value
    );
    println!(
        "  inbox delivery:       {:?}, p = {:.5}",
        inbox.ranks, inbox.p_value
    );
    assert!(
        inbox.p_value < ALPHA,
        "the attack missed the inbox delivery's leak: {inbox:?}"
    );
    assert!(
        ideal.p_value >= ALPHA,
        "online times alone gave the senders away: {ideal:?}"
    );
    assert!(
        full.p_value >= ALPHA,
        "the transcripts gave the senders away beyond online times: {full:?}"
    );
}
