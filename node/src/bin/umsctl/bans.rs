//! `umsctl ban list|add|remove`: networks every node refuses at accept time.

use serde_json::json;

use crate::client::{Client, format_time as time, print_json, urlencode};
use crate::tokens::Lifetime;

pub fn list(client: &Client, json_out: bool) -> anyhow::Result<()> {
    let (_, body) = client.expect_ok("GET", "/api/v1/bans", None)?;
    if json_out {
        print_json(&body);
        return Ok(());
    }
    println!("{:<40}  {:<9}  {:<20}  {:<24}  reason", "network", "state", "until", "by");
    for ban in body["bans"].as_array().into_iter().flatten() {
        println!(
            "{:<40}  {:<9}  {:<20}  {:<24}  {}",
            ban["network"].as_str().unwrap_or(""),
            if ban["in_force"] == true { "in force" } else { "ended" },
            time(&ban["until_ms"]),
            ban["created_by"].as_str().unwrap_or(""),
            ban["reason"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

pub fn add(client: &Client, network: &str, length: Lifetime, reason: &str, json_out: bool) -> anyhow::Result<()> {
    let Some(length) = length.0 else {
        anyhow::bail!("a ban needs an end (--for 1h, 7d, ...): use a firewall for good")
    };
    let body = json!({ "network": network, "for_s": length.as_secs(), "reason": reason });
    let (_, ban) = client.expect_ok("POST", "/api/v1/bans", Some(body))?;
    if json_out {
        print_json(&ban);
    } else {
        println!("banned {} until {} on every node", ban["network"].as_str().unwrap_or(""), time(&ban["until_ms"]));
    }
    Ok(())
}

pub fn remove(client: &Client, network: &str, json_out: bool) -> anyhow::Result<()> {
    let path = format!("/api/v1/bans?network={}", urlencode(network));
    let (_, body) = client.expect_ok("DELETE", &path, None)?;
    if json_out {
        print_json(&body);
    } else {
        println!("lifted the ban of {}", body["network"].as_str().unwrap_or(network));
    }
    Ok(())
}
