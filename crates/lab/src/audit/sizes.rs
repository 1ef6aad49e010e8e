//! What an operator sees, reduced to what must not depend on the users' activity: for
//! storage, the size of every request and response per kind (from its transcript); for the
//! proxy, the sizes of the frames its clients send (from its counters).

use std::collections::BTreeMap;
use std::path::Path;

use shroud_proto::proxy::ProxyStats;
use shroud_storage::{Op, Transcript};

/// One kind of storage request as seen on the wire: (op, request bytes, response bytes).
pub type RequestSize = (Op, u64, u64);

/// Storage's view: how many requests of each shape, counting only those with `clients`
/// participants (distinct stores of a batch, writes of a round, queries of an answer request
/// over `queries` per client).
pub fn storage(
    transcript: &Path,
    clients: usize,
    queries: usize,
) -> std::io::Result<BTreeMap<RequestSize, usize>> {
    let mut view = BTreeMap::new();
    for e in Transcript::read(transcript)? {
        let n = match e.op {
            Op::Batch => e
                .stores
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            Op::Round => e.writes.len(),
            Op::Answer => e.reads.len() / queries.max(1),
            _ => continue,
        };
        if n == clients {
            *view
                .entry((e.op, e.request_bytes, e.response_bytes))
                .or_insert(0) += 1;
        }
    }
    Ok(view)
}

/// The usual shape of `op`'s requests, and how many requests had another. The others are
/// the edges of a run: a client's first slot after (re)connecting carries no write-back.
pub fn usual(view: &BTreeMap<RequestSize, usize>, op: Op) -> Option<(RequestSize, usize, usize)> {
    let mut of_op: Vec<_> = view.iter().filter(|(k, _)| k.0 == op).collect();
    of_op.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
    let (shape, n) = of_op.first()?;
    let others = of_op.iter().skip(1).map(|(_, n)| **n).sum();
    Some((**shape, **n, others))
}

/// The proxy's view: (slot frame min, max, round frame min, max), in bytes.
pub fn proxy(stats: &ProxyStats) -> [u64; 4] {
    [
        stats.slot_frame_min,
        stats.slot_frame_max,
        stats.round_frame_min,
        stats.round_frame_max,
    ]
}
