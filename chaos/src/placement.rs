//! The membership drills' steps, through the cluster's own API: `add-node` (a node
//! joins a local cluster and the placement driver gives it its share),
//! `drain-node` (the newest node is drained under load and removed), and
//! `move-under-partition` (a shard replica is moved and the shard's leader is cut off
//! between entering and leaving joint consensus). [`settled`] is the membership check
//! every drill ends with: each shard led, on exactly its target voters, not joint, no
//! learner left.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::faults::Faults;
use devkit::node_file::{JoinerAddresses, joiner_config};

/// The last node id with a loopback address of its own (127.0.0.1N, up to .255 - 10).
const LAST_LOCAL_NODE: u64 = 245;

fn get(cluster: &Cluster, path: &str) -> anyhow::Result<Value> {
    let mut last = None;
    for node in &cluster.nodes {
        match cluster.get(node.id, path).timeout(Duration::from_secs(10)).call() {
            Ok(response) => return Ok(response.into_json()?),
            Err(e) => last = Some(e),
        }
    }
    bail!("no node answered {path}: {last:?}")
}

fn post(cluster: &Cluster, path: &str, body: Value) -> anyhow::Result<Value> {
    let mut last = None;
    for node in &cluster.nodes {
        match cluster.post(node.id, path).timeout(Duration::from_secs(15)).send_json(body.clone()) {
            Ok(response) => return Ok(response.into_json().unwrap_or(Value::Null)),
            Err(ureq::Error::Status(code, response)) => {
                let answer: Value = response.into_json().unwrap_or(Value::Null);
                bail!("{path}: HTTP {code}: {}", answer["error"].as_str().unwrap_or(""))
            }
            Err(e) => last = Some(e),
        }
    }
    bail!("no node answered {path}: {last:?}")
}

fn ids(value: &Value) -> Vec<u64> {
    value.as_array().into_iter().flatten().filter_map(Value::as_u64).collect()
}

/// The up nodes and the most voters any shard has.
fn capacity(cluster: &Cluster) -> anyhow::Result<(Vec<u64>, usize)> {
    let nodes = get(cluster, "/api/v1/nodes")?;
    let up: Vec<u64> = nodes["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["state"] == "up")
        .filter_map(|n| n["id"].as_u64())
        .collect();
    let shards = get(cluster, "/api/v1/shards")?;
    let replicas =
        shards["shards"].as_array().into_iter().flatten().map(|s| ids(&s["voters"]).len()).max().unwrap_or(0);
    Ok((up, replicas))
}

/// Why a membership drill cannot run here, if it cannot.
pub fn skip_reason(scenario: &str, cluster: &Cluster) -> Option<String> {
    let (up, replicas) = match capacity(cluster) {
        Ok(capacity) => capacity,
        Err(e) => return Some(format!("the cluster does not say where its replicas are: {e:#}")),
    };
    match scenario {
        "add-node" if next_id(cluster).is_ok_and(|id| id > LAST_LOCAL_NODE) => Some(format!(
            "every loopback address for a node is taken (ids are never reused; 1-{LAST_LOCAL_NODE} were used): start a fresh cluster"
        )),
        "add-node" if cluster.umsctl().is_none() => {
            Some("umsctl (to issue the new node's certificate) is not beside umsd".into())
        }
        "drain-node" | "move-under-partition" if up.len() <= replicas => {
            Some(format!("needs more up nodes ({}) than replicas per shard ({replicas}); run add-node first", up.len()))
        }
        _ => None,
    }
}

/// The id the cluster will give the next node: one above every id it ever recorded.
fn next_id(cluster: &Cluster) -> anyhow::Result<u64> {
    let nodes = get(cluster, "/api/v1/nodes")?;
    Ok(nodes["nodes"].as_array().into_iter().flatten().filter_map(|n| n["id"].as_u64()).max().unwrap_or(0) + 1)
}

/// `add-node`: a new node joins under load, as an operator adds one: recorded through
/// the API, given a certificate of the cluster's CA (`umsctl ca issue`), started with
/// node 1's settings and `join = true` on its own loopback address beside the other
/// nodes' directories; then waits until the driver has given it replicas and no shard
/// is moving.
pub fn add_node(cluster: &Cluster, faults: &mut Faults, limit: Duration) -> anyhow::Result<()> {
    let id = next_id(cluster)?;
    let template_node = &cluster.nodes[0];
    let ip = std::net::Ipv4Addr::new(127, 0, 0, 10 + id as u8);
    let ports = free_ports(ip, 7)?;
    let at = |i: usize| std::net::SocketAddr::from((ip, ports[i]));
    let addresses = JoinerAddresses {
        peer: at(0),
        http: at(1),
        smtp: at(2),
        submission: at(3),
        submissions: at(4),
        imap: at(5),
        imaps: at(6),
    };
    let recorded = post(cluster, "/api/v1/nodes", json!({ "peer": at(0).to_string(), "http": at(1).to_string() }))?;
    ensure!(recorded["id"].as_u64() == Some(id), "the cluster gave the new node id {} (expected {id})", recorded["id"]);
    faults.log(format!("node {id} recorded (peer {}, http {})", at(0), at(1)));

    let template = std::fs::read_to_string(&template_node.config_path)?;
    let table: toml::Table = toml::from_str(&template)?;
    let ca = table.get("peer_tls").and_then(|t| t.get("ca")).and_then(|v| v.as_str()).map(std::path::PathBuf::from);
    let pki =
        ca.as_ref().and_then(|ca| ca.parent()).context("node 1 has no [peer_tls] CA to issue a certificate from")?;
    let umsctl = cluster.umsctl().context("umsctl is not beside umsd")?;
    let issued = Command::new(umsctl)
        .args(["ca", "issue", "--dir"])
        .arg(pki)
        .args(["--cluster-id", &template_node.config.cluster_id, "--node-id", &id.to_string()])
        .output()?;
    ensure!(issued.status.success(), "umsctl ca issue: {}", String::from_utf8_lossy(&issued.stderr));
    let data_dir = template_node
        .config
        .data_dir
        .parent()
        .context("node 1's data directory has no parent")?
        .join(format!("node-{id}"));
    std::fs::create_dir_all(&data_dir)?;
    let (cert, key) = (pki.join(format!("node-{id}.pem")), pki.join(format!("node-{id}.key")));
    let config = joiner_config(&template, id, &addresses, &data_dir, &cert, &key)?;
    let config_path = data_dir.join("node.toml");
    std::fs::write(&config_path, config)?;
    devkit::process::start_umsd(&cluster.umsd, &config_path)?;
    let base = format!("http://{}", at(1));
    wait_for(Duration::from_secs(60), || {
        Ok(ureq::get(&format!("{base}/health")).timeout(Duration::from_secs(1)).call().is_ok().then_some(()))
    })?;
    faults.log(format!("node {id} joined ({})", config_path.display()));
    let started = Instant::now();
    // Balanced: nothing moving, and the driver would move nothing more (it works a few
    // shards at a time, so a quiet moment between its rounds is not the end).
    let held = wait_for(limit, || {
        let nodes = get(cluster, "/api/v1/nodes")?;
        let replicas = node_field(&nodes, id, "replicas");
        if replicas == 0 || nodes["shards_moving"] != 0 {
            return Ok(None);
        }
        let plan = post(cluster, "/api/v1/rebalance?dry_run=true", json!({}))?;
        Ok(plan["moves"].as_array().is_some_and(Vec::is_empty).then_some(replicas))
    })?;
    faults.log(format!(
        "node {id} holds {held} replicas; balanced {:.1}s after joining",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// `count` free ports on `ip`, all held until all are chosen.
fn free_ports(ip: std::net::Ipv4Addr, count: usize) -> anyhow::Result<Vec<u16>> {
    let held: Vec<std::net::TcpListener> =
        (0..count).map(|_| std::net::TcpListener::bind((ip, 0))).collect::<Result<_, _>>()?;
    Ok(held.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?)
}

fn node_field(nodes: &Value, id: u64, field: &str) -> u64 {
    nodes["nodes"].as_array().into_iter().flatten().find(|n| n["id"] == id).and_then(|n| n[field].as_u64()).unwrap_or(0)
}

/// The node `drain-node` drains: the newest up one. The drill's clients leave it out, as
/// an operator takes a node out of the load balancer before draining it.
pub fn drain_victim(cluster: &Cluster) -> anyhow::Result<u64> {
    let (up, _) = capacity(cluster)?;
    up.iter().max().copied().context("no up node")
}

/// `drain-node`: the newest up node is drained under load until it holds nothing, then
/// removed from the cluster for good (it stops by itself).
pub fn drain_node(cluster: &Cluster, faults: &mut Faults, limit: Duration) -> anyhow::Result<()> {
    let victim = drain_victim(cluster)?;
    post(cluster, &format!("/api/v1/nodes/{victim}/drain"), json!({}))?;
    faults.log(format!("drain node {victim}"));
    let started = Instant::now();
    wait_for(limit, || {
        let nodes = get(cluster, "/api/v1/nodes")?;
        if let Some(entry) = nodes["nodes"].as_array().into_iter().flatten().find(|n| n["id"] == victim)
            && let Some(why) = entry["drain_blocked"].as_str()
        {
            bail!("node {victim} cannot be drained: {why}");
        }
        let (replicas, leaders) = (node_field(&nodes, victim, "replicas"), node_field(&nodes, victim, "leaders"));
        Ok((replicas == 0 && leaders == 0).then_some(()))
    })?;
    faults.log(format!("node {victim} drained in {:.1}s", started.elapsed().as_secs_f64()));
    for node in &cluster.nodes {
        match cluster.get(node.id, "/api/v1/nodes").timeout(Duration::from_secs(2)).call() {
            Ok(_) => {
                let url = cluster.url(node.id, &format!("/api/v1/nodes/{victim}"));
                devkit::http::delete(&url, &node.token).timeout(Duration::from_secs(15)).call()?;
                faults.log(format!("node {victim} removed"));
                return Ok(());
            }
            Err(_) => continue,
        }
    }
    bail!("no node answered to remove node {victim}")
}

/// `move-under-partition`: a drill user's shard moves a follower's replica to a node
/// outside it while frames are slowed (so joint consensus lasts long enough to catch),
/// and its leader is cut off the moment the shard is joint, for `hold`.
///
/// Joint consensus lasts only from the entering change's commit to the leaving one's
/// (a few hundred milliseconds), so the drill watches the leader's own view, not one
/// forwarded through another node, and when a move completes between two looks it
/// moves the replica back and tries again.
pub fn move_under_partition(cluster: &Cluster, faults: &mut Faults, shard: u64, hold: Duration) -> anyhow::Result<()> {
    const ATTEMPTS: usize = 4;
    if cluster.allows_debug_faults() {
        faults.slow_network(cluster, Duration::from_millis(50))?;
    }
    for attempt in 1..=ATTEMPTS {
        let (up, _) = capacity(cluster)?;
        let view = get(cluster, &format!("/api/v1/shards/{shard}"))?;
        let (voters, leader) = (ids(&view["voters"]), view["leader"].as_u64().context("shard without a leader")?);
        let from = *voters.iter().find(|&&v| v != leader).context("a follower")?;
        let to = *up.iter().find(|n| !voters.contains(n)).context("an up node outside the shard")?;
        post(cluster, &format!("/api/v1/shards/{shard}/move"), json!({ "from": from, "to": to }))?;
        faults.log(format!("move shard {shard}: node {from} -> node {to} (leader {leader}, attempt {attempt})"));
        match watch_for_joint(cluster, shard, leader, to, Duration::from_secs(60))? {
            Some(joint_leader) => {
                faults.log(format!("shard {shard} is joint under node {joint_leader}"));
                faults.isolate(cluster, joint_leader)?;
                std::thread::sleep(hold);
                return faults.heal(cluster);
            }
            None => faults.log(format!("shard {shard} moved to node {to} between two looks; moving it again")),
        }
    }
    bail!("shard {shard} moved {ATTEMPTS} times without being seen joint")
}

/// Polls `shard` on `leader` (then on whichever node leads it) until it is joint
/// (`Some(leader)`) or its voters include `to` without being joint (`None`: the move
/// finished unseen).
fn watch_for_joint(
    cluster: &Cluster,
    shard: u64,
    leader: u64,
    to: u64,
    limit: Duration,
) -> anyhow::Result<Option<u64>> {
    let path = format!("/api/v1/shards/{shard}");
    let mut asked = leader;
    let mut last = Value::Null;
    wait_for_every(limit, Duration::from_millis(10), || {
        let Ok(response) = cluster.get(asked, &path).timeout(Duration::from_secs(2)).call() else {
            return Ok(None);
        };
        last = response.into_json()?;
        let current = last["leader"].as_u64();
        if last["joint"] == true && current.is_some() {
            return Ok(Some(current));
        }
        if ids(&last["voters"]).contains(&to) {
            return Ok(Some(None));
        }
        if let Some(current) = current.filter(|c| cluster.ids().contains(c)) {
            asked = current;
        }
        Ok(None)
    })
    .with_context(|| format!("shard {shard} never became joint; last seen as {last}"))
}

/// Waits until `check` gives a value, polling; fails after `limit` or on its error.
fn wait_for<T>(limit: Duration, check: impl FnMut() -> anyhow::Result<Option<T>>) -> anyhow::Result<T> {
    wait_for_every(limit, Duration::from_millis(100), check)
}

/// [`wait_for`], polling every `every`.
fn wait_for_every<T>(
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check()? {
            return Ok(value);
        }
        ensure!(Instant::now() < deadline, "not reached within {}s", limit.as_secs());
        std::thread::sleep(every);
    }
}

/// The membership check: within `limit`, every shard has a leader, exactly its target
/// voters, no learner, and is not joint. `Err` says which shards are not.
pub fn settled(cluster: &Cluster, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let unsettled: Vec<String> = match get(cluster, "/api/v1/shards") {
            Ok(body) => body["shards"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["settled"] != true)
                .map(|s| {
                    format!(
                        "shard {}: leader {}, voters {}, learners {}, outgoing {}, target {}",
                        s["shard"], s["leader"], s["voters"], s["learners"], s["voters_outgoing"], s["target"]
                    )
                })
                .collect(),
            Err(e) => vec![format!("{e:#}")],
        };
        if unsettled.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(unsettled.join("; "));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The nodes holding each shard's replicas (its voters, as its leader says; shards
/// without a leader are left out).
pub fn holders(cluster: &Cluster) -> std::collections::BTreeMap<u64, Vec<u64>> {
    let Ok(body) = get(cluster, "/api/v1/shards") else { return Default::default() };
    body["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s["shard"].as_u64()?, ids(&s["voters"]))))
        .filter(|(_, voters)| !voters.is_empty())
        .collect()
}
