//! Node configuration (`umsd --config node.toml`) and the dev-cluster port plan.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use consensus::NodeId;
use gateways::imap::ImapSettings;
use gateways::smtp::SmtpSettings;
use serde::{Deserialize, Serialize};

/// One node's configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id, unique in the cluster, at least 1.
    pub node_id: NodeId,
    /// Nodes refuse peers of another cluster.
    pub cluster_id: String,
    /// Where RocksDB and the node's state live.
    pub data_dir: PathBuf,
    /// Peer (Raft and forwarding) listen address, e.g. 127.0.0.1:7100.
    pub peer_listen: SocketAddr,
    /// HTTP API, webhooks and /metrics, e.g. 127.0.0.1:7180.
    pub http_listen: SocketAddr,
    /// How the API is served: HTTPS (the default, which needs a certificate) or plain
    /// HTTP, and its limits per source.
    #[serde(default)]
    pub http: crate::http::HttpSettings,
    /// The bootstrap members: on a cluster's first start its groups are bootstrapped
    /// over these. Nodes added later are recorded in the meta group and learnt from
    /// there; their own file names the same bootstrap members (any reachable one will
    /// do) and sets `join = true`.
    pub members: Vec<Member>,
    /// This node is not a bootstrap member: it was added (`umsctl node add`) to a
    /// running cluster, starts empty, and receives replicas from the placement driver.
    #[serde(default)]
    pub join: bool,
    #[serde(default = "default_shards")]
    pub shards: u64,
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    #[serde(default)]
    pub raft: RaftSettings,
    /// A mailbox actor idle this long is passivated (milliseconds).
    #[serde(default = "default_mailbox_idle_ms")]
    pub mailbox_idle_ms: u64,
    #[serde(default)]
    pub outbound: OutboundSettings,
    #[serde(default)]
    pub threads: ThreadSettings,
    /// SMTP MX and submission listeners (none unless configured).
    #[serde(default)]
    pub smtp: SmtpSettings,
    /// IMAP listener (none unless configured).
    #[serde(default)]
    pub imap: ImapSettings,
    /// Failed-login limits, one set for IMAP, SMTP submission and the API's Basic login.
    #[serde(default)]
    pub logins: gateways::logins::LoginLimits,
    /// Networks never banned automatically (a ministry's NAT, a carrier's gateways).
    #[serde(default)]
    pub bans: BanSettings,
    /// `[placement]`: the placement driver on the meta group's leader.
    #[serde(default)]
    pub placement: crate::driver::DriverSettings,
    /// Mutual TLS between nodes with the cluster CA (`umsctl ca init|issue`; `umsd dev`
    /// sets it up). Without it peer traffic is plain TCP, and the node says so at start.
    #[serde(default)]
    pub peer_tls: Option<crate::peer::tls::PeerTlsSettings>,
    /// DELIBERATELY UNSAFE (drill self-tests only): acknowledge without fsync, keep the
    /// WAL in memory. A drill against such a cluster must report lost messages.
    #[serde(default)]
    pub unsafe_skip_fsync: bool,
    /// Lets `POST /api/v1/debug/faults` slow this node's peer network and fsyncs, for
    /// drills (`umsd dev`, `ums-bench` and the tests turn it on). Off by default; never
    /// in production.
    #[serde(default)]
    pub debug_faults: bool,
}

/// `[bans]`: what automatic bans leave alone.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BanSettings {
    /// Networks (CIDR or single addresses) a gateway never bans for misbehaviour;
    /// operators can still ban them by hand.
    #[serde(default)]
    pub never: Vec<String>,
}

impl BanSettings {
    pub fn networks(&self) -> Result<Vec<gateways::network::Network>, String> {
        self.never.iter().map(|n| gateways::network::Network::parse_or_host(n)).collect()
    }
}

/// Retry policy of the outbound queues.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundSettings {
    /// Delay before the first retry (doubles per attempt, at most 5 minutes).
    pub retry_base_ms: u64,
    /// Attempts before an item is reported failed.
    pub max_attempts: u32,
    /// Networks webhooks may reach besides public addresses (CIDR, e.g. a ministry's
    /// 10.20.0.0/16); loopback, private and link-local addresses are refused otherwise.
    #[serde(default)]
    pub webhook_allow: Vec<String>,
}

impl Default for OutboundSettings {
    fn default() -> Self {
        Self { retry_base_ms: 1_000, max_attempts: 8, webhook_allow: Vec::new() }
    }
}

fn default_mailbox_idle_ms() -> u64 {
    60_000
}

/// Worker threads of the node's runtimes (the Raft thread and RocksDB's own come on
/// top). 0 means one per CPU core; nodes sharing a machine should divide the cores.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadSettings {
    /// HTTP API workers.
    #[serde(default)]
    pub http_workers: usize,
    /// Peer transport and SMTP/IMAP gateways.
    #[serde(default)]
    pub io_threads: usize,
}

impl ThreadSettings {
    /// `count`, or one per CPU core for 0.
    pub fn resolve(count: usize) -> usize {
        if count > 0 {
            return count;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// For each of `nodes` local nodes: HTTP workers from an equal share of this
    /// machine's cores. The I/O threads stay one per core: the peer transport shares
    /// them with the SMTP and IMAP gateways, and a single one would let a CPU-heavy
    /// IMAP request hold up the node's Raft messages.
    pub fn share_of_machine(nodes: usize) -> Self {
        let each = (Self::resolve(0) / nodes.max(1)).max(1);
        Self { http_workers: each, io_threads: 0 }
    }
}

/// A cluster member as the others reach it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: NodeId,
    pub peer: SocketAddr,
    pub http: SocketAddr,
}

/// Raft timing. Defaults give a 0.5–0.75 s randomized election timeout, so a dead
/// leader is replaced in well under a second.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSettings {
    pub tick_ms: u64,
    pub election_tick: usize,
    /// Upper bound (exclusive) of the randomized election timeout, in ticks.
    #[serde(default = "default_max_election_tick")]
    pub max_election_tick: usize,
    pub heartbeat_tick: usize,
    /// A shard's leader compacts the log on every replica once this many entries
    /// beyond its start are on every member.
    #[serde(default = "default_compact_every")]
    pub compact_every: u64,
    /// Compact a shard's log after this many applied entries even when a member is
    /// behind (it then catches up by snapshot).
    #[serde(default = "default_compact_threshold")]
    pub compact_threshold: u64,
    /// Applied entries kept after such a compaction for briefly lagging followers.
    #[serde(default = "default_compact_keep")]
    pub compact_keep: u64,
}

fn default_max_election_tick() -> usize {
    15
}

fn default_compact_every() -> u64 {
    consensus::RaftConfig::default().compact_every
}

fn default_compact_threshold() -> u64 {
    consensus::RaftConfig::default().compact_threshold
}

fn default_compact_keep() -> u64 {
    consensus::RaftConfig::default().compact_keep
}

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            tick_ms: 50,
            election_tick: 10,
            max_election_tick: default_max_election_tick(),
            heartbeat_tick: 2,
            compact_every: default_compact_every(),
            compact_threshold: default_compact_threshold(),
            compact_keep: default_compact_keep(),
        }
    }
}

fn default_shards() -> u64 {
    64
}

fn default_replicas() -> usize {
    3
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl NodeConfig {
    /// A member `me` of a cluster of `members`, every optional setting at its default.
    pub fn new(me: &Member, cluster_id: &str, data_dir: PathBuf, members: Vec<Member>) -> Self {
        Self {
            node_id: me.id,
            cluster_id: cluster_id.to_string(),
            data_dir,
            peer_listen: me.peer,
            http_listen: me.http,
            http: Default::default(),
            members,
            join: false,
            shards: default_shards(),
            replicas: default_replicas(),
            raft: RaftSettings::default(),
            mailbox_idle_ms: default_mailbox_idle_ms(),
            outbound: OutboundSettings::default(),
            threads: ThreadSettings::default(),
            smtp: SmtpSettings::default(),
            imap: ImapSettings::default(),
            logins: Default::default(),
            placement: Default::default(),
            peer_tls: None,
            bans: BanSettings::default(),
            unsafe_skip_fsync: false,
            debug_faults: false,
        }
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let config: NodeConfig =
            toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// This configuration with `overrides` applied, each `dotted.key=value` as it would be
    /// written in node.toml (`imap.connections.max_per_ip=100`, `smtp.hostname="mx"`; a
    /// value that is not TOML is taken as a string). An unknown key is an error, as in a
    /// file.
    pub fn with_overrides(&self, overrides: &[String]) -> Result<Self, ConfigError> {
        let invalid = |m: String| ConfigError::Invalid(m);
        let mut root = toml::Value::try_from(self).map_err(|e| invalid(e.to_string()))?;
        for assignment in overrides {
            let (key, value) = assignment
                .split_once('=')
                .ok_or_else(|| invalid(format!("'{assignment}' is not KEY=VALUE, e.g. imap.max_auth_failures=5")))?;
            let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut table| table.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.to_string()));
            let mut path: Vec<&str> = key.trim().split('.').collect();
            let last =
                path.pop().filter(|k| !k.is_empty()).ok_or_else(|| invalid(format!("empty key in '{assignment}'")))?;
            let mut table = &mut root;
            for part in path {
                table = table
                    .as_table_mut()
                    .ok_or_else(|| invalid(format!("'{key}': {part} is not a section")))?
                    .entry(part)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            }
            table
                .as_table_mut()
                .ok_or_else(|| invalid(format!("'{key}' is not in a section")))?
                .insert(last.to_string(), value);
        }
        let config: NodeConfig = root.try_into().map_err(|e: toml::de::Error| invalid(format!("--set: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if let Err(e) = crate::webhook_targets::WebhookTargets::new(&self.outbound.webhook_allow) {
            return invalid(format!("outbound.webhook_allow: {e}"));
        }
        if self.node_id == 0 {
            return invalid("node_id must be at least 1".into());
        }
        let bootstrap_member = self.members.iter().any(|m| m.id == self.node_id);
        if !bootstrap_member && !self.join {
            return invalid(format!(
                "members must include this node (id {}), or set join = true for a node added to a running cluster",
                self.node_id
            ));
        }
        if bootstrap_member && self.join {
            return invalid(format!("node {} is a bootstrap member; join = true is for added nodes", self.node_id));
        }
        let mut ids: Vec<NodeId> = self.members.iter().map(|m| m.id).collect();
        ids.sort();
        ids.dedup();
        if ids.len() != self.members.len() || ids.contains(&0) {
            return invalid("member ids must be unique and at least 1".into());
        }
        if self.shards == 0 || self.shards > 4096 {
            return invalid(format!("shards must be 1..=4096, not {}", self.shards));
        }
        // The bootstrap members must hold every replica; a joining node's members are
        // only whom it first reaches (after a site loss, maybe fewer than the replicas).
        if self.replicas == 0 || (!self.join && self.replicas > self.members.len()) {
            return invalid(format!(
                "replicas ({}) must be between 1 and the number of members ({})",
                self.replicas,
                self.members.len()
            ));
        }
        if self.raft.election_tick <= self.raft.heartbeat_tick || self.raft.tick_ms == 0 {
            return invalid("raft: election_tick must exceed heartbeat_tick and tick_ms must be positive".into());
        }
        if self.raft.max_election_tick <= self.raft.election_tick {
            return invalid("raft: max_election_tick must exceed election_tick".into());
        }
        let raft = &self.raft;
        // compact_every 1 would compact for the compaction entries themselves, forever.
        if raft.compact_every < 2
            || raft.compact_every >= raft.compact_threshold
            || raft.compact_keep >= raft.compact_threshold
        {
            return invalid(format!(
                "raft: need 2 <= compact_every ({}) < compact_threshold ({}) and compact_keep ({}) < compact_threshold",
                raft.compact_every, raft.compact_threshold, raft.compact_keep
            ));
        }
        self.http.validate().map_err(ConfigError::Invalid)?;
        self.smtp.validate().map_err(ConfigError::Invalid)?;
        self.imap.validate().map_err(ConfigError::Invalid)?;
        self.logins.validate().map_err(ConfigError::Invalid)?;
        self.bans.networks().map_err(|e| ConfigError::Invalid(format!("bans.never: {e}")))?;
        Ok(())
    }

    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The consensus settings derived from `raft`.
    pub fn raft_config(&self) -> consensus::RaftConfig {
        consensus::RaftConfig {
            election_tick: self.raft.election_tick,
            max_election_tick: Some(self.raft.max_election_tick),
            heartbeat_tick: self.raft.heartbeat_tick,
            compact_every: self.raft.compact_every,
            compact_threshold: self.raft.compact_threshold,
            compact_keep: self.raft.compact_keep,
            ..Default::default()
        }
    }
}

/// Ports of dev-cluster node `n` (1..=9): the block 7n00.
pub struct DevPorts {
    pub peer: u16,
    pub smtp: u16,
    pub submission: u16,
    /// Submission with implicit TLS (SMTPS).
    pub smtps: u16,
    pub imap: u16,
    /// IMAP with implicit TLS (IMAPS).
    pub imaps: u16,
    pub smpp: u16,
    pub http: u16,
}

pub fn dev_ports(node: NodeId) -> DevPorts {
    ports_in_block(7000, node)
}

/// Ports of node `n` when the cluster's port blocks start at `base` (node n: base + 100n).
pub fn ports_in_block(base: u16, node: NodeId) -> DevPorts {
    let base = base + 100 * node as u16;
    DevPorts {
        peer: base,
        smtp: base + 25,
        submission: base + 87,
        smtps: base + 65,
        imap: base + 43,
        imaps: base + 93,
        smpp: base + 75,
        http: base + 80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NodeConfig {
        toml::from_str(
            r#"
            node_id = 2
            cluster_id = "test"
            data_dir = "/tmp/x"
            peer_listen = "127.0.0.1:7200"
            http_listen = "127.0.0.1:7280"
            members = [
              { id = 1, peer = "127.0.0.1:7100", http = "127.0.0.1:7180" },
              { id = 2, peer = "127.0.0.1:7200", http = "127.0.0.1:7280" },
              { id = 3, peer = "127.0.0.1:7300", http = "127.0.0.1:7380" },
            ]
            [http]
            plain = true
            "#,
        )
        .unwrap()
    }

    #[test]
    fn overrides_set_any_setting_by_its_dotted_name() {
        let base = config();
        let set = |list: &[&str]| base.with_overrides(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let changed = set(&["imap.connections.max_per_ip=100", "smtp.hostname=mx.health.go.ke", "shards=32"]).unwrap();
        assert_eq!(changed.imap.connections.max_per_ip, 100);
        assert_eq!(changed.smtp.hostname, "mx.health.go.ke");
        assert_eq!(changed.shards, 32);
        for (bad, why) in [
            ("imap.conections.max_per_ip=1", "unknown field"),
            ("imap.max_auth_failures=many", "invalid type"),
            ("shards=0", "shards"),
            ("nonsense", "KEY=VALUE"),
        ] {
            let error = set(&[bad]).unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn defaults_and_validation() {
        let good = config();
        assert_eq!((good.shards, good.replicas, good.raft.tick_ms), (64, 3, 50));
        good.validate().unwrap();
        type BreakIt = fn(&mut NodeConfig);
        let cases: [(BreakIt, &str); 8] = [
            (|c| c.node_id = 9, "members must include"),
            (|c| c.http.plain = false, "HTTPS"),
            (|c| c.raft.compact_every = 1, "compact_every"),
            (|c| c.raft.compact_every = c.raft.compact_threshold, "compact_every"),
            (|c| c.raft.compact_keep = c.raft.compact_threshold, "compact_keep"),
            (|c| c.replicas = 4, "replicas"),
            (|c| c.shards = 0, "shards"),
            (|c| c.members[2].id = 1, "unique"),
        ];
        for (break_it, expected) in cases {
            let mut bad = config();
            break_it(&mut bad);
            let error = bad.validate().unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
        assert_eq!(dev_ports(3).http, 7380);
        assert_eq!(dev_ports(1).imap, 7143);
    }
}
