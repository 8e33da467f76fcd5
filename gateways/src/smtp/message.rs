//! What the SMTP gateway adds to a message it accepts: a Received trace header, and a
//! fingerprint that names the message for exactly-once storage.

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
