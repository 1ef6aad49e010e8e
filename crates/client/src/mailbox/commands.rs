//! The agent's `MAIL.*` commands, over its Redis front (what `shroud mail` sends):
//!
//! | command | reply |
//! |---|---|
//! | `MAIL.INIT` | the address (made on first use) |
//! | `MAIL.ADDRESS` | the address |
//! | `MAIL.ADD-CONTACT name address` | the safety number (refused if `name` has other keys) |
//! | `MAIL.REPLACE-CONTACT name address` | the safety number (the keys of `name` replaced) |
//! | `MAIL.SAFETY name` | the safety number with that contact |
//! | `MAIL.CONTACTS` | `name address` lines |
//! | `MAIL.SEND name-or-address message` | `OK` once queued (durably) |
//! | `MAIL.INBOX` | `name-or-address count` per conversation |
//! | `MAIL.READ name-or-address` | `time-ms in/out message` per message, oldest first |

use redis_protocol::resp2::types::OwnedFrame;

use super::api::Mailbox;
use super::courier::MailError;
use super::identity::Address;

fn err(e: impl std::fmt::Display) -> OwnedFrame {
    OwnedFrame::Error(format!("ERR {e}"))
}

fn bulk(s: String) -> OwnedFrame {
    OwnedFrame::BulkString(s.into_bytes())
}

fn text(b: &[u8]) -> Result<&str, MailError> {
    std::str::from_utf8(b).map_err(|_| MailError::Store("arguments must be UTF-8".into()))
}

/// A contact's name, or an address given as is.
async fn resolve(mail: &Mailbox, who: &[u8]) -> Result<Address, MailError> {
    let who = text(who)?;
    match who.parse::<Address>() {
        Ok(a) => Ok(a),
        Err(_) => mail.contact(who).await,
    }
}

async fn name_of(mail: &Mailbox, a: &Address) -> String {
    match mail.contacts().await {
        Ok(c) => c
            .into_iter()
            .find(|(_, x)| x == a)
            .map_or_else(|| a.to_string(), |(n, _)| n),
        Err(_) => a.to_string(),
    }
}

/// The safety number with `name`, or a note that it comes once this account has an address.
async fn safety(mail: &Mailbox, name: &str) -> OwnedFrame {
    match mail.safety_number(name).await {
        Ok(n) => bulk(format!("safety number {n}")),
        Err(MailError::NoAccount) => bulk("safety number: run `mail init` first".into()),
        Err(e) => err(e),
    }
}

/// Runs one `MAIL.*` command (`name` upper-cased, `a` its arguments).
pub async fn execute(mail: Option<&Mailbox>, name: &str, a: &[Vec<u8>]) -> OwnedFrame {
    let Some(mail) = mail else {
        return err("this agent has no mailbox (the proxy runs none, or no storage_key is set)");
    };
    let r: Result<OwnedFrame, MailError> = async {
        Ok(match (name, a.len()) {
            ("MAIL.INIT", 0) => bulk(mail.init().await?.to_string()),
            ("MAIL.ADDRESS", 0) => bulk(mail.address().ok_or(MailError::NoAccount)?.to_string()),
            (verb @ ("MAIL.ADD-CONTACT" | "MAIL.REPLACE-CONTACT"), 2) => {
                let address: Address = text(&a[1])?
                    .trim()
                    .parse()
                    .map_err(|e| MailError::Store(format!("{e}")))?;
                let name = text(&a[0])?;
                if verb == "MAIL.ADD-CONTACT" {
                    mail.add_contact(name, address).await?;
                } else {
                    mail.replace_contact(name, address).await?;
                }
                safety(mail, name).await
            }
            ("MAIL.SAFETY", 1) => safety(mail, text(&a[0])?).await,
            ("MAIL.CONTACTS", 0) => OwnedFrame::Array(
                mail.contacts()
                    .await?
                    .into_iter()
                    .map(|(n, a)| bulk(format!("{n} {a}")))
                    .collect(),
            ),
            ("MAIL.SEND", 2) => {
                let to = resolve(mail, &a[0]).await?;
                mail.send(&to, &a[1]).await?;
                OwnedFrame::SimpleString(b"OK".to_vec())
            }
            ("MAIL.INBOX", 0) => {
                let mut out = Vec::new();
                for (peer, n) in mail.conversations().await {
                    out.push(bulk(format!("{} {n}", name_of(mail, &peer).await)));
                }
                OwnedFrame::Array(out)
            }
            ("MAIL.READ", 1) => {
                let with = resolve(mail, &a[0]).await?;
                OwnedFrame::Array(
                    mail.conversation(&with)
                        .await?
                        .into_iter()
                        .map(|r| {
                            bulk(format!(
                                "{} {} {}",
                                r.time_ms,
                                if r.outgoing { "out" } else { "in" },
                                String::from_utf8_lossy(&r.body)
                            ))
                        })
                        .collect(),
                )
            }
            _ => OwnedFrame::Error(format!(
                "ERR unknown command or wrong number of arguments for '{}'",
                name.to_ascii_lowercase()
            )),
        })
    }
    .await;
    r.unwrap_or_else(err)
}
