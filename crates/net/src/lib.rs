//! shroud's I/O, shared by the storage server, the proxy and the client: TLS
//! ([`transport`]), the length-delimited framing ([`frame_codec`]), the one accept loop
//! ([`accept`]), writes released at a set instant ([`punctual`]), the connection to a
//! storage server ([`conn`]) and JSON-lines logs ([`jsonl`]). The messages themselves, and
//! every rule about their contents, live in `shroud_proto`, which has no I/O.
//!
//! # Security
//! Everything read here is untrusted: frames are capped at [`Limits::max_frame`] before a
//! byte of them is decoded, and the accept loop bounds the connections served at once.

pub mod accept;
pub mod certs;
pub mod conn;
pub mod jsonl;
pub mod punctual;
pub mod transport;

use shroud_proto::Limits;
use tokio_util::codec::LengthDelimitedCodec;

/// The length-delimited framing both ends use: 4-byte big-endian lengths, capped at
/// `limits.max_frame`, so a hostile length prefix is refused before anything is buffered.
pub fn frame_codec(limits: Limits) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(limits.max_frame)
        .new_codec()
}
