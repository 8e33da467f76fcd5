//! Real processes, real kill -9: concurrent HTTP appends while the node leading the most
//! target shards is killed and restarted. Every 2xx-acknowledged message must then be
//! present exactly once on every replica, with its acknowledged UID; a failed or
//! timed-out request's message may appear at most once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tests::{TestCluster, append};

const USERS: usize = 20;
const MESSAGES: usize = 1000;
const WRITERS: usize = 16;

fn email(n: usize) -> String {
    format!("user{n}@failover.go.ke")
}

#[test]
fn acknowledged_appends_survive_kill_9_of_the_leader() {
    let mut cluster = TestCluster::start(3, |_| {});
    for n in 1..=USERS {
        cluster.create_user(&email(n));
    }
    let urls: Vec<Vec<String>> = (1..=3)
        .map(|node| (1..=USERS).map(|n| cluster.url(node, &format!("/api/v1/users/{}/messages", email(n)))).collect())
        .collect();
    // (user, client reference, UID if acknowledged) of every append.
    type Outcome = (usize, String, Option<u64>);
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (urls, outcomes, next) = (urls.clone(), Arc::clone(&outcomes), Arc::clone(&next));
            let token = cluster.token.clone();
            std::thread::spawn(move || {
                let mut rng = rand::thread_rng();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= MESSAGES {
                        return;
                    }
                    let user = i % USERS + 1;
                    let client_ref = format!("m{i}");
                    let node = rng.gen_range(0..3);
                    let acked = append(&urls[node][user - 1], &token, &client_ref, &format!("message {i}"));
                    outcomes.lock().unwrap().push((user, client_ref, acked));
                }
            })
        })
        .collect();

    while outcomes.lock().unwrap().len() < MESSAGES / 3 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let victim = cluster.busiest_leader(1);
    cluster.kill(victim);
    eprintln!("killed node {victim} after {} appends", outcomes.lock().unwrap().len());
    std::thread::sleep(Duration::from_millis(1500));
    cluster.restart(victim);
    for writer in writers {
        writer.join().unwrap();
    }

    let outcomes = outcomes.lock().unwrap().clone();
    let acked = outcomes.iter().filter(|o| o.2.is_some()).count();
    eprintln!("{acked} of {MESSAGES} appends acknowledged");
    assert!(acked >= MESSAGES / 2, "too few acknowledged appends ({acked}) for a meaningful check");
    for n in 1..=USERS {
        let messages = cluster.converged_messages(&email(n), Duration::from_secs(30));
        let uids: Vec<u64> = messages.iter().map(|m| m.0).collect();
        assert!(uids.windows(2).all(|w| w[0] < w[1]), "user {n}: UIDs not strictly increasing: {uids:?}");
        let mut by_ref: HashMap<&str, Vec<u64>> = HashMap::new();
        for (uid, client_ref) in &messages {
            by_ref.entry(client_ref.as_str()).or_default().push(*uid);
        }
        for (user, client_ref, acked_uid) in outcomes.iter().filter(|o| o.0 == n) {
            let present = by_ref.get(client_ref.as_str()).cloned().unwrap_or_default();
            match acked_uid {
                Some(uid) => assert_eq!(
                    present,
                    vec![*uid],
                    "user {user}: acknowledged {client_ref} must be there once, at UID {uid}"
                ),
                None => assert!(
                    present.len() <= 1,
                    "user {user}: unacknowledged {client_ref} applied {} times",
                    present.len()
                ),
            }
        }
    }
}
