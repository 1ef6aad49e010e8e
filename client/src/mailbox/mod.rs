//! The private mailbox, first layer: identities, addresses, and sealed fixed-size envelopes.
//!
//! Delivery through the proxy and storage's inbox queues are not built yet (issue #6); what is
//! here is the cryptography they will carry, tested on its own.

pub mod envelope;
pub mod identity;

pub use envelope::{Envelope, Header, Reassembly, ReplayWindow};
pub use identity::{Address, Identity};
