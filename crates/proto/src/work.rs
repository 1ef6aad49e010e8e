//! The proof of work that pays for a new store (issue 12, finding 5).
//!
//! Storage creates a store (a client's ORAM store at registration) or an outbox only with a
//! [`Work`] for its id that meets storage's [`Difficulty`]. It is
//! hashcash (A. Back, "Hashcash - A Denial of Service Counter-Measure", 2002) over SHA-256:
//! the work is a nonce such that `SHA-256("shroud-store-work-v1" || store id || nonce)` starts
//! with at least `bits` zero bits, which takes about 2^bits hashes to find and one to check.
//! Binding it to the store id means one proof pays for one store, and nobody can spend it on
//! another; the store id is itself bound to the owner's secret capability ([`StoreId::of`]).
//!
//! This bounds the *rate* at which anyone creates stores by the hashes they can afford; the
//! *number* of stores is bounded by storage's `max_stores` on top. A store's size is bounded
//! by its geometry (fixed by the proxy's shape) and the request caps.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::StoreId;

/// The most zero bits a difficulty may ask for (2^32 hashes is hours on one core).
pub const MAX_DIFFICULTY: u8 = 32;

/// How many leading zero bits storage asks of the work that creates a store.
///
/// # Security
/// Public: storage announces it in its hello and the proxy in its own. 22 bits (the CLI's
/// default) is about 4 million SHA-256 compressions: a fraction of a second on one core,
/// paid once per store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Difficulty(pub u8);

/// The nonce that proves the work for one store id.
///
/// # Security
/// Public (the proxy forwards it); meaningless for any other store id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Work(pub u64);

/// The leading zero bits of the work's hash for `store`.
fn zero_bits(store: &StoreId, nonce: u64) -> u32 {
    let mut h = Sha256::new();
    h.update(b"shroud-store-work-v1");
    h.update(store.0);
    h.update(nonce.to_be_bytes());
    let d = h.finalize();
    let mut bits = 0;
    for byte in d {
        bits += byte.leading_zeros();
        if byte != 0 {
            break;
        }
    }
    bits
}

impl Work {
    /// Finds work for `store` that meets `difficulty` (about 2^bits hashes; a difficulty
    /// above [`MAX_DIFFICULTY`] is treated as that).
    pub fn find(store: &StoreId, difficulty: Difficulty) -> Work {
        let bits = u32::from(difficulty.0.min(MAX_DIFFICULTY));
        let mut nonce = 0u64;
        while zero_bits(store, nonce) < bits {
            nonce = nonce.wrapping_add(1);
        }
        Work(nonce)
    }

    /// True if this work, for `store`, meets `difficulty`.
    pub fn meets(&self, store: &StoreId, difficulty: Difficulty) -> bool {
        zero_bits(store, self.0) >= u32::from(difficulty.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_bound_to_its_store_and_meets_its_difficulty() {
        let (a, b) = (StoreId([1; 16]), StoreId([2; 16]));
        for bits in [0u8, 1, 8, 12] {
            let w = Work::find(&a, Difficulty(bits));
            assert!(w.meets(&a, Difficulty(bits)));
        }
        let w = Work::find(&a, Difficulty(16));
        assert!(w.meets(&a, Difficulty(16)));
        // For another store, or asked for far more: not (each had odds of 2^-16 or less).
        assert!(!w.meets(&b, Difficulty(16)));
        assert!(!w.meets(&a, Difficulty(40)));
        // Zero difficulty: any work does.
        assert!(Work(12345).meets(&b, Difficulty(0)));
    }

    #[test]
    fn the_cost_grows_as_two_to_the_bits() {
        // Over 64 store ids, the mean nonce found at 10 bits is about 2^10 (the geometric
        // distribution's mean; its standard error over 64 draws is 2^10 / 8).
        let mean = (0..64u8)
            .map(|i| Work::find(&StoreId([i; 16]), Difficulty(10)).0 as f64 + 1.0)
            .sum::<f64>()
            / 64.0;
        assert!((600.0..1600.0).contains(&mean), "mean tries {mean}");
    }
}
