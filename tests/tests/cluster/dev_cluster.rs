//! `umsd dev` as a newcomer uses it: it starts a 3-node cluster with demo users, stops
//! every child on Ctrl-C, and resumes from the same data when started again.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tests::{append, binary, get_json};

const NODE1: &str = "http://127.0.0.1:7180";

/// Starts `umsd dev` and waits until it reports the cluster up.
fn start_dev(data: &std::path::Path) -> Child {
    let mut child = Command::new(binary("umsd"))
        .args(["dev", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start umsd dev");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = lines.next().expect("umsd dev exited before the cluster was up").unwrap();
        if line.contains("is up") {
            break;
        }
        assert!(Instant::now() < deadline, "umsd dev did not come up");
    }
    // Keep draining stdout so the parent never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

fn interrupt_and_wait(child: &mut Child) {
    Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "umsd dev should exit cleanly on Ctrl-C: {status}");
}

#[test]
fn dev_cluster_starts_with_demo_users_stops_on_ctrl_c_and_resumes() {
    let data = tempfile::Builder::new().prefix("ums-dev-").tempdir_in("/var/tmp").unwrap();
    let mut dev = start_dev(data.path());
    // The operator token umsd dev printed is kept where umsctl finds it.
    let token = devkit::tokens::read_token(&data.path().join("operator.token")).expect("operator.token written");
    let user = get_json(&format!("{NODE1}/api/v1/users/user100@ministry.go.ke"), &token).unwrap();
    assert_eq!(user["msisdn"], "+254700000100");
    let by_number = get_json("http://127.0.0.1:7380/api/v1/users/+254700000007", &token).unwrap();
    assert_eq!(by_number["email"], "user7@ministry.go.ke");
    let uid =
        append("http://127.0.0.1:7280/api/v1/users/user1@ministry.go.ke/messages", &token, "dev-1", "before restart")
            .unwrap();

    interrupt_and_wait(&mut dev);
    for port in [7180, 7280, 7380] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "node on {port} still running after Ctrl-C"
        );
    }

    let mut dev = start_dev(data.path());
    let again = devkit::tokens::read_token(&data.path().join("operator.token")).unwrap();
    assert_eq!(again, token, "a restarted dev cluster keeps its operator token");
    let messages = get_json(&format!("{NODE1}/api/v1/users/user1@ministry.go.ke/messages"), &token).unwrap();
    let refs: Vec<_> = messages["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["uid"].as_u64().unwrap(), m["client_ref"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(refs, vec![(uid, "dev-1".to_string())]);

    // The running cluster grows by node 4 on its 7400 block, and the driver moves
    // replicas to it; Ctrl-C stops it too, and a restart brings it back with the others.
    let added = Command::new(binary("umsd"))
        .args(["dev", "--data"])
        .arg(data.path())
        .arg("add-node")
        .output()
        .expect("umsd dev add-node");
    let said = String::from_utf8_lossy(&added.stdout);
    assert!(added.status.success(), "{said}{}", String::from_utf8_lossy(&added.stderr));
    assert!(said.contains("node 4 joined") && said.contains("balanced in"), "{said}");
    let nodes = get_json(&format!("{NODE1}/api/v1/nodes"), &token).unwrap();
    let node4 = nodes["nodes"].as_array().unwrap().iter().find(|n| n["id"] == 4).cloned().unwrap();
    assert!(node4["replicas"].as_u64().unwrap() > 0, "{node4}");
    assert_eq!(node4["http"], "127.0.0.1:7480");
    interrupt_and_wait(&mut dev);
    assert!(std::net::TcpStream::connect(("127.0.0.1", 7480)).is_err(), "node 4 still running after Ctrl-C");
    let mut dev = start_dev(data.path());
    assert!(get_json("http://127.0.0.1:7480/api/v1/users/user1@ministry.go.ke", &token).is_ok());
    interrupt_and_wait(&mut dev);
}
