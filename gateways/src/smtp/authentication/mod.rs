//! Mail authentication on the MX: SPF (HELO and MAIL FROM), DKIM, ARC and DMARC for a
//! message received from outside, with Stalwart's `mail-auth` doing the checks and the
//! DNS lookups, each bounded in time. This module does the IO and turns mail-auth's
//! results into plain [`Checks`]; what they mean — the `Authentication-Results` header
//! and INBOX, Junk or a refusal — is decided in [`verdict`], without IO. DKIM signing
//! for our own domains is in [`signing`].

pub mod settings;
pub mod signing;
pub mod verdict;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use mail_auth::hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DkimResult, DmarcResult, Error as AuthError, MessageAuthenticator, SpfOutput,
    SpfResult, dmarc::Policy, dmarc::verify::DmarcParameters,
};

pub use settings::{MailAuthSettings, PolicyOverride};
pub use verdict::{Checks, Decision, DkimCheck, DmarcCheck, DmarcPolicy, Outcome, Refusal, SpfCheck, Verdict};

/// The DNS resolver could not be set up from the settings or the system's configuration.
#[derive(Debug, thiserror::Error)]
#[error("mail authentication: cannot set up the DNS resolver: {0}")]
pub struct ResolverError(String);

/// One message as the MX received it: what SPF and DMARC are checked against.
pub struct ReceivedMessage<'a> {
    pub client_ip: IpAddr,
    /// The EHLO/HELO name the client gave.
    pub helo: &'a str,
    /// The envelope sender; empty for a bounce.
    pub mail_from: &'a str,
    /// The message as received (CRLF line endings), before any header of ours.
    pub data: &'a [u8],
}

/// Verifies incoming mail for one node's MX; shared by its connections (the resolver
/// caches answers across messages).
pub struct MailAuthenticator {
    resolver: MessageAuthenticator,
    /// This server's name in the header (the authserv-id) and in SPF's `%{r}` macro.
    hostname: String,
    settings: MailAuthSettings,
}

impl MailAuthenticator {
    /// A verifier asking `settings.nameserver`, or the system's resolvers, each query
    /// given `timeout_ms` and one attempt (the total is bounded per message besides).
    pub fn new(settings: MailAuthSettings, hostname: &str) -> Result<Self, ResolverError> {
        settings.validate().map_err(ResolverError)?;
        let (config, mut options) = match settings.nameserver {
            Some(address) => {
                let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                    .into_iter()
                    .map(|mut connection| {
                        connection.port = address.port();
                        connection
                    })
                    .collect();
                let server = NameServerConfig::new(address.ip(), true, connections);
                (ResolverConfig::from_name_servers(vec![server]), ResolverOpts::default())
            }
            None => mail_auth::hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| ResolverError(format!("reading the system's DNS configuration: {e}")))?,
        };
        options.timeout = Duration::from_millis(settings.timeout_ms);
        options.attempts = 1;
        let resolver = MessageAuthenticator::new(config, options).map_err(|e| ResolverError(e.to_string()))?;
        Ok(Self { resolver, hostname: hostname.to_string(), settings })
    }

    /// Runs SPF for the HELO name and the MAIL FROM, DKIM and ARC at once, then DMARC on
    /// their results, within `total_timeout_ms`: a check not done by then is a
    /// temporary error. Never fails: every problem is a result.
    pub async fn check(&self, received: &ReceivedMessage<'_>) -> Checks {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.settings.total_timeout_ms);
        let resolver = &self.resolver;
        let ip = received.client_ip;
        let helo = helo_domain(received.helo);
        let mail_from_domain = received
            .mail_from
            .rsplit_once('@')
            .map(|(_, domain)| domain.trim_end_matches('.').to_ascii_lowercase())
            .filter(|domain| !domain.is_empty());
        // A bounce is checked as postmaster@ its HELO name (RFC 7208 2.4).
        let spf_sender = match (&mail_from_domain, helo) {
            (Some(_), _) => Some(received.mail_from.to_string()),
            (None, Some(helo)) => Some(format!("postmaster@{helo}")),
            (None, None) => None,
        };
        let spf_domain = spf_sender.as_deref().and_then(|s| s.rsplit_once('@')).map(|(_, d)| d.to_ascii_lowercase());
        let message = AuthenticatedMessage::parse(received.data);

        let spf_helo = async {
            let helo = helo?;
            let output = within(deadline, resolver.verify_spf(SpfParameters::verify_ehlo(ip, helo, &self.hostname)))
                .await
                .unwrap_or_else(|| SpfOutput::new(helo.to_string()).with_result(SpfResult::TempError));
            Some(SpfCheck {
                outcome: spf_outcome(output.result()),
                identity: helo.to_string(),
                domain: helo.to_string(),
            })
        };
        let spf_mail_from = async {
            match (&spf_sender, &spf_domain) {
                (Some(sender), Some(domain)) => {
                    let parameters = SpfParameters::verify_mail_from(ip, helo.unwrap_or(""), &self.hostname, sender);
                    within(deadline, resolver.verify_spf(parameters))
                        .await
                        .unwrap_or_else(|| SpfOutput::new(domain.clone()).with_result(SpfResult::TempError))
                }
                _ => SpfOutput::default(),
            }
        };
        let dkim = async {
            let Some(message) = &message else { return Vec::new() };
            match within(deadline, resolver.verify_dkim(message)).await {
                Some(outputs) => outputs,
                // Unanswered signatures are temporary errors, so DMARC says temperror
                // (retry) rather than fail (reject) for a slow DNS.
                None => message
                    .dkim_headers
                    .iter()
                    .map(|h| DkimOutput::temp_err(timed_out()).with_signature(&h.header))
                    .collect(),
            }
        };
        let arc = async {
            let Some(message) = &message else { return Outcome::None };
            match within(deadline, resolver.verify_arc(message)).await {
                Some(output) => dkim_outcome(output.result()),
                None => Outcome::TempError,
            }
        };
        let (spf_helo, spf_mail_from, dkim, arc) = tokio::join!(spf_helo, spf_mail_from, dkim, arc);

        let from_domains: Vec<String> = message
            .as_ref()
            .map(|m| m.froms().iter().filter_map(|a| a.rsplit_once('@')).map(|(_, d)| d.to_string()).collect())
            .unwrap_or_default();
        let dmarc = match &message {
            Some(message) if !from_domains.is_empty() => {
                let rfc5321_domain = spf_domain.as_deref().unwrap_or_default();
                let parameters = DmarcParameters::new(message, &dkim, rfc5321_domain, &spf_mail_from);
                match within(deadline, resolver.verify_dmarc(parameters)).await {
                    Some(output) => DmarcCheck {
                        outcome: dmarc_outcome(&output.result()),
                        from_domain: if output.domain().is_empty() {
                            from_domains[0].clone()
                        } else {
                            output.domain().to_string()
                        },
                        policy: match output.policy() {
                            Policy::Reject => DmarcPolicy::Reject,
                            Policy::Quarantine => DmarcPolicy::Quarantine,
                            Policy::None | Policy::Unspecified => DmarcPolicy::None,
                        },
                    },
                    None => DmarcCheck {
                        outcome: Outcome::TempError,
                        from_domain: from_domains[0].clone(),
                        policy: DmarcPolicy::None,
                    },
                }
            }
            _ => DmarcCheck { outcome: Outcome::None, from_domain: String::new(), policy: DmarcPolicy::None },
        };

        let checks = Checks {
            client_ip: ip,
            spf_helo,
            spf_mail_from: SpfCheck {
                outcome: spf_outcome(spf_mail_from.result()),
                identity: spf_sender.unwrap_or_default(),
                domain: spf_domain.unwrap_or_default(),
            },
            mail_from_domain,
            from_domains,
            dkim: dkim.iter().map(dkim_check).collect(),
            arc,
            dmarc,
        };
        metrics::histogram!("ums_smtp_mail_auth_seconds").record(started.elapsed().as_secs_f64());
        checks
    }

    /// What to do with a message whose checks are `checks`, given which of the domains
    /// it claims ([`Checks::claimed_domains`]) are local; pure (see [`verdict::decide`]).
    pub fn verdict(&self, checks: &Checks, local_claims: &[String]) -> Verdict {
        let decision = verdict::decide(checks, local_claims, &self.settings);
        let header = verdict::authentication_results(&self.hostname, checks, &decision);
        let (dmarc, decided) = (checks.dmarc.outcome.keyword(), decision_name(&decision));
        metrics::counter!("ums_smtp_mail_auth_total", "dmarc" => dmarc, "decision" => decided).increment(1);
        Verdict { header, decision }
    }
}

fn decision_name(decision: &Decision) -> &'static str {
    match decision {
        Decision::Accept => "inbox",
        Decision::Junk => "junk",
        Decision::Reject(refusal) if refusal.code >= 500 => "reject",
        Decision::Reject(_) => "defer",
    }
}

/// `future`'s output, or `None` once `deadline` passed.
async fn within<T>(deadline: tokio::time::Instant, future: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout_at(deadline, future).await.ok()
}

fn timed_out() -> AuthError {
    AuthError::Dns(mail_auth::DnsError::Resolver("no answer in time".into()))
}

/// The HELO name when SPF can check it: a domain name (with a dot), not an address
/// literal (`[192.0.2.1]`) or a bare word.
fn helo_domain(helo: &str) -> Option<&str> {
    let helo = helo.trim_end_matches('.');
    let is_name = helo.contains('.')
        && helo.len() <= 253
        && helo.parse::<IpAddr>().is_err()
        && helo.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    is_name.then_some(helo)
}

fn spf_outcome(result: SpfResult) -> Outcome {
    match result {
        SpfResult::Pass => Outcome::Pass,
        SpfResult::Fail => Outcome::Fail,
        SpfResult::SoftFail => Outcome::SoftFail,
        SpfResult::Neutral => Outcome::Neutral,
        SpfResult::TempError => Outcome::TempError,
        SpfResult::PermError => Outcome::PermError,
        SpfResult::None => Outcome::None,
    }
}

fn dkim_outcome(result: &DkimResult) -> Outcome {
    match result {
        DkimResult::Pass => Outcome::Pass,
        // mail-auth calls a changed body "neutral"; it is the signature failing
        // (RFC 6376 6.1.3: PERMFAIL, body hash did not verify), and readers of the
        // header should see it so.
        DkimResult::Neutral(AuthError::Dkim(mail_auth::dkim::DkimError::FailedBodyHashMatch)) => Outcome::Fail,
        DkimResult::Neutral(_) => Outcome::Neutral,
        DkimResult::Fail(_) => Outcome::Fail,
        DkimResult::PermError(_) => Outcome::PermError,
        DkimResult::TempError(_) => Outcome::TempError,
        DkimResult::None => Outcome::None,
    }
}

fn dmarc_outcome(result: &DmarcResult) -> Outcome {
    match result {
        DmarcResult::Pass => Outcome::Pass,
        DmarcResult::Fail(_) => Outcome::Fail,
        DmarcResult::TempError(_) => Outcome::TempError,
        DmarcResult::PermError(_) => Outcome::PermError,
        DmarcResult::None => Outcome::None,
    }
}

fn dkim_check(output: &DkimOutput<'_>) -> DkimCheck {
    use base64::Engine as _;
    let reason = match output.result() {
        DkimResult::Neutral(e) | DkimResult::Fail(e) | DkimResult::PermError(e) | DkimResult::TempError(e) => {
            Some(e.to_string())
        }
        DkimResult::Pass | DkimResult::None => None,
    };
    let signature = output.signature();
    DkimCheck {
        outcome: dkim_outcome(output.result()),
        domain: signature.map(|s| s.d.to_ascii_lowercase()).unwrap_or_default(),
        selector: signature.map(|s| s.s.clone()).unwrap_or_default(),
        signature_start: signature
            .map(|s| base64::engine::general_purpose::STANDARD.encode(&s.b[..s.b.len().min(6)]))
            .unwrap_or_default(),
        reason,
    }
}

/// An in-memory zone for unit tests: mail-auth consults its record cache before DNS, so
/// records put there are what a receiver finds, with no server at all.
#[cfg(test)]
pub(crate) mod test_records {
    use std::borrow::Borrow;
    use std::collections::HashMap;
    use std::hash::Hash;

    use mail_auth::common::parse::TxtRecordParser as _;
    use mail_auth::common::verify::DomainKey;
    use mail_auth::{AuthenticatedMessage, MessageAuthenticator, Parameters, ResolverCache, Txt};

    use super::{Outcome, dkim_outcome};

    /// TXT records by name (DKIM keys only for now).
    pub struct StaticTxt(HashMap<Box<str>, Txt>);

    impl StaticTxt {
        pub fn new(records: impl IntoIterator<Item = (String, String)>) -> Self {
            Self(
                records
                    .into_iter()
                    .map(|(name, text)| {
                        let record: Txt = DomainKey::parse(text.as_bytes()).into();
                        (format!("{}.", name.trim_end_matches('.')).into_boxed_str(), record)
                    })
                    .collect(),
            )
        }
    }

    impl ResolverCache<Box<str>, Txt> for StaticTxt {
        fn get<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.0.get(name).cloned()
        }

        fn remove<Q>(&self, _: &Q) -> Option<Txt>
        where
            Box<str>: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            None
        }

        fn insert(&self, _: Box<str>, _: Txt, _: std::time::Instant) {}
    }

    /// Each DKIM signature's outcome and signing domain, as a receiver sees `message`
    /// with `zone` for DNS (a resolver without servers: anything else fails at once).
    pub async fn verify_dkim(zone: &StaticTxt, message: &[u8]) -> Vec<(Outcome, String)> {
        let resolver = MessageAuthenticator::new(
            mail_auth::hickory_resolver::config::ResolverConfig::from_name_servers(Vec::new()),
            Default::default(),
        )
        .expect("resolver without servers");
        let message = AuthenticatedMessage::parse(message).expect("a message");
        let outputs = resolver.verify_dkim(Parameters::new(&message).with_txt_cache(zone)).await;
        outputs
            .iter()
            .map(|o| (dkim_outcome(o.result()), o.signature().map(|s| s.d.clone()).unwrap_or_default()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_domain_names_are_checked_as_helo() {
        assert_eq!(helo_domain("mail.example.org."), Some("mail.example.org"));
        for not_a_name in ["[192.0.2.1]", "192.0.2.1", "localhost", "", "bad name.org", "a\r\nb.org"] {
            assert_eq!(helo_domain(not_a_name), None, "{not_a_name:?}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_nameserver_costs_at_most_the_total_timeout() {
        // A port nobody answers on: UDP into the void, so every query waits its timeout.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let settings = MailAuthSettings {
            nameserver: Some(silent.local_addr().unwrap()),
            timeout_ms: 200,
            total_timeout_ms: 500,
            ..MailAuthSettings::default()
        };
        let authenticator = MailAuthenticator::new(settings, "mx.test").unwrap();
        let data = b"From: a@slow.example\r\nDKIM-Signature: v=1; a=rsa-sha256; d=slow.example; s=s1; h=from; bh=AAAA; b=AAAA\r\n\r\nhi\r\n";
        let received = ReceivedMessage {
            client_ip: IpAddr::from([192, 0, 2, 1]),
            helo: "mx.slow.example",
            mail_from: "a@slow.example",
            data,
        };
        let started = Instant::now();
        let checks = authenticator.check(&received).await;
        assert!(started.elapsed() < Duration::from_secs(3), "bounded by the total, took {:?}", started.elapsed());
        assert_eq!(checks.spf_mail_from.outcome, Outcome::TempError);
        assert_eq!(checks.dmarc.outcome, Outcome::TempError, "{checks:?}");
        assert_eq!(checks.claimed_domains(), ["slow.example"]);
        let verdict = authenticator.verdict(&checks, &["slow.example".to_string()]);
        assert!(matches!(verdict.decision, Decision::Reject(Refusal { code: 451, .. })), "{verdict:?}");
        assert!(verdict.header.starts_with("Authentication-Results: mx.test;\r\n"), "{}", verdict.header);
    }
}
