//! The workloads the audit sets against each other, each driving one client's KV store (or
//! mailbox) flat out, from many tasks, for a fixed time.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use shroud_client::Kv;

/// What one client does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum Workload {
    /// Nothing: the schedule's dummies only.
    Idle,
    /// Random puts and gets of 100-byte values over 64 keys.
    Busy,
    /// Puts and gets of one key.
    Hot,
    /// Puts and gets spread evenly over 256 keys.
    Uniform,
    /// Puts of 10-byte values.
    Small,
    /// Puts of 16 KiB values.
    Large,
}

impl Workload {
    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Idle => "idle",
            Workload::Busy => "busy",
            Workload::Hot => "one hot key",
            Workload::Uniform => "uniform keys",
            Workload::Small => "small values",
            Workload::Large => "large values",
        }
    }

    /// Runs on `kv` (or its block store) until `until`; returns the operations done.
    pub async fn run(self, kv: Kv, until: Instant) -> u64 {
        match self {
            Workload::Idle => {
                tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
                0
            }
            // Block-level, from many tasks at once: every slot of every epoch is real.
            Workload::Busy | Workload::Hot | Workload::Uniform => {
                let capacity = kv.client().shape().capacity;
                let block = kv.client().shape().block_size as usize;
                let tasks: Vec<_> = (0..64u64)
                    .map(|t| {
                        let client = kv.client().clone();
                        tokio::spawn(async move {
                            let mut rng = StdRng::seed_from_u64(t ^ rand::rng().next_u64());
                            let mut ops = 0u64;
                            while Instant::now() < until {
                                let addr = match self {
                                    Workload::Hot => 0,
                                    _ => rng.random_range(0..capacity),
                                };
                                let r = if rng.random_bool(0.5) {
                                    client.write(addr, vec![rng.random(); block]).await
                                } else {
                                    client.read(addr).await.map(|_| ())
                                };
                                if r.is_err() {
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                }
                                ops += 1;
                            }
                            ops
                        })
                    })
                    .collect();
                let mut total = 0;
                for t in tasks {
                    total += t.await.unwrap_or(0);
                }
                total
            }
            // Through the KV: values of 10 bytes (one block) or 16 KiB (many).
            Workload::Small | Workload::Large => {
                let len = if self == Workload::Small {
                    10
                } else {
                    16 * 1024
                };
                let mut rng = StdRng::seed_from_u64(rand::rng().next_u64());
                let mut ops = 0u64;
                while Instant::now() < until {
                    let key = format!("k{}", ops % 4);
                    let v: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                    if kv.put(key.as_bytes(), &v).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    ops += 1;
                }
                ops
            }
        }
    }
}
