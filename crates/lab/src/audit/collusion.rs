//! The collusion view (issue 13): what storage and the proxy see together, joined per
//! client, over four runs of one script with three mailbox users: (a) nobody sends, (b)
//! Alice writes to Bob, (c) Alice to Carol, (d) Alice to Bob and Carol at once. The
//! operators who run both know which connection is whose, which outbox each connection
//! writes (they open every write with storage's key), and which PIR key answers each
//! connection's queries: the view holds all of it.
//!
//! Per client, each pair of runs must agree on:
//! - counts and sizes: every storage batch of its store, epoch by epoch; every frame turn
//!   by turn at the proxy, with its round frames and answers ([`super::compare`]);
//! - bits: its slot frames and round frames as the proxy reads them, and the rows storage
//!   opens from its outbox writes, at every bit position ([`crate::stats::bit_difference`]:
//!   the two-sample z test, and the exact test of a bit constant on each side with another
//!   value, which finds a flag with the few round frames a short run has);
//!
//! and in every run, storage's rounds have one shape (writes, queries and answers of one
//! size each) the same in all four, every write names its writer's own outbox, and what
//! the bit tests leave out of the frames only counts ([`super::frames`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::SeedableRng;
use rand::rngs::StdRng;
use shroud_client::mailbox::Address;
use shroud_proto::board::{OutboxWrite, WRITE_INFO};
use shroud_proto::proxy::ClientMsg;
use shroud_proto::routing::RoutingKey;
use shroud_proto::{Limits, Shape};
use shroud_proxy::transcript::FrameKind;
use shroud_testkit::stack::{MailUser, Stack};

use super::compare::{self, Verdict};
use super::observe::{self, ConnView, StoreView};
use super::{Options, PairReport, frames, sizes};
use crate::stats;

/// The users of every run, in the order they start.
pub const USERS: [&str; 3] = ["Alice", "Bob", "Carol"];

/// Round frames a client must send in a run, at least: with 18 a side, the exact bit test
/// finds a flag bit, and a fair bit fakes one with a chance of 2^-35 per position (about
/// 10^-5 per comparison of the audit's round frames).
const MIN_ROUNDS: usize = 18;

/// What one run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// (a) Nobody sends.
    Nobody,
    /// (b) Alice writes to Bob.
    AliceToBob,
    /// (c) Alice writes to Carol.
    AliceToCarol,
    /// (d) Alice writes to Bob and Carol at once.
    AliceToBoth,
}

impl Scenario {
    /// The four, in order.
    pub const ALL: [Scenario; 4] = [
        Scenario::Nobody,
        Scenario::AliceToBob,
        Scenario::AliceToCarol,
        Scenario::AliceToBoth,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Nobody => "(a) nobody sends",
            Scenario::AliceToBob => "(b) Alice→Bob",
            Scenario::AliceToCarol => "(c) Alice→Carol",
            Scenario::AliceToBoth => "(d) Alice→Bob+Carol",
        }
    }

    /// The users Alice writes to.
    fn recipients(self) -> &'static [usize] {
        match self {
            Scenario::Nobody => &[],
            Scenario::AliceToBob => &[1],
            Scenario::AliceToCarol => &[2],
            Scenario::AliceToBoth => &[1, 2],
        }
    }
}

/// What the colluding operators saw of one client in one run.
#[derive(Clone, Debug, Default)]
pub struct ClientView {
    /// Storage's batches of its store.
    pub store: StoreView,
    /// The proxy's frames of its connection.
    pub conn: ConnView,
    /// Its slot frames, blanked ([`super::frames`]), the first of each epoch.
    pub slots: Vec<Vec<u8>>,
    /// Its round frames, blanked.
    pub rounds: Vec<Vec<u8>>,
    /// The rows of each of its outbox writes, as storage opens them.
    pub rows: Vec<Vec<u8>>,
    /// Writes that named an outbox other than its own, or that storage could not open.
    pub astray: usize,
}

/// One run, as the operators saw it.
#[derive(Clone, Debug)]
pub struct Run {
    /// What the users did.
    pub scenario: Scenario,
    /// Per user, in [`USERS`] order.
    pub clients: Vec<ClientView>,
    /// Storage's requests with all three clients in them, by shape.
    pub storage: BTreeMap<sizes::RequestSize, usize>,
    /// Whether the blanked fields only count, and if not, why.
    pub blanked: Result<(), String>,
    /// Messages Alice queued.
    pub sent: u64,
    /// Messages received by Bob and Carol.
    pub received: u64,
}

/// Runs `scenario` for long enough for the audit's sample size and [`MIN_ROUNDS`].
pub async fn run(opts: &Options, scenario: Scenario) -> Result<Run> {
    let shape = super::shape()?;
    let stack = Stack::start_keeping_frames(shape)
        .await
        .context("starting the stack")?;
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let mut users: Vec<MailUser> = Vec::new();
    for _ in USERS {
        users.push(stack.mail_user(&mut rng).await?);
    }
    let named: Vec<(&str, &MailUser)> = USERS.iter().copied().zip(&users).collect();
    shroud_testkit::stack::befriend(&named).await?;
    let round = Duration::from_millis(u64::from(shape.epoch_ms) * u64::from(shape.round_epochs));
    let long = super::duration(opts, &shape).max(round * (MIN_ROUNDS as u32 + 3));
    let until = Instant::now() + long;
    let loops = scenario
        .recipients()
        .iter()
        .map(|&r| keep_sending(&users[0], users[r].address, until));
    let sent: u64 = futures::future::join_all(loops).await.into_iter().sum();
    tokio::time::sleep_until(until.into()).await;
    let received = users[1..]
        .iter()
        .map(|u| {
            u.stats()
                .mail_received
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    let outboxes: Vec<u32> = users.iter().map(|u| u.address.outbox).collect();
    for u in users {
        u.stop().await;
    }
    let clients = views(&stack, &outboxes)?;
    let (_, blanked) = frames::inbound(&stack.proxy_transcript)?;
    Ok(Run {
        scenario,
        clients,
        storage: sizes::storage(
            &stack.transcript,
            USERS.len(),
            shape.queries_per_round as usize,
        )?,
        blanked: blanked.check(shape.slots_per_epoch as usize),
        sent,
        received,
    })
}

/// Queues messages of varied lengths to `to` until `until`; returns how many.
async fn keep_sending(from: &MailUser, to: Address, until: Instant) -> u64 {
    let mut sent = 0u64;
    while Instant::now() < until {
        let body = format!("message {sent}: {}", "x".repeat((sent % 7) as usize * 200));
        let send = from.mail.send(&to, body.as_bytes());
        let left = until.saturating_duration_since(Instant::now());
        if let Ok(Ok(())) = tokio::time::timeout(left, send).await {
            sent += 1;
        }
    }
    sent
}

/// Each user's view, from both transcripts and storage's key.
fn views(stack: &Stack, outboxes: &[u32]) -> Result<Vec<ClientView>> {
    let shape = &stack.shape;
    let stores = observe::stores(&stack.transcript, shape)?;
    let conns = observe::connections(&stack.proxy_transcript)?;
    let ids = super::created(stack)?;
    let (frames, _) = frames::inbound(&stack.proxy_transcript)?;
    let clients = frames::clients(&frames);
    let storage = RoutingKey::from_secret(&stack.storage_secret)?;
    let rows_len = shape.outbox_rows as usize * shroud_pir::ROW_LEN;
    let mut out = Vec::new();
    for (i, &outbox) in outboxes.iter().enumerate() {
        let id = ids.get(i).context("a client's store was not created")?;
        let conn = *clients.get(i).context("a client did not register")?;
        let of = |kind| -> Vec<Vec<u8>> {
            frames
                .get(&(conn, kind))
                .map(|f| f.iter().map(|(_, b)| b.clone()).collect())
                .unwrap_or_default()
        };
        // One slot frame per epoch: the K paths of an epoch share their top buckets, sent
        // with the same sealed bytes in each slot that carries them, so the slots of one
        // epoch are not independent samples (the z test would count each copy); epochs are.
        let mut slots = BTreeMap::new();
        for (epoch, bytes) in frames.get(&(conn, FrameKind::Slot)).into_iter().flatten() {
            slots.entry(*epoch).or_insert_with(|| bytes.clone());
        }
        let mut view = ClientView {
            store: stores.get(id).cloned().context("no batches for a store")?,
            conn: conns.get(&(i as u64)).cloned().context("no frames")?,
            slots: slots.into_values().collect(),
            rounds: of(FrameKind::Round),
            ..ClientView::default()
        };
        for f in &view.rounds {
            let Ok(ClientMsg::Round(r)) = shroud_proto::decode(f, Limits::default()) else {
                anyhow::bail!("a round frame that is not one");
            };
            let opened = storage
                .open_request(WRITE_INFO, &r.write.0)
                .ok()
                .and_then(|(plain, _)| OutboxWrite::from_bytes(&plain, rows_len));
            match opened {
                Some(w) if w.outbox == u64::from(outbox) => view.rows.push(w.rows),
                _ => view.astray += 1,
            }
        }
        out.push(view);
    }
    Ok(out)
}

/// The bit tests of one kind of string, `a`'s against `b`'s: no position past the
/// Bonferroni |z| at `family_p`, and none constant on each side with another value.
fn bits(test: String, a: &[Vec<u8>], b: &[Vec<u8>], family_p: f64) -> Verdict {
    let lens = |x: &[Vec<u8>]| {
        x.iter()
            .map(Vec::len)
            .collect::<std::collections::BTreeSet<_>>()
    };
    let same_len = lens(a) == lens(b) && lens(a).len() == 1;
    if a.is_empty() || b.is_empty() || !same_len {
        return Verdict {
            test,
            pass: false,
            p_value: None,
            detail: format!(
                "{} and {} strings, of lengths {:?} and {:?}",
                a.len(),
                b.len(),
                lens(a),
                lens(b)
            ),
        };
    }
    let d = stats::bit_difference(a, b);
    let limit = stats::bonferroni_z(d.positions, family_p, 5.0);
    let chance = d.opposite_chance();
    Verdict {
        test,
        pass: d.max_z < limit && (d.opposite.is_none() || chance > family_p),
        p_value: None,
        detail: format!(
            "{} and {} strings of {} bits: largest |z| {:.1} at bit {} (limit {limit:.1}); \
             a bit constant on each side with another value: {:?} (chance {chance:.1e})",
            a.len(),
            b.len(),
            d.positions,
            d.max_z,
            d.position,
            d.opposite,
        ),
    }
}

/// Every test of one pair of runs.
pub fn pair(opts: &Options, shape: &Shape, x: &Run, y: &Run) -> PairReport {
    let mut verdicts = Vec::new();
    for (n, name) in USERS.iter().enumerate() {
        let (a, b) = (&x.clients[n], &y.clients[n]);
        let named = |mut v: Verdict| {
            v.test = format!("{name}: {}", v.test);
            v
        };
        verdicts.extend(compare::storage(&a.store, &b.store).map(named));
        let skip = compare::reshuffled(&a.store, &b.store);
        verdicts.extend(compare::proxy(&a.conn, &b.conn, opts.alpha, &skip).map(named));
        for (what, sa, sb) in [
            ("slot frames", &a.slots, &b.slots),
            ("round frames", &a.rounds, &b.rounds),
            ("rows storage opened", &a.rows, &b.rows),
        ] {
            verdicts.push(bits(
                format!("{name}: {what} alike at every bit position"),
                sa,
                sb,
                opts.alpha,
            ));
        }
        verdicts.push(Verdict {
            test: format!("{name}: round frames enough for the bit tests"),
            pass: a.rounds.len().min(b.rounds.len()) >= MIN_ROUNDS,
            p_value: None,
            detail: format!(
                "{} and {} (at least {MIN_ROUNDS})",
                a.rounds.len(),
                b.rounds.len()
            ),
        });
    }
    for op in [
        shroud_storage::Op::Batch,
        shroud_storage::Op::Round,
        shroud_storage::Op::Answer,
    ] {
        let (u, v) = (sizes::usual(&x.storage, op), sizes::usual(&y.storage, op));
        verdicts.push(Verdict {
            test: format!("storage: every {op} request and response of one size in both runs"),
            pass: u.is_some() && u.as_ref().map(|u| &u.0) == v.as_ref().map(|v| &v.0),
            p_value: None,
            detail: format!("{u:?} vs {v:?}"),
        });
    }
    for run in [x, y] {
        let astray: Vec<usize> = run.clients.iter().map(|c| c.astray).collect();
        verdicts.push(Verdict {
            test: format!(
                "{}: every write storage opened names its writer's own outbox",
                run.scenario.name()
            ),
            pass: astray.iter().all(|&n| n == 0),
            p_value: None,
            detail: format!("writes astray, per user: {astray:?}"),
        });
        verdicts.push(Verdict {
            test: format!(
                "{}: the frame numbers and nonce counters left out only count",
                run.scenario.name()
            ),
            pass: run.blanked.is_ok(),
            p_value: None,
            detail: run.blanked.clone().err().unwrap_or_else(|| "yes".into()),
        });
        verdicts.push(Verdict {
            test: format!("{}: the script ran", run.scenario.name()),
            pass: run.scenario.recipients().is_empty() == (run.sent == 0)
                && (run.sent == 0 || run.received > 0),
            p_value: None,
            detail: format!("{} queued, {} received", run.sent, run.received),
        });
    }
    let leaves = 1u64 << (shape.path_len + shape.cached_levels - 1);
    let alice = (&x.clients[0].store, &y.clients[0].store);
    PairReport {
        oram: super::oram_name(shape).into(),
        a: x.scenario.name().into(),
        b: y.scenario.name().into(),
        verdicts,
        paths: [alice.0.leaves.len(), alice.1.leaves.len()],
        ops: [x.sent, y.sent],
        leaves_a: observe::histogram(&alice.0.leaves, leaves, opts.bins),
        leaves_b: observe::histogram(&alice.1.leaves, leaves, opts.bins),
        slots_a: alice.0.epochs.iter().map(|e| e.1).collect(),
        slots_b: alice.1.epochs.iter().map(|e| e.1).collect(),
    }
}
