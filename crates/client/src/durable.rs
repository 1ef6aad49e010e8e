//! Crash-safe client state, encrypted at rest, under `--state DIR`.
//!
//! A sled database holds a few records, each sealed with XChaCha20-Poly1305 (random 192-bit
//! nonces, so the nonce space needs no counter; the record name is the associated data, so
//! records cannot be swapped) under a 256-bit state key:
//! - `meta`: the proxy shape, the store's grant (id and capability) and the ORAM key;
//! - `wal`: the engine snapshot (stash, position map, root digest, nonce counter, cached
//!   levels) and the write-back it owes the server, rewritten and flushed once per epoch;
//! - `index`: the key map of the KV store, rewritten and flushed on every put and delete;
//! - `account`: the mailbox identity and inbox capability (the mailbox's outbox, spool and
//!   counters ride in `wal`, so they follow the write-ahead rule).
//!
//! The state key comes from a key file (32 random bytes, mode 0600) or from a passphrase
//! through Argon2id (RFC 9106; 19 MiB, 2 passes, the OWASP minimum) with a random salt kept
//! in the clear beside the records.
//!
//! # The write-ahead rule
//! The scheduler saves `wal` after each batch finishes and before anything depends on it: before
//! it completes any caller and before its write-back leaves. After a crash at any instant the
//! last saved `wal` names a state the server reaches by applying the saved write-back, which the
//! scheduler resends first (rewriting the same bytes is idempotent). So every acknowledged write
//! is recovered, a batch whose `wal` was not saved had nothing acknowledged, the digests match
//! the server, and no nonce the server has seen is reused (the engine's counter is in the
//! snapshot, and a fresh salt covers the sealed-but-never-sent buckets of a lost batch).

use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::Rng;
use serde::{Deserialize, Serialize};
use shroud_proto::Grant;
use shroud_proto::Shape;
use shroud_proto::proxy::SlotWrite;
use zeroize::{Zeroize, Zeroizing};

use crate::kv::Index;
use crate::mailbox::Account;
use crate::mailbox::courier::MailState;

const VERSION: u32 = 1;
const NONCE: usize = 24;
const TAG: usize = 16;

/// A state-store failure.
#[derive(Debug, thiserror::Error)]
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
    /// There is no state here yet (run `shroud agent init`), or there already is one.
    #[error("{0}")]
    Missing(String),
    /// Reading or writing the key file.
    #[error("key file: {0}")]
    KeyFile(String),
    /// Argon2 refused its parameters.
    #[error("passphrase key derivation: {0}")]
    Kdf(String),
}

/// Where the state key comes from.
#[derive(Clone)]
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

/// The write-ahead record of one finished batch.
#[derive(Clone, Serialize, Deserialize)]
pub struct Wal {
    /// `Oram::snapshot` after the batch.
    #[serde(with = "serde_bytes")]
    pub snapshot: Vec<u8>,
    /// The write-back the server is owed, one path per slot.
    pub pending: Option<Vec<Vec<SlotWrite>>>,
    /// The next slot sequence number.
    pub seq: u64,
    /// The mailbox's outbox, spool and counters.
    pub mail: Option<MailState>,
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.snapshot.zeroize();
    }
}

/// The open state store.
pub struct Durable {
    db: sled::Db,
    cipher: XChaCha20Poly1305,
}

fn options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .reject_trailing_bytes()
}

fn derive(unlock: &Unlock, db: &sled::Db, create: bool) -> Result<Zeroizing<[u8; 32]>, StateError> {
    let mut key = Zeroizing::new([0u8; 32]);
    match unlock {
        Unlock::KeyFile(path) => {
            if create && !path.exists() {
                rand::rng().fill_bytes(&mut key[..]);
                write_private(path, &key[..])
                    .map_err(|e| StateError::KeyFile(format!("{}: {e}", path.display())))?;
            } else {
                let bytes = Zeroizing::new(
                    std::fs::read(path)
                        .map_err(|e| StateError::KeyFile(format!("{}: {e}", path.display())))?,
                );
                if bytes.len() != 32 {
                    return Err(StateError::KeyFile(format!(
                        "{} must hold exactly 32 bytes",
                        path.display()
                    )));
                }
                key.copy_from_slice(&bytes);
            }
        }
        Unlock::Passphrase(pass) => {
            let salt = match db.get("kdf-salt")? {
                Some(s) => s.to_vec(),
                None if create => {
                    let mut s = vec![0u8; 16];
                    rand::rng().fill_bytes(&mut s);
                    db.insert("kdf-salt", s.clone())?;
                    s
                }
                None => {
                    return Err(StateError::Missing(
                        "no passphrase salt: was this state made with a key file?".into(),
                    ));
                }
            };
            let params = Params::new(
                Params::DEFAULT_M_COST,
                Params::DEFAULT_T_COST,
                Params::DEFAULT_P_COST,
                Some(32),
            )
            .map_err(|e| StateError::Kdf(e.to_string()))?;
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password_into(pass.as_bytes(), &salt, &mut key[..])
                .map_err(|e| StateError::Kdf(e.to_string()))?;
        }
    }
    Ok(key)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

impl Durable {
    /// True if `dir` holds a state.
    pub fn exists(dir: &Path) -> bool {
        dir.join("state.db").exists()
    }

    /// Creates a new state in `dir` (which must not hold one).
    pub fn create(dir: &Path, unlock: &Unlock, meta: &Meta) -> Result<Self, StateError> {
        if Self::exists(dir) {
            return Err(StateError::Missing(format!(
                "{} already holds a state",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| StateError::Missing(format!("{}: {e}", dir.display())))?;
        let db = sled::Config::new().path(dir.join("state.db")).open()?;
        let key = derive(unlock, &db, true)?;
        let s = Durable {
            cipher: XChaCha20Poly1305::new(&(*key).into()),
            db,
        };
        s.put("meta", meta)?;
        Ok(s)
    }

    /// Opens the state in `dir` and returns it with its meta record.
    pub fn open(dir: &Path, unlock: &Unlock) -> Result<(Self, Meta), StateError> {
        if !Self::exists(dir) {
            return Err(StateError::Missing(format!(
                "no state in {} (run `shroud agent init`)",
                dir.display()
            )));
        }
        let db = sled::Config::new().path(dir.join("state.db")).open()?;
        let key = derive(unlock, &db, false)?;
        let s = Durable {
            cipher: XChaCha20Poly1305::new(&(*key).into()),
            db,
        };
        let meta: Meta = s.get("meta")?.ok_or(StateError::Corrupt("meta"))?;
        if meta.version != VERSION {
            return Err(StateError::Corrupt("meta version"));
        }
        Ok((s, meta))
    }

    fn put<T: Serialize>(&self, name: &'static str, value: &T) -> Result<(), StateError> {
        use bincode::Options;
        let mut plain = Zeroizing::new(
            options()
                .serialize(value)
                .map_err(|_| StateError::Corrupt(name))?,
        );
        let mut nonce = [0u8; NONCE];
        rand::rng().fill_bytes(&mut nonce);
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &XNonce::from(nonce),
                name.as_bytes(),
                (&mut plain[..]).into(),
            )
            .map_err(|_| StateError::Corrupt(name))?;
        let mut record = Vec::with_capacity(NONCE + plain.len() + TAG);
        record.extend_from_slice(&nonce);
        record.extend_from_slice(&plain);
        record.extend_from_slice(&tag);
        self.db.insert(name, record)?;
        self.db.flush()?;
        Ok(())
    }

    fn get<T: serde::de::DeserializeOwned>(
        &self,
        name: &'static str,
    ) -> Result<Option<T>, StateError> {
        use bincode::Options;
        let Some(record) = self.db.get(name)? else {
            return Ok(None);
        };
        if record.len() < NONCE + TAG {
            return Err(StateError::Corrupt(name));
        }
        let (nonce, rest) = record.split_at(NONCE);
        let (body, tag) = rest.split_at(rest.len() - TAG);
        let mut plain = Zeroizing::new(body.to_vec());
        let nonce: [u8; NONCE] = nonce.try_into().map_err(|_| StateError::Corrupt(name))?;
        let tag: [u8; TAG] = tag.try_into().map_err(|_| StateError::Corrupt(name))?;
        self.cipher
            .decrypt_inout_detached(
                &XNonce::from(nonce),
                name.as_bytes(),
                (&mut plain[..]).into(),
                &tag.into(),
            )
            .map_err(|_| StateError::Decrypt)?;
        options()
            .with_limit(plain.len() as u64)
            .deserialize(&plain)
            .map(Some)
            .map_err(|_| StateError::Corrupt(name))
    }

    /// The last saved batch, if any.
    pub fn load_wal(&self) -> Result<Option<Wal>, StateError> {
        self.get("wal")
    }

    /// Saves a finished batch durably (insert and fsync).
    pub fn save_wal(&self, wal: &Wal) -> Result<(), StateError> {
        self.put("wal", wal)
    }

    /// The mailbox account, if any.
    pub fn load_account(&self) -> Result<Option<Account>, StateError> {
        self.get("account")
    }

    /// Saves the mailbox account durably.
    pub fn save_account(&self, account: &Account) -> Result<(), StateError> {
        self.put("account", account)
    }

    /// The KV key map, if any.
    pub fn load_index(&self) -> Result<Option<Index>, StateError> {
        self.get("index")
    }

    /// Saves the KV key map durably.
    pub fn save_index(&self, index: &Index) -> Result<(), StateError> {
        self.put("index", index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shroud_proto::{Capability, StoreId};

    fn meta() -> Meta {
        let shape = Shape {
            capacity: 64,
            block_size: 32,
            bucket_slots: 4,
            cached_levels: 1,
            path_len: 5,
            bucket_len: 260,
            buckets: 63,
            slots_per_epoch: 1,
            epoch_ms: 50,
            deposits_per_epoch: 0,
            drains_per_epoch: 0,
            envelope_len: 0,
        };
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
            s.save_wal(&Wal {
                snapshot: vec![9; 100],
                pending: None,
                seq: 7,
                mail: None,
            })
            .unwrap();
            assert!(Durable::create(&state, &unlock, &meta()).is_err());
        }
        let (s, m) = Durable::open(&state, &unlock).unwrap();
        assert_eq!(m.oram_key, [3; 32]);
        assert_eq!(s.load_wal().unwrap().unwrap().seq, 7);
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
}
