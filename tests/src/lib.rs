//! Test harness: starts real `umsd` processes on loopback with their own RocksDB
//! directories, kills (SIGKILL) and restarts them, and talks to them over HTTP.
//!
//! The `umsd` binary must be built first (`scripts/test` does `cargo build --bins`).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use gateways::imap::ImapSettings;
use gateways::smtp::SmtpSettings;
use gateways::smtp::authentication::MailAuthSettings;
use node::config::{Member, NodeConfig};
use serde_json::Value;

/// Finds a workspace binary (`umsd`, `umsctl`) in the target directory of this test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target directory");
    let binary = dir.join(name);
    assert!(
        binary.exists(),
        "{} not found: run `cargo build --bins` (scripts/test does) before these tests",
        binary.display()
    );
    binary
}

pub fn umsd_binary() -> PathBuf {
    binary("umsd")
}

/// Debian's python3: scripts/setup installs it with the modules the helper scripts use.
pub const PYTHON: &str = "/usr/bin/python3";

/// A helper script in `tests/python`.
pub fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join(name)
}

/// The JSON a finished helper printed; panics with its output if it failed.
pub fn json_printed(output: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "client failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("bad JSON from the client ({e}): {stdout}"))
}

/// Runs helper `script` (in `tests/python`) with `args` to the end and returns its JSON.
pub fn run_python(script: &str, args: &[&str]) -> Value {
    let output = std::process::Command::new(PYTHON)
        .arg(python_script(script))
        .args(args)
        .output()
        .expect("run python3 (scripts/setup installs it)");
    json_printed(&output)
}

/// The ports one node listens on: peer, HTTP, SMTP, submission, IMAP.
const PORTS_PER_NODE: usize = 7;

/// `PORTS_PER_NODE` distinct free ports on `ip`: all are held until all are chosen, so the
/// system cannot hand the same one out twice.
fn free_ports(ip: [u8; 4]) -> [u16; PORTS_PER_NODE] {
    let held: Vec<TcpListener> =
        (0..PORTS_PER_NODE).map(|_| TcpListener::bind(SocketAddr::from((ip, 0))).expect("bind port 0")).collect();
    std::array::from_fn(|i| held[i].local_addr().expect("local addr").port())
}

/// One `umsd` process of a [`TestCluster`].
pub struct TestNode {
    pub id: u64,
    pub config: NodeConfig,
    child: Option<Child>,
}

/// A cluster of real `umsd` processes; all are killed when it is dropped.
pub struct TestCluster {
    _dir: tempfile::TempDir,
    pub nodes: Vec<TestNode>,
    /// Small filesystems mounted for nodes' data, unmounted on drop.
    mounts: Vec<PathBuf>,
    /// An operator token every node accepts, created at launch.
    pub token: String,
}

impl TestCluster {
    /// Starts `count` nodes with free ports; `tweak` adjusts every node's config.
    pub fn start(count: usize, tweak: impl Fn(&mut NodeConfig)) -> Self {
        Self::launch_with_fresh_ports(|| Self::configure(count, &tweak))
    }

    /// Launches the cluster `make` lays out; if a node finds a port taken (another test
    /// process may grab a port between our choosing it and the node binding it), starts
    /// over with new ports.
    fn launch_with_fresh_ports(make: impl Fn() -> Self) -> Self {
        for _ in 0..3 {
            match Self::try_launch(make()) {
                Ok(cluster) => return cluster,
                Err(log) if log.contains("Address already in use") => {
                    eprintln!("a port was taken; starting over with new ports")
                }
                Err(log) => panic!("{log}"),
            }
        }
        panic!("ports kept being taken; is something binding many loopback ports?");
    }

    /// A one-node cluster restored from `backup` (`umsd restore BACKUP --config FILE`, as
    /// an operator restores one: a new cluster id, only itself as member), then started.
    pub fn start_restored(backup: &Path) -> Self {
        Self::launch_with_fresh_ports(|| {
            let cluster = Self::configure(1, |_| {});
            let path = cluster._dir.path().join("restored-node.toml");
            std::fs::write(&path, toml::to_string(&cluster.nodes[0].config).unwrap()).unwrap();
            let restored = std::process::Command::new(umsd_binary())
                .arg("restore")
                .arg(backup)
                .arg("--config")
                .arg(&path)
                .output();
            let restored = restored.expect("run umsd restore");
            assert!(restored.status.success(), "umsd restore: {}", String::from_utf8_lossy(&restored.stderr));
            cluster
        })
    }

    /// The cluster's directories and configurations, nothing started yet.
    fn configure(count: usize, tweak: impl Fn(&mut NodeConfig)) -> Self {
        let dir = tempfile::Builder::new().prefix("ums-test-").tempdir_in("/var/tmp").expect("temp dir");
        node::dev::ensure_dev_certificate(dir.path()).expect("test TLS certificate");
        let (tls_cert, tls_key) = node::dev::dev_tls_files(dir.path());
        let ports: std::collections::HashMap<u64, [u16; PORTS_PER_NODE]> =
            (1..=count as u64).map(|id| (id, free_ports(node::dev::local_peer_ip(id)))).collect();
        // Its own id, so that tools finding clusters among this machine's processes (a
        // drill given one node's address) never mix up clusters of tests running at once.
        let cluster_id = format!("test-{:016x}", rand::random::<u64>());
        node::dev::ensure_peer_certificates(dir.path(), &cluster_id, count).expect("peer certificates");
        let members: Vec<Member> = (1..=count as u64)
            .map(|id| {
                // Each node on its own loopback address (127.0.0.1N), as on separate hosts.
                let ip = node::dev::local_peer_ip(id);
                Member { id, peer: SocketAddr::from((ip, ports[&id][0])), http: SocketAddr::from((ip, ports[&id][1])) }
            })
            .collect();
        let nodes = members
            .iter()
            .map(|member| {
                let data_dir = dir.path().join(format!("node-{}", member.id));
                let ip = node::dev::local_peer_ip(member.id);
                let smtp = SmtpSettings {
                    listen: Some(SocketAddr::from((ip, ports[&member.id][2]))),
                    submission_listen: Some(SocketAddr::from((ip, ports[&member.id][3]))),
                    submissions_listen: Some(SocketAddr::from((ip, ports[&member.id][6]))),
                    hostname: format!("node{}.test", member.id),
                    tls_cert: Some(tls_cert.clone()),
                    tls_key: Some(tls_key.clone()),
                    // Off: this machine has no network, so a lookup through the system's
                    // resolver would hold every message for the whole timeout. The mail
                    // authentication tests turn it on with their own DNS server.
                    mail_auth: MailAuthSettings::disabled(),
                    ..SmtpSettings::default()
                };
                let imap = ImapSettings {
                    listen: Some(SocketAddr::from((ip, ports[&member.id][4]))),
                    tls_listen: Some(SocketAddr::from((ip, ports[&member.id][5]))),
                    tls_cert: Some(tls_cert.clone()),
                    tls_key: Some(tls_key.clone()),
                    ..ImapSettings::default()
                };
                let mut config = NodeConfig {
                    shards: 8,
                    replicas: count.min(3),
                    debug_faults: true,
                    smtp,
                    imap,
                    peer_tls: Some(node::dev::local_peer_tls(dir.path(), member.id)),
                    outbound: node::dev::local_outbound(),
                    http: node::http::HttpSettings::plain(),
                    ..NodeConfig::new(member, &cluster_id, data_dir, members.clone())
                };
                tweak(&mut config);
                TestNode { id: member.id, config, child: None }
            })
            .collect();
        Self { _dir: dir, nodes, mounts: Vec::new(), token: String::new() }
    }

    /// Like [`TestCluster::start`], with node `small`'s data on a tmpfs of `mib` MiB of
    /// its own, so a drill can fill that disk without touching anything else (root only).
    pub fn start_with_small_disk(count: usize, small: u64, mib: u64) -> Self {
        let mut cluster = Self::configure(count, |_| {});
        let dir = cluster.nodes[small as usize - 1].config.data_dir.clone();
        std::fs::create_dir_all(&dir).expect("data dir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs at {} failed (root needed)", dir.display());
        cluster.mounts.push(dir);
        Self::try_launch(cluster).unwrap_or_else(|log| panic!("{log}"))
    }

    /// Starts every node and waits until all are healthy; the failure's log otherwise.
    fn try_launch(mut cluster: Self) -> Result<Self, String> {
        let count = cluster.nodes.len();
        for id in 1..=count as u64 {
            cluster.spawn(id);
        }
        for id in 1..=count as u64 {
            cluster.try_wait_healthy(id)?;
        }
        let admin = cluster.admin_token(1);
        cluster.token = devkit::tokens::create_token(&cluster.url(1, ""), &admin, "tests", "operator", None)
            .map_err(|e| format!("creating the tests' operator token: {e:#}\n{}", cluster.log_tail(1)))?;
        Ok(cluster)
    }

    /// Node `id`'s own admin token (accepted by that node only).
    pub fn admin_token(&self, id: u64) -> String {
        let path = self.nodes[id as usize - 1].config.data_dir.join(devkit::tokens::NODE_TOKEN_FILE);
        devkit::tokens::read_token(&path).unwrap_or_else(|| panic!("no admin token at {}", path.display()))
    }

    /// The directory holding `node-N/node.toml` of every node (what `umschaos --cluster` reads).
    pub fn data_dir(&self) -> &Path {
        self._dir.path()
    }

    fn node(&mut self, id: u64) -> &mut TestNode {
        &mut self.nodes[id as usize - 1]
    }

    fn spawn(&mut self, id: u64) {
        let node = self.node(id);
        let (child, _) = node::dev::spawn_node(&umsd_binary(), &node.config).expect("start umsd");
        node.child = Some(child);
    }

    /// Adds a node the way an operator does: records it through node 1's API
    /// (`POST /api/v1/nodes`, which allocates its id), issues its certificate, and
    /// starts it with `join = true` and the bootstrap members. Returns its id.
    pub fn add_node(&mut self) -> u64 {
        self.add_node_labelled(&[])
    }

    /// `config` made node `id`'s, joining the running cluster: its id, its own data
    /// directory, hostname and certificate (issued now), `join = true`.
    fn joiner(&self, mut config: NodeConfig, id: u64) -> NodeConfig {
        let cluster_id = config.cluster_id.clone();
        node::dev::ensure_peer_certificates(self._dir.path(), &cluster_id, id as usize).expect("peer certificate");
        config.node_id = id;
        config.join = true;
        config.data_dir = self._dir.path().join(format!("node-{id}"));
        config.smtp.hostname = format!("node{id}.test");
        config.peer_tls = Some(node::dev::local_peer_tls(self._dir.path(), id));
        config
    }

    /// [`TestCluster::add_node`] with node labels (`("site", "backup")`: a backup-site node).
    pub fn add_node_labelled(&mut self, labels: &[(&str, &str)]) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let ip = node::dev::local_peer_ip(id);
        let ports = free_ports(ip);
        let mut config = self.joiner(self.nodes[0].config.clone(), id);
        config.peer_listen = SocketAddr::from((ip, ports[0]));
        config.http_listen = SocketAddr::from((ip, ports[1]));
        config.smtp.listen = Some(SocketAddr::from((ip, ports[2])));
        config.smtp.submission_listen = Some(SocketAddr::from((ip, ports[3])));
        config.smtp.submissions_listen = Some(SocketAddr::from((ip, ports[6])));
        config.imap.listen = Some(SocketAddr::from((ip, ports[4])));
        config.imap.tls_listen = Some(SocketAddr::from((ip, ports[5])));
        let labels: std::collections::BTreeMap<&str, &str> = labels.iter().copied().collect();
        let body = serde_json::json!({
            "peer": config.peer_listen.to_string(), "http": config.http_listen.to_string(), "labels": labels,
        });
        let added = devkit::http::post_with_retry(&self.url(1, "/api/v1/nodes"), &self.token, &body)
            .unwrap_or_else(|e| panic!("umsctl node add: {e}"));
        assert_eq!(added["id"].as_u64(), Some(id), "the cluster gave the new node another id: {added}");
        self.nodes.push(TestNode { id, config, child: None });
        self.spawn(id);
        self.wait_healthy(id);
        id
    }

    /// Brings a lost node's machine back as node `new`, as `umsctl backup-core reseed`
    /// says to (which recorded it): its old data discarded, a certificate for the new
    /// id, started at the old addresses with `join = true` and `members` (the nodes up
    /// now) as the ones to reach. Returns once it answers.
    pub fn reseed(&mut self, old: u64, new: u64, members: &[u64]) {
        assert_eq!(new, self.nodes.len() as u64 + 1, "reseeded nodes come in id order");
        if self.is_running(old) {
            self.kill(old);
        }
        let old_config = self.nodes[old as usize - 1].config.clone();
        std::fs::remove_dir_all(&old_config.data_dir).expect("discard the old data");
        let mut config = self.joiner(old_config, new);
        config.members = members
            .iter()
            .map(|&id| {
                let live = &self.nodes[id as usize - 1].config;
                Member { id, peer: live.peer_listen, http: live.http_listen }
            })
            .collect();
        self.nodes.push(TestNode { id: new, config, child: None });
        self.spawn(new);
        self.wait_healthy(new);
    }

    /// Starts node `id` and waits for it to exit by itself (a node that must refuse to
    /// run); panics if it is still running after `limit`.
    pub fn start_expecting_exit(&mut self, id: u64, limit: Duration) -> std::process::ExitStatus {
        assert!(self.node(id).child.is_none(), "node {id} is still running");
        self.spawn(id);
        let deadline = Instant::now() + limit;
        let mut child = self.node(id).child.take().expect("spawned");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {id} kept running:\n{}", self.log_tail(id));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no clean shutdown, as in a crash.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.node(id).child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    /// Starts a killed node again from its data directory.
    pub fn restart(&mut self, id: u64) {
        assert!(self.node(id).child.is_none(), "node {id} is still running");
        self.spawn(id);
        self.wait_healthy(id);
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.nodes[id as usize - 1].child.is_some()
    }

    /// Node `id`'s SMTP MX address (host:port).
    pub fn smtp(&self, id: u64) -> String {
        self.nodes[id as usize - 1].config.smtp.listen.expect("SMTP configured").to_string()
    }

    /// Node `id`'s IMAP address (host:port).
    pub fn imap(&self, id: u64) -> String {
        self.nodes[id as usize - 1].config.imap.listen.expect("IMAP configured").to_string()
    }

    /// Node `id`'s IMAPS (implicit TLS) address (host:port).
    pub fn imaps(&self, id: u64) -> String {
        self.nodes[id as usize - 1].config.imap.tls_listen.expect("IMAPS configured").to_string()
    }

    /// Node `id`'s SMTP submission address (host:port).
    pub fn submission(&self, id: u64) -> String {
        self.nodes[id as usize - 1].config.smtp.submission_listen.expect("submission configured").to_string()
    }

    /// Node `id`'s SMTPS (implicit TLS submission) address (host:port).
    pub fn smtps(&self, id: u64) -> String {
        self.nodes[id as usize - 1].config.smtp.submissions_listen.expect("SMTPS configured").to_string()
    }

    /// Changes stopped node `id`'s configuration for its next start.
    pub fn reconfigure(&mut self, id: u64, change: impl FnOnce(&mut NodeConfig)) {
        assert!(self.node(id).child.is_none(), "node {id} is still running");
        change(&mut self.node(id).config);
    }

    /// An HTTP client for node `id`: one that trusts its certificate when it serves HTTPS.
    pub fn agent(&self, id: u64) -> ureq::Agent {
        match &self.nodes[id as usize - 1].config.http.tls_cert {
            Some(cert) => devkit::http::agent_trusting(cert).expect("the node's certificate"),
            None => ureq::agent(),
        }
    }

    pub fn url(&self, id: u64, path: &str) -> String {
        let config = &self.nodes[id as usize - 1].config;
        format!("{}://{}{}", config.http.scheme(), config.http_listen, path)
    }

    pub fn wait_healthy(&mut self, id: u64) {
        self.try_wait_healthy(id).unwrap_or_else(|log| panic!("{log}"));
    }

    fn try_wait_healthy(&mut self, id: u64) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.node(id).child.as_mut().map(Child::try_wait) {
                return Err(format!("node {id} exited during start ({status}):\n{}", self.log_tail(id)));
            }
            if self.agent(id).get(&self.url(id, "/health")).timeout(Duration::from_secs(1)).call().is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("node {id} not healthy within 30 s:\n{}", self.log_tail(id)))
    }

    /// Node `id`'s whole log.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.nodes[id as usize - 1].config.data_dir.join("umsd.log")).unwrap_or_default()
    }

    pub fn log_tail(&self, id: u64) -> String {
        let text = self.log(id);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The cluster status as node `id` sees it.
    pub fn cluster_status(&self, id: u64) -> Value {
        get_json(&self.url(id, "/api/v1/cluster"), &self.token).expect("cluster status")
    }

    /// Creates a user (password `test-password`) through node 1, retrying while leaders
    /// are being elected.
    pub fn create_user(&self, email: &str) {
        self.create_user_with_password(email, "test-password");
    }

    pub fn create_user_with_password(&self, email: &str, password: &str) {
        let body = serde_json::json!({ "email": email, "name": email, "password": password });
        devkit::http::post_with_retry(&self.url(1, "/api/v1/users"), &self.token, &body)
            .unwrap_or_else(|e| panic!("create {email}: {e}"));
    }

    /// Appends the e-mail `raw` to `email`'s INBOX through node `id`'s HTTP API.
    pub fn deliver_email(&self, id: u64, email: &str, raw: &str) {
        let body = serde_json::json!({ "kind": "email", "body": raw });
        devkit::http::post_with_retry(&self.url(id, &format!("/api/v1/users/{email}/messages")), &self.token, &body)
            .unwrap_or_else(|e| panic!("deliver to {email}: {e}"));
    }

    /// The node that leads the most shards, as node `observer` sees it.
    pub fn busiest_leader(&self, observer: u64) -> u64 {
        let status = self.cluster_status(observer);
        let mut counts: std::collections::BTreeMap<u64, usize> = std::collections::BTreeMap::new();
        for shard in status["shards"].as_array().expect("shards") {
            if let Some(leader) = shard["leader"].as_u64() {
                *counts.entry(leader).or_default() += 1;
            }
        }
        counts.into_iter().max_by_key(|&(_, c)| c).map(|(n, _)| n).expect("some shard has a leader")
    }

    /// The `(uid, client_ref)` list of a user's INBOX on node `id`'s own replica.
    pub fn local_messages(&self, id: u64, email: &str) -> Option<Vec<(u64, String)>> {
        devkit::http::replica_messages(&self.url(id, ""), &self.token, email)
    }

    /// The `(uid, raw message)` list of a user's INBOX on node `id`'s own replica.
    pub fn local_bodies(&self, id: u64, email: &str) -> Option<Vec<(u64, Vec<u8>)>> {
        use base64::Engine as _;
        let url = self.url(id, &format!("/api/v1/users/{email}/messages?local=true&bodies=true&limit=10000"));
        let body = get_json(&url, &self.token).ok()?;
        let decode = |m: &Value| {
            base64::engine::general_purpose::STANDARD
                .decode(m["body_base64"].as_str().unwrap_or(""))
                .unwrap_or_default()
        };
        Some(body["messages"].as_array()?.iter().map(|m| (m["uid"].as_u64().unwrap_or(0), decode(m))).collect())
    }

    /// Waits until every running node's replica holds the same messages for `email`.
    pub fn converged_messages(&self, email: &str, timeout: Duration) -> Vec<(u64, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let lists: Vec<_> =
                self.nodes.iter().filter(|n| n.child.is_some()).map(|n| self.local_messages(n.id, email)).collect();
            if lists.iter().all(Option::is_some) && lists.windows(2).all(|w| w[0] == w[1]) {
                return lists[0].clone().unwrap_or_default();
            }
            assert!(
                Instant::now() < deadline,
                "replicas of {email} did not converge: {:?}",
                lists.iter().map(|l| l.as_ref().map(Vec::len)).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            // Nodes restarted by someone else (a chaos drill) are not our children.
            if let Some(pid) = devkit::process::pid_of(&node.config.data_dir.join("node.toml")) {
                let _ = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
        // Nodes a drill added beside ours (`add-node` writes node-N/node.toml here).
        for entry in std::fs::read_dir(self._dir.path()).into_iter().flatten().flatten() {
            if let Some(pid) = devkit::process::pid_of(&entry.path().join("node.toml")) {
                let _ = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
        for mount in &self.mounts {
            let _ = std::process::Command::new("umount").arg("--lazy").arg(mount).status();
        }
    }
}

/// The JSON answer to a GET of `url` with `token`.
pub fn get_json(url: &str, token: &str) -> Result<Value, String> {
    match devkit::http::get(url, token).timeout(Duration::from_secs(10)).call() {
        Ok(response) => response.into_json().map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The text of a GET with `token` (e.g. `/metrics`).
pub fn get_text(url: &str, token: &str) -> Result<String, String> {
    match devkit::http::get(url, token).timeout(Duration::from_secs(10)).call() {
        Ok(response) => response.into_string().map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Outcome of one HTTP append: `Some(uid)` if acknowledged with 201.
pub fn append(url: &str, token: &str, client_ref: &str, body: &str) -> Option<u64> {
    let message = serde_json::json!({ "kind": "sms", "body": body, "client_ref": client_ref });
    match devkit::http::post(url, token).timeout(Duration::from_secs(15)).send_json(message) {
        Ok(response) if response.status() == 201 => response.into_json::<Value>().ok()?["uid"].as_u64(),
        _ => None,
    }
}

/// Enqueues a webhook call for `email` through node `id`, retrying (with the same
/// Idempotency-Key, so never twice) until accepted; returns its (sequence, shard).
pub fn enqueue_webhook(cluster: &TestCluster, id: u64, email: &str, target: &str, body: &str) -> Option<(u64, u64)> {
    let item = serde_json::json!({ "channel": "webhook", "target": target, "body": body });
    let key = format!("enqueue-{email}-{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = devkit::http::post(&cluster.url(id, &format!("/api/v1/users/{email}/outbound")), &cluster.token)
            .timeout(Duration::from_secs(15))
            .set("Idempotency-Key", &key)
            .send_json(item.clone());
        match response {
            Ok(response) if response.status() == 202 => {
                let item = response.into_json::<Value>().ok()?;
                return Some((item["seq"].as_u64()?, item["shard"].as_u64()?));
            }
            Err(ureq::Error::Status(code, _)) if code != 503 => return None,
            _ if Instant::now() > deadline => return None,
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
