//! The mail part of `shroud demo`: Alice, Bob and Carol on one proxy and one storage server,
//! run twice (Alice writes to Bob, then to Carol), and what each operator saw of each run.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::audit::sizes::{self, RequestSize};
use shroud_proto::Shape;
use shroud_testkit::stack::{MailUser, Stack};

/// What one run showed.
struct Run {
    label: &'static str,
    took: Duration,
    batch: (RequestSize, usize, usize),
    round: (RequestSize, usize, usize),
    answer: (RequestSize, usize, usize),
    proxy: [u64; 4],
}

async fn wait_for(u: &MailUser, from: &shroud_client::mailbox::Address, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = u.mail.conversation(from).await?.len();
        if got >= n {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "only {got} of {n} messages arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_once(shape: Shape, to_carol: bool, seconds: f64) -> Result<Run> {
    let started = Instant::now();
    let stack = Stack::start(shape)
        .await
        .context("starting storage and proxy")?;
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let alice = stack.mail_user(&mut rng).await?;
    let bob = stack.mail_user(&mut rng).await?;
    let carol = stack.mail_user(&mut rng).await?;
    shroud_testkit::stack::befriend(&[("alice", &alice), ("bob", &bob), ("carol", &carol)]).await?;
    let to = if to_carol { &carol } else { &bob };
    let long: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let sent = Instant::now();
    alice.mail.send(&to.address, b"lunch?").await?;
    alice.mail.send(&to.address, &long).await?;
    wait_for(to, &alice.address, 2).await?;
    let took = sent.elapsed();
    // Equal durations for both runs.
    let end = started + Duration::from_secs_f64(seconds);
    tokio::time::sleep(end.saturating_duration_since(Instant::now())).await;
    let stats = shroud_proxy::fetch_stats(stack.proxy, &stack.tls.client()?).await?;
    for u in [alice, bob, carol] {
        u.stop().await;
    }
    let seen = sizes::storage(&stack.transcript, 3, shape.queries_per_round as usize)?;
    Ok(Run {
        label: if to_carol {
            "alice->carol"
        } else {
            "alice->bob"
        },
        took,
        batch: sizes::usual(&seen, shroud_storage::Op::Batch).context("no batches")?,
        round: sizes::usual(&seen, shroud_storage::Op::Round).context("no rounds")?,
        answer: sizes::usual(&seen, shroud_storage::Op::Answer).context("no answers")?,
        proxy: sizes::proxy(&stats),
    })
}

/// Runs both mail runs, `seconds` each, and prints the operators' views side by side.
pub async fn run(seconds: f64) -> Result<()> {
    let shape = Shape::new(1 << 10, 1024, 3)?
        .with_schedule(1, 100)?
        .with_board(256, 2)?
        .with_mail(20, 2);
    crate::outln!(
        "\nMail: Alice, Bob and Carol on one proxy and one storage server; every {} ms each writes its own outbox ({} rows of 1 KiB) and sends {} PIR queries, real or dummy.",
        shape.epoch_ms * shape.round_epochs,
        shape.outbox_rows,
        shape.queries_per_round
    );
    let mut runs = Vec::new();
    for to_carol in [false, true] {
        let r = run_once(shape, to_carol, seconds).await?;
        crate::outln!(
            "  {}: \"lunch?\" and a 3,000-byte message, sealed, sent and stored in the recipient's history in {:.1} s",
            r.label,
            r.took.as_secs_f64()
        );
        runs.push(r);
    }
    crate::outln!("\nWhat the operators saw of each run (epochs with all three connected):");
    crate::outln!(
        "  {:<13} {:>7} {:>22} {:>22} {:>24} {:>12} {:>14}",
        "run",
        "rounds",
        "storage batch in/out",
        "storage round in/out",
        "storage answers in/out",
        "proxy slot",
        "proxy round"
    );
    for r in &runs {
        crate::outln!(
            "  {:<13} {:>7} {:>22} {:>22} {:>24} {:>12} {:>14}",
            r.label,
            r.round.1,
            format!("{} / {} B", r.batch.0.1, r.batch.0.2),
            format!("{} / {} B", r.round.0.1, r.round.0.2),
            format!("{} / {} B", r.answer.0.1, r.answer.0.2),
            format!("{} B", r.proxy[0]),
            format!("{} B", r.proxy[2]),
        );
    }
    let same = runs[0].batch.0 == runs[1].batch.0
        && runs[0].round.0 == runs[1].round.0
        && runs[0].answer.0 == runs[1].answer.0
        && runs[0].proxy == runs[1].proxy
        && runs
            .iter()
            .all(|r| r.proxy[0] == r.proxy[1] && r.proxy[2] == r.proxy[3]);
    crate::outln!(
        "  Same shape: {} (one batch per epoch, one round of writes and one of queries per round, every request, response and client frame of one size; \
         {} and {} requests of other sizes at the edges, when clients connected).",
        if same { "yes" } else { "NO" },
        runs[0].round.2 + runs[0].answer.2 + runs[0].batch.2,
        runs[1].round.2 + runs[1].answer.2 + runs[1].batch.2
    );
    crate::outln!(
        "  What storage does learn: which outboxes were written each round (whose owners were online), never whom a row is for or which rows a query read. See docs/mail-delivery.md."
    );
    ensure!(same, "the two runs looked different");
    Ok(())
}
