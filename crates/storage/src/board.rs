//! The mail board of the outbox delivery (issue 13, docs/mail-delivery.md): outboxes, each
//! owned by a capability and holding `rows_per_outbox` consecutive rows of the board; the
//! rows written this round; and the round's close, which hands the rows to PIR.
//!
//! Outboxes are numbered from 0 in the order they are made, and an outbox's first row is its
//! number times `rows_per_outbox`: the number is what an address carries. Only who holds the
//! capability writes an outbox's rows, once per round; the owners (hashes of capabilities,
//! as for stores) are durable in the backend, the rows are not (a sender writes a chunk
//! again every round until it is acknowledged, so a lost round delays, it loses nothing).
//!
//! # Security
//! Storage learns which outbox wrote in a round (when its owner was online) and the rows,
//! which are random bytes to it. It never learns which rows a reader fetches: that is PIR's
//! job ([`shroud_pir`]).

use shroud_pir::{Board, Geometry, PirError, ROW_LEN};
use shroud_proto::Capability;
use subtle::ConstantTimeEq;

use crate::backend::{Backend, BackendError};
use crate::capability;

/// Why the board refused something.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BoardError {
    /// Every outbox the board has room for is taken.
    #[error("the board is full: {0} outboxes")]
    Full(u64),
    /// No such outbox, or the capability does not open it (one answer for both).
    #[error("no outbox of that number opens with that capability")]
    Unauthorized,
    /// Rows of the wrong length for an outbox.
    #[error("{got} bytes of rows; an outbox writes exactly {want}")]
    Length {
        /// What came.
        got: usize,
        /// `rows_per_outbox` rows.
        want: usize,
    },
    /// The outbox was already written this round.
    #[error("outbox {0} was already written this round")]
    Twice(u64),
    /// A board shape that does not divide into outboxes.
    #[error("{rows_per_outbox} rows per outbox on a board of {rows} rows")]
    Shape {
        /// Rows per outbox.
        rows_per_outbox: u32,
        /// Rows on the board.
        rows: u64,
    },
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// PIR refused the board.
    #[error(transparent)]
    Pir(#[from] PirError),
}

/// Checks a board shape before a server starts on it: `rows` a power of two from 2^8 to
/// 2^16, divided into outboxes of `rows_per_outbox` rows.
pub fn check_shape(rows: u64, rows_per_outbox: u32) -> Result<Geometry, BoardError> {
    let geometry = Geometry::new(rows)?;
    if rows_per_outbox == 0 || !rows.is_multiple_of(u64::from(rows_per_outbox)) {
        return Err(BoardError::Shape {
            rows_per_outbox,
            rows,
        });
    }
    Ok(geometry)
}

/// The outboxes and this round's rows.
///
/// # Security
/// Holds only capability hashes and rows as the writers sealed them; compares capabilities
/// in constant time, and answers a missing outbox like a wrong capability.
pub struct MailBoard {
    geometry: Geometry,
    rows_per_outbox: u32,
    /// Outbox i's capability hash.
    owners: Vec<[u8; 32]>,
    /// This round's rows, `geometry.rows()` of them.
    rows: Vec<u8>,
    /// Which outboxes wrote this round.
    written: Vec<bool>,
}

impl MailBoard {
    /// The board of `geometry`, in outboxes of `rows_per_outbox` rows, with the outboxes the
    /// backend holds.
    pub fn open(
        backend: &dyn Backend,
        geometry: Geometry,
        rows_per_outbox: u32,
    ) -> Result<Self, BoardError> {
        check_shape(geometry.rows(), rows_per_outbox)?;
        let mut board = MailBoard {
            geometry,
            rows_per_outbox,
            written: Vec::new(),
            owners: Vec::new(),
            rows: vec![0; geometry.rows() as usize * ROW_LEN],
        };
        board.sync(backend)?;
        if board.outboxes() > board.capacity() {
            return Err(BoardError::Full(board.capacity()));
        }
        Ok(board)
    }

    /// Learns the outboxes made since by other storage servers on the same engine (a Redis
    /// Cluster): every outbox this board knows must still be there, with its owner.
    pub fn sync(&mut self, backend: &dyn Backend) -> Result<(), BoardError> {
        for (i, (index, hash)) in backend.outboxes()?.into_iter().enumerate() {
            // Outboxes are made in order and never change owner: a gap or a change is a
            // damaged database.
            let known = self.owners.get(i);
            if index != i as u64 || known.is_some_and(|h| *h != hash) {
                return Err(BoardError::Backend(BackendError::CorruptOutboxes(index)));
            }
            if known.is_none() {
                self.owners.push(hash);
                self.written.push(false);
            }
        }
        if self.outboxes() > self.capacity() {
            return Err(BoardError::Full(self.capacity()));
        }
        Ok(())
    }

    /// The PIR geometry of the board.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Outboxes made so far.
    pub fn outboxes(&self) -> u64 {
        self.owners.len() as u64
    }

    /// The most outboxes the board has room for.
    pub fn capacity(&self) -> u64 {
        self.geometry.rows() / u64::from(self.rows_per_outbox)
    }

    /// The number of `capability`'s outbox, if it has one.
    pub fn find(&self, capability: &Capability) -> Option<u64> {
        let hash = capability::hash(capability);
        self.owners
            .iter()
            .position(|h| bool::from(h.ct_eq(&hash)))
            .map(|i| i as u64)
    }

    /// The outbox of `capability`: made now (durably) if it has none, else its number again,
    /// so a client that retries after a crash keeps one outbox.
    pub fn create(
        &mut self,
        backend: &dyn Backend,
        capability: &Capability,
    ) -> Result<u64, BoardError> {
        if let Some(i) = self.find(capability) {
            return Ok(i);
        }
        // Another storage server on the same engine may have made it, or taken the next
        // number: learn what it made, then take the first free number.
        self.sync(backend)?;
        if let Some(i) = self.find(capability) {
            return Ok(i);
        }
        let hash = capability::hash(capability);
        loop {
            let index = self.outboxes();
            if index >= self.capacity() {
                return Err(BoardError::Full(self.capacity()));
            }
            if backend.outbox_create(index, &hash)? {
                backend.flush()?;
                self.owners.push(hash);
                self.written.push(false);
                return Ok(index);
            }
            // Taken meanwhile by another server: it is in the engine now.
            let before = self.outboxes();
            self.sync(backend)?;
            if self.outboxes() == before {
                return Err(BoardError::Backend(BackendError::CorruptOutboxes(index)));
            }
            if let Some(i) = self.find(capability) {
                return Ok(i);
            }
        }
    }

    /// Writes outbox `outbox`'s rows for this round: exactly `rows_per_outbox` rows.
    pub fn write(
        &mut self,
        outbox: u64,
        capability: &Capability,
        rows: &[u8],
    ) -> Result<(), BoardError> {
        let want = self.rows_per_outbox as usize * ROW_LEN;
        if rows.len() != want {
            return Err(BoardError::Length {
                got: rows.len(),
                want,
            });
        }
        let i = usize::try_from(outbox).unwrap_or(usize::MAX);
        if !capability::opens(self.owners.get(i), capability) {
            return Err(BoardError::Unauthorized);
        }
        if self.written[i] {
            return Err(BoardError::Twice(outbox));
        }
        self.written[i] = true;
        let at = i * want;
        self.rows[at..at + want].copy_from_slice(rows);
        Ok(())
    }

    /// Outboxes written this round.
    pub fn written(&self) -> u64 {
        self.written.iter().filter(|w| **w).count() as u64
    }

    /// Ends the round: the rows written become a board ready for PIR (an outbox not written
    /// this round reads as zeros: its owner is offline), and the next round starts empty.
    pub fn close(&mut self) -> Result<Board, BoardError> {
        let board = Board::prepare(self.geometry, &self.rows)?;
        self.rows.fill(0);
        self.written.fill(false);
        Ok(board)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SledBackend;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use shroud_pir::{Reader, ReaderKey};

    fn cap(b: u8) -> Capability {
        Capability([b; 32])
    }

    /// Outboxes are numbered in order and survive a restart; making one again with the same
    /// capability gives the same number; only the capability writes, once a round; a reader
    /// fetches the rows written, and zeros for an outbox not written.
    #[test]
    fn outboxes_are_owned_written_once_a_round_and_read_with_pir() {
        let dir = tempfile::tempdir().expect("dir");
        let g = Geometry::new(256).expect("geometry");
        let (alice, bob) = (cap(1), cap(2));
        {
            let backend = SledBackend::open(dir.path()).expect("open");
            let mut board = MailBoard::open(&backend, g, 2).expect("board");
            assert_eq!(board.capacity(), 128);
            assert_eq!(board.create(&backend, &alice).expect("alice"), 0);
            assert_eq!(board.create(&backend, &bob).expect("bob"), 1);
            assert_eq!(board.create(&backend, &alice).expect("again"), 0);
        }
        let backend = SledBackend::open(dir.path()).expect("reopen");
        let mut board = MailBoard::open(&backend, g, 2).expect("board");
        assert_eq!(board.outboxes(), 2);
        let mut rng = StdRng::seed_from_u64(1);
        let mut rows = vec![0u8; 2 * ROW_LEN];
        rng.fill_bytes(&mut rows);
        assert!(matches!(
            board.write(0, &bob, &rows),
            Err(BoardError::Unauthorized)
        ));
        assert!(matches!(
            board.write(7, &bob, &rows),
            Err(BoardError::Unauthorized)
        ));
        assert!(matches!(
            board.write(0, &alice, &rows[1..]),
            Err(BoardError::Length { .. })
        ));
        board.write(0, &alice, &rows).expect("write");
        assert!(matches!(
            board.write(0, &alice, &rows),
            Err(BoardError::Twice(0))
        ));
        assert_eq!(board.written(), 1);
        let prepared = board.close().expect("close");
        assert_eq!(board.written(), 0);
        let reader = Reader::new(g, &mut rng);
        let key = ReaderKey::decode(g, reader.public_key()).expect("key");
        let fetch = |row: u64| {
            let answer = prepared
                .answer(&key, &reader.query(row).expect("query"))
                .expect("answer");
            reader.decode(row, &answer).expect("decode")
        };
        assert_eq!(fetch(1), rows[ROW_LEN..]);
        assert_eq!(fetch(2), vec![0u8; ROW_LEN], "bob did not write");
        // The next round starts empty: alice may write again.
        board.write(0, &alice, &rows).expect("next round");
    }

    /// A full board refuses new owners, and a shape that does not divide is refused.
    #[test]
    fn the_board_has_room_for_what_its_shape_says() {
        let dir = tempfile::tempdir().expect("dir");
        let backend = SledBackend::open(dir.path()).expect("open");
        let g = Geometry::new(256).expect("geometry");
        assert!(matches!(
            MailBoard::open(&backend, g, 3),
            Err(BoardError::Shape { .. })
        ));
        let mut board = MailBoard::open(&backend, g, 128).expect("board");
        board.create(&backend, &cap(1)).expect("one");
        board.create(&backend, &cap(2)).expect("two");
        assert!(matches!(
            board.create(&backend, &cap(3)),
            Err(BoardError::Full(2))
        ));
    }

    /// Two storage servers on one engine (a Redis Cluster): each board learns the other's
    /// outboxes when it needs to, numbers never collide, and an owner keeps one outbox
    /// whichever server it asks.
    #[test]
    fn boards_sharing_an_engine_number_outboxes_together() {
        let dir = tempfile::tempdir().expect("dir");
        let backend = SledBackend::open(dir.path()).expect("open");
        let g = Geometry::new(256).expect("geometry");
        let mut one = MailBoard::open(&backend, g, 2).expect("board");
        let mut two = MailBoard::open(&backend, g, 2).expect("board");
        assert_eq!(one.create(&backend, &cap(1)).expect("on one"), 0);
        // `two` has not seen outbox 0: it learns it instead of taking 0 again.
        assert_eq!(two.create(&backend, &cap(2)).expect("on two"), 1);
        assert_eq!(two.create(&backend, &cap(1)).expect("the same owner"), 0);
        assert_eq!(one.create(&backend, &cap(2)).expect("the same owner"), 1);
        assert_eq!(one.create(&backend, &cap(3)).expect("on one"), 2);
        // A write to an outbox made elsewhere is refused until the board syncs.
        let rows = vec![7u8; 2 * ROW_LEN];
        assert!(matches!(
            two.write(2, &cap(3), &rows),
            Err(BoardError::Unauthorized)
        ));
        two.sync(&backend).expect("sync");
        two.write(2, &cap(3), &rows).expect("after sync");
        assert_eq!(backend.outboxes().expect("outboxes").len(), 3);
    }
}
