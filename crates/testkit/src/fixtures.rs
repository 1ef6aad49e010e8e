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

/// The proof-of-work difficulty of test servers: 8 bits (a few hundred hashes per store),
/// so that tests making many stores stay fast; the default (22 bits) is tested apart.
pub const TEST_DIFFICULTY: shroud_proto::Difficulty = shroud_proto::Difficulty(8);

/// Storage settings for tests: the defaults, with new stores at [`TEST_DIFFICULTY`].
pub fn storage_config() -> shroud_storage::Config {
    let mut config = shroud_storage::Config::default();
    config.new_stores.difficulty = TEST_DIFFICULTY;
    config
}
