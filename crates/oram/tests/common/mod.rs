//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use shroud_oram::{Config, Key, MemoryStore, Op, Oram, PositionMap};

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

pub fn oram(config: Config, seed: u64) -> (Oram, MemoryStore, ChaCha20Rng) {
    let mut rng = rng(seed);
    let key = Key::generate(&mut rng);
    let oram = Oram::new(config, key, &mut rng).expect("valid config");
    (oram, MemoryStore::new(), rng)
}

/// A recursive map small enough that tiny stores still get several trees.
pub fn tiny_recursive() -> PositionMap {
    PositionMap::Recursive {
        pos_block: 16,
        flat_limit: 2,
    }
}

/// A block whose bytes encode `(addr, version)`.
pub fn block(size: usize, addr: u64, version: u64) -> Vec<u8> {
    let mut b = vec![0u8; size];
    for (i, x) in b.iter_mut().enumerate() {
        *x = (addr
            .wrapping_mul(31)
            .wrapping_add(version.wrapping_mul(7))
            .wrapping_add(i as u64)
            % 251) as u8
            + 1;
    }
    b
}

/// Runs one batch and returns what each read saw.
pub fn batch(
    oram: &mut Oram,
    store: &mut MemoryStore,
    ops: &[Op<'_>],
    rng: &mut ChaCha20Rng,
) -> Vec<Option<Vec<u8>>> {
    oram.run(store, ops, rng).expect("honest store");
    (0..ops.len())
        .map(|j| oram.result(j).map(<[u8]>::to_vec))
        .collect()
}

/// One operation of a model test: the value written is a seed for [`block`].
#[derive(Clone, Debug)]
pub enum M {
    Read(u64),
    Write(u64, u64),
    Dummy,
}

/// The blocks the writes of a batch of model operations carry (`len` bytes; empty for the
/// other operations).
pub fn written(chunk: &[M], len: usize) -> Vec<Vec<u8>> {
    chunk
        .iter()
        .map(|m| match *m {
            M::Write(a, v) => block(len, a, v),
            _ => Vec::new(),
        })
        .collect()
}

/// The engine's operations for `chunk`, writing the blocks of [`written`].
pub fn engine_ops<'a>(chunk: &[M], datas: &'a [Vec<u8>]) -> Vec<Op<'a>> {
    chunk
        .iter()
        .zip(datas)
        .map(|(m, d)| match *m {
            M::Read(a) => Op::Read(a),
            M::Write(a, _) => Op::Write(a, d),
            M::Dummy => Op::Dummy,
        })
        .collect()
}

/// Checks what a batch of Ring ORAM accesses read against `model` (in order: a read sees
/// the writes before it; a dummy reads nothing; a block never written reads as `len` zeros)
/// and records its writes.
pub fn check_batch(
    chunk: &[M],
    datas: &[Vec<u8>],
    got: &[Vec<u8>],
    model: &mut std::collections::HashMap<u64, Vec<u8>>,
    len: usize,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), chunk.len());
    let zeros = vec![0u8; len];
    for ((m, d), g) in chunk.iter().zip(datas).zip(got) {
        match *m {
            M::Read(a) => prop_assert_eq!(g, model.get(&a).unwrap_or(&zeros), "read {}", a),
            M::Write(a, _) => {
                model.insert(a, d.clone());
            }
            M::Dummy => prop_assert!(g.is_empty()),
        }
    }
    Ok(())
}

/// `len` random operations on a store of `n` blocks.
pub fn ops(n: u64, len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<M>> {
    // Few distinct addresses make repeats (and overlapping batches) common.
    let hot = n.clamp(1, 6);
    let addr = prop_oneof![0..n, 0..hot];
    proptest::collection::vec(
        prop_oneof![
            addr.clone().prop_map(M::Read),
            (addr, any::<u64>()).prop_map(|(a, v)| M::Write(a, v)),
            Just(M::Dummy)
        ],
        len,
    )
}

/// How a malicious server misbehaves in the integrity tests.
#[derive(Clone, Copy, Debug)]
pub enum Attack {
    /// Flip a bit of a bucket read.
    Flip,
    /// Put another bucket's bytes in place of one read.
    Swap,
    /// Give an older version of a bucket read.
    Replay,
    /// Drop a bucket read.
    Delete,
    /// Make up a bucket that was never written.
    Invent,
}
