//! Durability across restarts: the whole cluster killed and restarted keeps every
//! acknowledged message; a node that was down while the others compacted their logs
//! catches up by snapshot, one bigger than a peer frame (sent in pieces).

use std::time::Duration;

use tests::{TestCluster, append};

#[test]
fn whole_cluster_restart_keeps_all_data() {
    let mut cluster = TestCluster::start(3, |_| {});
    let email = "keeper@restart.go.ke";
    cluster.create_user(email);
    let url = cluster.url(2, &format!("/api/v1/users/{email}/messages"));
    let acked: Vec<u64> =
        (0..50).map(|i| append(&url, &cluster.token, &format!("r{i}"), "kept").expect("append acknowledged")).collect();
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.restart(id);
    }
    let messages = cluster.converged_messages(email, Duration::from_secs(30));
    let uids: Vec<u64> = messages.iter().map(|m| m.0).collect();
    assert_eq!(uids, acked);
    assert_eq!(
        messages.iter().map(|m| m.1.clone()).collect::<Vec<_>>(),
        (0..50).map(|i| format!("r{i}")).collect::<Vec<_>>()
    );
    // And the cluster still takes writes.
    let url = cluster.url(3, &format!("/api/v1/users/{email}/messages"));
    assert_eq!(append(&url, &cluster.token, "after", "new"), Some(51));
}

#[test]
fn a_node_behind_a_compacted_log_catches_up_by_snapshot() {
    let mut cluster = TestCluster::start(3, |config| {
        config.raft.compact_every = 16;
        config.raft.compact_threshold = 40;
        config.raft.compact_keep = 5;
    });
    let email = "lagger@restart.go.ke";
    cluster.create_user(email);
    cluster.kill(3);
    let url = cluster.url(1, &format!("/api/v1/users/{email}/messages"));
    // Every 20th message is 1 MiB: the snapshot (over 10 MiB) needs several 4 MiB pieces.
    let big = "x".repeat(1 << 20);
    for i in 0..200 {
        let body = if i % 20 == 0 { big.as_str() } else { "while node 3 is down" };
        append(&url, &cluster.token, &format!("s{i}"), body).expect("two of three nodes acknowledge");
    }
    // The shard's log on the live nodes now starts far beyond what node 3 has.
    let shard = cluster.cluster_status(1)["shards"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|s| s["applied_index"].as_u64())
        .cloned()
        .unwrap();
    assert!(shard["first_index"].as_u64().unwrap() > 100, "log was not compacted: {shard}");
    cluster.restart(3);
    let messages = cluster.converged_messages(email, Duration::from_secs(30));
    assert_eq!(messages.len(), 200);
    assert!(cluster.is_running(3));
    assert_eq!(cluster.local_messages(3, email).unwrap(), messages);
    let pieces: f64 = (1..=2)
        .map(|node| {
            let metrics = tests::get_text(&cluster.url(node, "/metrics"), &cluster.token).unwrap_or_default();
            metrics
                .lines()
                .find_map(|l| l.strip_prefix("ums_peer_snapshot_chunks_sent_total "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        })
        .sum();
    assert!(pieces >= 3.0, "the snapshot did not travel in pieces ({pieces})");
}
