//! Outbound SMTP: hands one queued message to the recipient domain's mail servers (its
//! MX records, most preferred first; the domain itself when it has none, RFC 5321
//! section 5.1; none for a null MX, RFC 7505), or to a configured smart host, with
//! lettre's SMTP client (STARTTLS when offered).

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

/// `host:port` (port 25 when left out).
fn host_port(hop: &str) -> Result<(String, u16), String> {
    match hop.rsplit_once(':') {
        Some((host, port)) => {
            port.parse().map(|port| (host.to_string(), port)).map_err(|_| format!("bad port in '{hop}'"))
        }
        None => Ok((hop.to_string(), 25)),
    }
}

/// The recipient's domain.
fn domain_of(recipient: &str) -> Result<&str, String> {
    match recipient.rsplit_once('@') {
        Some((_, domain)) if !domain.is_empty() => Ok(domain),
        _ => Err(format!("'{recipient}' has no domain")),
    }
}

/// The mail servers of `domain` from its MX records `(preference, exchange)`, most
/// preferred first; the domain itself without records; an error for a null MX.
pub fn exchangers(domain: &str, mut records: Vec<(u16, String)>) -> Result<Vec<String>, String> {
    if records.is_empty() {
        return Ok(vec![domain.to_string()]);
    }
    records.sort_by_key(|(preference, _)| *preference);
    let hosts: Vec<String> =
        records.into_iter().map(|(_, host)| host.trim_end_matches('.').to_string()).filter(|h| !h.is_empty()).collect();
    if hosts.is_empty() {
        return Err(format!("{domain} accepts no mail (null MX)"));
    }
    Ok(hosts)
}

/// Where to connect for `recipient`: the smart host, or the domain's mail servers.
async fn next_hops(target: &RelayTarget, recipient: &str) -> Result<Vec<(String, u16)>, RelayOutcome> {
    if let Some(host) = &target.relay_host {
        return host_port(host).map(|hop| vec![hop]).map_err(RelayOutcome::Refused);
    }
    let domain = domain_of(recipient).map_err(RelayOutcome::Refused)?;
    let resolver = hickory_resolver::TokioAsyncResolver::tokio_from_system_conf()
        .map_err(|e| RelayOutcome::Retry(format!("DNS resolver: {e}")))?;
    let records = match resolver.mx_lookup(domain).await {
        Ok(lookup) => lookup.iter().map(|mx| (mx.preference(), mx.exchange().to_utf8())).collect(),
        Err(e) if matches!(e.kind(), hickory_resolver::error::ResolveErrorKind::NoRecordsFound { .. }) => Vec::new(),
        Err(e) => return Err(RelayOutcome::Retry(format!("MX lookup for {domain}: {e}"))),
    };
    Ok(exchangers(domain, records).map_err(RelayOutcome::Refused)?.into_iter().map(|host| (host, 25)).collect())
}

/// Sends `raw` from `mail_from` (empty: a bounce, null reverse path) to `recipient`,
/// trying the recipient's mail servers in order until one answers.
pub async fn send(target: &RelayTarget, mail_from: &str, recipient: &str, raw: &[u8]) -> RelayOutcome {
    let hops = match next_hops(target, recipient).await {
        Ok(hops) => hops,
        Err(outcome) => return outcome,
    };
    let mut outcome = RelayOutcome::Retry("no mail server".into());
    for (host, port) in hops {
        outcome = send_to(target, &host, port, mail_from, recipient, raw).await;
        if !matches!(outcome, RelayOutcome::Retry(_)) {
            break;
        }
    }
    outcome
}

async fn send_to(
    target: &RelayTarget,
    host: &str,
    port: u16,
    mail_from: &str,
    recipient: &str,
    raw: &[u8],
) -> RelayOutcome {
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
    let tls = match TlsParameters::new(host.to_string()) {
        Ok(parameters) => Tls::Opportunistic(parameters),
        Err(e) => return RelayOutcome::Retry(format!("TLS setup: {e}")),
    };
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
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
    fn mail_servers_come_from_mx_records_by_preference() {
        let records = vec![(20, "backup.example.org.".to_string()), (10, "mx1.example.org.".to_string())];
        assert_eq!(exchangers("example.org", records).unwrap(), ["mx1.example.org", "backup.example.org"]);
        assert_eq!(exchangers("example.org", Vec::new()).unwrap(), ["example.org"], "no MX: the domain itself");
        assert!(exchangers("example.org", vec![(0, ".".to_string())]).unwrap_err().contains("null MX"));
        assert_eq!(host_port("127.0.0.1:2525").unwrap(), ("127.0.0.1".to_string(), 2525));
        assert_eq!(host_port("relay.gov").unwrap(), ("relay.gov".to_string(), 25));
        assert!(domain_of("nodomain").is_err());
    }

    #[tokio::test]
    async fn a_smart_host_is_used_as_given() {
        let smart = RelayTarget { relay_host: Some("127.0.0.1:2525".into()), hostname: "mx.gov".into() };
        assert_eq!(next_hops(&smart, "a@example.org").await.unwrap(), [("127.0.0.1".to_string(), 2525)]);
        let broken = RelayTarget { relay_host: Some("relay.gov:x".into()), hostname: "mx.gov".into() };
        assert!(matches!(next_hops(&broken, "a@example.org").await, Err(RelayOutcome::Refused(_))));
    }
}
