//! Outbound SMTP: hands one queued message to the recipient domain's mail servers (its
//! MX records, most preferred first; the domain itself when it has none, RFC 5321
//! section 5.1; none for a null MX, RFC 7505), or to a configured smart host, with
//! lettre's SMTP client, protected as [`super::relay_tls`] says for that destination.

use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::relay_tls::{Hop, RelayTlsSettings, TlsPolicy};

/// Where outbound mail goes, how this node introduces itself, and how it is protected.
#[derive(Clone, Debug)]
pub struct RelayTarget {
    /// `host:port` of a smart host; `None` sends to the recipient's domain.
    pub relay_host: Option<String>,
    /// The EHLO name.
    pub hostname: String,
    pub tls: RelayTlsSettings,
    /// The PEM text of `tls.ca_file`, read once at start.
    extra_roots: Option<Vec<u8>>,
}

impl RelayTarget {
    /// Reads the CA file the TLS settings name, so a bad one stops the node at start.
    pub fn new(relay_host: Option<String>, hostname: String, tls: RelayTlsSettings) -> Result<Self, String> {
        let extra_roots = match &tls.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| format!("smtp.relay_tls.ca_file {}: {e}", path.display()))?;
                Certificate::from_pem(&pem).map_err(|e| format!("smtp.relay_tls.ca_file {}: {e}", path.display()))?;
                Some(pem)
            }
            None => None,
        };
        Ok(Self { relay_host, hostname, tls, extra_roots })
    }

    /// lettre's TLS setting for one hop to `host`.
    fn tls_for(&self, hop: Hop<'_>, host: &str) -> Result<Tls, String> {
        let policy = self.tls.policy_for(hop);
        if policy == TlsPolicy::None {
            return Ok(Tls::None);
        }
        let mut parameters = TlsParameters::builder(host.to_string());
        if let Some(pem) = &self.extra_roots {
            parameters = parameters.add_root_certificate(Certificate::from_pem(pem).map_err(|e| e.to_string())?);
        }
        let parameters = parameters.build().map_err(|e| format!("TLS setup: {e}"))?;
        Ok(match policy {
            TlsPolicy::Encrypt => Tls::Required(parameters),
            _ => Tls::Opportunistic(parameters),
        })
    }
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
async fn next_hops<'a>(
    target: &RelayTarget,
    recipient: &'a str,
) -> Result<(Hop<'a>, Vec<(String, u16)>), RelayOutcome> {
    if let Some(host) = &target.relay_host {
        return host_port(host).map(|hop| (Hop::SmartHost, vec![hop])).map_err(RelayOutcome::Refused);
    }
    let domain = domain_of(recipient).map_err(RelayOutcome::Refused)?;
    let resolver = hickory_resolver::TokioResolver::builder_tokio()
        .and_then(|builder| builder.build())
        .map_err(|e| RelayOutcome::Retry(format!("DNS resolver: {e}")))?;
    let records = match resolver.mx_lookup(domain).await {
        Ok(lookup) => lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                hickory_resolver::proto::rr::RData::MX(mx) => Some((mx.preference, mx.exchange.to_utf8())),
                _ => None,
            })
            .collect(),
        Err(e) if e.is_no_records_found() => Vec::new(),
        Err(e) => return Err(RelayOutcome::Retry(format!("MX lookup for {domain}: {e}"))),
    };
    let hosts = exchangers(domain, records).map_err(RelayOutcome::Refused)?;
    Ok((Hop::Domain(domain), hosts.into_iter().map(|host| (host, 25)).collect()))
}

/// Sends `raw` from `mail_from` (empty: a bounce, null reverse path) to `recipient`,
/// trying the recipient's mail servers in order until one answers.
pub async fn send(target: &RelayTarget, mail_from: &str, recipient: &str, raw: &[u8]) -> RelayOutcome {
    let (hop, hosts) = match next_hops(target, recipient).await {
        Ok(hops) => hops,
        Err(outcome) => return outcome,
    };
    let mut outcome = RelayOutcome::Retry("no mail server".into());
    for (host, port) in hosts {
        outcome = send_to(target, hop, &host, port, mail_from, recipient, raw).await;
        if !matches!(outcome, RelayOutcome::Retry(_)) {
            break;
        }
    }
    outcome
}

async fn send_to(
    target: &RelayTarget,
    hop: Hop<'_>,
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
    let tls = match target.tls_for(hop, host) {
        Ok(tls) => tls,
        Err(e) => return RelayOutcome::Retry(e),
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

    #[test]
    fn each_hop_gets_the_tls_its_policy_asks_for() {
        let mut settings = RelayTlsSettings::default();
        settings.domains.insert("plain.example".into(), TlsPolicy::None);
        let target = RelayTarget::new(None, "mx.gov".into(), settings).unwrap();
        assert!(matches!(target.tls_for(Hop::SmartHost, "relay.gov"), Ok(Tls::Required(_))));
        assert!(matches!(target.tls_for(Hop::Domain("example.org"), "mx.example.org"), Ok(Tls::Opportunistic(_))));
        assert!(matches!(target.tls_for(Hop::Domain("plain.example"), "mx.plain.example"), Ok(Tls::None)));
        let missing = RelayTlsSettings { ca_file: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        assert!(RelayTarget::new(None, "mx.gov".into(), missing).unwrap_err().contains("ca_file"));
    }

    #[tokio::test]
    async fn a_smart_host_is_used_as_given() {
        let target = |host: &str| RelayTarget::new(Some(host.into()), "mx.gov".into(), Default::default()).unwrap();
        let (hop, hosts) = next_hops(&target("127.0.0.1:2525"), "a@example.org").await.unwrap();
        assert!(matches!(hop, Hop::SmartHost));
        assert_eq!(hosts, [("127.0.0.1".to_string(), 2525)]);
        let broken = target("relay.gov:x");
        assert!(matches!(next_hops(&broken, "a@example.org").await, Err(RelayOutcome::Refused(_))));
    }
}
