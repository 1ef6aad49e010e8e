//! Tampering, swapping, rolling back and deleting stored slots is caught at the first read
//! that uses them; the access stays in flight, and once storage behaves the same request
//! completes with the right data.

use rand_chacha::ChaCha20Rng;
use shroud_oram::ring::{RingConfig, RingOram, RingReply, RingRequest, RingStore};
use shroud_oram::{BucketId, Error, IntegrityError, MemoryStore, Op};

use crate::common::{Attack, block};

/// A store filled with blocks 0..n, each `block(a)`, and read once more so that blocks
/// have moved around.
fn filled(config: RingConfig, seed: u64) -> (RingOram, MemoryStore, ChaCha20Rng) {
    let (mut oram, mut rng) = crate::engine(config, seed);
    let mut store = MemoryStore::new();
    for a in 0..config.capacity {
        let b = block(config.block_size as usize, a, 0);
        oram.run(&mut store, Op::Write(a, &b), &mut rng)
            .expect("write");
    }
    for a in 0..config.capacity {
        oram.run(&mut store, Op::Read(a), &mut rng).expect("read");
    }
    (oram, store, rng)
}

/// Applies the request's writes honestly, then misbehaves on one of the buckets its reads
/// name, and answers.
fn exchange_with(
    store: &mut MemoryStore,
    old: &MemoryStore,
    req: &RingRequest,
    slot_len: usize,
    attack: Attack,
    pick: usize,
) -> (RingReply, bool) {
    let mut honest = store.clone();
    let writes_only = RingRequest {
        writes: req.writes.clone(),
        ..RingRequest::default()
    };
    honest.exchange(&writes_only, slot_len).expect("writes");
    let mut evil = honest.clone();
    let targets: Vec<_> = req
        .online
        .iter()
        .flatten()
        .chain(&req.reads)
        .filter(|s| honest.get(s.bucket).is_some())
        .copied()
        .collect();
    let mut done = false;
    if !targets.is_empty() {
        let t = targets[pick % targets.len()];
        let id = t.bucket;
        match attack {
            Attack::Flip => {
                let b = evil.get_mut(id).expect("bucket");
                b[usize::from(t.slot) * slot_len + pick % slot_len] ^= 1;
                done = true;
            }
            Attack::Swap => {
                let other = (0..64u64)
                    .map(|i| BucketId {
                        tree: 0,
                        index: (id.index + 1 + i) % 64,
                    })
                    .find(|o| *o != id && honest.get(*o).is_some());
                if let Some(o) = other {
                    let bytes = honest.get(o).expect("other").to_vec();
                    evil.insert(id, bytes);
                    done = true;
                }
            }
            Attack::Replay => {
                if let Some(prev) = old.get(id)
                    && prev != honest.get(id).expect("bucket")
                {
                    evil.insert(id, prev.to_vec());
                    done = true;
                }
            }
            Attack::Delete => {
                evil.remove(id);
                done = true;
            }
            Attack::Invent => {}
        }
    }
    if let Attack::Invent = attack {
        // A bucket never written that the request reads, made up from a real one.
        let absent = req
            .online
            .iter()
            .flatten()
            .chain(&req.reads)
            .map(|s| s.bucket)
            .find(|b| honest.get(*b).is_none());
        let real = targets.first().map(|s| s.bucket);
        if let (Some(id), Some(r)) = (absent, real) {
            let bytes = honest.get(r).expect("bucket").to_vec();
            evil.insert(id, bytes);
            done = true;
        }
    }
    let reply = evil
        .exchange(
            &RingRequest {
                writes: Vec::new(),
                ..req.clone()
            },
            slot_len,
        )
        .expect("reads");
    *store = honest;
    (reply, done)
}

#[test]
fn every_attack_is_caught_at_the_first_read_and_the_access_then_completes() {
    let config = RingConfig {
        z: 4,
        s: 3,
        a: 3,
        cached_levels: 1,
        ..RingConfig::new(48, 16)
    };
    let slot_len = config.slot_len();
    for attack in [Attack::Flip, Attack::Swap, Attack::Replay, Attack::Delete] {
        let (mut oram, mut store, mut rng) = filled(config, 5);
        let mut tried = 0;
        // An older copy of the store, for replays.
        let mut old = store.clone();
        for i in 0..400usize {
            let a = (i * 7 % 48) as u64;
            let req = oram.begin(Op::Read(a), &mut rng).expect("begin").clone();
            let (reply, tampered) = exchange_with(&mut store, &old, &req, slot_len, attack, i);
            let outcome = oram.finish(&reply, &mut rng);
            if tampered {
                // Every slot read is checked, a dummy's as a block's: a change to any of
                // them fails the access, so failures tell nothing of what a slot held.
                let e = outcome.expect_err("a tampered answer was accepted");
                tried += 1;
                assert!(
                    matches!(e, Error::Integrity(_)),
                    "{attack:?}: unexpected {e}"
                );
                assert_eq!(oram.request(), Some(&req), "the access stays in flight");
                // Honest again: the same request completes.
                let reply = store.exchange(&req, slot_len).expect("honest");
                oram.finish(&reply, &mut rng).expect("honest answer");
            } else {
                outcome.expect("honest answer");
            }
            assert_eq!(
                oram.result(),
                block(16, a, 0),
                "{attack:?}: verified data only"
            );
            if i % 50 == 0 {
                old = store.clone();
            }
        }
        assert!(tried >= 100, "{attack:?}: only {tried} attacks bit");
    }
}

#[test]
fn a_wrong_length_or_a_bucket_that_should_be_absent_is_refused() {
    let config = RingConfig::new(64, 16);
    let (mut oram, mut rng) = crate::engine(config, 1);
    let mut store = MemoryStore::new();
    let req = oram.begin(Op::Read(3), &mut rng).expect("begin").clone();
    let mut reply = store.exchange(&req, config.slot_len()).expect("reply");
    reply.online[0].push(0);
    assert!(matches!(
        oram.finish(&reply, &mut rng),
        Err(Error::Integrity(IntegrityError::WrongLength { .. }))
    ));
    // Nothing was ever written: any non-zero answer is made up.
    reply.online[0].pop();
    reply.online[0][0] = 1;
    assert!(matches!(
        oram.finish(&reply, &mut rng),
        Err(Error::Integrity(IntegrityError::Combined(_)))
    ));
    reply.online[0][0] = 0;
    oram.finish(&reply, &mut rng).expect("honest");
    assert_eq!(oram.result(), vec![0u8; 16]);
}

/// Lazy init: a bucket never written must stay absent; one made up from a real bucket is
/// refused, and the access then completes.
#[test]
fn a_made_up_bucket_is_caught() {
    let config = RingConfig::new(4096, 16);
    let slot_len = config.slot_len();
    let (mut oram, mut rng) = crate::engine(config, 9);
    let mut store = MemoryStore::new();
    let mut tried = 0;
    for i in 0..400u64 {
        let a = i / 2;
        let data = block(16, a, 0);
        let op = if i % 2 == 0 {
            Op::Write(a, &data)
        } else {
            Op::Read(a)
        };
        let req = oram.begin(op, &mut rng).expect("begin").clone();
        let old = store.clone();
        let (reply, tampered) = exchange_with(&mut store, &old, &req, slot_len, Attack::Invent, 0);
        match oram.finish(&reply, &mut rng) {
            Ok(()) => assert!(!tampered, "access {i}: a made-up bucket was accepted"),
            Err(e) => {
                assert!(tampered && matches!(e, Error::Integrity(_)), "{e}");
                tried += 1;
                let reply = store.exchange(&req, slot_len).expect("honest");
                oram.finish(&reply, &mut rng).expect("honest answer");
            }
        }
        if i % 2 == 1 {
            assert_eq!(oram.result(), data);
        }
    }
    assert!(tried >= 100, "only {tried} made-up buckets");
}

/// Selective failure: a server that changes one slot of an eviction's reads, whichever it
/// is (a block or a dummy), always gets the same answer: the access fails.
#[test]
fn a_change_to_any_slot_read_fails_the_access() {
    let config = RingConfig {
        z: 4,
        s: 3,
        a: 4,
        ..RingConfig::new(64, 16)
    };
    let key = shroud_oram::Key::from_bytes([5; 32]);
    let mut rng = crate::common::rng(21);
    let mut oram = RingOram::new(config, key.clone(), &mut rng).expect("config");
    let mut store = MemoryStore::new();
    for a in 0..64u64 {
        oram.run(&mut store, Op::Write(a, &block(16, a, 0)), &mut rng)
            .expect("write");
    }
    let mut checked = 0;
    for round in 0..8u64 {
        // Up to the next eviction.
        while oram.accesses() % u64::from(config.a) != u64::from(config.a) - 1 {
            oram.run(&mut store, Op::Read(round), &mut rng)
                .expect("read");
        }
        let saved = oram.snapshot().expect("snapshot");
        let seed = rng.clone();
        let reads = oram
            .begin(Op::Read(round), &mut rng)
            .expect("begin")
            .reads
            .len();
        assert_eq!(reads % config.z as usize, 0);
        for k in 0..reads {
            let mut o = RingOram::restore(&saved, key.clone()).expect("restore");
            let mut r = seed.clone();
            let req = o.begin(Op::Read(round), &mut r).expect("begin").clone();
            let mut evil = store.clone();
            let mut reply = evil.exchange(&req, config.slot_len()).expect("reply");
            if let Some(bytes) = reply.reads[k].as_mut() {
                bytes[3] ^= 0x10;
                assert!(
                    matches!(o.finish(&reply, &mut r), Err(Error::Integrity(_))),
                    "slot {k} of the eviction's reads changed and accepted"
                );
                checked += 1;
            }
        }
        let reply = store.exchange(oram.request().expect("in flight"), config.slot_len());
        oram.finish(&reply.expect("reply"), &mut rng)
            .expect("honest");
    }
    assert!(checked >= 8 * 4, "only {checked} slots checked");
}
