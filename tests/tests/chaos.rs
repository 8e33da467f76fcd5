//! `umschaos` drills against real processes: the report must show acknowledged writes,
//! no lost or duplicated message, and shards that recovered.

use std::process::Command;

use serde_json::Value;
use tests::{TestCluster, binary};

/// Runs a drill and returns its report; `expect_pass` is the exit status it must have.
fn drill_expecting(cluster: &TestCluster, scenario: &str, expect_pass: bool) -> Value {
    let json = cluster.data_dir().join(format!("{scenario}.json"));
    let output = Command::new(binary("umschaos"))
        .args(["drill", scenario, "--duration", "9s", "--rate", "60", "--users", "8", "--cluster"])
        .arg(cluster.data_dir())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run umschaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    let expected = if expect_pass { 0 } else { 1 };
    assert_eq!(output.status.code(), Some(expected), "{scenario}:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let reports: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    reports[0].clone()
}

/// Runs each scenario against `cluster`; every one must pass with real traffic.
fn drills_pass(cluster: &TestCluster, scenarios: &[&str]) {
    for &scenario in scenarios {
        let report = drill_expecting(cluster, scenario, true);
        let verdict = &report["verdict"];
        assert_eq!(report["passed"], true, "{report}");
        assert!(verdict["acknowledged"].as_u64().unwrap() > 200, "{scenario}: too few acknowledged writes: {verdict}");
        for violations in ["lost", "duplicates", "uid_violations", "divergent", "isolated_acks"] {
            assert_eq!(verdict[violations].as_array().unwrap().len(), 0, "{scenario}: {violations}: {verdict}");
        }
        assert!(report["faults"].as_array().unwrap().len() >= 2, "the fault and its undoing are logged: {report}");
    }
}

#[test]
fn leader_kill_and_node_pause_lose_nothing() {
    let cluster = TestCluster::start(3, |_| {});
    drills_pass(&cluster, &["leader-kill", "node-pause"]);
}

/// Partitions by iptables rules on the nodes' own loopback addresses: the cut-off node
/// (a follower, then the busiest leader) acknowledges nothing while isolated, and the
/// majority goes on; 20 % packet loss slows the cluster but loses nothing.
#[test]
fn partitions_and_packet_loss_lose_nothing() {
    let cluster = TestCluster::start(3, |_| {});
    drills_pass(&cluster, &["partition-minority", "partition-leader", "packet-loss"]);
    let rules = Command::new("iptables").arg("-S").output().expect("iptables");
    assert!(!String::from_utf8_lossy(&rules.stdout).contains("UMS-CHAOS"), "the drill removes its rules");
}

#[test]
fn unavailable_scenarios_say_why() {
    let cluster = TestCluster::start(1, |_| {});
    let output = Command::new(binary("umschaos")).args(["drill", "site-loss", "--cluster"]).arg(cluster.data_dir()).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("backup core"), "{}", String::from_utf8_lossy(&output.stderr));
}

/// The proof that drills can fail: with fsync deliberately disabled (and the WAL kept in
/// memory), a power cut of every node loses acknowledged messages and the checker says
/// so; with fsync, the same drill loses nothing.
#[test]
fn power_cut_catches_acknowledgements_without_fsync() {
    let safe = TestCluster::start(3, |_| {});
    let report = drill_expecting(&safe, "power-cut", true);
    assert_eq!(report["verdict"]["lost"].as_array().unwrap().len(), 0, "{report}");
    drop(safe);

    let reckless = TestCluster::start(3, |config| config.unsafe_skip_fsync = true);
    let report = drill_expecting(&reckless, "power-cut", false);
    let lost = report["verdict"]["lost"].as_array().unwrap().len();
    assert!(lost > 0, "acknowledged-but-unsynced writes must show up as lost: {report}");
}
