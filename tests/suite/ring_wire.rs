//! Issue 14: Ring ORAM through the proxy, as the operators see it. An idle client and one
//! running reads and writes on a few hot blocks, side by side, from the proxy's transcript:
//! - every slot frame has the shape Ring ORAM's public pattern gives its place in the
//!   client's schedule ([`Shape::ring_maintenance`]): the first slot of an epoch carries
//!   the rewrites of the last batch and this batch's maintenance reads, the others only
//!   their online read; an early reshuffle adds to it only where storage's own read counts
//!   say a bucket ran out of dummies;
//! - frame sizes, place by place, are the same for both clients;
//! - the online reads are whole paths below the cached levels, of uniform leaves, one
//!   unread slot per bucket, for both alike (chi-squared);
//! - no bit position of the frames differs between the two, frame class by frame class.

use std::collections::HashMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shroud_lab::stats::{bit_difference, bonferroni_z, chi2_two_sample, chi2_uniform};
use shroud_proto::proxy::{ClientMsg, Reads, Slot};
use shroud_proto::{Limits, Shape, decode};
use shroud_proxy::transcript::FrameKind;

use crate::common::Stack;

/// 25 ms epochs, 2 slots each: an eviction every 10 epochs, a scheduled reshuffle every
/// 30 (Z = 16, A = 20, the paper's smaller pair: more maintenance frames a second than at
/// the defaults' A = 46, for the same argument).
fn shape() -> Shape {
    Shape::with_ring(shroud_oram::ring::RingConfig {
        z: 16,
        s: 32,
        a: 20,
        cached_levels: 3,
        ..shroud_oram::ring::RingConfig::new(1 << 12, 256)
    })
    .expect("shape")
    .with_schedule(2, 25)
    .expect("shape")
    .with_mail(0, 0)
}

/// What one client's frames showed, checked against the pattern on the way.
#[derive(Default)]
struct Seen {
    /// (writes, maintenance reads, frame length) of every frame, in order.
    shapes: Vec<(usize, usize, usize)>,
    /// Frames that carried an early reshuffle.
    early: usize,
    /// Leaves of the online reads.
    leaves: Vec<u64>,
    /// Frames by class (writes, reads), blanked.
    classes: HashMap<(usize, usize), Vec<Vec<u8>>>,
}

/// Walks one client's slot frames (blanked, in order) as storage would: read counts per
/// bucket since its last write.
fn walk(shape: &Shape, frames: &[Vec<u8>]) -> Seen {
    let k = shape.slots_per_epoch as usize;
    let (z, s) = match shape.mode {
        shroud_proto::Mode::Ring { dummy_slots, .. } => (shape.bucket_slots, dummy_slots),
        shroud_proto::Mode::Path => panic!("a Ring ORAM shape"),
    };
    let height = shape.path_len + shape.cached_levels - 1;
    let limit = (s + 1 - shape.slots_per_epoch) as usize;
    let mut read: HashMap<u64, Vec<u16>> = HashMap::new();
    let mut seen = Seen::default();
    let mut owed = 0usize;
    let slots: Vec<Slot> = frames
        .iter()
        .map(|f| match decode::<ClientMsg>(f, Limits::default()) {
            Ok(ClientMsg::Slot(slot)) => slot,
            other => panic!("not a slot: {other:?}"),
        })
        .collect();
    for (n, batch) in slots.chunks_exact(k).enumerate() {
        let n = n as u64;
        let pattern_writes = if n == 0 {
            0
        } else {
            shape.ring_maintenance(n - 1).0
        };
        let (_, pattern_reads) = shape.ring_maintenance(n);
        for w in &batch[0].writes {
            read.remove(&w.bucket);
        }
        assert_eq!(
            batch[0].writes.len(),
            pattern_writes + owed,
            "batch {n}: the rewrites the last batch's maintenance read"
        );
        let mut fetched = Vec::new();
        for slot in batch {
            let Reads::Slots { online, .. } = &slot.reads else {
                panic!("batch {n}: Path ORAM reads in a Ring ORAM shape");
            };
            assert_eq!(online.len(), shape.path_len as usize);
            for pair in online.windows(2) {
                let c = pair[1].bucket;
                assert!(
                    c == 2 * pair[0].bucket + 1 || c == 2 * pair[0].bucket + 2,
                    "batch {n}: not a path"
                );
            }
            let top = online[0].bucket + 1;
            assert!(top >= 1 << shape.cached_levels && top < 2 << shape.cached_levels);
            seen.leaves
                .push(online[online.len() - 1].bucket + 1 - (1 << height));
            for r in online {
                let done = read.entry(r.bucket).or_default();
                assert!(!done.contains(&r.slot), "batch {n}: a slot read twice");
                assert!(u32::from(r.slot) < z + s);
                done.push(r.slot);
                fetched.push(r.bucket);
            }
        }
        // Buckets storage saw run low on dummies: the only reason for more than the
        // pattern.
        fetched.sort_unstable();
        fetched.dedup();
        let low = fetched
            .iter()
            .filter(|b| read.get(b).map_or(0, Vec::len) >= limit)
            .count();
        let Reads::Slots { each, .. } = &batch[0].reads else {
            unreachable!()
        };
        assert!(each.len() >= pattern_reads && (each.len() - pattern_reads) % z as usize == 0);
        let extra = (each.len() - pattern_reads) / z as usize;
        assert!(
            extra <= low,
            "batch {n}: {extra} reshuffles past the pattern, {low} buckets low on dummies"
        );
        seen.early += usize::from(extra > 0);
        for r in each {
            let done = read.entry(r.bucket).or_default();
            assert!(
                !done.contains(&r.slot),
                "batch {n}: a maintenance slot read twice"
            );
            done.push(r.slot);
        }
        for (j, slot) in batch.iter().enumerate() {
            let Reads::Slots { each, .. } = &slot.reads else {
                unreachable!()
            };
            if j > 0 {
                assert!(slot.writes.is_empty() && each.is_empty(), "batch {n}");
            }
            let frame = &frames[n as usize * k + j];
            let class = (slot.writes.len(), each.len());
            seen.shapes.push((class.0, class.1, frame.len()));
            seen.classes.entry(class).or_default().push(frame.clone());
        }
        owed = extra;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_and_a_busy_one_look_alike_in_ring_oram() {
    const EPOCHS: u64 = 700;
    let shape = shape();
    let stack = Stack::start_keeping_frames(shape).await.expect("stack");
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let start = |rng: &mut StdRng| {
        let config = stack.client_config().expect("config");
        let key = shroud_oram::Key::generate(rng);
        let grant = shroud_client::random_grant(rng);
        shroud_client::Client::start(config, key, grant)
    };
    let (idle, idle_task) = start(&mut rng).await.expect("idle client");
    let (busy, busy_task) = start(&mut rng).await.expect("busy client");
    let block = shape.block_size as usize;
    // Two workers: every slot of the busy client carries a real access.
    let workers: Vec<_> = (0..2u64)
        .map(|w| {
            let c = busy.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(w);
                let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
                let deadline = tokio::time::Instant::now()
                    + Duration::from_millis(EPOCHS * u64::from(shape.epoch_ms));
                while tokio::time::Instant::now() < deadline {
                    let addr = 2 * rng.random_range(0..4u64) + w;
                    if rng.random_bool(0.5) {
                        let v: Vec<u8> = (0..block).map(|_| rng.random()).collect();
                        c.write(addr, v.clone()).await.expect("write");
                        model.insert(addr, v);
                    } else {
                        let got = c.read(addr).await.expect("read");
                        let want = model.get(&addr).cloned().unwrap_or(vec![0; block]);
                        assert_eq!(got, want, "block {addr}");
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    let real = busy.stats().real.load(std::sync::atomic::Ordering::Relaxed);
    drop((idle, busy));
    idle_task
        .await
        .expect("join")
        .expect("idle stopped cleanly");
    busy_task
        .await
        .expect("join")
        .expect("busy stopped cleanly");
    let (frames, _) =
        shroud_lab::audit::frames::inbound(&stack.proxy_transcript).expect("the proxy's frames");
    let clients = shroud_lab::audit::frames::clients(&frames);
    assert_eq!(clients.len(), 2, "{clients:?}");
    let slots = |conn: u64| -> Vec<Vec<u8>> {
        frames
            .get(&(conn, FrameKind::Slot))
            .map(|v| v.iter().map(|(_, f)| f.clone()).collect())
            .unwrap_or_default()
    };
    let (a, b) = (
        walk(&shape, &slots(clients[0])),
        walk(&shape, &slots(clients[1])),
    );
    let n = a.shapes.len().min(b.shapes.len());
    println!(
        "{} and {} frames; the busy client made {real} real accesses; early reshuffles {} and {}",
        a.shapes.len(),
        b.shapes.len(),
        a.early,
        b.early
    );
    assert!(real > 600, "the busy client was busy: {real} real accesses");
    assert!(n >= 2 * 600, "{n} frames");
    // Place by place, the same frame for both, except where an early reshuffle (public
    // counts) came in one of them.
    let differ = (0..n).filter(|&i| a.shapes[i] != b.shapes[i]).count();
    assert!(
        differ <= 2 * (a.early + b.early),
        "{differ} frames of different shapes, {} early reshuffles",
        a.early + b.early
    );
    // Uniform leaves for both, and one distribution.
    let bins = |leaves: &[u64]| {
        let mut h = vec![0u64; 64];
        let width = (1u64 << (shape.path_len + shape.cached_levels - 1)) / 64;
        for l in leaves {
            h[(l / width) as usize] += 1;
        }
        h
    };
    let (ha, hb) = (bins(&a.leaves), bins(&b.leaves));
    for h in [&ha, &hb] {
        let t = chi2_uniform(h);
        assert!(t.p_value > 1e-4, "leaves not uniform: {t:?}");
    }
    let t = chi2_two_sample(&ha, &hb);
    assert!(t.p_value > 1e-4, "the two clients' leaves differ: {t:?}");
    // Bit by bit, class by class: online-only frames, and the first slots of batches
    // with maintenance.
    let mut compared = 0;
    for (class, fa) in &a.classes {
        let Some(fb) = b.classes.get(class) else {
            continue;
        };
        let m = fa.len().min(fb.len());
        if m < 30 {
            continue;
        }
        let d = bit_difference(&fa[..m], &fb[..m]);
        let limit = bonferroni_z(d.positions, 1e-3, 5.0);
        assert!(
            d.max_z < limit,
            "frames {class:?}: bit {} of {} differs: |z| = {:.1} (limit {limit:.1}, {m} each)",
            d.position,
            d.positions,
            d.max_z
        );
        compared += 1;
    }
    assert!(compared >= 3, "only {compared} frame classes compared");
}
