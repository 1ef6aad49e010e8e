//! The connection to storage: opened on demand, dropped on any failure, reopened on the
//! next use. Nothing is retried here: a failed epoch's slots fail, and clients resend them.

use std::net::SocketAddr;
use std::time::Duration;

use futures::future::BoxFuture;
use shroud_net::conn::{ConnError, Connection};
use shroud_net::transport::ClientTls;
use shroud_proto::mail::{MailBatch, MailReply};
use shroud_proto::{Batch, BatchReply, Difficulty, Geometry, Grant, Limits, Work};

pub(crate) struct Upstream {
    addr: SocketAddr,
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
        addr: SocketAddr,
        tls: ClientTls,
        limits: Limits,
        timeout: Duration,
        difficulty: std::sync::Arc<parking_lot::Mutex<Option<Difficulty>>>,
    ) -> Self {
        Upstream {
            addr,
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
            let c = tokio::time::timeout(
                CONNECT_TIMEOUT,
                Connection::connect(self.addr, &self.tls, self.limits),
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

    /// Drops the connection after transport failures; keeps it after a refusal.
    fn settle<T>(&mut self, r: Result<T, ConnError>) -> Result<T, ConnError> {
        if let Err(e) = &r
            && !matches!(e, ConnError::Refused(_))
        {
            self.conn = None;
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

    pub async fn mail(&mut self, batch: MailBatch) -> Result<MailReply, ConnError> {
        self.with(|c| Box::pin(c.mail(batch))).await
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
