//! The SMTP listeners: accept connections (within per-IP limits, see [`listener`]), drive a
//! [`Session`] over the socket, and carry out what it asks for through the
//! [`MailService`]: recipient checks, logins, storing and queueing messages.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use futures::future::join_all;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::authentication::verdict::strip_authentication_results;
use super::authentication::{Decision, MailAuthenticator, ReceivedMessage, Verdict};
use super::message::{fingerprint, received_header};
use super::session::{DeliveryOutcome, Envelope, Event, LocalRecipient, Mode, Policy, Recipient, Session};
use super::settings::SmtpSettings;
use crate::bans::BanList;
use crate::limits::IpLimiter;
use crate::listener;
use crate::logins::{LoginOutcome, LoginThrottle, check_login};
use crate::mail_service::{MailService, NewMessage, Relay, SPECIAL_USE_MAILBOXES, ServiceError};

/// How long a domain's local/remote answer is reused (saves a meta-group read per RCPT).
const DOMAIN_CACHE_TTL: Duration = Duration::from_secs(10);
/// Read buffer per connection.
const READ_CHUNK: usize = 64 * 1024;

/// Everything the connections of one node share.
struct Gateway {
    settings: SmtpSettings,
    service: Arc<dyn MailService>,
    tls: Option<TlsAcceptor>,
    logins: Arc<LoginThrottle>,
    /// Connections and offences per client address, for both listeners.
    limiter: Arc<IpLimiter>,
    domains: Mutex<HashMap<String, (bool, Instant)>>,
    /// Bytes of message copies being replicated right now, in KiB permits: one message
    /// to many recipients is one copy each, so without a bound a few clients could make
    /// the node hold gigabytes.
    in_flight: tokio::sync::Semaphore,
    /// SPF/DKIM/ARC/DMARC for the MX; `None` when `[smtp.mail_auth]` is off.
    authenticator: Option<MailAuthenticator>,
}

/// Message bytes (KiB) a node replicates at once from SMTP; more waits its turn.
const IN_FLIGHT_KIB: u32 = 512 * 1024;
/// How long a delivery waits for room before the client is told to come back (451).
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(30);

/// Binds the configured SMTP listeners and serves them on the current tokio runtime.
/// Fails if a port cannot be bound or the TLS files cannot be loaded. `logins` is the
/// node's failed-login bookkeeping, shared with the other protocols.
pub async fn start(
    settings: SmtpSettings,
    service: Arc<dyn MailService>,
    logins: Arc<LoginThrottle>,
    bans: Arc<BanList>,
) -> anyhow::Result<()> {
    settings.validate().map_err(anyhow::Error::msg)?;
    let tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
        _ => None,
    };
    let listeners = [
        (settings.listen, Mode::Mx, false),
        (settings.submission_listen, Mode::Submission, false),
        (settings.submissions_listen, Mode::Submission, true),
    ];
    let in_flight = tokio::sync::Semaphore::new(IN_FLIGHT_KIB as usize);
    let limiter = IpLimiter::new(settings.connections.clone(), bans);
    let domains = Mutex::new(HashMap::new());
    // Only the MX verifies (submission is authenticated by login).
    let authenticator = match settings.mail_auth.enabled && settings.listen.is_some() {
        true => Some(MailAuthenticator::new(settings.mail_auth.clone(), &settings.hostname)?),
        false => None,
    };
    let gateway = Arc::new(Gateway { settings, service, tls, logins, limiter, domains, in_flight, authenticator });
    for (address, mode, implicit_tls) in listeners {
        let Some(address) = address else { continue };
        let socket = TcpListener::bind(address).await.with_context(|| format!("binding SMTP {mode:?} on {address}"))?;
        info!(%address, ?mode, implicit_tls, "SMTP listening");
        let (gateway, hostname) = (Arc::clone(&gateway), gateway.settings.hostname.clone());
        let limiter = Arc::clone(&gateway.limiter);
        // RFC 5321: 421, then close.
        let refusal =
            move |refusal| format!("421 4.7.0 {hostname} {}\r\n", listener::refusal_text(refusal)).into_bytes();
        let serve = move |stream, peer| {
            let gateway = Arc::clone(&gateway);
            async move { serve_connection(stream, peer, mode, implicit_tls, &gateway).await }
        };
        tokio::spawn(listener::accept_loop(socket, limiter, "smtp", refusal, serve));
    }
    Ok(())
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, mode: Mode, implicit_tls: bool, gateway: &Gateway) {
    let settings = &gateway.settings;
    let policy = Policy {
        hostname: settings.hostname.clone(),
        mode,
        max_message_bytes: settings.max_message_bytes,
        max_recipients: settings.max_recipients,
        tls_available: gateway.tls.is_some(),
        allow_insecure_auth: settings.allow_insecure_auth,
        max_errors: settings.max_errors,
        max_auth_failures: settings.max_auth_failures,
    };
    if implicit_tls {
        // SMTPS: the handshake comes first, then the session as if STARTTLS were done.
        let acceptor = gateway.tls.as_ref().expect("SMTPS is only configured with a certificate");
        let Some(encrypted) = crate::tls::upgrade(acceptor, stream, peer).await else { return };
        let mut session = Session::new_encrypted(policy, peer.ip());
        if let Err(e) = converse(encrypted, &mut session, peer, gateway).await {
            debug!(%peer, error = %e, "SMTPS connection ended");
        }
        return;
    }
    let mut session = Session::new(policy, peer.ip());
    let plain = match converse(stream, &mut session, peer, gateway).await {
        Ok(Some(plain)) => plain,
        Ok(None) => return,
        Err(e) => return debug!(%peer, error = %e, "SMTP connection ended"),
    };
    let acceptor = gateway.tls.as_ref().expect("STARTTLS is only offered with a certificate");
    let Some(encrypted) = crate::tls::upgrade(acceptor, plain, peer).await else { return };
    session.tls_started();
    if let Err(e) = converse(encrypted, &mut session, peer, gateway).await {
        debug!(%peer, error = %e, "SMTP connection ended");
    }
}

/// Runs the session over `stream` until it closes, or returns the stream when the
/// client asked for STARTTLS.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    session: &mut Session,
    peer: SocketAddr,
    gateway: &Gateway,
) -> std::io::Result<Option<S>> {
    let timeout = Duration::from_secs(gateway.settings.command_timeout_secs);
    let mut out = Vec::new();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match session.next_event() {
            Event::Reply(text) => out.extend_from_slice(text.as_bytes()),
            Event::NeedInput => {
                gateway.limiter.record_offences(peer.ip(), session.take_offences(), Instant::now());
                // Replies to pipelined commands go out together, when the input is used up.
                flush(&mut stream, &mut out).await?;
                match tokio::time::timeout(timeout, stream.read(&mut buf)).await {
                    Ok(Ok(0)) => return Ok(None),
                    Ok(Ok(n)) => session.receive(&buf[..n]),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        let line = format!("421 4.4.2 {} Timeout, closing connection\r\n", gateway.settings.hostname);
                        let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(line.as_bytes())).await;
                        debug!(%peer, in_data = session.in_data(), "SMTP client timed out");
                        return Ok(None);
                    }
                }
            }
            Event::StartTls => {
                flush(&mut stream, &mut out).await?;
                return Ok(Some(stream));
            }
            Event::CheckRecipient { address, domain } => {
                let verdict = check_recipient(gateway, &address, &domain).await;
                session.recipient_checked(verdict);
            }
            Event::Authenticate { login, password } => {
                let result = authenticate(gateway, peer, &login, &password).await;
                session.authenticated(result);
            }
            Event::Deliver(envelope) => {
                let outcome = deliver(gateway, envelope, session.mode()).await;
                session.delivered(outcome);
            }
            Event::Close => {
                gateway.limiter.record_offences(peer.ip(), session.take_offences(), Instant::now());
                flush(&mut stream, &mut out).await?;
                let _ = stream.shutdown().await;
                return Ok(None);
            }
        }
    }
}

async fn flush<S: AsyncWrite + Unpin>(stream: &mut S, out: &mut Vec<u8>) -> std::io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out).await?;
        stream.flush().await?;
        out.clear();
    }
    Ok(())
}

async fn check_recipient(gateway: &Gateway, address: &str, domain: &str) -> Recipient {
    match is_local_domain(gateway, domain).await {
        Ok(false) => Recipient::Remote,
        Ok(true) => match gateway.service.find_user(address).await {
            Ok(Some(account)) if account.over_quota => Recipient::MailboxFull,
            Ok(Some(account)) => Recipient::Local { user_id: account.user_id },
            Ok(None) => Recipient::Unknown,
            Err(e) => {
                warn!(address, error = %e, "recipient lookup failed");
                Recipient::Unavailable
            }
        },
        Err(ServiceError::Invalid(_)) => Recipient::BadAddress,
        Err(e) => {
            warn!(domain, error = %e, "domain lookup failed");
            Recipient::Unavailable
        }
    }
}

async fn is_local_domain(gateway: &Gateway, domain: &str) -> Result<bool, ServiceError> {
    if let Some(&(local, at)) = gateway.domains.lock().unwrap().get(domain)
        && at.elapsed() < DOMAIN_CACHE_TTL
    {
        return Ok(local);
    }
    let local = gateway.service.is_local_domain(domain).await?;
    let mut domains = gateway.domains.lock().unwrap();
    if domains.len() > 10_000 {
        domains.clear();
    }
    domains.insert(domain.to_string(), (local, Instant::now()));
    Ok(local)
}

async fn authenticate(
    gateway: &Gateway,
    peer: SocketAddr,
    login: &str,
    password: &str,
) -> Result<Option<String>, String> {
    match check_login(gateway.service.as_ref(), &gateway.logins, "smtp", peer.ip(), login, password).await {
        LoginOutcome::Valid(account) => Ok(Some(account.user_id)),
        LoginOutcome::Invalid => {
            metrics::counter!("ums_smtp_login_failures_total").increment(1);
            Ok(None)
        }
        LoginOutcome::Throttled => {
            metrics::counter!("ums_smtp_logins_throttled_total").increment(1);
            Err("too many failed logins, try again later".into())
        }
        LoginOutcome::Unavailable(e) => Err(e.to_string()),
    }
}

/// One copy of a message: into a local recipient's mailbox, or queued for a remote one.
enum Copy<'a> {
    Local(&'a LocalRecipient),
    Remote(&'a String),
}

/// How many copies of a message of `bytes` fit in a budget of `budget_kib` at once (one
/// at least: a message over the whole budget goes alone).
fn copies_per_wave(bytes: usize, budget_kib: u32) -> usize {
    (budget_kib as usize * 1024 / bytes.max(1)).max(1)
}

/// Stores the message in every local recipient's INBOX (or Junk folder, as DMARC asks)
/// and queues it for every remote one, as many at once as the node's budget holds;
/// `250` only if every one of them was replicated and applied. On the MX the message is
/// authenticated first and may be refused.
async fn deliver(gateway: &Gateway, envelope: Envelope, mode: Mode) -> DeliveryOutcome {
    // Over the bytes as received, not as stored: the Authentication-Results header may
    // differ on a resend (DNS answered this time), and the resend must still be the same
    // copy.
    let fingerprint = fingerprint(&envelope.mail_from, &envelope.data);
    let id = fingerprint[..12].to_string();
    let mut mailbox = "INBOX";
    let mut results_header = String::new();
    if let (Mode::Mx, Some(authenticator)) = (mode, &gateway.authenticator) {
        let verdict = match authenticate_message(gateway, authenticator, &envelope).await {
            Ok(verdict) => verdict,
            Err(outcome) => return outcome,
        };
        match verdict.decision {
            Decision::Accept => {}
            Decision::Junk => mailbox = junk_mailbox(),
            Decision::Reject(refusal) => {
                metrics::counter!("ums_smtp_messages_refused_total").increment(1);
                info!(id, client = %envelope.trace.client_ip, mail_from = envelope.mail_from, reply = refusal.text, "message refused by mail authentication");
                let (code, status, text) = (refusal.code, refusal.status.to_string(), refusal.text);
                return DeliveryOutcome::Refused { code, status, text };
            }
        }
        results_header = verdict.header;
    }
    let header = received_header(&envelope.trace, &gateway.settings.hostname, &id, SystemTime::now());
    let body = strip_authentication_results(&envelope.data, &gateway.settings.hostname);
    let mut message = Vec::with_capacity(header.len() + results_header.len() + body.len());
    message.extend_from_slice(header.as_bytes());
    message.extend_from_slice(results_header.as_bytes());
    message.extend_from_slice(&body);
    // In waves that fit the node's budget: one 35 MB message to 100 recipients would
    // otherwise be 3.5 GB of copies at once.
    let targets: Vec<Copy<'_>> =
        envelope.local.iter().map(Copy::Local).chain(envelope.remote.iter().map(Copy::Remote)).collect();
    let service = &gateway.service;
    let sender = envelope.trace.authenticated.clone().unwrap_or_default();
    let mut results = Vec::with_capacity(targets.len());
    for wave in targets.chunks(copies_per_wave(message.len(), IN_FLIGHT_KIB)) {
        let kib = (message.len() * wave.len()).div_ceil(1024).clamp(1, IN_FLIGHT_KIB as usize) as u32;
        let Ok(Ok(_room)) = tokio::time::timeout(IN_FLIGHT_WAIT, gateway.in_flight.acquire_many(kib)).await else {
            // The copies already made are named by the message: the client's retry stores
            // none of them twice.
            metrics::counter!("ums_smtp_messages_deferred_total").increment(1);
            return DeliveryOutcome::Failed { reason: "too much mail in flight on this node".into() };
        };
        let copies = wave.iter().map(|copy| async {
            match copy {
                Copy::Local(recipient) => service
                    .deliver(NewMessage {
                        user_id: recipient.user_id.clone(),
                        mailbox: mailbox.into(),
                        raw: message.clone(),
                        kind: "email".into(),
                        client_ref: format!("smtp:{id}"),
                        idempotency_key: Some(format!("smtp:{fingerprint}:{}", recipient.user_id)),
                        ..NewMessage::default()
                    })
                    .await
                    .map(drop),
                Copy::Remote(recipient) => {
                    service
                        .enqueue_relay(Relay {
                            user_id: sender.clone(),
                            mail_from: envelope.mail_from.clone(),
                            recipient: recipient.to_string(),
                            raw: message.clone(),
                            idempotency_key: format!("smtp-relay:{fingerprint}:{recipient}"),
                        })
                        .await
                }
            }
        });
        results.extend(join_all(copies).await);
    }
    let copies = results.len();
    let first_error = results.into_iter().find_map(Result::err);
    match first_error {
        None => {
            metrics::counter!("ums_smtp_messages_accepted_total").increment(1);
            DeliveryOutcome::Done { id }
        }
        Some(ServiceError::OverQuota(reason)) => {
            metrics::counter!("ums_smtp_messages_over_quota_total").increment(1);
            debug!(id, reason, "a recipient is over quota");
            DeliveryOutcome::MailboxFull { permanent: copies == 1 }
        }
        Some(e) => {
            metrics::counter!("ums_smtp_messages_deferred_total").increment(1);
            warn!(id, error = %e, "message not accepted; the client will retry");
            DeliveryOutcome::Failed { reason: e.to_string() }
        }
    }
}

/// Runs the mail authentication checks on a message from outside and decides on it; the
/// domains it claims are looked up to see which are ours (a spoofed local sender is
/// refused unless it authenticates). `Err` when the directory cannot say (451).
async fn authenticate_message(
    gateway: &Gateway,
    authenticator: &MailAuthenticator,
    envelope: &Envelope,
) -> Result<Verdict, DeliveryOutcome> {
    let received = ReceivedMessage {
        client_ip: envelope.trace.client_ip,
        helo: &envelope.trace.helo,
        mail_from: &envelope.mail_from,
        data: &envelope.data,
    };
    let checks = authenticator.check(&received).await;
    let mut local_claims = Vec::new();
    for domain in checks.claimed_domains() {
        match is_local_domain(gateway, &domain).await {
            Ok(true) => local_claims.push(domain),
            // Not a domain we could hold (a bad name): not a claim on ours.
            Ok(false) | Err(ServiceError::Invalid(_)) => {}
            Err(e) => {
                warn!(domain, error = %e, "domain lookup failed");
                return Err(DeliveryOutcome::Failed { reason: "directory temporarily unavailable".into() });
            }
        }
    }
    let verdict = authenticator.verdict(&checks, &local_claims);
    debug!(client = %envelope.trace.client_ip, dmarc = checks.dmarc.outcome.keyword(), decision = ?verdict.decision, "message authenticated");
    Ok(verdict)
}

/// The special-use mailbox for junk mail, which every user has.
fn junk_mailbox() -> &'static str {
    SPECIAL_USE_MAILBOXES.iter().find(|(_, attribute)| *attribute == "\\Junk").map_or("Junk", |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_a_big_message_go_in_waves_that_fit_the_budget() {
        let budget = IN_FLIGHT_KIB;
        // 100 copies of 35 MB would be 3.5 GB: 15 at a time fit 512 MiB.
        assert_eq!(copies_per_wave(35_000_000, budget), 15);
        assert!(copies_per_wave(35_000_000, budget) * 35_000_000 <= budget as usize * 1024);
        assert_eq!(copies_per_wave(4_096, budget), 131_072, "small mail: every recipient at once");
        assert_eq!(copies_per_wave(usize::MAX, budget), 1, "a message over the budget still goes, alone");
        assert_eq!(copies_per_wave(0, budget), budget as usize * 1024);
    }
}
