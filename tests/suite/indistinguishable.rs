//! Issue 12, finding 1 (and issue 13): the operators must not tell a real outbox row from a
//! dummy, nor a sending client's frames from an idle one's, at any bit position.
//!
//! The harness (per-bit two-sample z tests, [`shroud_lab::stats::bit_difference`], over
//! byte strings the operator sees) is what later delivery protocols are checked with too.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use shroud_client::mailbox::Address;
use shroud_lab::stats::{bit_difference, bonferroni_z};
use shroud_proto::Shape;
use shroud_proxy::transcript::FrameKind;

use crate::common::Stack;

/// No bit position differs past |z| 5 (10^4 samples a side: about 1 in 3.5 million per
/// position by chance).
fn no_bit_differs(d: &shroud_lab::stats::BitDifference) {
    assert!(
        d.max_z < 5.0,
        "bit {} of {}: |z| = {:.1}",
        d.position,
        d.positions,
        d.max_z
    );
}

/// Issue 13 (docs/mail-delivery.md): an outbox row written to a contact and a dummy row
/// (a real seal under a throwaway pair key) are the same to storage at every bit position:
/// 10^4 of each from 8 writers at the same places, chunks that are mostly padding (as real
/// ones are), no bit past |z| 5. The test sees a row whose chunk was not encrypted.
#[test]
fn dummy_rows_match_real_ones_bit_for_bit() {
    use shroud_client::mailbox::row::{self, OutboxKey, PairKey, Place};
    const N: usize = 10_000;
    let mut rng = StdRng::seed_from_u64(131);
    let writers: Vec<(OutboxKey, PairKey)> = (0..8)
        .map(|_| (OutboxKey::generate(&mut rng), PairKey::generate(&mut rng)))
        .collect();
    let place = |i: usize| Place {
        round: (i / 8) as u64,
        row: (i % 8) as u64 * 2,
    };
    let mut chunks = Vec::with_capacity(N);
    let real: Vec<Box<[u8; row::ROW_LEN]>> = (0..N)
        .map(|i| {
            let (outbox, pair) = &writers[i % 8];
            let mut chunk = [0u8; row::CHUNK_LEN];
            let len = rng.random_range(0..64);
            rng.fill_bytes(&mut chunk[..len]);
            chunks.push(chunk);
            row::seal(outbox, pair, place(i), &chunk, &mut rng)
        })
        .collect();
    let dummies: Vec<Box<[u8; row::ROW_LEN]>> = (0..N)
        .map(|i| row::seal_dummy(&writers[i % 8].0, place(i), &mut rng))
        .collect();
    let as_bytes = |v: &[Box<[u8; row::ROW_LEN]>]| v.iter().map(|r| r.to_vec()).collect::<Vec<_>>();
    let (real, dummies) = (as_bytes(&real), as_bytes(&dummies));
    let d = bit_difference(&real, &dummies);
    assert_eq!(d.positions, 8 * row::ROW_LEN);
    no_bit_differs(&d);
    // The power to see a row whose chunk went out in the clear (mostly zeros).
    let clear: Vec<Vec<u8>> = real
        .iter()
        .zip(&chunks)
        .map(|(r, c)| {
            let mut b = r.clone();
            b[40..40 + row::CHUNK_LEN].copy_from_slice(c);
            b
        })
        .collect();
    assert!(bit_difference(&clear, &dummies).max_z > 50.0);
}

/// 25 ms epochs, a mail round every 8 (faster than storage answers them here: most rounds
/// are skipped, which changes nothing in what clients send, and the bit test gets frames
/// enough).
fn shape() -> Shape {
    Shape::new(1024, 512, 3)
        .expect("shape")
        .with_schedule(2, 25)
        .expect("shape")
        .with_board(256, 2)
        .expect("board")
        .with_mail(8, 1)
}

/// An idle client and one that sends mail in every round, side by side: over every frame
/// kind the client sends, whole frames as the proxy reads them, no bit position differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sending_client_and_an_idle_one_send_the_same_bits() {
    const EPOCHS: u64 = 600;
    let stack = Stack::start_keeping_frames(shape()).await.expect("stack");
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let idle = stack.mail_user(&mut rng).await.expect("idle");
    let sender = stack.mail_user(&mut rng).await.expect("sender");
    let sink = stack.mail_user(&mut rng).await.expect("sink");
    shroud_testkit::stack::befriend(&[("idle", &idle), ("sender", &sender), ("sink", &sink)])
        .await
        .expect("contacts");
    let to: Address = sink.address;
    let start = Instant::now();
    let rounds = EPOCHS / u64::from(shape().round_epochs);
    crate::common::keep_sending(&sender, to, 1, rounds).await;
    let received = sink.stats().mail_received.load(Relaxed);
    for u in [idle, sender, sink] {
        u.stop().await;
    }
    // Whole frames, with what names a client by design blanked and checked on its own.
    let (frames, blanked) =
        shroud_lab::audit::frames::inbound(&stack.proxy_transcript).expect("the proxy's frames");
    if let Err(e) = blanked.check(shape().slots_per_epoch as usize) {
        panic!("{e}");
    }
    // Storage answers a round here in about a second (most rounds are skipped): some of the
    // sender's one-chunk messages arrive.
    assert!(
        received >= 1,
        "no message arrived in {EPOCHS} epochs: the sender was not busy"
    );
    assert!(start.elapsed() < Duration::from_secs(120));
    let conns: std::collections::BTreeSet<u64> = frames
        .keys()
        .filter(|(_, k)| *k == FrameKind::Round)
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(conns.len(), 3, "a client reconnected: {conns:?}");
    // The idle client, the sender and the sink, in start order (each also opened a
    // connection of its own to make its outbox, which registers nothing).
    let clients = shroud_lab::audit::frames::clients(&frames);
    assert_eq!(clients.len(), 3, "{clients:?}");
    let kinds = [
        FrameKind::Hello,
        FrameKind::Register,
        FrameKind::ReaderKey,
        FrameKind::Slot,
        FrameKind::Round,
    ];
    for kind in kinds {
        let of = |conn: u64| -> Vec<(u64, Vec<u8>)> {
            frames.get(&(conn, kind)).cloned().unwrap_or_default()
        };
        let (a, b) = (of(clients[0]), of(clients[1]));
        assert!(!a.is_empty() && !b.is_empty(), "{kind:?}: no frames");
        let lens = |x: &[(u64, Vec<u8>)]| {
            x.iter()
                .map(|(_, f)| f.len())
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(lens(&a), lens(&b), "{kind:?}: frame sizes differ");
        if a.len() < 50 {
            // Hello, Register and the PIR key: once per connection, sent before any work;
            // the same sizes (above) and, for the hello, the same bytes.
            if kind == FrameKind::Hello {
                assert_eq!(a[0].1, b[0].1, "hellos differ");
            }
            continue;
        }
        // The epochs both were in, past the sender's start: the same number of frames each.
        let from = b.iter().map(|(e, _)| *e).min().unwrap_or(0).max(a[0].0) + 4;
        // One slot frame per epoch: an epoch's paths share their top buckets, sent with the
        // same sealed bytes in each slot that carries them, so its slots are not
        // independent samples; epochs are.
        let pick = |x: &[(u64, Vec<u8>)]| -> Vec<Vec<u8>> {
            let mut last = None;
            x.iter()
                .filter(|(e, _)| *e >= from)
                .filter(|(e, _)| kind != FrameKind::Slot || last.replace(*e) != Some(*e))
                .map(|(_, f)| f.clone())
                .collect()
        };
        let (mut a, mut b) = (pick(&a), pick(&b));
        let n = a.len().min(b.len());
        // A round frame goes every 8 epochs.
        let enough = if kind == FrameKind::Round { 60 } else { 300 };
        assert!(n >= enough, "{kind:?}: only {n} frames to compare");
        a.truncate(n);
        b.truncate(n);
        let d = bit_difference(&a, &b);
        let limit = bonferroni_z(d.positions, 1e-3, 5.0);
        assert!(
            d.max_z < limit,
            "{kind:?}: bit {} of {} differs between an idle and a sending client: |z| = {:.1} (limit {limit:.1}, {n} frames each)",
            d.position,
            d.positions,
            d.max_z
        );
    }
}
