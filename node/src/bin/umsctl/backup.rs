//! `umsctl backup create DIR`: a consistent copy of every group, each read from one node
//! holding it (a backup-site learner when the cluster has one, so the primary is not
//! loaded; else a follower, the leader last), written to DIR with a manifest written
//! last; a node that fails mid-way is replaced by the next replica. `umsctl backup
//! verify DIR`: every file against the manifest (size, SHA-256, framing), naming a bad
//! one. Progress on stderr every 2 s for both.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use node::backup::format::{self, GroupEntry, Manifest};
use serde_json::{Value, json};

use crate::client::{Client, print_json};

/// How long one group's download may take.
const GROUP_LIMIT: Duration = Duration::from_secs(3600);

/// A terminal line every this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// The nodes to read `shard` from, best first: backup-site learners, then followers,
/// then the leader; every other node last (a replica the view does not show).
fn sources(shard: &Value, backup_nodes: &[u64], all_nodes: &[u64]) -> Vec<u64> {
    let leader = shard["leader"].as_u64();
    let learners = ids_of(&shard["learners"]);
    let voters = ids_of(&shard["voters"]);
    let mut order: Vec<u64> = learners.iter().copied().filter(|n| backup_nodes.contains(n)).collect();
    order.extend(voters.iter().copied().filter(|&n| Some(n) != leader));
    order.extend(leader);
    order.extend(learners);
    order.extend(all_nodes.iter().copied());
    let mut seen = std::collections::HashSet::new();
    order.retain(|n| seen.insert(*n));
    order
}

fn ids_of(value: &Value) -> Vec<u64> {
    value.as_array().into_iter().flatten().filter_map(Value::as_u64).collect()
}

/// "12 of 65 groups, 48 MiB, 12.0 MiB/s, ETA 3s".
fn progress(done: usize, total: usize, bytes: u64, elapsed: Duration) -> String {
    let rate = bytes as f64 / elapsed.as_secs_f64().max(0.001) / f64::from(1 << 20);
    let eta = if done > 0 && done < total {
        format!(", ETA {:.0}s", elapsed.as_secs_f64() / done as f64 * (total - done) as f64)
    } else {
        String::new()
    };
    format!("{done} of {total} groups, {} MiB, {rate:.1} MiB/s{eta}", bytes >> 20)
}

pub fn create(client: &Client, dir: &Path, json_out: bool) -> anyhow::Result<()> {
    if format::is_occupied(dir) {
        bail!("{} is not empty: a backup goes into a new or empty directory", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let started = Instant::now();
    let (_, shards) = client.expect_ok("GET", "/api/v1/shards", None)?;
    let (_, nodes) = client.expect_ok("GET", "/api/v1/nodes", None)?;
    let (_, backup_core) = client.expect_ok("GET", "/api/v1/backup-core", None)?;
    let http: BTreeMap<u64, String> = nodes["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["state"] != "removed")
        .filter_map(|n| Some((n["id"].as_u64()?, n["http"].as_str()?.to_string())))
        .collect();
    let all_nodes: Vec<u64> = http.keys().copied().collect();
    let backup_nodes = ids_of(&backup_core["backup_nodes"]);
    let views: Vec<&Value> = shards["shards"].as_array().into_iter().flatten().collect();
    if views.is_empty() {
        bail!("the cluster listed no shards");
    }
    let downloads = client.with_timeout(GROUP_LIMIT);
    let mut groups = Vec::new();
    let mut cluster_id = String::new();
    let mut last_print = Instant::now();
    let mut bytes = 0;
    for (i, view) in views.iter().enumerate() {
        let group = view["shard"].as_u64().context("a shard without a number")?;
        let mut failures = Vec::new();
        let mut fetched = None;
        for node in sources(view, &backup_nodes, &all_nodes) {
            let Some(address) = http.get(&node) else { continue };
            let url = downloads.url_on(address, &format!("/api/v1/backup/groups/{group}"));
            match fetch_group(&downloads, &url, dir, group) {
                Ok(entry) => {
                    fetched = Some((node, entry));
                    break;
                }
                Err(e) => failures.push(format!("node {node}: {e:#}")),
            }
        }
        let Some((node, (entry, header_cluster))) = fetched else {
            bail!("no node gave a copy of group {group}: {}", failures.join("; "));
        };
        if !failures.is_empty() {
            eprintln!("group {group} read from node {node} after: {}", failures.join("; "));
        }
        cluster_id = header_cluster;
        bytes += entry.bytes;
        groups.push(entry);
        if last_print.elapsed() >= PROGRESS_EVERY {
            last_print = Instant::now();
            eprintln!("{}", progress(i + 1, views.len(), bytes, started.elapsed()));
        }
    }
    let manifest = Manifest {
        format: format::FORMAT_VERSION,
        cluster_id,
        created_ms: node::clock::now_ms(),
        shards: groups.len() as u64 - 1,
        groups,
    };
    let temporary = dir.join(format!("{}.partial", format::MANIFEST));
    std::fs::write(&temporary, serde_json::to_vec_pretty(&manifest)?)?;
    std::fs::rename(&temporary, dir.join(format::MANIFEST))?;
    let summary = json!({
        "dir": dir, "cluster_id": manifest.cluster_id, "groups": manifest.groups.len(), "bytes": bytes,
        "seconds": started.elapsed().as_secs_f64(),
        "sources": manifest.groups.iter().map(|g| json!({ "group": g.group, "node": g.source_node, "index": g.index })).collect::<Vec<_>>(),
    });
    if json_out {
        print_json(&summary);
    } else {
        let from_backup = manifest.groups.iter().filter(|g| backup_nodes.contains(&g.source_node)).count();
        println!(
            "backed up {} groups of cluster '{}' ({} MiB) into {} in {:.1} s; {from_backup} read from backup-site nodes",
            manifest.groups.len(),
            manifest.cluster_id,
            bytes >> 20,
            dir.display(),
            started.elapsed().as_secs_f64()
        );
        println!("check it: umsctl backup verify {}", dir.display());
    }
    Ok(())
}

/// Downloads one group into DIR (through a `.partial` file renamed once complete and
/// readable); its manifest entry and the cluster id its header names.
fn fetch_group(client: &Client, url: &str, dir: &Path, group: u64) -> anyhow::Result<(GroupEntry, String)> {
    let name = format::group_file_name(group);
    let partial = dir.join(format!("{name}.partial"));
    let mut body = client.get_reader(url)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&partial)?);
    std::io::copy(&mut body, &mut out).context("the copy was cut off")?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    // Read back whole: a cut-off stream ends in the middle of a frame, and the next
    // replica is tried instead of a broken file being kept.
    let same_group = |header: &format::GroupHeader| {
        if header.group == group { Ok(()) } else { Err(format!("sent group {} for group {group}", header.group)) }
    };
    let read = format::read_group_file(&partial, same_group, |_| Ok(())).map_err(anyhow::Error::msg)?;
    std::fs::rename(&partial, dir.join(&name))?;
    let header = read.header;
    let entry = GroupEntry {
        group,
        file: name,
        index: header.index,
        term: header.term,
        voters: header.voters,
        learners: header.learners,
        source_node: header.node,
        bytes: read.bytes,
        sha256: read.sha256,
    };
    Ok((entry, header.cluster_id))
}

pub fn verify(dir: &Path, json_out: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let manifest = format::read_manifest(dir).map_err(anyhow::Error::msg)?;
    let mut bad = Vec::new();
    let (mut bytes, mut last_print) = (0, Instant::now());
    for (i, entry) in manifest.groups.iter().enumerate() {
        if let Err(e) = format::check_group_file(dir, entry, |_| Ok(())) {
            bad.push(e);
        }
        bytes += entry.bytes;
        if last_print.elapsed() >= PROGRESS_EVERY {
            last_print = Instant::now();
            eprintln!("{}", progress(i + 1, manifest.groups.len(), bytes, started.elapsed()));
        }
    }
    if json_out {
        print_json(&json!({ "dir": dir, "groups": manifest.groups.len(), "bytes": bytes, "bad": bad }));
    }
    if !bad.is_empty() {
        for line in &bad {
            eprintln!("bad: {line}");
        }
        bail!("{} of {} group files failed the check", bad.len(), manifest.groups.len());
    }
    if !json_out {
        println!(
            "{} groups of cluster '{}' ({} MiB) check out: sizes and SHA-256 as the manifest says",
            manifest.groups.len(),
            manifest.cluster_id,
            bytes >> 20
        );
    }
    let _ = std::io::stdout().flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_read_from_a_backup_learner_first_and_the_leader_last() {
        let shard = json!({ "shard": 3, "leader": 1, "voters": [1, 2, 3], "learners": [4, 5] });
        assert_eq!(sources(&shard, &[4, 5], &[1, 2, 3, 4, 5, 6]), [4, 5, 2, 3, 1, 6]);
        let no_backup = json!({ "shard": 3, "leader": 2, "voters": [1, 2, 3], "learners": [] });
        assert_eq!(sources(&no_backup, &[], &[1, 2, 3]), [1, 3, 2]);
        let leaderless = json!({ "shard": 3, "leader": null });
        assert_eq!(sources(&leaderless, &[], &[1, 2]), [1, 2]);
    }

    #[test]
    fn progress_has_a_rate_and_an_eta() {
        assert_eq!(progress(10, 40, 20 << 20, Duration::from_secs(2)), "10 of 40 groups, 20 MiB, 10.0 MiB/s, ETA 6s");
    }
}
