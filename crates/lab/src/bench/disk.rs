//! `shroud bench disk`: what a `shroud agent` process writes to its own disk per epoch
//! (issue 14, "The client's own disk"), idle and busy with SETs, measured from
//! `/proc/PID/io` (`write_bytes`: everything the process made the kernel write, the state's
//! sealed records and pages and the state database's own log alike), with what the client
//! handed to its state database beside it (INFO's `state_bytes_written`).
//!
//! Storage and the proxy run in this process; the agent is a child process of the `shroud`
//! binary named, so that its counters are its own. Bytes per epoch do not depend on the
//! epoch's length, so the epochs here are short (100 ms) and the report scales them to a
//! day at the default epoch.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use redis_protocol::resp2::types::OwnedFrame;
use serde::Serialize;
use shroud_proto::Shape;
use shroud_testkit::stack::Stack;
use tokio::net::TcpStream;

/// One store's disk writes.
#[derive(Clone, Debug, Serialize)]
pub struct Disk {
    /// The ORAM mode (`path` or `ring`).
    pub oram: String,
    /// Blocks per store (N).
    pub capacity: u64,
    /// Bytes per block (B).
    pub block: u32,
    /// Cached levels (T).
    pub cached_levels: u32,
    /// Slots per epoch (K).
    pub slots: u32,
    /// Epochs measured, idle and then busy.
    pub epochs: u64,
    /// The first saves (the whole state once), bytes written.
    pub first: u64,
    /// Bytes written per epoch, idle.
    pub idle_per_epoch: u64,
    /// The most bytes written in one epoch while idle (sampled every epoch, so a save
    /// that straddles two samples is split between them).
    pub idle_max_epoch: u64,
    /// Bytes written per epoch while SETs of 100 bytes to 256 keys kept every slot busy.
    pub busy_per_epoch: u64,
    /// SETs done while busy.
    pub sets: u64,
    /// Bytes the client handed to its state database per epoch while busy (records and
    /// pages, before the database's own overhead).
    pub saved_per_epoch_busy: u64,
    /// Bytes per day at one epoch every 2 s (the default), idle.
    pub idle_per_day: u64,
    /// Bytes per day at one epoch every 2 s, busy.
    pub busy_per_day: u64,
}

/// Epochs a day at the default 2-second epoch.
const EPOCHS_PER_DAY: u64 = 43_200;

/// The agent process, killed when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the process `pid` has made the kernel write to storage so far.
fn write_bytes(pid: u32) -> Result<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).context("/proc/PID/io")?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no write_bytes in /proc/{pid}/io"))
}

async fn call(s: &mut TcpStream, args: &[&[u8]]) -> Result<OwnedFrame> {
    Ok(shroud_client::resp::call(s, args).await?)
}

/// A number in the agent's INFO.
async fn info(s: &mut TcpStream, field: &str) -> Result<u64> {
    let OwnedFrame::BulkString(text) = call(s, &[b"INFO"]).await? else {
        bail!("INFO did not answer a bulk string");
    };
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no {field} in INFO"))
}

async fn until_epoch(s: &mut TcpStream, epoch: u64) -> Result<()> {
    while info(s, "epochs").await? < epoch {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Starts `shroud agent` (the binary `exe`) on a state in `dir`, and waits for its
/// `listening on` line.
fn spawn_agent(exe: &Path, stack: &Stack, dir: &Path) -> Result<(Agent, SocketAddr)> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(exe)
        .args(["agent", "--listen", "127.0.0.1:0", "--proxy"])
        .arg(stack.proxy.to_string())
        .arg("--ca")
        .arg(&stack.tls.files.ca)
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--key-file")
        .arg(dir.join("state.key"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start the agent")?;
    let stdout = child.stdout.take().context("the agent's stdout")?;
    let agent = Agent(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| anyhow!("the agent said {line:?}"))?;
    Ok((agent, addr))
}

/// Measures one store: `shape`'s N, B, T and K at 100 ms epochs, without mail, `epochs`
/// idle and then `epochs` busy. The agent's state goes in a directory under `dir`, which
/// must be on a real disk (a tmpfs counts nothing: refused).
pub async fn measure(exe: &Path, shape: Shape, epochs: u64, dir: &Path) -> Result<Disk> {
    let store = match shape.ring_config() {
        Some(c) => Shape::with_ring(c)?,
        None => Shape::new(shape.capacity, shape.block_size, shape.cached_levels)?,
    };
    let shape = store
        .with_schedule(shape.slots_per_epoch, 100)?
        .with_mail(0, 0);
    let stack = Stack::start(shape).await?;
    let state = tempfile::tempdir_in(dir)?;
    let (agent, addr) = spawn_agent(exe, &stack, state.path())?;
    let pid = agent.0.id();
    let token = std::fs::read_to_string(state.path().join("state").join("agent.token"))?;
    let mut s = TcpStream::connect(addr).await?;
    if call(&mut s, &[b"AUTH", token.trim().as_bytes()]).await?
        != OwnedFrame::SimpleString(b"OK".to_vec())
    {
        bail!("the agent refused its token");
    }
    until_epoch(&mut s, 10).await?;
    let first = write_bytes(pid)?;
    if first < 100_000 {
        bail!(
            "the first save wrote {first} bytes: is {} a tmpfs?",
            dir.display()
        );
    }
    let per_epoch = |from: (u64, u64), to: (u64, u64)| (to.1 - from.1) / (to.0 - from.0).max(1);

    // Idle, sampled every epoch: Ring ORAM saves its rewrites in the epochs that evict.
    let start = (info(&mut s, "epochs").await?, write_bytes(pid)?);
    let (mut at, mut idle_max) = (start, 0);
    while at.0 < start.0 + epochs {
        until_epoch(&mut s, at.0 + 1).await?;
        let now = (info(&mut s, "epochs").await?, write_bytes(pid)?);
        idle_max = idle_max.max(per_epoch(at, now));
        at = now;
    }
    let end = at;
    let idle = per_epoch(start, end);

    // Busy: one connection per slot, each SET after SET, so that every slot is real.
    let start = (info(&mut s, "epochs").await?, write_bytes(pid)?);
    let saved_start = info(&mut s, "state_bytes_written").await?;
    let stop = start.0 + epochs;
    let mut writers = Vec::new();
    for w in 0..u64::from(shape.slots_per_epoch) {
        let token = token.clone();
        writers.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await?;
            call(&mut c, &[b"AUTH", token.trim().as_bytes()]).await?;
            let mut sets = 0u64;
            while info(&mut c, "epochs").await? < stop {
                let key = format!("key{}", (w * 1000 + sets) % 256);
                call(&mut c, &[b"SET", key.as_bytes(), &[7u8; 100]]).await?;
                sets += 1;
            }
            Ok::<u64, anyhow::Error>(sets)
        }));
    }
    let mut sets = 0;
    for w in writers {
        sets += w.await??;
    }
    let end = (info(&mut s, "epochs").await?, write_bytes(pid)?);
    let saved = info(&mut s, "state_bytes_written").await? - saved_start;
    let busy = per_epoch(start, end);
    Ok(Disk {
        oram: crate::audit::oram_name(&shape).into(),
        capacity: shape.capacity,
        block: shape.block_size,
        cached_levels: shape.cached_levels,
        slots: shape.slots_per_epoch,
        epochs,
        first,
        idle_per_epoch: idle,
        idle_max_epoch: idle_max,
        busy_per_epoch: busy,
        sets,
        saved_per_epoch_busy: saved / (end.0 - start.0).max(1),
        idle_per_day: idle * EPOCHS_PER_DAY,
        busy_per_day: busy * EPOCHS_PER_DAY,
    })
}

/// The stores `shroud bench disk` measures: the default, then lighter and heavier ones (as
/// `bench cost`'s table).
pub fn settings() -> Result<Vec<Shape>> {
    Ok(vec![
        Shape::default(),
        Shape::new(1 << 14, 1024, 6)?,
        Shape::new(1 << 14, 1024, 4)?,
        Shape::new(1 << 10, 256, 4)?,
        Shape::new(1 << 14, 1024, 8)?.with_schedule(4, 2000)?,
        Shape::ring(1 << 14, 1024, 8)?,
        Shape::ring(1 << 14, 1024, 8)?.with_schedule(4, 2000)?,
    ])
}
