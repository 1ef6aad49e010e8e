//! Subcommands that run services.

pub mod agent;
pub mod kv;
pub mod mail;
pub mod proxy;
pub mod storage;
pub mod tls;
