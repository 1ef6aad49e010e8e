//! The shroud client: the cover-traffic scheduler ([`schedule`]) that keeps K fixed-size
//! slots per epoch through the proxy, the oblivious key-value store on top of it ([`kv`]),
//! and a direct ORAM driver over the storage protocol, without the proxy ([`direct`]).
//!
//! This is the only crate that holds keys.

pub mod agent;
mod client;
pub mod direct;
pub mod durable;
mod engine;
mod error;
mod fsutil;
pub mod kv;
mod link;
pub mod mailbox;
pub mod resp;
pub mod schedule;
mod stats;
pub mod token;

pub use kv::{Kv, KvError};

/// A fresh store id and capability from `rng` (a CSPRNG: the capability is a secret).
pub fn random_grant<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> shroud_proto::Grant {
    let mut cap = [0u8; 32];
    rng.fill_bytes(&mut cap);
    shroud_proto::Grant::of(shroud_proto::Capability(cap))
}
pub use client::{Client, ClientConfig};
pub use error::{ClientError, Source};
pub use stats::ClientStats;
