//! Mailbox actors are virtual: activated on the shard leader by the first request for a
//! mailbox, passivated when idle, and activated again on the next request.

use std::time::{Duration, Instant};

use tests::{TestCluster, append};

fn active_mailboxes(cluster: &TestCluster) -> u64 {
    (1..=3).map(|id| cluster.cluster_status(id)["active_mailboxes"].as_u64().unwrap()).sum()
}

#[test]
fn mailbox_actors_activate_on_demand_and_passivate_when_idle() {
    let cluster = TestCluster::start(3, |config| config.mailbox_idle_ms = 1_000);
    let users: Vec<String> = (1..=5).map(|n| format!("actor{n}@actors.go.ke")).collect();
    for user in &users {
        cluster.create_user(user);
    }
    assert_eq!(active_mailboxes(&cluster), 0, "creating users activates no mailbox");
    for (i, user) in users.iter().enumerate() {
        // Through a node that may or may not lead the user's shard.
        let url = cluster.url(i as u64 % 3 + 1, &format!("/api/v1/users/{user}/messages"));
        assert_eq!(append(&url, &cluster.token, &format!("a{i}"), "hello"), Some(1));
    }
    assert_eq!(active_mailboxes(&cluster), 5, "one actor per active mailbox, on the shard leader only");
    let deadline = Instant::now() + Duration::from_secs(10);
    while active_mailboxes(&cluster) > 0 {
        assert!(Instant::now() < deadline, "idle mailbox actors were not passivated");
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = cluster.url(1, &format!("/api/v1/users/{}/messages", users[0]));
    assert_eq!(
        append(&url, &cluster.token, "again", "hello again"),
        Some(2),
        "a passivated mailbox comes back with its state"
    );
    assert_eq!(active_mailboxes(&cluster), 1);
}
