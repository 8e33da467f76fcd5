//! `umsctl`: the operator CLI. Talks to any node's HTTP API.
//!
//!   umsctl [--node HOST:PORT] status
//!   umsctl user add --email E [--name N] [--password P] [--mobile M] [--fax F] ...
//!   umsctl user import FILE.csv
//!   umsctl leader transfer SHARD NODE

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "umsctl", version, about = "Operate a UMS cluster through any node's HTTP API")]
struct Cli {
    /// A node's HTTP address (the 7N80 port of the dev cluster).
    #[arg(long, env = "UMS_NODE", default_value = "127.0.0.1:7180", global = true)]
    node: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show nodes and shards: leader, term, applied index, replica lag.
    Status,
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage shard leadership.
    Leader {
        #[command(subcommand)]
        command: LeaderCommand,
    },
    /// Manage the mail domains the MX accepts (a domain is also local once any user in
    /// it exists).
    Domain {
        #[command(subcommand)]
        command: DomainCommand,
    },
}

#[derive(Subcommand)]
enum DomainCommand {
    /// Accept mail for DOMAIN, e.g. `health.go.ke`, before any user in it exists.
    Add { domain: String },
    /// Say whether the MX accepts mail for DOMAIN.
    Show { domain: String },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user, or update the one with this e-mail address.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        ministry: String,
        /// Mobile number in international form (+254...).
        #[arg(long, default_value = "")]
        mobile: String,
        #[arg(long, default_value = "")]
        fax: String,
        #[arg(long, default_value = "")]
        employee_number: String,
        /// Without one, a new user gets a one-time password, printed here.
        #[arg(long)]
        password: Option<String>,
        /// Storage quota over all the user's mailboxes, e.g. 5GiB, 500MiB (default 5GiB;
        /// mail that does not fit is refused: SMTP 452/552, IMAP [OVERQUOTA]).
        #[arg(long, value_parser = parse_size)]
        quota: Option<u64>,
    },
    /// Import an HR personnel export: header `employee_number,name,ministry,email,mobile,fax`
    /// and an optional `password` column. Re-importing updates users, never duplicates them;
    /// bad rows are reported with their line number and the others still import.
    Import { file: PathBuf },
}

#[derive(Subcommand)]
enum LeaderCommand {
    /// Move the leadership of SHARD to NODE (asks the current leader, wherever it is).
    Transfer {
        shard: u64,
        #[arg(value_name = "NODE")]
        to: u64,
    },
}

fn url(node: &str, path: &str) -> String {
    if node.starts_with("http://") { format!("{node}{path}") } else { format!("http://{node}{path}") }
}

/// Sends a request and returns (status, JSON body); transport errors say which node.
fn call(request: ureq::Request, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
    let url = request.url().to_string();
    let response = match body {
        Some(body) => request.timeout(Duration::from_secs(30)).send_json(body),
        None => request.timeout(Duration::from_secs(30)).call(),
    };
    match response {
        Ok(r) => Ok((r.status(), r.into_json().unwrap_or(Value::Null))),
        Err(ureq::Error::Status(code, r)) => Ok((code, r.into_json().unwrap_or(Value::Null))),
        Err(e) => bail!("cannot reach {url}: {e} (is the node running? see --node)"),
    }
}

fn error_text(body: &Value) -> String {
    body.get("error").and_then(Value::as_str).unwrap_or("unexpected response").to_string()
}

fn status(node: &str) -> anyhow::Result<()> {
    let (code, body) = call(ureq::get(&url(node, "/api/v1/cluster")), None)?;
    if code != 200 {
        bail!("HTTP {code}: {}", error_text(&body));
    }
    println!("nodes (as seen by node {}):", body["node"]);
    for n in body["nodes"].as_array().into_iter().flatten() {
        let health = call(ureq::get(&url(n["http"].as_str().unwrap_or_default(), "/health")), None);
        let up = matches!(health, Ok((200, _)));
        println!(
            "  {:>3}  peer {:<21} http {:<21} {}",
            n["id"],
            n["peer"].as_str().unwrap_or(""),
            n["http"].as_str().unwrap_or(""),
            if up { "up" } else { "DOWN" }
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

fn upsert(node: &str, user: Value) -> anyhow::Result<(bool, Value)> {
    let (code, body) = call(ureq::post(&url(node, "/api/v1/users")), Some(user))?;
    match code {
        200 => Ok((false, body)),
        201 => Ok((true, body)),
        _ => bail!("{} (HTTP {code})", error_text(&body)),
    }
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

fn import(node: &str, file: &PathBuf) -> anyhow::Result<()> {
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
    let (mut created, mut updated, mut failed) = (0, 0, 0);
    let mut passwords = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2; // 1-based, after the header.
        let outcome = record
            .map_err(anyhow::Error::from)
            .and_then(|r| row_to_user(&headers, &r))
            .and_then(|user| upsert(node, user));
        match outcome {
            Ok((true, body)) => {
                created += 1;
                if let Some(p) = body["initial_password"].as_str() {
                    passwords.push((body["email"].as_str().unwrap_or("").to_string(), p.to_string()));
                }
            }
            Ok((false, _)) => updated += 1,
            Err(e) => {
                failed += 1;
                eprintln!("line {line}: {e:#}");
            }
        }
    }
    if !passwords.is_empty() {
        println!("one-time initial passwords (give each to its user; shown only now):");
        for (email, password) in &passwords {
            println!("  {email:<40} {password}");
        }
    }
    println!("imported {}: {created} created, {updated} updated, {failed} failed", file.display());
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn transfer(node: &str, shard: u64, to: u64) -> anyhow::Result<()> {
    let mut target = node.to_string();
    for _ in 0..3 {
        let (code, body) = call(
            ureq::post(&url(&target, &format!("/api/v1/shards/{shard}/transfer-leader"))),
            Some(json!({ "node": to })),
        )?;
        match code {
            202 => {
                println!("asked node {} to hand shard {shard} to node {to}", body["to"]);
                return Ok(());
            }
            421 => match body["leader_http"].as_str() {
                Some(leader) => target = leader.to_string(),
                None => bail!("shard {shard} has no leader right now; retry shortly"),
            },
            _ => bail!("{} (HTTP {code})", error_text(&body)),
        }
    }
    bail!("leadership of shard {shard} kept moving; retry")
}

fn domain(node: &str, command: DomainCommand) -> anyhow::Result<()> {
    let (code, body) = match &command {
        DomainCommand::Add { domain } => {
            call(ureq::post(&url(node, "/api/v1/domains")), Some(json!({ "domain": domain })))?
        }
        DomainCommand::Show { domain } => call(ureq::get(&url(node, &format!("/api/v1/domains/{domain}"))), None)?,
    };
    if !(200..300).contains(&code) {
        bail!("{} (HTTP {code})", error_text(&body));
    }
    let name = body["domain"].as_str().unwrap_or("");
    match (command, body["local"].as_bool()) {
        (DomainCommand::Add { .. }, _) => println!("{name}: mail accepted"),
        (DomainCommand::Show { .. }, Some(true)) => println!("{name}: local (mail accepted)"),
        (DomainCommand::Show { .. }, _) => println!("{name}: not local (mail refused with 550 5.7.1)"),
    }
    Ok(())
}

fn main() {
    // Behave like other command-line tools when piped into `head`: end quietly
    // instead of panicking on a closed stdout.
    // SAFETY: restoring the default disposition of SIGPIPE at start-up, before any
    // other thread exists, has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Status => status(&cli.node),
        Command::User {
            command: UserCommand::Add { email, name, ministry, mobile, fax, employee_number, password, quota },
        } => {
            let mut user = json!({ "email": email, "name": name, "ministry": ministry, "msisdn": mobile, "fax": fax, "employee_number": employee_number });
            if let Some(password) = password {
                user["password"] = json!(password);
            }
            if let Some(quota) = quota {
                user["quota_bytes"] = json!(quota);
            }
            upsert(&cli.node, user).map(|(created, body)| {
                println!(
                    "{} {} (shard {})",
                    if created { "created" } else { "updated" },
                    body["email"].as_str().unwrap_or(""),
                    body["shard"]
                );
                if let Some(p) = body["initial_password"].as_str() {
                    println!("one-time initial password: {p}");
                }
            })
        }
        Command::User { command: UserCommand::Import { file } } => import(&cli.node, &file),
        Command::Leader { command: LeaderCommand::Transfer { shard, to } } => transfer(&cli.node, shard, to),
        Command::Domain { command } => domain(&cli.node, command),
    };
    if let Err(error) = result {
        eprintln!("umsctl: {error:#}");
        std::process::exit(1);
    }
}

/// A size with an optional binary unit: `5GiB`, `500MiB`, `64KiB`, or bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("'{text}' is not a size like 5GiB or 500MiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "tib" | "t" => 1 << 40,
        other => return Err(format!("unknown unit '{other}' in '{text}'; use KiB, MiB, GiB or TiB")),
    };
    value.checked_mul(factor).ok_or_else(|| format!("'{text}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("5GiB"), Ok(5 << 30));
        assert_eq!(parse_size("500MiB"), Ok(500 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("GiB").is_err());
    }
}
