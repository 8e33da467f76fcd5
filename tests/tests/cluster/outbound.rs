//! The outbound queue: items are delivered by the queue actor of the shard's leader,
//! resume on the new leader after a kill -9, are retried with backoff and finally
//! reported failed when the receiver never answers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use devkit::webhook_sink::WebhookSink;
use tests::{TestCluster, enqueue_webhook, get_json};

fn statuses(cluster: &TestCluster, node: u64, email: &str) -> Vec<String> {
    get_json(&cluster.url(node, &format!("/api/v1/users/{email}/outbound")), &cluster.token)
        .map(|v| v["outbound"].as_array().unwrap().iter().map(|i| i["status"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn webhooks_are_delivered_and_resume_after_the_leader_dies() {
    let mut cluster = TestCluster::start(3, |_| {});
    // A slow receiver, so items are still queued when the leader dies.
    let sink = WebhookSink::start(Duration::from_millis(30)).expect("webhook sink");
    let email = "sender@outbound.go.ke";
    cluster.create_user(email);
    let mut enqueued = Vec::new();
    for i in 0..20 {
        enqueued.push(enqueue_webhook(&cluster, i % 3 + 1, email, &sink.url, &format!("first {i}")).expect("enqueued"));
    }
    // Kill the leader of the sender's shard while its queue is working.
    let shard = enqueued[0].1;
    let status = cluster.cluster_status(1);
    let leader =
        status["shards"].as_array().unwrap().iter().find(|s| s["shard"].as_u64() == Some(shard)).unwrap()["leader"]
            .as_u64()
            .unwrap();
    let before_kill = sink.received().len();
    cluster.kill(leader);
    assert!(before_kill < 20, "the kill should hit a working queue ({before_kill} of 20 delivered)");
    let survivor = (1..=3).find(|&n| n != leader).unwrap();
    for i in 0..20 {
        enqueued.push(
            enqueue_webhook(&cluster, survivor, email, &sink.url, &format!("second {i}"))
                .expect("enqueued after the kill"),
        );
    }
    cluster.restart(leader);
    let deadline = Instant::now() + Duration::from_secs(30);
    while statuses(&cluster, survivor, email).iter().filter(|s| *s == "delivered").count() < enqueued.len() {
        assert!(Instant::now() < deadline, "not all delivered: {:?}", statuses(&cluster, survivor, email));
        std::thread::sleep(Duration::from_millis(100));
    }
    let received = sink.received();
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for call in &received {
        *per_key.entry(call.idempotency_key.clone()).or_default() += 1;
    }
    assert_eq!(per_key.len(), 40, "every item arrived, each with its own idempotency key");
    let repeats: usize = per_key.values().map(|c| c - 1).sum();
    // At-least-once: only an item in flight when its leader died may arrive twice.
    assert!(repeats <= 2, "{repeats} repeated deliveries: {per_key:?}");
    assert!(received.iter().any(|call| call.body == "first 0") && received.iter().any(|call| call.body == "second 19"));
}

#[test]
fn an_unreachable_receiver_is_retried_then_reported_failed() {
    let cluster = TestCluster::start(3, |config| {
        config.outbound.retry_base_ms = 50;
        config.outbound.max_attempts = 3;
    });
    let email = "unlucky@outbound.go.ke";
    cluster.create_user(email);
    // Port 9 (discard) on loopback: nothing listens, connections are refused.
    enqueue_webhook(&cluster, 1, email, "http://127.0.0.1:9/hook", "{}").expect("enqueued");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let item =
            get_json(&cluster.url(2, &format!("/api/v1/users/{email}/outbound")), &cluster.token).unwrap()["outbound"]
                [0]
            .clone();
        if item["status"] == "failed" {
            assert_eq!(item["attempts"], 3);
            assert!(!item["last_error"].as_str().unwrap().is_empty());
            break;
        }
        assert!(Instant::now() < deadline, "never reported failed: {item}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
