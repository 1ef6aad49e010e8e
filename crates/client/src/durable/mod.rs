//! Crash-safe client state, encrypted at rest, under `--state DIR`.
//!
//! A sled database holds a few records, each sealed with XChaCha20-Poly1305 (random 192-bit
//! nonces, so the nonce space needs no counter; the record name is the associated data, so
//! records cannot be swapped) under a 256-bit state key:
//! - `meta`: the proxy shape, the store's grant (id and capability) and the ORAM key;
//! - `wal`: the write-back the client owes the server, its next sequence number and its
//!   next batch's plan, rewritten and flushed once per epoch;
//! - `page/NAME`: the engine's state (its `core` of stash, roots and nonce counter, its cached
//!   buckets, its position map; [`shroud_oram::pages`]) and the mailbox's (`rider`: its
//!   outbox, spool, sessions and counters), in pages of which an epoch rewrites only those
//!   that changed; `pages` names each page's generation (see [`Durable::save_with_pages`]);
//! - `index`: the key map of the KV store, rewritten and flushed on every put and delete;
//! - `account`: the mailbox identity and outbox capability (the mailbox's outbox, spool and
//!   counters are the `rider` page, saved with `wal`, so they follow the write-ahead rule).
//!
//! An idle client at the default shape writes about 60 KB an epoch (docs/benchmarks.md,
//! "The client's own disk"), where rewriting the whole engine state was about 1.2 MB.
//!
//! The state key comes from a key file (32 random bytes, mode 0600, at a path the user names,
//! never inside the state directory) or from a passphrase through Argon2id (RFC 9106,
//! section 4, its second recommended option: 64 MiB, 3 passes, 4 lanes) with a random salt
//! and the parameters kept in the clear beside the records. A state made with the earlier
//! parameters (19 MiB, 2 passes) is re-keyed to these, in one atomic write, when it opens.
//!
//! A new state is built in `state.db.new` and renamed to `state.db` once its `meta` record
//! is durable (the directory fsynced), and a new key file is written and fsynced, with its
//! directory, before that: a crash at any instant leaves either no state (creation starts
//! again) or a whole one, never a database whose key or `meta` is missing.
//!
//! # The write-ahead rule
//! The scheduler saves `wal` after each batch finishes and before anything depends on it: before
//! it completes any caller and before its write-back leaves. After a crash at any instant the
//! last saved `wal` names a state the server reaches by applying the saved write-back, which the
//! scheduler resends first (rewriting the same bytes is idempotent). So every acknowledged write
//! is recovered, a batch whose `wal` was not saved had nothing acknowledged, the digests match
//! the server, and no nonce the server has seen is reused (the engine's counter is in its
//! `core` page, and a fresh salt covers the sealed-but-never-sent buckets of a lost batch).

use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::Rng;
use serde::{Deserialize, Serialize};
use shroud_proto::Grant;
use shroud_proto::Shape;
use zeroize::{Zeroize, Zeroizing};

mod migrate;
mod pages;

/// The state's format version, kept in `meta`: 6 since the shape names its ORAM mode
/// (Path or Ring; version 5 states open and are converted: [`migrate`]); 5 since the engine and the mailbox are saved
/// as pages (issue 14; version 4 states do not open); 4 since mail has Olm sessions (the account
/// holds an Olm account, the courier's state its sessions; version 3 states do not open); 3
/// since mail moved to outboxes and PIR
/// (issue 13: the shape, the courier's state and the account changed; version 2 states do
/// not open, and neither would the inbox protocol they were made for); 2 since every record
/// carries a stamp of its generation (version 1 states do not open).
pub const VERSION: u32 = 6;
const NONCE: usize = 24;
const TAG: usize = 16;

/// A state-store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The database failed.
    #[error("state database: {0}")]
    Db(#[from] sled::Error),
    /// A record did not decrypt: wrong key or passphrase, or the state was altered.
    #[error("the state does not decrypt: wrong key file or passphrase, or altered state")]
    Decrypt,
    /// A record did not decode.
    #[error("corrupt state record {0}")]
    Corrupt(&'static str),
    /// The pages are not those the last save left: one of another time (an older copy put
    /// back), or one added or removed.
    #[error(
        "the state's pages are not those its last save left (a page of another time, added or removed)"
    )]
    Pages,
    /// Records of different times, mixed (see [`Durable`]'s checks).
    #[error(
        "the state mixes records of different times: {record} saw {other} at generation {saw}, but {other} is at {found}"
    )]
    Mixed {
        /// The record saved later.
        record: String,
        /// The record it saw.
        other: String,
        /// The generation it saw.
        saw: u64,
        /// The generation there now.
        found: u64,
    },
    /// A state made by an earlier version, in a format this one does not read.
    #[error("the state was made by an earlier shroud in an older format: make a new state")]
    OldFormat,
    /// There is no state here yet (run `shroud agent init`), or there already is one.
    #[error("{0}")]
    Missing(String),
    /// Reading or writing a file or directory of the state.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The key file does not hold a key.
    #[error("key file {0} must hold exactly 32 bytes")]
    KeyFileLength(std::path::PathBuf),
    /// Argon2 refused its parameters.
    #[error("passphrase key derivation: {0}")]
    Kdf(argon2::Error),
}

/// Where the state key comes from.
#[derive(Clone)]
#[non_exhaustive]
pub enum Unlock {
    /// A 32-byte key file (created with mode 0600 if missing when the state is created).
    KeyFile(std::path::PathBuf),
    /// A passphrase, stretched with Argon2id.
    Passphrase(Zeroizing<String>),
}

/// What the state was created with.
#[derive(Clone, Serialize, Deserialize)]
pub struct Meta {
    /// Format version.
    pub version: u32,
    /// The proxy shape the store was made for.
    pub shape: Shape,
    /// The store's id and capability.
    pub grant: Grant,
    /// The ORAM key.
    pub oram_key: [u8; 32],
}

impl Drop for Meta {
    fn drop(&mut self) {
        self.oram_key.zeroize();
    }
}

/// A record of the state, named and typed by the layer that owns it (the scheduler's
/// write-ahead record, the KV index, the mailbox account): this store seals and saves any
/// of them without knowing what they hold.
pub trait StateRecord: Serialize + serde::de::DeserializeOwned {
    /// The record's name: its key in the database and its associated data when sealed, so
    /// that records cannot be swapped.
    const NAME: &'static str;
}

impl StateRecord for Meta {
    const NAME: &'static str = "meta";
}

/// What every record carries besides its value, so that records of different times are not
/// mixed unnoticed (issue 12, finding 7): its generation (one counter across all records of
/// the state, bumped by every save) and the generation of every other record when it was
/// saved. A record saved later than another has seen it; if what it saw is newer than the
/// record there now, the state is a mix (an older record copied back, or a restored backup
/// of part of the directory), and it is refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    generation: u64,
    saw: std::collections::BTreeMap<String, u64>,
}

/// The open state store.
pub struct Durable {
    db: sled::Db,
    cipher: XChaCha20Poly1305,
    /// Every record's generation as stored, and the next generation to give.
    stamps: parking_lot::Mutex<(std::collections::BTreeMap<String, u64>, u64)>,
    /// The pages as stored (see [`pages`]).
    pages: parking_lot::Mutex<pages::Stored>,
    /// Bytes handed to the database (sealed records and pages) since opening.
    written: std::sync::atomic::AtomicU64,
}

pub use pages::Pages;

fn options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .reject_trailing_bytes()
}

/// Argon2id parameters: memory in KiB, passes, lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KdfParams {
    m_kib: u32,
    t: u32,
    p: u32,
}

/// New states: RFC 9106, section 4, the second recommended option (64 MiB, 3 passes, 4 lanes).
const KDF: KdfParams = KdfParams {
    m_kib: 64 * 1024,
    t: 3,
    p: 4,
};
/// States made before the parameters were kept (argon2's defaults then, the OWASP minimum):
/// opened once with these and re-keyed to [`KDF`].
const KDF_BEFORE: KdfParams = KdfParams {
    m_kib: 19 * 1024,
    t: 2,
    p: 1,
};
const KDF_SALT: &str = "kdf-salt";
const KDF_PARAMS: &str = "kdf-params";

impl KdfParams {
    fn to_bytes(self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&self.m_kib.to_le_bytes());
        b[4..8].copy_from_slice(&self.t.to_le_bytes());
        b[8..].copy_from_slice(&self.p.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        let word = |i: usize| Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));
        (b.len() == 12).then_some(())?;
        Some(KdfParams {
            m_kib: word(0)?,
            t: word(4)?,
            p: word(8)?,
        })
    }

    fn stretch(self, pass: &str, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>, StateError> {
        let mut key = Zeroizing::new([0u8; 32]);
        let params = Params::new(self.m_kib, self.t, self.p, Some(32)).map_err(StateError::Kdf)?;
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(pass.as_bytes(), salt, &mut key[..])
            .map_err(StateError::Kdf)?;
        Ok(key)
    }
}

/// The state key, and for a passphrase state made with [`KDF_BEFORE`] the key under the
/// current parameters it is to be re-keyed to, with their salt.
struct Derived {
    key: Zeroizing<[u8; 32]>,
    rekey: Option<(Zeroizing<[u8; 32]>, [u8; 16])>,
}

fn derive(unlock: &Unlock, db: &sled::Db, create: bool) -> Result<Derived, StateError> {
    let mut key = Zeroizing::new([0u8; 32]);
    match unlock {
        Unlock::KeyFile(path) => {
            if create && !path.exists() {
                rand::rng().fill_bytes(&mut key[..]);
                crate::fsutil::write_private(path, &key[..]).map_err(io(path))?;
            } else {
                let bytes = Zeroizing::new(std::fs::read(path).map_err(io(path))?);
                if bytes.len() != 32 {
                    return Err(StateError::KeyFileLength(path.clone()));
                }
                key.copy_from_slice(&bytes);
            }
        }
        Unlock::Passphrase(pass) => {
            let salt = match db.get(KDF_SALT)? {
                Some(s) => s.to_vec(),
                None if create => {
                    let mut s = vec![0u8; 16];
                    rand::rng().fill_bytes(&mut s);
                    db.insert(KDF_SALT, s.clone())?;
                    db.insert(KDF_PARAMS, &KDF.to_bytes()[..])?;
                    s
                }
                None => {
                    return Err(StateError::Missing(
                        "no passphrase salt: was this state made with a key file?".into(),
                    ));
                }
            };
            let params = match db.get(KDF_PARAMS)? {
                Some(b) => KdfParams::from_bytes(&b).ok_or(StateError::Corrupt(KDF_PARAMS))?,
                None => KDF_BEFORE,
            };
            let key = params.stretch(pass, &salt)?;
            let rekey = if params == KDF_BEFORE {
                let mut salt = [0u8; 16];
                rand::rng().fill_bytes(&mut salt);
                Some((KDF.stretch(pass, &salt)?, salt))
            } else {
                None
            };
            return Ok(Derived { key, rekey });
        }
    }
    Ok(Derived { key, rekey: None })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One record as it is stored: `nonce (24) || ciphertext || tag (16)`, the record's name as
/// associated data, the plaintext bincode 1.3 with fixed-width integers. The format of every
/// record is that of the state's version, kept in `meta` and checked at open.
fn seal_record<T: Serialize>(
    cipher: &XChaCha20Poly1305,
    name: &'static str,
    stamp: &Stamp,
    value: &T,
) -> Result<Vec<u8>, StateError> {
    use bincode::Options;
    let plain = Zeroizing::new(
        options()
            .serialize(&(stamp, value))
            .map_err(|_| StateError::Corrupt(name))?,
    );
    seal_bytes(cipher, name, plain)
}

/// Seals a record's plaintext bytes (see [`seal_record`]).
fn seal_bytes(
    cipher: &XChaCha20Poly1305,
    name: &str,
    mut plain: Zeroizing<Vec<u8>>,
) -> Result<Vec<u8>, StateError> {
    let mut nonce = [0u8; NONCE];
    rand::rng().fill_bytes(&mut nonce);
    let tag = cipher
        .encrypt_inout_detached(
            &XNonce::from(nonce),
            name.as_bytes(),
            (&mut plain[..]).into(),
        )
        .map_err(|_| StateError::Corrupt("record too long"))?;
    let mut record = Vec::with_capacity(NONCE + plain.len() + TAG);
    record.extend_from_slice(&nonce);
    record.extend_from_slice(&plain);
    record.extend_from_slice(&tag);
    Ok(record)
}

/// The stamp of a save of record `name` at `generation`, having seen `current`.
fn stamp_for(
    current: &std::collections::BTreeMap<String, u64>,
    name: &str,
    generation: u64,
) -> Stamp {
    Stamp {
        generation,
        saw: current
            .iter()
            .filter(|(other, _)| other.as_str() != name)
            .map(|(o, g)| (o.clone(), *g))
            .collect(),
    }
}

/// A value as a page's bytes (bincode 1.3, fixed-width integers, as every record).
pub fn encode_page<T: Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>, StateError> {
    use bincode::Options;
    options()
        .serialize(value)
        .map(Zeroizing::new)
        .map_err(|_| StateError::Corrupt("page"))
}

/// A page's bytes as a value, within the page's length.
pub fn decode_page<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StateError> {
    use bincode::Options;
    options()
        .with_limit(bytes.len() as u64)
        .deserialize(bytes)
        .map_err(|_| StateError::Corrupt("page"))
}

/// Opens a record that [`seal_record`] made under the same name.
fn open_record<T: serde::de::DeserializeOwned>(
    cipher: &XChaCha20Poly1305,
    name: &'static str,
    record: &[u8],
) -> Result<(Stamp, T), StateError> {
    use bincode::Options;
    let plain = open_bytes(cipher, name, record)?;
    options()
        .with_limit(plain.len() as u64)
        .deserialize(&plain)
        .map_err(|_| StateError::Corrupt(name))
}

/// A record's stamp alone (the value after it is left undecoded).
fn stamp_of(cipher: &XChaCha20Poly1305, name: &str, record: &[u8]) -> Result<Stamp, StateError> {
    use bincode::Options;
    let plain = open_bytes(cipher, name, record)?;
    options()
        .with_limit(plain.len() as u64)
        .allow_trailing_bytes()
        .deserialize(&plain)
        .map_err(|_| StateError::OldFormat)
}

/// Opens a record to its plaintext bytes (see [`open_record`]).
fn open_bytes(
    cipher: &XChaCha20Poly1305,
    name: &str,
    record: &[u8],
) -> Result<Zeroizing<Vec<u8>>, StateError> {
    if record.len() < NONCE + TAG {
        return Err(StateError::Corrupt("record"));
    }
    let (nonce, rest) = record.split_at(NONCE);
    let (body, tag) = rest.split_at(rest.len() - TAG);
    let mut plain = Zeroizing::new(body.to_vec());
    let nonce: [u8; NONCE] = nonce
        .try_into()
        .map_err(|_| StateError::Corrupt("record"))?;
    let tag: [u8; TAG] = tag.try_into().map_err(|_| StateError::Corrupt("record"))?;
    cipher
        .decrypt_inout_detached(
            &XNonce::from(nonce),
            name.as_bytes(),
            (&mut plain[..]).into(),
            &tag.into(),
        )
        .map_err(|_| StateError::Decrypt)?;
    Ok(plain)
}

impl Durable {
    /// True if `dir` holds a state.
    pub fn exists(dir: &Path) -> bool {
        dir.join("state.db").exists()
    }

    /// Creates a new state in `dir` (which must not hold one), crash-safely: the key file
    /// first, then the database, built under `state.db.new` and renamed once whole.
    pub fn create(dir: &Path, unlock: &Unlock, meta: &Meta) -> Result<Self, StateError> {
        if Self::exists(dir) {
            return Err(StateError::Missing(format!(
                "{} already holds a state",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        crate::fsutil::sync_parent(dir).map_err(io(dir))?;
        let building = dir.join("state.db.new");
        if building.exists() {
            // A creation that crashed: nothing in it was ever used.
            std::fs::remove_dir_all(&building).map_err(io(&building))?;
        }
        {
            let db = open_db(&building)?;
            let derived = derive(unlock, &db, true)?;
            let s = Durable {
                cipher: XChaCha20Poly1305::new(&(*derived.key).into()),
                db,
                stamps: parking_lot::Mutex::new((Default::default(), 1)),
                pages: Default::default(),
                written: Default::default(),
            };
            s.save(meta)?;
        }
        let done = dir.join("state.db");
        std::fs::rename(&building, &done).map_err(io(&done))?;
        crate::fsutil::sync_dir(dir).map_err(io(dir))?;
        Self::open(dir, unlock).map(|(s, _)| s)
    }

    /// Opens the state in `dir` and returns it with its meta record.
    pub fn open(dir: &Path, unlock: &Unlock) -> Result<(Self, Meta), StateError> {
        if !Self::exists(dir) {
            return Err(StateError::Missing(format!(
                "no state in {} (run `shroud agent init`)",
                dir.display()
            )));
        }
        let db = open_db(&dir.join("state.db"))?;
        let derived = derive(unlock, &db, false)?;
        let mut s = Durable {
            cipher: XChaCha20Poly1305::new(&(*derived.key).into()),
            db,
            stamps: parking_lot::Mutex::new((Default::default(), 1)),
            pages: Default::default(),
            written: Default::default(),
        };
        s.check_stamps()?;
        let meta: Meta = match s.load() {
            Err(StateError::Corrupt(_)) => {
                // An earlier format's `meta`, converted and saved as today's.
                let old: migrate::MetaV5 = s.get("meta")?.ok_or(StateError::Corrupt("meta"))?;
                let meta = old.upgrade().ok_or(StateError::OldFormat)?;
                s.save(&meta)?;
                meta
            }
            loaded => loaded?.ok_or(StateError::Corrupt("meta"))?,
        };
        s.check_pages()?;
        if let Some((key, salt)) = derived.rekey {
            s.rekey(&key, &salt)?;
        }
        if meta.version != VERSION {
            return Err(StateError::OldFormat);
        }
        Ok((s, meta))
    }

    /// Reads every record's stamp and refuses a mix (see [`Stamp`]); sets the next
    /// generation past every stored one.
    fn check_stamps(&self) -> Result<(), StateError> {
        let mut found = std::collections::BTreeMap::new();
        let mut stamps = Vec::new();
        for entry in self.db.iter() {
            let (name, record) = entry?;
            if name.as_ref() == KDF_SALT.as_bytes()
                || name.as_ref() == KDF_PARAMS.as_bytes()
                || name.starts_with(pages::PREFIX.as_bytes())
            {
                // Pages are checked against their accumulator instead.
                continue;
            }
            let name = String::from_utf8(name.to_vec()).map_err(|_| StateError::Corrupt("name"))?;
            let stamp = stamp_of(&self.cipher, &name, &record)?;
            found.insert(name.clone(), stamp.generation);
            stamps.push((name, stamp));
        }
        for (record, stamp) in &stamps {
            for (other, &saw) in &stamp.saw {
                let now = found.get(other).copied().unwrap_or(0);
                if now < saw {
                    return Err(StateError::Mixed {
                        record: record.clone(),
                        other: other.clone(),
                        saw,
                        found: now,
                    });
                }
            }
        }
        let next = found.values().copied().max().unwrap_or(0) + 1;
        *self.stamps.lock() = (found, next);
        Ok(())
    }

    /// Seals every record again under `key` (the passphrase under [`KDF`] with `salt`),
    /// with the new salt and parameters, in one atomic write.
    fn rekey(&mut self, key: &[u8; 32], salt: &[u8; 16]) -> Result<(), StateError> {
        let cipher = XChaCha20Poly1305::new(&(*key).into());
        let mut batch = sled::Batch::default();
        for entry in self.db.iter() {
            let (name, record) = entry?;
            if name.as_ref() == KDF_SALT.as_bytes() || name.as_ref() == KDF_PARAMS.as_bytes() {
                continue;
            }
            let label = std::str::from_utf8(&name).map_err(|_| StateError::Corrupt("name"))?;
            let plain = open_bytes(&self.cipher, label, &record)?;
            batch.insert(name.as_ref(), seal_bytes(&cipher, label, plain)?);
        }
        batch.insert(KDF_SALT, &salt[..]);
        batch.insert(KDF_PARAMS, &KDF.to_bytes()[..]);
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        self.cipher = cipher;
        tracing::info!("client state re-keyed to Argon2id with 64 MiB, 3 passes, 4 lanes");
        Ok(())
    }

    fn put<T: Serialize>(&self, name: &'static str, value: &T) -> Result<(), StateError> {
        // One save at a time: the stamps must follow the order of the saves.
        let mut stamps = self.stamps.lock();
        let (current, next) = &mut *stamps;
        let record = seal_record(&self.cipher, name, &stamp_for(current, name, *next), value)?;
        self.written
            .fetch_add(record.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.db.insert(name, record)?;
        self.db.flush()?;
        current.insert(name.to_string(), *next);
        *next += 1;
        Ok(())
    }

    /// Bytes handed to the database since the state was opened (sealed records and pages;
    /// the database's own log and metadata come on top).
    pub fn bytes_written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn get<T: serde::de::DeserializeOwned>(
        &self,
        name: &'static str,
    ) -> Result<Option<T>, StateError> {
        match self.db.get(name)? {
            Some(record) => open_record(&self.cipher, name, &record).map(|(_, v)| Some(v)),
            None => Ok(None),
        }
    }

    /// The saved record of type `R`, if any.
    pub fn load<R: StateRecord>(&self) -> Result<Option<R>, StateError> {
        self.get(R::NAME)
    }

    /// Saves a record durably (insert and fsync) before returning.
    pub fn save<R: StateRecord>(&self, record: &R) -> Result<(), StateError> {
        self.put(R::NAME, record)
    }
}

/// sled's log segment. At its default (512 KiB) an epoch's save of about 30 KB of pages
/// and records made sled write about ten times that (node rewrites and segment cleaning);
/// from 4 MiB up, about what was saved (measured with `tests/disk.rs`).
const SEGMENT: usize = 8 << 20;

/// How long opening waits for the file lock of a handle this process just dropped.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens the sled database at `path`. sled releases its file lock from a flusher thread
/// after the last handle drops, so a reopen right after (as [`Durable::create`] does) can
/// find it still held: wait for it, for at most [`LOCK_WAIT`]. Another process holding
/// the state keeps it for longer, and gets the lock error.
fn open_db(path: &Path) -> Result<sled::Db, StateError> {
    let started = std::time::Instant::now();
    loop {
        match sled::Config::new().path(path).segment_size(SEGMENT).open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of the tests' own.
    #[derive(Default, Serialize, Deserialize)]
    struct Note {
        next: u64,
    }

    impl StateRecord for Note {
        const NAME: &'static str = "index";
    }
    use crate::mailbox::{Account, MailState};
    use crate::schedule::Wal;
    use shroud_proto::proxy::SlotWrite;
    use shroud_proto::{Capability, StoreId};

    fn open_db(path: &Path) -> sled::Db {
        super::open_db(path).unwrap()
    }

    fn meta() -> Meta {
        let shape = Shape::new(64, 32, 1)
            .and_then(|s| s.with_schedule(1, 50))
            .unwrap()
            .with_mail(0, 0);
        Meta {
            version: VERSION,
            shape,
            grant: Grant {
                store: StoreId([1; 16]),
                capability: Capability([2; 32]),
            },
            oram_key: [3; 32],
        }
    }

    #[test]
    fn records_round_trip_and_need_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s");
        let keyfile = dir.path().join("k");
        let unlock = Unlock::KeyFile(keyfile.clone());
        {
            let s = Durable::create(&state, &unlock, &meta()).unwrap();
            s.save(&Wal {
                pending: None,
                seq: 7,
                plan: None,
            })
            .unwrap();
            assert!(Durable::create(&state, &unlock, &meta()).is_err());
        }
        let (s, m) = Durable::open(&state, &unlock).unwrap();
        assert_eq!(m.oram_key, [3; 32]);
        assert_eq!(s.load::<Wal>().unwrap().unwrap().seq, 7);
        drop(s);
        // The plaintext is nowhere in the database files.
        for f in std::fs::read_dir(state.join("state.db")).unwrap() {
            let p = f.unwrap().path();
            if p.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                assert!(
                    !bytes.windows(32).any(|w| w == [3u8; 32]),
                    "ORAM key in the clear in {}",
                    p.display()
                );
            }
        }
        std::fs::write(&keyfile, [0u8; 32]).unwrap();
        assert!(matches!(
            Durable::open(&state, &unlock),
            Err(StateError::Decrypt)
        ));
    }

    #[test]
    fn passphrase_unlocks() {
        let dir = tempfile::tempdir().unwrap();
        let good = Unlock::Passphrase(Zeroizing::new("correct horse".into()));
        Durable::create(dir.path(), &good, &meta()).unwrap();
        assert!(Durable::open(dir.path(), &good).is_ok());
        let bad = Unlock::Passphrase(Zeroizing::new("battery staple".into()));
        assert!(matches!(
            Durable::open(dir.path(), &bad),
            Err(StateError::Decrypt)
        ));
    }

    #[test]
    fn passphrases_use_rfc9106_parameters_and_older_states_are_rekeyed() {
        let dir = tempfile::tempdir().unwrap();
        let pass = Unlock::Passphrase(Zeroizing::new("correct horse".into()));
        let new = dir.path().join("new");
        drop(Durable::create(&new, &pass, &meta()).unwrap());
        {
            let db = open_db(&new.join("state.db"));
            let params = db.get(KDF_PARAMS).unwrap().unwrap();
            assert_eq!(KdfParams::from_bytes(&params), Some(KDF));
            assert_eq!(KDF.m_kib, 65536);
            assert_eq!((KDF.t, KDF.p), (3, 4));
        }
        // A state as the earlier code made it: a salt, no parameters, the weaker key.
        let old = dir.path().join("old");
        {
            std::fs::create_dir_all(&old).unwrap();
            let db = open_db(&old.join("state.db"));
            let salt = [5u8; 16];
            db.insert(KDF_SALT, &salt[..]).unwrap();
            let key = KDF_BEFORE.stretch("correct horse", &salt).unwrap();
            let cipher = XChaCha20Poly1305::new(&(*key).into());
            db.insert(
                "meta",
                seal_record(&cipher, "meta", &stamp(1, &[]), &meta()).unwrap(),
            )
            .unwrap();
            let wal = Wal {
                pending: None,
                seq: 3,
                plan: None,
            };
            db.insert(
                "wal",
                seal_record(&cipher, "wal", &stamp(2, &[("meta", 1)]), &wal).unwrap(),
            )
            .unwrap();
            db.flush().unwrap();
        }
        let (s, m) = Durable::open(&old, &pass).unwrap();
        assert_eq!(m.oram_key, [3; 32]);
        assert_eq!(s.load::<Wal>().unwrap().unwrap().seq, 3);
        drop(s);
        {
            let db = open_db(&old.join("state.db"));
            let params = db.get(KDF_PARAMS).unwrap().unwrap();
            assert_eq!(KdfParams::from_bytes(&params), Some(KDF), "re-keyed");
            assert_ne!(db.get(KDF_SALT).unwrap().unwrap().as_ref(), &[5u8; 16]);
        }
        let (s, _) = Durable::open(&old, &pass).unwrap();
        assert_eq!(s.load::<Wal>().unwrap().unwrap().seq, 3);
        let bad = Unlock::Passphrase(Zeroizing::new("battery staple".into()));
        drop(s);
        assert!(matches!(
            Durable::open(&old, &bad),
            Err(StateError::Decrypt)
        ));
    }

    #[test]
    fn a_creation_cut_short_leaves_nothing_that_blocks_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s");
        let keyfile = dir.path().join("k");
        let unlock = Unlock::KeyFile(keyfile.clone());
        // A crash after the key file and part of the database: no state yet.
        std::fs::create_dir_all(state.join("state.db.new")).unwrap();
        std::fs::write(state.join("state.db.new").join("junk"), b"half").unwrap();
        crate::fsutil::write_private(&keyfile, &[8u8; 32]).unwrap();
        assert!(!Durable::exists(&state));
        drop(Durable::create(&state, &unlock, &meta()).unwrap());
        assert!(!state.join("state.db.new").exists());
        assert_eq!(
            std::fs::read(&keyfile).unwrap(),
            vec![8u8; 32],
            "the key kept"
        );
        let (_, m) = Durable::open(&state, &unlock).unwrap();
        assert_eq!(m.oram_key, [3; 32]);
    }

    /// Pages: a save writes only the pages given, loading returns the latest of each, and
    /// a page copied back from an earlier save, or removed, is refused.
    #[test]
    fn pages_save_what_changed_and_refuse_an_older_copy() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s");
        let unlock = Unlock::KeyFile(dir.path().join("k"));
        let wal = |seq| Wal {
            pending: None,
            seq,
            plan: None,
        };
        let pages = |items: &[(&str, u8)]| -> Pages {
            items
                .iter()
                .map(|(n, b)| (n.to_string(), Zeroizing::new(vec![*b; 100])))
                .collect()
        };
        let old_a;
        {
            let s = Durable::create(&state, &unlock, &meta()).unwrap();
            let before = s.bytes_written();
            s.save_with_pages(&wal(1), &pages(&[("a", 1), ("b", 2), ("c", 3)]))
                .unwrap();
            let all = s.bytes_written() - before;
            old_a = s.db.get("page/a").unwrap().unwrap().to_vec();
            s.save_with_pages(&wal(2), &pages(&[("a", 4)])).unwrap();
            let one = s.bytes_written() - before - all;
            assert!(
                one < all - 200,
                "one page written ({one} bytes), not three ({all})"
            );
            assert_eq!(
                s.load_pages("").unwrap(),
                pages(&[("a", 4), ("b", 2), ("c", 3)])
            );
        }
        let (s, _) = Durable::open(&state, &unlock).unwrap();
        assert_eq!(s.load::<Wal>().unwrap().unwrap().seq, 2);
        assert_eq!(
            s.load_pages("").unwrap(),
            pages(&[("a", 4), ("b", 2), ("c", 3)])
        );
        s.save_with_pages(&wal(3), &pages(&[("b", 5)])).unwrap();
        drop(s);
        let (s, _) = Durable::open(&state, &unlock).unwrap();
        assert_eq!(
            s.load_pages("").unwrap(),
            pages(&[("a", 4), ("b", 5), ("c", 3)])
        );
        drop(s);
        // Page `a` as the first save wrote it, put back.
        {
            let db = open_db(&state.join("state.db"));
            db.insert("page/a", old_a).unwrap();
            db.flush().unwrap();
        }
        assert!(matches!(
            Durable::open(&state, &unlock),
            Err(StateError::Pages)
        ));
        // And a page removed.
        {
            let db = open_db(&state.join("state.db"));
            db.remove("page/a").unwrap();
            db.flush().unwrap();
        }
        assert!(matches!(
            Durable::open(&state, &unlock),
            Err(StateError::Pages)
        ));
    }

    /// Issue 12, finding 7: an index and a write-ahead record that never coexisted (an
    /// older one copied back beside a newer one) are refused; any pair that did coexist opens.
    #[test]
    fn records_of_different_times_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s");
        let unlock = Unlock::KeyFile(dir.path().join("k"));
        let wal = |seq| Wal {
            pending: None,
            seq,
            plan: None,
        };
        let raw = |name: &str| -> Vec<u8> {
            let db = open_db(&state.join("state.db"));
            db.get(name).unwrap().unwrap().to_vec()
        };
        let put_raw = |name: &str, bytes: &[u8]| {
            let db = open_db(&state.join("state.db"));
            db.insert(name, bytes).unwrap();
            db.flush().unwrap();
        };
        let (old_wal, old_index, new_index);
        {
            let s = Durable::create(&state, &unlock, &meta()).unwrap();
            s.save(&wal(1)).unwrap();
            s.save(&Note::default()).unwrap();
            drop(s);
            (old_wal, old_index) = (raw("wal"), raw("index"));
            let (s, _) = Durable::open(&state, &unlock).unwrap();
            s.save(&wal(2)).unwrap();
            s.save(&Note { next: 9 }).unwrap();
            s.save(&wal(3)).unwrap();
        }
        new_index = raw("index");
        // The old write-ahead record beside the new index, which saw a newer one: refused.
        let new_wal = raw("wal");
        put_raw("wal", &old_wal);
        assert!(matches!(
            Durable::open(&state, &unlock),
            Err(StateError::Mixed { ref record, ref other, .. }) if record == "index" && other == "wal"
        ));
        // (The old pair together is a state that existed: it opens.)
        put_raw("index", &old_index);
        assert!(Durable::open(&state, &unlock).is_ok());
        // The old index beside the new write-ahead record, which saw a newer index: refused.
        put_raw("wal", &new_wal);
        assert!(matches!(
            Durable::open(&state, &unlock),
            Err(StateError::Mixed { .. })
        ));
        // The state as it was: opens, and its records are the newest.
        put_raw("index", &new_index);
        let (s, _) = Durable::open(&state, &unlock).unwrap();
        assert_eq!(s.load::<Wal>().unwrap().unwrap().seq, 3);
        assert_eq!(s.load::<Note>().unwrap().unwrap().next, 9);
    }

    /// The stored sample of today's state records (format version 6): the state key and
    /// the sealed `meta`, `wal`, `pages` and `account` records, and pages (`page/rider`, the
    /// key map's `page/kv/...`). Set
    /// SHROUD_WRITE_SAMPLES=1 to write it again (only with a new version, and a migration
    /// for the old one).
    const SAMPLE: &str = "samples/state-v6.txt";

    /// The sample of version 5, whose `meta` opens converted ([`migrate`]).
    const SAMPLE_V5: &str = "samples/state-v5.txt";

    #[test]
    fn a_version_5_meta_opens_as_a_path_oram_shape() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(SAMPLE_V5);
        let text = std::fs::read_to_string(&path).expect("the stored sample");
        let field = |name: &str| {
            unhex(
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name} ")))
                    .expect("field"),
            )
        };
        let key: [u8; 32] = field("key").try_into().unwrap();
        let cipher = XChaCha20Poly1305::new(&key.into());
        assert!(
            open_record::<Meta>(&cipher, "meta", &field("meta")).is_err(),
            "today's layout does not read it"
        );
        let (_, old): (Stamp, migrate::MetaV5) =
            open_record(&cipher, "meta", &field("meta")).unwrap();
        let m = old.upgrade().expect("a version 5 record");
        assert_eq!(m.version, VERSION);
        assert_eq!(m.shape, meta().shape);
        assert_eq!(m.grant, meta().grant);
        assert_eq!(m.oram_key, [3; 32]);
    }

    fn stamp(generation: u64, saw: &[(&str, u64)]) -> Stamp {
        Stamp {
            generation,
            saw: saw.iter().map(|(n, g)| (n.to_string(), *g)).collect(),
        }
    }

    fn hex(bytes: &[u8]) -> String {
        data_encoding::HEXLOWER.encode(bytes)
    }

    fn unhex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap()
    }

    #[test]
    fn reads_the_stored_sample_of_state_v6() {
        use crate::kv::Entry;
        use bincode::Options;
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(SAMPLE);
        if std::env::var_os("SHROUD_WRITE_SAMPLES").is_some() {
            let key = [0x42u8; 32];
            let cipher = XChaCha20Poly1305::new(&key.into());
            let mut index = crate::kv::Index::new(64);
            let blocks = index.allocate(1);
            index.insert(b"note".to_vec(), Entry { len: 3, blocks });
            let kv = index.changed_pages().unwrap();
            let wal = Wal {
                pending: Some(vec![vec![SlotWrite {
                    bucket: 2,
                    data: vec![3; 4],
                }]]),
                seq: 7,
                plan: Some(crate::schedule::Plan {
                    seed: [5; 32],
                    reads: vec![Some(3), None],
                }),
            };
            let mut mac = pages::term(&[7; 32], "rider", 5);
            let mut page_lines = String::new();
            let rider = encode_page(&MailState::default()).unwrap();
            for (name, bytes) in kv.iter().chain([(&"rider".to_string(), &rider)]) {
                if name != "rider" {
                    for (m, t) in mac.iter_mut().zip(pages::term(&[7; 32], name, 5)) {
                        *m ^= t;
                    }
                }
                let plain = options()
                    .serialize(&(5u64, serde_bytes::Bytes::new(bytes)))
                    .unwrap();
                let key = format!("page/{name}");
                page_lines += &format!(
                    "{key} {}\n",
                    hex(&seal_bytes(&cipher, &key, Zeroizing::new(plain)).unwrap())
                );
            }
            let accumulator = pages::Accumulator { key: [7; 32], mac };
            let account = Account::generate(&mut rand::rng());
            let text = format!(
                "key {}\nmeta {}\nwal {}\npages {}\n{page_lines}account {}\n",
                hex(&key),
                hex(&seal_record(&cipher, "meta", &stamp(1, &[]), &meta()).unwrap()),
                hex(&seal_record(
                    &cipher,
                    "wal",
                    &stamp(6, &[("meta", 1), ("pages", 5)]),
                    &wal
                )
                .unwrap()),
                hex(
                    &seal_record(&cipher, "pages", &stamp(5, &[("meta", 1)]), &accumulator)
                        .unwrap()
                ),
                hex(
                    &seal_record(&cipher, "account", &stamp(4, &[("pages", 5)]), &account).unwrap()
                ),
            );
            std::fs::write(&path, text).unwrap();
        }
        let text = std::fs::read_to_string(&path).expect("the stored sample");
        let field = |name: &str| {
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name} in the sample"));
            unhex(line)
        };
        let key: [u8; 32] = field("key").try_into().unwrap();
        let cipher = XChaCha20Poly1305::new(&key.into());
        let (st, m): (Stamp, Meta) = open_record(&cipher, "meta", &field("meta")).unwrap();
        assert_eq!(st, stamp(1, &[]));
        assert_eq!(m.version, VERSION);
        assert_eq!(m.shape, meta().shape);
        assert_eq!(m.grant, meta().grant);
        let (st, w): (Stamp, Wal) = open_record(&cipher, "wal", &field("wal")).unwrap();
        assert_eq!(st, stamp(6, &[("meta", 1), ("pages", 5)]));
        assert_eq!(w.seq, 7);
        assert_eq!(
            w.plan.as_ref().map(|p| (p.seed, p.reads.clone())),
            Some(([5; 32], vec![Some(3), None]))
        );
        let (_, a): (Stamp, pages::Accumulator) =
            open_record(&cipher, "pages", &field("pages")).unwrap();
        // Every page in the sample, opened and summed into the accumulator.
        let mut loaded = Pages::new();
        let mut mac = [0u8; 32];
        for line in text.lines().filter(|l| l.starts_with("page/")) {
            let (key, record) = line.split_once(' ').unwrap();
            let plain = open_bytes(&cipher, key, &unhex(record)).unwrap();
            let (generation, page): (u64, serde_bytes::ByteBuf) =
                options().deserialize(&plain).unwrap();
            let name = key.strip_prefix("page/").unwrap();
            for (m, t) in mac.iter_mut().zip(pages::term(&a.key, name, generation)) {
                *m ^= t;
            }
            loaded.insert(name.to_string(), Zeroizing::new(page.into_vec()));
        }
        assert_eq!(a.mac, mac);
        let rider: MailState = decode_page(&loaded["rider"]).unwrap();
        assert_eq!(rider.rounds, 0);
        let index = crate::kv::Index::from_pages(&loaded, 64).unwrap();
        assert_eq!(index.keys(), vec![b"note".to_vec()]);
        assert_eq!(index.get(b"note").unwrap().blocks, vec![0]);
        let (_, a): (Stamp, Account) = open_record(&cipher, "account", &field("account")).unwrap();
        assert_eq!(
            a.address(),
            None,
            "an account saved before its outbox was made"
        );
        // A record is bound to its name.
        assert!(matches!(
            open_record::<Wal>(&cipher, "index", &field("wal")),
            Err(StateError::Decrypt)
        ));
    }
}
