//! `umsctl audit`: the cluster's audit log, oldest first, as a table or JSON.

use std::time::Duration;

use serde_json::Value;

use crate::client::{Client, print_json, urlencode};

/// Reads pages of at most 1,000 records until `limit` records or the end.
pub fn show(
    client: &Client,
    since: Option<Duration>,
    actor: Option<&str>,
    limit: usize,
    json_out: bool,
) -> anyhow::Result<()> {
    let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let since_ms = since.map_or(0, |since| now_ms.saturating_sub(since.as_millis() as u64));
    let mut records: Vec<Value> = Vec::new();
    let mut after = 0;
    while records.len() < limit {
        let page = (limit - records.len()).min(1000);
        let mut path = format!("/api/v1/audit?after={after}&since_ms={since_ms}&limit={page}");
        if let Some(actor) = actor {
            path.push_str(&format!("&actor={}", urlencode(actor)));
        }
        let (_, body) = client.expect_ok("GET", &path, None)?;
        let batch = body["audit"].as_array().cloned().unwrap_or_default();
        let Some(last) = batch.last().and_then(|r| r["seq"].as_u64()) else { break };
        after = last;
        let full = batch.len() == page;
        records.extend(batch);
        if !full {
            break;
        }
    }
    if json_out {
        print_json(&serde_json::json!({ "audit": records }));
        return Ok(());
    }
    println!(
        "{:>7}  {:<25}  {:<28}  {:<15}  {:>4}  {:<40}  {:>6}  detail",
        "seq", "at (UTC)", "actor", "from", "node", "action", "result"
    );
    for r in &records {
        let at = r["at"].as_str().unwrap_or("").replace('T', " ");
        println!(
            "{:>7}  {:<25}  {:<28}  {:<15}  {:>4}  {:<40}  {:>6}  {}",
            r["seq"],
            at.get(..19).unwrap_or(&at),
            r["actor"].as_str().unwrap_or(""),
            r["source"].as_str().unwrap_or(""),
            r["node"],
            r["action"].as_str().unwrap_or(""),
            r["result"],
            r["detail"].as_str().unwrap_or("")
        );
    }
    println!("{} records", records.len());
    Ok(())
}
