//! `umsctl`: the operator CLI. Talks to any node's HTTP API with a token.
//!
//!   umsctl [--node HOST:PORT] [--token T | --token-file F] [--json] status
//!   umsctl user add --email E [--name N] [--password P] [--mobile M] [--fax F] ...
//!   umsctl user import FILE.csv
//!   umsctl leader transfer SHARD NODE
//!   umsctl domain add|show DOMAIN
//!   umsctl token create --name N --role R [--scope D,...] [--expires 90d] | list | revoke ID
//!   umsctl ca init --dir D --cluster-id C | issue --dir D --cluster-id C --node-id N [--out O]
//!   umsctl audit [--since 1h] [--actor NAME] [--limit N]
//!   umsctl ban list | add NETWORK --for 1h [--reason R] | remove NETWORK
//!   umsctl node list | add --peer IP:PORT --http IP:PORT [--label zone=b] | drain ID [--wait] | cancel-drain ID | remove ID
//!   umsctl shard list | move SHARD --from A --to B [--wait]
//!   umsctl rebalance [--dry-run]
//!   umsctl backup create DIR | verify DIR

mod audit;
mod backup;
mod backup_core;
mod bans;
mod ca;
mod client;
mod cluster;
mod nodes;
mod tokens;
mod users;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::json;

use client::Client;

#[derive(Parser)]
#[command(name = "umsctl", version, about = "Operate a UMS cluster through any node's HTTP API")]
struct Cli {
    /// A node's API address: HOST:PORT (plain HTTP, as the dev cluster's 7N80 ports
    /// speak) or https://HOST:PORT.
    #[arg(long, env = "UMS_NODE", default_value = "127.0.0.1:7180", global = true)]
    node: String,
    /// Trust only this PEM certificate (or the CA that issued the node's) for an https://
    /// node; without it the public web roots are trusted.
    #[arg(long, env = "UMS_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// The API token to send (a dev cluster's is in data/dev/operator.token, read by default).
    #[arg(long, env = "UMS_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// A file holding the token, e.g. a node's own DATA/admin.token.
    #[arg(long, env = "UMS_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// Print the node's JSON answers instead of tables, for scripts.
    #[arg(long, global = true)]
    json: bool,
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
    /// Manage API tokens (operators only).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The audit log: administrative changes and refused logins and requests, oldest
    /// first (operators only).
    Audit {
        /// Only records this recent: 30m, 1h, 7d, ...
        #[arg(long, value_parser = tokens::parse_lifetime)]
        since: Option<tokens::Lifetime>,
        /// Only records of this actor (a token's name, a user, a login tried).
        #[arg(long)]
        actor: Option<String>,
        /// At most this many records.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Networks every node refuses (gateways at accept time, the API before any password
    /// check); gateways also ban abusive addresses themselves.
    Ban {
        #[command(subcommand)]
        command: BanCommand,
    },
    /// The cluster's machines: list, add, drain, remove.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Where shard replicas live: list them as their leaders see them, move one.
    Shard {
        #[command(subcommand)]
        command: ShardCommand,
    },
    /// Run a round of the placement driver now (it also runs by itself every few
    /// seconds): replicas off draining nodes, counts and leaders balanced.
    Rebalance {
        /// Only show the moves it would make.
        #[arg(long)]
        dry_run: bool,
    },
    /// The backup core: the backup site's replicas and the recovery point.
    BackupCore {
        #[command(subcommand)]
        command: BackupCoreCommand,
    },
    /// Backups of the whole cluster: create one, verify one (restore with `umsd restore`).
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// The cluster CA for mutual TLS between nodes (files only; no node is asked).
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[derive(Subcommand)]
enum BackupCommand {
    /// Copy every group (each consistent at its applied index, read from a backup-site
    /// learner when there is one) into DIR, a new or empty directory, with a manifest
    /// of indexes, terms, memberships and SHA-256 sums.
    Create { dir: PathBuf },
    /// Check every file of the backup in DIR against its manifest (no node is asked);
    /// fails naming each bad file.
    Verify { dir: PathBuf },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Every node: state (up, draining, removed), reachability, replicas and leaders held.
    List,
    /// Record a new machine; it gets the next unused id. Then start it with `join = true`.
    Add {
        /// Its peer address, IP:PORT (the others dial it here).
        #[arg(long)]
        peer: String,
        /// Its HTTP API address, IP:PORT.
        #[arg(long)]
        http: String,
        /// A placement label, NAME=VALUE (zone=b, site=primary); repeatable.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Take a node out of service: no new replicas; its leaders, then its replicas, move
    /// to the other nodes.
    Drain {
        id: u64,
        /// Follow the drain until the node holds nothing (with a limit: 10m, 1h, ...).
        #[arg(long, num_args = 0..=1, default_missing_value = "1h", value_parser = tokens::parse_lifetime)]
        wait: Option<tokens::Lifetime>,
    },
    /// Put a draining node back in service.
    CancelDrain { id: u64 },
    /// Remove a drained node for good: every member refuses it, its id is never reused.
    Remove { id: u64 },
}

#[derive(Subcommand)]
enum BackupCoreCommand {
    /// Per shard, what the backup site lacks of the committed log (entries, and the
    /// age of the oldest entry it lacks), and the worst: what losing the primary site
    /// now would lose at most. Lists lagging shards only unless --all.
    Status {
        #[arg(long)]
        all: bool,
    },
    /// After the primary site is lost: print what each shard keeps (and so what is
    /// lost), ask for confirmation, then make the backup site the primary: per shard the
    /// most advanced backup replica recovers it, the lost primary nodes are removed.
    /// Run it against a backup node. Refused while a primary node is reachable.
    Promote {
        /// Do not ask (for scripts).
        #[arg(long)]
        yes: bool,
        /// Promote even though a primary node is reachable or a shard has no backup
        /// replica (two sites may then take writes, or a shard's data is lost).
        #[arg(long)]
        force: bool,
    },
    /// Planned switchover (maintenance, drills): once the backup site is caught up, it
    /// becomes the primary and the primary the backup, without losing an acknowledged
    /// write; returns when every shard is on its new membership.
    Switchover,
    /// After a promotion: record the lost primary machines (or the removed nodes named)
    /// again, at their addresses, as new backup-site nodes with new ids, and print what
    /// to do on each machine (discard its data, a certificate for the new id, start it
    /// with join = true); the placement driver then gives each a learner of every group.
    Reseed {
        /// Removed node ids; default: those the promotion removed.
        nodes: Vec<u64>,
    },
}

#[derive(Subcommand)]
enum ShardCommand {
    /// Every shard: leader, voters, learners, target, whether it is moving.
    List,
    /// Move SHARD's replica from node FROM to node TO (learner, catch-up, joint
    /// consensus, removal), under load, without losing a write.
    Move {
        shard: u64,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
        /// Follow the move until it is done (with a limit: 10m, 1h, ...).
        #[arg(long, num_args = 0..=1, default_missing_value = "10m", value_parser = tokens::parse_lifetime)]
        wait: Option<tokens::Lifetime>,
    },
}

#[derive(Subcommand)]
enum BanCommand {
    /// Bans in force and ended, with who made them and why.
    List,
    /// Ban a network (203.0.113.0/24) or one address for a while.
    Add {
        network: String,
        /// How long: 30m, 12h, 7d, ...
        #[arg(long = "for", value_parser = tokens::parse_lifetime)]
        length: tokens::Lifetime,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lift a ban.
    Remove { network: String },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the cluster's CA (ca.pem, and ca.key readable by its owner only).
    Init {
        /// Where the CA goes (and where `issue` finds it).
        #[arg(long)]
        dir: PathBuf,
        /// The cluster id of every node's node.toml (lower-case letters, digits, '-').
        #[arg(long)]
        cluster_id: String,
    },
    /// Issue node N its certificate, named node-N.CLUSTER.ums (node-N.pem, node-N.key).
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        cluster_id: String,
        /// The node's id (`--node` is the API address every command takes).
        #[arg(long = "node-id")]
        node_id: u64,
        /// Where the files go (default: the CA's directory).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace an existing certificate (renewal).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it, once: it cannot be shown again.
    Create {
        /// Who or what holds it (a person, a system), shown in lists and audits.
        #[arg(long)]
        name: String,
        /// operator (everything), ministry-admin (users and domains of its domains),
        /// application (sends for its domains), carrier (its own endpoints).
        #[arg(long)]
        role: String,
        /// Domains (ministry-admin, application) or the carrier's name, comma-separated.
        #[arg(long, value_delimiter = ',')]
        scope: Vec<String>,
        /// Lifetime: 30m, 12h, 90d, 2w, 1y, or never.
        #[arg(long, default_value = "90d", value_parser = tokens::parse_lifetime)]
        expires: tokens::Lifetime,
    },
    /// List tokens (never their secrets): role, scope, state, creation and expiry.
    List,
    /// Revoke a token by its id: every node refuses it within a second.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum DomainCommand {
    /// Accept mail for DOMAIN, e.g. `health.go.ke`, before any user in it exists.
    Add { domain: String },
    /// Say whether the MX accepts mail for DOMAIN.
    Show { domain: String },
    /// Make DOMAIN a DKIM signing key (kept in the cluster; outgoing mail from DOMAIN is
    /// signed with it from then on) and print the DNS TXT record to publish.
    DkimKeygen {
        domain: String,
        /// The selector, the DNS label the key is published under (default: ums and the year).
        #[arg(long)]
        selector: Option<String>,
        /// rsa (2048 bits: every receiver verifies it) or ed25519.
        #[arg(long, default_value = "rsa", value_parser = ["rsa", "ed25519"])]
        algorithm: String,
    },
    /// Print DOMAIN's DKIM record (what to publish) without making a new key.
    Dkim { domain: String },
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
        Command::Ca { command } => run_ca(command, cli.json),
        command => Client::new(&cli.node, cli.token, cli.token_file, cli.ca_file)
            .and_then(|client| run(&client, command, cli.json)),
    };
    if let Err(error) = result {
        eprintln!("umsctl: {error:#}");
        std::process::exit(1);
    }
}

fn run(client: &Client, command: Command, json_out: bool) -> anyhow::Result<()> {
    match command {
        Command::Status => cluster::status(client, json_out),
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
            users::add(client, user, json_out)
        }
        Command::User { command: UserCommand::Import { file } } => users::import(client, &file, json_out),
        Command::Leader { command: LeaderCommand::Transfer { shard, to } } => {
            cluster::transfer(client, shard, to, json_out)
        }
        Command::Domain { command: DomainCommand::Add { domain } } => cluster::add_domain(client, &domain, json_out),
        Command::Domain { command: DomainCommand::Show { domain } } => cluster::show_domain(client, &domain, json_out),
        Command::Domain { command: DomainCommand::DkimKeygen { domain, selector, algorithm } } => {
            cluster::dkim_keygen(client, &domain, selector, &algorithm, json_out)
        }
        Command::Domain { command: DomainCommand::Dkim { domain } } => cluster::show_dkim(client, &domain, json_out),
        Command::Token { command: TokenCommand::Create { name, role, scope, expires } } => {
            tokens::create(client, &name, &role, &scope, expires, json_out)
        }
        Command::Token { command: TokenCommand::List } => tokens::list(client, json_out),
        Command::Token { command: TokenCommand::Revoke { id } } => tokens::revoke(client, &id, json_out),
        Command::Audit { since, actor, limit } => {
            audit::show(client, since.and_then(|s| s.0), actor.as_deref(), limit, json_out)
        }
        Command::Ban { command: BanCommand::List } => bans::list(client, json_out),
        Command::Ban { command: BanCommand::Add { network, length, reason } } => {
            bans::add(client, &network, length, &reason, json_out)
        }
        Command::Ban { command: BanCommand::Remove { network } } => bans::remove(client, &network, json_out),
        Command::Node { command } => match command {
            NodeCommand::List => nodes::list(client, json_out),
            NodeCommand::Add { peer, http, labels } => nodes::add(client, &peer, &http, &labels, json_out),
            NodeCommand::Drain { id, wait } => nodes::drain(client, id, wait_limit(wait), json_out),
            NodeCommand::CancelDrain { id } => nodes::set_state(client, id, "cancel-drain", json_out),
            NodeCommand::Remove { id } => nodes::remove(client, id, json_out),
        },
        Command::Shard { command: ShardCommand::List } => nodes::shards(client, json_out),
        Command::Shard { command: ShardCommand::Move { shard, from, to, wait } } => {
            nodes::move_shard(client, shard, from, to, wait_limit(wait), json_out)
        }
        Command::Rebalance { dry_run } => nodes::rebalance(client, dry_run, json_out),
        Command::BackupCore { command: BackupCoreCommand::Status { all } } => {
            backup_core::status(client, all, json_out)
        }
        Command::BackupCore { command: BackupCoreCommand::Promote { yes, force } } => {
            backup_core::promote(client, yes, force, json_out)
        }
        Command::BackupCore { command: BackupCoreCommand::Switchover } => backup_core::switchover(client, json_out),
        Command::BackupCore { command: BackupCoreCommand::Reseed { nodes } } => {
            backup_core::reseed(client, &nodes, json_out)
        }
        Command::Backup { command: BackupCommand::Create { dir } } => backup::create(client, &dir, json_out),
        Command::Backup { command: BackupCommand::Verify { dir } } => backup::verify(&dir, json_out),
        Command::Ca { command } => run_ca(command, json_out),
    }
}

/// `--wait [LIMIT]` as a duration (`never` waits a year).
fn wait_limit(wait: Option<tokens::Lifetime>) -> Option<std::time::Duration> {
    wait.map(|w| w.0.unwrap_or(std::time::Duration::from_secs(366 * 24 * 3600)))
}

fn run_ca(command: CaCommand, json_out: bool) -> anyhow::Result<()> {
    match command {
        CaCommand::Init { dir, cluster_id } => ca::init(&dir, &cluster_id, json_out),
        CaCommand::Issue { dir, cluster_id, node_id, out, force } => {
            let out = out.unwrap_or_else(|| dir.clone());
            ca::issue(&dir, &cluster_id, node_id, &out, force, json_out)
        }
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
    use super::{Cli, parse_size};
    use clap::{CommandFactory, Parser};

    #[test]
    fn the_command_line_is_well_formed_and_ca_issue_takes_a_node_id() {
        Cli::command().debug_assert();
        // `--node` is every command's API address; the certificate's node is `--node-id`.
        let cli = Cli::try_parse_from(["umsctl", "ca", "issue", "--dir", "d", "--cluster-id", "c", "--node-id", "4"]);
        assert!(cli.is_ok(), "{:?}", cli.err());
        let cli = Cli::try_parse_from([
            "umsctl",
            "--node",
            "127.0.0.1:7280",
            "shard",
            "move",
            "3",
            "--from",
            "1",
            "--to",
            "4",
            "--wait",
        ]);
        assert!(cli.is_ok(), "{:?}", cli.err());
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("5GiB"), Ok(5 << 30));
        assert_eq!(parse_size("500MiB"), Ok(500 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("GiB").is_err());
    }
}
