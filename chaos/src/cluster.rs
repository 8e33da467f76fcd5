//! A running cluster as a drill sees it: its nodes' configurations (from the data
//! directory that `umsd dev` or a test harness laid out: `node-N/node.toml`, or from the
//! `umsd` processes serving the HTTP addresses given with `--nodes`), their processes
//! (found in /proc by their `--config` argument), and their HTTP API, which a drill
//! calls with each node's own admin token (`admin.token` in its data directory; a drill
//! runs on the nodes' machine anyway) or with `UMS_TOKEN` when that is set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use devkit::node_file::NodeFile;
pub use devkit::process::pid_of;
use devkit::process::umsd_processes;
use devkit::tokens::{NODE_TOKEN_FILE, read_token};
use serde_json::Value;

/// One node of the cluster under test.
#[derive(Clone)]
pub struct ChaosNode {
    pub id: u64,
    pub config: NodeFile,
    pub config_path: PathBuf,
    /// The API token the drill presents to this node.
    pub token: String,
}

impl ChaosNode {
    fn load(config_path: PathBuf) -> anyhow::Result<Self> {
        let config = NodeFile::load(&config_path)?;
        let token = match std::env::var("UMS_TOKEN") {
            Ok(token) if !token.trim().is_empty() => token.trim().to_string(),
            _ => {
                let path = data_dir(&config, &config_path).join(NODE_TOKEN_FILE);
                read_token(&path).with_context(|| {
                    format!(
                        "cannot read node {}'s admin token at {}: run the drill as the user that runs umsd, or set UMS_TOKEN to an operator token",
                        config.node_id,
                        path.display()
                    )
                })?
            }
        };
        Ok(Self { id: config.node_id, config, config_path, token })
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> PathBuf {
        data_dir(&self.config, &self.config_path)
    }
}

/// `config`'s data directory: as it names it when absolute, else where its node.toml is
/// (`umsd dev` and the tests keep node.toml in the data directory it names).
fn data_dir(config: &NodeFile, config_path: &Path) -> PathBuf {
    if config.data_dir.is_absolute() {
        config.data_dir.clone()
    } else {
        config_path.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

pub struct Cluster {
    pub nodes: Vec<ChaosNode>,
    /// The daemon binary the nodes run (restarts use the very same one).
    pub umsd: PathBuf,
}

impl Cluster {
    /// Reads `DIR/node-*/node.toml`; `dev` means `./data/dev`, the `umsd dev` default.
    pub fn from_dir(dir: &Path) -> anyhow::Result<Self> {
        let dir = if dir == Path::new("dev") { PathBuf::from("./data/dev") } else { dir.to_path_buf() };
        let dir = dir.canonicalize().with_context(|| format!("no cluster data directory at {}", dir.display()))?;
        let mut nodes = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let node_dir = entry?.path();
            let config_path = node_dir.join("node.toml");
            // A node removed from the cluster stays out (it refuses to start).
            if config_path.exists() && !node_dir.join("removed").exists() {
                nodes.push(ChaosNode::load(config_path)?);
            }
        }
        if nodes.is_empty() {
            bail!("{} holds no node-N/node.toml: start the cluster with `umsd dev` first", dir.display());
        }
        Self::from_nodes_list(nodes)
    }

    /// The cluster of the `umsd` processes on this machine that serve HTTP at
    /// `addresses` (`host:port`, e.g. `127.0.0.1:7180`), with every other member of
    /// their cluster. Drills kill and restart nodes, so all of them must run here.
    pub fn from_addresses(addresses: &[String]) -> anyhow::Result<Self> {
        use std::net::ToSocketAddrs;
        let running: Vec<(PathBuf, NodeFile)> = umsd_processes()
            .into_iter()
            .filter_map(|(_, path)| NodeFile::load(&path).ok().map(|config| (path, config)))
            .collect();
        let mut cluster_id = None;
        for address in addresses {
            let wanted: Vec<std::net::SocketAddr> =
                address.to_socket_addrs().with_context(|| format!("'{address}' is not host:port"))?.collect();
            let Some((_, config)) = running.iter().find(|(_, c)| wanted.contains(&c.http_listen)) else {
                bail!(
                    "no umsd process on this machine serves HTTP at {address} (drills kill and restart nodes, so the cluster must run here)"
                );
            };
            match &cluster_id {
                None => cluster_id = Some(config.cluster_id.clone()),
                Some(id) if *id != config.cluster_id => {
                    bail!("{address} belongs to cluster {}, not {id}", config.cluster_id)
                }
                Some(_) => {}
            }
        }
        let cluster_id = cluster_id.context("--nodes needs at least one address")?;
        let nodes: Vec<ChaosNode> = running
            .into_iter()
            .filter(|(_, c)| c.cluster_id == cluster_id)
            .map(|(config_path, _)| ChaosNode::load(config_path))
            .collect::<anyhow::Result<_>>()?;
        let missing: Vec<u64> =
            nodes[0].config.members.iter().map(|m| m.id).filter(|id| !nodes.iter().any(|n| n.id == *id)).collect();
        if !missing.is_empty() {
            bail!(
                "nodes {missing:?} of cluster {cluster_id} are not running on this machine; start the whole cluster before a drill"
            );
        }
        Self::from_nodes_list(nodes)
    }

    fn from_nodes_list(mut nodes: Vec<ChaosNode>) -> anyhow::Result<Self> {
        nodes.sort_by_key(|n| n.id);
        if let Some(pair) = nodes.windows(2).find(|pair| pair[0].id == pair[1].id) {
            bail!(
                "two configurations claim node {} of cluster {}: {} and {}; give each cluster its own cluster_id",
                pair[0].id,
                pair[0].config.cluster_id,
                pair[0].config_path.display(),
                pair[1].config_path.display()
            );
        }
        let umsd = nodes
            .iter()
            .find_map(|n| pid_of(&n.config_path).and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok()))
            .or_else(|| std::env::current_exe().ok().map(|exe| exe.with_file_name("umsd")))
            .context("cannot find the umsd binary")?;
        Ok(Self { nodes, umsd })
    }

    /// The same cluster without nodes `lost` (a lost site's, once promotion removed them).
    pub fn without(&self, lost: &[u64]) -> Self {
        let nodes = self.nodes.iter().filter(|n| !lost.contains(&n.id)).cloned().collect();
        Self { nodes, umsd: self.umsd.clone() }
    }

    /// The `umsctl` beside the nodes' `umsd`, if there is one.
    pub fn umsctl(&self) -> Option<PathBuf> {
        Some(self.umsd.with_file_name("umsctl")).filter(|path| path.exists())
    }

    pub fn node(&self, id: u64) -> &ChaosNode {
        self.nodes.iter().find(|n| n.id == id).expect("known node id")
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn url(&self, id: u64, path: &str) -> String {
        format!("http://{}{}", self.node(id).config.http_listen, path)
    }

    /// A GET of `path` on node `id`, with the node's token.
    pub fn get(&self, id: u64, path: &str) -> ureq::Request {
        devkit::http::get(&self.url(id, path), &self.node(id).token)
    }

    /// A POST to `path` on node `id`, with the node's token.
    pub fn post(&self, id: u64, path: &str) -> ureq::Request {
        devkit::http::post(&self.url(id, path), &self.node(id).token)
    }

    pub fn pid(&self, id: u64) -> Option<u32> {
        pid_of(&self.node(id).config_path)
    }

    /// The pid of node `id`, or an error saying it is not running.
    pub fn running_pid(&self, id: u64) -> anyhow::Result<u32> {
        self.pid(id).with_context(|| format!("node {id} is not running"))
    }

    pub fn is_healthy(&self, id: u64) -> bool {
        ureq::get(&self.url(id, "/health")).timeout(Duration::from_millis(500)).call().is_ok()
    }

    /// Whether the nodes accept injected delays (`debug_faults = true`, as in `umsd dev`).
    pub fn allows_debug_faults(&self) -> bool {
        let id = self.nodes[0].id;
        self.get(id, "/api/v1/debug/faults").timeout(Duration::from_secs(2)).call().is_ok()
    }

    /// Sets network or disk delays on node `id` through its debug API.
    pub fn set_debug_faults(&self, id: u64, faults: &Value) -> anyhow::Result<()> {
        match self.post(id, "/api/v1/debug/faults").timeout(Duration::from_secs(5)).send_json(faults.clone()) {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(404, _)) => {
                bail!(
                    "node {id} does not accept injected faults; set debug_faults = true in its node.toml (umsd dev does)"
                )
            }
            Err(e) => Err(anyhow::anyhow!("setting faults {faults} on node {id}: {e}")),
        }
    }

    /// Leader of each shard, as the shards' leaders say (asked through the first node
    /// that answers).
    pub fn leaders(&self) -> BTreeMap<u64, u64> {
        for node in &self.nodes {
            if let Ok(response) = self.get(node.id, "/api/v1/shards").timeout(Duration::from_secs(5)).call()
                && let Ok(status) = response.into_json::<Value>()
            {
                return status["shards"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| Some((s["shard"].as_u64()?, s["leader"].as_u64()?)))
                    .collect();
            }
        }
        BTreeMap::new()
    }
}
