//! `umsctl backup-core status`: the backup site's recovery point, per shard and the
//! worst (what losing the primary site right now would lose at most); `umsctl
//! backup-core promote`: after the primary site is lost, what each shard keeps, a
//! confirmation, then the promotion (run against a backup node); `umsctl backup-core
//! switchover`: the planned swap of the two sites; `umsctl backup-core reseed`: the lost
//! machines recorded again as the new backup site, and the steps on each.

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

/// `backup-core promote [--yes] [--force]`.
pub fn promote(client: &Client, yes: bool, force: bool, json_out: bool) -> anyhow::Result<()> {
    let query = if force { "?force=true" } else { "" };
    let (_, plan) = client.expect_ok("GET", &format!("/api/v1/backup-core/promotion{query}"), None)?;
    if !json_out {
        print_plan(&plan);
    }
    if !yes {
        use std::io::{BufRead as _, IsTerminal as _, Write as _};
        anyhow::ensure!(std::io::stdin().is_terminal(), "not confirmed: pass --yes to promote without a question");
        print!("Promote the backup site, losing what is described above? Type 'promote' to go on: ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        anyhow::ensure!(answer.trim() == "promote", "not confirmed; nothing was changed");
    }
    let started = std::time::Instant::now();
    let (_, done) =
        client.expect_ok("POST", "/api/v1/backup-core/promote", Some(serde_json::json!({ "force": force })))?;
    if json_out {
        print_json(&done);
        return Ok(());
    }
    println!(
        "promoted in {:.1}s: {} groups now on nodes {}; the lost primary nodes are removed (refused if they come back; umsctl backup-core reseed makes them the new backup site)",
        started.elapsed().as_secs_f64(),
        done["groups"].as_array().map_or(0, Vec::len),
        ids(&done["backup_nodes"])
    );
    Ok(())
}

/// Per group: the backup replica that recovers it and how old the newest entry it holds is.
fn print_plan(plan: &Value) {
    println!("{:>5}  {:>6}  {:>10}  {:>14}", "shard", "from", "last index", "newest entry");
    let mut oldest: f64 = 0.0;
    for group in plan["groups"].as_array().into_iter().flatten() {
        let age = group["newest_entry_age_seconds"].as_f64();
        oldest = oldest.max(age.unwrap_or(0.0));
        println!(
            "{:>5}  {:>6}  {:>10}  {:>14}",
            group["group"],
            group["chosen"],
            group["last_index"],
            age.map_or("-".into(), |a| format!("{a:.1}s ago"))
        );
    }
    println!(
        "each shard keeps everything its backup replica holds; what the primary committed after that replica's newest \
         entry is lost (at most since {oldest:.1}s ago, less the time since the site went down)"
    );
    let uncovered = ids(&plan["uncovered"]);
    if !uncovered.is_empty() {
        println!("shards {uncovered} have no backup replica: their data is lost entirely");
    }
}

/// `backup-core switchover`.
pub fn switchover(client: &Client, json_out: bool) -> anyhow::Result<()> {
    // The node answers when every shard is on its new membership (at most 5 minutes).
    let client = client.with_timeout(std::time::Duration::from_secs(330));
    if !json_out {
        println!("waiting for the backup site to catch up, then swapping the sites (this takes a few seconds)...");
    }
    let (_, report) = client.expect_ok("POST", "/api/v1/backup-core/switchover", None)?;
    if json_out {
        print_json(&report);
        return Ok(());
    }
    println!(
        "switched over in {:.1}s (after {:.1}s catching up): nodes {} are the primary site, nodes {} the backup; \
         {} groups, longest time a group was seen without a leader: {} ms",
        report["seconds"].as_f64().unwrap_or(0.0),
        report["catch_up_seconds"].as_f64().unwrap_or(0.0),
        ids(&report["primary"]),
        ids(&report["backup"]),
        report["groups"],
        report["longest_leaderless_ms"]
    );
    Ok(())
}

/// `backup-core reseed [ID...]`.
pub fn reseed(client: &Client, nodes: &[u64], json_out: bool) -> anyhow::Result<()> {
    let (_, done) =
        client.expect_ok("POST", "/api/v1/backup-core/reseed", Some(serde_json::json!({ "nodes": nodes })))?;
    let (_, members) = client.expect_ok("GET", "/api/v1/nodes", None)?;
    if json_out {
        print_json(&done);
        return Ok(());
    }
    let added: Vec<&Value> = done["nodes"].as_array().into_iter().flatten().collect();
    for node in &added {
        println!(
            "node {} is recorded again as node {} (backup site), peer {}, HTTP {}",
            node["old"], node["id"], node["peer"], node["http"]
        );
    }
    let live: Vec<&Value> = members["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["state"] == "up" && !added.iter().any(|a| a["id"] == n["id"]))
        .collect();
    println!("\non each of those machines:");
    println!("  1. stop umsd and delete its data directory (the old replicas: they are refused anyway)");
    println!("  2. issue a certificate for the new id: umsctl ca issue --dir PKI --cluster-id CLUSTER --node-id NEW");
    println!("  3. in its node.toml: node_id = NEW, join = true, and as members the nodes up now:");
    for node in live {
        println!("       [[members]] id = {}, peer = {}, http = {}", node["id"], node["peer"], node["http"]);
    }
    println!("  4. start it; umsctl backup-core status shows the new backup site being seeded");
    Ok(())
}
