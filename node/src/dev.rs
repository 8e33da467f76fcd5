//! `umsd dev`: a real N-node cluster on this machine, as N child `umsd` processes on
//! 127.0.0.1 with the dev port plan (node N uses 7N00..7N99), data under one directory,
//! demo users created once. Ctrl-C stops the children cleanly; starting again resumes
//! from the same data.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use consensus::NodeId;

use crate::config::{Member, NodeConfig, OutboundSettings, ThreadSettings, dev_ports, ports_in_block};
use crate::driver::BACKUP_SITE;
use crate::http::HttpSettings;
use crate::peer::tls::PeerTlsSettings;
use crate::pki;
use devkit::http::post_with_retry;
use devkit::process::pid_of;
use gateways::imap::ImapSettings;
use gateways::smtp::SmtpSettings;
use gateways::smtp::authentication::MailAuthSettings;

/// Number of demo users (`user1@ministry.go.ke` …).
pub const DEMO_USERS: u32 = 100;
pub const DEMO_DOMAIN: &str = "ministry.go.ke";

/// The demo user `n`: address, password and MSISDN.
pub fn demo_user(n: u32) -> (String, String, String) {
    (format!("user{n}@{DEMO_DOMAIN}"), format!("demo-password-{n}"), format!("+254700000{n:03}"))
}

/// The configuration of dev node `id` in a cluster of `nodes`.
pub fn dev_config(id: NodeId, nodes: usize, data: &Path, cluster_id: &str) -> NodeConfig {
    local_config(7000, id, nodes, data, cluster_id)
}

/// The loopback address node `id` of a local cluster uses for peer traffic (listening and
/// dialling): 127.0.0.1N. Distinct addresses let a drill cut the network between two
/// nodes with an iptables rule on their addresses; clients still use 127.0.0.1.
pub fn local_peer_ip(id: NodeId) -> [u8; 4] {
    [127, 0, 0, 10 + id as u8]
}

/// The configuration of node `id` of a local cluster whose port blocks start at `base`
/// and whose bootstrap members are nodes 1..=`nodes`; a higher id is a node added later
/// (`join = true`).
pub fn local_config(base: u16, id: NodeId, nodes: usize, data: &Path, cluster_id: &str) -> NodeConfig {
    let member = |n: NodeId| {
        let ports = ports_in_block(base, n);
        Member { id: n, peer: (local_peer_ip(n), ports.peer).into(), http: ([127, 0, 0, 1], ports.http).into() }
    };
    let members: Vec<Member> = (1..=nodes as NodeId).map(member).collect();
    let me = member(id);
    let ports = ports_in_block(base, id);
    let (cert, key) = dev_tls_files(data);
    let smtp = SmtpSettings {
        listen: Some(([127, 0, 0, 1], ports.smtp).into()),
        submission_listen: Some(([127, 0, 0, 1], ports.submission).into()),
        submissions_listen: Some(([127, 0, 0, 1], ports.smtps).into()),
        hostname: format!("node{id}.ums.localhost"),
        tls_cert: Some(cert.clone()),
        tls_key: Some(key.clone()),
        // No SPF/DKIM/DMARC: a dev machine may have no DNS, and every lookup would hold a
        // message for the whole timeout (`--set smtp.mail_auth.enabled=true --set
        // smtp.mail_auth.nameserver=...` turns it on, as scripts/bench-smtp does).
        mail_auth: MailAuthSettings::disabled(),
        ..SmtpSettings::default()
    };
    let imap = ImapSettings {
        listen: Some(([127, 0, 0, 1], ports.imap).into()),
        tls_listen: Some(([127, 0, 0, 1], ports.imaps).into()),
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..ImapSettings::default()
    };
    // The nodes share this machine: more busy threads than cores only adds switching
    // (about 10 % more CPU per append in ums-bench with two HTTP workers per node on 2
    // cores).
    let threads = ThreadSettings::share_of_machine(nodes);
    NodeConfig {
        replicas: nodes.min(3),
        debug_faults: true,
        smtp,
        imap,
        threads,
        peer_tls: Some(local_peer_tls(data, id)),
        outbound: local_outbound(),
        // Plain HTTP: a local cluster's clients are on this machine (production serves
        // HTTPS, the default).
        http: HttpSettings::plain(),
        join: id as usize > nodes,
        ..NodeConfig::new(&me, cluster_id, data.join(format!("node-{id}")), members)
    }
}

/// Where a local cluster under `data` keeps its cluster CA and the nodes' peer
/// certificates (beside the nodes' directories, which may be filesystems of their own).
pub fn dev_pki_dir(data: &Path) -> PathBuf {
    data.join("pki")
}

/// The cluster CA and the peer certificates of nodes 1..=`nodes`, made unless present.
pub fn ensure_peer_certificates(data: &Path, cluster_id: &str, nodes: usize) -> anyhow::Result<()> {
    let dir = dev_pki_dir(data);
    pki::ensure_ca(&dir, cluster_id).context("creating the cluster CA")?;
    for id in 1..=nodes as NodeId {
        pki::ensure_node(&dir, &dir, cluster_id, id).with_context(|| format!("issuing node {id}'s certificate"))?;
    }
    Ok(())
}

/// The outbound settings of a local cluster: webhooks may reach this machine's loopback
/// addresses, where the drills' and tests' receivers listen.
pub fn local_outbound() -> OutboundSettings {
    OutboundSettings { webhook_allow: vec!["127.0.0.0/8".into()], ..OutboundSettings::default() }
}

/// `[peer_tls]` of node `id` of a local cluster under `data`.
pub fn local_peer_tls(data: &Path, id: NodeId) -> PeerTlsSettings {
    let dir = dev_pki_dir(data);
    let (cert, key) = pki::node_files(id);
    PeerTlsSettings { ca: dir.join(pki::CA_CERT_FILE), cert: dir.join(cert), key: dir.join(key) }
}

/// Where a local cluster under `data` keeps its self-signed TLS certificate and key.
pub fn dev_tls_files(data: &Path) -> (PathBuf, PathBuf) {
    (data.join("tls/cert.pem"), data.join("tls/key.pem"))
}

/// Creates the local cluster's self-signed certificate unless it exists (clients must
/// be told to accept it, e.g. `swaks --tls` does, Python needs an unverified context).
pub fn ensure_dev_certificate(data: &Path) -> anyhow::Result<()> {
    let (cert, key) = dev_tls_files(data);
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    gateways::tls::ensure_self_signed(&cert, &key, &names).context("creating the dev TLS certificate")
}

fn read_or_create(path: &Path, create: impl FnOnce() -> String) -> anyhow::Result<String> {
    if let Ok(existing) = fs::read_to_string(path) {
        return Ok(existing.trim().to_string());
    }
    let value = create();
    fs::write(path, &value).with_context(|| format!("writing {}", path.display()))?;
    Ok(value)
}

/// Runs the dev cluster until Ctrl-C; `insecure_auth` lets mail clients log in without TLS;
/// `overrides` (`dotted.key=value`) change any node.toml setting of every node.
pub fn run(
    nodes: usize,
    backup_site: usize,
    data: &Path,
    insecure_auth: bool,
    overrides: &[String],
) -> anyhow::Result<()> {
    ensure!((1..=9).contains(&nodes), "--nodes must be between 1 and 9 (node N uses ports 7N00-7N99)");
    ensure!(nodes + backup_site <= 9, "--nodes plus --backup-site must be at most 9 (node N uses ports 7N00-7N99)");
    fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let data = data.canonicalize()?;
    let cluster_id = read_or_create(&data.join("cluster-id"), || format!("dev-{:016x}", rand::random::<u64>()))?;
    let recorded = read_or_create(&data.join("nodes"), || nodes.to_string())?;
    if recorded != nodes.to_string() {
        bail!(
            "{} holds a {recorded}-node cluster; run with --nodes {recorded}, or use another --data directory",
            data.display()
        );
    }
    let exe = std::env::current_exe().context("locating the umsd executable")?;

    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;

    ensure_dev_certificate(&data)?;
    let added = added_nodes(&data);
    let all = nodes + added.len();
    ensure_peer_certificates(&data, &cluster_id, all)?;
    let mut children: Vec<(NodeId, Child, PathBuf)> = Vec::new();
    for id in (1..=all as NodeId).filter(|&id| !was_removed(&data, id)) {
        let mut config = dev_config(id, nodes, &data, &cluster_id);
        config.smtp.allow_insecure_auth = insecure_auth;
        config.imap.allow_insecure_auth = insecure_auth;
        let config = config.with_overrides(overrides)?;
        let (child, log_path) = spawn_node(&exe, &config).with_context(|| format!("starting node {id}"))?;
        children.push((id, child, log_path));
    }

    let result = wait_until_ready(&mut children, &stop).and_then(|()| {
        let token = ensure_operator_token(&data)?;
        if !data.join("demo-users-created").exists() {
            create_demo_users(&token)?;
            fs::write(data.join("demo-users-created"), b"")?;
        }
        let ids: Vec<NodeId> = children.iter().map(|(id, _, _)| *id).collect();
        print_endpoints(&ids, &data, &cluster_id, &token);
        let backup_nodes = added_nodes(&data).into_iter().filter(|n| n.site.as_deref() == Some(BACKUP_SITE)).count();
        for _ in backup_nodes..backup_site {
            add_node(&data, overrides, false, Some(BACKUP_SITE))?;
        }
        if backup_site > 0 || backup_nodes > 0 {
            follow_backup_seeding(&token, &stop)?;
        }
        supervise(&mut children, &stop);
        Ok(())
    });
    stop_children(&mut children);
    stop_added_since(&data, all);
    result
}

/// Stops the nodes `umsd dev add-node` started while this cluster ran (they are not
/// children of this process): those beyond the first `started` ids.
fn stop_added_since(data: &Path, started: usize) {
    for id in added_nodes(data).into_iter().map(|n| n.id).filter(|&id| id as usize > started) {
        let config = data.join(format!("node-{id}")).join("node.toml");
        if let Some(pid) = pid_of(&config) {
            println!("stopping node {id}, added while the cluster ran");
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).stderr(Stdio::null()).status();
            // Gone before we return, so a restart finds its data unlocked.
            let deadline = Instant::now() + Duration::from_secs(10);
            while pid_of(&config).is_some() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A node `umsd dev add-node` added, and its `site` label if it has one.
struct AddedNode {
    id: NodeId,
    site: Option<String>,
}

/// The nodes `umsd dev add-node` added to the cluster under `data`, in order (lines of
/// `ID` or `ID SITE`).
fn added_nodes(data: &Path) -> Vec<AddedNode> {
    let text = fs::read_to_string(data.join(ADDED_NODES_FILE)).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let id = words.next()?.parse().ok()?;
            Some(AddedNode { id, site: words.next().map(str::to_string) })
        })
        .collect()
}

/// Whether node `id` under `data` was removed from the cluster (it left its marker):
/// `umsd dev` does not start it again.
fn was_removed(data: &Path, id: NodeId) -> bool {
    data.join(format!("node-{id}")).join(crate::membership::REMOVED_MARKER).exists()
}

/// Where `umsd dev add-node` lists the nodes it added (so `umsd dev` starts them too).
const ADDED_NODES_FILE: &str = "added-nodes";

/// `umsd dev add-node`: grows the running dev cluster under `data` by one node (the
/// next id, on its 7N00 block): records it through node 1's API, issues its peer
/// certificate, starts it (`join = true`; it keeps running after this command ends,
/// and `umsd dev` starts it with the others from now on), then follows the placement
/// driver moving replicas to it unless `wait` is false. With `site`, the node carries
/// that `site` label (`backup`: the backup site, which holds a learner of every group).
pub fn add_node(data: &Path, overrides: &[String], wait: bool, site: Option<&str>) -> anyhow::Result<()> {
    let data = data.canonicalize().with_context(|| format!("{} holds no dev cluster", data.display()))?;
    let cluster_id = fs::read_to_string(data.join("cluster-id"))
        .with_context(|| format!("{} holds no dev cluster; start one with `umsd dev`", data.display()))?;
    let cluster_id = cluster_id.trim();
    let nodes: usize = fs::read_to_string(data.join("nodes"))?.trim().parse().context("reading DATA/nodes")?;
    let mut added = added_nodes(&data);
    let id = (nodes + added.len() + 1) as NodeId;
    ensure!(id <= 9, "a dev cluster has at most 9 nodes (node N uses ports 7N00-7N99)");
    let token = devkit::tokens::read_token(&data.join(devkit::tokens::OPERATOR_TOKEN_FILE))
        .context("no operator token: is the dev cluster running (`umsd dev`)?")?;
    let config = dev_config(id, nodes, &data, cluster_id).with_overrides(overrides)?;
    ensure_peer_certificates(&data, cluster_id, id as usize)?;
    let labels: BTreeMap<&str, &str> = site.map(|site| ("site", site)).into_iter().collect();
    let body = serde_json::json!({
        "peer": config.peer_listen.to_string(), "http": config.http_listen.to_string(), "labels": labels,
    });
    let recorded = post_with_retry(&format!("{}/api/v1/nodes", http_base(1)), &token, &body)
        .context("recording the new node through node 1 (is the dev cluster running?)")?;
    ensure!(
        recorded["id"].as_u64() == Some(id),
        "the cluster gave the new node id {} (expected {id}): it has nodes this directory does not know",
        recorded["id"]
    );
    let exe = std::env::current_exe().context("locating the umsd executable")?;
    let (mut child, log) = spawn_node(&exe, &config)?;
    added.push(AddedNode { id, site: site.map(str::to_string) });
    let list: Vec<String> =
        added.iter().map(|n| n.site.as_ref().map_or(n.id.to_string(), |site| format!("{} {site}", n.id))).collect();
    fs::write(data.join(ADDED_NODES_FILE), list.join("\n") + "\n")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ureq::get(&format!("{}/health", http_base(id))).timeout(Duration::from_secs(1)).call().is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("node {id} exited during start-up ({status}); its log is {}:\n{}", log.display(), tail(&log, 20));
        }
        ensure!(Instant::now() < deadline, "node {id} did not answer /health within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ports = dev_ports(id);
    let site = site.map_or(String::new(), |site| format!(" ({site} site)"));
    println!(
        "node {id}{site} joined: peer {}:{}, SMTP 127.0.0.1:{}, IMAP 127.0.0.1:{}, HTTP http://127.0.0.1:{} (log {})",
        std::net::Ipv4Addr::from(local_peer_ip(id)),
        ports.peer,
        ports.smtp,
        ports.imap,
        ports.http,
        log.display()
    );
    if wait {
        follow_rebalance(&token, id)?;
    }
    Ok(())
}

/// The backup site's seeding as node `base` (an HTTP base URL) reports it: groups some
/// backup node still lacks, all groups, and the `GET /api/v1/backup-core` report; `None`
/// when the node does not answer.
pub fn backup_seeding(base: &str, token: &str) -> Option<(usize, usize, serde_json::Value)> {
    let url = format!("{base}/api/v1/backup-core");
    let report: serde_json::Value =
        devkit::http::get(&url, token).timeout(Duration::from_secs(30)).call().ok()?.into_json().ok()?;
    let shards = report["shards"].as_array()?;
    let seeding = shards.iter().filter(|s| s["missing"].as_array().is_some_and(|m| !m.is_empty())).count();
    Some((seeding, shards.len(), report))
}

/// Follows the backup site's seeding (a learner of every group on each backup node)
/// until every shard has a backup replica, then prints the recovery point (at most 10
/// minutes, or until Ctrl-C).
fn follow_backup_seeding(token: &str, stop: &AtomicBool) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < Duration::from_secs(600) && !stop.load(Ordering::SeqCst) {
        let Some((seeding, shards, report)) = backup_seeding(&http_base(1), token) else {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        if seeding == 0 && shards > 0 {
            let nodes: Vec<String> =
                report["backup_nodes"].as_array().into_iter().flatten().map(|n| n.to_string()).collect();
            println!(
                "backup site (nodes {}) holds every group ({:.1}s); recovery point now: {} entries / {:.3} s (umsctl backup-core status)",
                nodes.join(", "),
                started.elapsed().as_secs_f64(),
                report["worst_entries"],
                report["worst_seconds"].as_f64().unwrap_or(0.0)
            );
            return Ok(());
        }
        if last != Some(seeding) {
            println!(
                "{:>6.1}s  backup site: {seeding} of {shards} groups still being copied",
                started.elapsed().as_secs_f64()
            );
            last = Some(seeding);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// Prints the new node's replica count as the driver moves replicas to it, until no
/// shard is moving (at most 10 minutes).
fn follow_rebalance(token: &str, id: NodeId) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(500));
        let Ok(body) = devkit::http::get(&format!("{}/api/v1/nodes", http_base(1)), token).call() else { continue };
        let body: serde_json::Value = body.into_json()?;
        let node = body["nodes"].as_array().into_iter().flatten().find(|n| n["id"] == id);
        let replicas = node.and_then(|n| n["replicas"].as_u64()).unwrap_or(0);
        let moving = body["shards_moving"].as_u64().unwrap_or(0);
        if last != Some((replicas, moving)) {
            println!(
                "{:>6.1}s  node {id} holds {replicas} replicas; {moving} shard(s) moving",
                started.elapsed().as_secs_f64()
            );
            last = Some((replicas, moving));
        }
        if replicas > 0 && moving == 0 {
            println!("balanced in {:.1}s", started.elapsed().as_secs_f64());
            return Ok(());
        }
    }
    bail!("the cluster was still moving replicas to node {id} after 10 minutes (see umsctl node list)")
}

/// Writes `config` into its data directory and starts `umsd --config` on it, logging to
/// `umsd.log` there. Returns the child and the log's path.
pub fn spawn_node(exe: &Path, config: &NodeConfig) -> anyhow::Result<(Child, PathBuf)> {
    fs::create_dir_all(&config.data_dir)?;
    let config_path = config.data_dir.join("node.toml");
    fs::write(&config_path, toml::to_string(config)?)?;
    devkit::process::start_umsd(exe, &config_path)
}

fn http_base(id: NodeId) -> String {
    format!("http://127.0.0.1:{}", dev_ports(id).http)
}

fn wait_until_ready(children: &mut [(NodeId, Child, PathBuf)], stop: &AtomicBool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let ids: Vec<NodeId> = children.iter().map(|(id, _, _)| *id).collect();
    for id in ids {
        loop {
            if stop.load(Ordering::SeqCst) {
                bail!("interrupted");
            }
            for (child_id, child, log) in children.iter_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "node {child_id} exited during start-up ({status}); its log is {}:\n{}",
                        log.display(),
                        tail(log, 20)
                    );
                }
            }
            if ureq::get(&format!("{}/health", http_base(id))).timeout(Duration::from_secs(1)).call().is_ok() {
                break;
            }
            ensure!(Instant::now() < deadline, "node {id} did not answer /health within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// The dev cluster's operator token, kept in `DATA/operator.token` (mode 0600): created
/// through node 1 with that node's own admin token the first time, and again when the
/// kept one no longer works (revoked, say).
fn ensure_operator_token(data: &Path) -> anyhow::Result<String> {
    let path = data.join(devkit::tokens::OPERATOR_TOKEN_FILE);
    if let Some(token) = devkit::tokens::read_token(&path) {
        let check = devkit::http::get(&format!("{}/api/v1/tokens", http_base(1)), &token)
            .timeout(Duration::from_secs(15))
            .call();
        match check {
            Ok(_) => return Ok(token),
            Err(ureq::Error::Status(401, _)) => println!("{} no longer works; making a new one", path.display()),
            Err(e) => bail!("checking the operator token in {}: {e}", path.display()),
        }
    }
    let admin_path = data.join("node-1").join(devkit::tokens::NODE_TOKEN_FILE);
    let admin = devkit::tokens::read_token(&admin_path)
        .with_context(|| format!("node 1 wrote no admin token at {}", admin_path.display()))?;
    let token = devkit::tokens::create_token(&http_base(1), &admin, "umsd dev operator", "operator", None)?;
    devkit::tokens::write_secret_file(&path, &token).with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

fn create_demo_users(token: &str) -> anyhow::Result<()> {
    println!("creating {DEMO_USERS} demo users ...");
    let workers: Vec<_> = (0..4u32)
        .map(|worker| {
            let token = token.to_string();
            std::thread::spawn(move || -> anyhow::Result<()> {
                for n in (1..=DEMO_USERS).filter(|n| n % 4 == worker) {
                    let (email, password, msisdn) = demo_user(n);
                    let body = serde_json::json!({
                        "email": email, "name": format!("Demo User {n}"), "ministry": "Demo",
                        "msisdn": msisdn, "password": password, "employee_number": format!("DEMO{n:04}"),
                    });
                    post_with_retry(&format!("{}/api/v1/users", http_base(1)), &token, &body)?;
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.join().map_err(|_| anyhow::anyhow!("demo user worker panicked"))??;
    }
    Ok(())
}

fn print_endpoints(ids: &[NodeId], data: &Path, cluster_id: &str, token: &str) {
    println!("\nUMS dev cluster '{cluster_id}' is up: {} nodes, data in {}", ids.len(), data.display());
    println!(
        "  node  peer           SMTP (MX)        submission       IMAP (STARTTLS)  IMAPS            HTTP API / metrics"
    );
    for &id in ids {
        let ports = dev_ports(id);
        println!(
            "  {id:>4}  {}:{:<5}  127.0.0.1:{:<5}  127.0.0.1:{:<5}  127.0.0.1:{:<5}  127.0.0.1:{:<5}  http://127.0.0.1:{}/api/v1/cluster  (/metrics, /health)",
            std::net::Ipv4Addr::from(local_peer_ip(id)),
            ports.peer,
            ports.smtp,
            ports.submission,
            ports.imap,
            ports.imaps,
            ports.http
        );
    }
    let (email, password, msisdn) = demo_user(1);
    println!("\ndemo users: user1..user{DEMO_USERS}@{DEMO_DOMAIN}, e.g. {email} / {password} / {msisdn}");
    let token_file = data.join(devkit::tokens::OPERATOR_TOKEN_FILE);
    println!("\noperator token (also in {}, which umsctl reads): {token}", token_file.display());
    println!(
        "try: curl -s -XPOST -H \"Authorization: Bearer $(cat {})\" -H 'content-type: application/json' -d '{{\"kind\":\"sms\",\"body\":\"hello\"}}' http://127.0.0.1:7180/api/v1/users/{email}/messages",
        token_file.display()
    );
    println!("  or as the user: curl -s -u {email}:{password} http://127.0.0.1:7180/api/v1/users/{email}/messages");
    println!("send mail: swaks --server 127.0.0.1:7125 --to {email} --from citizen@example.org");
    println!(
        "submit mail: swaks --server 127.0.0.1:7187 --tls --auth PLAIN --auth-user {email} --auth-password {password} --from {email} --to someone@example.org"
    );
    println!("STARTTLS uses the self-signed certificate {}/tls/cert.pem.", data.display());
    println!("logs: {}/node-N/umsd.log; Ctrl-C stops the cluster.", data.display());
}

fn supervise(children: &mut [(NodeId, Child, PathBuf)], stop: &AtomicBool) {
    let mut reported = vec![false; children.len()];
    while !stop.load(Ordering::SeqCst) {
        for (i, (id, child, log)) in children.iter_mut().enumerate() {
            if !reported[i]
                && let Ok(Some(status)) = child.try_wait()
            {
                eprintln!("node {id} exited ({status}); see {}", log.display());
                reported[i] = true;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stop_children(children: &mut [(NodeId, Child, PathBuf)]) {
    println!("\nstopping the dev cluster ...");
    for (_, child, log) in children.iter() {
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).stderr(Stdio::null()).status();
        // A node restarted by someone else (a chaos drill) is not our child any more.
        if let Some(config) = log.parent().map(|dir| dir.join("node.toml"))
            && let Some(pid) = pid_of(&config)
            && pid != child.id()
        {
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).stderr(Stdio::null()).status();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (id, child, _) in children.iter_mut() {
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                eprintln!("node {id} did not stop in 10 s; killing it");
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drills and tests read node.toml through devkit's view: it must see what the
    /// daemon sees.
    #[test]
    fn devkit_reads_a_node_file_as_the_daemon_wrote_it() {
        let config = dev_config(2, 3, Path::new("/tmp/ums-dev-test"), "dev-test");
        let file: devkit::node_file::NodeFile = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
        assert_eq!(file.node_id, config.node_id);
        assert_eq!(file.cluster_id, config.cluster_id);
        assert_eq!(file.data_dir, config.data_dir);
        assert_eq!(file.peer_listen, config.peer_listen);
        assert_eq!(file.http_listen, config.http_listen);
        assert_eq!(file.smtp.listen, config.smtp.listen);
        let members: Vec<NodeId> = file.members.iter().map(|m| m.id).collect();
        assert_eq!(members, config.members.iter().map(|m| m.id).collect::<Vec<_>>());
    }
}
