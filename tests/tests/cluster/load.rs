//! A steady load of appends for the multi-process tests of placement and the backup
//! core: writers appending to a dozen users through chosen nodes until told to stop,
//! and the check that every acknowledged append is present exactly once, at its UID,
//! on every replica that should hold it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;
use tests::{TestCluster, append, get_json};

pub const USERS: usize = 12;
const WRITERS: usize = 8;

pub fn email(n: usize) -> String {
    format!("user{n}@scaling.go.ke")
}

/// The writers all come from one address, faster than the API lets one source go.
pub fn unthrottled(config: &mut node::config::NodeConfig) {
    config.http.requests_per_ip = 1_000_000;
    config.http.request_burst_per_ip = 1_000_000;
    config.http.connections.rate_per_ip = 1e6;
    config.http.connections.burst_per_ip = 1e6;
}

/// One append and its answer.
#[derive(Clone)]
pub struct Outcome {
    /// The user's number (see [`email`]).
    pub user: usize,
    pub client_ref: String,
    /// The UID, if acknowledged.
    pub uid: Option<u64>,
    /// When the answer came, by the wall clock (ms since the epoch; the nodes stamp
    /// entries with the same clock).
    pub answered_ms: u64,
}

/// Writers appending to every user through the given nodes until told to stop.
pub struct Load {
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    stop: Arc<AtomicBool>,
    writers: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(cluster: &TestCluster, nodes: &[u64]) -> Self {
        let urls: Vec<Vec<String>> = nodes
            .iter()
            .map(|&node| {
                (1..=USERS).map(|n| cluster.url(node, &format!("/api/v1/users/{}/messages", email(n)))).collect()
            })
            .collect();
        let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
        let (next, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let writers = (0..WRITERS)
            .map(|_| {
                let (urls, outcomes, next, stop) =
                    (urls.clone(), Arc::clone(&outcomes), Arc::clone(&next), Arc::clone(&stop));
                let token = cluster.token.clone();
                std::thread::spawn(move || {
                    let mut rng = rand::thread_rng();
                    while !stop.load(Ordering::SeqCst) {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let user = i % USERS + 1;
                        let client_ref = format!("m{i}");
                        let url = &urls[rng.gen_range(0..urls.len())][user - 1];
                        let uid = append(url, &token, &client_ref, &format!("message {i}"));
                        let answered_ms = node::clock::now_ms();
                        outcomes.lock().unwrap().push(Outcome { user, client_ref, uid, answered_ms });
                    }
                })
            })
            .collect();
        Self { outcomes, stop, writers }
    }

    pub fn wait_for(&self, appends: usize) {
        while self.outcomes.lock().unwrap().len() < appends {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        for writer in self.writers {
            writer.join().unwrap();
        }
        let outcomes = self.outcomes.lock().unwrap().clone();
        let acked = outcomes.iter().filter(|o| o.uid.is_some()).count();
        eprintln!("{acked} of {} appends acknowledged", outcomes.len());
        assert!(acked > 300, "too few acknowledged appends ({acked})");
        outcomes
    }
}

/// Every acknowledged append exactly once, at its UID, on every replica of its user's
/// shard (as the shard's leader names them); an unacknowledged one at most once.
pub fn check_exactly_once(cluster: &TestCluster, outcomes: &[Outcome]) {
    check_exactly_once_on(cluster, outcomes, |view| ids(&view["voters"]));
}

/// [`check_exactly_once`] on the replicas `holders` picks from each shard's view.
pub fn check_exactly_once_on(cluster: &TestCluster, outcomes: &[Outcome], holders: impl Fn(&Value) -> Vec<u64>) {
    for n in 1..=USERS {
        let user = get_json(&cluster.url(1, &format!("/api/v1/users/{}", email(n))), &cluster.token).expect("user");
        let user_shard = user["shard"].as_u64().unwrap();
        let view = get_json(&cluster.url(1, &format!("/api/v1/shards/{user_shard}")), &cluster.token).expect("view");
        let holders = holders(&view);
        let lists = converged(cluster, &holders, &email(n));
        let mut by_ref: HashMap<&str, Vec<u64>> = HashMap::new();
        for (uid, client_ref) in &lists {
            by_ref.entry(client_ref.as_str()).or_default().push(*uid);
        }
        for Outcome { client_ref, uid: acked_uid, .. } in outcomes.iter().filter(|o| o.user == n) {
            let present = by_ref.get(client_ref.as_str()).cloned().unwrap_or_default();
            match acked_uid {
                Some(uid) => assert_eq!(present, vec![*uid], "user {n}: acknowledged {client_ref} once, at UID {uid}"),
                None => {
                    assert!(present.len() <= 1, "user {n}: unacknowledged {client_ref} stored {} times", present.len())
                }
            }
        }
    }
}

/// The same messages on every holder's own replica (waits for the last applies).
pub fn converged(cluster: &TestCluster, holders: &[u64], email: &str) -> Vec<(u64, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lists: Vec<_> = holders.iter().map(|&n| cluster.local_messages(n, email)).collect();
        if lists.iter().all(Option::is_some) && lists.windows(2).all(|w| w[0] == w[1]) {
            return lists[0].clone().unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "replicas of {email} on {holders:?} did not converge");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ids(value: &Value) -> Vec<u64> {
    value.as_array().into_iter().flatten().filter_map(Value::as_u64).collect()
}
