//! `umsctl token create|list|revoke`: API tokens, each shown once when created.

use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};

use crate::client::{Client, format_time as time, print_json};

/// How long a new token lives; `None`: forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime(pub Option<Duration>);

/// A lifetime like `30m`, `12h`, `90d`, `2w`, `1y`, or `never`.
pub fn parse_lifetime(text: &str) -> Result<Lifetime, String> {
    let text = text.trim();
    if text == "never" {
        return Ok(Lifetime(None));
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("'{text}' is not a lifetime like 90d, 12h or never"))?;
    let seconds: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(format!("unknown unit in '{text}'; use s, m, h, d, w or y (or never)")),
    };
    if value == 0 {
        return Err("a lifetime must be longer than zero (or never)".into());
    }
    value
        .checked_mul(seconds)
        .map(|s| Lifetime(Some(Duration::from_secs(s))))
        .ok_or_else(|| format!("'{text}' is too long"))
}

fn expiry(value: &Value) -> String {
    if value.is_null() { "never".into() } else { time(value) }
}

fn scope(token: &Value) -> String {
    let items: Vec<&str> = token["scope"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if items.is_empty() { "-".into() } else { items.join(",") }
}

pub fn create(
    client: &Client,
    name: &str,
    role: &str,
    scope_list: &[String],
    lifetime: Lifetime,
    json_out: bool,
) -> anyhow::Result<()> {
    let expires_in_s = lifetime.0.map(|l| l.as_secs());
    let body = json!({ "name": name, "role": role, "scope": scope_list, "expires_in_s": expires_in_s });
    let (_, created) = client.expect_ok("POST", "/api/v1/tokens", Some(body))?;
    if json_out {
        print_json(&created);
        return Ok(());
    }
    let Some(text) = created["token"].as_str() else { bail!("the node answered without a token: {created}") };
    println!(
        "created token {} '{}' ({}, scope {}), expires {}",
        created["id"].as_str().unwrap_or(""),
        created["name"].as_str().unwrap_or(""),
        created["role"].as_str().unwrap_or(""),
        scope(&created),
        expiry(&created["expires_ms"]),
    );
    println!("\n  {text}\n");
    println!("This is the only time the token is shown: keep it now (UMS_TOKEN, or a file for --token-file).");
    Ok(())
}

pub fn list(client: &Client, json_out: bool) -> anyhow::Result<()> {
    let (_, body) = client.expect_ok("GET", "/api/v1/tokens", None)?;
    if json_out {
        print_json(&body);
        return Ok(());
    }
    let tokens = body["tokens"].as_array().cloned().unwrap_or_default();
    println!(
        "  {:<16}  {:<24}  {:<14}  {:<24}  {:<7}  {:<20}  {:<20}",
        "id", "name", "role", "scope", "state", "created", "expires"
    );
    for token in &tokens {
        println!(
            "  {:<16}  {:<24}  {:<14}  {:<24}  {:<7}  {:<20}  {:<20}",
            token["id"].as_str().unwrap_or(""),
            token["name"].as_str().unwrap_or(""),
            token["role"].as_str().unwrap_or(""),
            scope(token),
            token["state"].as_str().unwrap_or(""),
            time(&token["created_ms"]),
            expiry(&token["expires_ms"]),
        );
    }
    println!("{} token(s)", tokens.len());
    Ok(())
}

pub fn revoke(client: &Client, id: &str, json_out: bool) -> anyhow::Result<()> {
    let (_, body) = client.expect_ok("DELETE", &format!("/api/v1/tokens/{id}"), None)?;
    if json_out {
        print_json(&body);
    } else {
        println!(
            "revoked token {} '{}' (refused by every node within a second)",
            body["id"].as_str().unwrap_or(""),
            body["name"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_parse() {
        assert_eq!(parse_lifetime("90d"), Ok(Lifetime(Some(Duration::from_secs(90 * 86_400)))));
        assert_eq!(parse_lifetime("12h"), Ok(Lifetime(Some(Duration::from_secs(12 * 3600)))));
        assert_eq!(parse_lifetime("never"), Ok(Lifetime(None)));
        assert!(parse_lifetime("0d").is_err());
        assert!(parse_lifetime("soon").is_err());
        assert!(parse_lifetime("5 parsecs").is_err());
    }
}
