//! The IMAP gateway with a real client (Python imaplib) against real `umsd` processes:
//! a mail client's day (STARTTLS, folders, APPEND, flags, COPY/MOVE, EXPUNGE, SEARCH,
//! IDLE seeing new mail) and the same UIDs from every node; IDLE told of new mail and
//! flag changes without polling.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tests::{TestCluster, run_python};

#[test]
fn a_mail_client_works_against_any_node_with_the_same_uids() {
    let cluster = TestCluster::start(3, |_| {});
    let user = "reader@ministry.go.ke";
    cluster.create_user_with_password(user, "reader-password");
    for n in 0..3 {
        let message = format!(
            "From: citizen{n}@example.org\r\nSubject: letter {n}\r\nX-UMS-Test-Ref: letter-{n}\r\n\r\nDear sir, {n}.\r\n"
        );
        cluster.deliver_email(2, user, &message);
    }
    cluster.converged_messages(user, Duration::from_secs(10));

    // The same mailbox through every node: same UIDs, same UIDVALIDITY.
    let listings: Vec<Value> =
        (1..=3).map(|id| run_python("imap_client.py", &["refs", &cluster.imap(id), user, "reader-password"])).collect();
    assert_eq!(listings[0].as_array().unwrap().len(), 3, "{}", listings[0]);
    assert!(listings.windows(2).all(|w| w[0] == w[1]), "{listings:?}");

    let sessions = run_python("imap_client.py", &["two-sessions", &cluster.imap(1), user, "reader-password"]);
    assert_eq!(sessions["ok"], true);
    // The two-session check expunged letter 0; deliver it again for the client's day.
    let message = "From: citizen0@example.org\r\nSubject: letter 0\r\nX-UMS-Test-Ref: letter-0\r\n\r\nDear sir, 0.\r\n";
    cluster.deliver_email(2, user, message);

    let seen =
        run_python("imap_client.py", &["conformance", &cluster.imap(3), &cluster.smtp(1), user, "reader-password"]);
    assert_eq!(seen["inbox_exists"], 3, "{seen}");
    assert_eq!(seen["idle_saw_new_mail"], true);
}

/// IDLE is told of changes as its node applies them: with polling slowed to ten
/// minutes, new mail and another session's flag change still reach an idling client
/// within seconds.
#[test]
fn idle_hears_new_mail_and_flag_changes_without_polling() {
    let cluster = TestCluster::start(3, |config| config.imap.idle_poll_ms = 600_000);
    let user = "idler@ministry.go.ke";
    cluster.create_user_with_password(user, "idler-password");
    let seen = run_python(
        "imap_client.py",
        &["idle", &cluster.imap(2), &cluster.imap(3), &cluster.smtp(1), user, "idler-password"],
    );
    assert_eq!(seen, serde_json::json!({ "exists": true, "flags": true }));
}

/// The details strict clients rely on, with imaplib against a real node: \Recent, keyword
/// announcements, SEARCH by the Date header and by header field, sections inside attached
/// messages, SPECIAL-USE mailboxes, ID, IMAPS, COMPRESS=DEFLATE.
#[test]
fn imaplib_sees_recent_keywords_sent_dates_nested_sections_and_special_use() {
    let cluster = TestCluster::start(3, |_| {});
    let user = "strict@ministry.go.ke";
    cluster.create_user_with_password(user, "strict-password");
    let seen = run_python(
        "imap_client.py",
        &["details", &cluster.imap(2), &cluster.smtp(3), user, "strict-password", &cluster.imaps(1)],
    );
    assert_eq!(seen["ok"], true);
    let seen = run_python("imap_client.py", &["compress", &cluster.imaps(3), user, "strict-password"]);
    assert_eq!(seen["ok"], true);
}

#[test]
fn mbsync_mirrors_a_mailbox_into_a_maildir() {
    let cluster = TestCluster::start(3, |_| {});
    let user = "archivist@ministry.go.ke";
    cluster.create_user_with_password(user, "archive-password");
    let mut sent = Vec::new();
    for n in 0..5 {
        let message = format!("From: citizen{n}@example.org\r\nSubject: request {n}\r\n\r\nPlease reply, {n}.\r\n");
        cluster.deliver_email(1, user, &message);
        sent.push(message);
    }
    let dir = tempfile::tempdir().unwrap();
    let (host, port) = cluster.imap(2).rsplit_once(':').map(|(h, p)| (h.to_string(), p.to_string())).unwrap();
    let (cert, _) = node::dev::dev_tls_files(cluster.data_dir());
    let maildir = dir.path().join("mail");
    std::fs::create_dir_all(&maildir).unwrap();
    // isync 1.4: the test cluster's self-signed certificate is trusted as a listed peer certificate.
    let config = format!(
        "IMAPAccount ums\nHost {host}\nPort {port}\nUser {user}\nPass archive-password\nSSLType STARTTLS\nCertificateFile {cert}\nAuthMechs LOGIN\n\n\
         IMAPStore remote\nAccount ums\n\n\
         MaildirStore local\nPath {maildir}/\nInbox {maildir}/INBOX\nSubFolders Verbatim\n\n\
         Channel ums\nFar :remote:\nNear :local:\nPatterns *\nCreate Near\nSync Pull\nSyncState *\n",
        cert = cert.display(),
        maildir = maildir.display(),
    );
    let config_path = dir.path().join("mbsyncrc");
    std::fs::write(&config_path, config).unwrap();
    let run = || {
        Command::new("mbsync")
            .arg("-c")
            .arg(&config_path)
            .arg("-a")
            .output()
            .expect("run mbsync (scripts/setup installs isync)")
    };
    let output = run();
    assert!(
        output.status.success(),
        "mbsync failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let files = |dir: &std::path::Path| -> Vec<Vec<u8>> {
        ["new", "cur"]
            .iter()
            .flat_map(|sub| std::fs::read_dir(dir.join(sub)).into_iter().flatten())
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect()
    };
    let mirrored = files(&maildir.join("INBOX"));
    assert_eq!(mirrored.len(), sent.len(), "every message mirrored once");
    // Maildir files use the local line ending (LF), and mbsync adds its X-TUID tracking
    // header; otherwise the bytes are the same.
    let without_tuid = |m: &Vec<u8>| {
        String::from_utf8_lossy(m)
            .lines()
            .filter(|l| !l.starts_with("X-TUID: "))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    let mirrored: Vec<String> = mirrored.iter().map(without_tuid).collect();
    for message in &sent {
        let local = message.replace("\r\n", "\n");
        assert_eq!(mirrored.iter().filter(|m| **m == local).count(), 1, "exact copy of {message:?} in {mirrored:?}");
    }
    // A second run finds nothing new, and a new message arrives on the next one.
    cluster.deliver_email(3, user, "Subject: late\r\n\r\nlate\r\n");
    let output = run();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(files(&maildir.join("INBOX")).len(), sent.len() + 1);
}

#[test]
fn a_client_whose_node_dies_reconnects_elsewhere_and_sees_everything_acknowledged() {
    let mut cluster = TestCluster::start(3, |c| c.logins.max_failures_per_account = 3);
    let user = "clerk@ministry.go.ke";
    cluster.create_user_with_password(user, "clerk-password");
    let deliver = |cluster: &TestCluster, node: u64, n: u32| {
        let message = format!("Subject: memo {n}\r\nX-UMS-Test-Ref: memo-{n}\r\n\r\nmemo {n}\r\n");
        cluster.deliver_email(node, user, &message);
    };
    for n in 0..5 {
        deliver(&cluster, 2, n);
    }
    let before = run_python("imap_client.py", &["refs", &cluster.imap(1), user, "clerk-password"]);
    assert_eq!(before.as_array().unwrap().len(), 5, "{before}");

    // The node the client used dies; the client reconnects to another one.
    cluster.kill(1);
    for n in 5..8 {
        deliver(&cluster, 2, n);
    }
    let after = run_python("imap_client.py", &["refs", &cluster.imap(3), user, "clerk-password"]);
    let after = after.as_array().unwrap();
    assert_eq!(after.len(), 8, "{after:?}");
    assert_eq!(&after[..5], before.as_array().unwrap().as_slice(), "the same UIDs after the failover");
    assert!(after.windows(2).all(|w| w[0][0].as_u64() < w[1][0].as_u64()), "UIDs keep increasing: {after:?}");

    // Password guessing: after 3 failures for the account, even the right password is refused for a while.
    let answers = run_python("imap_client.py", &["guess", &cluster.imap(2), user, "clerk-password", "3"]);
    let answers: Vec<&str> = answers.as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(answers[..3].iter().all(|a| a.contains("AUTHENTICATIONFAILED")), "{answers:?}");
    assert!(answers[3].contains("Too many failed logins"), "{answers:?}");
}

/// A ministry's office reaches us from one NAT address: hundreds of connections at once
/// from it are all served, and its staff's logins work; an address that keeps sending
/// garbage is refused new connections once it passes its offences, while the
/// connections it already holds (and other protocols' limits) are untouched.
#[test]
fn an_office_behind_one_address_gets_in_and_a_misbehaving_address_is_refused() {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;

    let cluster = TestCluster::start(1, |config| {
        config.imap.allow_insecure_auth = true;
        config.imap.connections.max_offences_per_ip = 30;
    });
    let user = "clerk@ministry.go.ke";
    cluster.create_user_with_password(user, "clerk-password");
    let address = cluster.imap(1);
    let greeting = |stream: &TcpStream| {
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).expect("a greeting");
        line
    };
    let office: Vec<TcpStream> = (0..400)
        .map(|_| {
            let stream = TcpStream::connect(&address).expect("connect");
            stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            stream
        })
        .collect();
    for stream in &office {
        assert!(greeting(stream).starts_with("* OK"), "every connection of the office is served");
    }
    for (n, mut stream) in office.iter().take(20).enumerate() {
        stream.write_all(format!("a{n} LOGIN {user} clerk-password\r\n").as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while !line.starts_with(&format!("a{n} ")) {
            line.clear();
            reader.read_line(&mut line).unwrap();
        }
        assert!(line.starts_with(&format!("a{n} OK")), "{line}");
    }

    // Clients of that address send garbage (15 bad commands each, below the per-connection
    // limit): 30 offences in all, then its new connections are refused.
    let garbage = |round: &str| {
        let mut rogue = TcpStream::connect(&address).unwrap();
        rogue.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        assert!(greeting(&rogue).starts_with("* OK"));
        for n in 0..15 {
            rogue.write_all(format!("{round}{n} FROBNICATE\r\n").as_bytes()).unwrap();
        }
        let mut reader = BufReader::new(rogue);
        for _ in 0..15 {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.contains(" BAD "), "{line}");
        }
    };
    garbage("x");
    assert!(greeting(&TcpStream::connect(&address).unwrap()).starts_with("* OK"), "15 offences are tolerated");
    garbage("y");
    let refused = greeting(&TcpStream::connect(&address).unwrap());
    assert!(refused.starts_with("* BYE Too many failed commands or logins"), "{refused}");
    // What the office already holds keeps working.
    let mut held = &office[0];
    held.write_all(b"n1 NOOP\r\n").unwrap();
    let mut line = String::new();
    BufReader::new(held).read_line(&mut line).unwrap();
    assert!(line.starts_with("n1 OK"), "{line}");
}

/// A user's storage quota holds across protocols: SMTP refuses what does not fit (552) and
/// recipients of a full mailbox (452), IMAP refuses APPEND and COPY ([OVERQUOTA]) and
/// reports the usage; deleting mail makes room.
#[test]
fn a_mailbox_over_quota_refuses_mail_until_room_is_made() {
    let cluster = TestCluster::start(3, |_| {});
    let user = "full@ministry.go.ke";
    let body = serde_json::json!({ "email": user, "password": "full-password", "quota_bytes": 8192 });
    let created = devkit::http::post_with_retry(&cluster.url(1, "/api/v1/users"), &cluster.token, &body)
        .expect("create the user");
    assert_eq!(created["quota_bytes"], 8192);
    let seen = run_python("imap_client.py", &["quota", &cluster.imap(2), &cluster.smtp(3), user, "full-password"]);
    assert_eq!(seen["ok"], true);
    // The operator lowers the quota below the usage: the mailbox is full, recipients wait.
    let body = serde_json::json!({ "email": user, "quota_bytes": 1024 });
    devkit::http::post_with_retry(&cluster.url(2, "/api/v1/users"), &cluster.token, &body).expect("lower the quota");
    let mut smtp = std::net::TcpStream::connect(cluster.smtp(1)).unwrap();
    use std::io::{BufRead, BufReader, Write};
    let mut reader = BufReader::new(smtp.try_clone().unwrap());
    let mut reply = || {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        line
    };
    reply();
    smtp.write_all(b"HELO c\r\nMAIL FROM:<citizen@example.org>\r\n").unwrap();
    reply();
    reply();
    smtp.write_all(format!("RCPT TO:<{user}>\r\n").as_bytes()).unwrap();
    let refused = reply();
    assert!(refused.starts_with("452 4.2.2"), "{refused}");
}

/// QRESYNC across nodes: a client that cached the INBOX through one node, and comes back
/// through another after expunges and flag changes made through a third, is told exactly
/// what changed (VANISHED (EARLIER), FETCH of the changed messages only).
#[test]
fn qresync_tells_a_returning_client_what_changed_elsewhere() {
    let cluster = TestCluster::start(3, |_| {});
    let user = "mobile@ministry.go.ke";
    cluster.create_user_with_password(user, "mobile-password");
    for n in 0..5 {
        cluster.deliver_email(n % 3 + 1, user, &format!("Subject: letter {n}\r\n\r\nHello {n}.\r\n"));
    }
    cluster.converged_messages(user, Duration::from_secs(10));
    let seen = run_python(
        "imap_client.py",
        &["qresync", &cluster.imap(1), &cluster.imap(2), &cluster.imap(3), user, "mobile-password"],
    );
    assert_eq!(seen["ok"], true);
}
