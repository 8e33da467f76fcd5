//! Outbound SMTP: hands one queued message to the recipient domain's mail server, or to
//! a configured smart host, with lettre's SMTP client (STARTTLS when offered).
//!
//! Without a smart host the message goes to port 25 of the recipient's domain itself
//! (RFC 5321's implicit MX); MX records are not looked up yet.

use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

/// Where outbound mail goes and how this node introduces itself.
#[derive(Clone, Debug)]
pub struct RelayTarget {
    /// `host:port` of a smart host; `None` sends to the recipient's domain.
    pub relay_host: Option<String>,
    /// The EHLO name.
    pub hostname: String,
}

/// What one attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayOutcome {
    Delivered,
    /// Worth retrying: the server deferred (4xx), or could not be reached.
    Retry(String),
    /// Refused for good (5xx, or an address that cannot be sent to).
    Refused(String),
}

/// How long one SMTP exchange may take before the attempt counts as failed.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// The server to connect to for `recipient`.
pub fn next_hop(target: &RelayTarget, recipient: &str) -> Result<(String, u16), String> {
    let hop = match &target.relay_host {
        Some(host) => host.clone(),
        None => match recipient.rsplit_once('@') {
            Some((_, domain)) if !domain.is_empty() => format!("{domain}:25"),
            _ => return Err(format!("'{recipient}' has no domain")),
        },
    };
    match hop.rsplit_once(':') {
        Some((host, port)) => port.parse().map(|port| (host.to_string(), port)).map_err(|_| format!("bad port in '{hop}'")),
        None => Ok((hop, 25)),
    }
}

/// Sends `raw` from `mail_from` (empty: a bounce, null reverse path) to `recipient`.
pub async fn send(target: &RelayTarget, mail_from: &str, recipient: &str, raw: &[u8]) -> RelayOutcome {
    let (host, port) = match next_hop(target, recipient) {
        Ok(hop) => hop,
        Err(e) => return RelayOutcome::Refused(e),
    };
    let to: Address = match recipient.parse() {
        Ok(address) => address,
        Err(e) => return RelayOutcome::Refused(format!("recipient '{recipient}': {e}")),
    };
    let from: Option<Address> = match mail_from {
        "" => None,
        sender => match sender.parse() {
            Ok(address) => Some(address),
            Err(e) => return RelayOutcome::Refused(format!("sender '{sender}': {e}")),
        },
    };
    let envelope = match Envelope::new(from, vec![to]) {
        Ok(envelope) => envelope,
        Err(e) => return RelayOutcome::Refused(e.to_string()),
    };
    let tls = match TlsParameters::new(host.clone()) {
        Ok(parameters) => Tls::Opportunistic(parameters),
        Err(e) => return RelayOutcome::Retry(format!("TLS setup: {e}")),
    };
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
        .port(port)
        .tls(tls)
        .hello_name(ClientId::Domain(target.hostname.clone()))
        .timeout(Some(EXCHANGE_TIMEOUT))
        .build();
    match transport.send_raw(&envelope, raw).await {
        Ok(_) => RelayOutcome::Delivered,
        Err(e) if e.is_permanent() => RelayOutcome::Refused(format!("{host}:{port}: {e}")),
        Err(e) => RelayOutcome::Retry(format!("{host}:{port}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_hop_is_the_smart_host_or_the_domain() {
        let direct = RelayTarget { relay_host: None, hostname: "mx.gov".into() };
        assert_eq!(next_hop(&direct, "a@example.org").unwrap(), ("example.org".to_string(), 25));
        assert!(next_hop(&direct, "nodomain").is_err());
        let smart = RelayTarget { relay_host: Some("127.0.0.1:2525".into()), hostname: "mx.gov".into() };
        assert_eq!(next_hop(&smart, "a@example.org").unwrap(), ("127.0.0.1".to_string(), 2525));
        let default_port = RelayTarget { relay_host: Some("relay.gov".into()), ..smart };
        assert_eq!(next_hop(&default_port, "a@example.org").unwrap(), ("relay.gov".to_string(), 25));
    }
}
