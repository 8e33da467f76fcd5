//! Arbitrary bytes as the client's side of an SMTP conversation, through the pure session
//! (`gateways::smtp::session`) as MX and as submission (STARTTLS, SMTPS, clear text in
//! development), read whole, line by line or in odd pieces. The session's requests get
//! canned answers, so every branch after them (recipients of each kind, logins right and
//! wrong, deliveries that succeed, fail or overflow a quota, TLS) is reachable and the
//! conversation goes on into DATA. Nothing may panic, every reply must be one or more
//! well-formed reply lines, and what is delivered must have CRLF line endings only.
#![no_main]

use std::net::IpAddr;

use gateways::smtp::session::{DeliveryOutcome, Envelope, Event, Mode, Policy, Recipient, Session};
use libfuzzer_sys::fuzz_target;

/// The one user of the canned directory, and the password that logs them in.
const USER: &str = "a@local.test";
const PASSWORD: &str = "secret";

/// How the input reaches the session.
#[derive(Clone, Copy)]
enum Reads {
    Whole,
    /// A line per read, as an interactive client sends (commands after STARTTLS survive).
    Lines,
    /// In pieces of these sizes, cycled: lines and CRLFs cut anywhere.
    Pieces(&'static [usize]),
}

struct Listener {
    mode: Mode,
    /// SMTPS: TLS from the first byte.
    implicit_tls: bool,
    tls_available: bool,
    allow_insecure_auth: bool,
    reads: Reads,
}

const ODD_PIECES: &[usize] = &[1, 2, 5, 13, 64, 700, 3];

const LISTENERS: [Listener; 5] = [
    Listener {
        mode: Mode::Mx,
        implicit_tls: false,
        tls_available: true,
        allow_insecure_auth: false,
        reads: Reads::Whole,
    },
    Listener {
        mode: Mode::Mx,
        implicit_tls: false,
        tls_available: true,
        allow_insecure_auth: false,
        reads: Reads::Pieces(ODD_PIECES),
    },
    Listener {
        mode: Mode::Submission,
        implicit_tls: false,
        tls_available: true,
        allow_insecure_auth: false,
        reads: Reads::Lines,
    },
    Listener {
        mode: Mode::Submission,
        implicit_tls: true,
        tls_available: true,
        allow_insecure_auth: false,
        reads: Reads::Pieces(ODD_PIECES),
    },
    Listener {
        mode: Mode::Submission,
        implicit_tls: false,
        tls_available: false,
        allow_insecure_auth: true,
        reads: Reads::Whole,
    },
];

fuzz_target!(|input: &[u8]| {
    for listener in &LISTENERS {
        converse(listener, input);
    }
});

fn converse(listener: &Listener, input: &[u8]) {
    // Limits small enough for short inputs to reach them.
    let policy = Policy {
        hostname: "mx.test".into(),
        mode: listener.mode,
        max_message_bytes: 2000,
        max_recipients: 3,
        tls_available: listener.tls_available,
        allow_insecure_auth: listener.allow_insecure_auth,
        max_errors: 10,
        max_auth_failures: 3,
    };
    let ip = IpAddr::from([192, 0, 2, 25]);
    let mut session = if listener.implicit_tls { Session::new_encrypted(policy, ip) } else { Session::new(policy, ip) };
    let mut rest = input;
    let mut reads = 0;
    let mut user: Option<String> = None;
    loop {
        match session.next_event() {
            Event::Reply(text) => assert_well_formed_reply(&text),
            Event::NeedInput => {
                if rest.is_empty() {
                    return;
                }
                let size = match listener.reads {
                    Reads::Whole => rest.len(),
                    Reads::Lines => rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |end| end + 1),
                    Reads::Pieces(sizes) => sizes[reads % sizes.len()].min(rest.len()),
                };
                let (piece, after) = rest.split_at(size);
                session.receive(piece);
                rest = after;
                reads += 1;
            }
            Event::StartTls => session.tls_started(),
            Event::CheckRecipient { address, domain } => {
                assert!(address.ends_with(&format!("@{domain}")), "{address} is not in {domain}");
                session.recipient_checked(recipient(&address, &domain));
            }
            Event::Authenticate { login, password } => {
                let result = match password.as_str() {
                    PASSWORD if login.eq_ignore_ascii_case(USER) => Ok(Some(USER.to_string())),
                    "unavailable" => Err("directory unavailable".to_string()),
                    _ => Ok(None),
                };
                if let Ok(Some(id)) = &result {
                    user = Some(id.clone());
                }
                session.authenticated(result);
            }
            Event::Deliver(envelope) => {
                check_envelope(listener.mode, user.as_deref(), &envelope);
                session.delivered(outcome(&envelope));
            }
            Event::Close => return,
        }
        let _ = session.take_offences();
        let _ = session.in_data();
    }
}

/// The canned directory: `local.test` holds `a` (and `full`, over quota); `down.test`
/// cannot be asked; `bad.test` is no deliverable domain; every other domain is remote.
fn recipient(address: &str, domain: &str) -> Recipient {
    match domain {
        "local.test" if address == USER => Recipient::Local { user_id: USER.into() },
        "local.test" if address.starts_with("full@") => Recipient::MailboxFull,
        "local.test" => Recipient::Unknown,
        "down.test" => Recipient::Unavailable,
        "bad.test" => Recipient::BadAddress,
        _ => Recipient::Remote,
    }
}

/// Each outcome in turn, by the message's length.
fn outcome(envelope: &Envelope) -> DeliveryOutcome {
    match envelope.data.len() % 4 {
        0 => DeliveryOutcome::Done { id: "X1".into() },
        1 => DeliveryOutcome::Failed { reason: "replication timed out".into() },
        2 => DeliveryOutcome::MailboxFull { permanent: true },
        _ => DeliveryOutcome::MailboxFull { permanent: false },
    }
}

/// One or more lines `NNN-text` / `NNN text`, the last with a space, each ending in CRLF
/// and holding no other CR or LF (client text echoed into a reply must not start a line
/// of its own), all of one code.
fn assert_well_formed_reply(text: &str) {
    let body = text.strip_suffix("\r\n").unwrap_or_else(|| panic!("reply without CRLF: {text:?}"));
    let lines: Vec<&str> = body.split("\r\n").collect();
    for (i, line) in lines.iter().enumerate() {
        let bytes = line.as_bytes();
        assert!(bytes.len() >= 4 && bytes[..3].iter().all(u8::is_ascii_digit), "bad reply line {line:?} in {text:?}");
        let separator = if i + 1 == lines.len() { b' ' } else { b'-' };
        assert_eq!(bytes[3], separator, "bad continuation in {text:?}");
        assert_eq!(&bytes[..3], &lines[0].as_bytes()[..3], "codes differ in {text:?}");
        assert!(!line.contains(['\r', '\n']), "bare CR or LF in reply {text:?}");
    }
}

fn check_envelope(mode: Mode, user: Option<&str>, envelope: &Envelope) {
    let data = &envelope.data;
    for (i, &byte) in data.iter().enumerate() {
        match byte {
            b'\n' => assert!(i > 0 && data[i - 1] == b'\r', "bare LF at {i} of a delivered message"),
            b'\r' => assert_eq!(data.get(i + 1), Some(&b'\n'), "bare CR at {i} of a delivered message"),
            _ => {}
        }
    }
    assert!(!envelope.local.is_empty() || !envelope.remote.is_empty(), "a delivery without recipients");
    match mode {
        Mode::Mx => assert!(envelope.remote.is_empty(), "the MX relays to {:?}", envelope.remote),
        Mode::Submission => {
            let user = user.expect("submission delivers only after a login");
            assert!(envelope.mail_from.eq_ignore_ascii_case(user), "{user} sent as {}", envelope.mail_from);
            assert_eq!(envelope.trace.authenticated.as_deref(), Some(user));
        }
    }
}
