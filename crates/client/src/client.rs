//! The client: its settings ([`ClientConfig`]), the handle to its running schedule
//! ([`Client`]), and the constructors that wire the scheduler to whatever rides on it (the
//! mailbox's courier, when the proxy runs a mailbox). This is the one place that knows both.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use shroud_net::transport::ClientTls;
use shroud_oram::Key;
use shroud_proto::{Grant, Shape};
use tokio::sync::{mpsc, oneshot};

use crate::durable::{Durable, Meta, Unlock, decode_page};
use crate::engine::Engine;
use crate::error::{ClientError, message, state_err};
use crate::link::{Connected, Link, connect, hello, upload_key};
use crate::mailbox::Account;
use crate::mailbox::courier::{self, MailPort, MailState};
use crate::schedule::{self, Job, ORAM_PAGES, RIDER_PAGE, Resume, SchedulerTask, Start, Wal};
use crate::stats::ClientStats;

/// Where and how to reach the proxy.
#[derive(Clone)]
pub struct ClientConfig {
    /// The proxy's address.
    pub proxy: SocketAddr,
    /// TLS towards the proxy.
    pub tls: ClientTls,
    /// The first wait before reconnecting after a failed exchange; it doubles per failure
    /// up to `max_backoff`.
    pub min_backoff: Duration,
    /// The longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Storage's mailbox routing key, pinned (needed when the proxy runs a mailbox; answers
    /// that do not open with it are refused).
    pub storage_key: Option<[u8; 32]>,
    /// The mailbox account (a durable client keeps its own in the state instead).
    pub account: Option<Account>,
}

impl ClientConfig {
    /// Reconnection backoff from 50 ms up to 2 s.
    pub fn new(proxy: SocketAddr, tls: ClientTls) -> Self {
        ClientConfig {
            proxy,
            tls,
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            storage_key: None,
            account: None,
        }
    }

    /// Pins storage's mailbox routing key.
    pub fn with_storage_key(mut self, key: [u8; 32]) -> Self {
        self.storage_key = Some(key);
        self
    }

    /// The scheduler's part: where and how to reach the proxy.
    pub(crate) fn link(&self) -> Link {
        Link {
            proxy: self.proxy,
            tls: self.tls.clone(),
            min_backoff: self.min_backoff,
            max_backoff: self.max_backoff,
        }
    }

    /// Uses this mailbox account.
    pub fn with_account(mut self, account: Account) -> Self {
        self.account = Some(account);
        self
    }
}

/// A handle to a running scheduler: `Send + Sync + Clone`, usable from many tasks.
#[derive(Clone)]
pub struct Client {
    jobs: mpsc::Sender<Job>,
    shape: Shape,
    stats: Arc<ClientStats>,
    mail: Option<Arc<MailPort>>,
}

impl Client {
    /// Connects to the proxy, registers the store named by `grant`, and starts the schedule
    /// with a fresh engine under `key`, keeping no state on disk (tests, demos).
    pub async fn start(
        config: ClientConfig,
        key: Key,
        grant: Grant,
    ) -> Result<(Client, SchedulerTask), ClientError> {
        let connected = connect(&config.link(), &grant).await?;
        let shape = connected.shape;
        let mut rng = StdRng::from_rng(&mut rand::rng());
        let engine = Engine::new(&shape, key, &mut rng)?;
        let resume = Resume {
            pending: None,
            seq: 0,
            plan: None,
            rider: None,
        };
        let account = config.account.clone();
        Self::launch(
            config, grant, engine, rng, connected, None, resume, None, account,
        )
        .await
    }

    /// Starts the schedule from the state in `durable` (made by [`Client::create`]):
    /// restores the engine, resends the write-back it owes, and saves every batch.
    pub async fn open(
        config: ClientConfig,
        durable: Arc<Durable>,
        meta: &Meta,
    ) -> Result<(Client, SchedulerTask), ClientError> {
        if meta.shape.mail() && config.storage_key.is_none() {
            return Err(ClientError::NoStorageKey);
        }
        let connected = connect(&config.link(), &meta.grant).await?;
        let shape = connected.shape;
        if shape != meta.shape {
            return Err(ClientError::WrongShape(message(format!(
                "the state was made for {:?}, the proxy serves {shape:?}",
                meta.shape
            ))));
        }
        let mut rng = StdRng::from_rng(&mut rand::rng());
        let key = Key::from_bytes(meta.oram_key);
        let d = durable.clone();
        let (wal, pages) = tokio::task::spawn_blocking(move || {
            let mut pages = d.load_pages(ORAM_PAGES)?;
            pages.extend(d.load_pages(RIDER_PAGE)?);
            Ok::<_, crate::durable::StateError>((d.load::<Wal>()?, pages))
        })
        .await
        .map_err(state_err)?
        .map_err(state_err)?;
        let (engine, resume, mail) = match wal {
            Some(w) => {
                let page = |name: &str| pages.get(&format!("{ORAM_PAGES}{name}")).map(|p| &p[..]);
                let rider = pages.get(RIDER_PAGE).cloned();
                let mail = match rider.as_ref() {
                    Some(bytes) => Some(decode_page::<MailState>(bytes).map_err(state_err)?),
                    None => None,
                };
                (
                    Engine::from_pages(&shape, page, key).map_err(state_err)?,
                    Resume {
                        pending: w.pending.clone(),
                        seq: w.seq,
                        plan: w.plan.clone(),
                        rider,
                    },
                    mail,
                )
            }
            None => (
                Engine::new(&shape, key, &mut rng)?,
                Resume {
                    pending: None,
                    seq: 0,
                    plan: None,
                    rider: None,
                },
                None,
            ),
        };
        engine.check_shape(&shape)?;
        let d = durable.clone();
        let stored = tokio::task::spawn_blocking(move || d.load::<Account>())
            .await
            .map_err(state_err)?
            .map_err(state_err)?;
        let account = stored.or_else(|| config.account.clone());
        Self::launch(
            config,
            meta.grant.clone(),
            engine,
            rng,
            connected,
            Some(durable),
            resume,
            mail,
            account,
        )
        .await
    }

    /// Makes a new store's state under `dir`: asks the proxy for its shape, draws an ORAM key
    /// and a grant, and saves them encrypted as `unlock` says.
    pub async fn create(
        config: &ClientConfig,
        dir: &std::path::Path,
        unlock: &Unlock,
    ) -> Result<(), ClientError> {
        let shape = hello(&config.link()).await?.shape;
        if shape.mail() && config.storage_key.is_none() {
            return Err(ClientError::NoStorageKey);
        }
        let mut rng = rand::rng();
        let meta = Meta {
            version: crate::durable::VERSION,
            shape,
            grant: crate::random_grant(&mut rng),
            oram_key: *Key::generate(&mut rng).as_bytes(),
        };
        let (dir, unlock) = (dir.to_path_buf(), unlock.clone());
        tokio::task::spawn_blocking(move || Durable::create(&dir, &unlock, &meta).map(|_| ()))
            .await
            .map_err(state_err)?
            .map_err(state_err)
    }

    #[allow(clippy::too_many_arguments)]
    async fn launch(
        config: ClientConfig,
        grant: Grant,
        engine: Engine,
        rng: StdRng,
        connected: Connected,
        durable: Option<Arc<Durable>>,
        resume: Resume,
        mail: Option<MailState>,
        account: Option<Account>,
    ) -> Result<(Client, SchedulerTask), ClientError> {
        let Connected {
            mut conn, shape, ..
        } = connected;
        let stats = Arc::new(ClientStats::default());
        let (courier, port) = if shape.mail() {
            let storage_key = config.storage_key.ok_or(ClientError::NoStorageKey)?;
            let (link, stats) = (config.link(), stats.clone());
            // Making the PIR keys is a fraction of a second of CPU: off the async workers.
            let (courier, port) = tokio::task::spawn_blocking(move || {
                courier::attach(
                    &shape,
                    link,
                    storage_key,
                    account,
                    stats,
                    mail.unwrap_or_default(),
                )
            })
            .await
            .map_err(state_err)??;
            upload_key(&mut conn, schedule::Rider::key(&courier)).await?;
            (Some(courier), Some(Arc::new(port)))
        } else {
            (None, None)
        };
        let (jobs, task) = schedule::spawn(Start {
            link: config.link(),
            grant,
            shape,
            engine,
            rng,
            conn,
            durable,
            resume,
            rider: courier,
            stats: stats.clone(),
        });
        Ok((
            Client {
                jobs,
                shape,
                stats,
                mail: port,
            },
            task,
        ))
    }

    /// The mailbox's way in, if the proxy runs a mailbox.
    pub(crate) fn mail_port(&self) -> Option<&Arc<MailPort>> {
        self.mail.as_ref()
    }

    /// The proxy's shape (capacity and block size of this store).
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Reads block `addr` (zeros if never written).
    pub async fn read(&self, addr: u64) -> Result<Vec<u8>, ClientError> {
        if addr >= self.shape.capacity {
            return Err(ClientError::BadRequest(message(format!(
                "address {addr} past capacity {}",
                self.shape.capacity
            ))));
        }
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Read(addr, tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Writes block `addr`; returns once the write is durable: in Path ORAM at storage (the
    /// write-back that carries it is stored); in Ring ORAM once the client's state holding
    /// the block is saved (the block reaches storage at a later eviction).
    pub async fn write(&self, addr: u64, data: Vec<u8>) -> Result<(), ClientError> {
        if addr >= self.shape.capacity || data.len() != self.shape.block_size as usize {
            return Err(ClientError::BadRequest(message(format!(
                "address {addr} (capacity {}) or {} bytes (blocks are {})",
                self.shape.capacity,
                data.len(),
                self.shape.block_size
            ))));
        }
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Write(addr, data, tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }
}
