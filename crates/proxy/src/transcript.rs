//! The proxy operator's-eye log: one JSON line per frame a client sends or receives, with
//! what the operator sees of it (the open epoch, the connection, the message kind and its
//! size). Kinds are visible to the operator too: they are the proxy's own protocol.

use std::path::Path;

use serde::{Deserialize, Serialize};
use shroud_net::jsonl::JsonLines;

/// One transcript line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The epoch open when the frame passed.
    pub epoch: u64,
    /// The connection's number, in accept order.
    pub conn: u64,
    /// True for a frame from the client, false for one to it.
    pub inbound: bool,
    /// `hello`, `register`, `slot`, `mail`, `stats`; `done`, `mail-done`, `failed`, `error`...
    pub kind: String,
    /// Bytes of the frame.
    pub bytes: u64,
}

/// The transcript file.
pub struct Transcript(JsonLines<Entry>);

impl Transcript {
    /// Creates (truncates) the file.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        JsonLines::create(path).map(Transcript)
    }

    /// Opens the file to add to it (creating it if missing).
    pub fn append(path: &Path) -> std::io::Result<Self> {
        JsonLines::append(path).map(Transcript)
    }

    /// Appends one line and flushes it to the file.
    pub fn record(&self, entry: &Entry) {
        if self.0.record(entry).is_err() {
            tracing::warn!("could not write the proxy transcript");
        }
    }

    /// Reads a transcript back.
    pub fn read(path: &Path) -> std::io::Result<Vec<Entry>> {
        JsonLines::read(path)
    }
}
