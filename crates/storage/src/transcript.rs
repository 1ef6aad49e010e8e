//! The operator's-eye log: one JSON line per request with what an honest-but-curious
//! operator sees and could record: time, connection, operation, store ids, bucket ids and
//! byte sizes. Never capabilities (the operator sees only their hashes) and never contents
//! (ciphertext, but still not logged).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use shroud_net::jsonl::JsonLines;
use shroud_proto::{BatchOp, Request};

/// The kind of a request, as the operator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Op {
    /// The connection's hello.
    Hello,
    /// A store created.
    Create,
    /// A store deleted.
    Delete,
    /// One epoch's batch of reads and writes.
    Batch,
    /// The operator's counters.
    Stats,
    /// Storage's routing key asked for.
    RoutingKey,
    /// An outbox made or found again (the request is sealed).
    Outbox,
    /// A reader's PIR key kept or forgotten.
    Reader,
    /// A round's outbox writes.
    Round,
    /// PIR queries answered.
    Answer,
}

impl std::fmt::Display for Op {
    /// The name the transcript uses.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Hello => "hello",
            Op::Create => "create",
            Op::Delete => "delete",
            Op::Batch => "batch",
            Op::Stats => "stats",
            Op::RoutingKey => "routing-key",
            Op::Outbox => "outbox",
            Op::Reader => "reader",
            Op::Round => "round",
            Op::Answer => "answer",
        })
    }
}

/// One transcript line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The connection's number, in accept order.
    pub conn: u64,
    /// What kind of request (serialized as `hello`, `batch`, `routing-key`, ...).
    pub op: Op,
    /// The stores named, hex.
    pub stores: Vec<String>,
    /// `(store index, bucket)` of each read, in order.
    pub reads: Vec<(u32, u64)>,
    /// `(store index, bucket, bytes)` of each write, in order.
    pub writes: Vec<(u32, u64, u32)>,
    /// Bytes of the request frame.
    pub request_bytes: u64,
    /// Bytes of the response frame.
    pub response_bytes: u64,
    /// The error returned, if any.
    pub error: Option<shroud_proto::ErrorCode>,
    /// The grants of a batch refused one by one (index into `stores`, and why).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<(u32, shroud_proto::ErrorCode)>,
}

impl Entry {
    /// What the operator sees of `req`.
    pub fn of(conn: u64, req: &Request, request_bytes: u64) -> Self {
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut e = Entry {
            time_ms,
            conn,
            op: Op::Hello,
            stores: Vec::new(),
            reads: Vec::new(),
            writes: Vec::new(),
            request_bytes,
            response_bytes: 0,
            error: None,
            refused: Vec::new(),
        };
        match req {
            Request::Hello(_) => e.op = Op::Hello,
            Request::CreateStore { store, .. } => {
                e.op = Op::Create;
                e.stores.push(store.to_string());
            }
            Request::DeleteStore(g) => {
                e.op = Op::Delete;
                e.stores.push(g.store.to_string());
            }
            Request::Batch(b) => {
                e.op = Op::Batch;
                e.stores = b.grants.iter().map(|g| g.store.to_string()).collect();
                for op in &b.ops {
                    match op {
                        BatchOp::Read { grant, bucket } => e.reads.push((*grant, *bucket)),
                        BatchOp::Write {
                            grant,
                            bucket,
                            data,
                        } => e.writes.push((*grant, *bucket, data.len() as u32)),
                        BatchOp::ReadSlots { grant, slots, .. } => {
                            e.reads.extend(slots.iter().map(|s| (*grant, s.bucket)));
                        }
                    }
                }
            }
            Request::Stats => e.op = Op::Stats,
            Request::RoutingKey => e.op = Op::RoutingKey,
            Request::Outbox(_) => e.op = Op::Outbox,
            Request::ReaderKey { .. } | Request::ForgetReader(_) => e.op = Op::Reader,
            Request::Round(w) => {
                e.op = Op::Round;
                e.writes = (0..w.len() as u32)
                    .map(|i| (i, 0, w[i as usize].0.len() as u32))
                    .collect();
            }
            Request::Answer(q) => {
                e.op = Op::Answer;
                e.reads = (0..q.len() as u32).map(|i| (i, 0)).collect();
            }
        }
        e
    }
}

/// The transcript file.
pub struct Transcript(JsonLines<Entry>);

impl Transcript {
    /// Creates (truncates) the file.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        JsonLines::create(path).map(Transcript)
    }

    /// Appends one line and flushes it to the file.
    pub fn record(&self, entry: &Entry) {
        if self.0.record(entry).is_err() {
            tracing::warn!("could not write the transcript");
        }
    }

    /// Reads a transcript back.
    pub fn read(path: &Path) -> std::io::Result<Vec<Entry>> {
        JsonLines::read(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_names_match_their_json() {
        for op in [
            Op::Hello,
            Op::Create,
            Op::Delete,
            Op::Batch,
            Op::Stats,
            Op::RoutingKey,
            Op::Outbox,
            Op::Reader,
            Op::Round,
            Op::Answer,
        ] {
            let json = serde_json::to_string(&op).unwrap();
            assert_eq!(json, format!("\"{op}\""));
        }
    }
}
