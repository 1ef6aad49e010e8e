//! The private mailbox: accounts and addresses ([`identity`], [`account`]), sealed fixed-size
//! envelopes ([`envelope`]), the scheduler's D deposits and one drain per epoch through the
//! proxy ([`courier`]), and the user's API with its history in the oblivious KV ([`api`]).
//! [`row`] and [`plan`] are the outbox row and the read and write plan of the delivery being
//! built (docs/mail-delivery.md).

pub mod account;
pub mod api;
pub mod commands;
pub mod courier;
pub mod envelope;
pub mod identity;
pub mod plan;
pub mod row;

pub use account::Account;
pub use api::Mailbox;
pub use courier::{MAX_MESSAGE, MailError, MailState, Record};
pub use envelope::{Header, Reassembly, ReplayWindow};
pub use identity::{Address, Identity};
