//! `umsctl status`, `leader transfer`, `domain add|show`: the cluster's shape and its
//! mail domains.

use anyhow::bail;
use serde_json::{Value, json};

use crate::client::{Client, error_text, print_json, url};

pub fn status(client: &Client, json_out: bool) -> anyhow::Result<()> {
    let (_, body) = client.expect_ok("GET", "/api/v1/cluster", None)?;
    let health = |n: &Value| {
        let http = n["http"].as_str().unwrap_or_default();
        matches!(client.call_url("GET", &url(http, "/health"), None), Ok((200, _)))
    };
    if json_out {
        let mut body = body.clone();
        for n in body["nodes"].as_array_mut().into_iter().flatten() {
            n["up"] = json!(health(n));
        }
        print_json(&body);
        return Ok(());
    }
    println!("nodes (as seen by node {}):", body["node"]);
    for n in body["nodes"].as_array().into_iter().flatten() {
        println!(
            "  {:>3}  peer {:<21} http {:<21} {}",
            n["id"],
            n["peer"].as_str().unwrap_or(""),
            n["http"].as_str().unwrap_or(""),
            if health(n) { "up" } else { "DOWN" }
        );
    }
    println!("\n  shard  role       leader  term   applied    commit  voters   max lag");
    let number = |v: &Value| v.as_u64().map_or("-".to_string(), |n| n.to_string());
    for s in body["shards"].as_array().into_iter().flatten() {
        let lag = s["replica_lag"].as_object().map(|m| m.values().filter_map(Value::as_u64).max().unwrap_or(0));
        let voters = s["voters"]
            .as_array()
            .map(|v| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        println!(
            "  {:>5}  {:<9}  {:>6}  {:>4}  {:>8}  {:>8}  {:<7}  {}",
            number(&s["shard"]),
            s["role"].as_str().unwrap_or(""),
            number(&s["leader"]),
            number(&s["term"]),
            number(&s["applied_index"]),
            number(&s["commit_index"]),
            voters,
            lag.map_or("-".into(), |l| l.to_string()),
        );
    }
    Ok(())
}

/// Asks the shard's leader, wherever it is, to hand leadership to `to`.
pub fn transfer(client: &Client, shard: u64, to: u64, json_out: bool) -> anyhow::Result<()> {
    let mut target = client.url(&format!("/api/v1/shards/{shard}/transfer-leader"));
    for _ in 0..3 {
        let (code, body) = client.call_url("POST", &target, Some(json!({ "node": to })))?;
        match code {
            202 if json_out => {
                print_json(&body);
                return Ok(());
            }
            202 => {
                println!("asked node {} to hand shard {shard} to node {to}", body["to"]);
                return Ok(());
            }
            421 => match body["leader_http"].as_str() {
                Some(leader) => target = url(leader, &format!("/api/v1/shards/{shard}/transfer-leader")),
                None => bail!("shard {shard} has no leader right now; retry shortly"),
            },
            _ => bail!("{} (HTTP {code})", error_text(&body)),
        }
    }
    bail!("leadership of shard {shard} kept moving; retry")
}

pub fn add_domain(client: &Client, domain: &str, json_out: bool) -> anyhow::Result<()> {
    let (_, body) = client.expect_ok("POST", "/api/v1/domains", Some(json!({ "domain": domain })))?;
    if json_out {
        print_json(&body);
    } else {
        println!("{}: mail accepted", body["domain"].as_str().unwrap_or(""));
    }
    Ok(())
}

pub fn dkim_keygen(
    client: &Client,
    domain: &str,
    selector: Option<String>,
    algorithm: &str,
    json_out: bool,
) -> anyhow::Result<()> {
    let mut request = json!({ "algorithm": algorithm });
    if let Some(selector) = selector {
        request["selector"] = json!(selector);
    }
    let (_, body) = client.expect_ok("POST", &format!("/api/v1/domains/{domain}/dkim"), Some(request))?;
    print_dkim(&body, json_out, "new key made; mail from the domain is signed with it within a second");
    Ok(())
}

pub fn show_dkim(client: &Client, domain: &str, json_out: bool) -> anyhow::Result<()> {
    let (_, body) = client.expect_ok("GET", &format!("/api/v1/domains/{domain}/dkim"), None)?;
    print_dkim(&body, json_out, "the key mail from the domain is signed with");
    Ok(())
}

/// The record as a zone file line (long TXT values split into 255-byte strings, as DNS
/// needs them).
fn print_dkim(body: &serde_json::Value, json_out: bool, what: &str) {
    if json_out {
        return print_json(body);
    }
    let (name, record) = (body["record_name"].as_str().unwrap_or(""), body["dns_record"].as_str().unwrap_or(""));
    let strings: Vec<String> =
        record.as_bytes().chunks(255).map(|c| format!("\"{}\"", String::from_utf8_lossy(c))).collect();
    println!("{}: {what}.", body["domain"].as_str().unwrap_or(""));
    println!("Publish this TXT record (selector {}):", body["selector"].as_str().unwrap_or(""));
    println!("{name}. IN TXT ( {} )", strings.join(" "));
}

pub fn show_domain(client: &Client, domain: &str, json_out: bool) -> anyhow::Result<()> {
    let (_, body) = client.expect_ok("GET", &format!("/api/v1/domains/{domain}"), None)?;
    let name = body["domain"].as_str().unwrap_or("");
    match (json_out, body["local"].as_bool()) {
        (true, _) => print_json(&body),
        (false, Some(true)) => println!("{name}: local (mail accepted)"),
        (false, _) => println!("{name}: not local (mail refused with 550 5.7.1)"),
    }
    Ok(())
}
