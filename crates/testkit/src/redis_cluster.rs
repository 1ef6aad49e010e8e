//! A real Redis Cluster on loopback, for the tests of the cluster backend (issue 15): the
//! distribution's `redis-server` and `redis-cli` (`.ci/run` installs them), M masters with
//! R replicas each, every node persisting with `appendfsync always`, formed with
//! `redis-cli --cluster create`; every process is killed (SIGKILL) and its directory
//! removed when the value is dropped.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a node may be silent before the others fail it over (ms): short, for tests.
const NODE_TIMEOUT_MS: u32 = 1000;

/// One `redis-server` process.
struct Node {
    port: u16,
    /// Its command line, to start it again after a kill.
    args: Vec<String>,
    child: Option<Child>,
}

/// A running cluster; see the module docs.
pub struct RedisCluster {
    nodes: Vec<Node>,
    /// The nodes' data (deleted on drop, after the nodes are killed).
    dir: tempfile::TempDir,
}

/// A free loopback port (bound, then released: another process could take it meanwhile,
/// which `start` reports as a node that does not answer).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each and waits until the cluster
    /// says it is ready (every slot served).
    ///
    /// A port picked by [`free_port`] can be taken by another process before its node binds
    /// it, so a start that fails for any reason is tried again on new ports, up to three
    /// times in all (a cause that lasts, such as no `redis-server`, fails all three).
    pub fn start(masters: usize, replicas: usize) -> Result<Self> {
        let mut failure = None;
        for _ in 0..3 {
            match Self::try_start(masters, replicas) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => failure = Some(e),
            }
        }
        Err(failure.unwrap_or_else(|| anyhow::anyhow!("the cluster was never started")))
    }

    fn try_start(masters: usize, replicas: usize) -> Result<Self> {
        // The cluster owns every node from its spawn on, so that a failure part way kills
        // the nodes already started.
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            dir: tempfile::tempdir()?,
        };
        for _ in 0..masters * (1 + replicas) {
            let (port, bus) = (free_port()?, free_port()?);
            let data = cluster.dir.path().join(port.to_string());
            std::fs::create_dir_all(&data)?;
            let args = node_args(port, bus, &data);
            let child = spawn(&args)?;
            cluster.nodes.push(Node {
                port,
                args,
                child: Some(child),
            });
        }
        for n in &cluster.nodes {
            wait_for(Duration::from_secs(10), || {
                Ok(cli(n.port, &["ping"])?.trim() == "PONG")
            })
            .with_context(|| format!("node {} never answered", n.port))?;
        }
        let mut create = vec!["--cluster".to_string(), "create".to_string()];
        create.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port)),
        );
        create.extend([
            "--cluster-replicas".to_string(),
            replicas.to_string(),
            "--cluster-yes".to_string(),
        ]);
        let out = Command::new("redis-cli").args(&create).output()?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        cluster.wait_ready(Duration::from_secs(30))?;
        // `cluster_state:ok` comes before every node has learnt the roles (a node listed
        // six masters of six just after, once on CI) and before replicas are in sync (WAIT
        // would count none): wait for both.
        wait_for(Duration::from_secs(30), || {
            for n in &cluster.nodes {
                let view = cli(n.port, &["cluster", "nodes"])?;
                let role = |r: &str| view.lines().filter(|l| l.contains(r)).count();
                if role("master") != masters || role("slave") != masters * replicas {
                    return Ok(false);
                }
            }
            for port in cluster.masters()? {
                let info = cli(port, &["info", "replication"])?;
                if info.matches("state=online").count() != replicas {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .context("the nodes never agreed on their roles")?;
        Ok(cluster)
    }

    /// Every node's port, masters and replicas, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The cluster's URL for `shroud storage --backend`: every node, so that any live one
    /// can give the slot map.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis://{}", nodes.join(","))
    }

    /// The ports of the nodes now serving as masters, as a live node sees them.
    pub fn masters(&self) -> Result<Vec<u16>> {
        let port = self.live().context("no live node")?;
        let nodes = cli(port, &["cluster", "nodes"])?;
        Ok(nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter_map(|addr| addr.split(['@', ':']).nth(1)?.parse().ok())
            .collect())
    }

    /// Kills the node on `port` with SIGKILL.
    pub fn kill(&mut self, port: u16) -> Result<()> {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .context("no such node")?;
        if let Some(mut child) = node.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the node on `port` again after [`RedisCluster::kill`], with its data and
    /// cluster state: it rejoins, as a replica if another took over meanwhile. Waits until
    /// every master has `replicas` replicas online again.
    pub fn restart(&mut self, port: u16, replicas: usize) -> Result<()> {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .context("no such node")?;
        if node.child.is_none() {
            node.child = Some(spawn(&node.args)?);
        }
        wait_for(Duration::from_secs(10), || {
            Ok(cli(port, &["ping"])?.trim() == "PONG")
        })?;
        wait_for(Duration::from_secs(60), || {
            for m in self.masters()? {
                let info = cli(m, &["info", "replication"])?;
                if info.matches("state=online").count() < replicas {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .context("the restarted node never caught up")?;
        self.wait_ready(Duration::from_secs(30))
    }

    /// The port of the master now serving `key`'s hash slot.
    pub fn master_of(&self, key: &str) -> Result<u16> {
        let slot: u32 = self
            .command(&["cluster", "keyslot", key])?
            .trim()
            .parse()
            .context("a slot number")?;
        let nodes = self.command(&["cluster", "nodes"])?;
        nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .find(|l| {
                l.split_whitespace().skip(8).any(|range| {
                    let ends: Vec<u32> = range.split('-').filter_map(|x| x.parse().ok()).collect();
                    match ends[..] {
                        [a, b] => (a..=b).contains(&slot),
                        [a] => a == slot,
                        _ => false,
                    }
                })
            })
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|addr| addr.split(['@', ':']).nth(1)?.parse().ok())
            .context("no master serves the key's slot")
    }

    /// `INFO section` of the node on `port`, as `field:value` lines.
    pub fn info(&self, port: u16, section: &str) -> Result<String> {
        cli(port, &["info", section])
    }

    /// Empties every master (`FLUSHALL`), for tests that share one cluster.
    pub fn flush_all(&self) -> Result<()> {
        for port in self.masters()? {
            let out = cli(port, &["flushall"])?;
            if out.trim() != "OK" {
                bail!("FLUSHALL on {port}: {out}");
            }
        }
        Ok(())
    }

    /// Waits until every live node reports `cluster_state:ok`.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        wait_for(timeout, || {
            let mut ok = true;
            for n in self.nodes.iter().filter(|n| n.child.is_some()) {
                ok &= cli(n.port, &["cluster", "info"])?.contains("cluster_state:ok");
            }
            Ok(ok)
        })
        .context("the cluster never became ready")
    }

    /// Waits until the node on `port` is no longer a master and `masters` nodes are: its
    /// replica has taken over (after SIGKILL, once the others fail it, about the node
    /// timeout of a second).
    pub fn wait_failover(&self, port: u16, masters: usize, timeout: Duration) -> Result<()> {
        wait_for(timeout, || {
            let now = self.masters()?;
            Ok(!now.contains(&port) && now.len() == masters)
        })
        .context("no replica took over")?;
        self.wait_ready(timeout)
    }

    /// Sends `lines` (one command each) to the node on `port` over one connection, as
    /// `redis-cli` reads them from its input; returns the replies.
    pub fn pipe(&self, port: u16, lines: &str) -> Result<String> {
        use std::io::Write;
        let mut child = Command::new("redis-cli")
            .arg("-p")
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("redis-cli")?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(lines.as_bytes())?;
        let out = child.wait_with_output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a command through a live node with `redis-cli -c` (following redirections).
    pub fn command(&self, args: &[&str]) -> Result<String> {
        let port = self.live().context("no live node")?;
        let mut all = vec!["-c"];
        all.extend_from_slice(args);
        cli(port, &all)
    }

    fn live(&self) -> Option<u16> {
        self.nodes
            .iter()
            .find(|n| n.child.is_some())
            .map(|n| n.port)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Starts `redis-server` with `args`.
fn spawn(args: &[String]) -> Result<Child> {
    Command::new("redis-server")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("redis-server (install the distribution's redis-server)")
}

/// A node's command line: cluster mode with its own bus port, every write fsynced before
/// it is acknowledged (`appendfsync always`), and a replica always allowed to take over.
fn node_args(port: u16, bus: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--cluster-enabled",
        "yes",
        "--cluster-port",
        &bus.to_string(),
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        &NODE_TIMEOUT_MS.to_string(),
        "--cluster-replica-validity-factor",
        "0",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--dir",
        &dir.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `redis-cli -p PORT ARGS...`, its output.
fn cli(port: u16, args: &[&str]) -> Result<String> {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .context("redis-cli")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `check` every 50 ms until it is true or `timeout` passes.
fn wait_for(timeout: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let until = Instant::now() + timeout;
    loop {
        if check().unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
