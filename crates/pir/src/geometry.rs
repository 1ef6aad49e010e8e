//! The board's public shape, and the published Spiral parameters it selects.

use std::sync::OnceLock;

use spiral_rs::params::Params;

use crate::PirError;

/// Bytes of a row.
pub const ROW_LEN: usize = 1024;

/// Smallest and largest boards, as powers of two.
const MIN_LOG_ROWS: u32 = 8;
const MAX_LOG_ROWS: u32 = 16;

/// A board's shape: how many rows of [`ROW_LEN`] bytes. It fixes the scheme's parameters,
/// and so every size that travels.
///
/// # Security
/// Public: every reader of a board uses the same geometry, so every key, query and answer of
/// one board has the same size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    log_rows: u32,
}

impl Geometry {
    /// A board of `rows` rows: a power of two from 2^8 to 2^16.
    pub fn new(rows: u64) -> Result<Self, PirError> {
        let log_rows = rows.trailing_zeros();
        if !rows.is_power_of_two() || !(MIN_LOG_ROWS..=MAX_LOG_ROWS).contains(&log_rows) {
            return Err(PirError::Rows(rows));
        }
        Ok(Geometry { log_rows })
    }

    /// Rows on the board.
    pub fn rows(&self) -> u64 {
        1 << self.log_rows
    }

    /// Bytes of a reader's public key (sent once per connection).
    pub fn key_len(&self) -> usize {
        self.params().setup_bytes()
    }

    /// Bytes of a query.
    pub fn query_len(&self) -> usize {
        self.params().query_bytes()
    }

    /// Bytes of an answer (as `spiral_rs::server::encode` lays it out: the first row of the
    /// packed ciphertext at `q2_bits`, the rest at `log2(4p)` bits, rounded up to 64 bits).
    pub fn answer_len(&self) -> usize {
        let p = self.params();
        let q1_bits = (4 * p.pt_modulus).next_power_of_two().trailing_zeros() as usize;
        let bits = p.instances
            * (p.q2_bits as usize * p.n * p.poly_len + q1_bits * p.n * p.n * p.poly_len);
        bits.div_ceil(64) * 8
    }

    /// Bytes the scheme reads per query: the board as it lays it out (whole records; the
    /// smallest boards use a larger board's parameters).
    pub fn scanned_len(&self) -> u64 {
        self.records() * self.params().db_item_size as u64
    }

    /// Rows in one of the scheme's records (a plaintext holds several rows; a query fetches
    /// a whole record, so rows that share a record come back from one query).
    pub fn rows_per_record(&self) -> u64 {
        (self.params().db_item_size / ROW_LEN) as u64
    }

    /// Records on the board as the scheme lays it out (at least `rows / rows_per_record`).
    pub(crate) fn records(&self) -> u64 {
        let p = self.params();
        1 << (p.db_dim_1 + p.db_dim_2)
    }

    /// The scheme's parameters for this geometry, built once per process.
    pub(crate) fn params(&self) -> &'static Params {
        static SETS: [OnceLock<Params>; (MAX_LOG_ROWS - MIN_LOG_ROWS + 1) as usize] =
            [const { OnceLock::new() }; (MAX_LOG_ROWS - MIN_LOG_ROWS + 1) as usize];
        SETS[(self.log_rows - MIN_LOG_ROWS) as usize].get_or_init(|| published(self.log_rows))
    }
}

/// Spiral's published parameters for 2^`log_rows` records of 1 KiB, from the
/// `params_store.json` of its authors' SDK (blyssprivacy/sdk): (n, nu_1, nu_2, p, q2_bits,
/// t_gsw, t_conv, t_exp_left, t_exp_right), loaded by the library's own loader (ring 2048,
/// moduli 268369921 x 249561089, noise width 6.4). Boards under 2^10 rows use the 2^10 set,
/// and boards of 2^13 the 2^14 set (the board padded with zeros): with spiral-rs
/// 0.2.1-alpha.2 the published 2^13 set decoded about one query in five wrong on a board of
/// zeros but one outbox (32 to 376 bytes of the record), although its noise estimate is
/// 2^-182 (found by `shroud bench mail`; `reader::tests::a_sparse_board_decodes_right`).
/// With no `db_item_size`, a record is a whole plaintext (n^2 polynomials of 2048
/// coefficients of log2(p) bits), which holds several rows.
fn published(log_rows: u32) -> Params {
    let [n, nu1, nu2, p, q2, t_gsw, t_conv, t_left, t_right] = match log_rows {
        0..=11 => [2, 6, 4, 4, 13, 4, 4, 4, 56],
        12 => [2, 7, 4, 4, 13, 4, 32, 4, 56],
        13 | 14 => [2, 7, 5, 16, 16, 5, 4, 4, 56],
        15 => [2, 8, 5, 16, 16, 5, 4, 4, 56],
        _ => [2, 8, 6, 16, 16, 5, 4, 4, 56],
    };
    spiral_rs::util::params_from_json(&format!(
        r#"{{"n": {n}, "nu_1": {nu1}, "nu_2": {nu2}, "p": {p}, "q2_bits": {q2}, "t_gsw": {t_gsw}, "t_conv": {t_conv}, "t_exp_left": {t_left}, "t_exp_right": {t_right}, "instances": 1}}"#
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_published_sizes() {
        for bad in [0, 1, 100, 128, 1 << 17, 3 << 10] {
            assert_eq!(Geometry::new(bad), Err(PirError::Rows(bad)));
        }
        for log in MIN_LOG_ROWS..=MAX_LOG_ROWS {
            let g = Geometry::new(1 << log).expect("published");
            assert!(
                g.records() * g.rows_per_record() >= g.rows(),
                "2^{log} rows fit"
            );
        }
    }
}
