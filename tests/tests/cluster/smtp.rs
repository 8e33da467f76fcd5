//! The SMTP gateways with real clients (Python smtplib, swaks) against real `umsd`
//! processes: protocol conformance and byte-exact storage, bad input and abuse limits,
//! and kill -9 of a shard leader while mail flows through every node.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tests::{PYTHON, TestCluster, json_printed, python_script, run_python};

/// Asserts that every running replica holds `raw` exactly once in `email`'s INBOX, as
/// sent plus one Received header on top, and returns how many messages it holds.
fn assert_stored_once(cluster: &TestCluster, email: &str, raw: &[u8]) {
    for id in 1..=cluster.nodes.len() as u64 {
        let bodies = cluster.local_bodies(id, email).expect("replica readable");
        let copies: Vec<_> = bodies.iter().filter(|(_, body)| body.ends_with(raw)).collect();
        assert_eq!(
            copies.len(),
            1,
            "node {id}: {email} holds {} copies of {:?}",
            copies.len(),
            String::from_utf8_lossy(&raw[..raw.len().min(120)])
        );
        let body = &copies[0].1;
        let header = &body[..body.len() - raw.len()];
        assert!(
            header.starts_with(b"Received: from ") && header.ends_with(b"\r\n"),
            "node {id}: trace header {:?}",
            String::from_utf8_lossy(header)
        );
        assert_eq!(header.windows(2).filter(|w| w == b"\r\n").count(), 3, "one folded Received header only");
    }
}

fn uids_increase(messages: &[(u64, String)]) -> bool {
    messages.windows(2).all(|w| w[0].0 < w[1].0)
}

#[test]
fn smtp_conformance_with_smtplib_and_swaks() {
    const MAX_BYTES: usize = 1024 * 1024;
    let cluster = TestCluster::start(3, |c| c.smtp.max_message_bytes = MAX_BYTES);
    let (user1, user2) = ("user1@ministry.go.ke", "user2@health.go.ke");
    cluster.create_user_with_password(user1, "password-one");
    cluster.create_user_with_password(user2, "password-two");

    // smtplib against node 2's MX (and node 1's, for a resend) and node 3's submission port.
    let report = run_python(
        "smtp_client.py",
        &[
            "conformance",
            &cluster.smtp(2),
            &cluster.smtp(1),
            &cluster.submission(3),
            user1,
            user2,
            "password-one",
            &MAX_BYTES.to_string(),
        ],
    );
    let stored = report["stored"].as_array().unwrap();
    assert_eq!(stored.len(), 6, "{report}");

    // swaks: submission with STARTTLS and AUTH PLAIN; the MX refusing an unknown user.
    let swaks = Command::new("swaks")
        .args([
            "--server",
            &cluster.submission(1),
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            user2,
            "--auth-password",
            "password-two",
        ])
        .args(["--from", user2, "--to", user1, "--header", "Subject: via swaks", "--body", "sent with swaks"])
        .output()
        .expect("run swaks (scripts/setup installs it)");
    let transcript = String::from_utf8_lossy(&swaks.stdout);
    assert!(swaks.status.success() && transcript.contains("250 2.0.0 Ok: queued as"), "swaks:\n{transcript}");
    let refused = Command::new("swaks")
        .args(["--server", &cluster.smtp(1), "--from", "a@example.org", "--to", "ghost@ministry.go.ke"])
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success() && transcript.contains("550 5.1.1"), "swaks to an unknown user:\n{transcript}");

    // An operator adds a domain before any user in it exists: its unknown users get
    // 5.1.1 instead of the 5.7.1 of a foreign domain. (Asked on another node: answers are
    // cached per node for a few seconds.)
    let rcpt = |node: u64, address: &str| {
        let mut c = Raw::connect(&cluster.smtp(node));
        c.reply();
        c.command("EHLO probe");
        c.command("MAIL FROM:<a@example.org>");
        c.command(&format!("RCPT TO:<{address}>"))
    };
    assert!(rcpt(1, "someone@newdept.go.ke").starts_with("550 5.7.1"));
    let umsctl = Command::new(tests::binary("umsctl"))
        .args(["--node", &cluster.url(1, ""), "domain", "add", "NewDept.go.ke"])
        .env("UMS_TOKEN", &cluster.token)
        .output()
        .unwrap();
    assert!(umsctl.status.success(), "{}", String::from_utf8_lossy(&umsctl.stderr));
    assert!(rcpt(2, "someone@newdept.go.ke").starts_with("550 5.1.1"));

    let user1_messages = cluster.converged_messages(user1, Duration::from_secs(30));
    let user2_messages = cluster.converged_messages(user2, Duration::from_secs(30));
    // user1: lost-reply, two-recipients, eight-bit, swaks; user2: two-recipients, partly, over-tls, submitted.
    assert_eq!((user1_messages.len(), user2_messages.len()), (4, 4), "{user1_messages:?} {user2_messages:?}");
    assert!(uids_increase(&user1_messages) && uids_increase(&user2_messages));
    for entry in stored {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD.decode(entry["raw_b64"].as_str().unwrap()).unwrap();
        for to in entry["to"].as_array().unwrap() {
            assert_stored_once(&cluster, to.as_str().unwrap(), &raw);
        }
    }
}

/// SMTP smuggling (CVE-2023-51766 and kin): a bare `\n.\n` inside a message neither
/// ends it here nor, stored as CRLF, at the next MTA a relay hands it to; the forged
/// second message behind it is part of the first one's body.
#[test]
fn a_bare_line_feed_dot_smuggles_no_second_message() {
    let cluster = TestCluster::start(1, |_| {});
    let user = "smuggled@ministry.go.ke";
    cluster.create_user(user);
    let mut c = Raw::connect(&cluster.smtp(1));
    c.reply();
    c.command("EHLO attacker.example");
    assert!(c.command("MAIL FROM:<a@attacker.example>").starts_with("250"));
    assert!(c.command(&format!("RCPT TO:<{user}>")).starts_with("250"));
    assert!(c.command("DATA").starts_with("354"));
    c.send(b"Subject: harmless\r\n\r\nhello\n.\nMAIL FROM:<minister@ministry.go.ke>\r\n");
    c.send(format!("RCPT TO:<{user}>\r\nDATA\r\nFrom: minister@ministry.go.ke\r\n\r\nforged\r\n.\r\n").as_bytes());
    assert!(c.reply().starts_with("250 2.0.0"), "one message accepted");
    assert!(c.command("QUIT").starts_with("221"), "and nothing else answered in between");
    let bodies = cluster.local_bodies(1, user).expect("replica readable");
    assert_eq!(bodies.len(), 1, "one message stored");
    let text = String::from_utf8_lossy(&bodies[0].1).to_string();
    assert!(
        text.contains("hello\r\n.\r\nMAIL FROM:<minister@ministry.go.ke>\r\n") && text.contains("forged"),
        "{text}"
    );
    assert!(!text.replace("\r\n", "").contains('\n'), "no bare line feed is stored: {text:?}");
}

/// A raw SMTP connection for the abuse tests (no client library would send this).
struct Raw {
    reader: BufReader<TcpStream>,
}

impl Raw {
    fn connect(address: &str) -> Self {
        let stream = TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Self { reader: BufReader::new(stream) }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    /// One reply (all lines of a multi-line one); empty at end of stream.
    fn reply(&mut self) -> String {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                return text;
            }
            text.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return text;
            }
        }
    }

    fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    fn at_end(&mut self) -> bool {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).is_ok() && rest.is_empty()
    }
}

#[test]
fn bad_input_and_floods_get_protocol_errors_and_the_node_stays_up() {
    let cluster = TestCluster::start(1, |c| {
        c.smtp.command_timeout_secs = 2;
        c.smtp.connections.max_per_ip = 5;
        c.smtp.allow_insecure_auth = true;
        c.logins.max_failures_per_account = 3;
    });
    let user = "clerk@ministry.go.ke";
    cluster.create_user_with_password(user, "right-password");
    let mx = cluster.smtp(1);

    // An over-long command line is refused and skipped; the session goes on.
    let mut c = Raw::connect(&mx);
    assert!(c.reply().starts_with("220 "));
    c.send(format!("NOOP {}\r\n", "a".repeat(100_000)).as_bytes());
    assert!(c.reply().starts_with("500 5.5.6"));
    assert!(c.command("NOOP").starts_with("250"));

    // Garbage: errors, then the connection is closed after ten (the long line was one).
    let junk = [
        "\u{1}\u{2}\u{3}",
        "HELLO there",
        "MAIL FROM:<>",
        "RCPT TO:<a@b>",
        "DATA",
        "BDAT 10",
        "AUTH PLAIN",
        "\u{7f}",
        "x",
    ];
    let replies: Vec<String> = junk.iter().map(|line| c.command(line)).collect();
    assert!(replies[..8].iter().all(|r| r.starts_with('5')), "{replies:?}");
    assert!(replies[8].starts_with("421 4.7.0"), "{replies:?}");
    assert!(c.at_end());

    // A client that stalls is disconnected with 421 4.4.2.
    let mut stalled = Raw::connect(&mx);
    stalled.reply();
    stalled.command("EHLO slow.example");
    std::thread::sleep(Duration::from_secs(3));
    assert!(stalled.reply().starts_with("421 4.4.2"));
    assert!(stalled.at_end());

    // A flood from one IP: 5 connections are served, the 6th is told to come back later.
    let mut held: Vec<Raw> = (0..5).map(|_| Raw::connect(&mx)).collect();
    for c in &mut held {
        assert!(c.reply().starts_with("220 "));
    }
    let mut extra = Raw::connect(&mx);
    assert!(extra.reply().starts_with("421 4.7.0"), "the 6th connection from one IP");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let mut again = Raw::connect(&mx);
    assert!(again.reply().starts_with("220 "), "slots are freed when connections close");

    // Password guessing: after 3 failures the account is throttled, even with the right password.
    use base64::Engine as _;
    let plain = |password: &str| base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    for _ in 0..3 {
        let mut c = Raw::connect(&cluster.submission(1));
        c.reply();
        c.command("EHLO guesser");
        assert!(c.command(&format!("AUTH PLAIN {}", plain("guess"))).starts_with("535 5.7.8"));
    }
    let mut c = Raw::connect(&cluster.submission(1));
    c.reply();
    c.command("EHLO guesser");
    assert!(c.command(&format!("AUTH PLAIN {}", plain("right-password"))).starts_with("454 4.7.0"));

    // The node is fine and still takes mail.
    let mut c = Raw::connect(&mx);
    c.reply();
    c.command("EHLO ok.example");
    assert!(c.command("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.command(&format!("RCPT TO:<{user}>")).starts_with("250"));
    assert!(c.command("DATA").starts_with("354"));
    assert!(c.command("Subject: still here\r\n\r\nhello\r\n.").starts_with("250 2.0.0"));
    assert_eq!(cluster.converged_messages(user, Duration::from_secs(10)).len(), 1);
}

#[test]
fn mail_acknowledged_with_250_survives_kill_9_of_a_shard_leader() {
    let mut cluster = TestCluster::start(3, |_| {});
    let users: Vec<String> = (1..=6).map(|n| format!("staff{n}@failover.go.ke")).collect();
    for user in &users {
        cluster.create_user_with_password(user, "test-password");
    }
    let nodes: Vec<String> = (1..=3).map(|id| cluster.smtp(id)).collect();
    let client = Command::new(PYTHON)
        .arg(python_script("smtp_client.py"))
        .args(["send-many", "14", &users.join(",")])
        .args(&nodes)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    std::thread::sleep(Duration::from_secs(4));
    let victim = cluster.busiest_leader(1);
    cluster.kill(victim);
    eprintln!("killed node {victim}");
    std::thread::sleep(Duration::from_secs(3));
    cluster.restart(victim);
    let report = json_printed(&client.wait_with_output().unwrap());

    let refs = |key: &str| -> Vec<(String, String)> {
        report[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_str().unwrap().to_string()))
            .collect()
    };
    let (acked, unacked) = (refs("acked"), refs("unacked"));
    eprintln!("{} messages got 250, {} did not", acked.len(), unacked.len());
    assert!(acked.len() >= 100, "too few acknowledged messages ({}) for a meaningful check", acked.len());
    for user in &users {
        let messages = cluster.converged_messages(user, Duration::from_secs(30));
        assert!(uids_increase(&messages), "{user}: UIDs not unique and increasing");
        let bodies = cluster.local_bodies(1, user).unwrap();
        let mut copies: HashMap<String, usize> = HashMap::new();
        for (_, body) in &bodies {
            let text = String::from_utf8_lossy(body);
            let reference =
                text.lines().find_map(|l| l.strip_prefix("X-UMS-Test-Ref: ")).expect("test reference header");
            *copies.entry(reference.to_string()).or_default() += 1;
        }
        for (_, reference) in acked.iter().filter(|(u, _)| u == user) {
            assert_eq!(
                copies.get(reference),
                Some(&1),
                "{user}: acknowledged {reference} stored {:?} times",
                copies.get(reference)
            );
        }
        for (_, reference) in unacked.iter().filter(|(u, _)| u == user) {
            assert!(
                copies.get(reference).copied().unwrap_or(0) <= 1,
                "{user}: unacknowledged {reference} stored twice"
            );
        }
        assert!(copies.values().all(|&n| n == 1), "{user}: a message stored twice: {copies:?}");

        // What a mail client sees over IMAP, through another node: every acknowledged
        // message once, UIDs unique and increasing.
        let listing = run_python("imap_client.py", &["refs", &cluster.imap(2), user, "test-password"]);
        let listing: Vec<(u64, String)> = listing
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap(), p[1].as_str().unwrap().to_string()))
            .collect();
        assert!(listing.windows(2).all(|w| w[0].0 < w[1].0), "{user}: IMAP UIDs not increasing");
        for (_, reference) in acked.iter().filter(|(u, _)| u == user) {
            assert_eq!(listing.iter().filter(|(_, r)| r == reference).count(), 1, "{user}: {reference} over IMAP");
        }
    }
}

/// An aiosmtpd server on a free port recording what it receives (tests/python/smtp_sink.py).
struct Sink {
    child: std::process::Child,
    file: tempfile::NamedTempFile,
    address: String,
}

impl Sink {
    fn start(delay_secs: f64) -> Self {
        Self::start_with(delay_secs, None)
    }

    /// With a certificate and key: STARTTLS offered and required before any mail.
    fn start_with(delay_secs: f64, tls: Option<(&std::path::Path, &std::path::Path)>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut command = Command::new(PYTHON);
        command.arg(python_script("smtp_sink.py")).args([
            &port.to_string(),
            file.path().to_str().unwrap(),
            &delay_secs.to_string(),
        ]);
        if let Some((cert, key)) = tls {
            command.arg(cert).arg(key);
        }
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run the aiosmtpd sink (scripts/setup installs python3-aiosmtpd)");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
        assert_eq!(ready.trim(), "ready", "sink did not start");
        Self { child, file, address: format!("127.0.0.1:{port}") }
    }

    /// Whether each message received so far came over TLS.
    fn encrypted(&self) -> Vec<bool> {
        let text = std::fs::read_to_string(self.file.path()).unwrap_or_default();
        text.lines().map(|line| serde_json::from_str::<Value>(line).unwrap()["tls"] == true).collect()
    }

    /// `(unix time, recipients, raw)` of every message received so far.
    fn received(&self) -> Vec<(f64, Vec<String>, Vec<u8>)> {
        use base64::Engine as _;
        std::fs::read_to_string(self.file.path())
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let record: Value = serde_json::from_str(line).unwrap();
                let rcpts =
                    record["rcpt_tos"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
                let raw =
                    base64::engine::general_purpose::STANDARD.decode(record["data_b64"].as_str().unwrap()).unwrap();
                (record["at"].as_f64().unwrap(), rcpts, raw)
            })
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn test_ref(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.lines().find_map(|l| l.strip_prefix("X-UMS-Test-Ref: ")).unwrap_or("?").to_string()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn submitted_mail_reaches_the_outside_once_across_a_leader_kill_and_refusals_bounce() {
    // A slow receiving server keeps the queue busy while its leader is killed.
    let sink = Sink::start(0.15);
    let relay = sink.address.clone();
    let mut cluster = TestCluster::start(3, move |c| {
        c.smtp.relay_host = Some(relay.clone());
        // This sink speaks no TLS (the next test covers the default, encrypted, policy).
        c.smtp.relay_tls.smart_host = gateways::smtp::relay_tls::TlsPolicy::None;
        c.outbound.retry_base_ms = 100;
        c.outbound.max_attempts = 3;
    });
    let sender = "sender@ministry.go.ke";
    cluster.create_user_with_password(sender, "sender-password");
    let recipients: Vec<String> = (0..40).map(|n| format!("citizen{n}@example.org")).collect();
    let report = run_python(
        "smtp_client.py",
        &["submit", &cluster.submission(1), sender, "sender-password", &recipients.join(",")],
    );
    assert_eq!(report["acked"].as_array().unwrap().len(), recipients.len());

    // Kill the sender shard's leader while its queue actor is relaying.
    let shard = node::placement::shard_for_user(sender, 8);
    while sink.received().len() < 5 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let leader = cluster.cluster_status(1)["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["shard"] == shard)
        .and_then(|s| s["leader"].as_u64())
        .unwrap();
    let killed_at = unix_now();
    cluster.kill(leader);
    eprintln!("killed node {leader}, the leader of shard {shard}, after {} relayed", sink.received().len());
    std::thread::sleep(Duration::from_secs(2));
    cluster.restart(leader);

    // Every message reaches the outside world; a repeat is only possible for the one the
    // old leader had handed over but not yet recorded (the SMTP at-least-once window).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let received = loop {
        let received = sink.received();
        let refs: std::collections::HashSet<String> = received.iter().map(|(_, _, raw)| test_ref(raw)).collect();
        if refs.len() == recipients.len() || std::time::Instant::now() > deadline {
            break received;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut first_seen: HashMap<String, f64> = HashMap::new();
    let mut repeats = Vec::new();
    for (at, rcpts, raw) in &received {
        let reference = test_ref(raw);
        assert_eq!(rcpts.len(), 1);
        assert!(raw.starts_with(b"Received: from "), "relayed as accepted, with our trace header");
        if let Some(&first) = first_seen.get(&reference) {
            repeats.push((reference, first));
        } else {
            first_seen.insert(reference, *at);
        }
    }
    assert_eq!(first_seen.len(), recipients.len(), "not every submitted message was relayed");
    assert!(repeats.len() <= 1, "more than one message relayed twice: {repeats:?}");
    for (reference, first) in &repeats {
        assert!(
            // The sink stamps a message when it has read it, which on a busy machine can be
            // a moment after the old leader, killed, had sent its last bytes.
            *first <= killed_at + 1.0 && *first > killed_at - 2.0,
            "{reference} repeated outside the failover window"
        );
    }
    eprintln!("{} relayed, {} repeated in the failover window", first_seen.len(), repeats.len());

    // A recipient the outside server refuses: the item fails and the sender gets a bounce.
    run_python(
        "smtp_client.py",
        &["submit", &cluster.submission(2), sender, "sender-password", "refuse-me@example.org"],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let bounces: Vec<_> = cluster
            .local_bodies(1, sender)
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, body)| String::from_utf8_lossy(body).contains("Undelivered Mail Returned to Sender"))
            .collect();
        if let [(_, body)] = bounces.as_slice() {
            let text = String::from_utf8_lossy(body);
            assert!(text.contains("refuse-me@example.org") && text.contains("550"), "{text}");
            break;
        }
        assert!(bounces.len() <= 1, "bounced twice");
        assert!(std::time::Instant::now() < deadline, "no bounce for the refused message");
        std::thread::sleep(Duration::from_millis(200));
    }
    let outbound =
        tests::get_json(&cluster.url(1, &format!("/api/v1/users/{sender}/outbound")), &cluster.token).unwrap();
    let statuses: Vec<&str> =
        outbound["outbound"].as_array().unwrap().iter().map(|i| i["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == "delivered").count(), recipients.len(), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == "failed").count(), 1, "{statuses:?}");
}

/// The outbound items of `sender` as the API lists them.
fn outbound_of(cluster: &TestCluster, sender: &str) -> Vec<Value> {
    let url = cluster.url(1, &format!("/api/v1/users/{sender}/outbound"));
    tests::get_json(&url, &cluster.token).unwrap()["outbound"].as_array().unwrap().clone()
}

/// The smart host gets mail over STARTTLS with a certificate the node trusts, or none: a
/// relay that does not offer TLS is not sent a message in clear text (the default
/// policy), it is retried instead.
#[test]
fn relayed_mail_reaches_the_smart_host_encrypted_or_not_at_all() {
    let certs = tempfile::tempdir().unwrap();
    node::dev::ensure_dev_certificate(certs.path()).unwrap();
    let (cert, key) = node::dev::dev_tls_files(certs.path());
    let (sender, message) = ("relayer@ministry.go.ke", "citizen@example.org");
    let submit = |cluster: &TestCluster| {
        cluster.create_user_with_password(sender, "relayer-password");
        let report =
            run_python("smtp_client.py", &["submit", &cluster.submission(1), sender, "relayer-password", message]);
        assert_eq!(report["acked"].as_array().unwrap().len(), 1, "{report}");
    };

    let plain_sink = Sink::start(0.0);
    let relay = plain_sink.address.clone();
    let cluster = TestCluster::start(1, move |c| {
        c.smtp.relay_host = Some(relay.clone());
        c.outbound.retry_base_ms = 200;
    });
    submit(&cluster);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let attempted = loop {
        let items = outbound_of(&cluster, sender);
        if items.iter().any(|i| i["attempts"].as_u64().unwrap_or(0) >= 2) || std::time::Instant::now() > deadline {
            break items;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(attempted.iter().all(|i| i["status"] != "delivered"), "{attempted:?}");
    assert!(attempted.iter().any(|i| i["attempts"].as_u64().unwrap_or(0) >= 2), "never attempted: {attempted:?}");
    assert!(plain_sink.received().is_empty(), "a message went to the smart host in clear text");
    drop(cluster);

    let tls_sink = Sink::start_with(0.0, Some((&cert, &key)));
    let (relay, ca) = (tls_sink.address.clone(), cert.clone());
    let cluster = TestCluster::start(1, move |c| {
        c.smtp.relay_host = Some(relay.clone());
        c.smtp.relay_tls.ca_file = Some(ca.clone());
    });
    submit(&cluster);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tls_sink.received().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(tls_sink.encrypted(), [true], "not relayed once over TLS");
    let items = outbound_of(&cluster, sender);
    assert_eq!(items[0]["status"], "delivered", "{items:?}");
}

/// A domain's DKIM key made with umsctl signs its users' outgoing mail; dkimpy, as a
/// receiver, verifies the signature with the record umsctl printed (and refuses it once
/// the body is changed).
#[test]
fn outgoing_mail_is_dkim_signed_by_its_domain() {
    let sink = Sink::start(0.0);
    let relay = sink.address.clone();
    let cluster = TestCluster::start(1, move |c| {
        c.smtp.relay_host = Some(relay.clone());
        c.smtp.relay_tls.smart_host = gateways::smtp::relay_tls::TlsPolicy::None;
    });
    let sender = "signer@ministry.go.ke";
    cluster.create_user_with_password(sender, "signer-password");
    let output = Command::new(tests::binary("umsctl"))
        .args(["--node", &cluster.nodes[0].config.http_listen.to_string(), "--json"])
        .args(["domain", "dkim-keygen", "ministry.go.ke", "--selector", "t2026"])
        .env("UMS_TOKEN", &cluster.token)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let key: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(key["record_name"], "t2026._domainkey.ministry.go.ke", "{key}");
    assert!(key["dns_record"].as_str().unwrap().starts_with("v=DKIM1; k=rsa; p="), "{key}");
    assert!(key.get("private_key_pem").is_none(), "the private key left the cluster");
    // The signer picks the key up within a second.
    std::thread::sleep(Duration::from_millis(1500));
    let report = run_python(
        "smtp_client.py",
        &["submit", &cluster.submission(1), sender, "signer-password", "reader@example.org"],
    );
    assert_eq!(report["acked"].as_array().unwrap().len(), 1, "{report}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sink.received().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let received = sink.received();
    let raw = &received.first().expect("relayed").2;
    assert!(raw.starts_with(b"DKIM-Signature:"), "{}", String::from_utf8_lossy(raw));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), raw).unwrap();
    let record_name = key["record_name"].as_str().unwrap();
    let record = key["dns_record"].as_str().unwrap();
    let verdict = run_python("dkim_verify.py", &[record_name, record, file.path().to_str().unwrap()]);
    assert_eq!(verdict["verified"], true, "{verdict}: {}", String::from_utf8_lossy(raw));
    assert_eq!(verdict["tampered_verified"], false, "{verdict}");
}

/// SMTPS (RFC 8314): submission with TLS from the first byte, with smtplib's SMTP_SSL.
#[test]
fn smtps_takes_submissions_over_implicit_tls() {
    let cluster = TestCluster::start(1, |_| {});
    let (sender, rcpt) = ("implicit@ministry.go.ke", "reader@ministry.go.ke");
    cluster.create_user_with_password(sender, "implicit-password");
    cluster.create_user(rcpt);
    let (host, port) = cluster.smtps(1).rsplit_once(':').map(|(h, p)| (h.to_string(), p.to_string())).unwrap();
    let script = format!(
        r#"
import smtplib, ssl
context = ssl.create_default_context(); context.check_hostname = False; context.verify_mode = ssl.CERT_NONE
with smtplib.SMTP_SSL("{host}", {port}, context=context, timeout=30) as s:
    s.ehlo("laptop")
    assert not s.has_extn("starttls"), "no STARTTLS inside TLS"
    assert "PLAIN" in s.esmtp_features["auth"]
    s.login("{sender}", "implicit-password")
    s.sendmail("{sender}", ["{rcpt}"], b"From: {sender}\r\nTo: {rcpt}\r\nSubject: over smtps\r\n\r\nhello\r\n")
print("ok")
"#
    );
    let output = Command::new("python3").arg("-c").arg(&script).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stored = cluster.converged_messages(rcpt, Duration::from_secs(10));
    assert_eq!(stored.len(), 1);
    // Plain text on the SMTPS port is not SMTP: no greeting comes back.
    let mut plain = Raw::connect(&cluster.smtps(1));
    plain.send(b"EHLO plain\r\n");
    assert!(!plain.reply().starts_with("220"), "SMTPS greeted a plain-text client");
}
