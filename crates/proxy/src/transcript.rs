//! The proxy operator's-eye log: one JSON line per frame a client sends or receives, with
//! what the operator sees of it (the open epoch, the connection, the message kind, its size,
//! when it passed and, on request, every byte). Kinds are visible to the operator too: they
//! are the proxy's own protocol. Attack tests read it to try to tell workloads apart.

use std::path::Path;
use std::time::Instant;

use data_encoding::HEXLOWER;

use serde::{Deserialize, Serialize};
use shroud_net::jsonl::JsonLines;
use shroud_proto::proxy::ProxyMsg;

/// The kind of a frame, as the operator sees it (the proxy's own protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FrameKind {
    /// A hello, either way.
    Hello,
    /// A client registers its store.
    Register,
    /// A client's slot.
    Slot,
    /// A client's PIR key (once per connection).
    ReaderKey,
    /// A client's round frame.
    Round,
    /// A client's outbox request, or its reply.
    Outbox,
    /// A stats request or reply.
    Stats,
    /// The proxy confirms a registration.
    Registered,
    /// A slot's reads.
    Done,
    /// A slot storage failed for.
    Failed,
    /// Storage keeps the PIR key.
    ReaderKept,
    /// A round frame's answers.
    RoundDone,
    /// A round frame that did not run.
    RoundFailed,
    /// A refusal, after which the connection closes.
    Error,
}

impl FrameKind {
    /// The kind of the proxy's message.
    pub fn of_reply(m: &ProxyMsg) -> Self {
        match m {
            ProxyMsg::Hello(..) => FrameKind::Hello,
            ProxyMsg::Registered => FrameKind::Registered,
            ProxyMsg::Done(_) => FrameKind::Done,
            ProxyMsg::Failed(..) => FrameKind::Failed,
            ProxyMsg::ReaderKept => FrameKind::ReaderKept,
            ProxyMsg::RoundDone(_) => FrameKind::RoundDone,
            ProxyMsg::RoundFailed(..) => FrameKind::RoundFailed,
            ProxyMsg::Outbox(_) => FrameKind::Outbox,
            ProxyMsg::Stats(_) => FrameKind::Stats,
            ProxyMsg::Error(_) => FrameKind::Error,
        }
    }
}

/// One transcript line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The epoch open when the frame passed.
    pub epoch: u64,
    /// The connection's number, in accept order.
    pub conn: u64,
    /// True for a frame from the client, false for one to it.
    pub inbound: bool,
    /// What kind of frame (serialized as `hello`, `slot`, `round-done`, ...).
    pub kind: FrameKind,
    /// Bytes of the frame.
    pub bytes: u64,
    /// Microseconds since the transcript was opened, when the proxy read the frame off its
    /// connection or handed it to it.
    #[serde(default)]
    pub micros: u64,
    /// The frame itself, in lowercase hex (only with [`Transcript::with_frames`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<String>,
}

/// The transcript file.
pub struct Transcript {
    lines: JsonLines<Entry>,
    opened: Instant,
    frames: bool,
}

impl Transcript {
    fn new(lines: JsonLines<Entry>) -> Self {
        Transcript {
            lines,
            opened: Instant::now(),
            frames: false,
        }
    }

    /// Creates (truncates) the file.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        JsonLines::create(path).map(Transcript::new)
    }

    /// Opens the file to add to it (creating it if missing).
    pub fn append(path: &Path) -> std::io::Result<Self> {
        JsonLines::append(path).map(Transcript::new)
    }

    /// Also logs every frame's bytes (large: for attack tests).
    pub fn with_frames(mut self) -> Self {
        self.frames = true;
        self
    }

    /// Appends one line for `frame` and flushes it to the file.
    pub fn record(&self, epoch: u64, conn: u64, inbound: bool, kind: FrameKind, frame: &[u8]) {
        let entry = Entry {
            epoch,
            conn,
            inbound,
            kind,
            bytes: frame.len() as u64,
            micros: self.opened.elapsed().as_micros() as u64,
            frame: self.frames.then(|| HEXLOWER.encode(frame)),
        };
        if self.lines.record(&entry).is_err() {
            tracing::warn!("could not write the proxy transcript");
        }
    }

    /// Reads a transcript back.
    pub fn read(path: &Path) -> std::io::Result<Vec<Entry>> {
        JsonLines::read(path)
    }
}
