//! `shroud bench engine`: accesses per second of the Path ORAM engine over the in-memory
//! store, with full AES-GCM and integrity checks, next to two references measured in the
//! same run: the `oram` crate 0.2.0-pre.1 (no encryption, no integrity) and the crypto
//! bound (AES-256-GCM encrypt plus decrypt of the same bytes an access moves).
//!
//! The store is formatted first (every bucket sealed and stored), so every bucket on every
//! path is present and decrypted: the steady state, not the cheaper lazy-init start.
//!
//! A tree that fits in memory is held in a [`DenseStore`] (every bucket at an offset computed
//! from its heap index), the store a client embedding a formatted tree would use; larger
//! trees in a [`MemoryStore`] (a hash map of the buckets written). `--compare-stores` also
//! times the hash map on the same case, alternating with the dense store, on one core: how
//! much of an access is the store's lookups and layout rather than the engine.
//!
//! The engine is measured on one core and with its helper thread on the second
//! ([`shroud_oram::Oram::set_helper`]), the same engine and store switching between the two
//! every [`CHUNKS`]th of the run, so that a slow stretch of this shared machine (the
//! accesses are bound by memory, which neighbours share) falls on both figures alike.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use shroud_oram::aead::Aes256Gcm;
use shroud_oram::{
    BucketStore, Config, DenseStore, DenseStoreError, Fetch, Key, MemoryStore, Op, Oram,
    PositionMap, WriteBack,
};

/// The glibc tunable that backs the heap with transparent huge pages.
pub const HUGE_PAGES_TUNABLE: &str = "glibc.malloc.hugetlb=1";

/// True if the kernel gives transparent huge pages to a process that asks (`always` or
/// `madvise`).
pub fn huge_pages_available() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|s| !s.contains("[never]"))
}

/// True if this process's heap asked for transparent huge pages (see `shroud bench engine`).
pub fn huge_pages() -> bool {
    huge_pages_available()
        && std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains(HUGE_PAGES_TUNABLE))
}

/// One configuration to measure.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// Capacity N.
    pub n: u64,
    /// Block size B.
    pub block: u32,
    /// Cached top levels T.
    pub cached_levels: u32,
    /// Position-map mode.
    pub position_map: PositionMap,
    /// Accesses per batch (the engine's `max_batch`; a client batches its K slots of an
    /// epoch).
    pub batch: u32,
    /// Also time the hash-map store against the dense one (see the module docs).
    pub compare_stores: bool,
}

/// One line of `shroud bench engine --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Blocks per store (N).
    pub n: u64,
    /// Bytes per block (B).
    pub block: u32,
    /// Slots per bucket (Z).
    pub z: u32,
    /// Levels cached by the client (T).
    pub cached_levels: u32,
    /// `flat` or `recursive`.
    pub position_map: &'static str,
    /// False when the tree was too large to format in memory (see [`FORMAT_BUDGET`]).
    pub formatted: bool,
    /// The store the figures were measured on: `dense` ([`DenseStore`], a formatted tree)
    /// or `hash map` ([`MemoryStore`], a tree too large to format).
    pub store: &'static str,
    /// With `--compare-stores`: one core on a [`MemoryStore`], alternating with the dense
    /// store (`dense_store_accesses_per_s`) in the same run.
    pub hash_store_accesses_per_s: Option<f64>,
    /// With `--compare-stores`: one core on the dense store, in the alternation above.
    pub dense_store_accesses_per_s: Option<f64>,
    /// Accesses measured.
    pub accesses: u64,
    /// Engine accesses per second on one core.
    pub accesses_per_s: f64,
    /// Engine accesses per second with the helper thread on a second core.
    pub accesses_per_s_two_cores: f64,
    /// `accesses_per_s_two_cores / accesses_per_s`.
    pub two_cores_vs_one: f64,
    /// Accesses per batch.
    pub batch: u32,
    /// The `oram` crate on the same case (only with the `peer` feature).
    pub oram_crate_accesses_per_s: Option<f64>,
    /// The AES-GCM bound: accesses per second if sealing and opening were all the work.
    pub crypto_bound_accesses_per_s: f64,
    /// The same bound with the pure-Rust `aes-gcm` crate (the engine's `portable` build), for
    /// the two AEADs' ratio in one run.
    pub portable_bound_accesses_per_s: f64,
    /// `accesses_per_s / oram_crate_accesses_per_s`.
    pub vs_oram_crate: Option<f64>,
    /// `accesses_per_s_two_cores / oram_crate_accesses_per_s`.
    pub two_cores_vs_oram_crate: Option<f64>,
    /// `accesses_per_s / crypto_bound_accesses_per_s`.
    pub fraction_of_crypto_bound: f64,
    /// The largest stash seen, blocks.
    pub max_stash: usize,
    /// Buckets fetched (and written back) per access, over all trees.
    pub buckets_per_access: usize,
    /// Bytes of one sealed bucket.
    pub bucket_bytes: usize,
    /// Client memory of the engine, bytes.
    pub client_memory_bytes: usize,
    /// True if the in-memory store's heap was on transparent huge pages ([`huge_pages`]).
    pub huge_pages: bool,
}

/// The most bucket bytes `setup` formats in memory; larger trees start lazily (empty
/// buckets absent), which makes their first accesses cheaper than the steady state.
pub const FORMAT_BUDGET: u64 = 6 << 30;

/// True if `oram`'s trees fit [`FORMAT_BUDGET`].
pub fn formattable(oram: &Oram) -> bool {
    oram.trees()
        .map(|t| t.bucket_count() * t.ciphertext_len() as u64)
        .sum::<u64>()
        <= FORMAT_BUDGET
}

/// The store a case runs on: a formatted tree in a [`DenseStore`], or a tree too large to
/// format in memory in a [`MemoryStore`].
pub enum BenchStore {
    /// Every bucket of every tree, by heap index.
    Dense(DenseStore),
    /// The buckets written, in a hash map.
    Sparse(MemoryStore),
}

impl BenchStore {
    /// `dense` or `hash map`.
    pub fn kind(&self) -> &'static str {
        match self {
            BenchStore::Dense(_) => "dense",
            BenchStore::Sparse(_) => "hash map",
        }
    }
}

impl BucketStore for BenchStore {
    type Error = DenseStoreError;

    fn read_path(&mut self, fetch: &mut Fetch<'_>) -> Result<(), DenseStoreError> {
        match self {
            BenchStore::Dense(s) => s.read_path(fetch),
            BenchStore::Sparse(s) => s.read_path(fetch).map_err(|e| match e {}),
        }
    }

    fn write_path(&mut self, writes: &WriteBack<'_>) -> Result<(), DenseStoreError> {
        match self {
            BenchStore::Dense(s) => s.write_path(writes),
            BenchStore::Sparse(s) => s.write_path(writes).map_err(|e| match e {}),
        }
    }
}

/// An engine and store, formatted if it fits in memory (in a [`DenseStore`]), warmed up
/// with `warmup` random writes.
pub fn setup(case: Case, warmup: u64, seed: u64) -> (Oram, BenchStore, StdRng) {
    setup_on(case, warmup, seed, false)
}

/// [`setup`], on a [`MemoryStore`] if `hash_map` even when the tree fits.
fn setup_on(case: Case, warmup: u64, seed: u64, hash_map: bool) -> (Oram, BenchStore, StdRng) {
    let mut rng = StdRng::seed_from_u64(seed);
    let config = Config {
        cached_levels: case.cached_levels,
        position_map: case.position_map,
        max_batch: case.batch,
        ..Config::new(case.n, case.block)
    };
    let mut oram =
        Oram::new(config, Key::generate(&mut rng), &mut rng).expect("valid bench config");
    let mut store = match DenseStore::for_oram(&oram, FORMAT_BUDGET) {
        Ok(dense) if !hash_map => BenchStore::Dense(dense),
        _ => BenchStore::Sparse(MemoryStore::new()),
    };
    if formattable(&oram) {
        oram.format(|id, b| match &mut store {
            BenchStore::Dense(s) => s.insert(id, b),
            BenchStore::Sparse(s) => {
                s.insert(id, b.to_vec());
                Ok(())
            }
        })
        .expect("fresh store");
    }
    let mut data = vec![0u8; case.block as usize];
    for i in 0..warmup {
        let a = rng.random_range(0..case.n);
        data[..8].copy_from_slice(&i.to_le_bytes());
        oram.run(&mut store, &[Op::Write(a, &data)], &mut rng)
            .expect("warm-up");
    }
    (oram, store, rng)
}

/// One batch of the engine's `max_batch` accesses: reads and writes of random blocks, half
/// and half. `i` numbers the batch's first access.
pub fn access(oram: &mut Oram, store: &mut BenchStore, rng: &mut StdRng, data: &mut [u8], i: u64) {
    let k = u64::from(oram.config().max_batch);
    data[..8].copy_from_slice(&i.to_le_bytes());
    let ops: Vec<Op<'_>> = (i..i + k)
        .map(|j| {
            let a = rng.random_range(0..oram.config().capacity);
            if j.is_multiple_of(2) {
                Op::Write(a, data)
            } else {
                Op::Read(a)
            }
        })
        .collect();
    oram.run(store, &ops, rng).expect("honest store");
}

/// How many stretches each of the one-core and two-core measurements is cut into.
pub const CHUNKS: u64 = 8;

/// Times `accesses` accesses on one core and as many with the helper thread, alternating
/// every `accesses / CHUNKS`; returns accesses per second `(one core, two cores)`.
pub fn measure_one_and_two_cores(
    oram: &mut Oram,
    store: &mut BenchStore,
    rng: &mut StdRng,
    accesses: u64,
) -> (f64, f64) {
    let mut data = vec![0u8; oram.config().block_size as usize];
    let chunk = accesses.div_ceil(CHUNKS);
    let mut totals = [(0u64, 0f64); 2];
    for c in 0..2 * CHUNKS {
        let two = c % 2 == 1;
        oram.set_helper(two).expect("helper thread");
        let (done, secs) = timed(oram, store, rng, &mut data, c * chunk, chunk);
        let t = &mut totals[usize::from(two)];
        *t = (t.0 + done, t.1 + secs);
    }
    oram.set_helper(false).expect("helper thread");
    (
        totals[0].0 as f64 / totals[0].1,
        totals[1].0 as f64 / totals[1].1,
    )
}

/// Runs batches from access number `first` until `accesses` are done; returns the accesses
/// run (whole batches) and the seconds they took.
fn timed(
    oram: &mut Oram,
    store: &mut BenchStore,
    rng: &mut StdRng,
    data: &mut [u8],
    first: u64,
    accesses: u64,
) -> (u64, f64) {
    let k = u64::from(oram.config().max_batch);
    let start = Instant::now();
    for i in (first..first + accesses).step_by(k as usize) {
        access(oram, store, rng, data, i);
    }
    (accesses.div_ceil(k) * k, start.elapsed().as_secs_f64())
}

/// One core on the dense store and on a hash-map store of the same case, alternating every
/// `accesses / CHUNKS`; returns accesses per second `(dense, hash map)`. Both engines are
/// set up alike (same seed, formatted, warmed up) and hold their trees at once.
pub fn measure_stores(case: Case, warmup: u64, accesses: u64) -> (f64, f64) {
    let (mut dense, mut dense_store, mut rng) = setup_on(case, warmup, 1, false);
    let (mut hash, mut hash_store, _) = setup_on(case, warmup, 1, true);
    let mut data = vec![0u8; case.block as usize];
    let chunk = accesses.div_ceil(CHUNKS);
    let mut totals = [(0u64, 0f64); 2];
    for c in 0..2 * CHUNKS {
        let on_hash = c % 2 == 1;
        let (oram, store) = if on_hash {
            (&mut hash, &mut hash_store)
        } else {
            (&mut dense, &mut dense_store)
        };
        let (done, secs) = timed(oram, store, &mut rng, &mut data, c * chunk, chunk);
        let t = &mut totals[usize::from(on_hash)];
        *t = (t.0 + done, t.1 + secs);
    }
    (
        totals[0].0 as f64 / totals[0].1,
        totals[1].0 as f64 / totals[1].1,
    )
}

/// AES-256-GCM work of one access: decrypt and re-encrypt the body of each bucket it moves,
/// with the implementation the engine seals buckets with.
pub struct CryptoBound {
    cipher: Aes256Gcm,
    /// One buffer per fetched bucket, sized like that bucket's body.
    bufs: Vec<Vec<u8>>,
}

impl CryptoBound {
    /// For the buckets `oram` fetches per access (every tree's path, minus cached levels).
    pub fn for_engine(oram: &Oram) -> Self {
        Self::new(bucket_sizes(oram))
    }

    /// For buckets of the given sealed sizes.
    pub fn new(bucket_bytes: impl IntoIterator<Item = usize>) -> Self {
        let cipher = Aes256Gcm::new(&[7u8; 32]);
        CryptoBound {
            cipher,
            bufs: bodies(bucket_bytes),
        }
    }

    /// The crypto of one access.
    pub fn access(&mut self, i: u64) {
        let cipher = &self.cipher;
        each_bucket(&mut self.bufs, i, |nonce, buf| {
            let tag = cipher.seal(nonce, b"aad", buf).expect("aead");
            cipher.open(nonce, b"aad", buf, &tag).expect("aead");
        });
    }

    /// Accesses per second.
    pub fn measure(&mut self, accesses: u64) -> f64 {
        let start = Instant::now();
        for i in 0..accesses {
            self.access(i);
        }
        accesses as f64 / start.elapsed().as_secs_f64()
    }
}

/// The sealed size of every bucket one access fetches (every tree's path, minus cached
/// levels).
pub fn bucket_sizes(oram: &Oram) -> Vec<usize> {
    oram.trees()
        .flat_map(|t| std::iter::repeat_n(t.ciphertext_len(), t.fetched_levels()))
        .collect()
}

/// [`CryptoBound`] with the RustCrypto `aes-gcm` crate instead: accesses per second for
/// buckets of the given sealed sizes.
pub fn portable_bound(bucket_bytes: impl IntoIterator<Item = usize>, accesses: u64) -> f64 {
    use aes_gcm::{AeadInOut, KeyInit};
    let cipher = aes_gcm::Aes256Gcm::new(&[7u8; 32].into());
    let mut bufs = bodies(bucket_bytes);
    let start = Instant::now();
    for i in 0..accesses {
        each_bucket(&mut bufs, i, |nonce, buf| {
            let tag = cipher
                .encrypt_inout_detached(&(*nonce).into(), b"aad", buf.into())
                .expect("aead");
            cipher
                .decrypt_inout_detached(&(*nonce).into(), b"aad", buf.into(), &tag)
                .expect("aead");
        });
    }
    accesses as f64 / start.elapsed().as_secs_f64()
}

/// One buffer per bucket, sized like that bucket's sealed body.
fn bodies(bucket_bytes: impl IntoIterator<Item = usize>) -> Vec<Vec<u8>> {
    bucket_bytes
        .into_iter()
        .map(|b| vec![1u8; b - 28])
        .collect()
}

/// Runs `f` on every bucket body of access `i`, each with a nonce of its own.
fn each_bucket(bufs: &mut [Vec<u8>], i: u64, mut f: impl FnMut(&[u8; 12], &mut [u8])) {
    let mut nonce = [0u8; 12];
    for (b, buf) in bufs.iter_mut().enumerate() {
        nonce[..8].copy_from_slice(&i.to_le_bytes());
        nonce[8..].copy_from_slice(&(b as u32).to_le_bytes());
        f(&nonce, buf);
    }
}

/// The `oram` crate's Path ORAM (Z = 4) at the same N and B, for side-by-side timing.
#[cfg(feature = "peer")]
#[non_exhaustive]
pub enum OramCrate {
    /// 64-byte blocks.
    B64(Box<reference::Inner<64>>),
    /// 1 KiB blocks.
    B1024(Box<reference::Inner<1024>>),
}

#[cfg(feature = "peer")]
pub mod reference {
    //! The `oram` crate behind a block-size-independent face.
    use oram::path_oram::{
        DEFAULT_POSITIONS_PER_BLOCK, DEFAULT_RECURSION_CUTOFF, DEFAULT_STASH_OVERFLOW_SIZE,
    };
    use oram::{BlockValue, Oram as _, PathOram};
    use rand08::{Rng as _, SeedableRng as _};

    /// One `oram`-crate store with its RNG.
    pub struct Inner<const B: usize> {
        o: PathOram<BlockValue<B>, 4, DEFAULT_POSITIONS_PER_BLOCK>,
        rng: rand08::rngs::StdRng,
        value: BlockValue<B>,
        n: u64,
    }

    impl<const B: usize> Inner<B> {
        pub(super) fn new(n: u64) -> Option<Self> {
            let mut rng = rand08::rngs::StdRng::seed_from_u64(0x5EED);
            let o = PathOram::new_with_parameters(
                n,
                &mut rng,
                DEFAULT_STASH_OVERFLOW_SIZE,
                DEFAULT_RECURSION_CUTOFF,
            )
            .ok()?;
            let mut inner = Inner {
                o,
                rng,
                value: BlockValue::default(),
                n,
            };
            for i in 0..1000 {
                inner.access(2 * i);
            }
            Some(inner)
        }

        /// A read or a write of a random block, half and half, like [`super::access`].
        pub fn access(&mut self, i: u64) -> u8 {
            let a = self.rng.gen_range(0..self.n);
            if i.is_multiple_of(2) {
                self.value.data[..8].copy_from_slice(&i.to_le_bytes());
                self.o
                    .write(a, self.value, &mut self.rng)
                    .map_or(0, |v| v.data[0])
            } else {
                self.o.read(a, &mut self.rng).map_or(0, |v| v.data[0])
            }
        }
    }
}

#[cfg(feature = "peer")]
impl OramCrate {
    /// A store of `n` blocks of `block` bytes, warmed up with 1,000 writes; `None` where the
    /// crate has no such configuration (N a power of two, B 64 or 1024 here).
    pub fn new(n: u64, block: u32) -> Option<Self> {
        if !n.is_power_of_two() || n < 2 {
            return None;
        }
        match block {
            64 => reference::Inner::new(n).map(|i| OramCrate::B64(Box::new(i))),
            1024 => reference::Inner::new(n).map(|i| OramCrate::B1024(Box::new(i))),
            _ => None,
        }
    }

    /// One access.
    pub fn access(&mut self, i: u64) -> u8 {
        match self {
            OramCrate::B64(o) => o.access(i),
            OramCrate::B1024(o) => o.access(i),
        }
    }
}

/// Accesses per second of the `oram` crate at the same N and B, or `None` (see
/// [`OramCrate::new`], and builds without the `peer` feature).
pub fn measure_oram_crate(n: u64, block: u32, accesses: u64) -> Option<f64> {
    #[cfg(feature = "peer")]
    {
        let mut o = OramCrate::new(n, block)?;
        let start = Instant::now();
        let mut sink = 0u8;
        for i in 0..accesses {
            sink ^= o.access(i);
        }
        std::hint::black_box(sink);
        Some(accesses as f64 / start.elapsed().as_secs_f64())
    }
    #[cfg(not(feature = "peer"))]
    {
        let _ = (n, block, accesses);
        None
    }
}

/// Measures one case: the engine, the crypto bound and (if `oram_crate` is given, already
/// measured or to measure) the `oram` crate.
pub fn run_case(case: Case, accesses: u64, oram_crate: Option<f64>) -> Report {
    let warmup = case.n.min(2_000);
    let (mut oram, mut store, mut rng) = setup(case, warmup, 1);
    let formatted = formattable(&oram);
    let (per_s, two_cores) = measure_one_and_two_cores(&mut oram, &mut store, &mut rng, accesses);
    let store_kind = store.kind();
    let buckets: usize = oram.trees().map(|t| t.fetched_levels()).sum();
    let bucket_bytes = oram.trees().next().map_or(0, |t| t.ciphertext_len());
    let max_stash = oram.max_stash();
    let client_memory_bytes = oram.memory();
    let sizes = bucket_sizes(&oram);
    let mut bound = CryptoBound::new(sizes.iter().copied());
    drop(store);
    drop(oram);
    let crypto = bound.measure(accesses);
    let portable = portable_bound(sizes, accesses);
    let stores = (case.compare_stores && formatted).then(|| measure_stores(case, warmup, accesses));
    Report {
        n: case.n,
        block: case.block,
        z: 4,
        cached_levels: case.cached_levels,
        position_map: match case.position_map {
            PositionMap::Flat => "flat",
            PositionMap::Recursive { .. } => "recursive",
        },
        formatted,
        store: store_kind,
        hash_store_accesses_per_s: stores.map(|s| s.1),
        dense_store_accesses_per_s: stores.map(|s| s.0),
        accesses,
        accesses_per_s: per_s,
        accesses_per_s_two_cores: two_cores,
        two_cores_vs_one: two_cores / per_s,
        batch: case.batch,
        oram_crate_accesses_per_s: oram_crate,
        crypto_bound_accesses_per_s: crypto,
        portable_bound_accesses_per_s: portable,
        vs_oram_crate: oram_crate.map(|o| per_s / o),
        two_cores_vs_oram_crate: oram_crate.map(|o| two_cores / o),
        fraction_of_crypto_bound: per_s / crypto,
        max_stash,
        buckets_per_access: buckets,
        bucket_bytes,
        client_memory_bytes,
        huge_pages: huge_pages(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree that fits is formatted into the dense store, and `--compare-stores` times the
    /// hash map beside it.
    #[test]
    fn a_formatted_case_runs_on_the_dense_store_and_compares() {
        let case = Case {
            n: 1 << 10,
            block: 64,
            cached_levels: 0,
            position_map: PositionMap::Flat,
            batch: 1,
            compare_stores: true,
        };
        let r = run_case(case, 400, None);
        assert!(r.formatted);
        assert_eq!(r.store, "dense");
        assert!(r.accesses_per_s > 0.0 && r.accesses_per_s_two_cores > 0.0);
        assert!(r.hash_store_accesses_per_s.is_some_and(|x| x > 0.0));
        assert!(r.dense_store_accesses_per_s.is_some_and(|x| x > 0.0));
    }

    /// A tree too large to hold starts lazily in the hash-map store.
    #[test]
    fn a_tree_too_large_to_hold_runs_on_the_hash_map() {
        let case = Case {
            n: 1 << 32,
            block: 64,
            cached_levels: 0,
            position_map: PositionMap::recursive(),
            batch: 1,
            compare_stores: false,
        };
        let (mut oram, mut store, mut rng) = setup(case, 10, 1);
        assert_eq!(store.kind(), "hash map");
        let mut data = [0u8; 64];
        access(&mut oram, &mut store, &mut rng, &mut data, 0);
    }
}
