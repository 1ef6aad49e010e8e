//! Subcommands that run services.

pub mod storage;
