//! Benchmarks behind `shroud bench`: the same functions the criterion benches call.

pub mod all;
pub mod contacts;
pub mod cost;
pub mod disk;
pub mod e2e;
pub mod engine;
pub mod kv;
pub mod mail;
pub mod pir;
pub mod ring;
pub mod storage;
