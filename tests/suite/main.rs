//! The functional integration tests, as modules of one binary (one link step instead of
//! seven): real storage, proxy and agents on 127.0.0.1 with port 0, real TLS, real sled,
//! real processes killed with SIGKILL. Filter by module: `cargo test --release --test suite
//! mail::`.
//!
//! The timing-sensitive suites (attacks, audit, chaos, load, proxy) keep binaries of their
//! own, so that each runs with the machine's two cores to itself.

#[path = "../common/mod.rs"]
mod common;

mod agent;
mod amplification;
mod indistinguishable;
mod intersection;
mod mail;
mod oblivious;
mod operations;
mod outbox;
mod redis_backend;
mod redis_cluster;
mod ring_wire;
mod selective_failure;
mod stalls;
mod storage;
mod storage_crash;
mod tls;
