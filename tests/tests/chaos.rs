//! `umschaos` drills against real processes: the report must show acknowledged writes,
//! no lost or duplicated message, and shards that recovered.

use std::process::Command;

use serde_json::Value;
use tests::{TestCluster, binary};

fn drill(cluster: &TestCluster, scenario: &str) -> Value {
    let json = cluster.data_dir().join(format!("{scenario}.json"));
    let output = Command::new(binary("umschaos"))
        .args(["drill", scenario, "--duration", "9s", "--rate", "60", "--users", "8", "--cluster"])
        .arg(cluster.data_dir())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run umschaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{scenario} failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let reports: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    reports[0].clone()
}

#[test]
fn leader_kill_and_node_pause_lose_nothing() {
    let cluster = TestCluster::start(3, |_| {});
    for scenario in ["leader-kill", "node-pause"] {
        let report = drill(&cluster, scenario);
        let verdict = &report["verdict"];
        assert_eq!(report["passed"], true, "{report}");
        assert!(verdict["acknowledged"].as_u64().unwrap() > 200, "{scenario}: too few acknowledged writes: {verdict}");
        for violations in ["lost", "duplicates", "uid_violations", "divergent"] {
            assert_eq!(verdict[violations].as_array().unwrap().len(), 0, "{scenario}: {violations}: {verdict}");
        }
        assert!(report["faults"].as_array().unwrap().len() >= 2, "the fault and its undoing are logged: {report}");
    }
}

#[test]
fn unavailable_scenarios_say_why() {
    let cluster = TestCluster::start(1, |_| {});
    let output = Command::new(binary("umschaos")).args(["drill", "site-loss", "--cluster"]).arg(cluster.data_dir()).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("backup core"), "{}", String::from_utf8_lossy(&output.stderr));
}
