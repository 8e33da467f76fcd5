//! Bounces: the delivery status notification (RFC 3464) a sender gets when an outbound
//! message could not be delivered, built with `mail-builder`.

use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::mime::MimePart;

/// What the bounce reports.
pub struct Bounce<'a> {
    /// This node's host name (the reporting MTA).
    pub hostname: &'a str,
    /// Where the bounce goes: the original envelope sender.
    pub to: &'a str,
    pub recipient: &'a str,
    /// The last error, e.g. the remote server's reply.
    pub error: &'a str,
    pub attempts: u32,
    /// The original message (its header section is returned).
    pub original: &'a [u8],
}

/// The bounce as a complete message.
pub fn build(bounce: &Bounce<'_>) -> Vec<u8> {
    let text = format!(
        "This is the mail system at {host}.\r\n\r\nYour message could not be delivered to <{rcpt}> after {n} attempt(s).\r\n\r\nThe last error was:\r\n    {error}\r\n",
        host = bounce.hostname,
        rcpt = bounce.recipient,
        n = bounce.attempts,
        error = bounce.error,
    );
    let status = format!(
        "Reporting-MTA: dns; {host}\r\n\r\nFinal-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.0.0\r\nDiagnostic-Code: smtp; {error}\r\n",
        host = bounce.hostname,
        rcpt = bounce.recipient,
        error = one_line(bounce.error),
    );
    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            MimePart::new("text/plain", text),
            // Text, not bytes: bytes would be base64-encoded, and readers expect these parts legible.
            MimePart::new(ContentType::new("message/delivery-status"), status),
            MimePart::new(
                ContentType::new("text/rfc822-headers"),
                String::from_utf8_lossy(header_section(bounce.original)).into_owned(),
            ),
        ],
    );
    let daemon = format!("MAILER-DAEMON@{}", bounce.hostname);
    MessageBuilder::new()
        .from(("Mail Delivery System", daemon.as_str()))
        .to(bounce.to)
        .subject("Undelivered Mail Returned to Sender")
        .header("Auto-Submitted", mail_builder::headers::raw::Raw::new("auto-replied"))
        .body(report)
        .write_to_vec()
        .unwrap_or_default()
}

/// The header section of a message (up to the first empty line).
fn header_section(message: &[u8]) -> &[u8] {
    message.windows(4).position(|w| w == b"\r\n\r\n").map_or(message, |end| &message[..end + 2])
}

fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounce_is_a_delivery_status_report_with_the_original_headers() {
        let original = b"Subject: budget\r\nFrom: a@gov\r\n\r\nsecret body\r\n";
        let bounce = build(&Bounce {
            hostname: "node1.gov",
            to: "a@gov",
            recipient: "b@example.org",
            error: "550 5.1.1 no such user\r\n",
            attempts: 3,
            original,
        });
        let parsed = mail_parser::MessageParser::default().parse(&bounce).expect("parses");
        assert_eq!(parsed.subject(), Some("Undelivered Mail Returned to Sender"));
        let text = String::from_utf8_lossy(&bounce);
        assert!(
            text.contains("multipart/report") && text.contains("report-type=delivery-status")
                || text.contains("report-type=\"delivery-status\""),
            "{text}"
        );
        assert!(text.contains("Final-Recipient: rfc822; b@example.org") && text.contains("Action: failed"), "{text}");
        assert!(text.contains("Subject: budget") && !text.contains("secret body"), "{text}");
        assert!(text.contains("Auto-Submitted: auto-replied"), "{text}");
    }
}
