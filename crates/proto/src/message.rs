//! The messages.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Names a store: [`StoreId::of`] its capability, which storage checks when it creates one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StoreId(pub [u8; 16]);

impl StoreId {
    /// The id of the store `capability` opens: the first 16 bytes of
    /// `SHA-256("shroud-store-id-v1" || capability)`.
    ///
    /// # Security
    /// Storage creates a store only under the id of the capability that comes with the
    /// request, so knowing an id does not let anyone create that store first and then
    /// count, read or delete what its owner writes
    /// (issue 12, finding 6). Finding a capability for a given id is a second preimage of
    /// 128 bits of SHA-256.
    pub fn of(capability: &Capability) -> StoreId {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"shroud-store-id-v1");
        h.update(capability.0);
        let d = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&d[..16]);
        StoreId(id)
    }
}

impl std::fmt::Display for StoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The 32-byte secret that proves ownership of a store.
///
/// # Security
/// A secret: wiped on drop, compared in constant time, never printed. The server keeps only
/// a hash of it.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Capability(pub [u8; 32]);

impl std::fmt::Debug for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Capability(<redacted>)")
    }
}

impl PartialEq for Capability {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Capability {}

/// A store's shape: every bucket has exactly `bucket_len` bytes; indices are `0..buckets`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    /// Bytes of every bucket.
    pub bucket_len: u32,
    /// Number of buckets.
    pub buckets: u64,
}

/// The first message of a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`crate::MAGIC`].
    pub magic: [u8; 8],
    /// The sender's [`crate::PROTOCOL_VERSION`].
    pub version: u32,
}

impl Hello {
    /// This build's hello.
    pub fn current() -> Self {
        Hello {
            magic: crate::MAGIC,
            version: crate::PROTOCOL_VERSION,
        }
    }

    /// The one hello rule, for every server: our magic and our version, or the code to
    /// refuse with ([`ErrorCode::UnexpectedHello`] for a foreign magic,
    /// [`ErrorCode::UnsupportedVersion`] for another version).
    pub fn check(&self) -> Result<(), ErrorCode> {
        if self.magic != crate::MAGIC {
            Err(ErrorCode::UnexpectedHello)
        } else if self.version != crate::PROTOCOL_VERSION {
            Err(ErrorCode::UnsupportedVersion)
        } else {
            Ok(())
        }
    }
}

/// Permission to touch a store within one batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The store.
    pub store: StoreId,
    /// Its capability.
    pub capability: Capability,
}

impl Grant {
    /// The grant of the store `capability` names ([`StoreId::of`]).
    pub fn of(capability: Capability) -> Grant {
        Grant {
            store: StoreId::of(&capability),
            capability,
        }
    }

    /// True if the store id is the one this capability names: the only id storage creates
    /// a store under.
    pub fn names_its_store(&self) -> bool {
        StoreId::of(&self.capability) == self.store
    }
}

/// One step of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchOp {
    /// Read a bucket of the store of grant `grant`.
    Read {
        /// Index into [`Batch::grants`].
        grant: u32,
        /// Bucket index.
        bucket: u64,
    },
    /// Write a bucket.
    Write {
        /// Index into [`Batch::grants`].
        grant: u32,
        /// Bucket index.
        bucket: u64,
        /// Exactly the store's `bucket_len` bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Read slots of buckets, a slot being `slot_len` bytes at `slot * slot_len` in its
    /// bucket (Ring ORAM's reads): one [`ReadResult`] holding their XOR (`xor`, a bucket
    /// never written counting as zeros), or one per slot.
    ReadSlots {
        /// Index into [`Batch::grants`].
        grant: u32,
        /// Bytes of a slot; every slot read must lie inside its bucket.
        slot_len: u32,
        /// One XORed answer, or one answer per slot.
        xor: bool,
        /// The slots, in order.
        slots: Vec<SlotRef>,
    },
}

impl BatchOp {
    /// The grant the operation uses.
    pub fn grant(&self) -> u32 {
        match self {
            BatchOp::Read { grant, .. }
            | BatchOp::Write { grant, .. }
            | BatchOp::ReadSlots { grant, .. } => *grant,
        }
    }

    /// How many [`ReadResult`]s the operation adds to the reply.
    pub fn answers(&self) -> usize {
        match self {
            BatchOp::Read { .. } => 1,
            BatchOp::Write { .. } => 0,
            BatchOp::ReadSlots { xor: true, .. } => 1,
            BatchOp::ReadSlots { slots, .. } => slots.len(),
        }
    }
}

/// One slot of one bucket ([`BatchOp::ReadSlots`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRef {
    /// Bucket index.
    pub bucket: u64,
    /// Slot index within the bucket.
    pub slot: u16,
}

/// The one data operation: an ordered list of bucket reads and writes across stores.
///
/// All its writes land or none do, durably, before the reply; a read sees the writes before
/// it in the same batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The stores this batch touches, with their capabilities.
    pub grants: Vec<Grant>,
    /// The steps, applied in order.
    pub ops: Vec<BatchOp>,
}

impl Batch {
    /// A batch of writes to one store.
    pub fn writes(grant: Grant, writes: impl IntoIterator<Item = (u64, Vec<u8>)>) -> Self {
        let ops = writes
            .into_iter()
            .map(|(bucket, data)| BatchOp::Write {
                grant: 0,
                bucket,
                data,
            })
            .collect();
        Batch {
            grants: vec![grant],
            ops,
        }
    }

    /// A batch of reads of one store.
    pub fn reads(grant: Grant, buckets: impl IntoIterator<Item = u64>) -> Self {
        let ops = buckets
            .into_iter()
            .map(|bucket| BatchOp::Read { grant: 0, bucket })
            .collect();
        Batch {
            grants: vec![grant],
            ops,
        }
    }
}

/// A request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Must be first on a connection.
    Hello(Hello),
    /// Create a store, or confirm one that exists with this capability and geometry. Fails
    /// with [`ErrorCode::Unauthorized`] if the id is taken or not the capability's, and with
    /// [`ErrorCode::NeedsWork`] if a new store's work falls short of storage's difficulty.
    CreateStore {
        /// The new store's id.
        store: StoreId,
        /// Its capability; the server keeps only a hash.
        capability: Capability,
        /// Its shape.
        geometry: Geometry,
        /// The proof of work that pays for it ([`crate::work`]).
        work: crate::Work,
    },
    /// Delete a store and everything in it.
    DeleteStore(Grant),
    /// Read and write buckets.
    Batch(Batch),
    /// Server counters.
    Stats,
    /// Storage's routing public key (clients should pin it, not trust this answer).
    RoutingKey,
    /// Make, or find again, the outbox of a capability on the mail board of the outbox
    /// delivery: a sealed [`crate::board::OutboxRequest`] of
    /// [`crate::board::OUTBOX_REQUEST_LEN`] bytes, answered by [`Response::Outbox`].
    Outbox(crate::sealed::Sealed),
    /// Keep a reader session's PIR key (the session's id is the proxy's; the key's size is
    /// fixed by the board), answered by [`Response::Kept`].
    ReaderKey {
        /// The session.
        session: [u8; 16],
        /// Its key.
        key: crate::board::PirBytes,
    },
    /// Forget a reader session's key (its connection ended), answered by
    /// [`Response::Forgotten`].
    ForgetReader([u8; 16]),
    /// A round's outbox writes, each a sealed [`crate::board::OutboxWrite`]: they make the
    /// round's board, which the round's queries are answered against. Answered by
    /// [`Response::Round`].
    Round(Vec<crate::sealed::Sealed>),
    /// PIR queries against the last round's board, answered by [`Response::Answers`].
    Answer(Vec<crate::board::Query>),
}

/// Storage's answer to a batch: which grants it refused, and the reads of the others.
///
/// A batch pools many clients' slots, so one bad grant (a deleted store, a wrong
/// capability, a bucket out of range) is refused on its own: none of its operations run,
/// and every other grant's run as if it were not there (issue 12, finding 5).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchReply {
    /// The refused grants (indices into the batch's grants, ascending), each with why.
    pub refused: Vec<(u32, ErrorCode)>,
    /// One result per read of every grant not refused, in the batch's order.
    pub reads: Vec<ReadResult>,
}

impl BatchReply {
    /// True if grant `g` was refused.
    pub fn refuses(&self, g: u32) -> Option<ErrorCode> {
        self.refused
            .binary_search_by_key(&g, |&(i, _)| i)
            .ok()
            .map(|i| self.refused[i].1)
    }
}

/// One bucket read: always `bucket_len` bytes long, zeros when absent, so every reply to
/// the same batch shape has the same size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadResult {
    /// False if the bucket was never written.
    pub present: bool,
    /// The bucket, or zeros.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Server counters, as of the request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    /// Batches applied.
    pub batches: u64,
    /// Buckets read.
    pub buckets_read: u64,
    /// Buckets written.
    pub buckets_written: u64,
    /// Request bytes received.
    pub bytes_in: u64,
    /// Response bytes sent.
    pub bytes_out: u64,
    /// Durable flushes (each covers every batch applied before it started).
    pub flushes: u64,
    /// Mean flush latency, microseconds.
    pub flush_mean_us: u64,
    /// Slowest flush, microseconds.
    pub flush_max_us: u64,
    /// Connections open now.
    pub active_connections: u64,
    /// Connections refused or closed for errors.
    pub rejected: u64,
    /// Stores.
    pub stores: u64,
    /// Bytes of bucket data stored.
    pub stored_bytes: u64,
    /// Bytes the storage engine uses on disk.
    pub disk_bytes: u64,
}

/// Why a request failed. The connection is closed after any error but
/// [`ErrorCode::Unauthorized`], [`ErrorCode::BadGeometry`], [`ErrorCode::BucketOutOfRange`],
/// [`ErrorCode::WrongBucketSize`], [`ErrorCode::NeedsWork`] and [`ErrorCode::StoreLimit`],
/// which refuse one request (or, in a batch's [`BatchReply`], one grant).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The frame did not decode.
    Malformed,
    /// The frame exceeded the size limit.
    TooLarge,
    /// The first message was not a hello.
    HelloRequired,
    /// A second hello, or a hello with the wrong magic.
    UnexpectedHello,
    /// The hello's version is not ours.
    UnsupportedVersion,
    /// Wrong capability, or no such store: the same answer for both.
    Unauthorized,
    /// A geometry of zero or absurd size.
    BadGeometry,
    /// A bucket index past the store's end, or a grant index past the grants.
    BucketOutOfRange,
    /// A write whose length is not the store's bucket length.
    WrongBucketSize,
    /// The server is at its connection limit.
    TooManyConnections,
    /// The client was idle or too slow.
    Timeout,
    /// The storage engine failed; nothing of the batch was applied.
    Internal,
    /// More slots than the proxy's K in one epoch.
    TooManySlots,
    /// A slot or store that does not have the proxy's shape.
    WrongShape,
    /// The proxy could not reach storage.
    Unavailable,
    /// A new store's proof of work falls short of storage's difficulty.
    NeedsWork,
    /// Storage holds as many stores as its operator allows: no new one now.
    StoreLimit,
    /// A round frame outside a round's first epoch, or a second one in a round.
    OutOfRound,
}

/// A response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The server's version, and the work a new store costs.
    Hello(Hello, crate::Difficulty),
    /// The store exists now.
    Created,
    /// The store is gone.
    Deleted,
    /// The grants refused, and one result per read of the others, in order.
    Batch(BatchReply),
    /// Counters.
    Stats(StatsReply),
    /// A refusal.
    Error(ErrorCode),
    /// Storage's routing public key.
    RoutingKey([u8; 32]),
    /// A sealed [`crate::board::OutboxReply`] of [`crate::board::OUTBOX_REPLY_LEN`] bytes
    /// (random bytes of that length if the request did not open).
    Outbox(crate::sealed::Sealed),
    /// The reader's key is kept.
    Kept,
    /// The reader's key is forgotten.
    Forgotten,
    /// One sealed [`crate::board::WriteStatus`] per write, in order.
    Round(Vec<crate::sealed::Sealed>),
    /// One answer per query, in order.
    Answers(Vec<crate::board::PirBytes>),
}
