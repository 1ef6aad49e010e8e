//! Small fixtures that tests and benchmarks would otherwise each write again.

use shroud_proto::{Capability, Grant, StoreId};

/// A grant whose store id is sixteen `store` bytes and whose capability is thirty-two
/// `capability` bytes: readable in transcripts, and distinct per argument.
pub fn grant(store: u8, capability: u8) -> Grant {
    Grant {
        store: StoreId([store; 16]),
        capability: Capability([capability; 32]),
    }
}
