//! `umschaos` drills against real processes: the report must show acknowledged writes,
//! no lost or duplicated message, and shards that recovered.

use std::process::Command;

use serde_json::Value;
use tests::{TestCluster, binary};

/// Runs `umschaos drill SCENARIO ARGS...` and returns its reports; `expect_pass` is the
/// exit status it must have.
fn drill_expecting(cluster: &TestCluster, scenario: &str, args: &[&str], expect_pass: bool) -> Vec<Value> {
    let json = cluster.data_dir().join(format!("{scenario}.json"));
    let output = Command::new(binary("umschaos"))
        .args(["drill", scenario])
        .args(args)
        .arg("--cluster")
        .arg(cluster.data_dir())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run umschaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    let expected = if expect_pass { 0 } else { 1 };
    assert_eq!(
        output.status.code(),
        Some(expected),
        "{scenario}:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

const SHORT: [&str; 6] = ["--duration", "9s", "--rate", "60", "--users", "8"];

/// `umschaos drill all --quick`, as an SRE would run it, on a cluster whose node 3 keeps
/// its data on a small filesystem of its own (512 MiB) (so disk-full can fill it), with a
/// backup site of two nodes (so switchover can swap the sites and back): every scenario
/// runs, passes with real traffic (HTTP, SMTP, outbound webhooks), logs its faults and their
/// undoing; partitioned nodes acknowledge nothing; every queued webhook arrives, under one
/// key; the drill leaves no iptables rules behind.
#[test]
fn drill_all_quick_passes_every_scenario() {
    let mut cluster = TestCluster::start_with_small_disk(3, 3, 512);
    for _ in 0..2 {
        cluster.add_node_labelled(&[("site", "backup")]);
    }
    let reports = drill_expecting(&cluster, "all", &["--quick"], true);
    let scenarios: Vec<&str> = reports.iter().map(|r| r["scenario"].as_str().unwrap()).collect();
    assert_eq!(scenarios, chaos::drill::AVAILABLE, "every available scenario ran");
    for report in &reports {
        let (scenario, verdict) = (&report["scenario"], &report["verdict"]);
        assert_eq!(report["passed"], true, "{report}");
        assert!(verdict["acknowledged"].as_u64().unwrap() > 300, "{scenario}: too few acknowledged writes: {verdict}");
        for violations in ["lost", "duplicates", "uid_violations", "divergent", "isolated_acks"] {
            assert_eq!(verdict[violations].as_array().unwrap().len(), 0, "{scenario}: {violations}: {verdict}");
        }
        assert!(report["faults"].as_array().unwrap().len() >= 2, "the fault and its undoing are logged: {report}");
        let outbound = &report["outbound"];
        assert!(outbound["queued"].as_u64().unwrap() > 50, "{scenario}: outbound items queued: {outbound}");
        for violations in ["undelivered", "duplicated"] {
            assert_eq!(
                outbound[violations].as_array().unwrap().len(),
                0,
                "{scenario}: outbound {violations}: {outbound}"
            );
        }
    }
    // The site loss, last: the backup site took writes within the RTO target, and lost
    // nothing acknowledged before the recovery point the promotion reported.
    let site_loss = &reports.last().unwrap()["site_loss"];
    let rto_ms = site_loss["rto_ms"].as_u64().expect("a write acknowledged on the promoted site");
    assert!(rto_ms < 30_000, "RTO {rto_ms} ms: {site_loss}");
    if let Some(oldest) = site_loss["oldest_missing_before_loss_ms"].as_u64() {
        assert!(oldest <= site_loss["reported_rpo_ms"].as_u64().unwrap(), "{site_loss}");
    }
    assert_eq!(site_loss["lost_nodes"], serde_json::json!([1, 2, 3]), "{site_loss}");
    for node in 1..=3 {
        assert!(
            cluster.log(node).contains("this node was removed from the cluster"),
            "old primary node {node} refused"
        );
    }
    assert!(cluster.log(3).contains("storage failure"), "disk-full stopped node 3 on its full disk");
    let rules = Command::new("iptables").arg("-S").output().expect("iptables");
    assert!(!String::from_utf8_lossy(&rules.stdout).contains("UMS-CHAOS"), "the drills remove their rules");
}

#[test]
fn unavailable_scenarios_say_why() {
    let cluster = TestCluster::start(1, |_| {});
    for scenario in ["site-loss", "switchover"] {
        let output = Command::new(binary("umschaos"))
            .args(["drill", scenario, "--cluster"])
            .arg(cluster.data_dir())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{scenario}");
        let why = String::from_utf8_lossy(&output.stderr);
        assert!(why.contains("needs a backup site"), "{scenario}: {why}");
    }
}

/// The proof that drills can fail: with fsync deliberately disabled (and the WAL kept in
/// memory), a power cut of every node loses acknowledged messages and the checker says
/// so; with fsync, the same drill loses nothing.
#[test]
fn power_cut_catches_acknowledgements_without_fsync() {
    let safe = TestCluster::start(3, |_| {});
    let report = &drill_expecting(&safe, "power-cut", &SHORT, true)[0];
    assert_eq!(report["verdict"]["lost"].as_array().unwrap().len(), 0, "{report}");
    drop(safe);

    let reckless = TestCluster::start(3, |config| config.unsafe_skip_fsync = true);
    // A shard that lost its log may never answer again: its queued webhooks need not be
    // waited for long.
    let args = [&SHORT[..], &["--outbound-wait", "10s"]].concat();
    let report = &drill_expecting(&reckless, "power-cut", &args, false)[0];
    let lost = report["verdict"]["lost"].as_array().unwrap().len();
    assert!(lost > 0, "acknowledged-but-unsynced writes must show up as lost: {report}");
}

/// A drill aimed at a running cluster by one node's HTTP address (`--nodes`), writing
/// only over SMTP: the other members are found, the leader is killed and restarted, and
/// every message that got `250` is stored exactly once.
#[test]
fn a_drill_over_smtp_finds_the_cluster_from_one_address() {
    let cluster = TestCluster::start(3, |_| {});
    let entry = cluster.url(2, "").trim_start_matches("http://").to_string();
    let json = cluster.data_dir().join("smtp.json");
    let output = Command::new(binary("umschaos"))
        .args([
            "drill",
            "leader-kill",
            "--nodes",
            &entry,
            "--workload",
            "smtp",
            "--duration",
            "9s",
            "--rate",
            "60",
            "--users",
            "8",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("run umschaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("through SMTP"), "{stdout}");
    let report: Vec<Value> = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let verdict = &report[0]["verdict"];
    assert!(verdict["acknowledged"].as_u64().unwrap() > 200, "{verdict}");
    assert!(report[0]["faults"].to_string().contains("kill"), "{}", report[0]["faults"]);
    // A node that is not running here cannot be drilled.
    let output =
        Command::new(binary("umschaos")).args(["drill", "leader-kill", "--nodes", "127.0.0.1:1"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no umsd process"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
