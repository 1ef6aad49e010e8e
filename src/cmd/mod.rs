//! Subcommands that run services.

pub mod agent;
pub mod certs;
pub mod demo;
pub mod demo_mail;
pub mod kv;
pub mod mail;
pub mod proxy;
pub mod storage;
pub mod tls;
