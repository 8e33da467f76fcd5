//! The drill workload: appends uniquely tagged messages at a fixed rate through the
//! public endpoints of random nodes (the HTTP API, SMTP, or both in turn), recording
//! each operation's invocation and outcome. A refused connection (node down) moves on
//! to another node within the same operation, as a client behind a load balancer would;
//! once a node accepted the request, its answer is the outcome.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::Value;

use crate::history::{Operation, Outcome};
use crate::smtp_client::SmtpClient;

const WORKERS: u64 = 32;

/// Which public endpoint a workload writes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Smtp,
    /// Every other operation through each.
    Mixed,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Http => "HTTP",
            Self::Smtp => "SMTP",
            Self::Mixed => "HTTP and SMTP",
        })
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "http" => Ok(Self::Http),
            "smtp" => Ok(Self::Smtp),
            "mixed" => Ok(Self::Mixed),
            _ => Err(format!("unknown workload '{text}'; use http, smtp or mixed")),
        }
    }
}

/// A node's HTTP API, as the workload calls it.
#[derive(Clone)]
pub struct ApiNode {
    pub id: u64,
    /// `http://host:port`
    pub base: String,
    pub token: String,
}

/// Where and how fast to write.
#[derive(Clone)]
pub struct WorkloadSettings {
    /// Every node's API.
    pub nodes: Vec<ApiNode>,
    /// `(node id, SMTP MX host:port)` of every node that has one.
    pub smtp: Vec<(u64, String)>,
    pub protocol: Protocol,
    /// `(user, shard)` pairs to write to.
    pub users: Vec<(String, u64)>,
    /// Operations per second, in total.
    pub rate: u32,
    pub seed: u64,
    /// Prefix of every client reference, unique per drill run, so repeated drills on
    /// the same mailboxes never mistake an earlier run's message for this run's.
    pub run_tag: String,
    /// Where outbound webhook items go: every tenth operation queues one instead of
    /// appending a message (`None`: messages only).
    pub outbound_target: Option<String>,
}

/// What a workload did: message appends, and outbound items queued.
#[derive(Default)]
pub struct WorkloadHistory {
    pub messages: Vec<Operation>,
    pub outbound: Vec<Operation>,
}

/// A running workload; [`Workload::stop`] returns its history.
pub struct Workload {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<WorkloadHistory>>,
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

    pub fn stop(self) -> WorkloadHistory {
        self.stop.store(true, Ordering::Relaxed);
        let mut history = WorkloadHistory::default();
        for worker in self.workers {
            let done = worker.join().unwrap_or_default();
            history.messages.extend(done.messages);
            history.outbound.extend(done.outbound);
        }
        history.messages.sort_by_key(|o| (o.invoked_ms, o.id));
        history.outbound.sort_by_key(|o| (o.invoked_ms, o.id));
        history
    }
}

fn run_worker(worker: u64, settings: &WorkloadSettings, started: Instant, stop: &AtomicBool) -> WorkloadHistory {
    let mut rng = StdRng::seed_from_u64(settings.seed.wrapping_mul(1_000_003).wrapping_add(worker));
    let agent =
        ureq::AgentBuilder::new().timeout_connect(Duration::from_millis(500)).timeout(Duration::from_secs(5)).build();
    let interval = Duration::from_secs_f64(WORKERS as f64 / f64::from(settings.rate.max(1)));
    let mut next = started + interval.mul_f64(worker as f64 / WORKERS as f64);
    let mut history = WorkloadHistory::default();
    // An MTA keeps its connection: one per worker, to one node until it fails.
    let mut smtp: Option<SmtpClient> = None;
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
        let record = |node, outcome| Operation {
            id,
            user: user.clone(),
            shard,
            client_ref: client_ref.clone(),
            node,
            invoked_ms,
            completed_ms: started.elapsed().as_millis() as u64,
            outcome,
        };
        if let Some(target) = settings.outbound_target.as_deref().filter(|_| id % 10 == 9) {
            let (node, outcome) = enqueue(&agent, &nodes, &user, &client_ref, target);
            history.outbound.push(record(node, outcome));
            continue;
        }
        let by_smtp = match settings.protocol {
            Protocol::Http => false,
            Protocol::Smtp => true,
            Protocol::Mixed => id % 2 == 1,
        };
        let (node, outcome) = if by_smtp {
            let mut nodes = settings.smtp.clone();
            nodes.shuffle(&mut rng);
            send_mail(&mut smtp, &nodes, &user, &client_ref)
        } else {
            append(&agent, &nodes, &user, &client_ref)
        };
        history.messages.push(record(node, outcome));
    }
    history
}

/// One append: the first node that accepts the connection decides the outcome.
fn append(agent: &ureq::Agent, nodes: &[ApiNode], user: &str, client_ref: &str) -> (u64, Outcome) {
    let body =
        serde_json::json!({ "kind": "sms", "body": format!("drill message {client_ref}"), "client_ref": client_ref });
    post(agent, nodes, &format!("/api/v1/users/{user}/messages"), &body, None, "uid")
}

/// Queues an outbound webhook whose payload is the reference, keyed by it.
fn enqueue(agent: &ureq::Agent, nodes: &[ApiNode], user: &str, client_ref: &str, target: &str) -> (u64, Outcome) {
    let body =
        serde_json::json!({ "channel": "webhook", "target": target, "body": client_ref, "content_type": "text/plain" });
    post(agent, nodes, &format!("/api/v1/users/{user}/outbound"), &body, Some(client_ref), "seq")
}

/// A POST to the first node that accepts the connection; its answer is the outcome, with
/// the number in the `id_field` of a 2xx's body (201 for a message, 202 for an item queued).
fn post(
    agent: &ureq::Agent,
    nodes: &[ApiNode],
    path: &str,
    body: &Value,
    idempotency_key: Option<&str>,
    id_field: &str,
) -> (u64, Outcome) {
    for node in nodes {
        let mut request =
            agent.post(&format!("{}{path}", node.base)).set("Authorization", &devkit::tokens::bearer(&node.token));
        if let Some(key) = idempotency_key {
            request = request.set("Idempotency-Key", key);
        }
        let response = request.send_json(body.clone());
        let outcome = match response {
            Ok(r) if r.status() == 201 || r.status() == 202 => {
                match r.into_json::<Value>().ok().and_then(|v| v[id_field].as_u64()) {
                    Some(uid) => Outcome::Ok { uid },
                    None => Outcome::Unknown { reason: format!("201 without a {id_field}") },
                }
            }
            Ok(r) => Outcome::Unknown { reason: format!("HTTP {}", r.status()) },
            // 503 after internal retries: the proposal may still commit later.
            Err(ureq::Error::Status(code, _)) if code >= 500 => Outcome::Unknown { reason: format!("HTTP {code}") },
            Err(ureq::Error::Status(code, _)) => Outcome::Failed { reason: format!("HTTP {code}") },
            Err(ureq::Error::Transport(t)) if t.kind() == ureq::ErrorKind::ConnectionFailed => continue,
            Err(e) => Outcome::Unknown { reason: e.to_string() },
        };
        return (node.id, outcome);
    }
    (0, Outcome::Failed { reason: "no node accepted the connection".into() })
}

/// One message over SMTP, on the worker's open connection if it has one, else on a new
/// connection to the first node that accepts one. A connection that fails is dropped.
fn send_mail(
    connection: &mut Option<SmtpClient>,
    nodes: &[(u64, String)],
    user: &str,
    client_ref: &str,
) -> (u64, Outcome) {
    if connection.is_none() {
        *connection = nodes.iter().find_map(|(node, address)| SmtpClient::connect(*node, address).ok());
    }
    let Some(client) = connection.as_mut() else {
        return (0, Outcome::Failed { reason: "no node accepted an SMTP connection".into() });
    };
    let node = client.node();
    let message =
        format!("X-UMS-Drill-Ref: {client_ref}\r\nSubject: drill {client_ref}\r\n\r\ndrill message {client_ref}\r\n");
    let outcome = client.send("drill@chaos.example", user, &message);
    if !matches!(outcome, Outcome::Accepted) {
        *connection = None;
    }
    (node, outcome)
}
