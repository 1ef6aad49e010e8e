//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

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
