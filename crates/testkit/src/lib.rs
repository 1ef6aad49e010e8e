//! The test kit: an in-process deployment ([`stack::Stack`]: storage, proxy and TLS on
//! 127.0.0.1 with port 0, in a temporary directory) and the fixtures tests share. The demo,
//! the audit and the benchmarks run on the same stack, so what they show is what the tests
//! check.
//!
//! # Security
//! Nothing here is for production: keys are made fresh for each stack and thrown away, and
//! the certificate authority is a throwaway one.

pub mod fixtures;
pub mod redis_cluster;
pub mod stack;
pub mod switch;

pub use stack::{MailUser, Stack, befriend};
