//! Direct to storage, without the proxy: an async driver that runs ORAM batches against a
//! storage server over the storage protocol, for tests, benchmarks and embedding (the
//! scheduler, through the proxy, is what hides timing).
//!
//! Each tree of an [`Oram`] (the data tree and every position-map tree) is one store on the
//! server, because a store has one bucket length. A round's fetch is one batch of reads; a
//! finished batch's write-back is one batch of writes, acknowledged once durable.
//!
//! # Security
//! The server sees, per round, a fixed number of reads of one store, and per batch a fixed
//! number of writes of each store: the shape is the same whatever the access was. Everything
//! it returns is verified by the engine before use. The capabilities are secrets held here.

use rand::CryptoRng;
use shroud_net::conn::{ConnError, Connection};
use shroud_oram::ring::{RingOram, RingReply, RingRequest};
use shroud_oram::{Op, Oram, Progress};
use shroud_proto::{Batch, BatchOp, Geometry, Grant};

/// A failure of an ORAM batch over the storage protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectError {
    /// The connection or the server failed.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// The engine refused, or detected tampering.
    #[error(transparent)]
    Oram(#[from] shroud_oram::Error),
}

/// The stores that hold one ORAM: one per tree, each with its capability.
pub struct DirectStore {
    conn: Connection,
    grants: Vec<Grant>,
}

impl DirectStore {
    /// Fresh random store ids and capabilities, one per tree of `oram`.
    pub fn new_grants<R: CryptoRng + ?Sized>(oram: &Oram, rng: &mut R) -> Vec<Grant> {
        oram.trees().map(|_| crate::random_grant(rng)).collect()
    }

    /// Creates one store per tree of `oram` on the server, with the given grants.
    pub async fn create(
        mut conn: Connection,
        oram: &Oram,
        grants: Vec<Grant>,
    ) -> Result<Self, DirectError> {
        for (geom, grant) in oram.trees().zip(&grants) {
            let geometry = Geometry {
                bucket_len: geom.ciphertext_len() as u32,
                buckets: geom.bucket_count(),
            };
            conn.create_store(grant, geometry).await?;
        }
        Ok(DirectStore { conn, grants })
    }

    /// Uses existing stores.
    pub fn open(conn: Connection, grants: Vec<Grant>) -> Self {
        DirectStore { conn, grants }
    }

    /// The connection, for other requests.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Runs one ORAM batch against the server: one batch of reads per round, then one batch
    /// with every write-back. On any error the engine's batch is aborted (its state is
    /// unchanged) unless the error came after the engine committed, during the write-back:
    /// then [`DirectStore::write_back`] must be retried before anything else.
    pub async fn run<R: CryptoRng + ?Sized>(
        &mut self,
        oram: &mut Oram,
        ops: &[Op<'_>],
        rng: &mut R,
    ) -> Result<(), DirectError> {
        oram.begin(ops, rng)?;
        loop {
            if let Err(e) = self.fetch_round(oram).await {
                oram.abort();
                return Err(e);
            }
            match oram.advance() {
                Ok(Progress::Fetch) => continue,
                Ok(Progress::Done) => break,
                Err(e) => {
                    oram.abort();
                    return Err(e.into());
                }
            }
        }
        self.write_back(oram).await
    }

    async fn fetch_round(&mut self, oram: &mut Oram) -> Result<(), DirectError> {
        let Some(fetch) = oram.fetch() else {
            return Err(ConnError::Unexpected.into());
        };
        let tree = fetch.ids().first().map_or(0, |id| id.tree as usize);
        let grant = self.grants.get(tree).ok_or(ConnError::Unexpected)?.clone();
        let ops = fetch
            .ids()
            .iter()
            .map(|id| BatchOp::Read {
                grant: 0,
                bucket: id.index,
            })
            .collect();
        let reads = self
            .conn
            .batch(Batch {
                grants: vec![grant],
                ops,
            })
            .await?;
        let mut fetch = oram.fetch().ok_or(ConnError::Unexpected)?;
        for (i, r) in reads.iter().enumerate() {
            // A length error is recorded by the engine and reported by `advance`.
            let _ = fetch.supply(i, r.present.then_some(&r.data[..]));
        }
        Ok(())
    }

    /// Stores the finished batch's write-back (again, after a failure).
    pub async fn write_back(&mut self, oram: &Oram) -> Result<(), DirectError> {
        let Some(wb) = oram.write_back() else {
            return Ok(());
        };
        let mut trees: Vec<usize> = Vec::new();
        let ops = wb
            .iter()
            .map(|(id, data)| {
                let t = id.tree as usize;
                let grant = match trees.iter().position(|&x| x == t) {
                    Some(g) => g,
                    None => {
                        trees.push(t);
                        trees.len() - 1
                    }
                };
                BatchOp::Write {
                    grant: grant as u32,
                    bucket: id.index,
                    data: data.to_vec(),
                }
            })
            .collect();
        let grants = trees
            .iter()
            .map(|&t| self.grants.get(t).cloned().ok_or(ConnError::Unexpected))
            .collect::<Result<_, _>>()?;
        self.conn.batch(Batch { grants, ops }).await?;
        Ok(())
    }
}

/// A Ring ORAM store on the server ([`shroud_oram::ring`]): one store whose buckets are
/// Z + S slots, each engine batch one storage batch (the previous batch's rewritten
/// buckets, then one XORed read of each access's online slots, and the maintenance reads
/// slot by slot).
///
/// # Security
/// As for [`DirectStore`]: the server sees the shape the engine documents, and everything
/// it returns is verified before use. The capability is a secret held here.
pub struct DirectRingStore {
    conn: Connection,
    grant: Grant,
}

impl DirectRingStore {
    /// Creates the store of `oram` on the server, under `grant`.
    pub async fn create(
        mut conn: Connection,
        oram: &RingOram,
        grant: Grant,
    ) -> Result<Self, DirectError> {
        let c = oram.config();
        let geometry = Geometry {
            bucket_len: c.bucket_len() as u32,
            buckets: c.buckets(),
        };
        conn.create_store(&grant, geometry).await?;
        Ok(DirectRingStore { conn, grant })
    }

    /// The connection, for other requests.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Runs one access and returns what it read (zeros for a block never written, nothing
    /// for a dummy). After an integrity error the access stays in flight: call
    /// [`DirectRingStore::resend`] once the server behaves.
    pub async fn run<R: CryptoRng + ?Sized>(
        &mut self,
        oram: &mut RingOram,
        op: Op<'_>,
        rng: &mut R,
    ) -> Result<Vec<u8>, DirectError> {
        let req = oram.begin(op, rng)?.clone();
        self.complete(oram, &req, rng).await
    }

    /// Runs a batch of accesses (at most the store's `max_batch`) in one storage batch;
    /// returns what each read.
    pub async fn run_batch<R: CryptoRng + ?Sized>(
        &mut self,
        oram: &mut RingOram,
        ops: &[Op<'_>],
        rng: &mut R,
    ) -> Result<Vec<Vec<u8>>, DirectError> {
        let req = oram.begin_batch(ops, rng)?.clone();
        self.complete(oram, &req, rng).await?;
        Ok(oram.results().map(<[u8]>::to_vec).collect())
    }

    /// Sends the access in flight again (its slots are spent: the very same request).
    pub async fn resend<R: CryptoRng + ?Sized>(
        &mut self,
        oram: &mut RingOram,
        rng: &mut R,
    ) -> Result<Vec<u8>, DirectError> {
        let req = oram.request().ok_or(ConnError::Unexpected)?.clone();
        self.complete(oram, &req, rng).await
    }

    async fn complete<R: CryptoRng + ?Sized>(
        &mut self,
        oram: &mut RingOram,
        req: &RingRequest,
        rng: &mut R,
    ) -> Result<Vec<u8>, DirectError> {
        let slot_len = oram.config().slot_len() as u32;
        let slots = crate::engine::slot_refs;
        let mut ops: Vec<BatchOp> = req
            .writes
            .iter()
            .map(|(id, data)| BatchOp::Write {
                grant: 0,
                bucket: id.index,
                data: data.clone(),
            })
            .collect();
        ops.extend(req.online.iter().map(|ids| BatchOp::ReadSlots {
            grant: 0,
            slot_len,
            xor: true,
            slots: slots(ids),
        }));
        if !req.reads.is_empty() {
            ops.push(BatchOp::ReadSlots {
                grant: 0,
                slot_len,
                xor: false,
                slots: slots(&req.reads),
            });
        }
        let mut reads = self
            .conn
            .batch(Batch {
                grants: vec![self.grant.clone()],
                ops,
            })
            .await?
            .into_iter();
        let online = reads
            .by_ref()
            .take(req.online.len())
            .map(|r| r.data)
            .collect();
        let reply = RingReply {
            online,
            reads: reads.map(|r| r.present.then_some(r.data)).collect(),
        };
        oram.finish(&reply, rng)?;
        Ok(oram.result().to_vec())
    }
}
