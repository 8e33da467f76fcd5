//! `umsctl backup-core status`: the backup site's recovery point, per shard and the
//! worst (what losing the primary site right now would lose at most).

use serde_json::Value;

use crate::client::{Client, print_json};
use crate::nodes::ids;

/// Shards listed by default: those lagging or uncovered, at most this many.
const LISTED: usize = 20;

pub fn status(client: &Client, all: bool, json_out: bool) -> anyhow::Result<()> {
    let (_, body) = client.expect_ok("GET", "/api/v1/backup-core", None)?;
    if json_out {
        print_json(&body);
        return Ok(());
    }
    let backup_nodes = ids(&body["backup_nodes"]);
    if backup_nodes.is_empty() {
        println!("no backup site: no up node is labelled site=backup (umsctl node add ... --label site=backup)");
        return Ok(());
    }
    let shards: Vec<&Value> = body["shards"].as_array().into_iter().flatten().collect();
    let notable = |s: &&&Value| all || s["entries"].as_u64() != Some(0) || !ids(&s["missing"]).is_empty();
    let listed: Vec<&&Value> = shards.iter().filter(notable).collect();
    if !listed.is_empty() {
        println!("{:>5}  {:>6}  {:<14}  {:>8}  {:>9}  missing", "shard", "leader", "backup", "entries", "seconds");
    }
    for shard in listed.iter().take(if all { usize::MAX } else { LISTED }) {
        println!(
            "{:>5}  {:>6}  {:<14}  {:>8}  {:>9}  {}",
            shard["shard"],
            shard["leader"].as_u64().map_or("-".into(), |l| l.to_string()),
            ids(&shard["backup_replicas"]),
            shard["entries"].as_u64().map_or("-".into(), |e| e.to_string()),
            shard["seconds"].as_f64().map_or("-".into(), |s| format!("{s:.3}")),
            ids(&shard["missing"]),
        );
    }
    if !all && listed.len() > LISTED {
        println!("... and {} more (--all lists every shard)", listed.len() - LISTED);
    }
    println!(
        "backup site: nodes {backup_nodes}; {} shards, {} without a backup replica",
        shards.len(),
        body["uncovered"].as_array().map_or(0, Vec::len)
    );
    match body["worst_shard"].as_u64() {
        Some(shard) => println!(
            "recovery point: at most {} entries / {:.3} s would be lost (worst: shard {shard})",
            body["worst_entries"],
            body["worst_seconds"].as_f64().unwrap_or(0.0)
        ),
        None => println!("recovery point: unknown (no shard has a backup replica yet)"),
    }
    Ok(())
}
