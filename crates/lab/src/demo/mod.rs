//! `shroud demo`: the whole system in one process, and what each operator saw.
//! First the key-value store ([`kv`]), then the mailbox ([`mail`]).

pub mod kv;
pub mod mail;

pub use kv::run;
