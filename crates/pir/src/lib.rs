//! Single-server private information retrieval over the mail board, without I/O.
//!
//! Every round, storage holds a board of [`Geometry::rows`] rows of [`ROW_LEN`] bytes, and
//! each reader fetches the rows it wants without storage learning which. The scheme is Spiral
//! (Menon and Wu, "Spiral: Fast, High-Rate Single-Server PIR via FHE Composition", IEEE S&P
//! 2022, eprint 2022/368), from its authors' implementation (`spiral-rs`) with the parameter
//! sets they published for each database size; nothing here changes the cryptography. Why
//! Spiral, measured against YPIR, is in docs/benchmarks.md ("PIR for mail delivery").
//!
//! - A reader makes a [`Reader`] once per connection and uploads its public key
//!   ([`Reader::public_key`], [`Geometry::key_len`] bytes); storage keeps it as a
//!   [`ReaderKey`].
//! - Each round storage prepares the board ([`Board::prepare`]); each query
//!   ([`Reader::query`], [`Geometry::query_len`] bytes) gets an answer
//!   ([`Board::answer`], [`Geometry::answer_len`] bytes), which only the reader decodes
//!   ([`Reader::decode`]).
//!
//! Every size depends only on the geometry, never on the row asked for or the board's
//! contents.
//!
//! # Security
//! Storage answers a query for any row with the same work and the same bytes; the query is
//! an RLWE encryption under the reader's secret (128-bit security for the published
//! parameters, per the paper's analysis), so nothing in it names the row. A reader's key is
//! reused across its queries, as the scheme allows (a fresh encryption per query). A server
//! that answers wrongly on purpose learns from it only what the reader does next, so a
//! reader must act the same whether an answer decodes or not (the delivery protocol's rule).
//! Untrusted bytes (a key or query at storage, an answer at the reader) are length-checked
//! before the library sees them, and a library panic on hostile contents is caught and
//! returned as [`PirError::Malformed`].

mod board;
mod geometry;
mod reader;

pub use board::{Board, ReaderKey};
pub use geometry::{Geometry, ROW_LEN};
pub use reader::Reader;

/// A PIR failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PirError {
    /// No published parameter set covers this many rows.
    #[error("no board of {0} rows: a power of two from 2^8 to 2^16")]
    Rows(u64),
    /// Bytes of the wrong length for what they claim to be.
    #[error("{what} of {got} bytes; this board's is {want}")]
    Length {
        /// What was being read.
        what: &'static str,
        /// Its length.
        got: usize,
        /// The length this geometry fixes.
        want: usize,
    },
    /// The bytes had the right length but the scheme could not use them.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A row past the board.
    #[error("row {0} is past the board")]
    Row(u64),
}

/// Checks that untrusted bytes have the length this geometry fixes.
fn expect_len(what: &'static str, got: usize, want: usize) -> Result<(), PirError> {
    if got == want {
        Ok(())
    } else {
        Err(PirError::Length { what, got, want })
    }
}

/// Runs the library on untrusted input: a panic inside it becomes a typed error.
fn guarded<T>(what: &'static str, f: impl FnOnce() -> T) -> Result<T, PirError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| PirError::Malformed(what))
}
