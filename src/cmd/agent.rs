//! `shroud agent`: the always-on client. It keeps the fixed schedule running through the proxy,
//! keeps its state crash-safe under `--state DIR`, and serves the KV store over the Redis
//! protocol on loopback (and to `shroud kv`).
//!
//! Settings come from flags, or from a TOML file (`--config FILE`) with the same names
//! (`proxy`, `state`, `listen`, `ca`, `pin_cert`, `server_name`, `insecure_plaintext`,
//! `key_file`, `passphrase_env`, `max_value`, `storage_key`, `token_file`); flags win.
//!
//! The state key lives where the user says: a key file outside the state directory
//! (`--key-file`) or a passphrase (`--passphrase-env`); there is no default, because a key
//! beside the ciphertext it protects protects nothing. The Redis front admits only
//! connections that `AUTH` with the token in `--token-file` (default `STATE/agent.token`,
//! mode 0600, made on first start).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;
use shroud_client::durable::{Durable, Unlock};
use shroud_client::mailbox::Mailbox;
use shroud_client::{Client, ClientConfig, Kv};
use zeroize::Zeroizing;

use crate::cmd::tls::ClientTlsArgs;

/// The agent's settings, as flags or as keys of the TOML file.
#[derive(Args, Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// A TOML file with any of these settings (flags given here win).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// The proxy's address.
    #[arg(long)]
    pub proxy: Option<SocketAddr>,
    /// The directory of the client's state (created on first use).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Where the Redis front listens (loopback only).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// PEM CA file the proxy's certificate must chain to.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Accept exactly this proxy certificate instead.
    #[arg(long)]
    pub pin_cert: Option<PathBuf>,
    /// The name in the proxy's certificate (with `--ca`).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Talk to the proxy over plain TCP (local testing only; warns loudly).
    #[arg(long)]
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// The 32-byte key file that encrypts the state, outside the state directory (created,
    /// mode 0600, with a new state). Required unless --passphrase-env is given.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Read a passphrase from this environment variable and derive the state key with
    /// Argon2id instead of using a key file.
    #[arg(long)]
    pub passphrase_env: Option<String>,
    /// The largest value, bytes (default 65536).
    #[arg(long)]
    pub max_value: Option<usize>,
    /// Storage's mailbox routing public key, 64 hex digits (its `DIR/routing.pub`); needed
    /// when the proxy runs a mailbox. Answers that do not open with it are refused.
    #[arg(long)]
    pub storage_key: Option<String>,
    /// The access token local clients must `AUTH` with (default STATE/agent.token, made with
    /// mode 0600 on first start; `redis-cli -a "$(cat FILE)"`).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

impl AgentSettings {
    /// Flags over the TOML file.
    pub fn resolve(self) -> Result<Self> {
        let Some(path) = &self.config else {
            return Ok(self);
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: AgentSettings =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(AgentSettings {
            config: self.config.clone(),
            proxy: self.proxy.or(file.proxy),
            state: self.state.or(file.state),
            listen: self.listen.or(file.listen),
            ca: self.ca.or(file.ca),
            pin_cert: self.pin_cert.or(file.pin_cert),
            server_name: self.server_name.or(file.server_name),
            insecure_plaintext: self.insecure_plaintext || file.insecure_plaintext,
            key_file: self.key_file.or(file.key_file),
            passphrase_env: self.passphrase_env.or(file.passphrase_env),
            max_value: self.max_value.or(file.max_value),
            storage_key: self.storage_key.or(file.storage_key),
            token_file: self.token_file.or(file.token_file),
        })
    }

    fn state_dir(&self) -> Result<&Path> {
        self.state
            .as_deref()
            .context("--state DIR is required (or `state` in --config)")
    }

    fn unlock(&self) -> Result<Unlock> {
        match &self.passphrase_env {
            Some(var) => {
                let pass = std::env::var(var)
                    .with_context(|| format!("environment variable {var} is not set"))?;
                Ok(Unlock::Passphrase(Zeroizing::new(pass)))
            }
            None => {
                let state = self.state_dir()?;
                let Some(path) = self.key_file.clone() else {
                    let old = state.join("state.key");
                    if old.exists() {
                        bail!(
                            "{} sits beside the state it encrypts: move it out of {} and pass --key-file with its new path",
                            old.display(),
                            state.display()
                        );
                    }
                    bail!(
                        "say where the state key lives: --key-file FILE (outside {}; made on first start) or --passphrase-env VAR",
                        state.display()
                    );
                };
                if inside(&path, state) {
                    bail!(
                        "--key-file {} is inside the state directory {}: keep the key apart from what it encrypts",
                        path.display(),
                        state.display()
                    );
                }
                Ok(Unlock::KeyFile(path))
            }
        }
    }

    /// Where the Redis front's access token is.
    pub fn token_path(&self) -> Result<PathBuf> {
        match &self.token_file {
            Some(p) => Ok(p.clone()),
            None => Ok(self.state_dir()?.join("agent.token")),
        }
    }

    fn client_config(&self) -> Result<ClientConfig> {
        let proxy = self
            .proxy
            .context("--proxy ADDR is required (or `proxy` in --config)")?;
        let tls = ClientTlsArgs {
            ca: self.ca.clone(),
            pin_cert: self.pin_cert.clone(),
            server_name: self
                .server_name
                .clone()
                .unwrap_or_else(|| "localhost".into()),
        }
        .build(self.insecure_plaintext, "agent-proxy")?;
        let mut config = ClientConfig::new(proxy, tls);
        if let Some(hex) = &self.storage_key {
            config = config.with_storage_key(parse_key(hex)?);
        }
        Ok(config)
    }
}

/// 64 hex digits to 32 bytes.
pub fn parse_key(hex: &str) -> Result<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("a storage key is 64 hex digits (storage's DIR/routing.pub)");
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(out)
}

/// A running client with its KV store.
pub struct Running {
    /// The store.
    pub kv: Kv,
    /// The mailbox, when the proxy runs one.
    pub mail: Option<Mailbox>,
    /// The scheduler task.
    pub task: shroud_client::schedule::SchedulerTask,
}

/// True if `path` is `dir` or inside it (comparing what exists of both, resolved).
fn inside(path: &Path, dir: &Path) -> bool {
    let resolve = |p: &Path| -> PathBuf {
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(p)
        };
        // Resolve the longest existing ancestor (symlinks), keep the rest as written.
        let mut head = abs.clone();
        let mut tail = Vec::new();
        while !head.exists() {
            match (head.file_name().map(|n| n.to_os_string()), head.parent()) {
                (Some(name), Some(parent)) => {
                    tail.push(name);
                    head = parent.to_path_buf();
                }
                _ => break,
            }
        }
        let mut out = head.canonicalize().unwrap_or(head);
        for part in tail.into_iter().rev() {
            out.push(part);
        }
        out
    };
    resolve(path).starts_with(resolve(dir))
}

/// Opens (creating on first use) the state and starts the schedule.
pub async fn start(settings: &AgentSettings) -> Result<Running> {
    let dir = settings.state_dir()?.to_path_buf();
    let unlock = settings.unlock()?;
    let config = settings.client_config()?;
    let reach = |e: shroud_client::ClientError| -> anyhow::Error {
        let hint = match e {
            shroud_client::ClientError::Io(_) => format!(
                "reaching the proxy at {} (is it running there? --proxy; a TLS error: --ca, --pin-cert or --server-name)",
                config.proxy
            ),
            _ => "starting the client".to_string(),
        };
        anyhow::Error::new(e).context(hint)
    };
    if !Durable::exists(&dir) {
        Client::create(&config, &dir, &unlock)
            .await
            .map_err(reach)?;
        tracing::info!("agent: new state in {}", dir.display());
    }
    let (d, u) = (dir.clone(), unlock.clone());
    let (durable, meta) = tokio::task::spawn_blocking(move || Durable::open(&d, &u)).await??;
    let durable = Arc::new(durable);
    let (client, task) = Client::open(config.clone(), durable.clone(), &meta)
        .await
        .map_err(reach)?;
    let max = settings
        .max_value
        .unwrap_or(shroud_client::kv::DEFAULT_MAX_VALUE);
    let kv = Kv::open(client, max, durable.clone()).await?;
    tracing::info!("agent: state in {}, {} keys", dir.display(), kv.len().await);
    let mail = if kv.client().shape().mail() {
        let m = Mailbox::open(kv.clone(), Some(durable))
            .await
            .context("opening the mailbox")?;
        if let Some(a) = m.address() {
            tracing::info!("agent: mailbox {a}");
        }
        Some(m)
    } else {
        None
    };
    Ok(Running { kv, mail, task })
}

/// How long [`stop`] waits for the last write-back.
pub const STOP_WAIT: std::time::Duration = std::time::Duration::from_millis(600);

/// Stops a running client: drops its handles and waits up to [`STOP_WAIT`] for the last
/// write-back. Past that (the proxy is gone, say) the scheduler is cancelled: the write-back
/// is in the saved state and is sent on the next start, as after SIGKILL.
pub async fn stop(running: Running) -> Result<()> {
    drop(running.mail);
    drop(running.kv);
    let mut task = running.task;
    match tokio::time::timeout(STOP_WAIT, &mut task).await {
        Ok(r) => r??,
        Err(_) => {
            task.abort();
            let _ = task.await;
            tracing::info!(
                "agent: the last write-back was not taken within {STOP_WAIT:?}; it is kept in the state and sent on the next start"
            );
        }
    }
    Ok(())
}

/// `shroud agent`: serve until SIGINT or SIGTERM. Prints `listening on ADDR` once ready.
pub async fn serve(settings: AgentSettings) -> Result<()> {
    let listen = settings
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 6379)));
    if !listen.ip().is_loopback() {
        bail!("the agent serves only loopback addresses (its Redis front is not encrypted)");
    }
    let shutdown = crate::cmd::signals::shutdown();
    tokio::pin!(shutdown);
    let running = tokio::select! {
        r = start(&settings) => r?,
        () = &mut shutdown => return Ok(()),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!("agent: Redis protocol on {addr}");
    let token_path = settings.token_path()?;
    let token =
        shroud_client::token::AccessToken::load_or_create(&token_path).with_context(|| {
            format!(
                "the agent's access token (--token-file {})",
                token_path.display()
            )
        })?;
    tracing::info!(
        "agent: clients AUTH with the token in {}",
        token_path.display()
    );
    crate::cmd::announce(addr);
    shroud_client::agent::serve_with_mail(
        running.kv.clone(),
        running.mail.clone(),
        listener,
        Some(token),
        shutdown,
    )
    .await?;
    stop(running).await
}
