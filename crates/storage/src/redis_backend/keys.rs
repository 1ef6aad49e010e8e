//! Where things live in the cluster: key names, and the hash slot that places each.
//!
//! A store's keys carry its id (hex) as the hash tag `{...}`, so its metadata and buckets
//! share one slot, one master, and one atomic script:
//! - `shroud:{ID}:meta`: 44 bytes, the capability hash and geometry (as in sled);
//! - `shroud:{ID}:buckets`: a hash from bucket index (u64, big-endian) to bucket bytes;
//! - `shroud:{ID}:fence`: how many batches were applied to the store, and the last one's
//!   token (see [`super::RedisBackend`]'s "Fences").
//!
//! One hash per store (not one key per bucket) makes deleting a store a single `UNLINK`,
//! atomic with its metadata, so a store made again under the same id never sees old
//! buckets. The price: a store moves between masters (resharding) as one key.
//!
//! Two keys are global: `shroud:format` (the format version) and `shroud:outboxes` (a hash
//! from outbox number, decimal, to its capability hash).

use shroud_proto::StoreId;

/// The number of hash slots in a Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;

/// The format version key.
pub(crate) const FORMAT: &str = "shroud:format";
/// The outbox owners' key.
pub(crate) const OUTBOXES: &str = "shroud:outboxes";

/// A store's metadata key.
pub(crate) fn meta(store: &StoreId) -> String {
    format!("shroud:{{{}}}:meta", tag(store))
}

/// A store's bucket hash key.
pub(crate) fn buckets(store: &StoreId) -> String {
    format!("shroud:{{{}}}:buckets", tag(store))
}

/// A store's fence: a hash of `n`, the count of batches applied to it, and `token`, the
/// last one's. Kept when the store is deleted, so that it only grows.
pub(crate) fn fence(store: &StoreId) -> String {
    format!("shroud:{{{}}}:fence", tag(store))
}

/// The field of bucket `index` in its store's hash.
pub(crate) fn field(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The hash tag of a store's keys: its id in lowercase hex.
fn tag(store: &StoreId) -> String {
    data_encoding::HEXLOWER.encode(&store.0)
}

/// The slot of `key`, as Redis Cluster computes it: CRC16 (XMODEM) of the hash tag (the
/// bytes between the first `{` and the next `}`, if not empty), else of the whole key,
/// modulo 16384 (the Redis Cluster specification, "Keys distribution model").
pub(crate) fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS
}

/// The slot of every key of `store`.
pub(crate) fn store_slot(store: &StoreId) -> u16 {
    slot(meta(store).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_specification() {
        // The specification's example: "123456789" has CRC16 0x31C3 (12739).
        assert_eq!(slot(b"123456789"), 12739);
        // A hash tag places keys by the tag alone; an empty tag does not count.
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
    }

    #[test]
    fn a_stores_keys_share_its_slot() {
        let store = StoreId([7; 16]);
        assert_eq!(slot(meta(&store).as_bytes()), store_slot(&store));
        assert_eq!(slot(buckets(&store).as_bytes()), store_slot(&store));
        assert_eq!(slot(fence(&store).as_bytes()), store_slot(&store));
        assert!(meta(&store).contains(&format!("{{{}}}", "07".repeat(16))));
    }
}
