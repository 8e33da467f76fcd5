//! `umsd`: the UMS node daemon. `umsd --config node.toml` runs one node;
//! `umsd dev` runs a local cluster of child processes for development; `umsd restore`
//! starts a new cluster from a backup.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A faster allocator than glibc's for this allocation-heavy daemon.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use node::config::NodeConfig;

#[derive(Parser)]
#[command(name = "umsd", version, about = "UMS node daemon: one member of a replicated messaging cluster")]
struct Cli {
    /// Run one node with this configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local N-node cluster on 127.0.0.1 (ports 7N00..7N99), create demo users,
    /// print the endpoints, and run until Ctrl-C. Restarting resumes from the same data.
    Dev {
        /// Number of nodes (1-9).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Also start a backup site of this many nodes (the next ids, e.g. 4 and 5 on
        /// 7400/7500): labelled site=backup, each holding a learner of every group, and
        /// print the recovery point once they hold everything.
        #[arg(long, default_value_t = 0)]
        backup_site: usize,
        /// Data directory of the dev cluster.
        #[arg(long, default_value = "./data/dev")]
        data: PathBuf,
        /// Let mail clients log in without STARTTLS (SMTP AUTH, IMAP LOGIN): passwords in
        /// clear text over loopback. For clients that cannot take the self-signed
        /// certificate; development only.
        #[arg(long)]
        insecure_auth: bool,
        /// Change a node.toml setting of every node, as `dotted.key=value` (repeatable):
        /// e.g. `--set imap.connections.max_per_ip=100 --set smtp.max_recipients=500`.
        /// Every key is in the README's configuration section.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        #[command(subcommand)]
        action: Option<DevAction>,
    },
    /// Start a new cluster from a backup (umsctl backup create): checks every file of
    /// BACKUP while writing it into the new node's data directory, which must not exist
    /// or be empty. The node's config must name a new cluster_id, only itself as a
    /// member, and the backup's shard count; grow the cluster afterwards with umsctl node add.
    Restore {
        /// The backup directory (it holds manifest.json).
        backup: PathBuf,
        /// The new cluster's first node (TOML, as for `umsd --config`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Restore into this data directory instead of the config's; a copy of the
        /// config naming it is written there as node.toml, to start the node with.
        #[arg(long, value_name = "NEWDIR")]
        data: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DevAction {
    /// Grow the running dev cluster by one node (the next id, on its 7N00 block): it is
    /// recorded, started with `join = true`, and the placement driver moves replicas to
    /// it. `umsd dev` starts it with the others from then on.
    AddNode {
        /// Return once the node is up, without following the rebalancing.
        #[arg(long)]
        no_wait: bool,
        /// Its `site` label: `backup` makes it a backup-site node (a learner of every
        /// group, never a voter).
        #[arg(long)]
        site: Option<String>,
    },
}

fn main() {
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("UMS_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let cli = Cli::parse();
    let result = match (cli.config, cli.command) {
        (Some(path), None) => NodeConfig::load(&path).map_err(anyhow::Error::from).and_then(|config| {
            let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().ok();
            node::server::run(config, metrics)
        }),
        (None, Some(Command::Dev { nodes, backup_site, data, insecure_auth, overrides, action: None })) => {
            node::dev::run(nodes, backup_site, &data, insecure_auth, &overrides)
        }
        (None, Some(Command::Dev { data, overrides, action: Some(DevAction::AddNode { no_wait, site }), .. })) => {
            node::dev::add_node(&data, &overrides, !no_wait, site.as_deref())
        }
        (None, Some(Command::Restore { backup, config, data, json })) => {
            node::backup::restore::command(&backup, &config, data.as_deref(), json)
        }
        (Some(_), Some(_)) => Err(anyhow::anyhow!("use either --config FILE or a subcommand, not both")),
        (None, None) => Err(anyhow::anyhow!("nothing to do: run `umsd --config node.toml` or `umsd dev` (see --help)")),
    };
    if let Err(error) = result {
        eprintln!("umsd: {error:#}");
        std::process::exit(1);
    }
}
