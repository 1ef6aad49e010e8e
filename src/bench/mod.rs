//! Benchmarks behind `shroud bench`: the same functions the criterion benches call.

pub mod engine;
pub mod storage;
