//! The fields of a node's `node.toml` that programs driving a cluster read (which node,
//! which cluster, its addresses and data directory). The daemon's own `NodeConfig`
//! (crate `node`) owns the file; this view ignores every other field, so a drill tool
//! reads any node's configuration without building the daemon. A test in `node` checks
//! that the two read the same file alike.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

/// A node as its configuration file describes it.
#[derive(Clone, Debug, Deserialize)]
pub struct NodeFile {
    pub node_id: u64,
    pub cluster_id: String,
    pub data_dir: PathBuf,
    /// Peer (Raft) address: partitions cut this one off.
    pub peer_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub members: Vec<MemberFile>,
    #[serde(default)]
    pub smtp: SmtpFile,
}

/// One member of the cluster, as every node's file lists them.
#[derive(Clone, Debug, Deserialize)]
pub struct MemberFile {
    pub id: u64,
}

/// The MX listener, where drills send mail.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SmtpFile {
    pub listen: Option<SocketAddr>,
}

impl NodeFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}
