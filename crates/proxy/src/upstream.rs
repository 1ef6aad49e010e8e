//! The connection to storage: opened on demand, dropped on any failure, reopened on the
//! next use. Nothing is retried here: a failed epoch's slots fail, and clients resend them.
//!
//! Storage servers sharing one engine (a Redis Cluster) are interchangeable: the proxy is
//! given a list, uses the first, and after a failure reopens to the next one in turn, so
//! killing a storage server costs its clients one failed epoch. Proxies given the list in
//! different orders spread their clients across the servers.

use std::net::SocketAddr;
use std::time::Duration;

use futures::future::BoxFuture;
use shroud_net::conn::{ConnError, Connection};
use shroud_net::transport::ClientTls;
use shroud_proto::board::{PirBytes, Query};
use shroud_proto::sealed::Sealed;
use shroud_proto::{
    Batch, BatchReply, Difficulty, Geometry, Grant, Limits, Request, Response, Work,
};

pub(crate) struct Upstream {
    /// The storage servers, tried in turn; `next` is the one in use or to try next.
    addrs: Vec<SocketAddr>,
    next: usize,
    tls: ClientTls,
    limits: Limits,
    timeout: Duration,
    conn: Option<Connection>,
    /// What storage's hello last said a new store costs (shared by every upstream).
    difficulty: std::sync::Arc<parking_lot::Mutex<Option<Difficulty>>>,
}

fn timed_out() -> ConnError {
    ConnError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "storage did not answer in time",
    ))
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

impl Upstream {
    pub fn new(
        addrs: Vec<SocketAddr>,
        tls: ClientTls,
        limits: Limits,
        timeout: Duration,
        difficulty: std::sync::Arc<parking_lot::Mutex<Option<Difficulty>>>,
    ) -> Self {
        Upstream {
            addrs,
            next: 0,
            tls,
            limits,
            timeout,
            conn: None,
            difficulty,
        }
    }

    /// Storage's difficulty, connecting to learn it if no connection has yet.
    pub async fn difficulty(&mut self) -> Result<Difficulty, ConnError> {
        let r = self.conn().await.map(|c| c.difficulty());
        self.settle(r)
    }

    async fn conn(&mut self) -> Result<&mut Connection, ConnError> {
        if self.conn.is_none() {
            let addr = *self
                .addrs
                .get(self.next % self.addrs.len().max(1))
                .ok_or(ConnError::Unexpected)?;
            let c = tokio::time::timeout(
                CONNECT_TIMEOUT,
                Connection::connect(addr, &self.tls, self.limits),
            )
            .await
            .map_err(|_| {
                ConnError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting to storage",
                ))
            })??;
            *self.difficulty.lock() = Some(c.difficulty());
            self.conn = Some(c);
        }
        self.conn.as_mut().ok_or(ConnError::Unexpected)
    }

    /// Drops the connection after transport failures (the next use tries the next storage
    /// server); keeps it after a refusal.
    fn settle<T>(&mut self, r: Result<T, ConnError>) -> Result<T, ConnError> {
        if let Err(e) = &r
            && !matches!(e, ConnError::Refused(_))
        {
            self.conn = None;
            self.next = self.next.wrapping_add(1);
        }
        r
    }

    /// Runs one request on the connection (opened if need be) within the time limit, and
    /// drops the connection if it failed.
    async fn with<T>(
        &mut self,
        request: impl for<'c> FnOnce(&'c mut Connection) -> BoxFuture<'c, Result<T, ConnError>>,
    ) -> Result<T, ConnError> {
        let limit = self.timeout;
        let r = match self.conn().await {
            Ok(c) => tokio::time::timeout(limit, request(c))
                .await
                .unwrap_or_else(|_| Err(timed_out())),
            Err(e) => Err(e),
        };
        self.settle(r)
    }

    pub async fn batch(&mut self, batch: Batch) -> Result<BatchReply, ConnError> {
        self.with(|c| Box::pin(c.batch_per_grant(batch))).await
    }

    /// One request whose answer must be `expect`'s kind (a refusal is
    /// [`ConnError::Refused`]).
    async fn call<T>(
        &mut self,
        req: Request,
        expect: impl FnOnce(Response) -> Option<T> + Send + 'static,
    ) -> Result<T, ConnError>
    where
        T: Send + 'static,
    {
        self.with(move |c| {
            Box::pin(async move {
                match c.call(&req).await? {
                    Response::Error(code) => Err(ConnError::Refused(code)),
                    other => expect(other).ok_or(ConnError::Unexpected),
                }
            })
        })
        .await
    }

    /// Keeps a session's PIR key at storage.
    pub async fn keep_key(&mut self, session: [u8; 16], key: PirBytes) -> Result<(), ConnError> {
        self.call(Request::ReaderKey { session, key }, |r| {
            matches!(r, Response::Kept).then_some(())
        })
        .await
    }

    /// Forgets a session's PIR key.
    pub async fn forget_key(&mut self, session: [u8; 16]) -> Result<(), ConnError> {
        self.call(Request::ForgetReader(session), |r| {
            matches!(r, Response::Forgotten).then_some(())
        })
        .await
    }

    /// Forwards a sealed outbox request; returns the sealed reply.
    pub async fn outbox(&mut self, sealed: Sealed) -> Result<Sealed, ConnError> {
        self.call(Request::Outbox(sealed), |r| match r {
            Response::Outbox(s) => Some(s),
            _ => None,
        })
        .await
    }

    /// A round's writes: one sealed status each, in order.
    pub async fn round(&mut self, writes: Vec<Sealed>) -> Result<Vec<Sealed>, ConnError> {
        let n = writes.len();
        self.call(Request::Round(writes), move |r| match r {
            Response::Round(s) if s.len() == n => Some(s),
            _ => None,
        })
        .await
    }

    /// Queries against the round's board: one answer each, in order.
    pub async fn answer(&mut self, queries: Vec<Query>) -> Result<Vec<PirBytes>, ConnError> {
        let n = queries.len();
        self.call(Request::Answer(queries), move |r| match r {
            Response::Answers(a) if a.len() == n => Some(a),
            _ => None,
        })
        .await
    }

    pub async fn create(
        &mut self,
        grant: &Grant,
        geometry: Geometry,
        work: Work,
    ) -> Result<(), ConnError> {
        let grant = grant.clone();
        self.with(move |c| {
            Box::pin(async move { c.create_store_with(&grant, geometry, work).await })
        })
        .await
    }
}
