//! The shroud client: the cover-traffic scheduler ([`schedule`]) that keeps K fixed-size
//! slots per epoch through the proxy, the oblivious key-value store on top of it ([`kv`]),
//! and a direct ORAM driver over the storage protocol ([`remote`]).
//!
//! This is the only crate that holds keys.

#![forbid(unsafe_code)]

pub mod agent;
pub mod durable;
pub mod kv;
pub mod remote;
pub mod resp;
pub mod schedule;

pub use kv::{Kv, KvError};
pub use schedule::{Client, ClientConfig, ClientError};
