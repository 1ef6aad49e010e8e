//! A client of the storage protocol: one connection, requests answered in order.
//! Used by ORAM clients (through `shroud-client`) and by the proxy.

use std::net::SocketAddr;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::frame_codec;
use crate::transport::{BoxIo, ClientTls};
use shroud_proto::{
    Batch, BatchReply, CodecError, Difficulty, ErrorCode, Geometry, Grant, Hello, Limits,
    ReadResult, Request, Response, StatsReply, StoreId, Work, decode, encode,
};

/// A failure talking to the storage server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// A message did not encode or decode.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// The server refused the request.
    #[error("server refused: {0:?}")]
    Refused(ErrorCode),
    /// The server answered with the wrong kind of response, or the wrong number of reads.
    #[error("unexpected response from the server")]
    Unexpected,
}

/// Finds the work that pays for `store` at `difficulty` (about 2^bits hashes), off the
/// async workers.
pub async fn find_work(store: StoreId, difficulty: Difficulty) -> std::io::Result<Work> {
    tokio::task::spawn_blocking(move || Work::find(&store, difficulty))
        .await
        .map_err(std::io::Error::other)
}

/// One connection to a storage server, after the hello.
pub struct Connection {
    framed: Framed<BoxIo, LengthDelimitedCodec>,
    limits: Limits,
    difficulty: Difficulty,
}

impl Connection {
    /// Connects (with TLS as `tls` says) and exchanges hellos.
    pub async fn connect(
        addr: SocketAddr,
        tls: &ClientTls,
        limits: Limits,
    ) -> Result<Self, ConnError> {
        let stream = tls.connect(addr).await?;
        let mut conn = Connection {
            framed: Framed::new(stream, frame_codec(limits)),
            limits,
            difficulty: Difficulty(0),
        };
        match conn.call(&Request::Hello(Hello::current())).await? {
            Response::Hello(_, difficulty) => {
                conn.difficulty = difficulty;
                Ok(conn)
            }
            _ => Err(ConnError::Unexpected),
        }
    }

    /// The work storage asks for a new store (from its hello).
    pub fn difficulty(&self) -> Difficulty {
        self.difficulty
    }

    /// Sends one request and waits for its response; a server error becomes
    /// [`ConnError::Refused`].
    pub async fn call(&mut self, req: &Request) -> Result<Response, ConnError> {
        let bytes = encode(req, self.limits)?;
        self.framed.send(Bytes::from(bytes)).await?;
        let frame = self.framed.next().await.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            )
        })??;
        match decode::<Response>(&frame, self.limits)? {
            Response::Error(code) => Err(ConnError::Refused(code)),
            r => Ok(r),
        }
    }

    /// Creates a store (or confirms it), first finding the work that pays for it at the
    /// server's difficulty (off the async workers).
    pub async fn create_store(
        &mut self,
        grant: &Grant,
        geometry: Geometry,
    ) -> Result<(), ConnError> {
        let work = find_work(grant.store, self.difficulty).await?;
        self.create_store_with(grant, geometry, work).await
    }

    /// Creates a store (or confirms it), with `work` that pays for it (see
    /// [`Connection::difficulty`]).
    pub async fn create_store_with(
        &mut self,
        grant: &Grant,
        geometry: Geometry,
        work: Work,
    ) -> Result<(), ConnError> {
        let req = Request::CreateStore {
            store: grant.store,
            capability: grant.capability.clone(),
            geometry,
            work,
        };
        match self.call(&req).await? {
            Response::Created => Ok(()),
            _ => Err(ConnError::Unexpected),
        }
    }

    /// Deletes a store.
    pub async fn delete_store(&mut self, grant: &Grant) -> Result<(), ConnError> {
        match self.call(&Request::DeleteStore(grant.clone())).await? {
            Response::Deleted => Ok(()),
            _ => Err(ConnError::Unexpected),
        }
    }

    /// Runs a batch; returns its reads, or the first refusal of any of its grants.
    pub async fn batch(&mut self, batch: Batch) -> Result<Vec<ReadResult>, ConnError> {
        let reply = self.batch_per_grant(batch).await?;
        match reply.refused.first() {
            Some(&(_, code)) => Err(ConnError::Refused(code)),
            None => Ok(reply.reads),
        }
    }

    /// Runs a batch of many clients' grants: storage refuses grants one by one, and answers
    /// the reads of the others (checked: one per read of every grant not refused).
    pub async fn batch_per_grant(&mut self, batch: Batch) -> Result<BatchReply, ConnError> {
        let mut reads_of = vec![0usize; batch.grants.len()];
        for op in &batch.ops {
            if let Some(n) = reads_of.get_mut(op.grant() as usize) {
                *n += op.answers();
            }
        }
        let reply = match self.call(&Request::Batch(batch)).await? {
            Response::Batch(r) => r,
            _ => return Err(ConnError::Unexpected),
        };
        let ascending = reply.refused.windows(2).all(|w| w[0].0 < w[1].0);
        let in_range = reply
            .refused
            .iter()
            .all(|&(g, _)| (g as usize) < reads_of.len());
        let reads: usize = reads_of
            .iter()
            .enumerate()
            .filter(|&(g, _)| reply.refuses(g as u32).is_none())
            .map(|(_, n)| n)
            .sum();
        if !ascending || !in_range || reply.reads.len() != reads {
            return Err(ConnError::Unexpected);
        }
        Ok(reply)
    }

    /// Storage's routing public key (pin it; do not trust this answer alone).
    pub async fn routing_key(&mut self) -> Result<[u8; 32], ConnError> {
        match self.call(&Request::RoutingKey).await? {
            Response::RoutingKey(k) => Ok(k),
            _ => Err(ConnError::Unexpected),
        }
    }

    /// The server's counters.
    pub async fn stats(&mut self) -> Result<StatsReply, ConnError> {
        match self.call(&Request::Stats).await? {
            Response::Stats(s) => Ok(s),
            _ => Err(ConnError::Unexpected),
        }
    }
}
