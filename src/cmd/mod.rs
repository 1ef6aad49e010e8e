//! Subcommands that run services.

pub mod certs;
pub mod demo;
pub mod proxy;
pub mod storage;
pub mod tls;
