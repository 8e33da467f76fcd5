//! The backup site between real processes: two nodes labelled `site = backup` join a
//! 3-node primary under load; the placement driver gives each a learner of every group
//! (meta group included) and never a voter; every acknowledged append is then present
//! exactly once on the backup replicas too. With the backup site down the primary keeps
//! committing, and the recovery point it reports (`GET /api/v1/backup-core`, `umsctl
//! backup-core status`, `/metrics`) counts what the backup lacks; it falls back to zero
//! once the backup nodes are back. Groups with standing learners still quiesce.
//!
//! Site loss: with the load running, every primary node is killed at once; `umsctl
//! backup-core promote` (refused while the primary was up) makes the backup site the
//! primary; it takes writes and serves IMAP, holds every acknowledged append once (bar
//! those acknowledged after the recovery point the promotion reported for their shard),
//! and an old primary node started again from its data is refused and stops; `umsctl
//! backup-core reseed` records the lost machines again as new backup nodes, which,
//! started with fresh data, are seeded with every group.
//!
//! Switchover: under load, `umsctl backup-core switchover` swaps the sites: every group
//! ends with the old backup nodes as voters and the old primary ones as learners, and
//! every acknowledged append is there exactly once on all five replicas.

use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{TestCluster, append, get_json, get_text};

use std::collections::HashMap;

use tests::run_python;

use crate::load::{Load, Outcome, USERS, check_exactly_once_on, converged, email, unthrottled};

pub const BACKUP: [u64; 2] = [4, 5];

fn ids(value: &Value) -> Vec<u64> {
    value.as_array().into_iter().flatten().filter_map(Value::as_u64).collect()
}

fn backup_report(cluster: &TestCluster, via: u64) -> Option<Value> {
    get_json(&cluster.url(via, "/api/v1/backup-core"), &cluster.token).ok()
}

pub fn umsctl(cluster: &TestCluster, args: &[&str]) -> std::process::Output {
    umsctl_on(cluster, 1, args)
}

fn umsctl_on(cluster: &TestCluster, node: u64, args: &[&str]) -> std::process::Output {
    std::process::Command::new(tests::binary("umsctl"))
        .args(["--node", &cluster.url(node, ""), "--token", &cluster.token])
        .args(args)
        .output()
        .expect("run umsctl")
}

/// Waits until every group has both backup nodes as learners, no voter outside the
/// primary site, and its membership settled.
fn wait_until_seeded(cluster: &TestCluster) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let shards = get_json(&cluster.url(1, "/api/v1/shards"), &cluster.token).expect("shards");
        let shards = shards["shards"].as_array().cloned().unwrap_or_default();
        let seeded = shards.iter().all(|s| {
            ids(&s["learners"]) == BACKUP && ids(&s["voters"]).iter().all(|v| *v <= 3) && s["settled"] == true
        });
        if !shards.is_empty() && seeded {
            return;
        }
        assert!(Instant::now() < deadline, "the backup site was never seeded: {shards:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A 3-node primary site with its users and a seeded 2-node backup site.
pub fn two_sites() -> TestCluster {
    let mut cluster = TestCluster::start(3, unthrottled);
    crate::scaling::wait_for_node_records(&cluster, 3);
    for n in 1..=USERS {
        cluster.create_user(&email(n));
    }
    for expected in BACKUP {
        assert_eq!(cluster.add_node_labelled(&[("site", "backup")]), expected);
    }
    wait_until_seeded(&cluster);
    cluster
}

/// A gauge's value in node `node`'s `/metrics`.
fn gauge(cluster: &TestCluster, node: u64, name: &str) -> f64 {
    let text = get_text(&cluster.url(node, "/metrics"), &cluster.token).unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("node {node}'s /metrics lacks {name}"))
}

#[test]
fn a_backup_site_holds_every_acknowledged_write_and_reports_its_recovery_point() {
    let mut cluster = TestCluster::start(3, unthrottled);
    crate::scaling::wait_for_node_records(&cluster, 3);
    for n in 1..=USERS {
        cluster.create_user(&email(n));
    }
    let load = Load::start(&cluster, &[1, 2, 3]);
    load.wait_for(100);

    // The backup site joins under load and is seeded: a learner of every group each.
    for expected in BACKUP {
        assert_eq!(cluster.add_node_labelled(&[("site", "backup")]), expected);
    }
    wait_until_seeded(&cluster);
    load.wait_for(600);
    let outcomes = load.finish();
    // Every acknowledged append once on the voters and on both backup replicas.
    check_exactly_once_on(&cluster, &outcomes, |view| {
        let mut holders = ids(&view["voters"]);
        holders.extend(ids(&view["learners"]));
        holders
    });
    let status = cluster.cluster_status(4);
    let led_on_backup = status["shards"].as_array().unwrap().iter().filter(|s| s["leader"] == 4).count();
    assert_eq!(led_on_backup, 0, "a backup node leads nothing: {status}");

    // Caught up, the recovery point is zero for every shard.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = backup_report(&cluster, 2).expect("backup-core report");
        if report["uncovered"].as_array().is_some_and(Vec::is_empty) && report["worst_entries"] == 0 {
            assert_eq!(ids(&report["backup_nodes"]), BACKUP);
            break;
        }
        assert!(Instant::now() < deadline, "the backup never caught up: {report}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The backup site goes down: the primary keeps committing (learners count for no
    // quorum), and what the backup lacks is reported, in entries and in seconds.
    for node in BACKUP {
        cluster.kill(node);
    }
    let url = cluster.url(1, &format!("/api/v1/users/{}/messages", email(1)));
    let started = Instant::now();
    let mut written = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        assert!(append(&url, &cluster.token, &format!("while-away-{written}"), "x").is_some(), "append refused");
        written += 1;
    }
    let report = backup_report(&cluster, 3).expect("backup-core report");
    let user = get_json(&cluster.url(1, &format!("/api/v1/users/{}", email(1))), &cluster.token).unwrap();
    let shard = user["shard"].as_u64().unwrap();
    let entry = report["shards"].as_array().unwrap().iter().find(|s| s["shard"] == shard).cloned().unwrap();
    let (entries, seconds) = (entry["entries"].as_u64().unwrap(), entry["seconds"].as_f64().unwrap());
    assert!(entries >= written, "shard {shard}: {written} appends while away, reported {entries}: {entry}");
    assert!((1.0..30.0).contains(&seconds), "shard {shard}: the oldest missing entry is ~1.5 s old: {entry}");
    assert!(report["worst_seconds"].as_f64().unwrap() >= seconds);
    // The leader's gauge (refreshed every second) says as much.
    let leader = status_leader(&cluster, shard);
    let deadline = Instant::now() + Duration::from_secs(5);
    while gauge(&cluster, leader, "ums_backup_lag_entries") < written as f64 {
        assert!(Instant::now() < deadline, "node {leader}'s ums_backup_lag_entries stays below {written}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(gauge(&cluster, leader, "ums_backup_lag_seconds") >= 1.0);
    let shown = umsctl(&cluster, &["backup-core", "status"]);
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("recovery point: at most") && text.contains(&format!("{shard}")), "{text}");

    // Back, they catch up from the log and the recovery point falls to zero again.
    for node in BACKUP {
        cluster.restart(node);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let report = backup_report(&cluster, 1);
        if report
            .as_ref()
            .is_some_and(|r| r["worst_entries"] == 0 && r["uncovered"].as_array().is_some_and(Vec::is_empty))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the backup did not catch up again: {report:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let messages = cluster.converged_messages(&email(1), Duration::from_secs(30));
    assert_eq!(messages.iter().filter(|(_, r)| r.starts_with("while-away-")).count(), written as usize);

    // Idle, groups with standing learners quiesce too, on the backup nodes as well.
    let deadline = Instant::now() + Duration::from_secs(60);
    while gauge(&cluster, 4, "ums_raft_groups_quiesced") < 5.0 {
        assert!(Instant::now() < deadline, "no group with a backup learner quiesced");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The node leading `shard`, as node 1 sees it.
fn status_leader(cluster: &TestCluster, shard: u64) -> u64 {
    let view = get_json(&cluster.url(1, &format!("/api/v1/shards/{shard}")), &cluster.token).expect("shard");
    view["leader"].as_u64().expect("a leader")
}

#[test]
fn after_the_primary_site_is_lost_the_promoted_backup_serves_every_acknowledged_write() {
    let mut cluster = two_sites();

    // While the primary answers, a promotion is refused, with the reason.
    let refused = umsctl_on(&cluster, 4, &["backup-core", "promote", "--yes"]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("still reachable"), "{why}");

    let load = Load::start(&cluster, &[1, 2, 3]);
    load.wait_for(600);
    let rpo = backup_report(&cluster, 1).expect("report before the loss");
    eprintln!("recovery point before the loss: {} entries, {} s", rpo["worst_entries"], rpo["worst_seconds"]);
    let lost_at = Instant::now();
    for node in 1..=3 {
        cluster.kill(node);
    }
    let outcomes = load.finish();

    let promoted = umsctl_on(&cluster, 4, &["--json", "backup-core", "promote", "--yes"]);
    assert!(promoted.status.success(), "promote: {}", String::from_utf8_lossy(&promoted.stderr));
    let plan = tests::json_printed(&promoted);
    assert_eq!(plan["groups"].as_array().map(Vec::len), Some(9), "the meta group and 8 shards: {plan}");
    // The backup site takes writes (RTO: loss to the first write acknowledged there).
    append_soon(&cluster, 4, 1, "after-promotion");
    eprintln!("RTO {:.1}s (promotion included)", lost_at.elapsed().as_secs_f64());
    for n in 1..=USERS {
        append_soon(&cluster, 5, n, &format!("second-{n}"));
    }
    check_after_site_loss(&cluster, &outcomes, &plan);
    // IMAP answers on the promoted site, with the same messages.
    let listed = run_python("imap_client.py", &["refs", &cluster.imap(4), &email(1), "test-password"]);
    let stored = converged(&cluster, &BACKUP, &email(1));
    assert_eq!(listed.as_array().map(Vec::len), Some(stored.len()), "{listed}");

    // Promoting twice: there is no backup site any more.
    let again = umsctl_on(&cluster, 5, &["backup-core", "promote", "--yes"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no backup site"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // An old primary node started again from its data is refused, and stops.
    let status = cluster.start_expecting_exit(1, Duration::from_secs(30));
    assert_eq!(status.code(), Some(78), "an old primary node must stop:\n{}", cluster.log_tail(1));
    assert!(cluster.log(1).contains("this node was removed from the cluster"), "{}", cluster.log_tail(1));

    // The lost machines become the new backup site: recorded again with new ids, then
    // started with fresh data; each gets a learner of every group holding every write.
    let reseeded = umsctl_on(&cluster, 4, &["--json", "backup-core", "reseed"]);
    assert!(reseeded.status.success(), "reseed: {}", String::from_utf8_lossy(&reseeded.stderr));
    let added = tests::json_printed(&reseeded);
    let pairs: Vec<(u64, u64)> = added["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["old"].as_u64().unwrap(), n["id"].as_u64().unwrap()))
        .collect();
    assert_eq!(pairs, [(1, 6), (2, 7), (3, 8)], "{added}");
    let again = umsctl_on(&cluster, 4, &["backup-core", "reseed"]);
    assert!(!again.status.success(), "nothing left to reseed");
    for (old, new) in pairs {
        cluster.reseed(old, new, &BACKUP);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let report = backup_report(&cluster, 4).expect("report");
        if ids(&report["backup_nodes"]) == [6, 7, 8]
            && report["uncovered"].as_array().is_some_and(Vec::is_empty)
            && report["shards"].as_array().unwrap().iter().all(|s| ids(&s["missing"]).is_empty())
        {
            break;
        }
        assert!(Instant::now() < deadline, "the new backup site was never seeded: {report}");
        std::thread::sleep(Duration::from_millis(250));
    }
    for n in 1..=USERS {
        assert_eq!(converged(&cluster, &[6, 7, 8], &email(n)), converged(&cluster, &BACKUP, &email(n)), "user {n}");
    }
}

/// Appends `client_ref` to user `n` through `node`, retrying (the same reference, so
/// once) while the promoted groups elect their leaders; panics after 30 s.
fn append_soon(cluster: &TestCluster, node: u64, n: usize, client_ref: &str) {
    let url = cluster.url(node, &format!("/api/v1/users/{}/messages", email(n)));
    let deadline = Instant::now() + Duration::from_secs(30);
    while append(&url, &cluster.token, client_ref, "x").is_none() {
        assert!(Instant::now() < deadline, "the promoted site takes no write for user {n} through node {node}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every acknowledged append once on both promoted replicas, at its UID, except those
/// acknowledged after the recovery point the promotion `plan` reported for their shard
/// (the moment the newest entry its backup replica holds was proposed); nothing stored
/// twice.
fn check_after_site_loss(cluster: &TestCluster, outcomes: &[Outcome], plan: &Value) {
    let points: HashMap<u64, u64> = plan["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| Some((g["group"].as_u64()?, g["newest_entry_ms"].as_u64()?)))
        .collect();
    let mut missing = 0;
    for n in 1..=USERS {
        let user = get_json(&cluster.url(4, &format!("/api/v1/users/{}", email(n))), &cluster.token).expect("user");
        let point = points.get(&user["shard"].as_u64().unwrap()).copied();
        let stored = converged(cluster, &BACKUP, &email(n));
        let mut by_ref: HashMap<&str, Vec<u64>> = HashMap::new();
        for (uid, client_ref) in &stored {
            by_ref.entry(client_ref.as_str()).or_default().push(*uid);
        }
        for outcome in outcomes.iter().filter(|o| o.user == n) {
            let present = by_ref.get(outcome.client_ref.as_str()).cloned().unwrap_or_default();
            let client_ref = &outcome.client_ref;
            assert!(present.len() <= 1, "user {n}: {client_ref} stored {} times", present.len());
            match outcome.uid {
                Some(uid) if present.is_empty() => {
                    assert!(
                        point.is_some_and(|point| outcome.answered_ms >= point),
                        "user {n}: {client_ref} (UID {uid}) acknowledged at {} ms, before the recovery point {point:?} reported for its shard, lost",
                        outcome.answered_ms
                    );
                    missing += 1;
                }
                Some(uid) => assert_eq!(present, [uid], "user {n}: {client_ref} at its UID"),
                None => {}
            }
        }
    }
    eprintln!("{missing} acknowledged appends after the reported recovery point are missing");
}

#[test]
fn a_switchover_under_load_swaps_the_sites_and_loses_nothing() {
    let cluster = two_sites();
    let load = Load::start(&cluster, &[1, 2, 3, 4, 5]);
    load.wait_for(300);
    let switched = umsctl(&cluster, &["--json", "backup-core", "switchover"]);
    assert!(switched.status.success(), "switchover: {}", String::from_utf8_lossy(&switched.stderr));
    let report = tests::json_printed(&switched);
    eprintln!("switchover: {report}");
    assert_eq!((ids(&report["primary"]), ids(&report["backup"])), (BACKUP.to_vec(), vec![1, 2, 3]));
    load.wait_for(600);
    let outcomes = load.finish();
    let shards = get_json(&cluster.url(4, "/api/v1/shards"), &cluster.token).expect("shards");
    for shard in shards["shards"].as_array().unwrap() {
        assert_eq!((ids(&shard["voters"]), ids(&shard["learners"])), (BACKUP.to_vec(), vec![1, 2, 3]), "{shard}");
        assert!(BACKUP.contains(&shard["leader"].as_u64().unwrap()), "{shard}");
    }
    check_exactly_once_on(&cluster, &outcomes, |view| {
        let mut holders = ids(&view["voters"]);
        holders.extend(ids(&view["learners"]));
        holders
    });
    // The old primary is now the backup site: its recovery point is reported.
    let report = backup_report(&cluster, 1).expect("report");
    assert_eq!(ids(&report["backup_nodes"]), [1, 2, 3]);
}
