//! The engine's integration tests, as modules of one binary: property tests against a model
//! ([`model`]), tamper and rollback detection ([`integrity`]), the stash bound ([`stash`]),
//! and snapshots, memory and the stored format sample ([`state`]). The counting-allocator
//! test (`tests/alloc.rs`) keeps a binary of its own: it replaces the global allocator.

#[path = "../common/mod.rs"]
mod common;

mod helper;
mod integrity;
mod model;
mod pages;
mod stash;
mod state;
