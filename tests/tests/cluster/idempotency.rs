//! A client that retries with the same `Idempotency-Key` (to any node) gets the first
//! answer back and the message is stored once; different keys are different messages.

use serde_json::{Value, json};
use tests::TestCluster;

fn post(url: &str, token: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    let mut request = devkit::http::post(url, token);
    if let Some(key) = key {
        request = request.set("Idempotency-Key", key);
    }
    match request.send_json(json!({ "kind": "sms", "body": body })) {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn retries_with_the_same_key_are_applied_once() {
    let cluster = TestCluster::start(3, |_| {});
    let email = "retrier@idem.go.ke";
    cluster.create_user(email);
    let path = format!("/api/v1/users/{email}/messages");
    let (status, first) = post(&cluster.url(1, &path), &cluster.token, Some("sms-4711"), "hello");
    assert_eq!(status, 201);
    for node in [2, 3, 1] {
        let (status, again) = post(&cluster.url(node, &path), &cluster.token, Some("sms-4711"), "hello");
        assert_eq!((status, &again), (201, &first), "a retry answers with the first result");
    }
    let (_, other) = post(&cluster.url(2, &path), &cluster.token, Some("sms-4712"), "hello");
    assert_eq!(other["uid"].as_u64(), Some(first["uid"].as_u64().unwrap() + 1));
    let (_, unkeyed) = post(&cluster.url(3, &path), &cluster.token, None, "hello");
    assert_eq!(unkeyed["uid"].as_u64(), Some(first["uid"].as_u64().unwrap() + 2));
    assert_eq!(cluster.converged_messages(email, std::time::Duration::from_secs(10)).len(), 3);
    let (status, _) = post(&cluster.url(1, &path), &cluster.token, Some(&"k".repeat(300)), "hello");
    assert_eq!(status, 400, "over-long keys are refused");
}
