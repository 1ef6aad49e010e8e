//! Small fixtures that tests and benchmarks would otherwise each write again.

use shroud_proto::{Capability, Grant, StoreId};

/// The store that the capability of thirty-two `store` bytes names, presented with the
/// capability of thirty-two `capability` bytes: the owner's grant when the two are equal,
/// a wrong capability for that store otherwise.
pub fn grant(store: u8, capability: u8) -> Grant {
    Grant {
        store: StoreId::of(&Capability([store; 32])),
        capability: Capability([capability; 32]),
    }
}

/// Writer `w`'s grant, for tests and benchmarks with one store per writer: distinct per
/// writer.
pub fn writer(w: usize) -> Grant {
    grant(w as u8 + 1, w as u8 + 1)
}
