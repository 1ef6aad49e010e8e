//! Storage's side: one round's board, prepared once, answering every reader's queries.

use std::io::Cursor;

use spiral_rs::aligned_memory::AlignedMemory64;
use spiral_rs::client::{PublicParameters, Query};
use spiral_rs::server::{load_db_from_seek, process_query};

use crate::{Geometry, PirError, ROW_LEN, expect_len, guarded};

/// One round's board, encoded for answering (Spiral's NTT form).
///
/// # Security
/// Holds the rows as storage received them (ciphertext to storage). Answering does the same
/// work for every query of a geometry, whatever row it asks for; a query's contents never
/// choose what is read, so the answer's timing and size say nothing about the row.
pub struct Board {
    geometry: Geometry,
    db: AlignedMemory64,
}

/// A reader's public key, as storage keeps it for the reader's connection.
///
/// # Security
/// Public key material (key-switching keys under the reader's secret): it lets storage
/// answer, not read. It says nothing about which rows the reader will ask for.
pub struct ReaderKey {
    geometry: Geometry,
    key: PublicParameters<'static>,
}

impl ReaderKey {
    /// Reads a key sent by a reader: exactly [`Geometry::key_len`] bytes.
    pub fn decode(geometry: Geometry, bytes: &[u8]) -> Result<Self, PirError> {
        expect_len("reader key", bytes.len(), geometry.key_len())?;
        let params = geometry.params();
        let key = guarded("reader key", || {
            PublicParameters::deserialize(params, bytes)
        })?;
        Ok(ReaderKey { geometry, key })
    }

    /// The geometry the key was made for.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }
}

impl Board {
    /// Takes in one round's rows: exactly `geometry.rows()` rows of [`ROW_LEN`] bytes, in
    /// order.
    pub fn prepare(geometry: Geometry, rows: &[u8]) -> Result<Self, PirError> {
        expect_len("board", rows.len(), geometry.rows() as usize * ROW_LEN)?;
        let params = geometry.params();
        // The scheme's records, in order, each holding `rows_per_record` rows; the records
        // past the board's rows stay zero.
        let mut records = vec![0u8; geometry.records() as usize * params.db_item_size];
        records[..rows.len()].copy_from_slice(rows);
        let db = load_db_from_seek(params, &mut Cursor::new(&records));
        Ok(Board { geometry, db })
    }

    /// The board's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Answers one query of the reader whose key is `key`: [`Geometry::answer_len`] bytes.
    pub fn answer(&self, key: &ReaderKey, query: &[u8]) -> Result<Vec<u8>, PirError> {
        if key.geometry != self.geometry {
            return Err(PirError::Malformed("reader key of another board"));
        }
        let want = self.geometry.answer_len();
        expect_len("query", query.len(), self.geometry.query_len())?;
        let params = self.geometry.params();
        let answer = guarded("query", || {
            let query = Query::deserialize(params, query);
            process_query(params, &key.key, &query, self.db.as_slice())
        })?;
        expect_len("answer", answer.len(), want).map_err(|_| PirError::Malformed("query"))?;
        Ok(answer)
    }
}
