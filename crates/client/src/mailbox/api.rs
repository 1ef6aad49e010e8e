//! The mailbox as users see it: an account, contacts, `send`, a `recv` stream, and each
//! conversation's history, all kept in the oblivious KV store.
//!
//! # History in the KV
//! - `mail/contact/NAME` holds a contact's address;
//! - `mail/msg/ADDRESS/TIME-DIR-ID` holds one message (a bincode [`Record`]): `TIME` is 16 hex
//!   digits of milliseconds, `DIR` is `i` (received) or `o` (sent), `ID` the sender's message
//!   id. Storing is idempotent (the key depends only on the record), so a message offered
//!   twice after a crash is stored once.
//!
//! Reading a conversation is ordinary KV reads through the fixed schedule: the server cannot
//! tell it from any other activity, or from none.

use std::sync::Arc;

use futures::Stream;
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::account::Account;
use super::courier::MailPort;
use super::courier::{MAX_MESSAGE, MailError, MailJob, Record};
use super::identity::{Address, safety_number};
use crate::durable::Durable;
use crate::kv::Kv;

const CONTACT: &str = "mail/contact/";
const MESSAGE: &str = "mail/msg/";

fn store_err(e: impl std::fmt::Display) -> MailError {
    MailError::Store(e.to_string())
}

fn record_key(r: &Record) -> Vec<u8> {
    format!(
        "{MESSAGE}{}/{:016x}-{}-{:016x}",
        r.peer,
        r.time_ms,
        if r.outgoing { 'o' } else { 'i' },
        r.message
    )
    .into_bytes()
}

fn decode_record(bytes: &[u8]) -> Result<Record, MailError> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(bytes.len() as u64)
        .deserialize(bytes)
        .map_err(|e| MailError::Store(format!("history record: {e}")))
}

fn encode_record(r: &Record) -> Result<Vec<u8>, MailError> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .serialize(r)
        .map_err(store_err)
}

/// A mailbox over a KV store whose client runs the proxy's mail schedule. `Clone`: share it.
///
/// ```no_run
/// # async fn f(kv: shroud_client::Kv, bob: shroud_client::mailbox::Address) -> Result<(), shroud_client::mailbox::MailError> {
/// use futures::StreamExt;
/// let mail = shroud_client::mailbox::Mailbox::open(kv, None).await?;
/// mail.add_contact("bob", bob).await?;
/// mail.send(&bob, b"lunch at noon?").await?; // returns once queued, durably
/// let mut incoming = Box::pin(mail.recv());
/// if let Some(m) = incoming.next().await {
///     println!("{} says {:?}", m.peer, String::from_utf8_lossy(&m.body));
/// }
/// let history = mail.conversation(&bob).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Mailbox {
    kv: Kv,
    port: Arc<MailPort>,
    durable: Option<Arc<Durable>>,
    events: broadcast::Sender<Record>,
    /// One `init` at a time (each may make an outbox).
    init_lock: Arc<tokio::sync::Mutex<()>>,
    _stop: Arc<DropGuard>,
}

impl Mailbox {
    /// Opens the mailbox of `kv`'s client (whose proxy must run a mailbox): loads the contacts
    /// and starts storing incoming and sent messages in the history. `durable` is where
    /// [`Mailbox::init`] keeps a new account (the agent's state).
    pub async fn open(kv: Kv, durable: Option<Arc<Durable>>) -> Result<Self, MailError> {
        let port = kv
            .client()
            .mail_port()
            .cloned()
            .ok_or_else(|| MailError::Unavailable("the proxy runs no mailbox".into()))?;
        let records = port
            .records
            .lock()
            .take()
            .ok_or_else(|| MailError::Unavailable("a mailbox is already open".into()))?;
        let (events, _) = broadcast::channel(1024);
        let stop = CancellationToken::new();
        let mailbox = Mailbox {
            kv,
            port,
            durable,
            events,
            init_lock: Arc::new(tokio::sync::Mutex::new(())),
            _stop: Arc::new(stop.clone().drop_guard()),
        };
        let contacts = mailbox.contacts().await?;
        *mailbox.port.contacts.write() = contacts.into_iter().map(|(_, a)| a).collect();
        tokio::spawn(store_loop(
            mailbox.kv.clone(),
            mailbox.port.clone(),
            mailbox.events.clone(),
            records,
            stop,
        ));
        Ok(mailbox)
    }

    /// This account's address, if it has one.
    pub fn address(&self) -> Option<Address> {
        *self.port.address.read()
    }

    /// Makes an account if there is none (kept in the client state) and its outbox at
    /// storage (paid with work), and returns its address. An account whose outbox was not
    /// made (storage was unreachable) gets it on the next call.
    pub async fn init(&self) -> Result<Address, MailError> {
        if let Some(a) = self.address() {
            return Ok(a);
        }
        let _one_at_a_time = self.init_lock.lock().await;
        if let Some(a) = self.address() {
            return Ok(a);
        }
        let known = self.port.account.lock().clone();
        let account = match known {
            Some(a) => a,
            None => {
                let a = Account::generate(&mut rand::rng());
                self.save_account(&a).await?;
                a
            }
        };
        let outbox = super::outbox::make(&self.port.link, &self.port.storage_key, &account).await?;
        let account = account.with_outbox(outbox);
        self.save_account(&account).await?;
        let address = account.address().ok_or(MailError::NoAccount)?;
        self.port
            .jobs
            .send(MailJob::Account(Box::new(account)))
            .map_err(|_| MailError::Closed)?;
        *self.port.address.write() = Some(address);
        Ok(address)
    }

    /// Keeps the account in the client state (if the client keeps one) and in the port.
    async fn save_account(&self, account: &Account) -> Result<(), MailError> {
        if let Some(d) = self.durable.clone() {
            let a = account.clone();
            tokio::task::spawn_blocking(move || d.save(&a))
                .await
                .map_err(store_err)?
                .map_err(store_err)?;
        }
        *self.port.account.lock() = Some(account.clone());
        Ok(())
    }

    /// Adds a contact (or another name for one). Mail is accepted only from contacts. A name
    /// that already holds an address with other keys is refused with
    /// [`MailError::KeyChanged`], showing both safety numbers: a changed key is never taken
    /// silently ([`Mailbox::replace_contact`] takes it, once the new number is checked).
    pub async fn add_contact(&self, name: &str, address: Address) -> Result<(), MailError> {
        self.set_contact(name, address, false).await
    }

    /// Gives `name` a new address, whatever it held (after comparing the new safety number
    /// with the contact over a channel you trust).
    pub async fn replace_contact(&self, name: &str, address: Address) -> Result<(), MailError> {
        self.set_contact(name, address, true).await
    }

    async fn set_contact(
        &self,
        name: &str,
        address: Address,
        replace: bool,
    ) -> Result<(), MailError> {
        if name.is_empty() || name.contains('/') || name.len() > 128 {
            return Err(MailError::Store(
                "contact names are 1 to 128 bytes, without '/'".into(),
            ));
        }
        let old = match self.contact(name).await {
            Ok(a) => Some(a),
            Err(MailError::UnknownContact(_)) => None,
            Err(e) => return Err(e),
        };
        if let Some(old) = old.filter(|o| *o != address) {
            if !replace {
                let number = |a: &Address| {
                    self.address()
                        .map_or_else(|| "(no address yet)".into(), |me| safety_number(&me, a))
                };
                return Err(MailError::KeyChanged {
                    name: name.into(),
                    was: number(&old),
                    now: number(&address),
                });
            }
            self.port.contacts.write().retain(|a| *a != old);
        }
        self.kv
            .put(
                format!("{CONTACT}{name}").as_bytes(),
                address.to_string().as_bytes(),
            )
            .await
            .map_err(store_err)?;
        let mut c = self.port.contacts.write();
        if !c.contains(&address) {
            c.push(address);
        }
        Ok(())
    }

    /// The safety number of this account and the contact named `name`: 60 digits, the same
    /// on both sides ([`safety_number`]).
    pub async fn safety_number(&self, name: &str) -> Result<String, MailError> {
        let me = self.address().ok_or(MailError::NoAccount)?;
        Ok(safety_number(&me, &self.contact(name).await?))
    }

    /// Every contact, by name.
    pub async fn contacts(&self) -> Result<Vec<(String, Address)>, MailError> {
        let mut out = Vec::new();
        for key in self.kv.keys().await {
            let Some(name) = key.strip_prefix(CONTACT.as_bytes()) else {
                continue;
            };
            let Some(value) = self.kv.get(&key).await.map_err(store_err)? else {
                continue;
            };
            let address: Address = String::from_utf8_lossy(&value).parse().map_err(store_err)?;
            out.push((String::from_utf8_lossy(name).into_owned(), address));
        }
        Ok(out)
    }

    /// The contact named `name`.
    pub async fn contact(&self, name: &str) -> Result<Address, MailError> {
        let v = self
            .kv
            .get(format!("{CONTACT}{name}").as_bytes())
            .await
            .map_err(store_err)?
            .ok_or_else(|| MailError::UnknownContact(name.into()))?;
        String::from_utf8_lossy(&v).parse().map_err(store_err)
    }

    /// Sends `bytes` to `to` (a contact); returns once the message is queued in the client
    /// state (durably). It goes out chunk by chunk in the coming rounds and stays queued
    /// until `to` acknowledges every chunk, across restarts of either side
    /// (`ClientStats::mail_delivered` counts messages acknowledged whole). The sent message
    /// joins the history.
    pub async fn send(&self, to: &Address, bytes: &[u8]) -> Result<(), MailError> {
        if bytes.len() > MAX_MESSAGE {
            return Err(MailError::TooLong(bytes.len()));
        }
        let (done, rx) = tokio::sync::oneshot::channel();
        self.port
            .jobs
            .send(MailJob::Send {
                to: *to,
                body: bytes.to_vec(),
                done,
            })
            .map_err(|_| MailError::Closed)?;
        rx.await.map_err(|_| MailError::Closed)?
    }

    /// Messages as they are stored in the history, received and sent, from now on. A
    /// subscriber that falls more than 1,024 behind skips ahead (the history keeps all).
    pub fn recv(&self) -> impl Stream<Item = Record> + use<> {
        let rx = self.events.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(m) => return Some((m, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// The conversation with `with`, oldest first.
    pub async fn conversation(&self, with: &Address) -> Result<Vec<Record>, MailError> {
        let prefix = format!("{MESSAGE}{with}/").into_bytes();
        let mut out = Vec::new();
        for key in self.kv.keys().await {
            if !key.starts_with(&prefix) {
                continue;
            }
            if let Some(v) = self.kv.get(&key).await.map_err(store_err)? {
                out.push(decode_record(&v)?);
            }
        }
        Ok(out)
    }

    /// Everyone with a conversation, and how many messages each has (from the client-local
    /// key map: no server traffic).
    pub async fn conversations(&self) -> Vec<(Address, usize)> {
        let mut out: Vec<(Address, usize)> = Vec::new();
        for key in self.kv.keys().await {
            let Some(rest) = key.strip_prefix(MESSAGE.as_bytes()) else {
                continue;
            };
            let Some(peer) = rest
                .split(|&b| b == b'/')
                .next()
                .and_then(|p| std::str::from_utf8(p).ok())
                .and_then(|p| p.parse::<Address>().ok())
            else {
                continue;
            };
            match out.last_mut() {
                Some((a, n)) if *a == peer => *n += 1,
                _ => out.push((peer, 1)),
            }
        }
        out
    }

    /// Messages in the history.
    pub async fn len(&self) -> usize {
        self.conversations().await.iter().map(|(_, n)| n).sum()
    }

    /// True if the history is empty.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }
}

/// Stores each whole message in the history, then tells the courier it may forget it.
async fn store_loop(
    kv: Kv,
    port: Arc<MailPort>,
    events: broadcast::Sender<Record>,
    mut records: tokio::sync::mpsc::UnboundedReceiver<(u64, Record)>,
    stop: CancellationToken,
) {
    loop {
        let (id, rec) = tokio::select! {
            _ = stop.cancelled() => return,
            r = records.recv() => match r {
                Some(x) => x,
                None => return,
            },
        };
        let value = match encode_record(&rec) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("mail history: {e}");
                continue;
            }
        };
        let key = record_key(&rec);
        // Retry until stored: the spool keeps the message meanwhile.
        let mut wait = std::time::Duration::from_millis(100);
        loop {
            let put = tokio::select! {
                _ = stop.cancelled() => return,
                r = kv.put(&key, &value) => r,
            };
            match put {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!("storing a message in the history failed ({e}); retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
        let _ = port.jobs.send(MailJob::Stored(id));
        let _ = events.send(rec);
    }
}
