//! Issue 15's ground: a real Redis Cluster of 3 masters and 3 replicas on loopback, from the
//! distribution's packages. Writes that `WAIT` saw reach a replica survive their master's
//! SIGKILL: the replica takes over and serves them, and the cluster is whole again.

use std::time::Duration;

use shroud_testkit::redis_cluster::RedisCluster;

/// The master serving `key`'s hash slot, by its port.
fn owner(cluster: &RedisCluster, key: &str) -> u16 {
    cluster.master_of(key).expect("the key's master")
}

#[test]
fn a_master_killed_with_sigkill_is_replaced_and_loses_no_acknowledged_write() {
    let mut cluster = RedisCluster::start(3, 1).expect("cluster");
    assert_eq!(cluster.ports().len(), 6);
    assert_eq!(cluster.masters().expect("masters").len(), 3);
    // One store's keys share a hash tag, so they live on one master; WAIT 1 returns once a
    // replica holds every write before it on the connection.
    let master = owner(&cluster, "{store}:0");
    let mut lines: String = (0..50)
        .map(|i| format!("set {{store}}:{i} v{i}\n"))
        .collect();
    lines.push_str("wait 1 5000\n");
    let replies = cluster.pipe(master, &lines).expect("writes");
    let replies: Vec<&str> = replies.lines().collect();
    assert_eq!(replies.len(), 51, "{replies:?}");
    assert!(replies[..50].iter().all(|r| *r == "OK"), "{replies:?}");
    assert_eq!(replies[50], "1", "WAIT: one replica has every write");
    cluster.kill(master).expect("kill -9");
    cluster
        .wait_failover(master, 3, Duration::from_secs(30))
        .expect("the replica took over");
    assert_ne!(owner(&cluster, "{store}:0"), master);
    for i in 0..50 {
        let got = cluster
            .command(&["get", &format!("{{store}}:{i}")])
            .expect("get");
        assert_eq!(got.trim(), format!("v{i}"), "key {i} after the failover");
    }
}
