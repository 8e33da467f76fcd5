//! `umsctl user add|import`: one user, or an HR personnel export.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// Rows sent at once per node: each node hashes passwords off its async workers, so a
/// few requests in flight per node keep every core of every node busy.
const IMPORT_REQUESTS_PER_NODE: usize = 4;

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
    // Rows are checked first: a bad row is reported with its line and the others go on.
    let mut rows = Vec::new();
    let mut outcomes: Vec<(usize, anyhow::Result<(bool, Value)>)> = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2; // 1-based, after the header.
        match record.map_err(anyhow::Error::from).and_then(|r| row_to_user(&headers, &r)) {
            Ok(user) => rows.push((line, user)),
            Err(e) => outcomes.push((line, Err(e))),
        }
    }
    let nodes = import_nodes(client);
    let total = rows.len();
    let started = Instant::now();
    let queue = Mutex::new(rows.into_iter().collect::<VecDeque<_>>());
    let results = Mutex::new(Vec::with_capacity(total));
    let workers = (nodes.len() * IMPORT_REQUESTS_PER_NODE).clamp(1, 64);
    std::thread::scope(|scope| {
        for worker in 0..workers {
            let (queue, results, nodes) = (&queue, &results, &nodes);
            scope.spawn(move || {
                loop {
                    let Some((line, user)) = queue.lock().expect("queue").pop_front() else { return };
                    let outcome = upsert_anywhere(client, nodes, worker, user);
                    results.lock().expect("results").push((line, outcome));
                }
            });
        }
        // Progress on the terminal while the workers run (scripts get --json at the end).
        let mut last_report = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let done = results.lock().expect("results").len();
            if done == total {
                break;
            }
            if !json_out && last_report.elapsed() >= Duration::from_secs(2) {
                last_report = Instant::now();
                eprintln!("{}", import_progress(done, total, started.elapsed()));
            }
        }
    });
    outcomes.extend(results.into_inner().expect("results"));
    outcomes.sort_by_key(|(line, _)| *line);
    let (mut created, mut updated) = (0, 0);
    let mut passwords = Vec::new();
    let mut failures = Vec::new();
    for (line, outcome) in outcomes {
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
    let seconds = started.elapsed().as_secs_f64();
    if json_out {
        let passwords: Vec<_> = passwords.iter().map(|(e, p)| json!({ "email": e, "initial_password": p })).collect();
        print_json(&json!({
            "created": created, "updated": updated, "failed": failures.len(),
            "failures": failures, "initial_passwords": passwords,
            "seconds": seconds, "rows_per_second": total as f64 / seconds.max(1e-3), "nodes": nodes.len(),
        }));
    } else {
        if !passwords.is_empty() {
            println!("one-time initial passwords (give each to its user; shown only now):");
            for (email, password) in &passwords {
                println!("  {email:<40} {password}");
            }
        }
        println!(
            "imported {}: {created} created, {updated} updated, {} failed, in {seconds:.1}s ({:.0} rows/s over {} node(s))",
            file.display(),
            failures.len(),
            total as f64 / seconds.max(1e-3),
            nodes.len()
        );
    }
    if !failures.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// Every up node's API address to spread the rows over (the one given when the
/// cluster will not say, e.g. to a ministry admin's token).
fn import_nodes(client: &Client) -> Vec<String> {
    let listed = client.call("GET", "/api/v1/nodes", None).ok().filter(|(code, _)| *code == 200);
    let mut nodes: Vec<String> = listed
        .map(|(_, body)| {
            body["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| n["state"] == "up" && n["reachable"] == true)
                .filter_map(|n| n["http"].as_str().map(|http| client.url_on(http, "")))
                .collect()
        })
        .unwrap_or_default();
    if nodes.is_empty() {
        nodes.push(client.url(""));
    }
    nodes
}

/// Upserts `user` on worker `worker`'s node, moving on to the next node when one does
/// not answer or has no leader for the moment (503).
fn upsert_anywhere(client: &Client, nodes: &[String], worker: usize, user: Value) -> anyhow::Result<(bool, Value)> {
    let mut last = None;
    for attempt in 0..(nodes.len() * 3).max(3) {
        let base = &nodes[(worker + attempt) % nodes.len()];
        match client.call_url("POST", &format!("{base}/api/v1/users"), Some(user.clone())) {
            Ok((200, body)) => return Ok((false, body)),
            Ok((201, body)) => return Ok((true, body)),
            Ok((503 | 429, body)) => last = Some(anyhow::anyhow!("{} (busy; retried)", error_text(&body))),
            Ok((code, body)) => bail!("{} (HTTP {code})", error_text(&body)),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(200 * (attempt as u64 + 1)));
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no node answered")))
}

/// "1,200 of 50,000 rows (2.4 %), 310 rows/s, ETA 2m37s".
fn import_progress(done: usize, total: usize, elapsed: Duration) -> String {
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
    let eta = if rate > 0.0 {
        let secs = ((total - done) as f64 / rate).round() as u64;
        format!(", ETA {}m{:02}s", secs / 60, secs % 60)
    } else {
        String::new()
    };
    format!("{done} of {total} rows ({:.1} %), {rate:.0} rows/s{eta}", 100.0 * done as f64 / total.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_has_a_rate_and_an_eta() {
        assert_eq!(import_progress(0, 100, Duration::from_secs(2)), "0 of 100 rows (0.0 %), 0 rows/s");
        assert_eq!(
            import_progress(300, 50_000, Duration::from_secs(1)),
            "300 of 50000 rows (0.6 %), 300 rows/s, ETA 2m46s"
        );
    }
}
