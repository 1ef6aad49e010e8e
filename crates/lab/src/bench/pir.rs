//! `shroud bench pir`: single-server PIR schemes for mail delivery, side by side on one
//! board of `rows` rows of `row_bytes` bytes, as issue 13 asks before a scheme is chosen.
//!
//! The candidates, both lattice-based and both without a data-dependent client hint, used
//! as published with their authors' parameters (nothing here changes the cryptography):
//!
//! - **YPIR-SP**: YPIR over SimplePIR (Menon and Wu, "YPIR: High-Throughput Single-Server PIR
//!   with Silent Preprocessing", USENIX Security 2024, eprint 2024/270), from `valar-ypir`
//!   0.2.1, the audited fork (Zellic), with its audited ring dimension 2048 and three gadget
//!   digits (`YPIRSPConfig::degree_2048`). The client gets no hint: the server packs the
//!   answer with the client's packing key. The server's "offline" step (the hint it
//!   multiplies in, `A x D`) depends on the board, so with a board rewritten every round it
//!   runs every round: that is `prepare_ms`.
//! - **Spiral**: Spiral (Menon and Wu, "Spiral: Fast, High-Rate Single-Server PIR via FHE
//!   Composition", IEEE S&P 2022, eprint 2022/368), from `spiral-rs` 0.2.1-alpha.2, its
//!   authors' implementation (Blyss), with the parameter sets they published for each
//!   database size (the `params_store.json` of their SDK, for 1 KiB records; ring 2048,
//!   moduli 268369921 x 249561089, noise width 6.4). The client's public parameters
//!   (`key_bytes`) do not depend on the board and can be uploaded once per connection; the
//!   server's step per board version is encoding the board in NTT form (`prepare_ms`).
//!   (`valar-spiral-rs`, the fork audited with YPIR, keeps only what YPIR uses: its Spiral
//!   query path fails its own full-protocol test.)
//!
//! SimplePIR and DoublePIR are left out: their client hint depends on every row, and every
//! row changes every round, so a client would download a hint about as large as the board's
//! square root times 1,024 words every round.
//!
//! Server times are one core's; `board_gb_per_s` is the board's plaintext bytes over the
//! server time of one query, next to this machine's memory bandwidth (one core reading a
//! 256 MiB buffer), `memory_gb_per_s`. Every answer is decoded and checked against the row.

use std::time::Instant;

use anyhow::{Result, ensure};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use serde::Serialize;

/// One line of `shroud bench pir --json`: one scheme on one board.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The scheme: `ypir-sp` or `spiral`.
    pub scheme: &'static str,
    /// Rows on the board.
    pub rows: u64,
    /// Bytes per row.
    pub row_bytes: u64,
    /// The board's bytes (rows x row bytes).
    pub board_bytes: u64,
    /// What the scheme really scans per query, bytes (its padded plaintext database).
    pub scanned_bytes: u64,
    /// Server time to take in a new version of the board (every round), ms.
    pub prepare_ms: f64,
    /// Server time per query, one core, ms (median of `queries`).
    pub query_ms: f64,
    /// Server time for a batch of `batch` queries on every core, ms.
    pub batch_ms: f64,
    /// Queries in the batch.
    pub batch: u64,
    /// Cores the batch ran on.
    pub cores: u64,
    /// Board bytes per second of one core's query time, GB/s.
    pub board_gb_per_s: f64,
    /// One core's sequential read bandwidth on this machine, GB/s.
    pub memory_gb_per_s: f64,
    /// Bytes up per query (not counting `key_bytes`).
    pub up_bytes: u64,
    /// Bytes down per query.
    pub down_bytes: u64,
    /// Key material that can be uploaded once per connection and kept by the server.
    pub key_bytes: u64,
    /// Key material that must go up with every query (fresh per query).
    pub key_bytes_per_query: u64,
    /// Bytes a client must fetch again when the board changes (a hint): 0 for both.
    pub refetch_per_round_bytes: u64,
    /// Client time to make one query, ms.
    pub client_query_ms: f64,
    /// Client time to decode one answer, ms.
    pub client_decode_ms: f64,
    /// Queries timed.
    pub queries: u64,
}

/// One core's sequential read bandwidth: the best of a few passes over 256 MiB, GB/s.
pub fn memory_bandwidth() -> f64 {
    let words = 32usize << 20;
    let buf: Vec<u64> = (0..words as u64).collect();
    let mut best = 0f64;
    for _ in 0..4 {
        let t = Instant::now();
        let sum = buf.iter().fold(0u64, |a, &x| a.wrapping_add(x));
        let s = t.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        best = best.max((words * 8) as f64 / s / 1e9);
    }
    best
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// What one scheme's run measured, before it becomes a [`Report`].
#[derive(Default)]
struct Run {
    prepare_ms: f64,
    server_ms: Vec<f64>,
    query_ms: Vec<f64>,
    decode_ms: Vec<f64>,
    batch_ms: f64,
}

impl Run {
    /// The report's timings; the caller fills in what is the scheme's own (sizes, keys).
    fn report(self, scheme: &'static str, board: (u64, u64), batch: u64, memory: f64) -> Report {
        let (rows, row_bytes) = board;
        let queries = self.server_ms.len() as u64;
        let query = median(self.server_ms);
        Report {
            scheme,
            rows,
            row_bytes,
            board_bytes: rows * row_bytes,
            scanned_bytes: 0,
            prepare_ms: self.prepare_ms,
            query_ms: query,
            batch_ms: self.batch_ms,
            batch,
            cores: cores() as u64,
            board_gb_per_s: (rows * row_bytes) as f64 / (query / 1e3) / 1e9,
            memory_gb_per_s: memory,
            up_bytes: 0,
            down_bytes: 0,
            key_bytes: 0,
            key_bytes_per_query: 0,
            refetch_per_round_bytes: 0,
            client_query_ms: median(self.query_ms),
            client_decode_ms: median(self.decode_ms),
            queries,
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `n` jobs on `cores` scoped threads and returns the wall time, ms.
fn on_cores(cores: usize, n: usize, job: &(dyn Fn(usize) + Sync)) -> f64 {
    let t = Instant::now();
    std::thread::scope(|s| {
        for c in 0..cores {
            s.spawn(move || {
                for i in (c..n).step_by(cores) {
                    job(i);
                }
            });
        }
    });
    ms(t)
}

/// YPIR-SP on a board of `rows` random rows of `row_bytes`.
pub fn ypir_sp(rows: u64, row_bytes: u64, queries: u64, batch: u64, memory: f64) -> Result<Report> {
    use valar_ypir::client::YPIRClient;
    use valar_ypir::params::{
        DbRowsCols, PtModulusBits, YPIRSPConfig, params_for_scenario_simplepir_with_config,
    };
    use valar_ypir::server::YServer;

    let params =
        params_for_scenario_simplepir_with_config(rows, row_bytes * 8, YPIRSPConfig::degree_2048());
    let db_rows = 1usize << (params.db_dim_1 + params.poly_len_log2);
    let db_cols = params.instances * params.poly_len;
    let pt_bits = params.pt_modulus_bits() as u64;
    // A row's bytes as elements of `pt_bits` bits; the scheme's columns beyond it are zero.
    let used = (row_bytes * 8).div_ceil(pt_bits) as usize;
    ensure!(used <= db_cols, "a row does not fit the scheme's columns");
    let mut rng = StdRng::seed_from_u64(7);
    let board: Vec<u16> = (0..db_rows * db_cols)
        .map(|k| {
            if k % db_cols < used && ((k / db_cols) as u64) < rows {
                (rng.random::<u64>() % params.pt_modulus) as u16
            } else {
                0
            }
        })
        .collect();
    let server = YServer::<u16>::new(&params, board.iter().copied(), true, false, true);
    let t = Instant::now();
    let offline = server.perform_offline_precomputation_simplepir(None, None, None);
    let mut run = Run {
        prepare_ms: ms(t),
        ..Run::default()
    };

    let client = YPIRClient::new(&params);
    let padded = params.db_rows_padded_simplepir();
    let bits = params.modulus_log2 as u64;
    let (mut up, mut key, mut down) = (0, 0, 0);
    let mut made = Vec::new();
    for _ in 0..queries.max(batch) {
        let row = rng.random_range(0..rows) as usize;
        let t = Instant::now();
        let ((query, pack_key), seed) = client.generate_query_simplepir(row);
        run.query_ms.push(ms(t));
        up = (query.as_slice().len() as u64 * bits).div_ceil(8);
        key = pack_key.as_slice().len() as u64 * bits / 8;
        let mut aligned = valar_spiral::aligned_memory::AlignedMemory64::new(padded);
        aligned.as_mut_slice()[..db_rows].copy_from_slice(&query.as_slice()[..db_rows]);
        made.push((row, aligned, pack_key, seed));
    }
    for (row, aligned, pack_key, seed) in made.iter().take(queries as usize) {
        let t = Instant::now();
        let answer = server.perform_online_computation_simplepir(
            aligned.as_slice(),
            &offline,
            &[pack_key.as_slice()],
            None,
        );
        run.server_ms.push(ms(t));
        down = answer.len() as u64;
        let t = Instant::now();
        let got = client.decode_response_simplepir_raw(*seed, &answer);
        run.decode_ms.push(ms(t));
        let want: Vec<u64> = (0..db_cols)
            .map(|c| u64::from(board[row * db_cols + c]))
            .collect();
        ensure!(got[..db_cols] == want[..], "YPIR-SP: a wrong row came back");
    }
    run.batch_ms = on_cores(cores(), batch as usize, &|i| {
        let (_, aligned, pack_key, _) = &made[i];
        std::hint::black_box(server.perform_online_computation_simplepir(
            aligned.as_slice(),
            &offline,
            &[pack_key.as_slice()],
            None,
        ));
    });
    Ok(Report {
        scanned_bytes: (db_rows * db_cols) as u64 * pt_bits / 8,
        up_bytes: up,
        down_bytes: down,
        key_bytes_per_query: key,
        ..run.report("ypir-sp", (rows, row_bytes), batch, memory)
    })
}

/// Spiral on a board of `rows` random rows of 1 KiB, through `shroud-pir` (the layer the
/// delivery protocol uses: the authors' code and published parameter sets).
pub fn spiral(rows: u64, queries: u64, batch: u64, memory: f64) -> Result<Report> {
    use shroud_pir::{Board, Geometry, ROW_LEN, Reader, ReaderKey};

    let geometry = Geometry::new(rows)?;
    let mut rng = StdRng::seed_from_u64(9);
    let mut rows_bytes = vec![0u8; rows as usize * ROW_LEN];
    rng.fill_bytes(&mut rows_bytes);
    let t = Instant::now();
    let board = Board::prepare(geometry, &rows_bytes)?;
    let mut run = Run {
        prepare_ms: ms(t),
        ..Run::default()
    };
    let reader = Reader::new(geometry, &mut rng);
    let key = ReaderKey::decode(geometry, reader.public_key())?;
    let mut made = Vec::new();
    for _ in 0..queries.max(batch) {
        let row = rng.random_range(0..rows);
        let t = Instant::now();
        let query = reader.query(row)?;
        run.query_ms.push(ms(t));
        made.push((row, query));
    }
    for (row, query) in made.iter().take(queries as usize) {
        let t = Instant::now();
        let answer = board.answer(&key, query)?;
        run.server_ms.push(ms(t));
        let t = Instant::now();
        let got = reader.decode(*row, &answer)?;
        run.decode_ms.push(ms(t));
        let at = *row as usize * ROW_LEN;
        ensure!(
            got == rows_bytes[at..at + ROW_LEN],
            "Spiral: a wrong row came back"
        );
    }
    run.batch_ms = on_cores(cores(), batch as usize, &|i| {
        std::hint::black_box(board.answer(&key, &made[i].1).ok());
    });
    Ok(Report {
        scanned_bytes: geometry.scanned_len(),
        up_bytes: geometry.query_len() as u64,
        down_bytes: geometry.answer_len() as u64,
        key_bytes: geometry.key_len() as u64,
        ..run.report("spiral", (rows, ROW_LEN as u64), batch, memory)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both schemes answer with the right row (each run decodes and checks every answer),
    /// and what they report adds up.
    #[test]
    fn both_schemes_return_the_row_asked_for() {
        let y = ypir_sp(256, 1024, 2, 2, 1.0).expect("ypir-sp");
        let s = spiral(256, 2, 2, 1.0).expect("spiral");
        for r in [&y, &s] {
            assert_eq!(r.board_bytes, 256 * 1024);
            assert!(r.scanned_bytes >= r.board_bytes, "{r:?}");
            assert!(
                r.query_ms > 0.0 && r.up_bytes > 0 && r.down_bytes > 0,
                "{r:?}"
            );
            assert_eq!(r.refetch_per_round_bytes, 0);
        }
        // YPIR-SP's packing key goes with each query; Spiral's public parameters once.
        assert!(y.key_bytes_per_query > 0 && y.key_bytes == 0);
        assert!(s.key_bytes > 0 && s.key_bytes_per_query == 0);
    }
}
