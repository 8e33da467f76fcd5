//! Keeps this node's view of the cluster current, every [`SYNC_EVERY`]: the node
//! records and shard targets are read from the meta group (this node's replica, or the
//! leader's when it holds none) and handed on — the members to the peer network (new
//! nodes dialled and admitted, removed ones refused), the targets to the Raft thread
//! (each shard's leader moves its replicas there), both to the cluster's routing. On the
//! meta group's leader, bootstrap members without a record get one. A node that finds
//! itself removed stops: it serves nothing, and its data never rejoins.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use consensus::NodeId;
use tracing::{error, info, warn};

use crate::cluster::Cluster;
use crate::config::Member;
use crate::peer::{PeerMember, PeerNetwork};
use crate::placement::META_GROUP;
use crate::proto::state::NodeRecord;
use crate::proto::state::node_record::State;
use crate::runtime::Input;

/// How often the view is refreshed.
pub const SYNC_EVERY: Duration = Duration::from_millis(500);

/// The marker a removed node leaves in its data directory, so it never starts again.
pub const REMOVED_MARKER: &str = "removed";

/// Refuses to start a node whose data directory says it was removed.
pub fn check_not_removed(data_dir: &Path) -> anyhow::Result<()> {
    let marker = data_dir.join(REMOVED_MARKER);
    if let Ok(when) = std::fs::read_to_string(&marker) {
        anyhow::bail!(
            "this node was removed from its cluster ({}); its data cannot rejoin. \
             To bring the machine back, empty {} and add it as a new node (umsctl node add)",
            when.trim(),
            data_dir.display()
        );
    }
    Ok(())
}

/// Stops the process for good: the cluster removed this node. Leaves the marker first.
pub fn fence(data_dir: &Path, node: NodeId, why: &str) -> ! {
    error!(node, "{why}: this node was removed from the cluster and serves nothing; stopping");
    let marker = data_dir.join(REMOVED_MARKER);
    let _ = std::fs::write(&marker, format!("node {node}: {why}, at {} ms", crate::clock::now_ms()));
    // As on a storage failure: stop at once, without destructors that could hang.
    // SAFETY: _exit only ends the process.
    unsafe { libc::_exit(78) }
}

/// What the task needs.
pub struct Settings {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub bootstrap: Vec<Member>,
}

/// Starts the task on the current tokio runtime.
pub fn start(cluster: Arc<Cluster>, network: Arc<PeerNetwork>, settings: Settings) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SYNC_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            sync(&cluster, &network, &settings).await;
        }
    });
}

async fn sync(cluster: &Cluster, network: &PeerNetwork, settings: &Settings) {
    let statuses = cluster.raft().status().await;
    // What this node hosts first: the targets below are read from its own replica of
    // the meta group when it has one (after an unsafe recovery dropped and re-added it,
    // a stale view would send the read to voters that are gone).
    cluster.learn_placement(&statuses, &[]);
    let Ok(targets) = cluster.shard_targets(true).await else {
        return; // No meta group reachable: keep the view we have.
    };
    cluster.learn_placement(&statuses, &targets);
    let Ok(nodes) = cluster.nodes(true).await else {
        return;
    };
    let draining = nodes.iter().filter(|n| n.state() == State::Draining).map(|n| n.id).collect();
    cluster.raft().send(Input::SetPlacement { targets, draining });
    if nodes.iter().any(|n| n.id == settings.node_id && n.state() == State::Removed) {
        fence(&settings.data_dir, settings.node_id, "the meta group records this node as removed");
    }
    network.set_members(&peer_members(&settings.bootstrap, &nodes));
    cluster.learn_nodes(&nodes);
    if cluster.raft().leader(META_GROUP) == Some(settings.node_id) {
        register_bootstrap_members(cluster, &settings.bootstrap, &nodes).await;
    }
}

/// Gives every bootstrap member without a record one (once, on the meta leader).
async fn register_bootstrap_members(cluster: &Cluster, bootstrap: &[Member], nodes: &[NodeRecord]) {
    for member in bootstrap.iter().filter(|m| !nodes.iter().any(|n| n.id == m.id)) {
        let record = NodeRecord {
            id: member.id,
            peer: member.peer.to_string(),
            http: member.http.to_string(),
            ..Default::default()
        };
        match cluster.add_node(record, 0).await {
            Ok(_) => info!(node = member.id, "bootstrap member recorded in the meta group"),
            Err(e) => warn!(node = member.id, error = %e, "could not record a bootstrap member; will retry"),
        }
    }
}

/// Pure: the members the peer network should know — the records, and bootstrap
/// members not recorded yet (a cluster's first seconds).
pub fn peer_members(bootstrap: &[Member], nodes: &[NodeRecord]) -> Vec<PeerMember> {
    let mut members: Vec<PeerMember> = nodes
        .iter()
        .filter_map(|n| {
            let address: SocketAddr = n.peer.parse().ok()?;
            Some(PeerMember {
                id: n.id,
                address,
                removed: n.state() == State::Removed,
                backup: crate::driver::is_backup(n),
            })
        })
        .collect();
    for member in bootstrap {
        if !members.iter().any(|m| m.id == member.id) {
            members.push(PeerMember { id: member.id, address: member.peer, removed: false, backup: false });
        }
    }
    members.sort_by_key(|m| m.id);
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_win_over_the_bootstrap_list_and_removed_nodes_stay_known_as_removed() {
        let member = |id: u64| Member {
            id,
            peer: format!("127.0.0.1:7{id}00").parse().unwrap(),
            http: format!("127.0.0.1:7{id}80").parse().unwrap(),
        };
        let record = |id: u64, peer: &str, state: State| NodeRecord {
            id,
            peer: peer.into(),
            http: "127.0.0.1:1".into(),
            state: state as i32,
            ..Default::default()
        };
        let bootstrap = [member(1), member(2), member(3)];
        let nodes = [
            record(1, "127.0.0.1:7100", State::Up),
            record(3, "127.0.0.1:7300", State::Removed),
            record(4, "127.0.0.1:7400", State::Draining),
            record(5, "not an address", State::Up),
        ];
        let members = peer_members(&bootstrap, &nodes);
        let view: Vec<(u64, bool)> = members.iter().map(|m| (m.id, m.removed)).collect();
        assert_eq!(view, [(1, false), (2, false), (3, true), (4, false)]);
        assert_eq!(members[3].address.to_string(), "127.0.0.1:7400");
    }
}
