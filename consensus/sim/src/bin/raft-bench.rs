//! Throughput and latency of the replicated core: N in-process nodes, each with its own
//! RocksDB (fsync on) and ready loop thread, connected by an in-memory transport, host
//! G groups; a client keeps K proposals of S bytes in flight and measures
//! committed-and-applied proposals per second, latency percentiles, and fsyncs per
//! second (the figure that shows cross-group batching at work).
//!
//! Afterwards the cluster idles for `--idle` seconds and the CPU it used is printed:
//! what 3 × G group replicas cost with nothing to do (ticks and heartbeats only).
//!
//! Usage: raft-bench [--nodes 3] [--groups 64] [--size 1024] [--in-flight 256]
//!                   [--seconds 10] [--warmup 3] [--idle 5] [--dir PATH]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, Instant};

use consensus::{
    Command, GroupId, GroupMessage, MultiRaft, NodeId, ProposalCallback, ProposeError, RaftConfig, Transport,
};
use consensus_sim::sequence::SequenceMachine;
use storage::{Engine, RocksEngine, RocksOptions};

const TICK: Duration = Duration::from_millis(100);
const INBOX_CAPACITY: usize = 1 << 16;

struct Options {
    nodes: usize,
    groups: u64,
    size: usize,
    in_flight: usize,
    seconds: u64,
    warmup: u64,
    idle: u64,
    dir: Option<PathBuf>,
}

fn parse_args() -> Options {
    let mut options =
        Options { nodes: 3, groups: 64, size: 1024, in_flight: 256, seconds: 10, warmup: 3, idle: 5, dir: None };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!(
                "{}",
                include_str!("raft-bench.rs")
                    .lines()
                    .take_while(|l| l.starts_with("//!"))
                    .map(|l| l.trim_start_matches("//!").trim_start())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::process::exit(0);
        }
        let value = args.next().unwrap_or_else(|| die(&format!("{flag} needs a value")));
        let number = || value.parse::<u64>().unwrap_or_else(|_| die(&format!("{flag}: '{value}' is not a number")));
        match flag.as_str() {
            "--nodes" => options.nodes = number() as usize,
            "--groups" => options.groups = number(),
            "--size" => options.size = number() as usize,
            "--in-flight" => options.in_flight = number() as usize,
            "--seconds" => options.seconds = number(),
            "--warmup" => options.warmup = number(),
            "--idle" => options.idle = number(),
            "--dir" => options.dir = Some(PathBuf::from(&value)),
            _ => die(&format!("unknown flag {flag}; see --help")),
        }
    }
    if options.nodes == 0 || options.groups == 0 || options.in_flight == 0 {
        die("--nodes, --groups and --in-flight must be at least 1");
    }
    options
}

fn die(message: &str) -> ! {
    eprintln!("raft-bench: {message}");
    std::process::exit(2);
}

enum Input {
    Raft(Vec<GroupMessage>),
    Propose(GroupId, Command, ProposalCallback),
}

/// In-memory transport: one bounded inbox per node; a full inbox drops (Raft resends).
struct ChannelTransport {
    peers: Vec<SyncSender<Input>>,
}

impl Transport for ChannelTransport {
    fn send(&mut self, to: NodeId, batch: Vec<GroupMessage>) {
        if let Err(TrySendError::Full(_)) = self.peers[to as usize - 1].try_send(Input::Raft(batch)) {
            eprintln!("inbox of node {to} full; batch dropped");
        }
    }
}

fn run_node(
    id: NodeId,
    engine: Engine,
    groups: u64,
    voters: Vec<NodeId>,
    inbox: Receiver<Input>,
    peers: Vec<SyncSender<Input>>,
    stop: Arc<AtomicBool>,
) {
    let mut raft = MultiRaft::open(id, RaftConfig::default(), engine, SequenceMachine::default()).expect("open node");
    for group in 1..=groups {
        if !raft.has_group(group) {
            raft.bootstrap_group(group, &voters).expect("bootstrap");
        }
    }
    let mut transport = ChannelTransport { peers };
    let mut next_tick = Instant::now() + TICK;
    while !stop.load(Ordering::Relaxed) {
        let wait = next_tick.saturating_duration_since(Instant::now());
        let handle = |input: Input, raft: &mut MultiRaft<SequenceMachine>| match input {
            Input::Raft(batch) => {
                for message in batch {
                    raft.step(message.group, message.message).expect("step");
                }
            }
            Input::Propose(group, command, callback) => raft.propose(group, &command, callback),
        };
        match inbox.recv_timeout(wait) {
            Ok(input) => {
                handle(input, &mut raft);
                // Drain what else arrived, bounded so ticks and rounds are not starved.
                for input in inbox.try_iter().take(4096) {
                    handle(input, &mut raft);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next_tick {
            raft.tick();
            next_tick += TICK;
        }
        raft.handle_ready(&mut transport).expect("ready round");
    }
}

struct Completion {
    request: u64,
    group: GroupId,
    started: Instant,
    result: Result<Vec<u8>, ProposeError>,
}

fn main() {
    let options = parse_args();
    let base =
        options.dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("raft-bench-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&base);
    let voters: Vec<NodeId> = (1..=options.nodes as NodeId).collect();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..options.nodes).map(|_| mpsc::sync_channel(INBOX_CAPACITY)).unzip();
    let stop = Arc::new(AtomicBool::new(false));
    let mut engines = Vec::new();
    let mut threads = Vec::new();
    for (i, inbox) in receivers.into_iter().enumerate() {
        let id = i as NodeId + 1;
        let engine: Engine = Arc::new(
            RocksEngine::open(&base.join(format!("node-{id}")), &RocksOptions::default()).expect("open RocksDB"),
        );
        engines.push(engine.clone());
        let (peers, voters, stop, groups) = (senders.clone(), voters.clone(), stop.clone(), options.groups);
        threads.push(thread::spawn(move || run_node(id, engine, groups, voters, inbox, peers, stop)));
    }

    let (done_tx, done_rx) = mpsc::channel::<Completion>();
    let payload = vec![0x5au8; options.size];
    let mut leader_guess: Vec<NodeId> = (0..=options.groups).map(|g| (g % options.nodes as u64) + 1).collect();
    let submit = |request: u64, group: GroupId, to: NodeId, started: Instant| {
        let done = done_tx.clone();
        let command = Command::new(1, request, payload.clone());
        let callback: ProposalCallback = Box::new(move |result| {
            let _ = done.send(Completion { request, group, started, result });
        });
        senders[to as usize - 1].send(Input::Propose(group, command, callback)).expect("node alive");
    };

    println!(
        "raft-bench: {} nodes, {} groups, {} B proposals, {} in flight, RocksDB with fsync under {}",
        options.nodes,
        options.groups,
        options.size,
        options.in_flight,
        base.display()
    );
    let mut next_request = 0u64;
    for _ in 0..options.in_flight {
        next_request += 1;
        let group = next_request % options.groups + 1;
        submit(next_request, group, leader_guess[group as usize], Instant::now());
    }
    let begin = Instant::now();
    let warmup_end = begin + Duration::from_secs(options.warmup);
    let end = warmup_end + Duration::from_secs(options.seconds);
    let mut latencies = Vec::new();
    let mut retries = 0u64;
    let mut syncs_at_start = 0;
    let mut measuring = false;
    while Instant::now() < end {
        let Ok(done) = done_rx.recv_timeout(Duration::from_millis(100)) else { continue };
        if !measuring && Instant::now() >= warmup_end {
            measuring = true;
            syncs_at_start = engines.iter().map(|e| e.stats().syncs).sum::<u64>();
        }
        match done.result {
            Ok(_) => {
                if measuring {
                    latencies.push(done.started.elapsed());
                }
                next_request += 1;
                let group = next_request % options.groups + 1;
                submit(next_request, group, leader_guess[group as usize], Instant::now());
            }
            Err(error) => {
                // Not yet elected or moved: retry the same request where the hint says.
                retries += 1;
                if let ProposeError::NotLeader { leader: Some(leader), .. } = error {
                    leader_guess[done.group as usize] = leader;
                } else {
                    let guess = &mut leader_guess[done.group as usize];
                    *guess = *guess % options.nodes as u64 + 1;
                    thread::sleep(Duration::from_millis(1));
                }
                submit(done.request, done.group, leader_guess[done.group as usize], done.started);
            }
        }
    }
    let syncs = engines.iter().map(|e| e.stats().syncs).sum::<u64>() - syncs_at_start;
    // Let in-flight work finish, then measure what idling costs.
    thread::sleep(Duration::from_secs(1));
    let cpu_before = process_cpu_seconds();
    thread::sleep(Duration::from_secs(options.idle));
    let idle_cpu = (process_cpu_seconds() - cpu_before) / options.idle.max(1) as f64;
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    latencies.sort();
    let seconds = options.seconds as f64;
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!("committed+applied proposals: {}", latencies.len());
    println!("throughput:      {:>10.0} proposals/s", latencies.len() as f64 / seconds);
    println!("latency p50:     {:>10.2} ms", percentile(0.50).as_secs_f64() * 1e3);
    println!("latency p99:     {:>10.2} ms", percentile(0.99).as_secs_f64() * 1e3);
    println!(
        "fsyncs:          {:>10.0} /s across {} nodes ({:.1} proposals per fsync per node)",
        syncs as f64 / seconds,
        options.nodes,
        latencies.len() as f64 * options.nodes as f64 / syncs.max(1) as f64
    );
    println!("retries (not leader yet / moved): {retries}");
    println!(
        "idle CPU:        {:>10.1} % of one core for {} group replicas",
        idle_cpu * 100.0,
        options.groups * options.nodes as u64
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// User + system CPU time of this process so far, from /proc (clock ticks of 1/100 s).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
