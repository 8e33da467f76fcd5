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

/// Where a node added to a local cluster listens: one loopback address of its own.
#[derive(Clone, Debug)]
pub struct JoinerAddresses {
    pub peer: SocketAddr,
    pub http: SocketAddr,
    pub smtp: SocketAddr,
    pub submission: SocketAddr,
    pub submissions: SocketAddr,
    pub imap: SocketAddr,
    pub imaps: SocketAddr,
}

/// The `node.toml` of node `id` joining the cluster of the member whose file is
/// `template` (same cluster, bootstrap members and settings): its own id, addresses,
/// data directory and peer certificate (`cert`, `key`), and `join = true`.
pub fn joiner_config(
    template: &str,
    id: u64,
    addresses: &JoinerAddresses,
    data_dir: &Path,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<String> {
    let mut config: toml::Table = toml::from_str(template).context("parsing the template node.toml")?;
    let text = |value: &dyn std::fmt::Display| toml::Value::String(value.to_string());
    config.insert("node_id".into(), toml::Value::Integer(id as i64));
    config.insert("join".into(), toml::Value::Boolean(true));
    config.insert("data_dir".into(), text(&data_dir.display()));
    config.insert("peer_listen".into(), text(&addresses.peer));
    config.insert("http_listen".into(), text(&addresses.http));
    let mut section = |name: &str, entries: &[(&str, toml::Value)]| {
        let table = config.entry(name).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let Some(table) = table.as_table_mut() {
            for (key, value) in entries {
                table.insert((*key).into(), value.clone());
            }
        }
    };
    section(
        "smtp",
        &[
            ("listen", text(&addresses.smtp)),
            ("submission_listen", text(&addresses.submission)),
            ("submissions_listen", text(&addresses.submissions)),
            ("hostname", text(&format!("node{id}.ums.localhost"))),
        ],
    );
    section("imap", &[("listen", text(&addresses.imap)), ("tls_listen", text(&addresses.imaps))]);
    section("peer_tls", &[("cert", text(&cert.display())), ("key", text(&key.display()))]);
    Ok(toml::to_string(&config)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joiner_takes_its_own_id_addresses_and_certificate_and_keeps_the_rest() {
        let template = r#"
node_id = 1
cluster_id = "c"
data_dir = "/d/node-1"
peer_listen = "127.0.0.11:7100"
http_listen = "127.0.0.1:7180"
members = [{ id = 1, peer = "127.0.0.11:7100", http = "127.0.0.1:7180" }]
shards = 8
[smtp]
listen = "127.0.0.1:7125"
max_recipients = 50
[peer_tls]
ca = "/d/pki/ca.pem"
cert = "/d/pki/node-1.pem"
key = "/d/pki/node-1.key"
"#;
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 14], port));
        let addresses = JoinerAddresses {
            peer: at(1),
            http: at(2),
            smtp: at(3),
            submission: at(4),
            submissions: at(5),
            imap: at(6),
            imaps: at(7),
        };
        let written = joiner_config(
            template,
            4,
            &addresses,
            Path::new("/d/node-4"),
            Path::new("/p/4.pem"),
            Path::new("/p/4.key"),
        )
        .unwrap();
        let file: NodeFile = toml::from_str(&written).unwrap();
        assert_eq!((file.node_id, file.cluster_id.as_str()), (4, "c"));
        assert_eq!(file.peer_listen, at(1));
        assert_eq!(file.smtp.listen, Some(at(3)));
        assert_eq!(file.members.len(), 1, "the bootstrap members stay");
        let table: toml::Table = toml::from_str(&written).unwrap();
        assert_eq!(table["join"].as_bool(), Some(true));
        assert_eq!(table["shards"].as_integer(), Some(8));
        assert_eq!(table["smtp"]["max_recipients"].as_integer(), Some(50));
        assert_eq!(table["peer_tls"]["ca"].as_str(), Some("/d/pki/ca.pem"));
        assert_eq!(table["peer_tls"]["cert"].as_str(), Some("/p/4.pem"));
    }
}
