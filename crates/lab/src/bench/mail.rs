//! `shroud bench mail`: what mail delivery costs (issue 13, "What it must reach"), in three
//! measurements of one run:
//!
//! 1. **Server work per round against users**, measured: storage's own round code
//!    (`shroud_storage::delivery::Delivery` on a sled board of the default shape) takes one
//!    round of `users` sealed outbox writes and answers their `users x Q` queries in requests
//!    of at most 256, as the proxy sends them; wall time and the process's CPU time, for
//!    each user count asked. A least-squares line through the points gives the cost of a
//!    round of N users, and from it the most users whose rounds finish within a round's
//!    length (`users`: derived from the measured line, never from a run of that many users;
//!    `measured_up_to` says how far the measurements went).
//! 2. **Latency**, measured: two mailbox clients on a real proxy and storage (in-process,
//!    TLS on loopback, a small board so that rounds are short) in an active conversation,
//!    each message answered when it arrives; latency in rounds is the time from `send` to
//!    the recipient storing it, over the round's length (storage there is busy about half
//!    of each round answering, as it is at the sustained user counts below). Seconds at a
//!    round length are those rounds times the length.
//! 3. **Bytes per client per day**, exact: the encoded round frame and its answer at the
//!    default shape, times the rounds in a day, and the PIR key once a day.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use serde::Serialize;
use shroud_pir::{Geometry, ROW_LEN, Reader};
use shroud_proto::Shape;
use shroud_proto::board::{OutboxWrite, PirBytes, WRITE_INFO};
use shroud_proto::proxy::{ClientMsg, ProxyMsg, RoundDone, RoundFrame};
use shroud_proto::routing::RoutingKey;
use shroud_proto::sealed::{Sealed, seal_request};
use shroud_storage::Backend;
use shroud_storage::board::MailBoard;
use shroud_storage::delivery::Delivery;

/// Queries per storage request, as the proxy's round task sends them.
const QUERIES_PER_REQUEST: usize = 256;

/// Storage's cost of one round of `users` users, measured.
#[derive(Clone, Debug, Serialize)]
pub struct ServerPoint {
    /// Users (each one outbox write and Q queries).
    pub users: u64,
    /// Taking the writes and preparing the board for PIR, wall ms.
    pub write_ms: f64,
    /// Answering the queries, wall ms (on every core).
    pub answer_ms: f64,
    /// The process's CPU time for the whole round, ms.
    pub cpu_ms: f64,
}

/// One line of `shroud bench mail --json`: one round length.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The round's length, ms.
    pub round_ms: u64,
    /// The most users whose rounds storage finishes within the round (from the measured
    /// line; see `measured_up_to`).
    pub users: u64,
    /// True: `users` rounds fit the round length on the measured line.
    pub sustained: bool,
    /// How `users` was found.
    pub method: &'static str,
    /// The largest user count actually run.
    pub measured_up_to: u64,
    /// Message latency in an active conversation, median, rounds (measured).
    pub latency_p50_rounds: f64,
    /// The 99th percentile, rounds.
    pub latency_p99_rounds: f64,
    /// The median in seconds at this round length (the measured rounds times the length).
    pub latency_p50_s: f64,
    /// The 99th percentile, seconds.
    pub latency_p99_s: f64,
    /// Storage's wall time for a round of `users` users, ms (the line).
    pub server_round_ms: f64,
    /// Storage's CPU time for a round of `users` users, ms (the CPU line).
    pub server_cpu_ms: f64,
    /// Bytes a client sends per day for mail (round frames, and its PIR key once).
    pub client_bytes_per_day_up: u64,
    /// Bytes a client receives per day for mail (round answers).
    pub client_bytes_per_day_down: u64,
    /// Bytes of the client's PIR key (sent once per connection; counted once a day above).
    pub key_bytes: u64,
    /// Bytes of one round frame up, and of its answer down.
    pub round_bytes: (u64, u64),
    /// The shape: board rows, rows per outbox, queries per round.
    pub board_rows: u64,
    /// Rows per outbox (R).
    pub outbox_rows: u32,
    /// Queries per round (Q).
    pub queries: u32,
}

/// The process's CPU time (user and system), from /proc.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command (which may hold spaces): state is field 3; utime and stime
    // are fields 14 and 15, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Storage's cost of one round of `users` users at `shape`, measured on its own round code.
pub fn server_round(shape: &Shape, users: usize) -> Result<ServerPoint> {
    let dir = tempfile::tempdir()?;
    let backend = shroud_storage::SledBackend::open(dir.path())?;
    let geometry = Geometry::new(shape.board_rows)?;
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let routing = RoutingKey::generate(&mut rng);
    let mut board = MailBoard::open(&backend, geometry, shape.outbox_rows)?;
    let capabilities: Vec<shroud_proto::Capability> = (0..users)
        .map(|_| shroud_proto::Capability(rng.random()))
        .collect();
    for c in &capabilities {
        board.create(&backend, c)?;
    }
    backend.flush()?;
    let delivery = Delivery::new(board, shape.outbox_rows, users);
    let readers: Vec<Reader> = (0..users)
        .map(|_| Reader::new(geometry, &mut rng))
        .collect();
    for (i, r) in readers.iter().enumerate() {
        delivery
            .keep_key(session(i), r.public_key())
            .map_err(|e| anyhow::anyhow!("key refused: {e:?}"))?;
    }
    let rows_len = shape.outbox_rows as usize * ROW_LEN;
    let mut expected = Vec::with_capacity(users);
    let writes: Vec<Vec<u8>> = capabilities
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut rows = vec![0u8; rows_len];
            rng.fill_bytes(&mut rows);
            expected.push(rows.clone());
            let w = OutboxWrite {
                outbox: i as u64,
                capability: c.clone(),
                rows,
            };
            seal_request(&routing.public(), WRITE_INFO, &w.to_bytes(), &mut rng)
                .map(|(sealed, _)| sealed)
                .map_err(|e| anyhow::anyhow!("sealing a write: {e}"))
        })
        .collect::<Result<_>>()?;
    // Every user reads Q outboxes (its own first, to check the answer).
    let q = shape.queries_per_round as usize;
    let mut queries = Vec::with_capacity(users * q);
    for (i, r) in readers.iter().enumerate() {
        for k in 0..q {
            let outbox = (i + k) % users;
            let row = outbox as u64 * u64::from(shape.outbox_rows);
            queries.push((session(i), r.query(row)?));
        }
    }
    let (cpu0, t0) = (cpu_time(), Instant::now());
    delivery.write_round(&backend, &routing, &writes)?;
    let write_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let mut answers = Vec::with_capacity(queries.len());
    for chunk in queries.chunks(QUERIES_PER_REQUEST) {
        answers.extend(
            delivery
                .answer(chunk)
                .map_err(|e| anyhow::anyhow!("answering: {e:?}"))?,
        );
    }
    let answer_ms = t1.elapsed().as_secs_f64() * 1e3;
    let cpu_ms = (cpu_time() - cpu0).as_secs_f64() * 1e3;
    // The first user's first answer is its own outbox's rows.
    let got = readers[0].decode_rows(0, u64::from(shape.outbox_rows), &answers[0])?;
    ensure!(got == expected[0], "a PIR answer decoded to the wrong rows");
    Ok(ServerPoint {
        users: users as u64,
        write_ms,
        answer_ms,
        cpu_ms,
    })
}

fn session(i: usize) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[..8].copy_from_slice(&(i as u64).to_be_bytes());
    s
}

/// The least-squares line `a + b x` through `(x, y)` points.
fn line(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - b * mx, b)
}

/// Bytes of a client's round frame and of its answer at `shape`, as encoded on the wire
/// (TLS records add a few dozen bytes each).
pub fn round_bytes(shape: &Shape) -> Result<(u64, u64)> {
    let limits = shroud_proto::Limits::default();
    let frame = ClientMsg::Round(RoundFrame {
        seq: 1,
        round: 1,
        write: Sealed(vec![0; shape.write_len as usize]),
        queries: vec![
            PirBytes(vec![0; shape.query_len as usize]);
            shape.queries_per_round as usize
        ],
    });
    let done = ProxyMsg::RoundDone(RoundDone {
        seq: 1,
        round: 1,
        written: Sealed(vec![0; shroud_proto::board::WRITE_STATUS_LEN]),
        answers: vec![
            PirBytes(vec![0; shape.answer_len as usize]);
            shape.queries_per_round as usize
        ],
    });
    Ok((
        shroud_proto::encode(&frame, limits)?.len() as u64 + 4,
        shroud_proto::encode(&done, limits)?.len() as u64 + 4,
    ))
}

/// Message latency in an active conversation, in rounds, from a live run of `messages`
/// messages: (median, 99th percentile).
pub async fn latency_rounds(messages: usize) -> Result<(f64, f64)> {
    use futures::StreamExt;
    let shape = Shape::new(256, 256, 2)?
        .with_schedule(1, 50)?
        .with_board(256, 2)?
        .with_mail(40, 3);
    let round = Duration::from_millis(u64::from(shape.epoch_ms * shape.round_epochs));
    let stack = shroud_testkit::stack::Stack::start(shape).await?;
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let alice = stack.mail_user(&mut rng).await?;
    let bob = stack.mail_user(&mut rng).await?;
    shroud_testkit::stack::befriend(&[("alice", &alice), ("bob", &bob)]).await?;
    let mut at_bob = Box::pin(bob.mail.recv());
    let mut at_alice = Box::pin(alice.mail.recv());
    let mut rounds = Vec::with_capacity(messages);
    // Turns: Alice writes, Bob answers when it arrives (an active conversation).
    for i in 0..messages {
        let (from, to, inbox) = if i % 2 == 0 {
            (&alice, &bob, &mut at_bob)
        } else {
            (&bob, &alice, &mut at_alice)
        };
        let sent = Instant::now();
        from.mail
            .send(&to.address, format!("turn {i}").as_bytes())
            .await?;
        loop {
            let m = tokio::time::timeout(round * 40, inbox.next())
                .await
                .context("a message did not arrive in 40 rounds")?
                .context("the mailbox stopped")?;
            if !m.outgoing {
                break;
            }
        }
        rounds.push(sent.elapsed().as_secs_f64() / round.as_secs_f64());
    }
    for u in [alice, bob] {
        u.stop().await;
    }
    rounds.sort_by(f64::total_cmp);
    let at = |p: usize| rounds[(rounds.len() * p / 100).min(rounds.len() - 1)];
    Ok((at(50), at(99)))
}

/// The whole benchmark: server rounds at `users`, latency over `messages`, bytes; one
/// report per round length.
pub async fn run(users: &[usize], messages: usize, round_ms: &[u64]) -> Result<Vec<Report>> {
    let shape = Shape::default();
    let mut points = Vec::new();
    for &n in users {
        let s = shape;
        let p = tokio::task::spawn_blocking(move || server_round(&s, n)).await??;
        crate::outln!(
            "  server, {} users: writes {:.0} ms, answers {:.0} ms, CPU {:.0} ms",
            p.users,
            p.write_ms,
            p.answer_ms,
            p.cpu_ms
        );
        points.push(p);
    }
    ensure!(
        points.len() >= 2,
        "at least two user counts are needed for a line"
    );
    let (wall_a, wall_b) = line(
        &points
            .iter()
            .map(|p| (p.users as f64, p.write_ms + p.answer_ms))
            .collect::<Vec<_>>(),
    );
    let (cpu_a, cpu_b) = line(
        &points
            .iter()
            .map(|p| (p.users as f64, p.cpu_ms))
            .collect::<Vec<_>>(),
    );
    let (p50, p99) = latency_rounds(messages).await?;
    let (up, down) = round_bytes(&shape)?;
    let measured_up_to = points.iter().map(|p| p.users).max().unwrap_or(0);
    Ok(round_ms
        .iter()
        .map(|&ms| {
            let fits = ((ms as f64 - wall_a) / wall_b.max(1e-9)).floor().max(0.0) as u64;
            let users = fits.min(shape.outboxes());
            let round_wall = wall_a + wall_b * users as f64;
            let rounds_per_day = 86_400_000 / ms;
            Report {
                round_ms: ms,
                users,
                sustained: users > 0,
                method: "the most users whose measured round cost (a least-squares line over the measured user counts) fits the round",
                measured_up_to,
                latency_p50_rounds: p50,
                latency_p99_rounds: p99,
                latency_p50_s: p50 * ms as f64 / 1e3,
                latency_p99_s: p99 * ms as f64 / 1e3,
                server_round_ms: round_wall,
                server_cpu_ms: cpu_a + cpu_b * users as f64,
                client_bytes_per_day_up: up * rounds_per_day + u64::from(shape.key_len),
                client_bytes_per_day_down: down * rounds_per_day,
                key_bytes: u64::from(shape.key_len),
                round_bytes: (up, down),
                board_rows: shape.board_rows,
                outbox_rows: shape.outbox_rows,
                queries: shape.queries_per_round,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_fits_points_on_a_line() {
        let (a, b) = line(&[(1.0, 5.0), (2.0, 7.0), (4.0, 11.0)]);
        assert!((a - 3.0).abs() < 1e-9 && (b - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_round_of_two_users_answers_correctly() {
        let shape = Shape::default()
            .with_board(256, 2)
            .expect("board")
            .with_mail(30, 2);
        let p = server_round(&shape, 2).expect("round");
        assert_eq!(p.users, 2);
        assert!(p.answer_ms > 0.0);
        let (up, down) = round_bytes(&shape).expect("bytes");
        assert!(up > u64::from(shape.write_len) + 2 * u64::from(shape.query_len));
        assert!(down > 2 * u64::from(shape.answer_len));
    }
}
