//! The engine's storage seam over TCP: an async client of the storage protocol, and an
//! async driver that runs ORAM batches against a server.
//!
//! Each tree of an [`Oram`] (the data tree and every position-map tree) is one store on the
//! server, because a store has one bucket length. A round's fetch is one batch of reads; a
//! finished batch's write-back is one batch of writes, acknowledged once durable.
//!
//! # Security
//! The server sees, per round, a fixed number of reads of one store, and per batch a fixed
//! number of writes of each store: the shape is the same whatever the access was. Everything
//! it returns is verified by the engine before use. The capabilities are secrets held here.

use std::net::SocketAddr;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rand::CryptoRng;
use shroud_oram::{Op, Oram, Progress};
use shroud_wire::{
    Batch, BatchOp, Capability, ErrorCode, Geometry, Grant, Hello, Limits, Request, Response,
    StatsReply, StoreId, decode, encode, frame_codec,
};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// A failure talking to the storage server.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// A message did not encode or decode.
    #[error("codec: {0}")]
    Codec(#[from] shroud_wire::CodecError),
    /// The server refused the request.
    #[error("server refused: {0:?}")]
    Refused(ErrorCode),
    /// The server answered with the wrong kind of response, or the wrong number of reads.
    #[error("unexpected response from the server")]
    Unexpected,
    /// The engine refused, or detected tampering.
    #[error(transparent)]
    Oram(#[from] shroud_oram::Error),
}

/// One connection to a storage server, after the hello.
pub struct Connection {
    framed: Framed<TcpStream, LengthDelimitedCodec>,
    limits: Limits,
}

impl Connection {
    /// Connects and exchanges hellos.
    pub async fn connect(addr: SocketAddr, limits: Limits) -> Result<Self, RemoteError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut conn = Connection {
            framed: Framed::new(stream, frame_codec(limits)),
            limits,
        };
        match conn.call(&Request::Hello(Hello::current())).await? {
            Response::Hello(_) => Ok(conn),
            _ => Err(RemoteError::Unexpected),
        }
    }

    /// Sends one request and waits for its response; a server error becomes
    /// [`RemoteError::Refused`].
    pub async fn call(&mut self, req: &Request) -> Result<Response, RemoteError> {
        let bytes = encode(req, self.limits)?;
        self.framed.send(Bytes::from(bytes)).await?;
        let frame = self.framed.next().await.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            )
        })??;
        match decode::<Response>(&frame, self.limits)? {
            Response::Error(code) => Err(RemoteError::Refused(code)),
            r => Ok(r),
        }
    }

    /// Creates a store.
    pub async fn create_store(
        &mut self,
        grant: &Grant,
        geometry: Geometry,
    ) -> Result<(), RemoteError> {
        let req = Request::CreateStore {
            store: grant.store,
            capability: grant.capability.clone(),
            geometry,
        };
        match self.call(&req).await? {
            Response::Created => Ok(()),
            _ => Err(RemoteError::Unexpected),
        }
    }

    /// Deletes a store.
    pub async fn delete_store(&mut self, grant: &Grant) -> Result<(), RemoteError> {
        match self.call(&Request::DeleteStore(grant.clone())).await? {
            Response::Deleted => Ok(()),
            _ => Err(RemoteError::Unexpected),
        }
    }

    /// Runs a batch; returns its reads.
    pub async fn batch(
        &mut self,
        batch: Batch,
    ) -> Result<Vec<shroud_wire::ReadResult>, RemoteError> {
        let reads = batch
            .ops
            .iter()
            .filter(|o| matches!(o, BatchOp::Read { .. }))
            .count();
        match self.call(&Request::Batch(batch)).await? {
            Response::Batch(r) if r.len() == reads => Ok(r),
            _ => Err(RemoteError::Unexpected),
        }
    }

    /// The server's counters.
    pub async fn stats(&mut self) -> Result<StatsReply, RemoteError> {
        match self.call(&Request::Stats).await? {
            Response::Stats(s) => Ok(s),
            _ => Err(RemoteError::Unexpected),
        }
    }
}

/// The stores that hold one ORAM: one per tree, each with its capability.
pub struct RemoteStore {
    conn: Connection,
    grants: Vec<Grant>,
}

impl RemoteStore {
    /// Fresh random store ids and capabilities, one per tree of `oram`.
    pub fn new_grants<R: CryptoRng + ?Sized>(oram: &Oram, rng: &mut R) -> Vec<Grant> {
        oram.trees()
            .map(|_| {
                let mut id = [0u8; 16];
                let mut cap = [0u8; 32];
                rng.fill_bytes(&mut id);
                rng.fill_bytes(&mut cap);
                Grant {
                    store: StoreId(id),
                    capability: Capability(cap),
                }
            })
            .collect()
    }

    /// Creates one store per tree of `oram` on the server, with the given grants.
    pub async fn create(
        mut conn: Connection,
        oram: &Oram,
        grants: Vec<Grant>,
    ) -> Result<Self, RemoteError> {
        for (geom, grant) in oram.trees().zip(&grants) {
            let geometry = Geometry {
                bucket_len: geom.ciphertext_len() as u32,
                buckets: geom.bucket_count(),
            };
            conn.create_store(grant, geometry).await?;
        }
        Ok(RemoteStore { conn, grants })
    }

    /// Uses existing stores.
    pub fn open(conn: Connection, grants: Vec<Grant>) -> Self {
        RemoteStore { conn, grants }
    }

    /// The connection, for other requests.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Runs one ORAM batch against the server: one batch of reads per round, then one batch
    /// with every write-back. On any error the engine's batch is aborted (its state is
    /// unchanged) unless the error came after the engine committed, during the write-back:
    /// then [`RemoteStore::write_back`] must be retried before anything else.
    pub async fn run<R: CryptoRng + ?Sized>(
        &mut self,
        oram: &mut Oram,
        ops: &[Op<'_>],
        rng: &mut R,
    ) -> Result<(), RemoteError> {
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

    async fn fetch_round(&mut self, oram: &mut Oram) -> Result<(), RemoteError> {
        let Some(fetch) = oram.fetch() else {
            return Err(RemoteError::Unexpected);
        };
        let tree = fetch.ids().first().map_or(0, |id| id.tree as usize);
        let grant = self
            .grants
            .get(tree)
            .ok_or(RemoteError::Unexpected)?
            .clone();
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
        let mut fetch = oram.fetch().ok_or(RemoteError::Unexpected)?;
        for (i, r) in reads.iter().enumerate() {
            // A length error is recorded by the engine and reported by `advance`.
            let _ = fetch.supply(i, r.present.then_some(&r.data[..]));
        }
        Ok(())
    }

    /// Stores the finished batch's write-back (again, after a failure).
    pub async fn write_back(&mut self, oram: &Oram) -> Result<(), RemoteError> {
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
            .map(|&t| self.grants.get(t).cloned().ok_or(RemoteError::Unexpected))
            .collect::<Result<_, _>>()?;
        self.conn.batch(Batch { grants, ops }).await?;
        Ok(())
    }
}
