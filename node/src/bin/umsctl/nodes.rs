//! `umsctl node list|add|drain|cancel-drain|remove` and `umsctl shard list|move`: the
//! cluster's machines and where shard replicas live. Moves and drains are carried out
//! by the shard leaders in the background; `--wait` follows them to the end, printing
//! progress.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};

use crate::client::{Client, print_json};

/// How often `--wait` looks again.
const POLL: Duration = Duration::from_millis(500);

pub fn list(client: &Client, json_out: bool) -> anyhow::Result<()> {
    let (_, body) = client.expect_ok("GET", "/api/v1/nodes", None)?;
    if json_out {
        print_json(&body);
        return Ok(());
    }
    println!(
        "{:>4}  {:<9}  {:<9}  {:>8}  {:>7}  {:<22}  {:<22}  labels",
        "id", "state", "reachable", "replicas", "leaders", "peer", "http"
    );
    for node in body["nodes"].as_array().into_iter().flatten() {
        let labels: Vec<String> = node["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        println!(
            "{:>4}  {:<9}  {:<9}  {:>8}  {:>7}  {:<22}  {:<22}  {}",
            num(&node["id"]),
            node["state"].as_str().unwrap_or(""),
            if node["reachable"] == true { "yes" } else { "NO" },
            num(&node["replicas"]),
            num(&node["leaders"]),
            node["peer"].as_str().unwrap_or(""),
            node["http"].as_str().unwrap_or(""),
            labels.join(",")
        );
    }
    if body["shards_moving"].as_u64().unwrap_or(0) > 0 {
        println!("{} shard(s) are moving or have no leader right now", body["shards_moving"]);
    }
    Ok(())
}

pub fn add(client: &Client, peer: &str, http: &str, labels: &[String], json_out: bool) -> anyhow::Result<()> {
    let mut label_map = serde_json::Map::new();
    for label in labels {
        let Some((name, value)) = label.split_once('=') else {
            bail!("a label is NAME=VALUE (zone=b), not {label:?}");
        };
        label_map.insert(name.to_string(), json!(value));
    }
    let body = json!({ "peer": peer, "http": http, "labels": label_map });
    let (_, node) = client.expect_ok("POST", "/api/v1/nodes", Some(body))?;
    if json_out {
        print_json(&node);
    } else {
        let id = &node["id"];
        println!("added node {id} (peer {peer}, http {http}).");
        println!("Start it with a node.toml that has node_id = {id}, join = true, the cluster's bootstrap");
        println!("members and its own certificate (umsctl ca issue --node-id {id}); the cluster then moves");
        println!("replicas to it.");
    }
    Ok(())
}

pub fn set_state(client: &Client, id: u64, verb: &str, json_out: bool) -> anyhow::Result<()> {
    let (_, body) = client.expect_ok("POST", &format!("/api/v1/nodes/{id}/{verb}"), None)?;
    if json_out {
        print_json(&body);
    } else {
        println!("node {id} is {}", body["state"].as_str().unwrap_or("?"));
    }
    Ok(())
}

/// `node drain ID [--wait]`: marks it draining, then (with `--wait`) follows its
/// replicas and leaders away until none is left.
pub fn drain(client: &Client, id: u64, wait: Option<Duration>, json_out: bool) -> anyhow::Result<()> {
    set_state(client, id, "drain", json_out)?;
    let Some(limit) = wait else { return Ok(()) };
    let started = Instant::now();
    let mut first_left = None;
    loop {
        let (_, body) = client.expect_ok("GET", "/api/v1/nodes", None)?;
        let node =
            body["nodes"].as_array().into_iter().flatten().find(|n| n["id"] == id).cloned().unwrap_or(Value::Null);
        if let Some(blocked) = node["drain_blocked"].as_str() {
            bail!("node {id} cannot be drained: {blocked}");
        }
        let left = node["replicas"].as_u64().unwrap_or(0);
        let first = *first_left.get_or_insert(left);
        if !json_out {
            eprintln!("{}", progress(first, left, started.elapsed(), "replicas"));
        }
        if left == 0 {
            if json_out {
                print_json(&json!({ "id": id, "drained": true, "seconds": started.elapsed().as_secs_f64() }));
            } else {
                println!("node {id} holds no replica now; remove it with: umsctl node remove {id}");
            }
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!("node {id} still holds {left} replica(s) after {}s", limit.as_secs());
        }
        std::thread::sleep(POLL);
    }
}

/// "12 of 40 replicas done, 28 left, ETA 35s".
fn progress(first: u64, left: u64, elapsed: Duration, what: &str) -> String {
    let done = first.saturating_sub(left);
    let eta = if done > 0 && left > 0 {
        let per = elapsed.as_secs_f64() / done as f64;
        format!(", ETA {:.0}s", per * left as f64)
    } else {
        String::new()
    };
    format!("{done} of {first} {what} done, {left} left{eta} ({:.0}s)", elapsed.as_secs_f64())
}

pub fn remove(client: &Client, id: u64, json_out: bool) -> anyhow::Result<()> {
    let (_, body) = client.expect_ok("DELETE", &format!("/api/v1/nodes/{id}"), None)?;
    if json_out {
        print_json(&body);
    } else {
        println!("node {id} is removed: every member refuses it from now on, and its id is never reused");
    }
    Ok(())
}

pub fn shards(client: &Client, json_out: bool) -> anyhow::Result<()> {
    let (_, body) = client.expect_ok("GET", "/api/v1/shards", None)?;
    if json_out {
        print_json(&body);
        return Ok(());
    }
    println!("{:>5}  {:>6}  {:<12}  {:<10}  {:<12}  {:<8}", "shard", "leader", "voters", "learners", "target", "state");
    for shard in body["shards"].as_array().into_iter().flatten() {
        let state = if shard["leader"].is_null() {
            "NO LEADER"
        } else if shard["joint"] == true {
            "joint"
        } else if shard["settled"] == true {
            "ok"
        } else {
            "moving"
        };
        println!(
            "{:>5}  {:>6}  {:<12}  {:<10}  {:<12}  {state}",
            num(&shard["shard"]),
            num(&shard["leader"]),
            ids(&shard["voters"]),
            ids(&shard["learners"]),
            if shard["target"].is_null() { "-".to_string() } else { ids(&shard["target"]) }
        );
    }
    Ok(())
}

/// A number for a table column ("-" when absent), so widths apply.
fn num(value: &Value) -> String {
    value.as_u64().map_or("-".into(), |n| n.to_string())
}

/// A JSON list of ids as `1,2,3`.
pub fn ids(list: &Value) -> String {
    let ids: Vec<String> = list.as_array().into_iter().flatten().map(|v| v.to_string()).collect();
    ids.join(",")
}

/// `shard move SHARD --from A --to B [--wait]`.
pub fn move_shard(
    client: &Client,
    shard: u64,
    from: u64,
    to: u64,
    wait: Option<Duration>,
    json_out: bool,
) -> anyhow::Result<()> {
    let (_, moved) =
        client.expect_ok("POST", &format!("/api/v1/shards/{shard}/move"), Some(json!({ "from": from, "to": to })))?;
    if wait.is_none() {
        if json_out {
            print_json(&moved);
        } else {
            println!("shard {shard}: moving node {from}'s replica to node {to} (voters {})", ids(&moved["voters"]));
        }
        return Ok(());
    }
    let limit = wait.unwrap_or_default();
    let started = Instant::now();
    let mut last_step = String::new();
    loop {
        let (status, view) = client.call("GET", &format!("/api/v1/shards/{shard}"), None)?;
        if status == 200 {
            let step = move_step(&view, to);
            if step != last_step && !json_out {
                eprintln!("{:>5.1}s  {step}", started.elapsed().as_secs_f64());
            }
            last_step = step;
            if view["settled"] == true && view["voters"] == moved["voters"] {
                if json_out {
                    print_json(
                        &json!({ "shard": shard, "from": from, "to": to, "voters": view["voters"], "seconds": started.elapsed().as_secs_f64() }),
                    );
                } else {
                    println!(
                        "shard {shard} moved in {:.1}s: voters {}",
                        started.elapsed().as_secs_f64(),
                        ids(&view["voters"])
                    );
                }
                return Ok(());
            }
        }
        if started.elapsed() > limit {
            bail!("shard {shard} has not finished moving after {}s (last: {last_step})", limit.as_secs());
        }
        std::thread::sleep(POLL);
    }
}

/// Where a move stands, from the leader's view.
fn move_step(view: &Value, to: u64) -> String {
    let has = |field: &str| view[field].as_array().is_some_and(|a| a.iter().any(|v| v == to));
    let lag = view["lag"][to.to_string()].as_u64();
    if view["joint"] == true {
        "joint consensus: old and new voters both decide".into()
    } else if has("learners") {
        format!("node {to} catching up as a learner ({} entries behind)", lag.map_or("?".into(), |l| l.to_string()))
    } else if has("voters") && view["settled"] != true {
        "node {to} is a voter; removing the old replica".replace("{to}", &to.to_string())
    } else if has("voters") {
        "done".into()
    } else {
        format!("adding node {to} as a learner")
    }
}

/// `rebalance [--dry-run]`.
pub fn rebalance(client: &Client, dry_run: bool, json_out: bool) -> anyhow::Result<()> {
    let path = if dry_run { "/api/v1/rebalance?dry_run=true" } else { "/api/v1/rebalance" };
    let (_, body) = client.expect_ok("POST", path, None)?;
    if json_out {
        print_json(&body);
        return Ok(());
    }
    let moves = body["moves"].as_array().cloned().unwrap_or_default();
    let verb = if dry_run { "would move" } else { "moving" };
    if moves.is_empty() {
        println!("balanced: no replica to move");
    }
    for m in &moves {
        println!(
            "{verb} shard {:>4} to voters {:<12}  ({})",
            num(&m["shard"]),
            ids(&m["voters"]),
            m["why"].as_str().unwrap_or("")
        );
    }
    for (node, why) in body["blocked"].as_object().into_iter().flatten() {
        println!("node {node} cannot be drained: {}", why.as_str().unwrap_or(""));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_shows_an_eta_once_something_is_done() {
        assert_eq!(progress(10, 10, Duration::from_secs(2), "replicas"), "0 of 10 replicas done, 10 left (2s)");
        assert_eq!(progress(10, 6, Duration::from_secs(8), "replicas"), "4 of 10 replicas done, 6 left, ETA 12s (8s)");
    }

    #[test]
    fn a_move_is_described_from_the_leaders_view() {
        let view =
            json!({ "voters": [1, 2, 3], "learners": [4], "joint": false, "settled": false, "lag": { "4": 120 } });
        assert_eq!(move_step(&view, 4), "node 4 catching up as a learner (120 entries behind)");
        let view = json!({ "voters": [1, 2, 4], "learners": [], "voters_outgoing": [1, 2, 3], "joint": true });
        assert!(move_step(&view, 4).starts_with("joint"));
        let view = json!({ "voters": [1, 2, 4], "learners": [], "joint": false, "settled": true });
        assert_eq!(move_step(&view, 4), "done");
    }
}
