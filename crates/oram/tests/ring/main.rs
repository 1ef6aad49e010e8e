//! Ring ORAM's integration tests, as modules of one binary: property tests against a model
//! ([`model`]), tamper and rollback detection ([`integrity`]), the stash bound and the
//! eviction and reshuffle rates ([`stash`]), and what storage sees ([`oblivious`]).

#[path = "../common/mod.rs"]
mod common;

mod integrity;
mod model;
mod oblivious;
mod recursive;
mod stash;
mod state;

use rand_chacha::ChaCha20Rng;
use shroud_oram::Key;
use shroud_oram::ring::{RingConfig, RingOram};

/// A store with a fixed seed (the lineage id alone comes from the operating system).
pub fn engine(config: RingConfig, seed: u64) -> (RingOram, ChaCha20Rng) {
    let mut rng = common::rng(seed);
    let key = Key::generate(&mut rng);
    let oram = RingOram::new(config, key, &mut rng).expect("config");
    (oram, rng)
}
