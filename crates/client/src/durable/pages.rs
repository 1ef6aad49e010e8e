//! Pages: records of which a save rewrites only those that changed (the engine's state,
//! [`shroud_oram::pages`], and the mailbox's), each under `page/NAME`.
//!
//! A page is sealed like every record (its key as associated data), its plaintext
//! `(generation, bytes)`: the generation of the save that wrote it. So that pages of
//! different times are not mixed unnoticed (the rule [`Stamp`](super::Stamp) keeps for
//! records), the `pages` record holds, in constant size whatever the number of pages, an
//! accumulator over the set of (name, generation) pairs: the XOR over pages of
//! HMAC-SHA256(k, name || 0 || generation), k a random key kept in the same sealed record.
//! This is the XOR MAC construction of Bellare, Guérin and Rogaway ("XOR MACs: New methods
//! for message authentication using finite pseudorandom functions", CRYPTO 1995), whose
//! point is that it updates incrementally: a save XORs out the old pair and in the new one
//! for each page it writes. Without k, an older copy of a page put back, or a page added or
//! removed, changes the accumulator by PRF outputs nobody knows, and opening refuses the
//! state ([`StateError::Pages`]).

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use super::{
    Durable, StateError, StateRecord, open_bytes, options, seal_bytes, seal_record, stamp_for,
};

/// Pages by name, as saved and loaded.
pub type Pages = BTreeMap<String, Zeroizing<Vec<u8>>>;

/// The prefix of page records' keys.
pub(super) const PREFIX: &str = "page/";
/// The accumulator's record.
const RECORD: &str = "pages";

/// The accumulator's record: its key and its value.
#[derive(Clone, Default, Serialize, Deserialize)]
pub(super) struct Accumulator {
    pub key: [u8; 32],
    pub mac: [u8; 32],
}

impl Drop for Accumulator {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// The pages as stored: each one's generation, and the accumulator over them (`None`
/// before the first save of a page).
#[derive(Default)]
pub(super) struct Stored {
    generations: BTreeMap<String, u64>,
    accumulator: Option<Accumulator>,
}

/// HMAC-SHA256(key, name || 0 || generation, little-endian).
pub(super) fn term(key: &[u8; 32], name: &str, generation: u64) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key)
        .expect("HMAC takes a key of any length");
    mac.update(name.as_bytes());
    mac.update(&[0]);
    mac.update(&generation.to_le_bytes());
    mac.finalize().into_bytes().into()
}

fn xor(acc: &mut [u8; 32], term: &[u8; 32]) {
    for (a, t) in acc.iter_mut().zip(term) {
        *a ^= t;
    }
}

/// A page record's generation and bytes.
fn open_page(durable: &Durable, key: &str, record: &[u8]) -> Result<(u64, Vec<u8>), StateError> {
    use bincode::Options;
    let plain = open_bytes(&durable.cipher, key, record)?;
    let (generation, page): (u64, serde_bytes::ByteBuf) = options()
        .with_limit(plain.len() as u64)
        .deserialize(&plain)
        .map_err(|_| StateError::Corrupt("page"))?;
    Ok((generation, page.into_vec()))
}

impl StateRecord for Accumulator {
    const NAME: &'static str = RECORD;
}

impl Durable {
    /// Reads every page's generation and checks the set against the accumulator; keeps both
    /// for the saves to come.
    pub(super) fn check_pages(&self) -> Result<(), StateError> {
        let accumulator: Option<Accumulator> = self.get(RECORD)?;
        let mut generations = BTreeMap::new();
        let mut mac = [0u8; 32];
        for entry in self.db.scan_prefix(PREFIX) {
            let (key, record) = entry?;
            let key = std::str::from_utf8(&key).map_err(|_| StateError::Corrupt("name"))?;
            let name = key.strip_prefix(PREFIX).unwrap_or(key).to_string();
            let (generation, mut page) = open_page(self, key, &record)?;
            page.zeroize();
            if let Some(a) = accumulator.as_ref() {
                xor(&mut mac, &term(&a.key, &name, generation));
            }
            generations.insert(name, generation);
        }
        let matches = match accumulator.as_ref() {
            Some(a) => bool::from(a.mac.ct_eq(&mac)),
            None => generations.is_empty(),
        };
        if !matches {
            return Err(StateError::Pages);
        }
        *self.pages.lock() = Stored {
            generations,
            accumulator,
        };
        Ok(())
    }

    /// Saves `record` with `pages` (those that changed since the last save; the others keep
    /// their stored bytes) and the accumulator, in one atomic batch, flushed before
    /// returning.
    pub fn save_with_pages<R: StateRecord>(
        &self,
        record: &R,
        pages: &Pages,
    ) -> Result<(), StateError> {
        self.save_batch(Some(record), pages)
    }

    /// Saves `pages` (as [`Durable::save_with_pages`], without a record).
    pub fn save_pages(&self, pages: &Pages) -> Result<(), StateError> {
        self.save_batch::<Accumulator>(None, pages)
    }

    fn save_batch<R: StateRecord>(
        &self,
        record: Option<&R>,
        pages: &Pages,
    ) -> Result<(), StateError> {
        use bincode::Options;
        let mut stamps = self.stamps.lock();
        let mut stored = self.pages.lock();
        let (current, next) = &mut *stamps;
        let generation = *next;
        let mut accumulator = stored.accumulator.clone().unwrap_or_else(|| {
            let mut a = Accumulator::default();
            rand::rng().fill_bytes(&mut a.key);
            a
        });
        let mut batch = sled::Batch::default();
        let mut bytes = 0;
        let mut insert = |key: &[u8], sealed: Vec<u8>| {
            bytes += sealed.len() as u64;
            batch.insert(key, sealed);
        };
        for (name, page) in pages {
            let key = format!("{PREFIX}{name}");
            let plain = Zeroizing::new(
                options()
                    .serialize(&(generation, serde_bytes::Bytes::new(page)))
                    .map_err(|_| StateError::Corrupt("page"))?,
            );
            insert(key.as_bytes(), seal_bytes(&self.cipher, &key, plain)?);
            if let Some(&old) = stored.generations.get(name) {
                xor(&mut accumulator.mac, &term(&accumulator.key, name, old));
            }
            xor(
                &mut accumulator.mac,
                &term(&accumulator.key, name, generation),
            );
        }
        let mut saw = current.clone();
        insert(
            RECORD.as_bytes(),
            seal_record(
                &self.cipher,
                RECORD,
                &stamp_for(&saw, RECORD, generation),
                &accumulator,
            )?,
        );
        saw.insert(RECORD.to_string(), generation);
        if let Some(record) = record {
            insert(
                R::NAME.as_bytes(),
                seal_record(
                    &self.cipher,
                    R::NAME,
                    &stamp_for(&saw, R::NAME, generation + 1),
                    record,
                )?,
            );
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        self.written
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        current.insert(RECORD.to_string(), generation);
        if record.is_some() {
            current.insert(R::NAME.to_string(), generation + 1);
        }
        *next += 2;
        for name in pages.keys() {
            stored.generations.insert(name.clone(), generation);
        }
        stored.accumulator = Some(accumulator);
        Ok(())
    }

    /// Every page whose name starts with `prefix`, as the last save left it (checked when
    /// the state was opened).
    pub fn load_pages(&self, prefix: &str) -> Result<Pages, StateError> {
        let stored = self.pages.lock();
        let mut pages = Pages::new();
        let under = stored
            .generations
            .range(prefix.to_string()..)
            .take_while(|(name, _)| name.starts_with(prefix));
        for (name, &generation) in under {
            let key = format!("{PREFIX}{name}");
            let record = self.db.get(&key)?.ok_or(StateError::Pages)?;
            let (found, page) = open_page(self, &key, &record)?;
            if found != generation {
                return Err(StateError::Pages);
            }
            pages.insert(name.clone(), Zeroizing::new(page));
        }
        Ok(pages)
    }
}
