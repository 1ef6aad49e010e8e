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

/// Writer `w`'s grant, for tests and benchmarks with one store per writer: distinct per
/// writer, and never the all-zero store id (which the mailbox reserves for "no store").
pub fn writer(w: usize) -> Grant {
    grant(w as u8 + 1, w as u8 + 100)
}
