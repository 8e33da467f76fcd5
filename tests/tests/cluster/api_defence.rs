//! The API as an attacker on the network meets it: HTTPS with a certificate (plain HTTP
//! and untrusting clients get nothing), and floods from one source — too many requests,
//! wrong tokens sprayed, too many connections — slowed, then banned on every node,
//! while a neighbour's requests go on.

use std::net::TcpStream;
use std::time::Duration;

use tests::{TestCluster, binary, run_python};

use crate::security::{connect_from, create_token, http_status_from, request_on, within};

#[test]
fn the_api_speaks_https_when_given_a_certificate() {
    let mut cluster = TestCluster::start(3, |_| {});
    // A certificate for the address node 1's API listens on.
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("api.pem"), certs.path().join("api.key"));
    let ip = cluster.nodes[0].config.http_listen.ip().to_string();
    gateways::tls::ensure_self_signed(&cert, &key, std::slice::from_ref(&ip)).unwrap();
    cluster.kill(1);
    cluster.reconfigure(1, |config| {
        config.http =
            node::http::HttpSettings { tls_cert: Some(cert.clone()), tls_key: Some(key.clone()), ..Default::default() };
    });
    cluster.restart(1);
    let base = cluster.url(1, "");
    assert!(base.starts_with(&format!("https://{ip}:")), "{base}");
    let seen = run_python("https_client.py", &[&base, cert.to_str().unwrap(), &cluster.token]);
    assert_eq!(seen["health"], 200, "{seen}");
    assert_eq!(seen["with_token"], 200, "{seen}");
    assert_eq!(seen["without_token"], 401, "{seen}");
    assert!(["TLSv1.3", "TLSv1.2"].contains(&seen["version"].as_str().unwrap_or("")), "{seen}");
    assert_eq!(seen["alpn"], "http/1.1", "{seen}");
    assert_eq!(seen["untrusting"], "refused", "a client without the CA must not get through: {seen}");
    assert_ne!(seen["plain"], 200, "plain HTTP on the HTTPS port answered: {seen}");
    // umsctl speaks it with --ca-file, and refuses the node without it.
    let umsctl = |ca: Option<&str>| {
        let mut command = std::process::Command::new(binary("umsctl"));
        command.args(["--node", &base, "--json"]).env("UMS_TOKEN", &cluster.token).env_remove("UMS_CA_FILE");
        if let Some(ca) = ca {
            command.args(["--ca-file", ca]);
        }
        command.arg("status").output().expect("run umsctl")
    };
    let trusted = umsctl(Some(cert.to_str().unwrap()));
    assert!(trusted.status.success(), "{}", String::from_utf8_lossy(&trusted.stderr));
    let untrusted = umsctl(None);
    assert!(!untrusted.status.success(), "umsctl trusted a certificate it was not given");
}

/// Whether the request was answered (the domain asked for need not exist), not refused.
fn is_served(status: u16) -> bool {
    status == 200 || status == 404
}

/// One request from `source` on a connection of its own.
fn status_from(cluster: &TestCluster, node: u64, source: [u8; 4], authorization: &str) -> u16 {
    http_status_from(&cluster.url(node, ""), source, "/api/v1/domains/health.go.ke", authorization)
}

#[test]
fn an_http_flood_is_slowed_then_banned_on_every_node_while_a_neighbour_goes_on() {
    let cluster = TestCluster::start(3, |config| {
        config.http.requests_per_ip = 20;
        config.http.request_burst_per_ip = 20;
        config.http.connections.max_offences_per_ip = 30;
        config.http.connections.max_per_ip = 4;
        // The harness itself calls from 127.0.0.1.
        config.bans.never = vec!["127.0.0.1".into()];
    });
    let bearer = format!("Bearer {}", cluster.token);
    let http = |node: u64| cluster.nodes[node as usize - 1].config.http_listen.to_string();
    let (flooder, sprayer, neighbour, hoarder) = ([127, 0, 0, 71], [127, 0, 0, 72], [127, 0, 0, 73], [127, 0, 0, 74]);

    // A flood of valid requests on one connection: 429 with Retry-After past the burst,
    // then, past the offences, a ban (403) on this node and, a second later, on all.
    // (A ministry's admin: not an operator, whom bans let through.)
    let (admin_token, _) = create_token(&cluster, "flooding admin", "ministry-admin", &["health.go.ke"]);
    let app = format!("Bearer {admin_token}");
    let path = "/api/v1/domains/health.go.ke";
    let mut stream = connect_from(&http(1), flooder);
    let (mut served, mut throttled, mut banned) = (0, 0, false);
    let started = std::time::Instant::now();
    while !banned && started.elapsed() < Duration::from_secs(10) {
        let (status, head) = request_on(&mut stream, path, &app);
        match status {
            status if is_served(status) => served += 1,
            429 => {
                assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
                throttled += 1;
            }
            403 => banned = true,
            0 => stream = connect_from(&http(1), flooder),
            other => panic!("unexpected {other}: {head}"),
        }
    }
    assert!((20..=40).contains(&served), "{served} requests served: not the burst of 20 (and a second's 20)");
    assert!(throttled >= 30, "banned after only {throttled} requests over the rate");
    assert!(banned, "the flooder was never banned");
    let everywhere =
        within(Duration::from_secs(1), || (2..=3).all(|node| status_from(&cluster, node, flooder, &app) == 403));
    assert!(everywhere.is_some(), "the flooder's ban did not reach nodes 2 and 3 within a second");
    assert!(is_served(status_from(&cluster, 2, neighbour, &app)), "the neighbour was refused");

    // Wrong tokens sprayed at node 2 (each a 401) ban the sprayer on node 3 too.
    let wrong = format!("Bearer ums_{:016x}_{}", 42, "A".repeat(43));
    let statuses = std::cell::RefCell::new(Vec::new());
    let sprayed = within(Duration::from_secs(20), || {
        let status = status_from(&cluster, 2, sprayer, &wrong);
        statuses.borrow_mut().push(status);
        status == 403
    });
    assert!(sprayed.is_some(), "a token sprayer was never banned: {:?}", statuses.borrow());
    let held = within(Duration::from_secs(1), || status_from(&cluster, 3, sprayer, "Basic eDp5") == 403);
    assert!(held.is_some(), "the sprayer's ban did not reach node 3 within a second");

    // One source holding too many connections gets no more (429, closed).
    let mut held_open: Vec<TcpStream> = Vec::new();
    for _ in 0..4 {
        let mut stream = connect_from(&http(3), hoarder);
        assert_eq!(request_on(&mut stream, "/api/v1/cluster", &bearer).0, 200);
        // (an operator's own connections count like anyone's)
        held_open.push(stream);
    }
    assert_eq!(status_from(&cluster, 3, hoarder, &bearer), 429, "a fifth connection was served");
    drop(held_open.pop());
    let freed = within(Duration::from_secs(2), || is_served(status_from(&cluster, 3, hoarder, &bearer)));
    assert!(freed.is_some(), "a closed connection did not free its slot");
    assert!(is_served(status_from(&cluster, 3, neighbour, &bearer)));
}
