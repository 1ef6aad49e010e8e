//! The shroud client. Today: the storage protocol client ([`remote`]), which runs the
//! Path ORAM engine against a real storage server. The KV store, the cover-traffic
//! scheduler and the mailbox build on it (issues #4, #5, #6).
//!
//! This is the only crate that holds keys.

#![forbid(unsafe_code)]

pub mod remote;
pub mod schedule;

pub use schedule::{Client, ClientConfig, ClientError};
