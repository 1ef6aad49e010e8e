//! `shroud mail`: the private mailbox, through a running agent (its Redis front) or an
//! embedded one started for the command (`--state`, `--proxy`, `--storage-key`).

use std::net::SocketAddr;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use redis_protocol::resp2::types::OwnedFrame;

use crate::cmd::agent::AgentSettings;
use crate::cmd::kv::{Target, check};

/// `shroud mail`'s arguments.
#[derive(Args, Debug)]
pub struct MailArgs {
    /// A running agent's Redis address (default 127.0.0.1:6379 when no --state is given).
    #[arg(long)]
    pub agent: Option<SocketAddr>,
    /// With --state (and --proxy and --storage-key, or --config), run an embedded agent for
    /// this command.
    #[command(flatten)]
    pub settings: AgentSettings,
    #[command(subcommand)]
    /// What to do.
    pub command: MailCommand,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum MailCommand {
    /// Make this client's mailbox account (once) and print its address.
    Init,
    /// Print the address to share (public key, outbox number and key, checksum).
    Address,
    /// Add a contact by address (mail is accepted only from contacts), and print the safety
    /// number to compare with them. A name that has other keys already is refused, unless
    /// `--replace` (after comparing the new number with them).
    AddContact {
        /// A name for them.
        name: String,
        /// Their address (`shroud:...`).
        address: String,
        /// Take the address even if the name had other keys.
        #[arg(long)]
        replace: bool,
    },
    /// Print the safety number with a contact: the same 60 digits on both sides when each
    /// holds the other's real address.
    Safety {
        /// The contact's name.
        name: String,
    },
    /// Send MESSAGE to a contact (by name) or an address; returns once it is queued here,
    /// to go out in the next rounds (`inbox` shows what arrived).
    Send {
        /// Name or address.
        to: String,
        /// The message.
        message: String,
    },
    /// List conversations and their message counts.
    Inbox,
    /// Print the conversation with a contact (by name) or an address.
    Read {
        /// Name or address.
        with: String,
    },
}

fn lines(frame: OwnedFrame) {
    match frame {
        OwnedFrame::Array(items) => {
            for i in items {
                lines(i);
            }
        }
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => {
            shroud_lab::outln!("{}", String::from_utf8_lossy(&b));
        }
        OwnedFrame::Integer(n) => shroud_lab::outln!("{n}"),
        _ => {}
    }
}

/// Runs one `shroud mail` command.
pub async fn run(args: MailArgs) -> Result<()> {
    let settings = args.settings.resolve()?;
    let mut target = Target::open(args.agent, &settings).await?;
    let result = command(&mut target, args.command).await;
    target.close().await?;
    result
}

async fn command(target: &mut Target, command: MailCommand) -> Result<()> {
    let reply = match &command {
        MailCommand::Init => target.call(&[b"MAIL.INIT"]).await?,
        MailCommand::Address => target.call(&[b"MAIL.ADDRESS"]).await?,
        MailCommand::AddContact {
            name,
            address,
            replace,
        } => {
            let verb: &[u8] = if *replace {
                b"MAIL.REPLACE-CONTACT"
            } else {
                b"MAIL.ADD-CONTACT"
            };
            target
                .call(&[verb, name.as_bytes(), address.as_bytes()])
                .await?
        }
        MailCommand::Safety { name } => target.call(&[b"MAIL.SAFETY", name.as_bytes()]).await?,
        MailCommand::Send { to, message } => {
            target
                .call(&[b"MAIL.SEND", to.as_bytes(), message.as_bytes()])
                .await?
        }
        MailCommand::Inbox => target.call(&[b"MAIL.INBOX"]).await?,
        MailCommand::Read { with } => target.call(&[b"MAIL.READ", with.as_bytes()]).await?,
    };
    match check(reply)? {
        OwnedFrame::Null => bail!("nothing"),
        f => lines(f),
    }
    Ok(())
}
