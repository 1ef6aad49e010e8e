//! The Redis Cluster storage engine (issue 15): stores and buckets in a cluster that many
//! storage servers share, so that the servers keep no data of their own.
//!
//! Layout in [`keys`]; atomicity in [`scripts`]; routing, durability and retries in
//! [`cluster`]. What the engine promises:
//! - **Atomic per store.** A batch's writes to one store are one script on the store's
//!   master, applied whole or not at all. A batch that writes several stores (the proxy's,
//!   one per client) is not atomic across them: a node can die between two stores'
//!   scripts. Each client reads and writes only its own store, and its integrity checks
//!   cover only that store, so no client can observe the difference (sled, by contrast,
//!   applies the whole batch atomically). `tests/suite/redis_backend.rs` kills a master
//!   between two stores' writes and checks both clients.
//! - **Durable when acknowledged.** Every mutation ends with `WAIT` for the configured
//!   replicas on the same connection, and the masters are expected to run
//!   `appendfsync always` (checked at connect, warned about if not): an acknowledged write
//!   is on the master's disk and in a replica's memory, so it survives `kill -9` of any
//!   one node. Redis 7.0 has no `WAITAOF`: a power loss of a master *and* its replica
//!   together keeps what the master fsynced, which with `appendfsync always` is everything
//!   acknowledged; with `everysec` up to a second of it may be lost.
//! - **Masters only.** Reads go to masters too; a replica may lag.
//! - **Fences.** Several storage servers share the cluster, and a batch can outlive its
//!   proxy's patience on one server (a network partition, a slow failover) while the proxy
//!   moves on to another, which applies the client's next batch; applied late, the first
//!   would take the store back in time (which the client would report as tampering). So
//!   each store counts the batches applied to it; a batch reads the count with the store's
//!   metadata ([`Backend::metas`]) and its write applies only if the count has not moved
//!   ([`BackendError::Conflict`] otherwise). The executor runs a batch's `metas` and
//!   `apply_new` under its lock, so the count read is the batch's own. A re-sent write
//!   (after a failure that hid its outcome) is recognised by its random token.
//!
//! # Security
//! The cluster sees what a storage server sees (store ids, sizes, which buckets a batch
//! touches) and holds only ciphertext and capability hashes. Run it on a private network:
//! the connection is plain TCP (with the URL's password, if any).

mod cluster;
pub(crate) mod keys;
mod scripts;

use std::time::Duration;

use redis::{Cmd, Value};
use shroud_proto::StoreId;

pub use cluster::ClusterError;
use cluster::{Cluster, Routed};

use crate::backend::{Backend, BackendError, Fetch, Put, StoreMeta, Usage, Want};
use crate::sled_backend::FORMAT_VERSION;

/// Indices of the scripts in [`scripts::ALL`].
const APPLY: usize = 0;
const CREATE: usize = 1;
const DELETE: usize = 2;
const RANGE: usize = 3;
const OUTBOX: usize = 4;
const FORMAT: usize = 5;

/// How the engine uses the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    /// Replicas that must confirm each mutation (`WAIT`) before it counts as done. 1 (the
    /// default) for a cluster with a replica per master; 0 only for a test without
    /// replicas. While a master has fewer live replicas, its writes fail (are retried,
    /// then refused) rather than be acknowledged with fewer copies.
    pub replicas: u32,
    /// How long `WAIT` waits for them.
    pub wait: Duration,
    /// How long a failed command is retried (with a fresh slot map) before the request
    /// fails: longer than a failover (the cluster's node timeout plus an election).
    pub retry_for: Duration,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            replicas: 1,
            wait: Duration::from_secs(2),
            retry_for: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// Stores and buckets in a Redis Cluster; see the module docs.
///
/// # Security
/// Holds ciphertext buckets and capability hashes only, like [`crate::SledBackend`].
pub struct RedisBackend {
    cluster: Cluster,
    /// Each store's fence as the last `metas` read it.
    fences: parking_lot::Mutex<std::collections::HashMap<StoreId, i64>>,
}

fn engine<E: std::error::Error + Send + Sync + 'static>(e: E) -> BackendError {
    BackendError::Engine(Box::new(e))
}

fn odd(what: &str, v: &Value) -> BackendError {
    engine(ClusterError::Protocol(format!("{what} answered {v:?}")))
}

impl RedisBackend {
    /// Connects to the cluster of `url` (`redis://HOST:PORT[,HOST:PORT...]`), reads its slot
    /// map, and marks (or checks) the format version. Blocking.
    pub fn connect(url: &str, options: RedisOptions) -> Result<Self, BackendError> {
        let cluster = Cluster::connect(
            url,
            cluster::Options {
                replicas: options.replicas,
                wait: options.wait,
                retry_for: options.retry_for,
                connect_timeout: options.connect_timeout,
            },
        )
        .map_err(engine)?;
        let backend = RedisBackend {
            cluster,
            fences: parking_lot::Mutex::new(std::collections::HashMap::new()),
        };
        backend.check_format()?;
        backend.check_persistence();
        Ok(backend)
    }

    fn script(&self, i: usize, keys: &[&[u8]], args: &[&[u8]]) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.cluster.sha(i)).arg(keys.len());
        for k in keys {
            cmd.arg(*k);
        }
        for a in args {
            cmd.arg(*a);
        }
        cmd
    }

    fn one(&self, slot: u16, cmd: Cmd, durable: bool) -> Result<Value, BackendError> {
        let mut v = self
            .cluster
            .run(&[Routed { slot, cmd }], durable)
            .map_err(engine)?;
        Ok(v.pop().unwrap_or_default())
    }

    fn check_format(&self) -> Result<(), BackendError> {
        let version = FORMAT_VERSION.to_string();
        let cmd = self.script(FORMAT, &[keys::FORMAT.as_bytes()], &[version.as_bytes()]);
        let v = self.one(keys::slot(keys::FORMAT.as_bytes()), cmd, true)?;
        let Value::BulkString(found) = &v else {
            return Err(odd("the format script", &v));
        };
        let found: u32 = std::str::from_utf8(found)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| odd("the format script", &v))?;
        if found != FORMAT_VERSION {
            return Err(BackendError::UnknownFormat {
                found,
                supported: FORMAT_VERSION,
            });
        }
        Ok(())
    }

    /// Warns if a master does not fsync every write (acknowledged writes could then be
    /// lost when a master and its replica fail together).
    fn check_persistence(&self) {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("appendfsync");
        match self.cluster.on_masters(&cmd) {
            Ok(answers) => {
                for a in answers {
                    let always = matches!(&a, Value::Array(kv) | Value::Set(kv)
                        if kv.get(1) == Some(&Value::BulkString(b"always".to_vec())))
                        || matches!(&a, Value::Map(kv)
                        if kv.first().map(|(_, v)| v) == Some(&Value::BulkString(b"always".to_vec())));
                    if !always {
                        tracing::warn!(
                            "redis: a master runs without `appendfsync always` ({a:?}): \
                             a power loss of a master and its replica together can lose \
                             acknowledged writes"
                        );
                    }
                }
            }
            Err(e) => tracing::warn!("redis: could not read the masters' appendfsync: {e}"),
        }
    }
}

/// The bytes of a bulk answer, `None` for nil.
fn bulk(what: &str, v: Value) -> Result<Option<Vec<u8>>, BackendError> {
    match v {
        Value::Nil => Ok(None),
        Value::BulkString(b) => Ok(Some(b)),
        other => Err(odd(what, &other)),
    }
}

fn int(what: &str, v: &Value) -> Result<i64, BackendError> {
    match v {
        Value::Int(n) => Ok(*n),
        Value::Boolean(b) => Ok(i64::from(*b)),
        other => Err(odd(what, other)),
    }
}

impl Backend for RedisBackend {
    fn meta(&self, store: &StoreId) -> Result<Option<StoreMeta>, BackendError> {
        Ok(self.metas(std::slice::from_ref(store))?.pop().flatten())
    }

    fn metas(&self, stores: &[StoreId]) -> Result<Vec<Option<StoreMeta>>, BackendError> {
        // Each store's metadata and fence, in one round trip.
        let cmds: Vec<Routed> = stores
            .iter()
            .flat_map(|s| {
                let slot = keys::store_slot(s);
                [
                    Routed {
                        slot,
                        cmd: redis::cmd("GET").arg(keys::meta(s)).clone(),
                    },
                    Routed {
                        slot,
                        cmd: redis::cmd("HGET").arg(keys::fence(s)).arg("n").clone(),
                    },
                ]
            })
            .collect();
        let answers = self.cluster.run(&cmds, false).map_err(engine)?;
        let mut fences = self.fences.lock();
        if fences.len() > 1 << 20 {
            fences.clear();
        }
        stores
            .iter()
            .zip(answers.chunks(2))
            .map(|(s, pair)| {
                let [meta, fence] = pair else {
                    return Err(odd("GET meta", &Value::Nil));
                };
                let n = match bulk("HGET fence", fence.clone())? {
                    Some(b) => std::str::from_utf8(&b)
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .ok_or_else(|| odd("HGET fence", fence))?,
                    None => 0,
                };
                fences.insert(*s, n);
                match bulk("GET meta", meta.clone())? {
                    Some(b) => StoreMeta::decode(s, &b).map(Some),
                    None => Ok(None),
                }
            })
            .collect()
    }

    fn create(&self, store: &StoreId, meta: &StoreMeta) -> Result<bool, BackendError> {
        let key = keys::meta(store);
        let cmd = self.script(CREATE, &[key.as_bytes()], &[&meta.encode()]);
        let v = self.one(keys::store_slot(store), cmd, true)?;
        Ok(int("the create script", &v)? == 1)
    }

    fn delete(&self, store: &StoreId) -> Result<u64, BackendError> {
        let (meta, buckets) = (keys::meta(store), keys::buckets(store));
        let cmd = self.script(DELETE, &[meta.as_bytes(), buckets.as_bytes()], &[]);
        let v = self.one(keys::store_slot(store), cmd, true)?;
        let Value::Array(parts) = &v else {
            return Err(odd("the delete script", &v));
        };
        let n = parts
            .first()
            .map(|n| int("the delete script", n))
            .transpose()?;
        let meta = match parts.get(1) {
            Some(Value::BulkString(b)) => Some(StoreMeta::decode(store, b)?),
            _ => None,
        };
        Ok(match (n, meta) {
            (Some(n), Some(m)) => {
                (n.max(0) as u64).saturating_mul(u64::from(m.geometry.bucket_len))
            }
            _ => 0,
        })
    }

    fn read(&self, store: &StoreId, bucket: u64, out: &mut Vec<u8>) -> Result<bool, BackendError> {
        let read = Fetch {
            store: *store,
            bucket,
            want: Want::Bucket,
        };
        match self.fetch(&[read])?.pop().flatten() {
            Some(b) => {
                out.clear();
                out.extend_from_slice(&b);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn xor_range(
        &self,
        store: &StoreId,
        bucket: u64,
        offset: usize,
        out: &mut [u8],
    ) -> Result<bool, BackendError> {
        let want = Want::Range {
            offset,
            len: out.len(),
        };
        let read = Fetch {
            store: *store,
            bucket,
            want,
        };
        match self.fetch(&[read])?.pop().flatten() {
            Some(b) => {
                crate::backend::xor_part(&b, 0, out)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// One command per store and kind: `HMGET` for whole buckets, the range script for
    /// slots, `HEXISTS` for the rare existence question.
    fn fetch(&self, reads: &[Fetch]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        // Per command: the reads it answers, in order.
        let mut groups: Vec<(StoreId, Want, Vec<usize>)> = Vec::new();
        let mut index: std::collections::HashMap<(StoreId, u8), usize> = Default::default();
        for (i, f) in reads.iter().enumerate() {
            let kind = match f.want {
                Want::Bucket => 0u8,
                Want::Range { .. } => 1,
                // One `HEXISTS` each.
                Want::Exists => {
                    groups.push((f.store, f.want, vec![i]));
                    continue;
                }
            };
            match index.get(&(f.store, kind)) {
                Some(&g) => groups[g].2.push(i),
                None => {
                    index.insert((f.store, kind), groups.len());
                    groups.push((f.store, f.want, vec![i]));
                }
            }
        }
        let cmds: Vec<Routed> = groups
            .iter()
            .map(|(store, want, members)| {
                let key = keys::buckets(store);
                let field = |i: &usize| keys::field(reads[*i].bucket);
                let cmd = match want {
                    Want::Bucket => {
                        let mut cmd = redis::cmd("HMGET");
                        cmd.arg(&key);
                        for i in members {
                            cmd.arg(&field(i)[..]);
                        }
                        cmd
                    }
                    Want::Range { .. } => {
                        let mut cmd = self.script(RANGE, &[key.as_bytes()], &[]);
                        for i in members {
                            if let Want::Range { offset, len } = reads[*i].want {
                                cmd.arg(&field(i)[..]).arg(offset).arg(len);
                            }
                        }
                        cmd
                    }
                    Want::Exists => redis::cmd("HEXISTS")
                        .arg(&key)
                        .arg(&field(&members[0])[..])
                        .clone(),
                };
                Routed {
                    slot: keys::store_slot(store),
                    cmd,
                }
            })
            .collect();
        let answers = self.cluster.run(&cmds, false).map_err(engine)?;
        let mut out: Vec<Option<Vec<u8>>> = vec![None; reads.len()];
        for ((_, want, members), v) in groups.iter().zip(answers) {
            if let Want::Exists = want {
                out[members[0]] = (int("HEXISTS", &v)? == 1).then(Vec::new);
                continue;
            }
            let Value::Array(items) = v else {
                return Err(odd("HMGET or the range script", &v));
            };
            if items.len() != members.len() {
                return Err(odd("HMGET or the range script", &Value::Array(items)));
            }
            for (i, item) in members.iter().zip(items) {
                let b = match item {
                    Value::Boolean(false) => None,
                    other => bulk("HMGET", other)?,
                };
                if let (Some(b), Want::Range { len, .. }) = (&b, reads[*i].want)
                    && b.len() != len
                {
                    return Err(BackendError::Corrupt("a bucket shorter than its store's"));
                }
                out[*i] = b;
            }
        }
        Ok(out)
    }

    fn contains(&self, store: &StoreId, bucket: u64) -> Result<bool, BackendError> {
        let read = Fetch {
            store: *store,
            bucket,
            want: Want::Exists,
        };
        Ok(self.fetch(&[read])?.pop().flatten().is_some())
    }

    fn apply(&self, puts: &[Put<'_>]) -> Result<(), BackendError> {
        self.apply_new(puts).map(|_| ())
    }

    /// One script per store, its puts in batch order (a later put of a bucket wins); the
    /// scripts count the buckets they add.
    fn apply_new(&self, puts: &[Put<'_>]) -> Result<u64, BackendError> {
        let mut stores: Vec<(StoreId, Vec<&Put<'_>>)> = Vec::new();
        let mut index: std::collections::HashMap<StoreId, usize> = Default::default();
        for p in puts {
            match index.get(&p.store) {
                Some(&g) => stores[g].1.push(p),
                None => {
                    index.insert(p.store, stores.len());
                    stores.push((p.store, vec![p]));
                }
            }
        }
        let token: [u8; 16] = rand::random();
        // The fence each store's write expects; unchecked (-1) for a store no `metas` read
        // (a write outside a batch).
        let wants: Vec<String> = {
            let fences = self.fences.lock();
            stores
                .iter()
                .map(|(s, _)| fences.get(s).copied().unwrap_or(-1).to_string())
                .collect()
        };
        let cmds: Vec<Routed> = stores
            .iter()
            .zip(&wants)
            .map(|((store, puts), want)| {
                let (meta, buckets, fence) =
                    (keys::meta(store), keys::buckets(store), keys::fence(store));
                let mut cmd = self.script(
                    APPLY,
                    &[meta.as_bytes(), buckets.as_bytes(), fence.as_bytes()],
                    &[want.as_bytes(), &token],
                );
                for p in puts {
                    cmd.arg(&keys::field(p.bucket)[..]).arg(p.data);
                }
                Routed {
                    slot: keys::store_slot(store),
                    cmd,
                }
            })
            .collect();
        let answers = self.cluster.run(&cmds, true).map_err(engine)?;
        let mut new_bytes = 0u64;
        for ((store, puts), v) in stores.iter().zip(&answers) {
            let new = match int("the apply script", v)? {
                // Deleted through another server after this batch checked it.
                -1 => return Err(BackendError::CorruptMeta(*store)),
                -2 => return Err(BackendError::Conflict(*store)),
                // Applied by an earlier sending of this very request.
                -3 => 0,
                n => n,
            };
            // The next batch reads the fence again; until then, this one moved it.
            if let Some(f) = self.fences.lock().get_mut(store) {
                *f += 1;
            }
            let len = puts.first().map_or(0, |p| p.data.len() as u64);
            new_bytes += new as u64 * len;
        }
        Ok(new_bytes)
    }

    fn outbox_create(&self, index: u64, cap_hash: &[u8; 32]) -> Result<bool, BackendError> {
        let number = index.to_string();
        let cmd = self.script(
            OUTBOX,
            &[keys::OUTBOXES.as_bytes()],
            &[number.as_bytes(), cap_hash],
        );
        let v = self.one(keys::slot(keys::OUTBOXES.as_bytes()), cmd, true)?;
        Ok(int("the outbox script", &v)? == 1)
    }

    fn outboxes(&self) -> Result<Vec<(u64, [u8; 32])>, BackendError> {
        let cmd = redis::cmd("HGETALL").arg(keys::OUTBOXES).clone();
        let v = self.one(keys::slot(keys::OUTBOXES.as_bytes()), cmd, false)?;
        let pairs: Vec<(Value, Value)> = match v {
            Value::Map(kv) => kv,
            Value::Array(flat) => {
                let mut it = flat.into_iter();
                std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
            }
            other => return Err(odd("HGETALL outboxes", &other)),
        };
        let mut out = Vec::with_capacity(pairs.len());
        for (k, h) in pairs {
            let (Value::BulkString(k), Value::BulkString(h)) = (&k, &h) else {
                return Err(odd("HGETALL outboxes", &k));
            };
            let index: u64 = std::str::from_utf8(k)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(BackendError::CorruptOutboxes(0))?;
            let hash: [u8; 32] = h[..]
                .try_into()
                .map_err(|_| BackendError::CorruptOutboxes(index))?;
            out.push((index, hash));
        }
        out.sort_by_key(|(i, _)| *i);
        Ok(out)
    }

    /// Every mutation is durable when it returns (`WAIT` and the masters' fsync).
    fn flush(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn usage(&self) -> Result<Usage, BackendError> {
        let metas = self.cluster.scan("shroud:{*}:meta").map_err(engine)?;
        let mut cmds = Vec::with_capacity(metas.len() * 2);
        for k in &metas {
            let slot = keys::slot(k);
            let buckets = [&k[..k.len().saturating_sub(4)], b"buckets"].concat();
            cmds.push(Routed {
                slot,
                cmd: redis::cmd("GET").arg(&k[..]).clone(),
            });
            cmds.push(Routed {
                slot,
                cmd: redis::cmd("HLEN").arg(buckets).clone(),
            });
        }
        let answers = self.cluster.run(&cmds, false).map_err(engine)?;
        let mut usage = Usage::default();
        for pair in answers.chunks(2) {
            let [meta, n] = pair else { continue };
            let Value::BulkString(meta) = meta else {
                continue;
            };
            let m = StoreMeta::decode(&StoreId([0; 16]), meta.as_slice())?;
            let n = int("HLEN", n)?.max(0) as u64;
            usage.stores += 1;
            usage.buckets += n;
            usage.bucket_bytes += n * u64::from(m.geometry.bucket_len);
        }
        usage.disk_bytes = self.disk_bytes()?;
        Ok(usage)
    }

    /// The masters' append-only files (`aof_current_size`), summed.
    fn disk_bytes(&self) -> Result<u64, BackendError> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("persistence");
        let answers = self.cluster.on_masters(&cmd).map_err(engine)?;
        let mut total = 0u64;
        for a in answers {
            let text = match &a {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::VerbatimString { text, .. } => text.clone(),
                _ => continue,
            };
            total += text
                .lines()
                .find_map(|l| l.strip_prefix("aof_current_size:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
        Ok(total)
    }
}
