//! Subcommands that run services.

pub mod certs;
pub mod storage;
pub mod tls;
