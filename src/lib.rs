//! The `shroud` command-line tool's library: every subcommand is a function here, so that
//! tests and benchmarks call exactly what the CLI runs.

#![forbid(unsafe_code)]

pub mod audit;
pub mod bench;
pub mod cmd;
pub mod plot;
pub mod stack;
pub mod stats;
pub mod view;
