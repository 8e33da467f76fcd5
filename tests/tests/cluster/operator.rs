//! What an operator does: import an HR export with `umsctl`, re-import it, look at the
//! cluster, and rely on nodes of another cluster being refused.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use node::config::{Member, NodeConfig};
use tests::{TestCluster, binary, get_json};

fn umsctl(cluster: &TestCluster, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(binary("umsctl"))
        .arg("--node")
        .arg(cluster.nodes[0].config.http_listen.to_string())
        .args(args)
        .env("UMS_TOKEN", &cluster.token)
        .output()
        .expect("run umsctl");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into(),
        String::from_utf8_lossy(&output.stderr).into(),
    )
}

#[test]
fn hr_import_reports_bad_rows_and_reimport_updates_without_duplicates() {
    let cluster = TestCluster::start(3, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("staff.csv");
    std::fs::write(
        &csv,
        "employee_number,name,ministry,email,mobile,fax\n\
         E001,Achieng Otieno,Health,achieng@health.go.ke,+254711000001,\n\
         E002,Bad Email,Health,not-an-email,+254711000002,\n\
         E003,Kamau Njoroge,Treasury,kamau@treasury.go.ke,+254711000003,+254201000003\n\
         E004,Bad Mobile,Treasury,badmobile@treasury.go.ke,0711,\n",
    )
    .unwrap();
    let (code, stdout, stderr) = umsctl(&cluster, &["user", "import", csv.to_str().unwrap()]);
    assert_eq!(code, 1, "failed rows make the exit code non-zero\n{stdout}\n{stderr}");
    assert!(stderr.contains("line 3:") && stderr.contains("line 5:"), "{stderr}");
    assert!(!stderr.contains("line 2:") && !stderr.contains("line 4:"), "{stderr}");
    assert!(stdout.contains("2 created, 0 updated, 2 failed"), "{stdout}");
    assert!(stdout.contains("achieng@health.go.ke"), "one-time passwords are shown: {stdout}");

    let by_mobile = get_json(&cluster.url(2, "/api/v1/users/+254711000003"), &cluster.token).unwrap();
    assert_eq!(by_mobile["email"], "kamau@treasury.go.ke");
    assert_eq!(by_mobile["fax"], "+254201000003");
    assert_eq!(get_json(&cluster.url(3, "/api/v1/users/emp:E001"), &cluster.token).unwrap()["name"], "Achieng Otieno");

    // Re-import with a changed mobile number: an update, not a second user.
    std::fs::write(
        &csv,
        "employee_number,name,ministry,email,mobile,fax\n\
         E001,Achieng Otieno,Health,achieng@health.go.ke,+254711999001,\n\
         E003,Kamau Njoroge,Treasury,kamau@treasury.go.ke,+254711000003,+254201000003\n",
    )
    .unwrap();
    let (code, stdout, stderr) = umsctl(&cluster, &["user", "import", csv.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("0 created, 2 updated, 0 failed"), "{stdout}");
    assert_eq!(
        get_json(&cluster.url(1, "/api/v1/users/+254711999001"), &cluster.token).unwrap()["email"],
        "achieng@health.go.ke"
    );
    let old_number = get_json(&cluster.url(1, "/api/v1/users/+254711000001"), &cluster.token);
    assert!(old_number.is_err(), "the old mobile number must be released: {old_number:?}");

    // The work above shows up in the Prometheus metrics of the node that did it.
    let metrics: String = (1..=3)
        .map(|id| {
            devkit::http::get(&cluster.url(id, "/metrics"), &cluster.token).call().unwrap().into_string().unwrap()
        })
        .collect();
    for name in [
        "ums_raft_proposals_total",
        "ums_raft_fsyncs_total",
        "ums_apply_latency_seconds",
        "ums_leader_changes_total",
        "ums_raft_inbox_depth",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }

    // Move shard 3's leadership to whichever node does not lead it now.
    let leader_of_3 = || {
        cluster.cluster_status(1)["shards"].as_array().unwrap().iter().find(|s| s["shard"] == 3).unwrap()["leader"]
            .as_u64()
    };
    let target = (1..=3).find(|&n| Some(n) != leader_of_3()).unwrap();
    let (code, stdout, stderr) = umsctl(&cluster, &["leader", "transfer", "3", &target.to_string()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while leader_of_3() != Some(target) {
        assert!(std::time::Instant::now() < deadline, "shard 3 did not move to node {target}");
        std::thread::sleep(Duration::from_millis(50));
    }

    let (code, stdout, _) = umsctl(&cluster, &["status"]);
    assert_eq!(code, 0);
    let rows: Vec<Vec<&str>> =
        stdout.lines().filter(|l| l.contains("1,2,3")).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 9, "meta group + 8 shards:\n{stdout}");
    assert!(rows.iter().all(|row| row[2] != "-"), "every shard shows its leader:\n{stdout}");
}

#[test]
fn a_node_of_another_cluster_is_refused() {
    let cluster = TestCluster::start(1, |_| {});
    let target = &cluster.nodes[0].config;
    let dir = tempfile::tempdir().unwrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let me = Member { id: 2, peer, http };
    let members = vec![Member { id: 1, peer: target.peer_listen, http: target.http_listen }, me.clone()];
    // A node of another cluster, with that cluster's own CA and certificate.
    node::dev::ensure_peer_certificates(dir.path(), "another-cluster", 2).unwrap();
    let stranger = NodeConfig {
        shards: 8,
        replicas: 2,
        peer_tls: Some(node::dev::local_peer_tls(dir.path(), 2)),
        http: node::http::HttpSettings::plain(),
        ..NodeConfig::new(&me, "another-cluster", dir.path().join("stranger"), members)
    };
    let config_path = dir.path().join("stranger.toml");
    std::fs::write(&config_path, toml::to_string(&stranger).unwrap()).unwrap();
    let mut child = Command::new(binary("umsd"))
        .arg("--config")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let log = cluster.log(1);
        if log.contains("refusing a peer connection: TLS handshake failed") {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(refused, "no refusal logged:\n{}", cluster.log_tail(1));
}
