//! `umschaos`: chaos drills against a running UMS cluster.
//!
//!   umschaos drill leader-kill [--cluster dev|DIR] [--duration 60s] [--rate 200]
//!                              [--seed N] [--json FILE]
//!   umschaos drill all --quick

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chaos::cluster::Cluster;
use chaos::drill::{self, AVAILABLE, DrillOptions};
use chaos::workload::Protocol;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "umschaos", version, about = "Break a UMS cluster on purpose and prove nothing acknowledged was lost")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario (leader-kill, node-pause, partition-minority, partition-leader,
    /// packet-loss, slow-network, slow-disk, disk-full, rolling-restart, power-cut,
    /// add-node, move-under-partition, drain-node, switchover, site-loss, or all) and
    /// print a report. Partitions and loss add iptables rules (root) on the nodes' peer
    /// addresses and remove them; slow-* need nodes with debug_faults (umsd dev); disk-full
    /// fills a node's data filesystem, which must be its own; switchover and site-loss need
    /// a backup site (umsd dev --backup-site 2). site-loss kills the primary site for good
    /// and promotes the backup: the cluster is left on the backup site (all runs it last).
    /// Exits 1 if the checker finds a lost or duplicated message, 2 on usage errors or
    /// when a drill cannot run (cluster not up, fault could not be injected).
    Drill {
        scenario: String,
        /// The cluster's data directory (`dev` = ./data/dev from `umsd dev`).
        #[arg(long, default_value = "dev", conflicts_with = "nodes")]
        cluster: PathBuf,
        /// Or the cluster by its nodes' HTTP addresses, e.g. 127.0.0.1:7180,127.0.0.1:7280
        /// (their umsd processes must run on this machine; the other members are found too).
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
        /// How long the workload runs, e.g. 60s, 2m, 500ms.
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        duration: Duration,
        /// Writes per second.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Users written to.
        #[arg(long, default_value_t = 20)]
        users: usize,
        /// A write slower than this (ms) counts as its shard being unavailable.
        #[arg(long, default_value_t = 250)]
        stall_ms: u64,
        /// How long to wait after the workload for queued webhooks still pending in the
        /// cluster to arrive, e.g. 60s (an item that never does is reported).
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        outbound_wait: Duration,
        /// Write through the HTTP API, SMTP (the nodes' MX ports), or both in turn.
        #[arg(long, default_value = "mixed")]
        workload: Protocol,
        /// Short runs (about 15 s per scenario) for CI.
        #[arg(long)]
        quick: bool,
        /// Also write the reports as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.find(|c: char| !c.is_ascii_digit()).map_or((text, "s"), |i| text.split_at(i));
    let value: u64 = number.parse().map_err(|_| format!("'{text}' is not a duration like 60s, 2m or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        _ => Err(format!("unknown unit '{unit}' in '{text}'; use ms, s or m")),
    }
}

fn main() {
    let Command::Drill {
        scenario,
        cluster,
        nodes,
        duration,
        rate,
        seed,
        users,
        stall_ms,
        outbound_wait,
        workload,
        quick,
        json,
    } = Cli::parse().command;
    let result = (|| -> anyhow::Result<bool> {
        let find = || if nodes.is_empty() { Cluster::from_dir(&cluster) } else { Cluster::from_addresses(&nodes) };
        let mut cluster = find()?;
        let options = DrillOptions {
            duration: if quick { Duration::from_secs(15) } else { duration },
            rate: if quick { rate.min(100) } else { rate },
            seed,
            users,
            stall_ms,
            outbound_wait,
            protocol: workload,
        };
        if workload != Protocol::Http && cluster.ids().iter().any(|&id| cluster.node(id).config.smtp.listen.is_none()) {
            anyhow::bail!(
                "this workload writes over SMTP, which needs every node's SMTP listener ([smtp] listen in node.toml); use --workload http"
            );
        }
        let all = scenario == "all";
        let scenarios: Vec<&str> = if all { AVAILABLE.to_vec() } else { vec![scenario.as_str()] };
        let mut reports = Vec::new();
        for name in scenarios {
            // The nodes again (an earlier scenario may have added or removed one), and
            // whether this one can run (add-node may have made room for it).
            cluster = find()?;
            if all && let Some(why) = drill::skip_reason(name, &cluster) {
                println!("skipping {name}: {why}");
                continue;
            }
            let report = drill::run(name, &cluster, &options)?;
            drill::print(&report);
            reports.push(report);
        }
        if let Some(path) = json {
            std::fs::write(&path, serde_json::to_vec_pretty(&reports)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(reports.iter().all(|r| r.passed))
    })();
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(error) => {
            eprintln!("umschaos: {error:#}");
            std::process::exit(2);
        }
    }
}
