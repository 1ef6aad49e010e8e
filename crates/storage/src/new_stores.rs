//! What a new store costs, and how many there may be (issue 12, finding 5).
//!
//! Without a price, anyone a proxy serves could create stores in a loop and fill the disk:
//! each store's size is bounded by its geometry (the proxy's shape), but their number was
//! not. Storage now creates a store (at registration) or an outbox (at `mail init`) only
//! with a proof of work for its id ([`shroud_proto::work`]) that meets [`NewStores::difficulty`],
//! and never more than [`NewStores::max_stores`] of them. Confirming a store that exists
//! (an owner's reconnection) costs nothing.
//!
//! A proof of work rather than admission tokens issued by the operator: it needs no
//! account, issuance or secret distribution, and it does not tie a store to whoever
//! received a token. It bounds the rate of creation by the hashes an attacker can afford;
//! `max_stores` bounds the total, so the disk a store can take times `max_stores` bounds
//! what storage can be made to hold.

use shroud_proto::{Difficulty, ErrorCode, StoreId, Work};

/// The default difficulty: 22 zero bits, about 4 million SHA-256 compressions (a fraction
/// of a second on one core of this machine, once per store).
pub const DEFAULT_DIFFICULTY: Difficulty = Difficulty(22);

/// The default limit on stores: 2^20. A store holds at most its geometry's buckets, so
/// this times the largest store bounds the disk; an operator serving fewer users lowers it.
pub const DEFAULT_MAX_STORES: u64 = 1 << 20;

/// The rule for making new stores.
///
/// # Security
/// Public: the difficulty is in storage's hello. `max_stores` counts every store; once
/// reached, nobody (honest or not) gets a new store until some are deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewStores {
    /// The zero bits a new store's work must have.
    pub difficulty: Difficulty,
    /// The most stores storage holds.
    pub max_stores: u64,
}

impl Default for NewStores {
    fn default() -> Self {
        NewStores {
            difficulty: DEFAULT_DIFFICULTY,
            max_stores: DEFAULT_MAX_STORES,
        }
    }
}

impl NewStores {
    /// Whether a store `store`, paid for with `work`, may be made while `stores` exist.
    pub fn admit(&self, store: &StoreId, work: Work, stores: u64) -> Result<(), ErrorCode> {
        if !work.meets(store, self.difficulty) {
            return Err(ErrorCode::NeedsWork);
        }
        if stores >= self.max_stores {
            return Err(ErrorCode::StoreLimit);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_needs_its_own_work_and_room() {
        let rule = NewStores {
            difficulty: Difficulty(12),
            max_stores: 10,
        };
        let (a, b) = (StoreId([1; 16]), StoreId([2; 16]));
        let work = Work::find(&a, rule.difficulty);
        assert_eq!(rule.admit(&a, work, 0), Ok(()));
        assert_eq!(rule.admit(&b, work, 0), Err(ErrorCode::NeedsWork));
        assert_eq!(rule.admit(&a, Work(u64::MAX), 0), Err(ErrorCode::NeedsWork));
        assert_eq!(rule.admit(&a, work, 10), Err(ErrorCode::StoreLimit));
    }
}
