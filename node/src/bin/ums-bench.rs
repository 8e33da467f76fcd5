//! `ums-bench`: end-to-end figures for a 3-node cluster of real `umsd` processes that it
//! starts itself (ports 8100.., data under /var/tmp): 1 KB message appends over HTTP
//! (keep-alive connections, random nodes; the clients are tasks on one thread so they
//! leave the cores to the cluster) across many users with a fixed number in flight
//! (acked/s, p50/p99 ack latency), each request with an `application` token scoped to
//! the bench users' domain, as an application sending for a ministry would;
//! then, still under load, kill -9 of the node leading the most shards and each
//! affected shard's write unavailability (p50/p99/max); finally idle CPU (once the
//! groups have quiesced) and RSS per node. With `--backup-site N`, N more nodes labelled
//! `site = backup` join first and are seeded (a learner of every group each), so the
//! figures include feeding a backup site; the load still goes to the 3 primary nodes,
//! and the steady state adds the CPU per append of each site and the backup lag's p50 and
//! p99 (the worst shard's, sampled from the primary nodes' gauges).
//!
//! Usage: ums-bench [--users 1000] [--in-flight 128] [--seconds 20] [--size 1024]
//!                  [--failover-seconds 10] [--base-port 8000] [--shards 64] [--idle-seconds 10]
//!                  [--backup-site 0]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use consensus::NodeId;
use devkit::http::post_with_retry;
use node::config::ports_in_block;
use node::dev::{local_config, spawn_node};
use node::placement::shard_for_user;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(name = "ums-bench", about = "Throughput, failover and memory figures of a local 3-node UMS cluster")]
struct Options {
    #[arg(long, default_value_t = 1000)]
    users: usize,
    #[arg(long, default_value_t = 128)]
    in_flight: usize,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Seconds of load after the kill -9, to measure recovery.
    #[arg(long, default_value_t = 10)]
    failover_seconds: u64,
    /// Send each user's writes to the node named by the last X-UMS-Shard-Leader answer
    /// (a leader-aware client) instead of a random node.
    #[arg(long)]
    leader_aware: bool,
    /// Peer traffic as plain TCP instead of mutual TLS (to measure what TLS costs).
    #[arg(long)]
    plain_peers: bool,
    /// Node N uses ports BASE+100N.. (8000 keeps clear of a running `umsd dev`).
    #[arg(long, default_value_t = 8000)]
    base_port: u16,
    /// Shards of the cluster (each node holds a replica of every one): 64 is the
    /// default, 1024 shows what many idle groups cost.
    #[arg(long, default_value_t = 64)]
    shards: u64,
    /// Seconds to measure the idle nodes' CPU at the end (groups quiesce when idle).
    #[arg(long, default_value_t = 10)]
    idle_seconds: u64,
    /// Backup-site nodes to attach before the load (learners of every group).
    #[arg(long, default_value_t = 0)]
    backup_site: usize,
}

const NODES: usize = 3;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// CPU time (user + system) a process has used so far, from /proc/PID/stat.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Shared {
    stop: AtomicBool,
    /// Node index (0-based) that clients must avoid (killed), or usize::MAX.
    dead: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
    acked: AtomicU64,
    failed: AtomicU64,
    /// Per shard: instants of successful writes (for the failover phase).
    successes: Mutex<HashMap<u64, Vec<Instant>>>,
    recording: AtomicBool,
    /// Shards of the cluster (where each user's mailbox lives).
    shards: u64,
}

/// One client: appends to random users through random live nodes until told to stop.
async fn client_task(
    seed: u64,
    shared: Arc<Shared>,
    users: Vec<String>,
    nodes: Vec<SocketAddr>,
    body: String,
    leader_aware: bool,
    authorization: String,
) {
    let mut connections: Vec<Option<BufStream<TcpStream>>> = nodes.iter().map(|_| None).collect();
    let mut leader_of_shard: HashMap<u64, usize> = HashMap::new();
    let mut n = seed;
    while !shared.stop.load(Ordering::Relaxed) {
        n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let user = &users[(n >> 33) as usize % users.len()];
        let shard = shard_for_user(user, shared.shards);
        let mut node = (n >> 20) as usize % nodes.len();
        if leader_aware && let Some(&leader) = leader_of_shard.get(&shard) {
            node = leader;
        }
        if node as u64 == shared.dead.load(Ordering::Relaxed) {
            node = (node + 1) % nodes.len();
        }
        let path = format!("/api/v1/users/{user}/messages?kind=email");
        let begin = Instant::now();
        let status = tokio::time::timeout(
            Duration::from_secs(10),
            post(&mut connections[node], nodes[node], &path, &authorization, body.as_bytes()),
        )
        .await;
        match status {
            Ok(Ok((201, hint))) => {
                if let Some(leader) = hint.and_then(|h| nodes.iter().position(|a| *a == h)) {
                    leader_of_shard.insert(shard, leader);
                }
                let now = Instant::now();
                if shared.recording.load(Ordering::Relaxed) {
                    shared.latencies.lock().unwrap().push(now - begin);
                }
                shared.acked.fetch_add(1, Ordering::Relaxed);
                shared.successes.lock().unwrap().entry(shard).or_default().push(now);
            }
            other => {
                leader_of_shard.remove(&shard);
                // A non-201 answer keeps the connection; a broken or timed-out one is
                // dropped and reopened next time.
                if !matches!(other, Ok(Ok(_))) {
                    connections[node] = None;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A minimal HTTP/1.1 keep-alive POST; returns the status code and the leader hint.
async fn post(
    connection: &mut Option<BufStream<TcpStream>>,
    address: SocketAddr,
    path: &str,
    authorization: &str,
    body: &[u8],
) -> std::io::Result<(u16, Option<SocketAddr>)> {
    if connection.is_none() {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        *connection = Some(BufStream::new(stream));
    }
    let stream = connection.as_mut().expect("connected above");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: {authorization}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = 0usize;
    let mut close = false;
    let mut leader = None;
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::other("connection closed in headers"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        close |= lower.starts_with("connection:") && lower.contains("close");
        if let Some(value) = lower.strip_prefix("x-ums-shard-leader:") {
            leader = value.trim().parse().ok();
        }
    }
    let mut response_body = vec![0; length];
    stream.read_exact(&mut response_body).await?;
    if close {
        *connection = None;
    }
    Ok((status, leader))
}

/// Each shard's term as the cluster status reports it.
fn shard_terms(status: &serde_json::Value) -> BTreeMap<u64, u64> {
    status["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|shard| Some((shard["shard"].as_u64()?, shard["term"].as_u64()?)))
        .collect()
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let exe = std::env::current_exe()?.with_file_name("umsd");
    if !exe.exists() {
        bail!("{} not found; build it with `cargo build -p node --bins`", exe.display());
    }
    let data = std::path::Path::new("/var/tmp").join(format!("ums-bench-{}", std::process::id()));
    let cluster_id = format!("bench-{}", std::process::id());
    node::dev::ensure_dev_certificate(&data)?;
    node::dev::ensure_peer_certificates(&data, &cluster_id, NODES + options.backup_site)?;
    let mut children = Vec::new();
    let mut configs = Vec::new();
    for id in 1..=(NODES + options.backup_site) as NodeId {
        if id == NODES as NodeId + 1 {
            // The backup site joins once the primary is up, recorded with its label.
            let primary = http_addresses(options.base_port);
            let token = operator_token(&primary, &data)?;
            for backup in id..=(NODES + options.backup_site) as NodeId {
                let config = local_config(options.base_port, backup, NODES, &data, &cluster_id);
                let body = serde_json::json!({
                    "peer": config.peer_listen.to_string(), "http": config.http_listen.to_string(),
                    "labels": { "site": "backup" },
                });
                post_with_retry(&format!("{}/api/v1/nodes", primary[0]), &token, &body)
                    .with_context(|| format!("recording backup node {backup}"))?;
            }
        }
        let mut config = local_config(options.base_port, id, NODES, &data, &cluster_id);
        if options.plain_peers {
            config.peer_tls = None;
        }
        // The load comes from one address, thousands of requests a second: far past the
        // rate one source is allowed in production.
        config.http.requests_per_ip = 1_000_000;
        config.http.request_burst_per_ip = 1_000_000;
        config.shards = options.shards;
        children.push(spawn_node(&exe, &config).with_context(|| format!("starting node {id}"))?.0);
        configs.push(config);
    }
    let http = http_addresses(options.base_port);
    if options.backup_site > 0 {
        let seeded = wait_for_backup_seeding(&http[0], &operator_token(&http, &data)?)?;
        println!("backup site: {} nodes, a learner of every group each, seeded in {seeded:.1} s", options.backup_site);
    }
    let restart = |id: NodeId| spawn_node(&exe, &configs[id as usize - 1]).map(|(child, _)| child);
    let result = run(&options, &http, &data, &mut children, &restart);
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&data);
    result
}

/// The primary nodes' HTTP API addresses.
fn http_addresses(base_port: u16) -> Vec<String> {
    (1..=NODES as NodeId).map(|id| format!("http://127.0.0.1:{}", ports_in_block(base_port, id).http)).collect()
}

/// How often the backup lag is sampled during the steady state.
const LAG_SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// Samples the backup site's recovery point (the worst shard's age, in seconds) from the
/// primary nodes' `ums_backup_lag_seconds` gauges (each node's led shards; the leaders
/// refresh it every second) until finished.
struct BackupLagSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<f64>>,
}

impl BackupLagSampler {
    fn start(http: &[String], token: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (urls, token, halt) =
            (http.iter().map(|h| format!("{h}/metrics")).collect::<Vec<_>>(), token.to_string(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !halt.load(Ordering::Relaxed) {
                let worst = urls
                    .iter()
                    .filter_map(|url| devkit::http::get(url, &token).call().ok()?.into_string().ok())
                    .filter_map(|text| {
                        text.lines().find_map(|l| l.strip_prefix("ums_backup_lag_seconds ")?.trim().parse::<f64>().ok())
                    })
                    .fold(None, |worst: Option<f64>, lag| Some(worst.map_or(lag, |w| w.max(lag))));
                samples.extend(worst);
                std::thread::sleep(LAG_SAMPLE_EVERY);
            }
            samples
        });
        Self { stop, thread }
    }

    fn finish(self) -> Vec<f64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Waits until every group has a replica on every backup node; the seconds it took.
fn wait_for_backup_seeding(http: &str, token: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(600) {
        if let Some((0, shards, _)) = node::dev::backup_seeding(http, token)
            && shards > 0
        {
            return Ok(started.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("the backup site was not seeded within 10 minutes")
}

/// An operator token made through node 1 with that node's own admin token, once it is up.
fn operator_token(http: &[String], data: &std::path::Path) -> anyhow::Result<String> {
    let admin_file = data.join("node-1").join(devkit::tokens::NODE_TOKEN_FILE);
    let deadline = Instant::now() + Duration::from_secs(30);
    let admin = loop {
        match devkit::tokens::read_token(&admin_file) {
            Some(token) => break token,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            None => bail!("node 1 wrote no admin token at {}", admin_file.display()),
        }
    };
    devkit::tokens::create_token(&http[0], &admin, "ums-bench operator", "operator", Some(Duration::from_secs(3600)))
}

fn run(
    options: &Options,
    http: &[String],
    data: &std::path::Path,
    children: &mut [std::process::Child],
    restart: &dyn Fn(NodeId) -> anyhow::Result<std::process::Child>,
) -> anyhow::Result<()> {
    let users: Vec<String> = (1..=options.users).map(|n| format!("bench{n}@bench.go.ke")).collect();
    let token = operator_token(http, data)?;
    println!(
        "ums-bench: {NODES} umsd processes, {} shards, {} users, {} B messages, {} in flight, peers over {}",
        options.shards,
        options.users,
        options.size,
        options.in_flight,
        if options.plain_peers { "plain TCP" } else { "mutual TLS" }
    );
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let password_hash = node::passwords::hash_password("bench-password").map_err(|e| anyhow::anyhow!("{e}"))?;
    std::thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(user) = users.get(i) else { return };
                    // One precomputed hash for all: provisioning measures the cluster, not argon2.
                    let body = serde_json::json!({ "email": user, "name": "bench", "password_hash": password_hash });
                    post_with_retry(&format!("{}/api/v1/users", http[i % NODES]), &token, &body)
                        .expect("create bench user");
                }
            });
        }
    });
    println!("provisioned {} users in {:.1} s", users.len(), started.elapsed().as_secs_f64());
    let application = serde_json::json!({
        "name": "ums-bench sender", "role": "application", "scope": ["bench.go.ke"], "expires_in_s": 3600,
    });
    let created = post_with_retry(&format!("{}/api/v1/tokens", http[0]), &token, &application)?;
    let authorization = devkit::tokens::bearer(created["token"].as_str().context("no token created")?);

    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        dead: AtomicU64::new(u64::MAX),
        latencies: Mutex::new(Vec::new()),
        acked: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        successes: Mutex::new(HashMap::new()),
        shards: options.shards,
        recording: AtomicBool::new(true),
    });
    let body = "x".repeat(options.size);
    // The load generator must leave the cores to the cluster: all clients are tasks on
    // one thread, each with its own keep-alive connection per node.
    let addresses: Vec<SocketAddr> = (1..=NODES as NodeId)
        .map(|id| SocketAddr::from(([127, 0, 0, 1], ports_in_block(options.base_port, id).http)))
        .collect();
    let load = {
        let (shared, users, body, in_flight, leader_aware) =
            (Arc::clone(&shared), users.clone(), body.clone(), options.in_flight, options.leader_aware);
        let authorization = authorization.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("client runtime");
            runtime.block_on(async move {
                let tasks: Vec<_> = (0..in_flight)
                    .map(|w| {
                        tokio::spawn(client_task(
                            w as u64,
                            Arc::clone(&shared),
                            users.clone(),
                            addresses.clone(),
                            body.clone(),
                            leader_aware,
                            authorization.clone(),
                        ))
                    })
                    .collect();
                for task in tasks {
                    let _ = task.await;
                }
            });
        })
    };

    // Phase 1: steady state.
    std::thread::sleep(Duration::from_secs(2));
    shared.latencies.lock().unwrap().clear();
    let acked_before = shared.acked.load(Ordering::Relaxed);
    let cpu_of = |nodes: &[std::process::Child]| nodes.iter().map(|child| cpu_time(child.id())).sum::<Duration>();
    let (primary, backup) = children.split_at(NODES);
    let (primary_before, backup_before) = (cpu_of(primary), cpu_of(backup));
    let lags = (options.backup_site > 0).then(|| BackupLagSampler::start(http, &token));
    std::thread::sleep(Duration::from_secs(options.seconds));
    let acked = shared.acked.load(Ordering::Relaxed) - acked_before;
    let (primary_cpu, backup_cpu) = (cpu_of(primary) - primary_before, cpu_of(backup) - backup_before);
    let cpu_used = primary_cpu + backup_cpu;
    let lags = lags.map(BackupLagSampler::finish);
    shared.recording.store(false, Ordering::Relaxed);
    let mut latencies = std::mem::take(&mut *shared.latencies.lock().unwrap());
    latencies.sort();
    println!("\nsteady state ({} s):", options.seconds);
    println!("  acked appends:   {:>8.0} /s", acked as f64 / options.seconds as f64);
    println!("  ack latency p50: {:>8.2} ms", percentile(&latencies, 0.5).as_secs_f64() * 1e3);
    println!("  ack latency p99: {:>8.2} ms", percentile(&latencies, 0.99).as_secs_f64() * 1e3);
    // Steadier than the rate on a shared 2-core machine: what each append costs the cluster.
    let per_append = |cpu: Duration| cpu.as_secs_f64() * 1e6 / acked.max(1) as f64;
    println!("  cluster CPU per acked append: {:>5.0} µs", per_append(cpu_used));
    if let Some(mut lags) = lags {
        println!(
            "  of which the primary site's nodes: {:>5.0} µs, the backup site's: {:.0} µs",
            per_append(primary_cpu),
            per_append(backup_cpu)
        );
        lags.sort_by(f64::total_cmp);
        let at = |q: f64| lags.get(((lags.len() as f64 * q) as usize).min(lags.len().saturating_sub(1))).copied();
        println!(
            "  backup lag (worst shard, {} samples every {} ms): p50 {:.3} s, p99 {:.3} s, max {:.3} s",
            lags.len(),
            LAG_SAMPLE_EVERY.as_millis(),
            at(0.5).unwrap_or(0.0),
            at(0.99).unwrap_or(0.0),
            lags.last().copied().unwrap_or(0.0)
        );
    }

    // Phase 2: kill -9 the node leading the most shards, under load.
    let status: serde_json::Value =
        devkit::http::get(&format!("{}/api/v1/cluster", http[0]), &token).call()?.into_json()?;
    let mut led: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let terms_before = shard_terms(&status);
    for shard in status["shards"].as_array().into_iter().flatten() {
        if let (Some(leader), Some(id)) = (shard["leader"].as_u64(), shard["shard"].as_u64()) {
            led.entry(leader).or_default().push(id);
        }
    }
    let (victim, victim_shards) = led.into_iter().max_by_key(|(_, s)| s.len()).context("no leaders")?;
    let victim_shards: Vec<u64> = victim_shards.into_iter().filter(|&s| s != 0).collect();
    shared.dead.store(victim - 1, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(200)); // clients steer away from the victim first
    let killed_at = Instant::now();
    children[victim as usize - 1].kill()?;
    std::thread::sleep(Duration::from_secs(options.failover_seconds));
    shared.stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    let successes = shared.successes.lock().unwrap();
    // Only shards the load writes to: with more shards than users, some have no mailbox
    // of the load, and no write would ever show them available again.
    let written: Vec<u64> = victim_shards
        .iter()
        .copied()
        .filter(|shard| successes.get(shard).is_some_and(|times| times.iter().any(|&t| t < killed_at)))
        .collect();
    let mut gaps: Vec<Duration> = written
        .iter()
        .map(|shard| {
            successes
                .get(shard)
                .and_then(|times| times.iter().find(|&&t| t > killed_at))
                .map_or(Duration::from_secs(options.failover_seconds), |&t| t - killed_at)
        })
        .collect();
    gaps.sort();
    println!(
        "\nkill -9 of node {victim}, which led {} shards ({} of them written to by the load):",
        victim_shards.len(),
        written.len()
    );
    println!("  write unavailability per shard p50: {:>6.0} ms", percentile(&gaps, 0.5).as_secs_f64() * 1e3);
    println!("  write unavailability per shard p99: {:>6.0} ms", percentile(&gaps, 0.99).as_secs_f64() * 1e3);
    println!(
        "  write unavailability per shard max: {:>6.0} ms",
        gaps.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!("  (anchor on this machine: etcd 3.4 kill -9 of the leader, 0.95-1.65 s, median 1.19 s)");
    println!("  failed requests during the whole run: {}", shared.failed.load(Ordering::Relaxed));
    // More than one new term means a shard went through more than one election.
    let survivor = (0..NODES).find(|&i| i as u64 + 1 != victim).expect("a survivor");
    let after: serde_json::Value =
        devkit::http::get(&format!("{}/api/v1/cluster", http[survivor]), &token).call()?.into_json()?;
    let terms_after = shard_terms(&after);
    let mut elections: BTreeMap<u64, usize> = BTreeMap::new();
    for shard in &victim_shards {
        let new_terms = terms_after.get(shard).zip(terms_before.get(shard)).map_or(0, |(a, b)| a.saturating_sub(*b));
        *elections.entry(new_terms).or_default() += 1;
    }
    let summary: Vec<String> = elections.iter().map(|(terms, shards)| format!("{shards} shards +{terms}")).collect();
    println!("  new terms per shard: {}", summary.join(", "));

    // Idle, the victim back: long enough for it to catch up and every group to quiesce.
    let _ = children[victim as usize - 1].wait();
    children[victim as usize - 1] = restart(victim)?;
    std::thread::sleep(Duration::from_secs(10));
    let idle = Duration::from_secs(options.idle_seconds.max(1));
    let before: Vec<Duration> = children.iter().map(|child| cpu_time(child.id())).collect();
    std::thread::sleep(idle);
    println!("\nidle, {} shards and {} users:", options.shards, options.users);
    for (i, child) in children.iter().enumerate() {
        let used = cpu_time(child.id()).saturating_sub(before[i]);
        println!(
            "  node {}: CPU {:.2} % of one core, RSS {:.0} MiB{}",
            i + 1,
            100.0 * used.as_secs_f64() / idle.as_secs_f64(),
            rss_kib(child.id()) as f64 / 1024.0,
            if i as u64 + 1 == victim { " (restarted after the kill)" } else { "" }
        );
    }
    Ok(())
}
