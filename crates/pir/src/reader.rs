//! The reader's side: its keys, its queries, and decoding storage's answers.

use rand::CryptoRng;
use spiral_rs::client::Client;

use crate::{Geometry, PirError, ROW_LEN, expect_len, guarded};

/// A reader of one board geometry: its secret key, and the public key storage needs.
///
/// # Security
/// Holds the secret that decrypts answers. The scheme's key generation is seeded from the
/// caller's RNG; its query encryption draws fresh randomness from the operating system per
/// query (`spiral-rs` offers no way to pass an RNG in), so two queries for one row are
/// unrelated. `spiral-rs` keeps the secret in its own buffers and does not zeroize them on
/// drop: a reader's secret outlives it in freed memory, which is why it protects only which
/// rows were read, never message contents (those are sealed with the client's own keys).
pub struct Reader {
    geometry: Geometry,
    client: Client<'static>,
    public_key: Vec<u8>,
}

impl Reader {
    /// A fresh reader: new secret and public keys.
    pub fn new<R: CryptoRng + ?Sized>(geometry: Geometry, rng: &mut R) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let mut client = Client::init(geometry.params());
        let public_key = client.generate_keys_from_seed(seed).serialize();
        seed.fill(0);
        Reader {
            geometry,
            client,
            public_key,
        }
    }

    /// The geometry this reader is for.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The public key to upload once per connection ([`Geometry::key_len`] bytes).
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// A query for `row` ([`Geometry::query_len`] bytes, whatever the row).
    pub fn query(&self, row: u64) -> Result<Vec<u8>, PirError> {
        if row >= self.geometry.rows() {
            return Err(PirError::Row(row));
        }
        let record = row / self.geometry.rows_per_record();
        Ok(self.client.generate_query(record as usize).serialize())
    }

    /// The row that `answer` carries, for a query made for `row`. An answer of the right
    /// length always decodes to some bytes: whether they are the row is for the caller's own
    /// authentication to say (a lying server makes garbage, not an error).
    pub fn decode(&self, row: u64, answer: &[u8]) -> Result<Vec<u8>, PirError> {
        self.decode_rows(row, 1, answer)
    }

    /// The `count` rows from `row` on that `answer` carries, for a query made for `row`: rows
    /// of one record ([`Geometry::rows_per_record`]) come back from one query. As with
    /// [`Reader::decode`], a lying server makes garbage, not an error.
    pub fn decode_rows(&self, row: u64, count: u64, answer: &[u8]) -> Result<Vec<u8>, PirError> {
        let per = self.geometry.rows_per_record();
        if row >= self.geometry.rows() || count == 0 || row % per + count > per {
            return Err(PirError::Row(row));
        }
        expect_len("answer", answer.len(), self.geometry.answer_len())?;
        let record = guarded("answer", || self.client.decode_response(answer))?;
        let at = (row % per) as usize * ROW_LEN;
        record
            .get(at..at + count as usize * ROW_LEN)
            .map(<[u8]>::to_vec)
            .ok_or(PirError::Malformed("answer"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Board;
    use crate::ReaderKey;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn board(g: Geometry, seed: u64) -> Vec<u8> {
        let mut rows = vec![0u8; g.rows() as usize * ROW_LEN];
        StdRng::seed_from_u64(seed).fill_bytes(&mut rows);
        rows
    }

    /// Every row asked for comes back, at the sizes the geometry fixes; each query and
    /// answer has the same length whatever the row.
    #[test]
    fn a_query_returns_its_row_at_fixed_sizes() {
        let g = Geometry::new(256).expect("geometry");
        let rows = board(g, 1);
        let prepared = Board::prepare(g, &rows).expect("board");
        let mut rng = StdRng::seed_from_u64(2);
        let reader = Reader::new(g, &mut rng);
        assert_eq!(reader.public_key().len(), g.key_len());
        let key = ReaderKey::decode(g, reader.public_key()).expect("key");
        for row in [0u64, 1, 2, 127, 255] {
            let q = reader.query(row).expect("query");
            assert_eq!(q.len(), g.query_len());
            let a = prepared.answer(&key, &q).expect("answer");
            assert_eq!(a.len(), g.answer_len());
            let got = reader.decode(row, &a).expect("decode");
            let at = row as usize * ROW_LEN;
            assert_eq!(got, rows[at..at + ROW_LEN], "row {row}");
        }
        assert_eq!(reader.query(256), Err(PirError::Row(256)));
        // A record's rows come back from one query (an outbox of 2 rows here).
        let per = g.rows_per_record();
        let a = prepared
            .answer(&key, &reader.query(6).expect("query"))
            .expect("answer");
        let got = reader.decode_rows(6, per, &a).expect("record");
        assert_eq!(got, rows[6 * ROW_LEN..(6 + per as usize) * ROW_LEN]);
        assert_eq!(reader.decode_rows(7, per, &a), Err(PirError::Row(7)));
    }

    /// The larger published sets lay the board out the same way (2^12 rows: another
    /// parameter set, more rows per record).
    #[test]
    fn a_larger_board_too() {
        let g = Geometry::new(1 << 12).expect("geometry");
        let rows = board(g, 3);
        let prepared = Board::prepare(g, &rows).expect("board");
        let reader = Reader::new(g, &mut StdRng::seed_from_u64(4));
        let key = ReaderKey::decode(g, reader.public_key()).expect("key");
        for row in [0u64, 4095, 2049] {
            let a = prepared
                .answer(&key, &reader.query(row).expect("query"))
                .expect("answer");
            assert_eq!(a.len(), g.answer_len());
            let at = row as usize * ROW_LEN;
            assert_eq!(
                reader.decode(row, &a).expect("decode"),
                rows[at..at + ROW_LEN]
            );
        }
    }

    /// Bytes of the wrong length are refused before the library sees them, on both sides.
    #[test]
    fn wrong_lengths_are_refused() {
        let g = Geometry::new(256).expect("geometry");
        let prepared = Board::prepare(g, &board(g, 5)).expect("board");
        assert!(matches!(
            Board::prepare(g, &[0u8; 10]),
            Err(PirError::Length { what: "board", .. })
        ));
        let reader = Reader::new(g, &mut StdRng::seed_from_u64(6));
        let key = ReaderKey::decode(g, reader.public_key()).expect("key");
        let short = &reader.public_key()[1..];
        assert!(matches!(
            ReaderKey::decode(g, short),
            Err(PirError::Length { .. })
        ));
        let q = reader.query(3).expect("query");
        assert!(matches!(
            prepared.answer(&key, &q[1..]),
            Err(PirError::Length { .. })
        ));
        assert!(matches!(
            reader.decode(3, &[0u8; 5]),
            Err(PirError::Length { .. })
        ));
        let other = Geometry::new(1 << 12).expect("geometry");
        assert!(ReaderKey::decode(other, reader.public_key()).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]
        /// Hostile bytes of the right length (a key, a query, an answer) give a typed error
        /// or garbage, never a panic.
        #[test]
        fn hostile_bytes_of_the_right_length_do_not_panic(seed in any::<u64>()) {
            let g = Geometry::new(256).expect("geometry");
            let prepared = Board::prepare(g, &board(g, 7)).expect("board");
            let mut rng = StdRng::seed_from_u64(seed);
            let mut noise = |n: usize| {
                let mut v = vec![0u8; n];
                rng.fill_bytes(&mut v);
                v
            };
            let (key_bytes, query, answer) = (noise(g.key_len()), noise(g.query_len()), noise(g.answer_len()));
            if let Ok(key) = ReaderKey::decode(g, &key_bytes) {
                let _ = prepared.answer(&key, &query);
            }
            let reader = Reader::new(g, &mut StdRng::seed_from_u64(seed));
            let honest = ReaderKey::decode(g, reader.public_key()).expect("key");
            let _ = prepared.answer(&honest, &query);
            let _ = reader.decode(9, &answer);
        }
    }

    /// A board of zeros but one outbox (a round with one writer) decodes right at the
    /// default board's size and its neighbours, with fresh keys and queries: the published
    /// 2^13 set decoded wrong in about one query in five here (`geometry::published`).
    #[test]
    fn a_sparse_board_decodes_right() {
        for log in [12u32, 13, 14] {
            let g = Geometry::new(1 << log).expect("geometry");
            let mut rows = vec![0u8; g.rows() as usize * ROW_LEN];
            StdRng::seed_from_u64(u64::from(log)).fill_bytes(&mut rows[..4 * ROW_LEN]);
            let prepared = Board::prepare(g, &rows).expect("board");
            for k in 0..4u64 {
                let reader = Reader::new(g, &mut StdRng::seed_from_u64(1000 * u64::from(log) + k));
                let key = ReaderKey::decode(g, reader.public_key()).expect("key");
                for row in [0u64, 3] {
                    let a = prepared
                        .answer(&key, &reader.query(row).expect("query"))
                        .expect("answer");
                    let at = row as usize * ROW_LEN;
                    assert_eq!(
                        reader.decode(row, &a).expect("decode"),
                        rows[at..at + ROW_LEN],
                        "2^{log} rows, key {k}, row {row}"
                    );
                }
            }
        }
    }
}
