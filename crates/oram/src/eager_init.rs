//! Eager initialization: write every bucket of a fresh store once.
//!
//! Lazy init makes this unnecessary for correctness. It is for deployments that want the
//! server to hold a full tree from the start (so its size never grows with use, and an
//! "absent" answer is never legitimate), and for benchmarks that must measure the steady
//! state, where every bucket on a path is stored and must be decrypted.

use crate::bucket::Layout;
use crate::engine::Oram;
use crate::integrity::{Digest, EMPTY};
use crate::{BucketId, Error};

/// A failure of [`Oram::format`]: the engine's, or the sink's.
///
/// # Security
/// Carries no secret; formatting writes every bucket once, in a fixed order.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError<E: std::error::Error + 'static> {
    /// The engine refused (not a fresh store) or ran out of nonces.
    #[error(transparent)]
    Oram(#[from] Error),
    /// The sink failed.
    #[error("format sink: {0}")]
    Sink(#[source] E),
}

impl Oram {
    /// Seals an empty bucket for every position of every tree, from the leaves up, and hands
    /// each to `sink` (`O(N)` time, `O(N / 2)` digests of memory at the widest level). Only
    /// for a store that has never been accessed.
    ///
    /// ```
    /// use shroud_oram::{Config, Key, MemoryStore, Op, Oram};
    /// let mut rng = rand::rng();
    /// let mut oram = Oram::new(Config::new(64, 16), Key::generate(&mut rng), &mut rng)?;
    /// let mut store = MemoryStore::new();
    /// oram.format(|id, bytes| {
    ///     store.insert(id, bytes.to_vec());
    ///     Ok::<(), std::convert::Infallible>(())
    /// })?;
    /// assert_eq!(store.len(), 63);
    /// oram.run(&mut store, &[Op::Read(5)], &mut rng)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn format<E, F>(&mut self, mut sink: F) -> Result<(), FormatError<E>>
    where
        E: std::error::Error + 'static,
        F: FnMut(BucketId, &[u8]) -> Result<(), E>,
    {
        if self.counter != 1 || self.in_flight() {
            return Err(
                Error::InvalidConfig("format needs a store that was never accessed").into(),
            );
        }
        for (t, tree) in self.trees.iter_mut().enumerate() {
            let geom = tree.round.geom;
            let layout = Layout {
                block: geom.block_size as usize,
            };
            let clen = geom.ciphertext_len();
            let top = geom.cached_levels as usize;
            let mut buf = vec![0u8; clen];
            let mut below: Vec<Digest> = Vec::new();
            for d in (0..geom.levels()).rev() {
                let width = 1usize << d;
                let mut level = Vec::with_capacity(if d >= top { width } else { 0 });
                for pos in 0..width {
                    buf.fill(0);
                    if d + 1 < geom.levels() && d + 1 >= top {
                        layout.set_child(&mut buf, false, &below[2 * pos]);
                        layout.set_child(&mut buf, true, &below[2 * pos + 1]);
                    }
                    let index = (width - 1 + pos) as u64;
                    if d < top {
                        let at = index as usize * clen;
                        tree.cache[at..at + clen].copy_from_slice(&buf);
                        continue;
                    }
                    let id = BucketId {
                        tree: t as u8,
                        index,
                    };
                    level.push(self.sealer.seal(&mut self.counter, id, &mut buf)?);
                    sink(id, &buf).map_err(FormatError::Sink)?;
                }
                below = level;
            }
            tree.root = if top == 0 { below[0] } else { EMPTY };
        }
        self.dirty.everything();
        Ok(())
    }
}
