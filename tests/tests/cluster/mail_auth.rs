//! Mail authentication on the MX against real `umsd` processes, with a local DNS server
//! (`tests/python/dns_server.py`) publishing the SPF, DKIM and DMARC records of test
//! domains: SPF pass and fail, DKIM pass and fail (signed by our own signer with the key
//! in DNS), DMARC reject (550, nothing stored), quarantine (Junk) and none (INBOX, tagged),
//! an operator's override, a local domain in `From:` from outside refused unless signed
//! by that domain, forged `Authentication-Results` headers removed, and every stored
//! message carrying exactly one `Authentication-Results` header of ours.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gateways::smtp::authentication::signing::{DkimAlgorithm, DkimKey, DomainSigner, generate_key, record_name};
use gateways::smtp::authentication::{MailAuthSettings, PolicyOverride};
use serde_json::json;
use tests::{PYTHON, TestCluster, python_script};

/// `dns_server.py` serving a zone file the test wrote; killed when dropped.
struct DnsServer {
    child: Child,
    address: SocketAddr,
    _zone: tempfile::NamedTempFile,
}

impl DnsServer {
    fn start(zone: &serde_json::Value) -> Self {
        let mut file = tempfile::NamedTempFile::new().expect("zone file");
        file.write_all(zone.to_string().as_bytes()).expect("write zone");
        let mut child = Command::new(PYTHON)
            .arg(python_script("dns_server.py"))
            .arg(file.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run python3 (scripts/setup installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("the server's first line");
        let address = line.trim().strip_prefix("listening ").and_then(|a| a.parse().ok());
        let address = address.unwrap_or_else(|| panic!("dns_server.py did not start: {line:?}"));
        Self { child, address, _zone: file }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One SMTP transaction over a plain connection; the reply to the final dot (or the
/// first refusal before it).
fn send(mx: &str, helo: &str, mail_from: &str, rcpt: &str, message: &[u8]) -> String {
    let stream = TcpStream::connect(mx).expect("connect to the MX");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reader = BufReader::new(stream);
    let reply = |reader: &mut BufReader<TcpStream>| {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return text;
            }
            text.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return text;
            }
        }
    };
    let command = |reader: &mut BufReader<TcpStream>, line: &[u8]| {
        reader.get_mut().write_all(line).expect("write");
        reply(reader)
    };
    assert!(reply(&mut reader).starts_with("220"));
    assert!(command(&mut reader, format!("EHLO {helo}\r\n").as_bytes()).starts_with("250"));
    let steps = [format!("MAIL FROM:<{mail_from}>\r\n"), format!("RCPT TO:<{rcpt}>\r\n"), "DATA\r\n".to_string()];
    for step in steps {
        let answer = command(&mut reader, step.as_bytes());
        if !answer.starts_with('2') && !answer.starts_with('3') {
            return answer;
        }
    }
    let mut data = Vec::new();
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    data.extend_from_slice(b".\r\n");
    let answer = command(&mut reader, &data);
    command(&mut reader, b"QUIT\r\n");
    answer
}

/// The raw messages in `mailbox` of `email` on node 1.
fn stored(cluster: &TestCluster, email: &str, mailbox: &str) -> Vec<String> {
    use base64::Engine as _;
    let url = cluster.url(1, &format!("/api/v1/users/{email}/messages?mailbox={mailbox}&bodies=true&limit=1000"));
    let listed = tests::get_json(&url, &cluster.token).unwrap_or_else(|e| panic!("{mailbox} of {email}: {e}"));
    let decode = |m: &serde_json::Value| {
        let raw = base64::engine::general_purpose::STANDARD.decode(m["body_base64"].as_str().unwrap_or("")).unwrap();
        String::from_utf8_lossy(&raw).into_owned()
    };
    listed["messages"].as_array().expect("messages").iter().map(decode).collect()
}

/// The unfolded `Authentication-Results` fields of a stored message's header section.
fn results_fields(message: &str) -> Vec<String> {
    let header = message.split("\r\n\r\n").next().unwrap_or_default();
    let mut fields: Vec<String> = Vec::new();
    for line in header.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            fields.push(line.to_string());
        }
    }
    fields.retain(|f| f.to_ascii_lowercase().starts_with("authentication-results:"));
    fields
}

fn message(from: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: alice@ministry.go.ke\r\nSubject: {subject}\r\nDate: Mon, 1 Jun 2026 10:00:00 +0300\r\nMessage-ID: <{subject}@test>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

fn signed(signer: &DomainSigner, message: &[u8]) -> Vec<u8> {
    [signer.sign(message).expect("sign").as_bytes(), message].concat()
}

#[test]
fn mail_auth_spf_dkim_dmarc_decide_with_a_local_dns_server() {
    let signed_key = generate_key(DkimAlgorithm::Rsa2048).unwrap();
    let ministry_key = generate_key(DkimAlgorithm::Ed25519).unwrap();
    let everywhere = "v=spf1 ip4:127.0.0.0/8 -all";
    let nowhere = "v=spf1 ip4:192.0.2.0/24 -all";
    let txt = |value: &str| json!({ "TXT": [value] });
    let zone = json!({
        "spf-pass.example": txt(everywhere),
        "spf-fail.example": txt(nowhere),
        "signed.example": txt(nowhere),
        "_dmarc.signed.example": txt("v=DMARC1; p=reject"),
        record_name("s1", "signed.example"): txt(&signed_key.dns_record),
        "none.example": txt(nowhere),
        "_dmarc.none.example": txt("v=DMARC1; p=none"),
        record_name("s1", "none.example"): txt(&signed_key.dns_record),
        "reject.example": txt(nowhere),
        "_dmarc.reject.example": txt("v=DMARC1; p=reject"),
        "quarantine.example": txt(nowhere),
        "_dmarc.quarantine.example": txt("v=DMARC1; p=quarantine"),
        "partner.example": txt(nowhere),
        "_dmarc.partner.example": txt("v=DMARC1; p=reject"),
        record_name("news", "ministry.go.ke"): txt(&ministry_key.dns_record),
    });
    let dns = DnsServer::start(&zone);
    let cluster = TestCluster::start(1, |config| {
        let policy_overrides = BTreeMap::from([("partner.example".to_string(), PolicyOverride::Tag)]);
        config.smtp.mail_auth = MailAuthSettings { policy_overrides, ..MailAuthSettings::with_nameserver(dns.address) };
    });
    let alice = "alice@ministry.go.ke";
    cluster.create_user(alice);
    let mx = cluster.smtp(1);
    let sign_as = |domain: &str, pem: &str, selector: &str| {
        DomainSigner::new(domain, selector, DkimKey::from_pem(pem).expect("the generated key"))
    };
    let signed_example = sign_as("signed.example", &signed_key.private_key_pem, "s1");
    let none_example = sign_as("none.example", &signed_key.private_key_pem, "s1");
    let ministry = sign_as("ministry.go.ke", &ministry_key.private_key_pem, "news");
    let helo = "client.outside.example";
    let accepted = |reply: &str| reply.starts_with("250 2.0.0");

    // SPF pass, and a resend of the same bytes (its 250 lost) stored once.
    let spf_pass = message("news@spf-pass.example", "spf-pass", "SPF lets 127.0.0.0/8 send.");
    assert!(accepted(&send(&mx, helo, "news@spf-pass.example", alice, &spf_pass)));
    assert!(accepted(&send(&mx, helo, "news@spf-pass.example", alice, &spf_pass)), "the resend is acknowledged");
    // SPF fail; no DMARC record: tagged only.
    let spf_fail = message("x@spf-fail.example", "spf-fail", "Sent from outside the SPF record.");
    assert!(accepted(&send(&mx, helo, "x@spf-fail.example", alice, &spf_fail)));
    // DKIM pass by the From: domain (p=reject) while SPF fails: DMARC passes on DKIM.
    let dkim_pass = signed(&signed_example, &message("news@signed.example", "dkim-pass", "Signed and intact."));
    assert!(accepted(&send(&mx, helo, "bounces@spf-fail.example", alice, &dkim_pass)));
    // The same signature over an altered body: DKIM fails, so DMARC fails, p=reject: 550.
    let altered = String::from_utf8(dkim_pass.clone()).unwrap().replace("Signed and intact.", "Signed and ALTERED.");
    let reply = send(&mx, helo, "bounces@spf-fail.example", alice, altered.as_bytes());
    assert!(reply.starts_with("550 5.7.1") && reply.contains("DMARC policy of signed.example"), "{reply}");
    // DKIM fail under p=none: stored in INBOX, tagged dkim=fail and dmarc=fail.
    let none_signed = signed(&none_example, &message("news@none.example", "dkim-fail", "The original text."));
    let none_altered = String::from_utf8(none_signed).unwrap().replace("The original text.", "Another text.");
    assert!(accepted(&send(&mx, helo, "x@none.example", alice, none_altered.as_bytes())));
    // p=reject, nothing aligned: refused, nothing stored.
    let reject = message("ceo@reject.example", "reject", "A forged CEO.");
    let reply = send(&mx, helo, "ceo@reject.example", alice, &reject);
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    // p=quarantine: into Junk.
    let quarantine = message("x@quarantine.example", "quarantine", "Probably forged.");
    assert!(accepted(&send(&mx, helo, "x@quarantine.example", alice, &quarantine)));
    // p=reject, but the operator only tags this partner's failures.
    let partner = message("x@partner.example", "partner", "Forwarded by a list.");
    assert!(accepted(&send(&mx, helo, "x@partner.example", alice, &partner)));
    // Forged results in our name are removed; another server's stay.
    let forged = [
        b"Authentication-Results: node1.test; dkim=pass header.d=ministry.go.ke; dmarc=pass\r\n".as_slice(),
        b"Authentication-Results: mx.other.example; spf=pass smtp.mailfrom=x@other.example\r\n",
        &message("news@spf-pass.example", "forged-results", "Trust me."),
    ]
    .concat();
    assert!(accepted(&send(&mx, helo, "news@spf-pass.example", alice, &forged)));

    // A local domain in From: from outside: refused unless signed by that domain. With
    // swaks, a real client: MAIL FROM and From: both claim the ministry.
    let swaks = Command::new("swaks")
        .args(["--server", &mx, "--helo", helo, "--from", "minister@ministry.go.ke", "--to", alice])
        .args(["--header", "Subject: spoofed minister"])
        .output()
        .expect("run swaks (scripts/setup installs it)");
    let transcript = String::from_utf8_lossy(&swaks.stdout);
    assert!(!swaks.status.success() && transcript.contains("550 5.7.1"), "swaks:\n{transcript}");
    assert!(transcript.contains("ministry.go.ke is a local domain"), "{transcript}");
    // The envelope is a passing outside domain, the From: header the ministry's.
    let spoof = message("minister@ministry.go.ke", "spoofed-header", "Please pay this invoice.");
    let reply = send(&mx, helo, "news@spf-pass.example", alice, &spoof);
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    // Signed by the ministry's key (its newsletter service, say): accepted.
    let newsletter = signed(&ministry, &message("minister@ministry.go.ke", "ministry-signed", "A real newsletter."));
    assert!(accepted(&send(&mx, helo, "news@spf-pass.example", alice, &newsletter)));

    let inbox = stored(&cluster, alice, "INBOX");
    let junk = stored(&cluster, alice, "Junk");
    let subjects = |messages: &[String]| -> Vec<String> {
        messages
            .iter()
            .map(|m| m.split("\r\n").find_map(|l| l.strip_prefix("Subject: ")).unwrap_or("?").to_string())
            .collect()
    };
    assert_eq!(
        subjects(&inbox),
        ["spf-pass", "spf-fail", "dkim-pass", "dkim-fail", "partner", "forged-results", "ministry-signed"],
        "INBOX"
    );
    assert_eq!(subjects(&junk), ["quarantine"], "Junk");
    let results = |subject: &str| -> String {
        let message = inbox.iter().chain(&junk).find(|m| m.contains(&format!("Subject: {subject}\r\n"))).unwrap();
        let ours: Vec<String> = results_fields(message)
            .into_iter()
            .filter(|f| f.to_ascii_lowercase().starts_with("authentication-results: node1.test;"))
            .collect();
        assert_eq!(ours.len(), 1, "one header of ours in {subject}: {message}");
        assert!(message.starts_with("Received: from "), "{message}");
        let after_received = message.split_once("\r\nAuthentication-Results: node1.test;").map(|(before, _)| before);
        assert_eq!(after_received.map(|b| b.matches("\r\n").count()), Some(2), "right below Received: {message}");
        ours[0].clone()
    };
    let expectations: [(&str, &[&str]); 8] = [
        ("spf-pass", &["spf=pass smtp.mailfrom=news@spf-pass.example", "dkim=none", "dmarc=none", "arc=none"]),
        ("spf-fail", &["spf=fail smtp.mailfrom=x@spf-fail.example", "dmarc=none"]),
        (
            "dkim-pass",
            &[
                "dkim=pass header.d=signed.example header.s=s1",
                "spf=fail",
                "dmarc=pass (p=reject dis=none) header.from=signed.example",
            ],
        ),
        ("dkim-fail", &["dkim=fail", "header.d=none.example", "dmarc=fail (p=none dis=none) header.from=none.example"]),
        ("quarantine", &["dmarc=fail (p=quarantine dis=quarantine) header.from=quarantine.example"]),
        ("partner", &["dmarc=fail (p=reject dis=none) header.from=partner.example"]),
        ("forged-results", &["spf=pass", "dmarc=none"]),
        (
            "ministry-signed",
            &["dkim=pass header.d=ministry.go.ke header.s=news", "dmarc=none header.from=ministry.go.ke"],
        ),
    ];
    for (subject, parts) in expectations {
        let field = results(subject);
        for part in parts {
            assert!(field.contains(part), "{subject}: {part:?} not in {field}");
        }
    }
    let forged = inbox.iter().find(|m| m.contains("Subject: forged-results")).unwrap();
    assert!(!forged.contains("dkim=pass header.d=ministry.go.ke"), "the forged header is gone: {forged}");
    assert!(forged.contains("Authentication-Results: mx.other.example; spf=pass"), "another server's stays: {forged}");
}
