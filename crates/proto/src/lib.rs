//! The storage protocol: messages, limits and codec, in one small place shared by the
//! storage server, the proxy and the client.
//!
//! # Framing
//! Every message is one length-delimited frame (a 4-byte big-endian length, then the body),
//! capped by [`Limits::max_frame`]. The body is bincode 1.3 with fixed-width integers,
//! a size limit equal to the frame length and trailing bytes rejected ([`decode`]), so a
//! message's size depends only on its kind and counts, never on the values inside it, and a
//! hostile length prefix cannot make the decoder allocate more than the frame it already
//! holds.
//!
//! # Conversation
//! The client sends [`Request::Hello`] first; the server answers [`Response::Hello`] or
//! [`ErrorCode::UnsupportedVersion`] and closes. Then requests and responses alternate,
//! answered in order. Any malformed, oversized or out-of-order frame gets a
//! [`Response::Error`] and the connection is closed.
//!
//! # Security
//! Everything here crosses the network and is visible to the server (and, without TLS, to
//! the network). Capabilities are secrets: they are wiped on drop and the server keeps only
//! their hashes. Bucket contents are ciphertext sealed by the client.

pub mod board;
mod codec;
pub mod histogram;
mod message;
pub mod proxy;
pub mod routing;
#[cfg(test)]
mod samples;
pub mod sealed;
pub mod shape;
pub mod work;

pub use codec::{CodecError, Limits, decode, encode};
pub use message::{
    Batch, BatchOp, BatchReply, Capability, ErrorCode, Geometry, Grant, Hello, ReadResult, Request,
    Response, SlotRef, StatsReply, StoreId,
};
pub use shape::{Mode, Shape, ShapeError};
pub use work::{Difficulty, Work};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 6;

/// The magic bytes that open every hello.
pub const MAGIC: [u8; 8] = *b"SHROUD\0\x01";
