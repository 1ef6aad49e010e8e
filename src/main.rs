//! `shroud`: the one command-line tool.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use shroud::cmd::storage::{self, ServeOptions};
use shroud::cmd::tls::{ClientTlsArgs, IdentityArgs, ServerTlsArgs};
use shroud_lab::bench::engine::{self, Case};
use shroud_oram::PositionMap;
use shroud_proto::Shape;

#[derive(Parser)]
#[command(
    name = "shroud",
    version,
    about = "Oblivious storage and messaging that leak no metadata"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure throughput.
    #[command(subcommand)]
    Bench(Bench),
    /// Run the untrusted storage server (sled-backed bucket store), or read its stats.
    Storage(StorageArgs),
    /// Make a development CA and a server certificate for the proxy and storage.
    Certs(CertsArgs),
    /// Run the epoch proxy in front of a storage server, or read its stats.
    Proxy(ProxyArgs),
    /// The always-on client: the fixed schedule, crash-safe state, and a Redis front.
    Agent(shroud::cmd::agent::AgentSettings),
    /// Put, get, delete and list keys through an agent.
    Kv(shroud::cmd::kv::KvArgs),
    /// The private mailbox through an agent: init, address, add-contact, send, inbox, read.
    Mail(shroud::cmd::mail::MailArgs),
    /// The whole system in one process: storage, proxy, two agents; a busy and an idle
    /// client, and what storage saw of each.
    Demo {
        /// Seconds of schedule.
        #[arg(long, default_value_t = 12.0)]
        seconds: f64,
    },
    /// The leakage audit: pairs of workloads against an embedded stack, compared as the
    /// operators see them; exits non-zero if any test detects a difference.
    Audit {
        /// The CI version: 6,000 paths per side instead of 10^5.
        #[arg(long)]
        short: bool,
        /// Paths per side (overrides the default of the mode).
        #[arg(long)]
        accesses: Option<u64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Write audit.json and audit.svg into this directory.
        #[arg(long)]
        report: Option<std::path::PathBuf>,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ProxyArgs {
    #[command(subcommand)]
    command: Option<ProxyCommand>,
    /// The storage server's address; several, comma-separated, for storage servers sharing
    /// one Redis Cluster: the first is used, the next after a failure.
    #[arg(long, default_value = "127.0.0.1:7300", value_delimiter = ',', num_args = 1..)]
    storage: Vec<SocketAddr>,
    /// Address to listen on for clients (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: SocketAddr,
    /// Epoch length, milliseconds (E).
    #[arg(long, default_value_t = 2000)]
    epoch_ms: u32,
    /// Slots every client sends per epoch (K).
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// Epochs per mail round (every client writes its outbox and sends its PIR queries once
    /// a round); 0 turns mail off.
    #[arg(long, default_value_t = Shape::default().round_epochs)]
    round_epochs: u32,
    /// PIR queries every client sends per round (Q).
    #[arg(long, default_value_t = Shape::default().queries_per_round)]
    queries: u32,
    /// Rows of storage's mail board: must be the storage server's --board-rows.
    #[arg(long, default_value_t = shroud_proto::shape::DEFAULT_BOARD.0)]
    board_rows: u64,
    /// Rows of one outbox: must be the storage server's --outbox-rows.
    #[arg(long, default_value_t = shroud_proto::shape::DEFAULT_BOARD.1)]
    outbox_rows: u32,
    /// Blocks per client store (N).
    #[arg(long, default_value_t = 1 << 14)]
    capacity: u64,
    /// Bytes per block (B).
    #[arg(long, default_value_t = 1024)]
    block: u32,
    /// Top tree levels every client caches (T).
    #[arg(long, default_value_t = 8)]
    cached: u32,
    /// The tree ORAM every client store runs: `ring` (Z = 32, S = 64, A = 46; the default:
    /// 3.5 to 7 times fewer bytes a day, docs/benchmarks.md "Which mode is the default") or
    /// `path` (Z = 4; less client memory, and a recursive position map for large stores).
    #[arg(long, value_enum, default_value_t = OramMode::Ring)]
    oram: OramMode,
    /// Clients served at once.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    #[command(flatten)]
    tls: ServerTlsArgs,
    /// How to verify the storage server.
    #[arg(long)]
    storage_ca: Option<PathBuf>,
    /// Pin the storage server's certificate instead.
    #[arg(long)]
    storage_pin_cert: Option<PathBuf>,
    /// The name in the storage server's certificate.
    #[arg(long, default_value = "localhost")]
    storage_name: String,
    /// PEM client certificate to present to storage, which accepts only proxies
    /// (`shroud certs` writes proxy.pem).
    #[arg(long)]
    storage_client_cert: Option<PathBuf>,
    /// Its PEM private key (proxy.key).
    #[arg(long)]
    storage_client_key: Option<PathBuf>,
    /// Plain TCP on both links (local testing only; warns loudly).
    #[arg(long)]
    insecure_plaintext: bool,
}

#[derive(Subcommand)]
enum ProxyCommand {
    /// Print a running proxy's per-epoch counters as JSON.
    Stats {
        /// The proxy's address.
        addr: SocketAddr,
        #[command(flatten)]
        tls: ClientTlsArgs,
        /// Connect over plain TCP (local testing only).
        #[arg(long)]
        insecure_plaintext: bool,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct StorageArgs {
    #[command(subcommand)]
    command: Option<StorageCommand>,
    /// The database directory (with `--backend redis://...`: the routing key only).
    #[arg(long, default_value = "shroud-storage.db")]
    db: PathBuf,
    /// The storage engine: `sled` (embedded, in --db; the default) or a Redis Cluster,
    /// `redis://HOST:PORT[,HOST:PORT...]` (stateless servers; see docs/redis-cluster.md).
    #[arg(long)]
    backend: Option<String>,
    /// With a Redis Cluster: replicas that must confirm each write (WAIT) before it is
    /// acknowledged (default 1).
    #[arg(long)]
    redis_replicas: Option<u32>,
    /// The storage engine's settings in a TOML file (`backend`, and a `[redis]` table:
    /// `replicas`, `wait_ms`, `retry_ms`, `connect_timeout_ms`); flags win over it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:7300")]
    listen: SocketAddr,
    /// Log every request, as an operator could, to this file (JSON lines).
    #[arg(long)]
    transcript: Option<PathBuf>,
    /// Connections served at once.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Requests one connection may queue.
    #[arg(long, default_value_t = 4)]
    max_in_flight: usize,
    /// Seconds a connection may stay silent (or take to send one frame).
    #[arg(long, default_value_t = 120)]
    idle_timeout: u64,
    /// Largest frame, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_frame: usize,
    /// Leading zero bits of the proof of work (SHA-256 hashcash) that pays for each new
    /// store: about 2^bits hashes for the client, one for storage.
    #[arg(long, default_value_t = shroud_storage::new_stores::DEFAULT_DIFFICULTY.0,
          value_parser = clap::value_parser!(u8).range(0..=i64::from(shroud_proto::work::MAX_DIFFICULTY)))]
    store_work_bits: u8,
    /// The most stores storage holds; more get `StoreLimit`.
    #[arg(long, default_value_t = shroud_storage::new_stores::DEFAULT_MAX_STORES)]
    max_stores: u64,
    /// Rows of the outbox delivery's mail board (a power of two from 256 to 65536; it fixes
    /// the PIR parameters and so every reader's key, query and answer size).
    #[arg(long, default_value_t = shroud_storage::Config::default().board.0)]
    board_rows: u64,
    /// Rows of one outbox on the mail board (the board holds board-rows / this outboxes).
    #[arg(long, default_value_t = shroud_storage::Config::default().board.1)]
    outbox_rows: u32,
    /// Readers' PIR keys kept at once (one per client connection with mail; each takes about
    /// 41 MiB of memory at the default board, see docs/operations.md); more are refused.
    #[arg(long, default_value_t = shroud_storage::Config::default().max_readers)]
    max_readers: usize,
    #[command(flatten)]
    tls: ServerTlsArgs,
    /// PEM CA certificate(s) whose client certificates may connect: only proxies talk to
    /// storage (`shroud certs` writes ca.pem, and proxy.pem signed by it). Required with TLS.
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Serve plain TCP instead of TLS (local testing only; warns loudly).
    #[arg(long)]
    insecure_plaintext: bool,
}

#[derive(Subcommand)]
enum StorageCommand {
    /// Print a running server's counters as JSON (from its own host only).
    Stats {
        /// The server's address.
        addr: SocketAddr,
        #[command(flatten)]
        tls: ClientTlsArgs,
        #[command(flatten)]
        identity: IdentityArgs,
        /// Connect over plain TCP (local testing only).
        #[arg(long)]
        insecure_plaintext: bool,
    },
}

#[derive(Args)]
struct CertsArgs {
    /// Where to write ca.pem, server.pem, server.key, proxy.pem and proxy.key.
    #[arg(long)]
    out: PathBuf,
    /// Names the server certificate is valid for (DNS names or IP addresses).
    #[arg(long, value_delimiter = ',', default_values_t = shroud_net::certs::local_names())]
    names: Vec<String>,
}

#[derive(Subcommand)]
enum Bench {
    /// The Path ORAM engine over the in-memory store, on one core and with its helper
    /// thread on a second, next to the `oram` crate and the AES-GCM crypto bound, measured
    /// in the same run.
    Engine(EngineArgs),
    /// Full ORAM paths per second through the storage server with 1 to 64 writers, next to
    /// raw sled apply_batch + flush of the same bytes.
    Storage(StorageBenchArgs),
    /// Always-on clients through one proxy and one storage server (TLS, one process): the
    /// most clients with zero missed epochs, and their operation latency.
    E2e(E2eArgs),
    /// The KV store's cost of obliviousness next to a plain sealed KV and the theoretical
    /// Path ORAM blow-up; and one client's throughput under the default schedule.
    Kv {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Operations of each kind.
        #[arg(long, default_value_t = 5000)]
        ops: u64,
        /// Seconds of the full-stack measurement.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
    },
    /// Engine, storage, KV and end-to-end benchmarks in one run, with JSON and SVG plots.
    All {
        /// Where to write bench.json and the plots.
        #[arg(long)]
        report: std::path::PathBuf,
        /// Smaller sizes (a few minutes instead of tens).
        #[arg(long)]
        quick: bool,
    },
    /// What cover traffic costs one always-on client per day, for the default and a few
    /// lighter and heavier settings (exact frame sizes).
    Cost {
        /// Print one JSON object per setting.
        #[arg(long)]
        json: bool,
    },
    /// Ring ORAM against Path ORAM on the same N, B and cached levels: bytes per access
    /// each way, stash, client memory and accesses per second, in one run.
    Ring {
        /// Print one JSON object per case.
        #[arg(long)]
        json: bool,
        /// Accesses measured per engine and case (after a warm-up writing every block).
        #[arg(long, default_value_t = 40_000)]
        accesses: u64,
        /// Ring ORAM's Z, S and A.
        #[arg(long, value_delimiter = ',', default_values_t = [
            shroud_oram::ring::DEFAULT_Z,
            shroud_oram::ring::DEFAULT_S,
            shroud_oram::ring::DEFAULT_A,
        ])]
        zsa: Vec<u32>,
        /// Evictions per scheduled reshuffle (0: the paper's early reshuffles only).
        #[arg(long, default_value_t = shroud_oram::ring::DEFAULT_RESHUFFLE_EVERY)]
        every: u32,
    },
    /// Bytes a `shroud agent` process writes to its own disk per epoch, idle and busy, for
    /// the default and a few other stores (from /proc/PID/io), and per day at 2 s epochs.
    Disk {
        /// Print one JSON object per store.
        #[arg(long)]
        json: bool,
        /// Epochs measured idle, then busy.
        #[arg(long, default_value_t = 200)]
        epochs: u64,
        /// Where the agent's state goes (a real disk: a tmpfs counts nothing).
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
    },
    /// Single-server PIR candidates for mail delivery (YPIR-SP and Spiral) side by side on
    /// boards of 1 KiB rows: server time per query and per batch, bytes, key material.
    Pir(PirArgs),
    /// Mail delivery at the default shape: storage's work per round against users, the most
    /// users each round length sustains, message latency, and bytes per client per day.
    Mail(MailBenchArgs),
    /// Mail with many contacts, live: an active conversation and other contacts writing now
    /// and then to one user with 32 contacts, latency in rounds; then long messages.
    Contacts(ContactsBenchArgs),
}

#[derive(Args)]
struct ContactsBenchArgs {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The recipient's contacts in all.
    #[arg(long, default_value_t = 32)]
    contacts: usize,
    /// Of them, those who write to him now and then (besides his active conversation).
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Rounds of the many-contacts phase.
    #[arg(long, default_value_t = 90)]
    rounds: u64,
    /// A round's length, ms (storage answers every user's 3 queries within it).
    #[arg(long, default_value_t = 5000)]
    round_ms: u64,
    /// Chunk counts of the long messages sent after it.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 8, 16])]
    long: Vec<usize>,
}

#[derive(Args)]
struct MailBenchArgs {
    /// Print one JSON object per round length.
    #[arg(long)]
    json: bool,
    /// User counts whose rounds storage runs (each user's PIR key takes about 29 MiB).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 8, 16])]
    users: Vec<usize>,
    /// Messages of the live conversation that measures latency.
    #[arg(long, default_value_t = 20)]
    messages: usize,
    /// Round lengths to report, seconds.
    #[arg(long, value_delimiter = ',', default_values_t = [5u64, 30, 60])]
    round_seconds: Vec<u64>,
}

#[derive(Args)]
struct PirArgs {
    /// Print one JSON object per scheme and board.
    #[arg(long)]
    json: bool,
    /// Board sizes to try, as powers of two of rows.
    #[arg(long, value_delimiter = ',', default_values_t = [8u32, 10, 12, 14, 16])]
    log_rows: Vec<u32>,
    /// Queries timed one by one on one core.
    #[arg(long, default_value_t = 5)]
    queries: u64,
    /// Queries in the batch run on every core.
    #[arg(long, default_value_t = 8)]
    batch: u64,
}

#[derive(Args)]
struct E2eArgs {
    /// Print one JSON object per client count.
    #[arg(long)]
    json: bool,
    /// Client counts to try, in order; stops after the first that is not sustained.
    #[arg(long, value_delimiter = ',', default_values_t = [32usize, 64, 128, 160, 192, 256])]
    clients: Vec<usize>,
    /// Seconds measured per count.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Epoch length, ms.
    #[arg(long, default_value_t = 100)]
    epoch_ms: u32,
    /// Slots per client per epoch.
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// Blocks per client store.
    #[arg(long, default_value_t = 1 << 14)]
    capacity: u64,
    /// Bytes per block.
    #[arg(long, default_value_t = 1024)]
    block: u32,
    /// Cached levels.
    #[arg(long, default_value_t = 6)]
    cached: u32,
    /// The tree ORAM of every client store (the proxy's default, Ring ORAM, unless told).
    #[arg(long, value_enum, default_value_t = OramMode::Ring)]
    oram: OramMode,
    /// Where storage keeps its data: `sled`; `redis`, a Redis Cluster of --masters masters
    /// (one replica each) started on loopback for each run; or an existing cluster's
    /// `redis://HOST:PORT[,...]`.
    #[arg(long, default_value = "sled")]
    backend: String,
    /// Masters of the cluster `--backend redis` starts; several (comma-separated) run each
    /// client count on each size, to show the work per master.
    #[arg(long, value_delimiter = ',', default_values_t = [3usize])]
    masters: Vec<usize>,
    /// Storage servers on the cluster, each with its own proxy and an equal share of the
    /// clients.
    #[arg(long, default_value_t = 1)]
    servers: usize,
    /// Without mail: ORAM slots only. Each mail client's PIR key takes about 41 MiB at
    /// storage, which holds at most 128 (`--max-readers`): past 128 clients, measure the
    /// slots without mail (`bench mail` measures mail).
    #[arg(long)]
    no_mail: bool,
}

/// The tree ORAM of a shape's stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OramMode {
    /// Path ORAM.
    Path,
    /// Ring ORAM.
    Ring,
}

impl OramMode {
    /// The store shape of this mode (one slot every 2 s until a schedule is set).
    fn shape(self, capacity: u64, block: u32, cached: u32) -> Result<Shape> {
        Ok(match self {
            OramMode::Path => Shape::new(capacity, block, cached)?,
            OramMode::Ring => Shape::ring(capacity, block, cached)?,
        })
    }
}

#[derive(Args)]
struct StorageBenchArgs {
    /// Print one JSON object per writer count.
    #[arg(long)]
    json: bool,
    /// Concurrent writers to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 16, 64])]
    writers: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

#[derive(Args)]
struct EngineArgs {
    /// Print one JSON object per configuration.
    #[arg(long)]
    json: bool,
    /// log2 of the capacities to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [14u32, 16, 20])]
    log_n: Vec<u32>,
    /// Block sizes in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [64u32, 1024])]
    block: Vec<u32>,
    /// Cached top levels (each value is a separate row).
    #[arg(long, value_delimiter = ',', default_values_t = [0u32, 10])]
    cached: Vec<u32>,
    /// Accesses timed per configuration.
    #[arg(long, default_value_t = 20_000)]
    accesses: u64,
    /// Accesses timed for the `oram` crate (it is slower).
    #[arg(long, default_value_t = 4_000)]
    oram_crate_accesses: u64,
    /// Skip the `oram` crate reference (its setup at 2^20 takes a minute).
    #[arg(long)]
    no_oram_crate: bool,
    /// Use the recursive position map.
    #[arg(long)]
    recursive: bool,
    /// Accesses per batch (a client's slots per epoch): the batch's paths are fetched,
    /// verified and sealed together.
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Also time one core on a hash-map store against the dense store, alternating, in the
    /// same run (holds two trees in memory).
    #[arg(long)]
    compare_stores: bool,
}

/// Refuses to run on a CPU without the instructions this build was compiled for
/// (.cargo/config.toml), with a message, rather than dying of an illegal instruction later.
fn cpu_check() -> Result<()> {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
        anyhow::bail!(
            "this shroud was built for x86-64-v3 (AVX2, FMA) and this CPU lacks them: \
             rebuild with RUSTFLAGS=\"-C target-cpu=x86-64\" (PIR answers then take 2.4 times \
             as long)"
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    cpu_check()?;
    let cli = Cli::parse();
    // The demo and the benches print their own report; services log at info.
    let quiet = matches!(
        cli.command,
        Command::Demo { .. }
            | Command::Audit { .. }
            | Command::Bench(_)
            | Command::Kv(_)
            | Command::Mail(_)
    );
    let default = if quiet { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Every command may hold a key (state, ORAM, routing, TLS): none goes to a core file.
    shroud::cmd::harden::no_core_dumps();
    if matches!(
        cli.command,
        Command::Bench(Bench::Engine(_) | Bench::All { .. })
    ) && let Some(code) = on_huge_pages()?
    {
        std::process::exit(code);
    }
    match cli.command {
        Command::Bench(Bench::Engine(args)) => bench_engine(args),
        Command::Bench(Bench::Storage(args)) => bench_storage(args),
        Command::Bench(Bench::E2e(args)) => bench_e2e(args),
        Command::Bench(Bench::Cost { json }) => bench_cost(json),
        Command::Bench(Bench::Disk { json, epochs, dir }) => bench_disk(json, epochs, &dir),
        Command::Bench(Bench::Ring {
            json,
            accesses,
            zsa,
            every,
        }) => bench_ring(json, accesses, &zsa, every),
        Command::Bench(Bench::Pir(args)) => bench_pir(args),
        Command::Bench(Bench::Mail(args)) => bench_mail(args),
        Command::Bench(Bench::Contacts(args)) => bench_contacts(args),
        Command::Bench(Bench::Kv { json, ops, seconds }) => bench_kv(json, ops, seconds),
        Command::Bench(Bench::All { report, quick }) => {
            let r = shroud_lab::bench::all::run(quick)?;
            for f in shroud_lab::bench::all::write(&r, &report)? {
                shroud_lab::outln!("{}", f.display());
            }
            Ok(())
        }
        Command::Storage(args) => storage_cmd(args),
        Command::Proxy(args) => proxy_cmd(args),
        Command::Agent(settings) => {
            let settings = settings.resolve()?;
            shroud::cmd::signals::run(|| shroud::cmd::agent::serve(settings))
        }
        Command::Kv(args) => runtime()?.block_on(shroud::cmd::kv::run(args)),
        Command::Mail(args) => runtime()?.block_on(shroud::cmd::mail::run(args)),
        Command::Demo { seconds } => runtime()?.block_on(shroud_lab::demo::run(seconds)),
        Command::Audit {
            short,
            accesses,
            json,
            report,
        } => audit(short, accesses, json, report),
        Command::Certs(args) => {
            let files = shroud_net::certs::generate(&args.out, &args.names)?;
            shroud_lab::outln!(
                "CA:                 {}\nserver certificate: {}\nserver key:         {}\nproxy certificate:  {}\nproxy key:          {}",
                files.ca.display(),
                files.cert.display(),
                files.key.display(),
                files.proxy_cert.display(),
                files.proxy_key.display()
            );
            Ok(())
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn storage_cmd(args: StorageArgs) -> Result<()> {
    let rt = runtime()?;
    if let Some(StorageCommand::Stats {
        addr,
        tls,
        identity,
        insecure_plaintext,
    }) = args.command
    {
        let identity = identity.load(insecure_plaintext, "--client-cert/--client-key")?;
        let tls = tls.build_as(identity.as_ref(), insecure_plaintext, "stats")?;
        let stats = rt.block_on(storage::stats(addr, &tls))?;
        shroud_lab::outln!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(());
    }
    let config = shroud_storage::Config {
        max_connections: args.max_connections,
        max_in_flight: args.max_in_flight,
        idle_timeout: Duration::from_secs(args.idle_timeout),
        limits: shroud_proto::Limits {
            max_frame: args.max_frame,
        },
        new_stores: shroud_storage::NewStores {
            difficulty: shroud_proto::Difficulty(args.store_work_bits),
            max_stores: args.max_stores,
        },
        board: (args.board_rows, args.outbox_rows),
        max_readers: args.max_readers,
        ..Default::default()
    };
    shroud_storage::board::check_shape(args.board_rows, args.outbox_rows)
        .context("--board-rows and --outbox-rows")?;
    let tls = args.tls.build_mutual(
        args.client_ca.as_deref(),
        args.insecure_plaintext,
        "proxy-storage",
    )?;
    let file = match &args.config {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let (backend, redis) = storage::engine(args.backend, args.redis_replicas, file.as_deref())
        .context("--backend, --redis-replicas, --config")?;
    let opts = ServeOptions {
        db: args.db,
        backend,
        redis,
        listen: args.listen,
        transcript: args.transcript,
        config,
        tls,
    };
    drop(rt);
    shroud::cmd::signals::run(|| storage::serve(opts, shroud::cmd::signals::shutdown()))
}

/// `bench engine` and `bench all` hold gigabytes of buckets in memory, read at random: on
/// 4 KiB pages nearly every bucket read also misses the TLB, which is the memory system's
/// cost, not the engine's. glibc backs its heap with transparent huge pages when the tunable
/// `glibc.malloc.hugetlb=1` is set, and reads tunables only at start; so these benches run
/// themselves again with it, unless `GLIBC_TUNABLES` is set already (set it to anything
/// else to measure on small pages). The reports say which (`huge_pages`).
fn on_huge_pages() -> Result<Option<i32>> {
    if std::env::var_os("GLIBC_TUNABLES").is_some() || !engine::huge_pages_available() {
        return Ok(None);
    }
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", engine::HUGE_PAGES_TUNABLE)
        .status()
        .context("running the bench again on huge pages")?;
    Ok(Some(status.code().unwrap_or(1)))
}

fn bench_engine(args: EngineArgs) -> Result<()> {
    if !args.json {
        shroud_lab::outln!(
            "{:>6} {:>6} {:>3} {:>10} {:>12} {:>12} {:>6} {:>12} {:>12} {:>8} {:>8} {:>6} {:>9}",
            "N",
            "block",
            "T",
            "map",
            "1-core/s",
            "2-core/s",
            "2c/1c",
            "oram-crate/s",
            "crypto/s",
            "vs-crate",
            "of-bound",
            "stash",
            "client"
        );
    }
    for &log_n in &args.log_n {
        anyhow::ensure!(log_n <= 32, "log-n must be at most 32");
        for &block in &args.block {
            let mut oram_crate = None;
            for &cached in &args.cached {
                let n = 1u64 << log_n;
                if oram_crate.is_none() && !args.no_oram_crate {
                    eprintln!("measuring the oram crate at N=2^{log_n}, B={block} ...");
                    oram_crate = engine::measure_oram_crate(n, block, args.oram_crate_accesses);
                }
                eprintln!("measuring shroud at N=2^{log_n}, B={block}, T={cached} ...");
                let position_map = if args.recursive {
                    PositionMap::recursive()
                } else {
                    PositionMap::Flat
                };
                let r = engine::run_case(
                    Case {
                        n,
                        block,
                        cached_levels: cached,
                        position_map,
                        batch: args.batch,
                        compare_stores: args.compare_stores,
                    },
                    args.accesses,
                    oram_crate,
                );
                if args.json {
                    shroud_lab::outln!("{}", serde_json::to_string(&r)?);
                } else {
                    let opt = |x: Option<f64>, prec: usize| {
                        x.map_or("-".to_string(), |v| format!("{v:.prec$}"))
                    };
                    shroud_lab::outln!(
                        "{:>6} {:>6} {:>3} {:>10} {:>12.0} {:>12.0} {:>6.2} {:>12} {:>12.0} {:>8} {:>8.2} {:>6} {:>8}K",
                        format!("2^{log_n}"),
                        block,
                        cached,
                        r.position_map,
                        r.accesses_per_s,
                        r.accesses_per_s_two_cores,
                        r.two_cores_vs_one,
                        opt(r.oram_crate_accesses_per_s, 0),
                        r.crypto_bound_accesses_per_s,
                        opt(r.vs_oram_crate, 2),
                        r.fraction_of_crypto_bound,
                        r.max_stash,
                        r.client_memory_bytes / 1024
                    );
                }
            }
        }
    }
    Ok(())
}

fn bench_storage(args: StorageBenchArgs) -> Result<()> {
    if !args.json {
        shroud_lab::outln!(
            "{:>7} {:>10} {:>12} {:>8} {:>13} {:>10} {:>10}",
            "writers",
            "paths/s",
            "raw-sled/s",
            "vs-raw",
            "batches/flush",
            "disk/byte",
            "raw-disk/b"
        );
    }
    let json = args.json;
    shroud_lab::bench::storage::run(&args.writers, Duration::from_secs_f64(args.seconds), |r| {
        if json {
            shroud_lab::outln!("{}", serde_json::to_string(r).unwrap_or_default());
        } else {
            shroud_lab::outln!(
                "{:>7} {:>10.0} {:>12.0} {:>8.2} {:>13.1} {:>10.2} {:>10.2}",
                r.writers,
                r.paths_per_s,
                r.raw_sled_paths_per_s,
                r.vs_raw_sled,
                r.batches_per_flush,
                r.disk_bytes_per_logical_byte,
                r.raw_disk_bytes_per_logical_byte
            );
        }
    })?;
    Ok(())
}

fn audit(
    short: bool,
    accesses: Option<u64>,
    json: bool,
    report: Option<std::path::PathBuf>,
) -> Result<()> {
    use shroud_lab::audit;
    let mut opts = if short {
        audit::Options::short()
    } else {
        audit::Options::full()
    };
    if let Some(n) = accesses {
        opts.accesses = n;
    }
    if !json {
        shroud_lab::outln!(
            "shroud audit: {} paths per side, alpha {}; three pairs of key-value workloads in each ORAM mode and four views of mail, each on its own embedded stack",
            opts.accesses,
            opts.alpha
        );
    }
    let r = runtime()?.block_on(audit::run(&opts, |p| {
        if json {
            return;
        }
        shroud_lab::outln!(
            "\n{} vs {}, {} ORAM ({} and {} paths):",
            p.a,
            p.b,
            p.oram,
            p.paths[0],
            p.paths[1]
        );
        for v in &p.verdicts {
            let p_value = v
                .p_value
                .map(|p| format!(" p = {p:.4}"))
                .unwrap_or_default();
            shroud_lab::outln!(
                "  {} {}{p_value}: {}",
                if v.pass { "pass" } else { "FAIL" },
                v.test,
                v.detail
            );
        }
    }))?;
    if let Some(dir) = &report {
        let (j, s) = audit::write_report(&r, dir)?;
        if !json {
            shroud_lab::outln!("\nreport: {} and {}", j.display(), s.display());
        }
    }
    if json {
        shroud_lab::outln!("{}", serde_json::to_string(&r)?);
    } else {
        shroud_lab::outln!(
            "\n{} in {:.0} s",
            if r.pass {
                "no difference detected"
            } else {
                "DIFFERENCES DETECTED"
            },
            r.seconds
        );
    }
    if !r.pass {
        std::process::exit(1);
    }
    Ok(())
}

fn proxy_cmd(args: ProxyArgs) -> Result<()> {
    use shroud::cmd::proxy;
    let rt = runtime()?;
    if let Some(ProxyCommand::Stats {
        addr,
        tls,
        insecure_plaintext,
    }) = args.command
    {
        let tls = tls.build(insecure_plaintext, "stats")?;
        let stats = rt.block_on(proxy::stats(addr, &tls))?;
        shroud_lab::outln!(
            "{}",
            serde_json::to_string_pretty(&proxy::readable(&stats)?)?
        );
        return Ok(());
    }
    let shape = args
        .oram
        .shape(args.capacity, args.block, args.cached)?
        .with_schedule(args.slots, args.epoch_ms)?;
    let shape = if args.round_epochs > 0 && args.queries > 0 {
        shape
            .with_board(args.board_rows, args.outbox_rows)
            .context("--board-rows and --outbox-rows")?
            .with_mail(args.round_epochs, args.queries)
    } else {
        shape.with_mail(0, 0)
    };
    let identity = IdentityArgs {
        client_cert: args.storage_client_cert,
        client_key: args.storage_client_key,
    }
    .load(
        args.insecure_plaintext,
        "--storage-client-cert/--storage-client-key",
    )?;
    let storage_tls = ClientTlsArgs {
        ca: args.storage_ca,
        pin_cert: args.storage_pin_cert,
        server_name: args.storage_name,
    }
    .build_as(identity.as_ref(), args.insecure_plaintext, "proxy-storage")?;
    let tls = args.tls.build(args.insecure_plaintext, "client-proxy")?;
    let opts = proxy::ProxyOptions {
        storage: args.storage,
        storage_tls,
        listen: args.listen,
        tls,
        shape,
        max_connections: args.max_connections,
    };
    drop(rt);
    shroud::cmd::signals::run(|| proxy::serve(opts, shroud::cmd::signals::shutdown()))
}

fn bench_e2e(args: E2eArgs) -> Result<()> {
    // Mail rounds as long in time as the default's (60 s), not in epochs: at 100 ms epochs
    // the default's 30 epochs would run rounds twenty times as often as a deployment does,
    // and their PIR work took about 85% of this machine's CPU at 32 clients (perf).
    let default = Shape::default();
    let round_ms = default.round_epochs * default.epoch_ms;
    let shape = args
        .oram
        .shape(args.capacity, args.block, args.cached)?
        .with_schedule(args.slots, args.epoch_ms)?;
    let shape = if args.no_mail {
        shape.with_mail(0, 0)
    } else {
        shape.with_mail(
            (round_ms / args.epoch_ms.max(1)).max(1),
            default.queries_per_round,
        )
    };
    use shroud_lab::bench::e2e::StorageBackend;
    let backends: Vec<StorageBackend> = match args.backend.as_str() {
        "sled" => vec![StorageBackend::Sled],
        "redis" => args
            .masters
            .iter()
            .map(|&masters| StorageBackend::Cluster {
                masters,
                servers: args.servers,
            })
            .collect(),
        url if url.starts_with("redis://") => vec![StorageBackend::Url {
            url: url.to_string(),
            servers: args.servers,
        }],
        other => anyhow::bail!("--backend {other}: sled, redis or a redis:// URL"),
    };
    if !args.json {
        shroud_lab::outln!(
            "{:>7} {:>9} {:>7} {:>5} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
            "clients",
            "sustained",
            "epochs",
            "late",
            "overrun",
            "p50(ep)",
            "p99(ep)",
            "batch ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "fsync ms",
            "crypto ms"
        );
    }
    for backend in &backends {
        if !args.json && backends.len() + usize::from(args.backend != "sled") > 1 {
            shroud_lab::outln!("# storage: {backend}");
        }
        let mut stop = false;
        for &c in &args.clients {
            if stop {
                break;
            }
            shroud_lab::bench::e2e::run(&[c], shape, args.seconds, backend, |r| {
                if args.json {
                    shroud_lab::outln!("{}", serde_json::to_string(r).unwrap_or_default());
                } else {
                    shroud_lab::outln!(
                        "{:>7} {:>9} {:>7} {:>5} {:>8} {:>8.2} {:>8.2} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.2} {:>10.1}",
                        r.clients,
                        r.sustained,
                        r.epochs,
                        r.late_slots,
                        r.overrun_epochs,
                        r.p50_latency_epochs,
                        r.p99_latency_epochs,
                        r.mean_batch_ms,
                        r.p99_batch_ms,
                        r.p999_batch_ms,
                        r.max_batch_ms,
                        r.mean_flush_ms,
                        r.client_crypto_ms_per_epoch
                    );
                    for n in &r.nodes {
                        shroud_lab::outln!(
                            "        master :{}: {:.0} commands, {:.1} KB in, {:.1} KB out, {:.2} ms CPU per epoch",
                            n.port,
                            n.commands_per_epoch,
                            n.bytes_in_per_epoch / 1000.0,
                            n.bytes_out_per_epoch / 1000.0,
                            n.cpu_ms_per_epoch
                        );
                    }
                }
                stop = !r.sustained;
            })?;
        }
    }
    Ok(())
}

fn bench_cost(json: bool) -> Result<()> {
    let mb = |b: u64| b as f64 / 1e6;
    if !json {
        shroud_lab::outln!(
            "| mode | E (ms) | K | N | B | T | path x bucket | client cache | up per day | down per day |"
        );
        shroud_lab::outln!("|---|---|---|---|---|---|---|---|---|---|");
    }
    for o in shroud_lab::bench::cost::settings()? {
        let c = shroud_lab::bench::cost::cost(o)?;
        if json {
            shroud_lab::outln!("{}", serde_json::to_string(&c)?);
        } else {
            shroud_lab::outln!(
                "| {} | {} | {} | 2^{} | {} | {} | {} x {} B | {:.0} KiB | {:.0} MB | {:.0} MB |",
                c.mode,
                c.epoch_ms,
                c.slots,
                c.capacity.trailing_zeros(),
                c.block,
                c.cached_levels,
                c.path_len,
                c.bucket_bytes,
                c.cache_bytes as f64 / 1024.0,
                mb(c.up_per_day),
                mb(c.down_per_day)
            );
        }
    }
    Ok(())
}

fn bench_pir(args: PirArgs) -> Result<()> {
    use shroud_lab::bench::pir;
    let memory = pir::memory_bandwidth();
    if !args.json {
        shroud_lab::outln!(
            "one core reads memory at {memory:.1} GB/s; server times on one core, the batch on every core\n"
        );
        shroud_lab::outln!(
            "| scheme | rows | board | prepare per round | per query | batch | board GB/s per core | up per query | key once | key per query | down | client query / decode |"
        );
        shroud_lab::outln!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    }
    let kib = |b: u64| b as f64 / 1024.0;
    for &log in &args.log_rows {
        let rows = 1u64 << log;
        for r in [
            pir::ypir_sp(rows, 1024, args.queries, args.batch, memory)?,
            pir::spiral(rows, args.queries, args.batch, memory)?,
        ] {
            if args.json {
                shroud_lab::outln!("{}", serde_json::to_string(&r)?);
            } else {
                shroud_lab::outln!(
                    "| {} | 2^{log} | {:.0} KiB | {:.0} ms | {:.1} ms | {} in {:.0} ms | {:.2} | {:.0} KiB | {:.0} KiB | {:.0} KiB | {:.1} KiB | {:.1} / {:.1} ms |",
                    r.scheme,
                    kib(r.board_bytes),
                    r.prepare_ms,
                    r.query_ms,
                    r.batch,
                    r.batch_ms,
                    r.board_gb_per_s,
                    kib(r.up_bytes),
                    kib(r.key_bytes),
                    kib(r.key_bytes_per_query),
                    kib(r.down_bytes),
                    r.client_query_ms,
                    r.client_decode_ms
                );
            }
        }
    }
    Ok(())
}

fn bench_contacts(args: ContactsBenchArgs) -> Result<()> {
    let opts = shroud_lab::bench::contacts::Options {
        contacts: args.contacts,
        senders: args.senders,
        rounds: args.rounds,
        round_ms: args.round_ms,
        long: args.long,
    };
    let r = runtime()?.block_on(shroud_lab::bench::contacts::run(&opts))?;
    if args.json {
        shroud_lab::outln!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    shroud_lab::outln!(
        "{} contacts, {} writing now and then, Q = {}, R = {}, rounds of {:.1} s:",
        r.contacts,
        r.senders,
        r.queries,
        r.outbox_rows,
        r.round_ms as f64 / 1e3
    );
    shroud_lab::outln!(
        "  active conversation: {} messages, p50 {:.2} rounds, p99 {:.2}",
        r.active_messages,
        r.active_p50_rounds,
        r.active_p99_rounds
    );
    shroud_lab::outln!(
        "  other contacts: {} messages, p50 {:.2} rounds, p99 {:.2}, slowest {:.2}",
        r.other_messages,
        r.other_p50_rounds,
        r.other_p99_rounds,
        r.other_max_rounds
    );
    for (k, rounds) in &r.long {
        shroud_lab::outln!("  a message of {k} chunks: {rounds:.2} rounds");
    }
    Ok(())
}

fn bench_mail(args: MailBenchArgs) -> Result<()> {
    let rounds: Vec<u64> = args.round_seconds.iter().map(|s| s * 1000).collect();
    let reports = runtime()?.block_on(shroud_lab::bench::mail::run(
        &args.users,
        args.messages,
        &rounds,
    ))?;
    if !args.json {
        shroud_lab::outln!(
            "\n| round | users sustained | storage per round (wall / CPU) | latency p50 / p99 | bytes per client per day up / down |"
        );
        shroud_lab::outln!("|---|---|---|---|---|");
    }
    for r in reports {
        if args.json {
            shroud_lab::outln!("{}", serde_json::to_string(&r)?);
        } else {
            shroud_lab::outln!(
                "| {} s | {} (measured up to {}) | {:.1} / {:.1} s | {:.2} / {:.2} rounds, {:.0} / {:.0} s | {:.0} / {:.0} MB |",
                r.round_ms / 1000,
                r.users,
                r.measured_up_to,
                r.server_round_ms / 1e3,
                r.server_cpu_ms / 1e3,
                r.latency_p50_rounds,
                r.latency_p99_rounds,
                r.latency_p50_s,
                r.latency_p99_s,
                r.client_bytes_per_day_up as f64 / 1e6,
                r.client_bytes_per_day_down as f64 / 1e6
            );
        }
    }
    Ok(())
}

fn bench_ring(json: bool, accesses: u64, zsa: &[u32], every: u32) -> Result<()> {
    let [z, s, a] = zsa else {
        anyhow::bail!("--zsa takes three numbers: Z,S,A");
    };
    if !json {
        shroud_lab::outln!(
            "| N | B | T | Path ORAM up / down per access | Ring ORAM (Z, S, A) up / down | Path / Ring | reshuffles per access (unscheduled) | max stash Path / Ring | memory Path / Ring | accesses/s Path / Ring | Ring MB/day each way at E = 2 s | recursive Ring: trees, up / down, memory, accesses/s |"
        );
        shroud_lab::outln!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    }
    for (n, block, cached) in shroud_lab::bench::ring::cases() {
        let r = shroud_lab::bench::ring::measure(n, block, cached, [*z, *s, *a], every, accesses)?;
        if json {
            shroud_lab::outln!("{}", serde_json::to_string(&r)?);
        } else {
            let kb = |b: f64| b / 1e3;
            let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
            shroud_lab::outln!(
                "| 2^{} | {} | {} | {:.1} / {:.1} KB | ({}, {}, {}) {:.1} / {:.1} KB | {:.2} | {:.3} ({:.4}) | {} / {} | {:.1} / {:.1} MiB | {:.0} / {:.0} | {:.0} / {:.0} | {}, {:.1} / {:.1} KB, {:.1} MiB, {:.0} |",
                r.n.trailing_zeros(),
                r.block,
                r.cached_levels,
                kb(r.path_up),
                kb(r.path_down),
                r.ring_zsa[0],
                r.ring_zsa[1],
                r.ring_zsa[2],
                kb(r.ring_up),
                kb(r.ring_down),
                r.ratio,
                r.reshuffles_per_access,
                r.unscheduled_per_access,
                r.max_stash[0],
                r.max_stash[1],
                mib(r.memory[0]),
                mib(r.memory[1]),
                r.accesses_per_s[0],
                r.accesses_per_s[1],
                r.ring_mb_per_day[0],
                r.ring_mb_per_day[1],
                r.recursive_trees,
                kb(r.recursive_bytes[0]),
                kb(r.recursive_bytes[1]),
                mib(r.recursive_memory),
                r.recursive_accesses_per_s
            );
        }
    }
    Ok(())
}

fn bench_disk(json: bool, epochs: u64, dir: &std::path::Path) -> Result<()> {
    let exe = std::env::current_exe()?;
    let rt = runtime()?;
    if !json {
        shroud_lab::outln!(
            "| ORAM | K | N | B | T | first save | per epoch idle (most in one) | per epoch busy (SETs) | handed to the database, busy | per day at E = 2 s, idle | busy |"
        );
        shroud_lab::outln!("|---|---|---|---|---|---|---|---|---|---|---|");
    }
    for shape in shroud_lab::bench::disk::settings()? {
        let d = rt.block_on(shroud_lab::bench::disk::measure(&exe, shape, epochs, dir))?;
        if json {
            shroud_lab::outln!("{}", serde_json::to_string(&d)?);
        } else {
            let kb = |b: u64| b as f64 / 1e3;
            shroud_lab::outln!(
                "| {} | {} | 2^{} | {} | {} | {:.0} KB | {:.1} KB ({:.1} KB) | {:.1} KB ({}) | {:.1} KB | {:.0} MB | {:.0} MB |",
                d.oram,
                d.slots,
                d.capacity.trailing_zeros(),
                d.block,
                d.cached_levels,
                kb(d.first),
                kb(d.idle_per_epoch),
                kb(d.idle_max_epoch),
                kb(d.busy_per_epoch),
                d.sets,
                kb(d.saved_per_epoch_busy),
                d.idle_per_day as f64 / 1e6,
                d.busy_per_day as f64 / 1e6
            );
        }
    }
    Ok(())
}

fn bench_kv(json: bool, ops: u64, seconds: f64) -> Result<()> {
    let cases = [(1u64 << 14, 0u32), (1 << 14, 6), (1 << 16, 0)];
    for (ring, (n, cached)) in [false, true]
        .into_iter()
        .flat_map(|r| cases.into_iter().map(move |c| (r, c)))
    {
        let r = shroud_lab::bench::kv::run(ring, n, 1024, cached, ops)?;
        if json {
            shroud_lab::outln!("{}", serde_json::to_string(&r)?);
        } else {
            shroud_lab::outln!(
                "{} ORAM, N=2^{} B=1024 T={}: ORAM put {:.0}/s get {:.0}/s; plain put {:.0}/s get {:.0}/s; slowdown {:.1}x vs theoretical blow-up {:.1}x: cost/theory {:.2}",
                r.oram,
                n.trailing_zeros(),
                cached,
                r.oram_put_per_s,
                r.oram_get_per_s,
                r.plain_put_per_s,
                r.plain_get_per_s,
                r.measured_slowdown,
                r.theoretical_blowup,
                r.cost_vs_theory
            );
        }
    }
    let rt = runtime()?;
    for shape in [Shape::default(), Shape::default().with_schedule(1, 100)?] {
        let r = rt.block_on(shroud_lab::bench::kv::schedule(shape, seconds))?;
        if json {
            shroud_lab::outln!("{}", serde_json::to_string(&r)?);
        } else {
            shroud_lab::outln!(
                "full stack, E={} ms K={}: {} ops in {:.0} s = {:.2} ops/s, latency p50 {:.0} ms p99 {:.0} ms",
                r.epoch_ms,
                r.slots_per_epoch,
                r.operations,
                r.seconds,
                r.ops_per_s,
                r.p50_latency_ms,
                r.p99_latency_ms
            );
        }
    }
    Ok(())
}
