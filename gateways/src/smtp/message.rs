//! What the SMTP gateway does to a message it accepts: line endings made CRLF, a
//! Received trace header, and a fingerprint that names the message for exactly-once
//! storage.

use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::session::Trace;

/// A stable name for a message as the client sent it (envelope sender and content).
/// With a recipient it forms the idempotency key of that recipient's copy, so a client
/// that sends the same message again (after a lost `250`, a `451` for another
/// recipient, a failover) does not store it twice.
pub fn fingerprint(mail_from: &str, data: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(mail_from.as_bytes());
    hash.update([0]);
    hash.update(data);
    hash.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The message with every bare LF and bare CR made a CRLF (RFC 5321 2.3.8 allows no
/// other line ending). Kept as it came, a `\n.\n` inside a message would end it early
/// at the next MTA that takes bare LF as a line break (SMTP smuggling: a second,
/// forged message in the same connection); a message without them is returned as is.
pub fn normalize_line_endings(data: Vec<u8>) -> Vec<u8> {
    let bare = |i: usize| match data[i] {
        b'\n' => i == 0 || data[i - 1] != b'\r',
        b'\r' => data.get(i + 1) != Some(&b'\n'),
        _ => false,
    };
    if !(0..data.len()).any(bare) {
        return data;
    }
    let mut normalized = Vec::with_capacity(data.len() + data.len() / 32);
    for (i, &byte) in data.iter().enumerate() {
        match byte {
            b'\n' if bare(i) => normalized.extend_from_slice(b"\r\n"),
            b'\r' if bare(i) => normalized.extend_from_slice(b"\r\n"),
            _ => normalized.push(byte),
        }
    }
    normalized
}

/// The addresses (lower case) of the message's one `From:` header; `None` when it has
/// none or several (RFC 5322 3.6: exactly one), or names no address.
pub fn from_addresses(data: &[u8]) -> Option<Vec<String>> {
    let parsed = mail_parser::MessageParser::default().parse_headers(data)?;
    let fields = parsed.headers().iter().filter(|h| h.name == mail_parser::HeaderName::From).count();
    if fields != 1 {
        return None;
    }
    let addresses: Vec<String> = parsed.from()?.iter().filter_map(|a| a.address()).map(str::to_lowercase).collect();
    (!addresses.is_empty()).then_some(addresses)
}

/// The `Received:` header (RFC 5321 section 4.4) prepended to an accepted message.
pub fn received_header(trace: &Trace, hostname: &str, id: &str, now: SystemTime) -> String {
    let helo = sanitize(&trace.helo);
    let date = httpdate::fmt_http_date(now).replace("GMT", "+0000");
    format!(
        "Received: from {helo} ([{}])\r\n\tby {hostname} (UMS) with {} id {id};\r\n\t{date}\r\n",
        trace.client_ip, trace.protocol
    )
}

/// Client-chosen text inside a header: printable ASCII, bounded, no line breaks.
fn sanitize(text: &str) -> String {
    let clean: String = text.chars().filter(|c| c.is_ascii_graphic()).take(255).collect();
    if clean.is_empty() { "unknown".into() } else { clean }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn fingerprints_name_sender_and_content() {
        let a = fingerprint("x@y", b"hello");
        assert_eq!(a.len(), 32);
        assert_eq!(a, fingerprint("x@y", b"hello"));
        assert_ne!(a, fingerprint("x@z", b"hello"));
        assert_ne!(a, fingerprint("x@y", b"hello!"));
        assert_ne!(fingerprint("a", b"bc"), fingerprint("ab", b"c"));
    }

    #[test]
    fn bare_line_feeds_and_carriage_returns_become_crlf() {
        let clean = b"A: b\r\n\r\nline\r\n".to_vec();
        assert_eq!(normalize_line_endings(clean.clone()), clean);
        assert_eq!(normalize_line_endings(b"a\n.\nb\r.\rc\r\n".to_vec()), b"a\r\n.\r\nb\r\n.\r\nc\r\n");
        assert_eq!(normalize_line_endings(b"\n\r\r\n\r".to_vec()), b"\r\n\r\n\r\n\r\n");
    }

    #[test]
    fn the_from_header_is_read_once_and_only_once() {
        let from = |data: &str| from_addresses(data.as_bytes());
        assert_eq!(
            from("From: Achieng <Achieng@Health.go.ke>\r\nTo: x@y\r\n\r\nbody\r\n"),
            Some(vec!["achieng@health.go.ke".into()])
        );
        assert_eq!(from("From: a@x, b@y\r\n\r\n").map(|a| a.len()), Some(2));
        assert_eq!(from("To: x@y\r\n\r\nFrom: a@x\r\n"), None, "a From: line in the body is no header");
        assert_eq!(from("From: a@x\r\nFrom: b@y\r\n\r\n"), None, "two From: headers");
        assert_eq!(from("From: undisclosed\r\n\r\n"), None);
    }

    #[test]
    fn received_header_is_one_folded_header() {
        let trace = Trace {
            helo: "client.example\r\nX-Injected: 1".into(),
            client_ip: IpAddr::from([192, 0, 2, 7]),
            protocol: "ESMTPS",
            authenticated: None,
        };
        let header = received_header(&trace, "mx.gov", "abc", UNIX_EPOCH + Duration::from_secs(784111777));
        assert_eq!(
            header,
            "Received: from client.exampleX-Injected:1 ([192.0.2.7])\r\n\tby mx.gov (UMS) with ESMTPS id abc;\r\n\tSun, 06 Nov 1994 08:49:37 +0000\r\n"
        );
    }
}
