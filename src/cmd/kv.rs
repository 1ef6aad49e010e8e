//! `shroud kv`: put, get, delete and list keys, through a running agent (its Redis front) or
//! an embedded one started for the command (`--state`, `--proxy`).

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use redis_protocol::resp2::types::OwnedFrame;
use tokio::net::TcpStream;

use crate::cmd::agent::{self, AgentSettings, Running};

/// `shroud kv`'s arguments.
#[derive(Args, Debug)]
pub struct KvArgs {
    /// A running agent's Redis address (default 127.0.0.1:6379 when no --state is given).
    #[arg(long)]
    pub agent: Option<SocketAddr>,
    /// With --state (and --proxy, or --config), run an embedded agent for this command.
    #[command(flatten)]
    pub settings: AgentSettings,
    #[command(subcommand)]
    /// What to do.
    pub command: KvCommand,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum KvCommand {
    /// Create the client state (first use of --state), then exit.
    Init,
    /// Set KEY to VALUE (or to the contents of --file).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Print KEY's value.
    Get {
        /// The key.
        key: String,
    },
    /// Delete KEY.
    Del {
        /// The key.
        key: String,
    },
    /// List keys (matching a glob PATTERN).
    Ls {
        /// Redis-style glob.
        #[arg(default_value = "*")]
        pattern: String,
    },
    /// Bulk-load `key<TAB>value` lines from FILE, with a progress bar.
    Load {
        /// The file.
        file: PathBuf,
    },
}

/// Where commands go: a running agent, or an embedded one.
pub(crate) enum Target {
    Agent(TcpStream),
    Embedded(Box<Running>),
}

impl Target {
    /// Connects to the agent at `agent`, or starts an embedded one when `settings` name a
    /// state.
    pub(crate) async fn open(agent: Option<SocketAddr>, settings: &AgentSettings) -> Result<Self> {
        if settings.state.is_some() {
            return Ok(Target::Embedded(Box::new(agent::start(settings).await?)));
        }
        let addr = agent.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 6379)));
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("no agent at {addr} (start `shroud agent`)"))?;
        let token_file = settings
            .token_file
            .clone()
            .or_else(|| std::env::var_os("SHROUD_TOKEN_FILE").map(PathBuf::from));
        let Some(path) = token_file else {
            bail!(
                "the agent at {addr} admits only clients with its token: --token-file FILE (the agent's STATE/agent.token) or SHROUD_TOKEN_FILE"
            );
        };
        let token = shroud_client::token::AccessToken::load(&path)
            .with_context(|| format!("--token-file {}", path.display()))?;
        let reply =
            shroud_client::resp::call(&mut stream, &[b"AUTH", token.as_str().as_bytes()]).await?;
        if let OwnedFrame::Error(e) = reply {
            bail!(
                "the agent at {addr} refused the token in {}: {e}",
                path.display()
            );
        }
        Ok(Target::Agent(stream))
    }

    /// Stops an embedded agent.
    pub(crate) async fn close(self) -> Result<()> {
        match self {
            Target::Embedded(running) => agent::stop(*running).await,
            Target::Agent(_) => Ok(()),
        }
    }

    /// Sends one command; returns its reply.
    pub(crate) async fn call(&mut self, args: &[&[u8]]) -> Result<OwnedFrame> {
        match self {
            Target::Agent(stream) => Ok(shroud_client::resp::call(stream, args).await?),
            Target::Embedded(running) => {
                let args = args.iter().map(|a| a.to_vec()).collect();
                Ok(
                    shroud_client::resp::execute_with_mail(
                        &running.kv,
                        running.mail.as_ref(),
                        args,
                    )
                    .await
                    .0,
                )
            }
        }
    }
}

/// The frame, or its error as an error.
pub(crate) fn check(frame: OwnedFrame) -> Result<OwnedFrame> {
    match frame {
        OwnedFrame::Error(e) => bail!("{e}"),
        f => Ok(f),
    }
}

/// Runs one `shroud kv` command.
pub async fn run(args: KvArgs) -> Result<()> {
    let settings = args.settings.resolve()?;
    if let KvCommand::Init = args.command {
        let running = agent::start(&settings).await?;
        shroud_lab::outln!("state ready; {} keys", running.kv.len().await);
        return agent::stop(running).await;
    }
    let mut target = Target::open(args.agent, &settings).await?;
    let result = command(&mut target, args.command).await;
    target.close().await?;
    result
}

async fn command(target: &mut Target, command: KvCommand) -> Result<()> {
    match command {
        KvCommand::Init => {}
        KvCommand::Put { key, value, file } => {
            let value = match (value, file) {
                (Some(v), None) => v.into_bytes(),
                (None, Some(f)) => {
                    std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?
                }
                _ => bail!("give a VALUE or --file"),
            };
            check(target.call(&[b"SET", key.as_bytes(), &value]).await?)?;
        }
        KvCommand::Get { key } => match check(target.call(&[b"GET", key.as_bytes()]).await?)? {
            OwnedFrame::BulkString(v) => {
                shroud_lab::out::bytes(&v);
                shroud_lab::outln!();
            }
            _ => bail!("no such key"),
        },
        KvCommand::Del { key } => {
            if check(target.call(&[b"DEL", key.as_bytes()]).await?)? == OwnedFrame::Integer(0) {
                bail!("no such key");
            }
        }
        KvCommand::Ls { pattern } => {
            if let OwnedFrame::Array(keys) =
                check(target.call(&[b"KEYS", pattern.as_bytes()]).await?)?
            {
                for k in keys {
                    if let OwnedFrame::BulkString(k) = k {
                        shroud_lab::outln!("{}", String::from_utf8_lossy(&k));
                    }
                }
            }
        }
        KvCommand::Load { file } => {
            let f = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            let lines: Vec<String> = std::io::BufReader::new(f)
                .lines()
                .collect::<Result<_, _>>()?;
            let bar = indicatif::ProgressBar::new(lines.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} keys, {eta} left")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            for line in lines {
                let Some((k, v)) = line.split_once('\t') else {
                    continue;
                };
                check(target.call(&[b"SET", k.as_bytes(), v.as_bytes()]).await?)?;
                bar.inc(1);
            }
            bar.finish();
        }
    }
    Ok(())
}
