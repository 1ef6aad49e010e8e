//! `shroud bench contacts`: the "many contacts" and "long messages" goals of issue 13,
//! measured live (the plan's own simulation is `shroud_client::mailbox::plan`'s tests).
//!
//! On a real proxy and storage (in-process, TLS on loopback, a 2^8-row board so that
//! rounds are short: its records hold R = 2 rows per outbox, the default's 4 need 2^13
//! rows; here only Bob writes to several contacts, so rows are never what a message waits
//! for; Q = 3 queries a round, the default):
//! Bob has `contacts` contacts. Alice is his active conversation (she writes, he answers
//! when her message arrives, and so on); `senders` others each write to him now and then
//! (a message every 8 to 24 rounds); the rest never write (their outboxes are read in the
//! round robin all the same). Latency is the time from `send` to the recipient storing the
//! message, in rounds of the run's length. Then Alice sends Bob messages of k chunks, one
//! at a time, each after a turn of their conversation, and the rounds each takes are
//! recorded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use shroud_client::mailbox::chunk::PAYLOAD_LEN;
use shroud_client::mailbox::{Account, Address};
use shroud_proto::Shape;
use shroud_testkit::stack::{MailUser, Stack};
use tokio::sync::Notify;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Bob's contacts in all.
    pub contacts: usize,
    /// Of them, the ones who write to him now and then (besides Alice).
    pub senders: usize,
    /// Rounds of the many-contacts phase.
    pub rounds: u64,
    /// A round's length, ms (storage must answer every user's queries within it).
    pub round_ms: u64,
    /// Chunk counts of the long messages.
    pub long: Vec<usize>,
}

/// The outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Bob's contacts.
    pub contacts: usize,
    /// Contacts writing now and then.
    pub senders: usize,
    /// Queries per round (Q) and rows per outbox (R).
    pub queries: u32,
    /// Rows per outbox.
    pub outbox_rows: u32,
    /// A round's length, ms.
    pub round_ms: u64,
    /// Messages of the active conversation measured (both ways).
    pub active_messages: usize,
    /// Their latency, median and 99th percentile, rounds.
    pub active_p50_rounds: f64,
    /// The 99th percentile.
    pub active_p99_rounds: f64,
    /// Messages from the other senders measured.
    pub other_messages: usize,
    /// Their latency, median, rounds.
    pub other_p50_rounds: f64,
    /// The 99th percentile.
    pub other_p99_rounds: f64,
    /// The slowest.
    pub other_max_rounds: f64,
    /// Long messages: (chunks, rounds to arrive).
    pub long: Vec<(usize, f64)>,
}

/// Messages sent and not yet stored by their recipient: body to when it was sent.
#[derive(Default)]
struct InFlight {
    sent: Mutex<HashMap<String, Instant>>,
    /// Arrivals: body to rounds taken.
    arrived: Mutex<HashMap<String, f64>>,
    notify: Notify,
}

impl InFlight {
    async fn send(&self, from: &MailUser, to: &Address, body: String) -> Result<()> {
        self.sent.lock().insert(body.clone(), Instant::now());
        from.mail.send(to, body.as_bytes()).await?;
        Ok(())
    }

    /// Waits until `body` arrives (or `limit` passes); its rounds.
    async fn arrival(&self, body: &str, limit: Duration) -> Result<f64> {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            if let Some(r) = self.arrived.lock().get(body) {
                return Ok(*r);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            ensure!(!left.is_zero(), "{body:?} did not arrive in {limit:?}");
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

/// Records every message `user` stores from a contact, against when it was sent.
fn watch(user: &MailUser, flight: Arc<InFlight>, round: Duration) -> tokio::task::JoinHandle<()> {
    let mut stream = Box::pin(user.mail.recv());
    tokio::spawn(async move {
        while let Some(m) = stream.next().await {
            if m.outgoing {
                continue;
            }
            let body = String::from_utf8_lossy(&m.body).into_owned();
            let sent = flight.sent.lock().get(&body).copied();
            if let Some(at) = sent {
                let rounds = at.elapsed().as_secs_f64() / round.as_secs_f64();
                flight.arrived.lock().insert(body, rounds);
                flight.notify.notify_waiters();
            }
        }
    })
}

fn percentile(v: &mut [f64], p: usize) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[(v.len() * p / 100).min(v.len() - 1)]
}

/// Runs the benchmark.
pub async fn run(opts: &Options) -> Result<Report> {
    ensure!(
        opts.contacts > opts.senders,
        "Bob needs Alice and the senders among his contacts"
    );
    let epoch_ms = 50u32;
    let round_epochs = (opts.round_ms / u64::from(epoch_ms)).max(1) as u32;
    let shape = Shape::new(256, 256, 2)?
        .with_schedule(1, epoch_ms)?
        .with_board(256, 2)?
        .with_mail(round_epochs, 3);
    ensure!(
        opts.contacts as u64 <= shape.outboxes(),
        "at most {} contacts on this board",
        shape.outboxes()
    );
    let round = Duration::from_millis(u64::from(epoch_ms) * u64::from(round_epochs));
    let stack = Stack::start(shape).await.context("starting the stack")?;
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let bob = stack.mail_user(&mut rng).await?;
    let alice = stack.mail_user(&mut rng).await?;
    let mut senders = Vec::new();
    for _ in 0..opts.senders {
        senders.push(stack.mail_user(&mut rng).await?);
    }
    // Bob's contacts: Alice, the senders, and contacts who never write (outboxes nobody
    // writes, from the top of the board down), read in his round robin all the same.
    bob.mail.add_contact("alice", alice.address).await?;
    alice.mail.add_contact("bob", bob.address).await?;
    for (i, s) in senders.iter().enumerate() {
        bob.mail.add_contact(&format!("s{i}"), s.address).await?;
        s.mail.add_contact("bob", bob.address).await?;
    }
    for i in 0..opts.contacts - 1 - opts.senders {
        let outbox = (shape.outboxes() - 1 - i as u64) as u32;
        let quiet = Account::generate(&mut rng)
            .with_outbox(outbox)
            .address()
            .context("an address")?;
        bob.mail.add_contact(&format!("q{i}"), quiet).await?;
    }
    let at_bob = Arc::new(InFlight::default());
    let at_alice = Arc::new(InFlight::default());
    let watchers = [
        watch(&bob, at_bob.clone(), round),
        watch(&alice, at_alice.clone(), round),
    ];
    let limit = round * 60;
    let until = Instant::now() + round * opts.rounds as u32;
    // The active conversation, turn by turn.
    let conversation = async {
        let (mut active, mut i) = (Vec::new(), 0u64);
        while Instant::now() < until {
            let body = format!("alice {i}");
            at_bob.send(&alice, &bob.address, body.clone()).await?;
            active.push(at_bob.arrival(&body, limit).await?);
            let body = format!("bob {i}");
            at_alice.send(&bob, &alice.address, body.clone()).await?;
            active.push(at_alice.arrival(&body, limit).await?);
            i += 1;
        }
        anyhow::Ok(active)
    };
    // The others, now and then.
    let to_bob = bob.address;
    let others = senders.iter().enumerate().map(|(s, user)| {
        let at_bob = at_bob.clone();
        let mut rng = StdRng::from_rng(&mut rand::rng());
        async move {
            let (mut out, mut i) = (Vec::new(), 0u64);
            while Instant::now() < until {
                tokio::time::sleep(round * rng.random_range(8..=24u32)).await;
                if Instant::now() >= until {
                    break;
                }
                let body = format!("s{s} {i}");
                at_bob.send(user, &to_bob, body.clone()).await?;
                out.push(at_bob.arrival(&body, limit).await?);
                i += 1;
            }
            anyhow::Ok(out)
        }
    });
    let (active, others) = tokio::join!(conversation, futures::future::join_all(others));
    let mut active = active?;
    let mut other: Vec<f64> = Vec::new();
    for o in others {
        other.extend(o?);
    }
    // Long messages, Alice to Bob, one at a time, each after a turn of the conversation
    // (so that it is the active one).
    let mut long = Vec::new();
    for &k in &opts.long {
        for (from, to, flight) in [(&alice, &bob, &at_bob), (&bob, &alice, &at_alice)] {
            let body = format!("before {k} from {}", from.address.outbox);
            flight.send(from, &to.address, body.clone()).await?;
            flight.arrival(&body, limit).await?;
        }
        let mut body = format!("long {k} ");
        body.push_str(&"x".repeat(PAYLOAD_LEN * k - body.len() - 1));
        at_bob.send(&alice, &bob.address, body.clone()).await?;
        long.push((k, at_bob.arrival(&body, limit).await?));
    }
    for w in watchers {
        w.abort();
    }
    let mut users = vec![bob, alice];
    users.extend(senders);
    for u in users {
        u.stop().await;
    }
    let active_messages = active.len();
    let other_messages = other.len();
    Ok(Report {
        contacts: opts.contacts,
        senders: opts.senders,
        queries: shape.queries_per_round,
        outbox_rows: shape.outbox_rows,
        round_ms: round.as_millis() as u64,
        active_messages,
        active_p50_rounds: percentile(&mut active, 50),
        active_p99_rounds: percentile(&mut active, 99),
        other_messages,
        other_p50_rounds: percentile(&mut other, 50),
        other_p99_rounds: percentile(&mut other, 99),
        other_max_rounds: other.iter().copied().fold(f64::NAN, f64::max),
        long,
    })
}
