//! The drill workload: appends uniquely tagged messages at a fixed rate through the
//! HTTP API of random nodes, recording each operation's invocation and outcome.
//! A refused connection (node down) moves on to another node within the same
//! operation, as a client behind a load balancer would; once a node accepted the
//! request, its answer is the outcome.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::Value;

use crate::history::{Operation, Outcome};

const WORKERS: u64 = 32;

/// Where and how fast to write.
#[derive(Clone)]
pub struct WorkloadSettings {
    /// `(node id, base URL)` of every node.
    pub nodes: Vec<(u64, String)>,
    /// `(user, shard)` pairs to write to.
    pub users: Vec<(String, u64)>,
    /// Operations per second, in total.
    pub rate: u32,
    pub seed: u64,
    /// Prefix of every client reference, unique per drill run, so repeated drills on
    /// the same mailboxes never mistake an earlier run's message for this run's.
    pub run_tag: String,
}

/// A running workload; [`Workload::stop`] returns its history.
pub struct Workload {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Vec<Operation>>>,
}

impl Workload {
    pub fn start(settings: WorkloadSettings, started: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..WORKERS)
            .map(|worker| {
                let (settings, stop) = (settings.clone(), Arc::clone(&stop));
                std::thread::spawn(move || run_worker(worker, &settings, started, &stop))
            })
            .collect();
        Self { stop, workers }
    }

    pub fn stop(self) -> Vec<Operation> {
        self.stop.store(true, Ordering::Relaxed);
        let mut history: Vec<Operation> = self.workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect();
        history.sort_by_key(|o| (o.invoked_ms, o.id));
        history
    }
}

fn run_worker(worker: u64, settings: &WorkloadSettings, started: Instant, stop: &AtomicBool) -> Vec<Operation> {
    let mut rng = StdRng::seed_from_u64(settings.seed.wrapping_mul(1_000_003).wrapping_add(worker));
    let agent = ureq::AgentBuilder::new().timeout_connect(Duration::from_millis(500)).timeout(Duration::from_secs(5)).build();
    let interval = Duration::from_secs_f64(WORKERS as f64 / f64::from(settings.rate.max(1)));
    let mut next = started + interval.mul_f64(worker as f64 / WORKERS as f64);
    let mut history = Vec::new();
    for round in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        next += interval;
        let id = round * WORKERS + worker;
        let (user, shard) = settings.users.choose(&mut rng).expect("users").clone();
        let client_ref = format!("{}-{id}", settings.run_tag);
        let mut nodes = settings.nodes.clone();
        nodes.shuffle(&mut rng);
        let invoked_ms = started.elapsed().as_millis() as u64;
        let (node, outcome) = append(&agent, &nodes, &user, &client_ref);
        history.push(Operation { id, user, shard, client_ref, node, invoked_ms, completed_ms: started.elapsed().as_millis() as u64, outcome });
    }
    history
}

/// One append: the first node that accepts the connection decides the outcome.
fn append(agent: &ureq::Agent, nodes: &[(u64, String)], user: &str, client_ref: &str) -> (u64, Outcome) {
    let body = serde_json::json!({ "kind": "sms", "body": format!("drill message {client_ref}"), "client_ref": client_ref });
    for (node, base) in nodes {
        let response = agent.post(&format!("{base}/api/v1/users/{user}/messages")).send_json(body.clone());
        let outcome = match response {
            Ok(r) if r.status() == 201 => match r.into_json::<Value>().ok().and_then(|v| v["uid"].as_u64()) {
                Some(uid) => Outcome::Ok { uid },
                None => Outcome::Unknown { reason: "201 without a UID".into() },
            },
            Ok(r) => Outcome::Unknown { reason: format!("HTTP {}", r.status()) },
            // 503 after internal retries: the proposal may still commit later.
            Err(ureq::Error::Status(code, _)) if code >= 500 => Outcome::Unknown { reason: format!("HTTP {code}") },
            Err(ureq::Error::Status(code, _)) => Outcome::Failed { reason: format!("HTTP {code}") },
            Err(ureq::Error::Transport(t)) if t.kind() == ureq::ErrorKind::ConnectionFailed => continue,
            Err(e) => Outcome::Unknown { reason: e.to_string() },
        };
        return (*node, outcome);
    }
    (0, Outcome::Failed { reason: "no node accepted the connection".into() })
}
