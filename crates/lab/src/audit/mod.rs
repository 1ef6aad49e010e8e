//! `shroud audit`: runs pairs of workloads of equal duration against an embedded stack and
//! checks that what the operators see does not tell them apart.
//!
//! Pairs: idle vs busy, one hot key vs uniform keys, small vs large values (two clients side
//! by side on one stack each), and the collusion view of mail ([`collusion`]: four runs of
//! three mailbox users, nobody sending, Alice writing to Bob, to Carol, to both, with both
//! operators' transcripts joined per client and bit tests of what they read).
//! For each key-value pair, from storage's transcript and the proxy's:
//! - counts: the same slots at storage epoch by epoch, and the same frames at the proxy turn
//!   by turn (a turn is what the client sent and the replies to it) (exact);
//! - sizes: the same bytes per epoch at storage, and the same frame kinds and sizes per turn
//!   at the proxy (exact);
//! - timing: epochs in which the client sent nothing (late) as often on both sides, at
//!   significance `alpha` (which epoch a turn falls in moves with storage's slow batches,
//!   from run to run; `tests/timing.rs` measures the client's part at the socket);
//! - leaves: each side's leaves uniform (chi-squared), and the two sides alike (two-sample
//!   chi-squared and Kolmogorov-Smirnov), at significance `alpha`.
//!
//! The first epoch a client is seen in and its last two (its last two turns at the proxy) are
//! left out: that is when it connects and stops, which every party sees anyway (presence).

pub mod collusion;
pub mod compare;
pub mod frames;
pub mod intersection;
pub mod observe;
pub mod sizes;
pub mod svg;
pub mod workload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

use compare::Verdict;
use shroud_proto::Shape;
use shroud_testkit::stack::Stack;
use workload::Workload;

/// How much to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Paths each side must read, at least (the leaf tests' sample size).
    pub accesses: u64,
    /// Significance level of the statistical tests.
    pub alpha: f64,
    /// Leaf histogram bins.
    pub bins: usize,
}

impl Options {
    /// The full audit: 10^5 paths per side.
    pub fn full() -> Self {
        Options {
            accesses: 100_000,
            alpha: 1e-3,
            bins: 64,
        }
    }

    /// The CI version: 5,000 paths per side, and a smaller alpha so that 28 tests rarely
    /// fail by chance (about 0.3% of runs).
    pub fn short() -> Self {
        Options {
            accesses: 5_000,
            alpha: 1e-4,
            bins: 32,
        }
    }
}

/// One pair's results.
#[derive(Clone, Debug, Serialize)]
pub struct PairReport {
    /// The ORAM mode both sides ran (`path` or `ring`).
    pub oram: String,
    /// Side A's workload.
    pub a: String,
    /// Side B's workload.
    pub b: String,
    /// Every test and its verdict.
    pub verdicts: Vec<Verdict>,
    /// Paths storage saw read, per side.
    pub paths: [usize; 2],
    /// Operations each side's workload completed.
    pub ops: [u64; 2],
    /// Leaf histograms.
    pub leaves_a: Vec<u64>,
    /// Leaf histograms.
    pub leaves_b: Vec<u64>,
    /// Slots per epoch at storage.
    pub slots_a: Vec<u64>,
    /// Slots per epoch at storage.
    pub slots_b: Vec<u64>,
}

/// The whole audit.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The shape the Path ORAM pairs and the collusion view ran.
    pub shape: shroud_proto::Shape,
    /// The shape the Ring ORAM pairs ran.
    pub ring_shape: shroud_proto::Shape,
    /// Paths required per side.
    pub accesses: u64,
    /// Significance level.
    pub alpha: f64,
    /// The pairs.
    pub pairs: Vec<PairReport>,
    /// True if no test detected a difference.
    pub pass: bool,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// The shape the audit runs: N = 2^12 blocks of 64 bytes, K = 48 slots every 150 ms, mail
/// on (a round every 7 epochs, 2 queries, a board of 2^8 rows in outboxes of 2). A client sends its next frames a fixed 2/5 of an epoch after the replies arrive, so
/// a batch that storage answers later than 3/5 of an epoch (a slow fsync: tens of
/// milliseconds here) pushes them into the next epoch, in whichever run it happens, and the
/// exact per-epoch comparison counts that as a difference. At 100 ms epochs that happened in
/// about one run in two; 150 ms leaves 90 ms for storage, at the same slots per second.
pub fn shape() -> Result<Shape> {
    Ok(Shape::new(1 << 12, 64, 4)?
        .with_schedule(48, 150)?
        .with_board(256, 2)?
        .with_mail(7, 2))
}

/// The Ring ORAM shape the audit runs: the same store and mail, the default Z, S and A
/// (32, 64, 46), K = 16 slots every 100 ms. A batch of K accesses reshuffles a bucket after
/// S + 1 - K = 49 reads (the engine's docs); where one comes early, the audit compares the
/// batches holding it apart, and checks storage's counts explain each.
pub fn ring_shape() -> Result<Shape> {
    let c = shroud_oram::ring::RingConfig {
        cached_levels: 4,
        ..shroud_oram::ring::RingConfig::new(1 << 12, 64)
    };
    Ok(Shape::with_ring(c)?
        .with_schedule(16, 100)?
        .with_board(256, 2)?
        .with_mail(7, 2))
}

/// The mode's name in reports.
pub fn oram_name(shape: &Shape) -> &'static str {
    if shape.is_ring() { "ring" } else { "path" }
}

/// How long a side must run to read `accesses` paths at K slots per epoch, with margin.
fn duration(opts: &Options, s: &Shape) -> Duration {
    let per_sec = f64::from(s.slots_per_epoch) * 1000.0 / f64::from(s.epoch_ms);
    Duration::from_secs_f64(opts.accesses as f64 / per_sec * 1.1 + 1.0)
}

/// The ids of the stores created, in order (clients register one after another).
fn created(stack: &Stack) -> Result<Vec<String>> {
    Ok(shroud_storage::Transcript::read(&stack.transcript)?
        .into_iter()
        .filter(|e| e.op == shroud_storage::Op::Create)
        .filter_map(|e| e.stores.first().cloned())
        .collect())
}

/// Everything the two sides' views yield.
struct Sides<'a> {
    a: (&'a observe::StoreView, &'a observe::ConnView),
    b: (&'a observe::StoreView, &'a observe::ConnView),
}

fn judge(
    opts: &Options,
    shape: &shroud_proto::Shape,
    names: (&str, &str),
    ops: [u64; 2],
    s: Sides<'_>,
    extra: Vec<Verdict>,
) -> PairReport {
    let leaves = 1u64 << (shape.path_len + shape.cached_levels - 1);
    let mut verdicts: Vec<Verdict> = compare::storage(s.a.0, s.b.0).into();
    let skip = compare::reshuffled(s.a.0, s.b.0);
    verdicts.extend(compare::proxy(s.a.1, s.b.1, opts.alpha, &skip));
    if shape.is_ring() {
        verdicts.push(compare::ring_pattern(s.a.0, s.b.0));
    }
    verdicts.extend(compare::leaves(
        &s.a.0.leaves,
        &s.b.0.leaves,
        leaves,
        opts.bins,
        opts.alpha,
    ));
    verdicts.extend(extra);
    for (side, v) in [("A", s.a.0), ("B", s.b.0)] {
        verdicts.push(Verdict {
            test: format!("sample size of {side}"),
            pass: v.leaves.len() as u64 >= opts.accesses,
            p_value: None,
            detail: format!("{} paths (at least {})", v.leaves.len(), opts.accesses),
        });
    }
    PairReport {
        oram: oram_name(shape).into(),
        a: names.0.into(),
        b: names.1.into(),
        verdicts,
        paths: [s.a.0.leaves.len(), s.b.0.leaves.len()],
        ops,
        leaves_a: observe::histogram(&s.a.0.leaves, leaves, opts.bins),
        leaves_b: observe::histogram(&s.b.0.leaves, leaves, opts.bins),
        slots_a: s.a.0.epochs.iter().map(|e| e.1).collect(),
        slots_b: s.b.0.epochs.iter().map(|e| e.1).collect(),
    }
}

/// Two clients side by side on one stack, running `a` and `b` for the same time.
async fn kv_pair(opts: &Options, s: Shape, a: Workload, b: Workload) -> Result<PairReport> {
    let stack = Stack::start(s).await.context("starting the stack")?;
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let ua = stack.mail_user(&mut rng).await?;
    let ub = stack.mail_user(&mut rng).await?;
    let until = Instant::now() + duration(opts, &s);
    let (oa, ob) = tokio::join!(a.run(ua.kv.clone(), until), b.run(ub.kv.clone(), until));
    tokio::join!(ua.stop(), ub.stop());
    let stores = observe::stores(&stack.transcript, &stack.shape)?;
    let conns = observe::connections(&stack.proxy_transcript)?;
    let ids = created(&stack)?;
    let view = |i: usize| -> Result<(&observe::StoreView, &observe::ConnView)> {
        let id = ids.get(i).context("a client's store was not created")?;
        Ok((
            stores.get(id).context("no batches for a store")?,
            conns.get(&(i as u64)).context("no frames for a client")?,
        ))
    };
    Ok(judge(
        opts,
        &stack.shape,
        (a.name(), b.name()),
        [oa, ob],
        Sides {
            a: view(0)?,
            b: view(1)?,
        },
        Vec::new(),
    ))
}

/// Runs every pair.
pub async fn run(opts: &Options, mut progress: impl FnMut(&PairReport)) -> Result<Report> {
    let started = Instant::now();
    let mut pairs = Vec::new();
    for s in [shape()?, ring_shape()?] {
        for (a, b) in [
            (Workload::Idle, Workload::Busy),
            (Workload::Hot, Workload::Uniform),
            (Workload::Small, Workload::Large),
        ] {
            let p = kv_pair(opts, s, a, b).await?;
            progress(&p);
            pairs.push(p);
        }
    }
    // The collusion view: four mail runs, each against the one where nobody sends, and
    // Alice→Bob against Alice→Carol.
    let mut runs = Vec::new();
    for scenario in collusion::Scenario::ALL {
        runs.push(collusion::run(opts, scenario).await?);
    }
    let s = shape()?;
    for (x, y) in [(0, 1), (0, 2), (0, 3), (1, 2)] {
        let p = collusion::pair(opts, &s, &runs[x], &runs[y]);
        progress(&p);
        pairs.push(p);
    }
    let pass = pairs.iter().all(|p| p.verdicts.iter().all(|v| v.pass));
    Ok(Report {
        shape: shape()?,
        ring_shape: ring_shape()?,
        accesses: opts.accesses,
        alpha: opts.alpha,
        pairs,
        pass,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes `report.json` and `report.svg` into `dir`.
pub fn write_report(report: &Report, dir: &std::path::Path) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let json = dir.join("audit.json");
    let svg = dir.join("audit.svg");
    std::fs::write(&json, serde_json::to_string_pretty(report)?)?;
    std::fs::write(&svg, svg::report(&report.pairs, report.pass))?;
    Ok((json, svg))
}
