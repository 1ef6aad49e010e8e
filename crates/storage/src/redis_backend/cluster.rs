//! The cluster layer: which master serves each slot, one connection per master, and
//! commands sent to them in one pipeline per master.
//!
//! Why not the `redis` crate's cluster client: a write is acknowledged only once `WAIT`
//! says a replica holds it, and `WAIT` counts the writes made *on its own connection*. The
//! crate's client retries a failed command on a fresh connection (to the replica that took
//! over, say), where `WAIT` would count nothing and answer at once: an acknowledgement for
//! a write that may be lost. Here a group of writes and its `WAIT` always travel in one
//! pipeline on one connection; any failure (a dropped connection, `MOVED`, a replica that
//! did not confirm) re-sends the whole group, with its `WAIT`, after the slot map is read
//! again. The scripts are idempotent, so re-sending is safe.
//!
//! Commands are routed to masters only (reads too): a replica may lag behind.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::{Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Value};

use super::keys::SLOTS;

/// How the cluster is used; see [`crate::RedisOptions`].
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub replicas: u32,
    pub wait: Duration,
    pub retry_for: Duration,
    pub connect_timeout: Duration,
}

/// A cluster failure.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No node named in the URL, nor any node learnt since, answered `CLUSTER SLOTS`.
    #[error("no cluster node answers: {0}")]
    NoNodes(String),
    /// Commands still failed after retrying for the configured time.
    #[error("cluster unavailable after retrying for {after:?}: {last}")]
    Unavailable {
        /// How long it retried.
        after: Duration,
        /// The last failure.
        last: String,
    },
    /// The server refused a command for a reason retrying does not cure.
    #[error("redis refused a command: {0}")]
    Refused(String),
    /// A URL that does not parse, or an answer of an unexpected shape.
    #[error("redis: {0}")]
    Protocol(String),
}

/// A command and the slot of its keys.
pub(crate) struct Routed {
    pub slot: u16,
    pub cmd: Cmd,
}

/// One master and our connection to it.
struct Node {
    addr: (String, u16),
    con: Option<redis::Connection>,
}

/// The slot map and connections.
struct State {
    /// The index in `masters` of the master serving each slot (`u32::MAX`: none).
    slots: Vec<u32>,
    masters: Vec<Node>,
    /// Read the slot map again before the next use.
    stale: bool,
}

/// A Redis Cluster, reached through the nodes of a URL.
pub(crate) struct Cluster {
    /// How to connect (credentials and database), from the URL's first node.
    template: ConnectionInfo,
    /// The URL's nodes, asked for the slot map when no known master answers.
    seeds: Vec<(String, u16)>,
    options: Options,
    /// SHA-1 of each script, in [`super::scripts::ALL`]'s order.
    shas: Vec<String>,
    state: Mutex<State>,
}

/// Server error codes that a moment and a fresh slot map cure: the slot moved, a failover
/// is under way, a node is loading or restarting, a script is not loaded on a new master.
const RETRYABLE: [&str; 9] = [
    "MOVED",
    "ASK",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "LOADING",
    "READONLY",
    "MASTERDOWN",
    "NOSCRIPT",
    "BUSY",
];

impl Cluster {
    /// Parses `url` (`redis://HOST:PORT[,HOST:PORT...]`, credentials allowed on the first
    /// node) and reads the slot map.
    pub(crate) fn connect(url: &str, options: Options) -> Result<Self, ClusterError> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| ClusterError::Protocol(format!("not a redis:// URL: {url}")))?;
        let mut seeds = Vec::new();
        let mut template = None;
        for (i, node) in rest.split(',').enumerate() {
            let info = format!("redis://{node}")
                .into_connection_info()
                .map_err(|e| ClusterError::Protocol(format!("{node}: {e}")))?;
            let ConnectionAddr::Tcp(host, port) = info.addr().clone() else {
                return Err(ClusterError::Protocol(format!("{node}: plain TCP only")));
            };
            seeds.push((host, port));
            if i == 0 {
                template = Some(info);
            }
        }
        let template = template.ok_or_else(|| ClusterError::Protocol("no node".into()))?;
        let cluster = Cluster {
            template,
            seeds,
            options,
            shas: super::scripts::ALL
                .iter()
                .map(|s| redis::Script::new(s).get_hash().to_string())
                .collect(),
            state: Mutex::new(State {
                slots: vec![u32::MAX; usize::from(SLOTS)],
                masters: Vec::new(),
                stale: true,
            }),
        };
        {
            let mut state = cluster.state.lock();
            cluster.refresh(&mut state)?;
        }
        Ok(cluster)
    }

    /// The SHA-1 of script `i` of [`super::scripts::ALL`].
    pub(crate) fn sha(&self, i: usize) -> &str {
        &self.shas[i]
    }

    /// Runs `cmds` on the masters of their slots, one pipeline per master, and returns
    /// their answers in order. With `durable`, each pipeline ends with `WAIT` for the
    /// configured replicas, and a pipeline counts as done only if they confirmed.
    /// Failures that a fresh slot map or a moment can cure re-send the failed pipelines
    /// until the configured retry time is spent.
    pub(crate) fn run(&self, cmds: &[Routed], durable: bool) -> Result<Vec<Value>, ClusterError> {
        let mut state = self.state.lock();
        let started = Instant::now();
        let mut answers: Vec<Option<Value>> = vec![None; cmds.len()];
        let mut todo: Vec<usize> = (0..cmds.len()).collect();
        let mut pause = Duration::from_millis(20);
        let wait = durable && self.options.replicas > 0;
        loop {
            let mut last = String::new();
            let mut failed = Vec::new();
            if state.stale
                && let Err(e) = self.refresh(&mut state)
            {
                last = e.to_string();
            }
            if state.stale {
                failed = std::mem::take(&mut todo);
            } else {
                let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
                for &i in &todo {
                    match state.slots[usize::from(cmds[i].slot % SLOTS)] {
                        u32::MAX => {
                            last = format!("slot {} is not served", cmds[i].slot);
                            failed.push(i);
                        }
                        m => groups.entry(m).or_default().push(i),
                    }
                }
                let mut sent = Vec::new();
                for (m, group) in groups {
                    let mut pipe = redis::pipe();
                    for &i in &group {
                        pipe.add_command(cmds[i].cmd.clone());
                    }
                    if wait {
                        let ms = self.options.wait.as_millis().max(1) as u64;
                        pipe.cmd("WAIT").arg(self.options.replicas).arg(ms);
                    }
                    let node = &mut state.masters[m as usize];
                    match self.send(node, &pipe.get_packed_pipeline()) {
                        Ok(()) => sent.push((m, group)),
                        Err(e) => {
                            last = e;
                            failed.extend(group);
                        }
                    }
                }
                for (m, group) in sent {
                    let node = &mut state.masters[m as usize];
                    match self.receive(node, group.len() + usize::from(wait))? {
                        Ok(mut values) => {
                            if wait {
                                let confirmed = values.pop();
                                if !matches!(confirmed, Some(Value::Int(n)) if n >= i64::from(self.options.replicas))
                                {
                                    last = format!(
                                        "{}:{}: WAIT {} confirmed {confirmed:?}",
                                        node.addr.0, node.addr.1, self.options.replicas
                                    );
                                    failed.extend(group);
                                    continue;
                                }
                            }
                            for (i, v) in group.into_iter().zip(values) {
                                answers[i] = Some(v);
                            }
                        }
                        Err(e) => {
                            last = e;
                            failed.extend(group);
                        }
                    }
                }
            }
            if failed.is_empty() {
                return Ok(answers.into_iter().map(Option::unwrap_or_default).collect());
            }
            todo = failed;
            state.stale = true;
            if started.elapsed() + pause > self.options.retry_for {
                return Err(ClusterError::Unavailable {
                    after: started.elapsed(),
                    last,
                });
            }
            tracing::debug!("redis: retrying {} commands: {last}", todo.len());
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Runs `cmd` once on every master (no retries), for stats and scans.
    pub(crate) fn on_masters(&self, cmd: &Cmd) -> Result<Vec<Value>, ClusterError> {
        let mut state = self.state.lock();
        if state.stale {
            self.refresh(&mut state)?;
        }
        let mut out = Vec::new();
        let packed = cmd.get_packed_command();
        for node in &mut state.masters {
            self.send(node, &packed).map_err(ClusterError::Protocol)?;
            let mut v = self.receive(node, 1)?.map_err(ClusterError::Protocol)?;
            out.push(v.pop().unwrap_or_default());
        }
        Ok(out)
    }

    /// Every key matching `pattern` on every master (`SCAN`; slow, for startup).
    pub(crate) fn scan(&self, pattern: &str) -> Result<Vec<Vec<u8>>, ClusterError> {
        let mut state = self.state.lock();
        if state.stale {
            self.refresh(&mut state)?;
        }
        let mut keys = Vec::new();
        for node in &mut state.masters {
            let mut cursor = 0u64;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000);
                self.send(node, &cmd.get_packed_command())
                    .map_err(ClusterError::Protocol)?;
                let reply = self.receive(node, 1)?.map_err(ClusterError::Protocol)?;
                let bad = || ClusterError::Protocol("SCAN answered oddly".into());
                let Some(Value::Array(parts)) = reply.into_iter().next() else {
                    return Err(bad());
                };
                let [Value::BulkString(next), Value::Array(found)] = &parts[..] else {
                    return Err(bad());
                };
                for k in found {
                    if let Value::BulkString(k) = k {
                        keys.push(k.clone());
                    }
                }
                cursor = std::str::from_utf8(next)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(bad)?;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(keys)
    }

    /// Sends packed commands to `node`, connecting first if needed. A failure drops the
    /// connection (its state is unknown).
    fn send(&self, node: &mut Node, packed: &[u8]) -> Result<(), String> {
        if node.con.is_none() {
            node.con = Some(self.open(&node.addr)?);
        }
        let con = node.con.as_mut().ok_or("no connection")?;
        con.send_packed_command(packed).map_err(|e| {
            node.con = None;
            format!("{}:{}: {e}", node.addr.0, node.addr.1)
        })
    }

    /// Reads `n` answers from `node`. `Err(message)` (inner) for what retrying may cure,
    /// `Err(ClusterError)` (outer) for a refusal it cannot. Either way, all `n` are read
    /// unless the connection failed (then it is dropped).
    fn receive(
        &self,
        node: &mut Node,
        n: usize,
    ) -> Result<Result<Vec<Value>, String>, ClusterError> {
        let Some(con) = node.con.as_mut() else {
            return Ok(Err("no connection".into()));
        };
        let mut values = Vec::with_capacity(n);
        let mut retry = None;
        let mut refused = None;
        for _ in 0..n {
            match con.recv_response() {
                Ok(Value::ServerError(e)) => {
                    let msg = format!(
                        "{}:{}: {} {}",
                        node.addr.0,
                        node.addr.1,
                        e.code(),
                        e.details().unwrap_or("")
                    );
                    if RETRYABLE.contains(&e.code()) {
                        retry = retry.or(Some(msg));
                    } else {
                        refused = refused.or(Some(msg));
                    }
                    values.push(Value::Nil);
                }
                Ok(v) => values.push(v),
                Err(e) => {
                    node.con = None;
                    return Ok(Err(format!("{}:{}: {e}", node.addr.0, node.addr.1)));
                }
            }
        }
        if let Some(msg) = refused {
            return Err(ClusterError::Refused(msg));
        }
        if let Some(msg) = retry {
            // A fresh connection loads the scripts again (a node restarted without them).
            node.con = None;
            return Ok(Err(msg));
        }
        Ok(Ok(values))
    }

    /// A new connection to `addr`, with timeouts set and the scripts loaded.
    fn open(&self, addr: &(String, u16)) -> Result<redis::Connection, String> {
        let mut con = self.bare(addr)?;
        let where_ = format!("{}:{}", addr.0, addr.1);
        for (script, sha) in super::scripts::ALL.iter().zip(&self.shas) {
            let got: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(*script)
                .query(&mut con)
                .map_err(|e| format!("{where_}: SCRIPT LOAD: {e}"))?;
            if &got != sha {
                return Err(format!("{where_}: SCRIPT LOAD answered {got}, not {sha}"));
            }
        }
        Ok(con)
    }

    /// A new connection to `addr`, with timeouts set (no scripts: for the slot map).
    fn bare(&self, addr: &(String, u16)) -> Result<redis::Connection, String> {
        let where_ = format!("{}:{}", addr.0, addr.1);
        let info = self
            .template
            .clone()
            .set_addr(ConnectionAddr::Tcp(addr.0.clone(), addr.1));
        let client = redis::Client::open(info).map_err(|e| format!("{where_}: {e}"))?;
        let con = client
            .get_connection_with_timeout(self.options.connect_timeout)
            .map_err(|e| format!("{where_}: {e}"))?;
        // Longer than WAIT's own limit, so a slow WAIT answers before the socket gives up.
        let io = Some(self.options.wait + Duration::from_secs(5));
        con.set_read_timeout(io).map_err(|e| e.to_string())?;
        con.set_write_timeout(io).map_err(|e| e.to_string())?;
        Ok(con)
    }

    /// Reads the slot map (`CLUSTER SLOTS`) from a known master or a seed, keeping the
    /// connections of masters that stay.
    fn refresh(&self, state: &mut State) -> Result<(), ClusterError> {
        let mut asked: Vec<(String, u16)> = state.masters.iter().map(|n| n.addr.clone()).collect();
        asked.extend(self.seeds.iter().cloned());
        let mut last = String::from("no node to ask");
        for addr in asked {
            // A bare connection: the slot map needs no scripts.
            let reply = self.bare(&addr).and_then(|mut con| {
                redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query::<Value>(&mut con)
                    .map_err(|e| e.to_string())
            });
            match reply.map(|v| parse_slots(&v, &addr.0)) {
                Ok(Ok(ranges)) => {
                    let mut old: Vec<Node> = std::mem::take(&mut state.masters);
                    let mut slots = vec![u32::MAX; usize::from(SLOTS)];
                    for (from, to, master) in ranges {
                        let m = match state.masters.iter().position(|n| n.addr == master) {
                            Some(m) => m,
                            None => {
                                let con = old
                                    .iter_mut()
                                    .find(|n| n.addr == master)
                                    .and_then(|n| n.con.take());
                                state.masters.push(Node { addr: master, con });
                                state.masters.len() - 1
                            }
                        };
                        for s in from..=to.min(SLOTS - 1) {
                            slots[usize::from(s)] = m as u32;
                        }
                    }
                    state.slots = slots;
                    state.stale = false;
                    return Ok(());
                }
                Ok(Err(e)) => last = format!("{}:{}: {e}", addr.0, addr.1),
                Err(e) => last = e,
            }
        }
        Err(ClusterError::NoNodes(last))
    }
}

/// A node's host and port.
type Addr = (String, u16);

/// The first slot, the last, and the master serving them.
type SlotRange = (u16, u16, Addr);

/// `(first slot, last slot, master)` from a `CLUSTER SLOTS` answer; an empty host means
/// the node we asked.
fn parse_slots(v: &Value, asked: &str) -> Result<Vec<SlotRange>, String> {
    let Value::Array(ranges) = v else {
        return Err(format!("CLUSTER SLOTS answered {v:?}"));
    };
    let int = |v: &Value| match v {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let mut out = Vec::new();
    for r in ranges {
        let Value::Array(parts) = r else {
            return Err("a slot range that is not an array".into());
        };
        let (Some(from), Some(to), Some(Value::Array(node))) = (
            parts.first().and_then(int),
            parts.get(1).and_then(int),
            parts.get(2),
        ) else {
            return Err("a slot range without its master".into());
        };
        let host = match node.first() {
            Some(Value::BulkString(h)) if !h.is_empty() => String::from_utf8_lossy(h).into_owned(),
            _ => asked.to_string(),
        };
        let port = node.get(1).and_then(int).ok_or("a master without a port")?;
        out.push((from, to, (host, port)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn the_slot_map_is_read_and_odd_answers_refused() {
        let answer = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
                node("10.0.0.4", 7000),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node("", 7001)]),
        ]);
        let ranges = parse_slots(&answer, "10.0.0.9").expect("slots");
        assert_eq!(
            ranges,
            vec![
                (0, 5460, ("10.0.0.1".to_string(), 7000)),
                (5461, 16383, ("10.0.0.9".to_string(), 7001)),
            ]
        );
        for odd in [
            Value::Nil,
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Array(vec![
                Value::Int(0),
                Value::Int(70000),
                node("a", 1),
            ])]),
            Value::Array(vec![Value::Array(vec![
                Value::Int(0),
                Value::Int(1),
                node("a", -1),
            ])]),
        ] {
            assert!(parse_slots(&odd, "x").is_err(), "{odd:?}");
        }
    }
}
