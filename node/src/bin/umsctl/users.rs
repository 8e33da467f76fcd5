//! `umsctl user add|import`: one user, or an HR personnel export.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::client::{Client, error_text, print_json};

/// Creates or updates a user; `true` when it was created.
fn upsert(client: &Client, user: Value) -> anyhow::Result<(bool, Value)> {
    let (code, body) = client.call("POST", "/api/v1/users", Some(user))?;
    match code {
        200 => Ok((false, body)),
        201 => Ok((true, body)),
        _ => bail!("{} (HTTP {code})", error_text(&body)),
    }
}

pub fn add(client: &Client, user: Value, json_out: bool) -> anyhow::Result<()> {
    let (created, body) = upsert(client, user)?;
    if json_out {
        print_json(&body);
        return Ok(());
    }
    println!(
        "{} {} (shard {})",
        if created { "created" } else { "updated" },
        body["email"].as_str().unwrap_or(""),
        body["shard"]
    );
    if let Some(p) = body["initial_password"].as_str() {
        println!("one-time initial password: {p}");
    }
    Ok(())
}

/// One row of an HR export, checked before anything is sent.
fn row_to_user(headers: &csv::StringRecord, record: &csv::StringRecord) -> anyhow::Result<Value> {
    let field = |name: &str| {
        headers.iter().position(|h| h.trim() == name).and_then(|i| record.get(i)).unwrap_or("").trim().to_string()
    };
    let (employee_number, email) = (field("employee_number"), field("email"));
    if employee_number.is_empty() {
        bail!("employee_number is empty");
    }
    if email.is_empty() || !email.contains('@') {
        bail!("email '{email}' is not an e-mail address");
    }
    let mut user = json!({
        "employee_number": employee_number, "name": field("name"), "ministry": field("ministry"),
        "email": email, "msisdn": field("mobile"), "fax": field("fax"),
    });
    let password = field("password");
    if !password.is_empty() {
        user["password"] = json!(password);
    }
    Ok(user)
}

pub fn import(client: &Client, file: &Path, json_out: bool) -> anyhow::Result<()> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(file)
        .with_context(|| format!("opening {}", file.display()))?;
    let headers = reader.headers()?.clone();
    let required = ["employee_number", "name", "ministry", "email", "mobile", "fax"];
    let missing: Vec<_> = required.iter().filter(|c| !headers.iter().any(|h| h.trim() == **c)).collect();
    if !missing.is_empty() {
        bail!("{}: the header lacks {:?}; expected {}", file.display(), missing, required.join(","));
    }
    let (mut created, mut updated) = (0, 0);
    let mut passwords = Vec::new();
    let mut failures = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2; // 1-based, after the header.
        let outcome = record
            .map_err(anyhow::Error::from)
            .and_then(|r| row_to_user(&headers, &r))
            .and_then(|user| upsert(client, user));
        match outcome {
            Ok((true, body)) => {
                created += 1;
                if let Some(p) = body["initial_password"].as_str() {
                    passwords.push((body["email"].as_str().unwrap_or("").to_string(), p.to_string()));
                }
            }
            Ok((false, _)) => updated += 1,
            Err(e) => {
                if !json_out {
                    eprintln!("line {line}: {e:#}");
                }
                failures.push(json!({ "line": line, "error": format!("{e:#}") }));
            }
        }
    }
    if json_out {
        let passwords: Vec<_> = passwords.iter().map(|(e, p)| json!({ "email": e, "initial_password": p })).collect();
        print_json(&json!({
            "created": created, "updated": updated, "failed": failures.len(),
            "failures": failures, "initial_passwords": passwords,
        }));
    } else {
        if !passwords.is_empty() {
            println!("one-time initial passwords (give each to its user; shown only now):");
            for (email, password) in &passwords {
                println!("  {email:<40} {password}");
            }
        }
        println!("imported {}: {created} created, {updated} updated, {} failed", file.display(), failures.len());
    }
    if !failures.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
