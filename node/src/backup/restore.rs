//! `umsd restore`: a fresh one-node cluster from a backup directory. Every group file is
//! checked (size, SHA-256, framing) while its data is written into the new node's
//! RocksDB; each group becomes a replica whose only voter is the new node, at the applied
//! index and term the backup recorded. The meta group keeps users, domains, tokens, bans,
//! keys and the audit log but not the old cluster's node records and shard targets: the
//! new node records itself when it starts, and the operator grows the cluster with
//! `umsctl node add`. The new cluster has its own cluster id (its node.toml's), so no node
//! of the old cluster can ever talk to it.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use raft::eraftpb::{ConfState, SnapshotMetadata};
use serde::Serialize;
use storage::snapshot::{SnapshotChunk, SnapshotWriter};
use storage::{Cf, Engine, GroupStorage, RocksEngine, RocksOptions, WriteBatch};

use super::format::{self, Manifest};
use crate::config::NodeConfig;

/// Chunks staged per write while a group is restored (about 1 MiB each).
const CHUNKS_PER_WRITE: usize = 32;

/// What a restore did.
#[derive(Debug, Serialize)]
pub struct Restored {
    pub source_cluster: String,
    pub cluster_id: String,
    pub node: u64,
    pub groups: usize,
    pub bytes: u64,
    pub seconds: f64,
}

/// How far a restore is: groups done of all, bytes read.
pub struct Progress {
    pub groups_done: usize,
    pub groups: usize,
    pub bytes: u64,
    pub total_bytes: u64,
}

/// `umsd restore BACKUP --config FILE [--data NEWDIR] [--json]`: restores with progress
/// on stderr every 2 s, and says how to start the node.
pub fn command(backup: &Path, config_path: &Path, data: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let mut config = NodeConfig::load(config_path)?;
    let mut start_with = config_path.to_path_buf();
    if let Some(data) = data {
        config.data_dir = data.to_path_buf();
        start_with = data.join("node.toml");
    }
    let mut last_print = Instant::now();
    let restored = restore(backup, &config, |p| {
        if last_print.elapsed().as_secs() >= 2 || p.groups_done == p.groups {
            last_print = Instant::now();
            eprintln!(
                "restored {} of {} groups, {} of {} MiB",
                p.groups_done,
                p.groups,
                p.bytes >> 20,
                p.total_bytes >> 20
            );
        }
    })?;
    if data.is_some() {
        std::fs::write(&start_with, toml::to_string(&config)?)
            .with_context(|| format!("writing {}", start_with.display()))?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&restored)?);
    } else {
        println!(
            "restored {} groups ({} MiB) of cluster '{}' as node {} of the new cluster '{}' in {:.1} s",
            restored.groups,
            restored.bytes >> 20,
            restored.source_cluster,
            restored.node,
            restored.cluster_id,
            restored.seconds
        );
        println!("start it: umsd --config {}", start_with.display());
    }
    Ok(())
}

/// Why `config` cannot receive `manifest`'s backup, if it cannot.
fn refusal(manifest: &Manifest, config: &NodeConfig) -> Option<String> {
    if config.members.len() != 1 || config.members[0].id != config.node_id {
        return Some(format!(
            "a restore starts a one-node cluster: the new node's members must list only itself (node {}); add the other nodes afterwards with umsctl node add",
            config.node_id
        ));
    }
    if config.cluster_id == manifest.cluster_id {
        return Some(format!(
            "the backup comes from cluster '{}': give the restored cluster a new cluster_id, so no node of the old one can reach it",
            manifest.cluster_id
        ));
    }
    if config.shards != manifest.shards {
        return Some(format!(
            "the backup has {} shards and the new node's config {}: users are placed by the shard count, set shards = {}",
            manifest.shards, config.shards, manifest.shards
        ));
    }
    None
}

/// Restores the backup in `backup` into `config.data_dir`, which must not exist or be
/// empty; on any failure, what was written there is removed again.
pub fn restore(backup: &Path, config: &NodeConfig, mut progress: impl FnMut(&Progress)) -> anyhow::Result<Restored> {
    let started = Instant::now();
    let manifest = format::read_manifest(backup).map_err(anyhow::Error::msg)?;
    if let Some(why) = refusal(&manifest, config) {
        bail!("{why}");
    }
    let data = &config.data_dir;
    if format::is_occupied(data) {
        bail!("{} is not empty: a restore writes a new node's data directory, never over one", data.display());
    }
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let written = write_groups(backup, &manifest, config, &mut progress);
    if written.is_err() {
        let _ = std::fs::remove_dir_all(data);
    }
    let bytes = written?;
    std::fs::write(data.join(crate::server::BOOTSTRAPPED_MARKER), b"").context("writing the bootstrap marker")?;
    Ok(Restored {
        source_cluster: manifest.cluster_id,
        cluster_id: config.cluster_id.clone(),
        node: config.node_id,
        groups: manifest.groups.len(),
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Every group into a new RocksDB in the data directory; the bytes read.
fn write_groups(
    backup: &Path,
    manifest: &Manifest,
    config: &NodeConfig,
    progress: &mut impl FnMut(&Progress),
) -> anyhow::Result<u64> {
    let db_path = config.data_dir.join("db");
    let engine: Engine = std::sync::Arc::new(
        RocksEngine::open(&db_path, &RocksOptions::default())
            .with_context(|| format!("opening RocksDB at {}", db_path.display()))?,
    );
    let total_bytes = manifest.groups.iter().map(|g| g.bytes).sum();
    let mut state = Progress { groups_done: 0, groups: manifest.groups.len(), bytes: 0, total_bytes };
    for entry in &manifest.groups {
        let group = entry.group;
        let mut batch = WriteBatch::new();
        let writer = SnapshotWriter::begin(group, &mut batch);
        let mut staged = 0;
        format::check_group_file(backup, entry, |chunk| {
            let chunk = if group == crate::placement::META_GROUP { without_membership(chunk) } else { chunk };
            writer.write_chunk(chunk, &mut batch).map_err(|e| e.to_string())?;
            staged += 1;
            if staged % CHUNKS_PER_WRITE == 0 {
                engine.write(&batch, false).map_err(|e| e.to_string())?;
                batch = WriteBatch::new();
            }
            Ok(())
        })
        .map_err(anyhow::Error::msg)?;
        let metadata = SnapshotMetadata {
            conf_state: Some(ConfState { voters: vec![config.node_id], ..Default::default() }),
            index: entry.index,
            term: entry.term,
        };
        writer.finish(&metadata, &mut batch);
        GroupStorage::restore(group, &metadata, &mut batch);
        // The group's Raft records come last: a crash before leaves no group behind.
        engine.write(&batch, true).with_context(|| format!("writing group {group}"))?;
        state.groups_done += 1;
        state.bytes += entry.bytes;
        progress(&state);
    }
    Ok(state.bytes)
}

/// The meta group's data without the old cluster's node records and shard targets.
fn without_membership(mut chunk: SnapshotChunk) -> SnapshotChunk {
    chunk.pairs.retain(|pair| {
        let own_key = consensus::state_machine_key_in_group(&pair.key);
        !(pair.cf == Cf::Data as u32 && own_key.is_some_and(crate::state::is_membership_key))
    });
    chunk
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Member;

    fn config(cluster: &str, members: &[u64], shards: u64) -> NodeConfig {
        let member = |id| Member { id, peer: "127.0.0.1:1".parse().unwrap(), http: "127.0.0.1:2".parse().unwrap() };
        let members: Vec<Member> = members.iter().map(|&id| member(id)).collect();
        NodeConfig { shards, ..NodeConfig::new(&member(1), cluster, "/nonexistent".into(), members) }
    }

    #[test]
    fn a_restore_needs_a_new_one_node_cluster_with_the_same_shard_count() {
        let manifest = Manifest { format: 1, cluster_id: "old".into(), created_ms: 0, shards: 8, groups: vec![] };
        assert_eq!(refusal(&manifest, &config("new", &[1], 8)), None);
        assert!(refusal(&manifest, &config("old", &[1], 8)).unwrap().contains("new cluster_id"));
        assert!(refusal(&manifest, &config("new", &[1, 2], 8)).unwrap().contains("one-node cluster"));
        assert!(refusal(&manifest, &config("new", &[1], 16)).unwrap().contains("shards = 8"));
    }
}
