//! The IMAP listeners (STARTTLS, and implicit TLS for IMAPS): per-IP admission, framing with imap-codec's `Fragmentizer`
//! (literals: `+` continuation for synchronizing ones, a size limit for all), STARTTLS,
//! AUTHENTICATE PLAIN's exchange, IDLE's wait (told of changes by the service as this
//! node applies them, or polling where it cannot tell), autologout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_compression::tokio::bufread::DeflateDecoder;
use async_compression::tokio::write::DeflateEncoder;
use imap_codec::decode::Decoder;
use imap_codec::fragmentizer::{FragmentInfo, Fragmentizer, LiteralAnnouncement};
use imap_codec::{AuthenticateDataCodec, CommandCodec, IdleDoneCodec};
use imap_types::IntoStatic;
use imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_types::command::{Command, CommandBody};
use imap_types::core::{LiteralMode, Tag};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

use super::extended::{self, Extension};
use super::session::{After, Session, bye};
use super::settings::ImapSettings;
use crate::bans::BanList;
use crate::limits::IpLimiter;
use crate::listener;
use crate::logins::LoginThrottle;
use crate::mail_service::MailService;

const READ_CHUNK: usize = 64 * 1024;
/// Bad commands before a connection is closed.
const MAX_ERRORS: u32 = 20;

struct Gateway {
    settings: ImapSettings,
    service: Arc<dyn MailService>,
    tls: Option<TlsAcceptor>,
    logins: Arc<LoginThrottle>,
    /// Connections and offences per client address.
    limiter: Arc<IpLimiter>,
}

/// Binds the IMAP listeners (if configured: STARTTLS on `listen`, implicit TLS on
/// `tls_listen`) and serves them on the current tokio runtime. `logins` is the node's
/// failed-login bookkeeping, shared with the other protocols.
pub async fn start(
    settings: ImapSettings,
    service: Arc<dyn MailService>,
    logins: Arc<LoginThrottle>,
    bans: Arc<BanList>,
) -> anyhow::Result<()> {
    settings.validate().map_err(anyhow::Error::msg)?;
    let tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
        _ => None,
    };
    // Both listeners count connections and offences per address together.
    let limiter = IpLimiter::new(settings.connections.clone(), bans);
    let listeners = [(settings.listen, false), (settings.tls_listen, true)];
    let gateway = Arc::new(Gateway { settings, service, tls, logins, limiter: Arc::clone(&limiter) });
    for (address, implicit_tls) in listeners {
        let Some(address) = address else { continue };
        let socket = TcpListener::bind(address).await.with_context(|| format!("binding IMAP on {address}"))?;
        info!(%address, implicit_tls, "IMAP listening");
        let gateway = Arc::clone(&gateway);
        let serve = move |stream, peer| {
            let gateway = Arc::clone(&gateway);
            async move { serve_connection(stream, peer, implicit_tls, &gateway).await }
        };
        let refusal = |refusal| bye(listener::refusal_text(refusal));
        tokio::spawn(listener::accept_loop(socket, Arc::clone(&limiter), "imap", refusal, serve));
    }
    Ok(())
}

/// One client: on the implicit-TLS port the handshake comes first (RFC 8314); on the
/// other, STARTTLS upgrades the connection when the client asks. COMPRESS=DEFLATE then
/// wraps whichever stream is in use (RFC 4978).
async fn serve_connection(stream: TcpStream, peer: SocketAddr, implicit_tls: bool, gateway: &Gateway) {
    let settings = &gateway.settings;
    let mut session = Session::new(
        Arc::clone(&gateway.service),
        Arc::clone(&gateway.logins),
        peer.ip(),
        gateway.tls.is_some(),
        settings.allow_insecure_auth,
        settings.max_auth_failures,
    );
    let acceptor = gateway.tls.as_ref();
    let result = if implicit_tls {
        let acceptor = acceptor.expect("validated: the implicit-TLS port needs a certificate");
        let Some(encrypted) = crate::tls::upgrade(acceptor, stream, peer).await else { return };
        session.tls_started();
        let ending = greet_and_converse(encrypted, &mut session, gateway).await;
        finish(ending, &mut session, gateway).await
    } else {
        match greet_and_converse(stream, &mut session, gateway).await {
            Ok(Ending::StartTls(plain)) => {
                let acceptor = acceptor.expect("STARTTLS is only offered with a certificate");
                let Some(encrypted) = crate::tls::upgrade(acceptor, plain, peer).await else { return };
                session.tls_started();
                let ending = converse(encrypted, &mut session, gateway).await;
                finish(ending, &mut session, gateway).await
            }
            ending => finish(ending, &mut session, gateway).await,
        }
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "IMAP connection ended");
    }
}

/// Carries on after a conversation ended: compressed, if the client asked for it.
async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
    ending: std::io::Result<Ending<S>>,
    session: &mut Session,
    gateway: &Gateway,
) -> std::io::Result<()> {
    match ending? {
        Ending::Compress(stream) => compressed(stream, session, gateway).await,
        // A second STARTTLS is refused by the session; nothing else follows.
        Ending::Closed | Ending::StartTls(_) => Ok(()),
    }
}

/// How the conversation over one stream ended.
enum Ending<S> {
    Closed,
    /// STARTTLS was answered OK: the stream is to be encrypted.
    StartTls(S),
    /// COMPRESS was answered OK: the stream is to be compressed.
    Compress(S),
}

async fn greet_and_converse<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    session: &mut Session,
    gateway: &Gateway,
) -> std::io::Result<Ending<S>> {
    send(&mut stream, &session.greeting()).await?;
    converse(stream, session, gateway).await
}

/// The rest of the conversation compressed both ways with raw DEFLATE; every response
/// burst is flushed (a sync flush), so the client sees it at once.
async fn compressed<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    session: &mut Session,
    gateway: &Gateway,
) -> std::io::Result<()> {
    let (reader, writer) = tokio::io::split(stream);
    let reader = DeflateDecoder::new(tokio::io::BufReader::new(reader));
    let writer = DeflateEncoder::new(writer);
    // Nothing follows compression: STARTTLS and a second COMPRESS are refused by the session.
    converse(tokio::io::join(reader, writer), session, gateway).await.map(drop)
}

/// A safety net under push: an IDLE session told of changes still looks this often (a
/// replica moved away from the node, say, leaves its bell silent).
const PUSH_FALLBACK: Duration = Duration::from_secs(30);

/// Returns when the selected mailbox may have changed: when `changes` rings (at the
/// latest after [`PUSH_FALLBACK`]), or, without it, after `poll`.
async fn next_change(changes: &mut Option<watch::Receiver<u64>>, poll: Duration) {
    if let Some(receiver) = changes {
        match tokio::time::timeout(PUSH_FALLBACK, receiver.changed()).await {
            Ok(Ok(())) | Err(_) => return,
            // The bell is gone: poll from now on.
            Ok(Err(_)) => *changes = None,
        }
    }
    tokio::time::sleep(poll).await;
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// What the connection is reading next.
enum Reading {
    Command,
    /// AUTHENTICATE PLAIN's response line for this tag.
    AuthData(Tag<'static>),
    /// IDLE's DONE for this tag.
    IdleDone(Tag<'static>),
}

/// Runs the session until the connection closes, or returns the stream for STARTTLS.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    session: &mut Session,
    gateway: &Gateway,
) -> std::io::Result<Ending<S>> {
    let settings = &gateway.settings;
    let autologout = Duration::from_secs(settings.autologout_secs);
    let login_timeout = Duration::from_secs(settings.login_timeout_secs);
    let idle_poll = Duration::from_millis(settings.idle_poll_ms);
    // Room for the largest literal plus its command line.
    let mut fragmentizer = Fragmentizer::new(settings.max_literal_bytes.saturating_add(64 * 1024));
    let mut reading = Reading::Command;
    // When the current IDLE began (it ends by autologout too, like any silence).
    let mut idling_since: Option<std::time::Instant> = None;
    // While idling: what tells of changes to the user's mailboxes (`None`: poll).
    let mut changes: Option<watch::Receiver<u64>> = None;
    let mut errors = 0;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let Some(info) = fragmentizer.progress() else {
            let read = if let Reading::IdleDone(_) = reading {
                // While idling, look for changes between reads.
                tokio::select! {
                    read = stream.read(&mut buf) => Some(read),
                    () = next_change(&mut changes, idle_poll) => None,
                }
            } else {
                // Before login a client gets little room and little time: memory and
                // connections are not held for whoever connects.
                let (silence, room) = if session.is_authenticated() {
                    (autologout, usize::MAX)
                } else {
                    (login_timeout, settings.max_preauth_bytes as usize)
                };
                if fragmentizer.message_bytes().len() > room {
                    let _ = send(&mut stream, &bye("Command too long before login")).await;
                    return Ok(Ending::Closed);
                }
                match tokio::time::timeout(silence, stream.read(&mut buf)).await {
                    Ok(read) => Some(read),
                    Err(_) => {
                        let _ = send(&mut stream, &bye("Autologout; idle for too long")).await;
                        return Ok(Ending::Closed);
                    }
                }
            };
            match read {
                Some(Ok(0)) => return Ok(Ending::Closed),
                Some(Ok(n)) => fragmentizer.enqueue_bytes(&buf[..n]),
                Some(Err(e)) => return Err(e),
                None => {
                    let mut out = Vec::new();
                    let alive = session.idle_tick(&mut out).await;
                    if !out.is_empty() {
                        send(&mut stream, &out).await?;
                    }
                    if !alive || idling_since.is_some_and(|since| since.elapsed() > autologout) {
                        if alive {
                            send(&mut stream, &bye("Autologout; idle for too long")).await?;
                        }
                        return Ok(Ending::Closed);
                    }
                }
            }
            continue;
        };
        if let FragmentInfo::Line { announcement: Some(LiteralAnnouncement { mode, length }), .. } = info {
            let max_literal =
                if session.is_authenticated() { settings.max_literal_bytes } else { settings.max_preauth_bytes };
            if length > max_literal {
                let too_big = format!("Literal larger than {max_literal} bytes");
                match (fragmentizer.decode_tag().map(|t| t.as_ref().to_string()), mode) {
                    // The client waits for our go-ahead: refuse, and it sends nothing.
                    (Some(tag), LiteralMode::Sync) => {
                        fragmentizer.skip_message();
                        send(&mut stream, format!("{tag} NO [TOOBIG] {too_big}\r\n").as_bytes()).await?;
                    }
                    // A non-synchronizing literal's bytes are already on their way and would
                    // be read as commands: the only safe answer is to hang up.
                    _ => {
                        send(&mut stream, &bye(&too_big)).await?;
                        return Ok(Ending::Closed);
                    }
                }
            } else if mode == LiteralMode::Sync {
                send(&mut stream, b"+ Ready for literal data\r\n").await?;
            }
            continue;
        }
        if !fragmentizer.is_message_complete() {
            continue;
        }
        let (out, after) = match std::mem::replace(&mut reading, Reading::Command) {
            Reading::Command => match decode_command(&fragmentizer) {
                Ok((command, extension)) => match command.body {
                    CommandBody::Authenticate { .. } if session.is_authenticated() => (
                        format!("{} BAD Already authenticated\r\n", command.tag.as_ref()).into_bytes(),
                        After::Continue,
                    ),
                    CommandBody::Authenticate { mechanism, initial_response } => {
                        let tag = command.tag.into_static();
                        match (mechanism, initial_response) {
                            (AuthMechanism::Plain, Some(response)) => {
                                plain_login(session, &tag, response.declassify()).await
                            }
                            (AuthMechanism::Plain, None) => {
                                reading = Reading::AuthData(tag);
                                (b"+ \r\n".to_vec(), After::Continue)
                            }
                            _ => (
                                format!("{} NO Unsupported authentication mechanism\r\n", tag.as_ref()).into_bytes(),
                                After::Continue,
                            ),
                        }
                    }
                    _ => {
                        let tag = command.tag.clone().into_static();
                        let (out, after) = session.handle(command, extension).await;
                        if after == After::Idle {
                            reading = Reading::IdleDone(tag);
                            idling_since = Some(std::time::Instant::now());
                            changes = session.mailbox_changes().filter(|_| settings.idle_push).map(|mut rx| {
                                // Anything changed before this subscription is looked for at once.
                                rx.mark_changed();
                                rx
                            });
                        }
                        (out, after)
                    }
                },
                Err(()) => {
                    errors += 1;
                    gateway.limiter.record_offences(session.client_ip(), 1, Instant::now());
                    debug!("undecodable IMAP command");
                    let line = match fragmentizer.decode_tag() {
                        Some(tag) => format!("{} BAD Invalid command or arguments\r\n", tag.as_ref()),
                        None => "* BAD Invalid command\r\n".to_string(),
                    };
                    if errors >= MAX_ERRORS {
                        let mut out = line.into_bytes();
                        out.extend(bye("Too many errors"));
                        (out, After::Close)
                    } else {
                        (line.into_bytes(), After::Continue)
                    }
                }
            },
            Reading::AuthData(tag) => match fragmentizer.decode_message(&AuthenticateDataCodec::default()) {
                Ok(AuthenticateData::Continue(response)) => plain_login(session, &tag, response.declassify()).await,
                Ok(AuthenticateData::Cancel) => {
                    (format!("{} BAD Authentication cancelled\r\n", tag.as_ref()).into_bytes(), After::Continue)
                }
                Err(_) => (format!("{} BAD Invalid base64\r\n", tag.as_ref()).into_bytes(), After::Continue),
            },
            Reading::IdleDone(tag) => {
                idling_since = None;
                changes = None;
                match fragmentizer.decode_message(&IdleDoneCodec::default()) {
                    Ok(_) => (format!("{} OK IDLE terminated\r\n", tag.as_ref()).into_bytes(), After::Continue),
                    Err(_) => (format!("{} BAD Expected DONE\r\n", tag.as_ref()).into_bytes(), After::Continue),
                }
            }
        };
        gateway.limiter.record_offences(session.client_ip(), session.take_offences(), Instant::now());
        send(&mut stream, &out).await?;
        match after {
            After::Continue | After::Idle => {}
            After::StartTls => return Ok(Ending::StartTls(stream)),
            After::Compress => return Ok(Ending::Compress(stream)),
            After::Close => {
                let _ = stream.shutdown().await;
                return Ok(Ending::Closed);
            }
        }
    }
}

/// The complete command in the fragmentizer, with the extension forms imap-codec does not
/// parse yet (ESEARCH, LIST-EXTENDED) split off first.
pub(crate) fn decode_command(fragmentizer: &Fragmentizer) -> Result<(Command<'static>, Extension), ()> {
    if fragmentizer.is_max_message_size_exceeded() || fragmentizer.is_message_poisoned() {
        return Err(());
    }
    let (bytes, extension) = extended::split(fragmentizer.message_bytes());
    match CommandCodec::default().decode(&bytes) {
        Ok((b"", command)) => Ok((command.into_static(), extension)),
        _ => Err(()),
    }
}

/// AUTHENTICATE PLAIN: `authzid NUL authcid NUL password` (acting as another user is not offered).
async fn plain_login(session: &mut Session, tag: &Tag<'_>, response: &[u8]) -> (Vec<u8>, After) {
    let text = String::from_utf8_lossy(response);
    let parts: Vec<&str> = text.split('\0').collect();
    match parts.as_slice() {
        [authzid, login, password] if authzid.is_empty() || authzid.eq_ignore_ascii_case(login) => {
            session.login(tag, login, password).await
        }
        _ => (format!("{} BAD Malformed PLAIN response\r\n", tag.as_ref()).into_bytes(), After::Continue),
    }
}
