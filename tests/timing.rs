//! Issue 12, finding 3: when a client sends must not depend on its work. In a binary of its
//! own, like the other timing-sensitive suites: tests of one binary run side by side, and
//! their work would be noise in delays measured to a fraction of a millisecond.

mod common;

use std::sync::atomic::Ordering::Relaxed;

use rand::SeedableRng;
use rand::rngs::StdRng;
use shroud_client::mailbox::{Address, Identity};
use shroud_proto::Shape;
use shroud_proxy::transcript::Transcript;

use common::{Stack, keep_sending};

/// The delays, microseconds, from the proxy's last reply to a connection to that
/// connection's next frame, as the proxy's transcript timed them at its socket.
fn reply_to_next_frame(stack: &Stack, conn: u64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut last_reply: Option<u64> = None;
    for e in Transcript::read(&stack.proxy_transcript).expect("transcript") {
        if e.conn != conn {
            continue;
        }
        if e.inbound {
            if let Some(t) = last_reply.take() {
                out.push(e.micros.saturating_sub(t) as f64);
            }
        } else {
            last_reply = Some(e.micros);
        }
    }
    out
}

/// Issue 12, finding 3: when a client sends must not depend on its work. An idle client and
/// one receiving mail in every round it can, with 14 contacts each, side by side for 1,100
/// epochs of 100 ms (a mail round every 10): the delay from the proxy's reply to the
/// client's next frame, timed at the proxy's socket, has one distribution (two-sample
/// Kolmogorov-Smirnov, p > 0.01, over the last 1,000). The 40 ms send offset leaves room for
/// the epoch's work even with two CPU hogs on this 2-core machine (at 50 ms epochs, 6 to 15%
/// of epochs' work overran the 20 ms offset there, and an overrun leaves when the work is
/// done, which the test rightly catches).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_client_sends_does_not_depend_on_its_work() {
    const EPOCHS: u64 = 1100;
    let shape = Shape::new(256, 256, 2)
        .expect("shape")
        .with_schedule(1, 100)
        .expect("shape")
        .with_board(256, 2)
        .expect("board")
        .with_mail(10, 1);
    let stack = Stack::start(shape).await.expect("stack");
    let mut rng = StdRng::from_rng(&mut rand::rng());
    // Each client runs on a runtime of its own, as it would on its own machine: on one
    // shared runtime, one's work delays another's timers (and the proxy's reads, which
    // time the frames), which says nothing about what a client's own work does to its own
    // timing.
    let own = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let (idle_rt, sender_rt, sink_rt) = (own(), own(), own());
    let idle = stack
        .mail_user_on(idle_rt.handle(), &mut rng)
        .await
        .expect("idle");
    // The sender too, off the runtime of the proxy, whose transcript times the frames.
    let sender = stack
        .mail_user_on(sender_rt.handle(), &mut rng)
        .await
        .expect("sender");
    let sink = stack
        .mail_user_on(sink_rt.handle(), &mut rng)
        .await
        .expect("sink");
    // Many contacts (outboxes nobody writes, past the three in use). Both measured clients
    // have the same number (a client's work grows with its contacts, a fixed property of
    // the account, not its activity).
    for i in 0..12 {
        for u in [&idle, &sink] {
            let stranger = Address {
                public_key: Identity::generate(&mut rng).public_key(),
                outbox: 100 + i,
                outbox_key: rand::random(),
            };
            u.mail
                .add_contact(&format!("c{i}"), stranger)
                .await
                .expect("contact");
        }
    }
    shroud_testkit::stack::befriend(&[("idle", &idle), ("sender", &sender), ("sink", &sink)])
        .await
        .expect("contacts");
    let to = sink.address;
    let rounds = EPOCHS / u64::from(shape.round_epochs);
    keep_sending(&sender, to, 8, rounds).await;
    let received = sink.stats().mail_received.load(Relaxed);
    // For a closer look: SHROUD_KEEP_TRANSCRIPT=FILE keeps the proxy's transcript.
    if let Some(keep) = std::env::var_os("SHROUD_KEEP_TRANSCRIPT") {
        std::fs::copy(&stack.proxy_transcript, keep).expect("keep the transcript");
    }
    let late = [&idle, &sink].map(|u| u.stats().late_sends.load(Relaxed));
    for u in [idle, sender, sink] {
        u.stop().await;
    }
    for rt in [idle_rt, sender_rt, sink_rt] {
        rt.shutdown_background();
    }
    // Messages of 8 chunks: the receiver took real chunks (and so did the work of taking
    // them) through the run. Storage answers about one round a second here, and skips the
    // others when it falls behind.
    assert!(
        received >= 2,
        "the sender was not busy: {received} messages in {rounds} rounds"
    );
    // Connections 0 and 2: the idle client and the receiver. Past the first epochs, the same
    // number from each.
    let (mut a, mut b) = (
        reply_to_next_frame(&stack, 0),
        reply_to_next_frame(&stack, 2),
    );
    let n = a.len().min(b.len());
    assert!(n > 1000, "only {n} epochs");
    let (mut a, mut b): (Vec<f64>, Vec<f64>) = (
        a.drain(n - 1000..n).collect(),
        b.drain(n - 1000..n).collect(),
    );
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ma, mb) = (median(&mut a), median(&mut b));
    let q = |v: &Vec<f64>| {
        [5, 25, 50, 75, 95, 99].map(|p| (v[v.len() * p / 100] / 100.0).round() / 10.0)
    };
    println!("quantiles idle {:?} receiving {:?}", q(&a), q(&b));
    let ks = shroud_lab::stats::ks_two_sample(&mut a, &mut b);
    println!(
        "reply to next frame: idle median {:.2} ms, receiving {:.2} ms; KS D {:.3}, p {:.3}; late sends {late:?}",
        ma / 1000.0,
        mb / 1000.0,
        ks.statistic,
        ks.p_value
    );
    assert!(
        ks.p_value > 0.01,
        "the send delay tells a mail-receiving client from an idle one: medians {:.2} vs {:.2} ms, KS p {:.2e}",
        ma / 1000.0,
        mb / 1000.0,
        ks.p_value
    );
}
