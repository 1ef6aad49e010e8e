//! Property 4 (integrity) and property 5 (hostile bytes never panic).
//!
//! A malicious store flips a byte, swaps two buckets, replays an older version, deletes a
//! bucket or invents one, at a random position of the path being read. Each is detected as
//! a typed `IntegrityError`, the engine state is byte-for-byte unchanged, and once the store
//! behaves again every block reads back correctly.

use std::collections::HashMap;

use proptest::prelude::*;
use rand::{Rng, RngExt};
use rand_chacha::ChaCha20Rng;
use shroud_oram::{
    BucketId, BucketStore, Config, Error, IntegrityError, MemoryStore, Op, Oram, Progress,
};

use crate::common::Attack;

/// A store that remembers every version of every bucket, for replays.
#[derive(Default)]
struct Recording {
    store: MemoryStore,
    history: HashMap<BucketId, Vec<Vec<u8>>>,
}

impl Recording {
    fn write_back(&mut self, oram: &Oram) {
        let writes = oram.write_back().expect("done");
        for (id, b) in writes.iter() {
            self.history.entry(id).or_default().push(b.to_vec());
        }
        self.store.write_path(&writes).expect("memory store");
    }

    fn run(&mut self, oram: &mut Oram, ops: &[Op<'_>], rng: &mut ChaCha20Rng) {
        oram.begin(ops, rng).expect("begin");
        loop {
            self.store
                .read_path(&mut oram.fetch().expect("fetching"))
                .expect("memory store");
            if oram.advance().expect("honest") == Progress::Done {
                break;
            }
        }
        self.write_back(oram);
    }

    /// Applies `attack` to bucket `id`; false if the attack does not apply there.
    /// `len` is the length of the attacked tree's buckets.
    fn tamper(&mut self, attack: Attack, id: BucketId, len: usize, rng: &mut ChaCha20Rng) -> bool {
        let s = &mut self.store;
        match attack {
            Attack::Flip => match s.get_mut(id) {
                Some(b) => {
                    let at = rng.random_range(0..b.len());
                    b[at] ^= 1 << rng.random_range(0..8u32);
                    true
                }
                None => false,
            },
            Attack::Swap => {
                let mut others: Vec<BucketId> =
                    s.ids().filter(|o| o.tree == id.tree && *o != id).collect();
                // The store is a hash map: sort, so the seeded run is reproducible.
                others.sort();
                if others.is_empty() || s.get(id).is_none() {
                    return false;
                }
                let other = others[rng.random_range(0..others.len())];
                let (a, b) = (s.get(id).unwrap().to_vec(), s.get(other).unwrap().to_vec());
                s.insert(id, b);
                s.insert(other, a);
                true
            }
            Attack::Replay => {
                // An older version that differs from the current one (the K paths of a batch
                // share their top buckets, which a write-back carries twice, byte for byte:
                // "replaying" such a copy changes nothing).
                let current = s.get(id).map(<[u8]>::to_vec);
                let older: Vec<&Vec<u8>> = self
                    .history
                    .get(&id)
                    .map(|v| v.iter().filter(|x| Some(*x) != current.as_ref()).collect())
                    .unwrap_or_default();
                if older.is_empty() {
                    return false;
                }
                let old = older[rng.random_range(0..older.len())].clone();
                s.insert(id, old);
                true
            }
            Attack::Delete => s.remove(id).is_some(),
            Attack::Invent => {
                if s.get(id).is_some() {
                    return false;
                }
                let mut junk = vec![0u8; len];
                rng.fill_bytes(&mut junk);
                s.insert(id, junk);
                true
            }
        }
    }
}

fn configs() -> Vec<Config> {
    vec![
        Config::new(200, 16),
        Config {
            cached_levels: 2,
            ..Config::new(300, 32)
        },
        Config {
            position_map: crate::common::tiny_recursive(),
            ..Config::new(150, 16)
        },
        Config {
            max_batch: 3,
            cached_levels: 1,
            position_map: crate::common::tiny_recursive(),
            ..Config::new(90, 16)
        },
    ]
}

/// Runs `op` with `attack` on a random bucket of a random round; returns whether the attack
/// applied, after checking detection, state and recovery.
fn attacked_access(
    oram: &mut Oram,
    rec: &mut Recording,
    ops: &[Op<'_>],
    attack: Attack,
    rng: &mut ChaCha20Rng,
) -> bool {
    let before = oram.snapshot().unwrap();
    let target_round = rng.random_range(0..oram.trees().count());
    oram.begin(ops, rng).unwrap();
    let mut round = 0;
    let mut saved: Option<MemoryStore> = None;
    loop {
        let mut fetch = oram.fetch().unwrap();
        if round == target_round {
            let ids = fetch.ids().to_vec();
            let id = ids[rng.random_range(0..ids.len())];
            let honest = rec.store.clone();
            if rec.tamper(attack, id, fetch.bucket_len(), rng) {
                saved = Some(honest);
            }
        }
        rec.store.read_path(&mut fetch).unwrap();
        match oram.advance() {
            Ok(Progress::Fetch) => round += 1,
            Ok(Progress::Done) => {
                assert!(
                    saved.is_none(),
                    "{attack:?} on round {target_round} went undetected"
                );
                rec.write_back(oram);
                return false;
            }
            Err(Error::Integrity(e)) => {
                let e: IntegrityError = e;
                assert!(saved.is_some(), "integrity error without an attack: {e}");
                // The state is untouched.
                oram.abort();
                assert_eq!(
                    *oram.snapshot().unwrap(),
                    *before,
                    "state changed after {e}"
                );
                // Honest operation resumes.
                rec.store = saved.take().unwrap();
                rec.run(oram, ops, rng);
                return true;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
}

#[test]
fn every_attack_is_detected() {
    let attacks = [
        Attack::Flip,
        Attack::Swap,
        Attack::Replay,
        Attack::Delete,
        Attack::Invent,
    ];
    // On two cores too, with blocks of 1 KiB so that buckets go to the helper.
    let two_cores = configs().into_iter().map(|c| {
        let big = Config {
            block_size: 1024,
            ..c
        };
        (big, true)
    });
    for (ci, (config, helper)) in configs()
        .into_iter()
        .map(|c| (c, false))
        .chain(two_cores)
        .enumerate()
    {
        let (mut oram, _, mut rng) = crate::common::oram(config, 100 + ci as u64);
        oram.set_helper(helper).unwrap();
        let mut rec = Recording::default();
        let b = config.block_size as usize;
        let n = config.capacity;
        let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
        // Some history first, so replays have old versions to use.
        for v in 0..300u64 {
            let a = rng.random_range(0..n);
            let d = crate::common::block(b, a, v);
            rec.run(&mut oram, &[Op::Write(a, &d)], &mut rng);
            model.insert(a, d);
        }
        let mut detected = [0usize; 5];
        for i in 0..600 {
            let attack = attacks[i % attacks.len()];
            let a = rng.random_range(0..n);
            let k = config.max_batch as usize;
            let ops: Vec<Op<'_>> = (0..k)
                .map(|j| if j == 0 { Op::Read(a) } else { Op::Dummy })
                .collect();
            if attacked_access(&mut oram, &mut rec, &ops, attack, &mut rng) {
                detected[i % attacks.len()] += 1;
            }
            assert_eq!(
                oram.result(0).unwrap(),
                model.get(&a).cloned().unwrap_or(vec![0; b]).as_slice()
            );
        }
        if helper {
            assert!(
                oram.helper_opened() > 0,
                "config {ci}: the helper opened nothing"
            );
        }
        // Small trees are fully written after the warm-up, so `Invent` applies only below.
        assert!(
            detected[..4].iter().all(|&d| d > 20),
            "config {ci} (helper {helper}): too few attacks applied: {detected:?}"
        );
    }
}

#[test]
fn invented_buckets_are_detected() {
    // A large, mostly unwritten tree: most buckets on a path were never written.
    for config in [
        Config::new(1 << 20, 16),
        Config {
            position_map: shroud_oram::PositionMap::recursive(),
            ..Config::new(1 << 24, 16)
        },
    ] {
        let (mut oram, _, mut rng) = crate::common::oram(config, 77);
        let mut rec = Recording::default();
        rec.run(&mut oram, &[Op::Write(5, &[5; 16])], &mut rng);
        let mut detected = 0;
        for _ in 0..200 {
            if attacked_access(
                &mut oram,
                &mut rec,
                &[Op::Read(5)],
                Attack::Invent,
                &mut rng,
            ) {
                detected += 1;
            }
            assert_eq!(oram.result(0).unwrap(), &[5; 16]);
        }
        println!(
            "invented buckets detected: {detected} of 200 tries (the rest hit buckets that exist)"
        );
        assert!(detected > 100, "{detected}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Arbitrary bytes supplied as buckets give a typed error, never a panic, and leave the
    /// state as it was.
    #[test]
    fn arbitrary_buckets_never_panic(seed in any::<u64>(), junk in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..400), 1..40), right_len in any::<bool>()) {
        let config = Config { position_map: crate::common::tiny_recursive(), cached_levels: 1, ..Config::new(64, 16) };
        let (mut oram, mut store, mut rng) = crate::common::oram(config, seed);
        oram.set_helper(seed % 2 == 1).unwrap();
        for v in 0..20 {
            oram.run(&mut store, &[Op::Write(v % 64, &[v as u8; 16])], &mut rng).unwrap();
        }
        let before = oram.snapshot().unwrap();
        oram.begin(&[Op::Read(3)], &mut rng).unwrap();
        let mut fetch = oram.fetch().unwrap();
        let len = fetch.bucket_len();
        for i in 0..fetch.ids().len() {
            let mut b = junk[i % junk.len()].clone();
            if right_len {
                b.resize(len, 0);
            }
            let _ = fetch.supply(i, Some(&b));
        }
        prop_assert!(matches!(oram.advance(), Err(Error::Integrity(_))));
        oram.abort();
        prop_assert_eq!(&*oram.snapshot().unwrap(), &*before);
    }

    /// Arbitrary bytes given to `restore` give a typed error, never a panic.
    #[test]
    fn arbitrary_snapshots_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000), seed in any::<u64>()) {
        let mut rng = crate::common::rng(seed);
        let _ = Oram::restore(&bytes, shroud_oram::Key::generate(&mut rng));
    }
}

#[test]
fn corrupted_snapshot_is_rejected() {
    let (mut oram, mut store, mut rng) = crate::common::oram(Config::new(64, 16), 9);
    oram.run(&mut store, &[Op::Write(1, &[1; 16])], &mut rng)
        .unwrap();
    let snap = oram.snapshot().unwrap();
    let key = shroud_oram::Key::generate(&mut rng);
    assert!(Oram::restore(&snap[..snap.len() - 1], key.clone()).is_err());
    let mut longer = snap.to_vec();
    longer.push(0);
    assert!(Oram::restore(&longer, key).is_err());
}
