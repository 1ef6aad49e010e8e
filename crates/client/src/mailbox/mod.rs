//! The private mailbox (docs/mail-delivery.md): accounts and addresses ([`identity`],
//! [`account`]), each account's outbox on storage's board ([`outbox`]), the rows written
//! there ([`row`]) and the chunks they carry ([`chunk`]), the Olm sessions that encrypt what
//! chunks say ([`session`]), each contact's streams of chunks ([`stream`]), whom to read and write each round ([`plan`]), the round frames on the
//! scheduler ([`courier`]), and the user's API with its history in the oblivious KV ([`api`]).

pub mod account;
pub mod api;
pub mod chunk;
pub mod commands;
pub mod courier;
pub mod identity;
pub(crate) mod outbox;
pub mod plan;
pub mod row;
pub mod session;
pub mod stream;

pub use account::Account;
pub use api::Mailbox;
pub use courier::{MAX_MESSAGE, MailError, MailState, Record};
pub use identity::{Address, Identity, safety_number};
