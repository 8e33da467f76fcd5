//! Replica moves between real processes: on a 4-node cluster (each shard on 3 nodes),
//! `umsctl shard move` takes a shard's replica off its leader's node onto the fourth
//! node while 8 writers append through every node; the leader is killed while the
//! shard is in joint consensus and the next leader finishes the move. Every
//! acknowledged append is then present exactly once, at its UID, on every replica of
//! the new placement, and the old node holds none.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};
use tests::{TestCluster, append, get_json};

const USERS: usize = 12;
const WRITERS: usize = 8;

fn email(n: usize) -> String {
    format!("user{n}@scaling.go.ke")
}

fn shard_view(cluster: &TestCluster, node: u64, shard: u64) -> Option<Value> {
    get_json(&cluster.url(node, &format!("/api/v1/shards/{shard}")), &cluster.token).ok()
}

fn ids(value: &Value) -> Vec<u64> {
    value.as_array().into_iter().flatten().filter_map(Value::as_u64).collect()
}

fn set_peer_delay(cluster: &TestCluster, node: u64, ms: u64) {
    let url = cluster.url(node, "/api/v1/debug/faults");
    cluster
        .agent(node)
        .post(&url)
        .set("Authorization", &format!("Bearer {}", cluster.token))
        .send_json(json!({ "peer_delay_ms": ms }))
        .expect("set peer delay");
}

fn umsctl(cluster: &TestCluster, node: u64, args: &[&str]) -> std::process::Output {
    std::process::Command::new(tests::binary("umsctl"))
        .args(["--node", &cluster.url(node, ""), "--token", &cluster.token])
        .args(args)
        .output()
        .expect("run umsctl")
}

#[test]
fn a_replica_moves_under_load_and_survives_its_leader_dying_while_joint() {
    let mut cluster = TestCluster::start(4, |_| {});
    wait_for_node_records(&cluster, 4);
    for n in 1..=USERS {
        cluster.create_user(&email(n));
    }
    let user = get_json(&cluster.url(1, &format!("/api/v1/users/{}", email(1))), &cluster.token).expect("user");
    let shard = user["shard"].as_u64().expect("shard");
    let before = shard_view(&cluster, 1, shard).expect("shard view");
    let voters = ids(&before["voters"]);
    let leader = before["leader"].as_u64().expect("leader");
    let to = (1..=4).find(|n| !voters.contains(n)).expect("a node outside the shard");
    eprintln!("shard {shard}: voters {voters:?}, leader {leader}; moving {leader} -> {to}");

    // Writers to every user through random nodes, until told to stop.
    let urls: Vec<Vec<String>> = (1..=4)
        .map(|node| (1..=USERS).map(|n| cluster.url(node, &format!("/api/v1/users/{}/messages", email(n)))).collect())
        .collect();
    type Outcome = (usize, String, Option<u64>);
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let (next, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (urls, outcomes, next, stop) =
                (urls.clone(), Arc::clone(&outcomes), Arc::clone(&next), Arc::clone(&stop));
            let token = cluster.token.clone();
            std::thread::spawn(move || {
                let mut rng = rand::thread_rng();
                while !stop.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let user = i % USERS + 1;
                    let client_ref = format!("m{i}");
                    let acked =
                        append(&urls[rng.gen_range(0..4)][user - 1], &token, &client_ref, &format!("message {i}"));
                    outcomes.lock().unwrap().push((user, client_ref, acked));
                }
            })
        })
        .collect();
    while outcomes.lock().unwrap().len() < 200 {
        std::thread::sleep(Duration::from_millis(20));
    }

    // Slow every frame a little, so the joint configuration lasts long enough to be seen.
    for node in 1..=4 {
        set_peer_delay(&cluster, node, 60);
    }
    let moved = umsctl(
        &cluster,
        2,
        &["--json", "shard", "move", &shard.to_string(), "--from", &leader.to_string(), "--to", &to.to_string()],
    );
    assert!(moved.status.success(), "umsctl shard move: {}", String::from_utf8_lossy(&moved.stderr));
    let target: Vec<u64> = ids(&tests::json_printed(&moved)["voters"]);
    assert!(target.contains(&to) && !target.contains(&leader), "{target:?}");

    // Wait for joint consensus, then kill whoever leads it then.
    let deadline = Instant::now() + Duration::from_secs(60);
    let joint_leader = loop {
        assert!(Instant::now() < deadline, "the move never entered joint consensus");
        if let Some(view) = shard_view(&cluster, to, shard)
            && view["joint"] == true
            && let Some(leader) = view["leader"].as_u64()
        {
            break leader;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    eprintln!("shard {shard} joint under node {joint_leader}: killing it");
    cluster.kill(joint_leader);
    for node in (1..=4).filter(|&n| n != joint_leader) {
        set_peer_delay(&cluster, node, 0);
    }
    std::thread::sleep(Duration::from_millis(1500));
    cluster.restart(joint_leader);
    set_peer_delay(&cluster, joint_leader, 0);

    // The move finishes: the target's voters, nothing joint, no learner left.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view = shard_view(&cluster, 1, shard);
        if let Some(view) = &view
            && view["settled"] == true
            && ids(&view["voters"]) == target
        {
            break;
        }
        assert!(Instant::now() < deadline, "shard {shard} did not settle on {target:?}: {view:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.join().unwrap();
    }
    let listed = umsctl(&cluster, 3, &["shard", "list"]);
    assert!(listed.status.success());
    eprintln!("{}", String::from_utf8_lossy(&listed.stdout));

    // Exactly once, at its UID, on every replica of every user's shard.
    let outcomes = outcomes.lock().unwrap().clone();
    let acked = outcomes.iter().filter(|o| o.2.is_some()).count();
    eprintln!("{acked} of {} appends acknowledged", outcomes.len());
    assert!(acked > 300, "too few acknowledged appends ({acked})");
    for n in 1..=USERS {
        let user = get_json(&cluster.url(1, &format!("/api/v1/users/{}", email(n))), &cluster.token).expect("user");
        let user_shard = user["shard"].as_u64().unwrap();
        let holders = ids(&shard_view(&cluster, 1, user_shard).expect("view")["voters"]);
        let lists = converged(&cluster, &holders, &email(n));
        let mut by_ref: HashMap<&str, Vec<u64>> = HashMap::new();
        for (uid, client_ref) in &lists {
            by_ref.entry(client_ref.as_str()).or_default().push(*uid);
        }
        for (_, client_ref, acked_uid) in outcomes.iter().filter(|o| o.0 == n) {
            let present = by_ref.get(client_ref.as_str()).cloned().unwrap_or_default();
            match acked_uid {
                Some(uid) => assert_eq!(present, vec![*uid], "user {n}: acknowledged {client_ref} once, at UID {uid}"),
                None => {
                    assert!(present.len() <= 1, "user {n}: unacknowledged {client_ref} stored {} times", present.len())
                }
            }
        }
    }
    // The old node gave its replica up.
    let status = cluster.cluster_status(leader);
    let still_there = status["shards"].as_array().unwrap().iter().any(|s| s["shard"].as_u64() == Some(shard));
    assert!(!still_there, "node {leader} still holds shard {shard}");
}

/// Waits until the meta group records `count` nodes (bootstrap members register
/// themselves within a second or two of a new cluster's start).
fn wait_for_node_records(cluster: &TestCluster, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_json(&cluster.url(1, "/api/v1/nodes"), &cluster.token)
        .map(|body| body["nodes"].as_array().map_or(0, Vec::len))
        .unwrap_or(0)
        < count
    {
        assert!(Instant::now() < deadline, "the bootstrap members never got node records");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The same messages on every holder's own replica (waits for the last applies).
fn converged(cluster: &TestCluster, holders: &[u64], email: &str) -> Vec<(u64, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lists: Vec<_> = holders.iter().map(|&n| cluster.local_messages(n, email)).collect();
        if lists.iter().all(Option::is_some) && lists.windows(2).all(|w| w[0] == w[1]) {
            return lists[0].clone().unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "replicas of {email} on {holders:?} did not converge");
        std::thread::sleep(Duration::from_millis(200));
    }
}
