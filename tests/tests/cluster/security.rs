//! The API's doors, as an attacker and as each kind of caller tries them against real
//! nodes: no route answers without credentials, the anonymous takeover of a mailbox is
//! gone, every role stays inside its scope, users see only their own mail, a revoked
//! token dies on every node within a second, and `umsctl token` manages tokens.

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tests::{TestCluster, binary, run_python};

/// Credentials a request carries.
#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer(&'a str),
    Basic(&'a str, &'a str),
}

/// Status, JSON body and `WWW-Authenticate` headers of one request.
struct Answer {
    status: u16,
    body: Value,
    challenges: Vec<String>,
}

fn call(method: &str, url: &str, auth: Auth<'_>, body: Option<&Value>) -> Answer {
    let mut request = ureq::request(method, url).timeout(Duration::from_secs(15));
    request = match auth {
        Auth::None => request,
        Auth::Bearer(token) => request.set("Authorization", &format!("Bearer {token}")),
        Auth::Basic(login, password) => {
            let pair = base64::engine::general_purpose::STANDARD.encode(format!("{login}:{password}"));
            request.set("Authorization", &format!("Basic {pair}"))
        }
    };
    let result = match body {
        Some(body) => request.send_json(body.clone()),
        None => request.call(),
    };
    let response = match result {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = response.status();
    let challenges = response.all("www-authenticate").iter().map(|s| s.to_string()).collect();
    let body = response.into_json().unwrap_or(Value::Null);
    Answer { status, body, challenges }
}

pub(crate) fn create_token(cluster: &TestCluster, name: &str, role: &str, scope: &[&str]) -> (String, String) {
    let body = json!({ "name": name, "role": role, "scope": scope });
    let answer = call("POST", &cluster.url(1, "/api/v1/tokens"), Auth::Bearer(&cluster.token), Some(&body));
    assert_eq!(answer.status, 201, "{}", answer.body);
    (answer.body["token"].as_str().unwrap().to_string(), answer.body["id"].as_str().unwrap().to_string())
}

/// A concrete path for a route of the table: its `{...}` filled with real names.
fn concrete(path: &str, user: &str) -> String {
    path.replace("{address}", user).replace("{domain}", "health.go.ke").replace("{shard}", "1").replace("{id}", "0")
}

#[test]
fn no_route_answers_without_valid_credentials() {
    // Many failed logins for one account below: without the failure delay.
    let cluster = TestCluster::start(3, |config| {
        config.logins.failure_delay_ms = 0;
        config.logins.max_failure_delay_ms = 0;
    });
    let user = "wanjiru@health.go.ke";
    cluster.create_user_with_password(user, "wanjiru-password");
    // A token of the right shape whose id no node knows, and a real id with a wrong secret.
    let (real, _) = create_token(&cluster, "real", "application", &["health.go.ke"]);
    let unknown = format!("ums_{}_{}", "0".repeat(16), "A".repeat(43));
    let wrong_secret = format!("{}{}", &real[..real.len() - 1], if real.ends_with('A') { 'B' } else { 'A' });
    let body = json!({});
    for route in node::http::ROUTES {
        let method = route.method.as_str();
        let url = cluster.url(2, &concrete(route.path, user));
        if route.endpoint == node::http::Endpoint::Health {
            assert_eq!(call(method, &url, Auth::None, None).status, 200, "/health stays open");
            continue;
        }
        let send = (method == "POST").then_some(&body);
        for auth in [
            Auth::None,
            Auth::Bearer("not-a-token"),
            Auth::Bearer(&unknown),
            Auth::Bearer(&wrong_secret),
            Auth::Basic(user, "a wrong password"),
            Auth::Basic("nobody@health.go.ke", "wanjiru-password"),
        ] {
            let answer = call(method, &url, auth, send);
            assert_eq!(answer.status, 401, "{method} {} answered {}: {}", route.path, answer.status, answer.body);
            assert!(answer.body["error"].is_string(), "a JSON error: {}", answer.body);
            assert!(answer.challenges.iter().any(|c| c.starts_with("Bearer")), "{:?}", answer.challenges);
        }
    }
    // Unknown paths do not tell an anonymous caller which endpoints exist.
    assert_eq!(call("GET", &cluster.url(1, "/api/v1/nothing-here"), Auth::None, None).status, 401);
    // The same login failure for a user that exists and one that does not.
    let url = cluster.url(1, &format!("/api/v1/users/{user}"));
    let exists = call("GET", &url, Auth::Basic(user, "a wrong password"), None);
    let absent = call("GET", &url, Auth::Basic("nobody@health.go.ke", "a wrong password"), None);
    assert_eq!(exists.body, absent.body);
}

#[test]
fn an_anonymous_caller_cannot_take_over_a_mailbox() {
    let cluster = TestCluster::start(3, |_| {});
    let victim = "permsec@treasury.go.ke";
    cluster.create_user_with_password(victim, "the-real-password");
    let takeover = json!({ "email": victim, "name": "attacker", "password": "attacker-password" });
    let hash = json!({ "email": victim, "name": "attacker", "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$AAAA" });
    for body in [&takeover, &hash] {
        for node in 1..=3 {
            let answer = call("POST", &cluster.url(node, "/api/v1/users"), Auth::None, Some(body));
            assert_eq!(answer.status, 401, "{}", answer.body);
        }
    }
    // Nor with a user's own login: a user cannot rewrite their own record either.
    let answer =
        call("POST", &cluster.url(1, "/api/v1/users"), Auth::Basic(victim, "the-real-password"), Some(&takeover));
    assert_eq!(answer.status, 403, "{}", answer.body);
    // The real password still opens the mailbox over IMAP, the attacker's does not.
    let listing = run_python("imap_client.py", &["refs", &cluster.imap(2), victim, "the-real-password"]);
    assert!(listing.is_array(), "{listing}");
    let attacker = Command::new("python3")
        .arg(tests::python_script("imap_client.py"))
        .args(["refs", &cluster.imap(2), victim, "attacker-password"])
        .output()
        .unwrap();
    assert!(!attacker.status.success(), "the attacker's password must not log in");

    // Nothing else is open either: reading mail, injecting mail, capturing a domain,
    // forcing elections.
    let anonymous = [
        ("GET", format!("/api/v1/users/{victim}/messages?bodies=true"), None),
        ("POST", format!("/api/v1/users/{victim}/messages"), Some(json!({ "kind": "sms", "body": "phish" }))),
        (
            "POST",
            "/api/v1/users".to_string(),
            Some(json!({ "email": "x@partner.go.ke", "name": "x", "password": "p" })),
        ),
        ("POST", "/api/v1/shards/1/transfer-leader".to_string(), Some(json!({ "node": 2 }))),
        ("POST", "/api/v1/debug/faults".to_string(), Some(json!({ "fsync_delay_ms": 500 }))),
    ];
    for (method, path, body) in &anonymous {
        assert_eq!(call(method, &cluster.url(3, path), Auth::None, body.as_ref()).status, 401, "{method} {path}");
    }
    let domain = call("GET", &cluster.url(1, "/api/v1/domains/partner.go.ke"), Auth::Bearer(&cluster.token), None);
    assert_ne!(domain.body["local"], true, "partner.go.ke must not have become local: {}", domain.body);
}

/// What is tried, as whom, the request, and the status it must get.
type Check<'a> = (&'a str, Auth<'a>, &'a str, String, Option<&'a Value>, u16);

#[test]
fn every_role_stays_inside_its_scope() {
    let cluster = TestCluster::start(3, |_| {});
    let staff = "achieng@health.go.ke";
    let other = "otieno@treasury.go.ke";
    cluster.create_user_with_password(staff, "achieng-password");
    cluster.create_user_with_password(other, "otieno-password");
    let (admin, _) = create_token(&cluster, "health admin", "ministry-admin", &["health.go.ke"]);
    let (app, _) = create_token(&cluster, "health portal", "application", &["health.go.ke"]);
    let (carrier, _) = create_token(&cluster, "carrier", "carrier", &["safaricom"]);
    let sms = json!({ "kind": "sms", "body": "Your appointment is at 10:00" });
    let new_staff = json!({ "email": "new@health.go.ke", "name": "New Staff", "password": "new-password" });
    let outsider = json!({ "email": "x@partner.go.ke", "name": "Captured", "password": "x-password" });
    let treasury_reset = json!({ "email": other, "name": "Reset", "password": "attacker-password" });
    let (to_node_2, empty) = (json!({ "node": 2 }), json!({}));
    let mail = |user: &str| format!("/api/v1/users/{user}/messages");
    let checks: Vec<Check<'_>> = vec![
        // A ministry admin manages its own ministry's users, nothing else, and no mail.
        ("admin creates staff", Auth::Bearer(&admin), "POST", "/api/v1/users".into(), Some(&new_staff), 201),
        ("admin reads staff", Auth::Bearer(&admin), "GET", format!("/api/v1/users/{staff}"), None, 200),
        ("admin reads staff mail", Auth::Bearer(&admin), "GET", mail(staff), None, 403),
        ("admin resets treasury", Auth::Bearer(&admin), "POST", "/api/v1/users".into(), Some(&treasury_reset), 403),
        ("admin captures a domain", Auth::Bearer(&admin), "POST", "/api/v1/users".into(), Some(&outsider), 403),
        ("admin reads treasury", Auth::Bearer(&admin), "GET", format!("/api/v1/users/{other}"), None, 403),
        ("admin reads the cluster", Auth::Bearer(&admin), "GET", "/api/v1/cluster".into(), None, 403),
        ("admin lists tokens", Auth::Bearer(&admin), "GET", "/api/v1/tokens".into(), None, 403),
        // An application sends for its ministry and reads nobody's mail.
        ("app delivers to staff", Auth::Bearer(&app), "POST", mail(staff), Some(&sms), 201),
        ("app delivers to treasury", Auth::Bearer(&app), "POST", mail(other), Some(&sms), 403),
        ("app reads staff mail", Auth::Bearer(&app), "GET", mail(staff), None, 403),
        ("app creates a user", Auth::Bearer(&app), "POST", "/api/v1/users".into(), Some(&new_staff), 403),
        (
            "app moves a leader",
            Auth::Bearer(&app),
            "POST",
            "/api/v1/shards/1/transfer-leader".into(),
            Some(&to_node_2),
            403,
        ),
        ("app reads metrics", Auth::Bearer(&app), "GET", "/metrics".into(), None, 403),
        // A carrier token opens none of the admin or mailbox endpoints.
        ("carrier delivers", Auth::Bearer(&carrier), "POST", mail(staff), Some(&sms), 403),
        ("carrier reads the cluster", Auth::Bearer(&carrier), "GET", "/api/v1/cluster".into(), None, 403),
        // A user reads their own mail, and nobody else's.
        ("user reads own mail", Auth::Basic(staff, "achieng-password"), "GET", mail(staff), None, 200),
        ("user reads other mail", Auth::Basic(staff, "achieng-password"), "GET", mail(other), None, 403),
        ("user by phone number", Auth::Basic(staff, "achieng-password"), "GET", mail("+254799999999"), None, 403),
        ("user lists tokens", Auth::Basic(staff, "achieng-password"), "GET", "/api/v1/tokens".into(), None, 403),
        (
            "user faults",
            Auth::Basic(staff, "achieng-password"),
            "POST",
            "/api/v1/debug/faults".into(),
            Some(&empty),
            403,
        ),
    ];
    for (what, auth, method, path, body, expected) in checks {
        let answer = call(method, &cluster.url(2, &path), auth, body);
        assert_eq!(answer.status, expected, "{what}: {method} {path} → {}", answer.body);
        if expected == 403 {
            assert!(answer.body["error"].is_string(), "{what}: {}", answer.body);
        }
    }
    // A refusal reads the same for a user that exists and one that does not.
    let exists = call("GET", &cluster.url(1, &mail(other)), Auth::Bearer(&app), None);
    let absent = call("GET", &cluster.url(1, &mail("ghost@treasury.go.ke")), Auth::Bearer(&app), None);
    assert_eq!((exists.status, &exists.body), (absent.status, &absent.body));
    // What the application delivered is in the mailbox, and the user reads it.
    let own = call("GET", &cluster.url(3, &mail(staff)), Auth::Basic(staff, "achieng-password"), None);
    assert_eq!(own.body["messages"].as_array().map(Vec::len), Some(1), "{}", own.body);
}

#[test]
fn a_revoked_token_is_refused_by_every_node_within_a_second() {
    let cluster = TestCluster::start(3, |_| {});
    let (token, id) = create_token(&cluster, "to revoke", "operator", &[]);
    // Every node has it in use (and cached) before it is revoked.
    for node in 1..=3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while call("GET", &cluster.url(node, "/api/v1/cluster"), Auth::Bearer(&token), None).status != 200 {
            assert!(Instant::now() < deadline, "node {node} never accepted the new token");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let revoked = call("DELETE", &cluster.url(2, &format!("/api/v1/tokens/{id}")), Auth::Bearer(&cluster.token), None);
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert!(revoked.body["revoked_ms"].as_u64().unwrap_or(0) > 0, "{}", revoked.body);
    std::thread::sleep(Duration::from_secs(1));
    for node in 1..=3 {
        let answer = call("GET", &cluster.url(node, "/api/v1/cluster"), Auth::Bearer(&token), None);
        assert_eq!(answer.status, 401, "node {node} still accepts a token revoked a second ago");
    }
    // The other tokens are untouched.
    assert_eq!(call("GET", &cluster.url(3, "/api/v1/cluster"), Auth::Bearer(&cluster.token), None).status, 200);
}

fn umsctl(cluster: &TestCluster, token: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(binary("umsctl"))
        .args(["--node", &cluster.nodes[0].config.http_listen.to_string()])
        .args(args)
        .env("UMS_TOKEN", token)
        .env_remove("UMS_TOKEN_FILE")
        .output()
        .expect("run umsctl");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).to_string();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

#[test]
fn umsctl_creates_lists_and_revokes_tokens() {
    let cluster = TestCluster::start(3, |_| {});
    let args = [
        "--json",
        "token",
        "create",
        "--name",
        "health portal",
        "--role",
        "application",
        "--scope",
        "Health.go.ke",
        "--expires",
        "30d",
    ];
    let (ok, stdout, stderr) = umsctl(&cluster, &cluster.token, &args);
    assert!(ok, "{stderr}");
    let created: Value = serde_json::from_str(&stdout).expect("JSON");
    let secret = created["token"].as_str().expect("the token is shown once").to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["scope"], json!(["health.go.ke"]));
    let expires = created["expires_ms"].as_u64().unwrap() - created["created_ms"].as_u64().unwrap();
    assert_eq!(expires / 1000 / 86_400, 30, "{created}");

    let (ok, stdout, stderr) = umsctl(&cluster, &cluster.token, &["--json", "token", "list"]);
    assert!(ok, "{stderr}");
    assert!(!stdout.contains(&secret[secret.len() - 43..]), "a listing never shows a secret");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    let entry = listed["tokens"].as_array().unwrap().iter().find(|t| t["id"] == id.as_str()).cloned();
    assert_eq!(entry.expect("listed")["role"], "application");
    let (ok, table, _) = umsctl(&cluster, &cluster.token, &["token", "list"]);
    assert!(ok && table.contains("health portal") && table.contains(&id), "{table}");

    // The new token works for what its role allows, and not for managing tokens.
    let (ok, _, stderr) = umsctl(&cluster, &secret, &["token", "list"]);
    assert!(!ok && stderr.contains("403"), "{stderr}");
    let (ok, _, stderr) = umsctl(&cluster, &cluster.token, &["token", "revoke", &id]);
    assert!(ok, "{stderr}");
    std::thread::sleep(Duration::from_secs(1));
    let answer = call("GET", &cluster.url(1, "/api/v1/domains/health.go.ke"), Auth::Bearer(&secret), None);
    assert_eq!(answer.status, 401, "{}", answer.body);

    // Bad input gets a clear error, not a token.
    let (ok, _, stderr) = umsctl(&cluster, &cluster.token, &["token", "create", "--name", "x", "--role", "root"]);
    assert!(!ok && stderr.contains("role"), "{stderr}");
    let (ok, _, stderr) = umsctl(&cluster, "ums_0000000000000000_nope", &["status"]);
    assert!(!ok && stderr.contains("401"), "{stderr}");
}

/// Reads one line (up to CRLF) from a raw connection; `None` at EOF or after `timeout`.
pub(crate) fn read_line(stream: &mut std::net::TcpStream, timeout: Duration) -> Option<String> {
    use std::io::Read as _;
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&line).trim_end().to_string())
}

#[test]
fn a_client_that_has_not_logged_in_gets_little_memory_and_little_time() {
    use std::io::Write as _;
    let cluster = TestCluster::start(1, |config| config.imap.login_timeout_secs = 2);
    let connect = || {
        let mut stream = std::net::TcpStream::connect(cluster.imap(1)).unwrap();
        let greeting = read_line(&mut stream, Duration::from_secs(5)).expect("greeting");
        assert!(greeting.starts_with("* OK"), "{greeting}");
        stream
    };
    // A 50 MB literal before login is refused before a byte of it is sent.
    let mut stream = connect();
    stream.write_all(b"a1 LOGIN {50000000}\r\n").unwrap();
    let answer = read_line(&mut stream, Duration::from_secs(5)).expect("an answer");
    assert!(answer.starts_with("a1 NO [TOOBIG]"), "{answer}");
    // So is a long line: the connection is closed instead of buffering it.
    stream.write_all(&vec![b'x'; 64 * 1024]).unwrap();
    let answer = read_line(&mut stream, Duration::from_secs(5)).expect("a BYE");
    assert!(answer.starts_with("* BYE"), "{answer}");
    assert_eq!(read_line(&mut stream, Duration::from_secs(5)), None, "closed after the BYE");
    // A silent client is dropped after the login timeout, not 30 minutes.
    let mut silent = connect();
    let started = Instant::now();
    let answer = read_line(&mut silent, Duration::from_secs(30)).expect("a BYE");
    assert!(answer.starts_with("* BYE"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn an_imported_password_hash_cannot_name_a_huge_cost() {
    let cluster = TestCluster::start(1, |_| {});
    let hash = "$argon2id$v=19$m=4194304,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$YQ4VqN3bP5oQ5J8v3wS0GJqGdX6Lh9m0cVq3n0qv8yA";
    let body = json!({ "email": "migrated@health.go.ke", "name": "Migrated", "password_hash": hash });
    let answer = call("POST", &cluster.url(1, "/api/v1/users"), Auth::Bearer(&cluster.token), Some(&body));
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body["error"].as_str().unwrap().contains("m=4194304"), "{}", answer.body);
}

/// A TCP connection to `server` from the loopback address `source`.
pub(crate) fn connect_from(server: &str, source: [u8; 4]) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&std::net::SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect(&server.parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    socket.into()
}

/// The tagged answer to `a LOGIN` over plain IMAP from the loopback address `source`.
fn imap_login(server: &str, source: [u8; 4], login: &str, password: &str) -> String {
    use std::io::Write as _;
    let mut stream = connect_from(server, source);
    read_line(&mut stream, Duration::from_secs(5)).expect("greeting");
    stream.write_all(format!("a LOGIN \"{login}\" \"{password}\"\r\n").as_bytes()).unwrap();
    loop {
        let line = read_line(&mut stream, Duration::from_secs(30)).expect("an answer to LOGIN");
        if line.starts_with("a ") {
            return line;
        }
    }
}

#[test]
fn a_guesser_slows_down_and_cannot_lock_the_real_user_out() {
    let cluster = TestCluster::start(1, |config| {
        config.imap.allow_insecure_auth = true;
        config.logins.max_failures_per_account = 3;
        config.logins.failure_delay_ms = 100;
        config.logins.max_failure_delay_ms = 400;
    });
    let user = json!({ "email": "njeri@health.go.ke", "name": "Njeri", "password": "njeri-password",
                       "msisdn": "+254711000042", "employee_number": "E42" });
    let answer = call("POST", &cluster.url(1, "/api/v1/users"), Auth::Bearer(&cluster.token), Some(&user));
    assert_eq!(answer.status, 201, "{}", answer.body);
    let (imap, home, guesser) = (cluster.imap(1), [127, 0, 0, 5], [127, 0, 0, 1]);
    assert!(imap_login(&imap, home, "njeri@health.go.ke", "njeri-password").starts_with("a OK"));

    // Three spellings of one account are one count, and each failure waits longer.
    let mut waited = Vec::new();
    for login in ["njeri@health.go.ke", "+254711000042", "emp:E42"] {
        let started = Instant::now();
        let answer = imap_login(&imap, guesser, login, "guess");
        assert!(answer.contains("AUTHENTICATIONFAILED"), "{login}: {answer}");
        waited.push(started.elapsed());
    }
    assert!(waited[0] >= Duration::from_millis(100) && waited[2] >= Duration::from_millis(400), "{waited:?}");
    let answer = imap_login(&imap, guesser, "+254711000042", "njeri-password");
    assert!(answer.contains("UNAVAILABLE"), "the guesser is refused even the right password: {answer}");
    // The same count holds for the API's Basic login from the guesser's address.
    let url = cluster.url(1, "/api/v1/users/njeri@health.go.ke");
    assert_eq!(call("GET", &url, Auth::Basic("njeri@health.go.ke", "njeri-password"), None).status, 401);
    // Njeri, from where she logs in, is not locked out.
    assert!(imap_login(&imap, home, "emp:E42", "njeri-password").starts_with("a OK"));
}

fn probe(args: &[&str]) -> Value {
    run_python("peer_probe.py", args)
}

#[test]
fn a_process_without_a_members_certificate_cannot_talk_to_peers() {
    let cluster = TestCluster::start(3, |_| {});
    let peer = cluster.nodes[0].config.peer_listen.to_string();
    let cluster_id = cluster.nodes[0].config.cluster_id.clone();
    let pki = node::dev::dev_pki_dir(cluster.data_dir());
    let file = |name: String| pki.join(name).to_string_lossy().to_string();
    let ca = file(node::pki::CA_CERT_FILE.to_string());
    let (cert2, key2) = node::pki::node_files(2);
    let (cert2, key2) = (file(cert2), file(key2));

    // Plain TCP: not even the cluster id comes back.
    let plain = probe(&["plain", &peer, &cluster_id, "2"]);
    assert_eq!(plain["hello_from"], Value::Null, "{plain}");
    let answer = hex_text(plain["answer"].as_str().unwrap());
    assert!(!answer.contains(&cluster_id), "the cluster id leaked: {plain}");

    // A certificate of another CA, even one naming node 2 of this very cluster.
    let elsewhere = tempfile::tempdir().unwrap();
    let foreign_ca = node::pki::create_ca(&cluster_id).unwrap();
    let foreign = node::pki::issue_node(&foreign_ca, &cluster_id, 2).unwrap();
    let (foreign_cert, foreign_key) = (elsewhere.path().join("n2.pem"), elsewhere.path().join("n2.key"));
    node::pki::write(&foreign, &foreign_cert, &foreign_key).unwrap();
    let (foreign_cert, foreign_key) = (foreign_cert.to_string_lossy(), foreign_key.to_string_lossy());
    let refused = probe(&["tls", &peer, &cluster_id, "2", &ca, &foreign_cert, &foreign_key]);
    assert_eq!(refused["hello_from"], Value::Null, "{refused}");
    assert_ne!(refused["handshake"], "ok", "{refused}");

    // Node 2's own certificate cannot speak for node 3, nor for a non-member.
    for claimed in ["3", "9"] {
        let impostor = probe(&["tls", &peer, &cluster_id, claimed, &ca, &cert2, &key2]);
        assert_eq!(impostor["hello_from"], Value::Null, "claiming node {claimed}: {impostor}");
    }
    // The same probe as node 2 is answered: the refusals above are the checks at work.
    let member = probe(&["tls", &peer, &cluster_id, "2", &ca, &cert2, &key2]);
    assert_eq!(member["hello_from"], 1, "{member}");
    // And the cluster still works.
    cluster.create_user("after-probes@health.go.ke");
}

fn hex_text(hex: &str) -> String {
    let bytes: Vec<u8> = (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
    String::from_utf8_lossy(&bytes).to_string()
}

/// The state of `email`'s only outbound item once it is no longer pending.
fn settled_outbound(cluster: &TestCluster, email: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let url = cluster.url(1, &format!("/api/v1/users/{email}/outbound"));
        let item = tests::get_json(&url, &cluster.token).unwrap()["outbound"][0].clone();
        if item["status"] != "pending" {
            return item;
        }
        assert!(Instant::now() < deadline, "still pending: {item}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn enqueue(cluster: &TestCluster, email: &str, target: &str) -> Answer {
    let body = json!({ "channel": "webhook", "target": target, "body": "{}" });
    call("POST", &cluster.url(1, &format!("/api/v1/users/{email}/outbound")), Auth::Bearer(&cluster.token), Some(&body))
}

#[test]
fn webhooks_reach_neither_the_clusters_own_network_nor_a_redirect() {
    let cluster = TestCluster::start(1, |config| {
        config.outbound.webhook_allow.clear();
        config.outbound.retry_base_ms = 50;
        config.outbound.max_attempts = 2;
    });
    let email = "portal@health.go.ke";
    cluster.create_user(email);
    let sink = devkit::webhook_sink::WebhookSink::start(Duration::ZERO).unwrap();
    // Addresses inside are refused as they are queued: the sink on loopback, the
    // metadata service, the node's own API.
    let own_api = cluster.url(1, "/api/v1/tokens");
    for target in [sink.url.as_str(), "http://169.254.169.254/latest/meta-data/", "http://[::1]:80/", &own_api] {
        let answer = enqueue(&cluster, email, target);
        assert_eq!(answer.status, 400, "{target}: {}", answer.body);
    }
    // A name that resolves inside is queued, and never called.
    let by_name = sink.url.replace("127.0.0.1", "localhost");
    assert_eq!(enqueue(&cluster, email, &by_name).status, 202);
    let item = settled_outbound(&cluster, email);
    assert_eq!(item["status"], "failed", "{item}");
    assert!(item["last_error"].as_str().unwrap().contains("not allowed"), "{item}");
    assert!(sink.received().is_empty(), "the internal receiver was called");
}

#[test]
fn a_webhook_redirect_is_not_followed() {
    use std::io::{Read as _, Write as _};
    let cluster = TestCluster::start(1, |config| config.outbound.max_attempts = 2);
    let email = "redirected@health.go.ke";
    cluster.create_user(email);
    let sink = devkit::webhook_sink::WebhookSink::start(Duration::ZERO).unwrap();
    // A receiver that sends every caller on to the sink.
    let redirector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("http://{}/hook", redirector.local_addr().unwrap());
    let location = sink.url.clone();
    std::thread::spawn(move || {
        for mut stream in redirector.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let reply =
                format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    assert_eq!(enqueue(&cluster, email, &target).status, 202);
    let item = settled_outbound(&cluster, email);
    assert_eq!(item["status"], "failed", "{item}");
    assert!(item["last_error"].as_str().unwrap().contains("redirects are not followed"), "{item}");
    assert!(sink.received().is_empty(), "the redirect was followed");
}

/// The audit log as node `node` holds it in its own replica.
fn audit_on(cluster: &TestCluster, node: u64) -> Vec<Value> {
    let url = cluster.url(node, "/api/v1/audit?local=true&limit=1000");
    let answer = call("GET", &url, Auth::Bearer(&cluster.token), None);
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["audit"].as_array().unwrap().clone()
}

/// Waits until node 1's replica holds a record matching `what`; returns its sequence.
fn wait_for_record(cluster: &TestCluster, what: &dyn Fn(&Value) -> bool, describe: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(record) = audit_on(cluster, 1).into_iter().find(|r| what(r)) {
            return record["seq"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "no audit record for {describe}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_audit_log_holds_each_change_and_refusal_once_in_order_on_every_node() {
    let cluster = TestCluster::start(3, |config| config.imap.allow_insecure_auth = true);
    let staff = "audited@health.go.ke";
    let new_user = json!({ "email": staff, "name": "Audited", "password": "audited-password" });
    let (app, app_id) = create_token(&cluster, "audited app", "application", &["health.go.ke"]);
    let bogus = format!("ums_{}_{}", "1".repeat(16), "B".repeat(43));
    let revoke_path = format!("/api/v1/tokens/{app_id}");
    type Step<'a> = (u64, &'a str, Box<dyn Fn() -> u16 + 'a>, String, String, u64);
    let steps: Vec<Step<'_>> = vec![
        (
            1,
            "a user created",
            Box::new(|| {
                call("POST", &cluster.url(1, "/api/v1/users"), Auth::Bearer(&cluster.token), Some(&new_user)).status
            }),
            "tests".into(),
            "POST /api/v1/users".into(),
            201,
        ),
        (
            2,
            "a bogus token",
            Box::new(|| call("GET", &cluster.url(2, "/api/v1/cluster"), Auth::Bearer(&bogus), None).status),
            "token 1111111111111111".into(),
            "GET /api/v1/cluster".into(),
            401,
        ),
        (
            3,
            "mail read by an application",
            Box::new(|| {
                call("GET", &cluster.url(3, &format!("/api/v1/users/{staff}/messages")), Auth::Bearer(&app), None)
                    .status
            }),
            "audited app".into(),
            format!("GET /api/v1/users/{staff}/messages"),
            403,
        ),
        (
            2,
            "a wrong IMAP password",
            Box::new(|| {
                if imap_login(&cluster.imap(2), [127, 0, 0, 1], staff, "wrong").contains("AUTHENTICATIONFAILED") {
                    401
                } else {
                    0
                }
            }),
            staff.into(),
            "imap login".into(),
            401,
        ),
        (
            3,
            "a token revoked",
            Box::new(|| call("DELETE", &cluster.url(3, &revoke_path), Auth::Bearer(&cluster.token), None).status),
            "tests".into(),
            format!("DELETE {revoke_path}"),
            200,
        ),
    ];
    let mut seqs = Vec::new();
    for (node, describe, act, actor, action, result) in &steps {
        assert_eq!(act(), *result as u16, "{describe} through node {node}");
        let matches = |r: &Value| {
            r["actor"] == actor.as_str()
                && r["action"] == action.as_str()
                && r["result"] == *result
                && r["node"] == *node
        };
        seqs.push(wait_for_record(&cluster, &matches, describe));
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in the order they happened: {seqs:?}");
    // Every node holds the same records in the same order, each of ours once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let logs: Vec<Vec<Value>> = (1..=3).map(|node| audit_on(&cluster, node)).collect();
        if logs.windows(2).all(|w| w[0] == w[1]) || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(logs.windows(2).all(|w| w[0] == w[1]), "the replicas' audit logs differ");
    let numbers: Vec<u64> = logs[0].iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "numbered without gaps or repeats: {numbers:?}");
    for (seq, (_, describe, _, actor, action, _)) in seqs.iter().zip(&steps) {
        let same = logs[0].iter().filter(|r| r["actor"] == actor.as_str() && r["action"] == action.as_str()).count();
        assert_eq!(same, 1, "{describe} recorded once (seq {seq})");
    }
    assert!(!logs[0].iter().any(|r| r.to_string().contains(&app[22..])), "no secret in the audit log");
    // Nothing edits it, and only operators read it.
    assert_eq!(call("DELETE", &cluster.url(1, "/api/v1/audit"), Auth::Bearer(&cluster.token), None).status, 405);
    assert_eq!(call("GET", &cluster.url(1, "/api/v1/audit"), Auth::Basic(staff, "audited-password"), None).status, 403);
    // umsctl shows it too, filtered by actor.
    let (ok, stdout, stderr) =
        umsctl(&cluster, &cluster.token, &["--json", "audit", "--since", "1h", "--actor", "audited app"]);
    assert!(ok, "{stderr}");
    let shown: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["audit"].as_array().map(Vec::len), Some(1), "{shown}");
}

/// The first line a server sends a client connecting from `source`.
fn first_line_from(server: &str, source: [u8; 4]) -> String {
    let mut stream = connect_from(server, source);
    read_line(&mut stream, Duration::from_secs(5)).unwrap_or_default()
}

/// The status of a raw HTTP GET of `path` from `source`, with `authorization`.
pub(crate) fn http_status_from(base: &str, source: [u8; 4], path: &str, authorization: &str) -> u16 {
    let mut stream = connect_from(base.trim_start_matches("http://"), source);
    request_on(&mut stream, path, authorization).0
}

/// The status line and headers of one GET on an open connection (kept open after it).
pub(crate) fn request_on(stream: &mut std::net::TcpStream, path: &str, authorization: &str) -> (u16, String) {
    use std::io::Write as _;
    let request = format!("GET {path} HTTP/1.1\r\nHost: ums\r\nAuthorization: {authorization}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut head = String::new();
    let mut length = 0;
    while let Some(line) = read_line(stream, Duration::from_secs(10)) {
        if line.trim().is_empty() {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        head.push_str(&line);
    }
    let mut body = vec![0; length];
    let _ = std::io::Read::read_exact(stream, &mut body);
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, head)
}

/// Waits until `check` holds, at most `within`; how long it took.
pub(crate) fn within(limit: Duration, check: impl Fn() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() <= limit {
        if check() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn an_address_banned_on_one_node_is_refused_by_every_node_within_a_second() {
    use std::io::Write as _;
    let cluster = TestCluster::start(3, |config| {
        config.imap.connections.max_offences_per_ip = 10;
        config.bans.never = vec!["127.0.0.88".into()];
    });
    let (abuser, neighbour, office) = ([127, 0, 0, 66], [127, 0, 0, 67], [127, 0, 0, 88]);
    // The abuser sends garbage to node 1's IMAP until node 1 has had enough.
    let refused_on_node_1 = within(Duration::from_secs(20), || {
        let mut stream = connect_from(&cluster.imap(1), abuser);
        let greeting = read_line(&mut stream, Duration::from_secs(5)).unwrap_or_default();
        if !greeting.starts_with("* OK") {
            return true;
        }
        let _ = stream.write_all(&b"\x01\x02 garbage\r\n".repeat(5));
        false
    });
    assert!(refused_on_node_1.is_some(), "node 1 never refused the abuser");
    // Every node, every protocol, refuses it a second later; its neighbour gets in.
    std::thread::sleep(Duration::from_secs(1));
    for node in 1..=3 {
        for server in [cluster.imap(node), cluster.smtp(node)] {
            let line = first_line_from(&server, abuser);
            assert!(line.contains("banned"), "node {node} {server} let the abuser in: {line}");
            let line = first_line_from(&server, neighbour);
            assert!(line.starts_with("* OK") || line.starts_with("220 "), "node {node} refused a neighbour: {line}");
        }
    }
    let bearer = format!("Bearer {}", cluster.token);
    assert_eq!(http_status_from(&cluster.url(3, ""), abuser, "/api/v1/cluster", "Basic eDp5"), 403);
    assert_eq!(
        http_status_from(&cluster.url(3, ""), abuser, "/api/v1/cluster", &bearer),
        200,
        "an operator gets through"
    );
    // An allow-listed office is never banned for its typos.
    for _ in 0..4 {
        let mut stream = connect_from(&cluster.imap(1), office);
        let _ = read_line(&mut stream, Duration::from_secs(5));
        let _ = stream.write_all(&b"\x01 garbage\r\n".repeat(5));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(first_line_from(&cluster.imap(2), office).starts_with("* OK"));

    // umsctl shows the ban, made by node 1, and lifts it for every node.
    let (ok, stdout, stderr) = umsctl(&cluster, &cluster.token, &["--json", "ban", "list"]);
    assert!(ok, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    let ban = listed["bans"].as_array().unwrap().iter().find(|b| b["network"] == "127.0.0.66/32").cloned();
    assert_eq!(ban.expect("listed")["created_by"], "node 1");
    let (ok, _, stderr) = umsctl(&cluster, &cluster.token, &["ban", "remove", "127.0.0.66"]);
    assert!(ok, "{stderr}");
    let lifted = within(Duration::from_secs(5), || first_line_from(&cluster.imap(3), abuser).starts_with("* OK"));
    assert!(lifted.is_some(), "the lifted ban still holds on node 3");
    // And an operator's own ban, by hand, of a whole network.
    let (ok, _, stderr) =
        umsctl(&cluster, &cluster.token, &["ban", "add", "127.0.0.96/30", "--for", "1h", "--reason", "test"]);
    assert!(ok, "{stderr}");
    let held = within(Duration::from_secs(1), || first_line_from(&cluster.smtp(2), [127, 0, 0, 97]).contains("banned"));
    assert!(held.is_some(), "a ban by hand did not reach node 2 within a second");
}
