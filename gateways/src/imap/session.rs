//! One IMAP4rev1 session's command handling (RFC 3501 with IDLE, UIDPLUS, MOVE,
//! NAMESPACE, LITERAL+, ENABLE, CONDSTORE, UNSELECT): a decoded command in, encoded
//! responses out. The session reaches mailboxes only through [`MailService`]; framing,
//! literals, TLS and IDLE's waiting are the server's.
//!
//! UIDs, UIDVALIDITY and modseqs come from the replicated mailbox state, so a client
//! that reconnects to another node after a failover sees the same numbers.

use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::time::Instant;

use imap_codec::ResponseCodec;
use imap_codec::encode::Encoder;
use imap_types::IntoStatic;
use imap_types::command::{Command, CommandBody};
use imap_types::core::{Literal, NString, Tag, Text, Vec1};
use imap_types::datetime::DateTime;
use imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_types::fetch::{Macro, MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section};
use imap_types::flag::{Flag, FlagFetch, FlagPerm, StoreResponse, StoreType};
use imap_types::mailbox::ListMailbox;
use imap_types::mailbox::Mailbox;
use imap_types::response::{Capability, Code, Data, Response, Status};
use imap_types::search::SearchKey;
use imap_types::sequence::SequenceSet;
use imap_types::status::{StatusDataItem, StatusDataItemName};

use super::{sets, structure};
use crate::limits::LoginThrottle;
use crate::service::{Delivery, FlagChange, MailService, MessageInfo, ServiceError};

/// What the server does after sending a command's responses.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Continue,
    /// Upgrade the connection to TLS (STARTTLS was answered OK).
    StartTls,
    /// Enter IDLE: the continuation was sent; wait for DONE, polling for changes.
    Idle,
    Close,
}

/// The mailbox a session has selected.
struct Selected {
    name: String,
    read_only: bool,
    /// The mailbox's UIDVALIDITY when selected: a different one means it was deleted and
    /// created again, and this session's UIDs mean nothing any more.
    uid_validity: u32,
    /// UIDs in order: message sequence number n is `uids[n - 1]`.
    uids: Vec<u32>,
    highest_modseq: u64,
}

/// One client's session.
pub struct Session {
    service: Arc<dyn MailService>,
    logins: Arc<LoginThrottle>,
    client_ip: IpAddr,
    tls_available: bool,
    tls: bool,
    allow_insecure_auth: bool,
    max_auth_failures: u32,
    auth_failures: u32,
    user: Option<String>,
    selected: Option<Selected>,
    condstore: bool,
}

pub fn encode(response: &Response<'_>) -> Vec<u8> {
    ResponseCodec::default().encode(response).dump()
}

fn status(tag: &Tag<'_>, kind: imap_types::response::StatusKind, code: Option<Code<'static>>, text: &str) -> Vec<u8> {
    let text = Text::try_from(text.to_string()).unwrap_or_else(|_| Text::unvalidated("done"));
    let body = imap_types::response::StatusBody { kind, code, text };
    encode(&Response::Status(Status::Tagged(imap_types::response::Tagged { tag: tag.clone(), body })))
}

fn ok(tag: &Tag<'_>, code: Option<Code<'static>>, text: &str) -> Vec<u8> {
    status(tag, imap_types::response::StatusKind::Ok, code, text)
}

fn no(tag: &Tag<'_>, code: Option<Code<'static>>, text: &str) -> Vec<u8> {
    status(tag, imap_types::response::StatusKind::No, code, text)
}

fn bad(tag: &Tag<'_>, text: &str) -> Vec<u8> {
    status(tag, imap_types::response::StatusKind::Bad, None, text)
}

fn untagged_ok(code: Code<'static>, text: &str) -> Vec<u8> {
    encode(&Response::Status(Status::ok(None, Some(code), text.to_string()).expect("valid text")))
}

fn data(data: Data<'static>) -> Vec<u8> {
    encode(&Response::Data(data))
}

/// `*` untagged BYE, e.g. before closing an idle connection.
pub fn bye(text: &str) -> Vec<u8> {
    encode(&Response::Status(Status::bye(None, text.to_string()).expect("valid text")))
}

fn nz(value: u32) -> NonZeroU32 {
    NonZeroU32::new(value.max(1)).expect("at least 1")
}

fn name_of(mailbox: &Mailbox<'_>) -> String {
    match mailbox {
        Mailbox::Inbox => "INBOX".into(),
        Mailbox::Other(other) => {
            let name = String::from_utf8_lossy(other.as_ref()).into_owned();
            if name.eq_ignore_ascii_case("INBOX") { "INBOX".into() } else { name }
        }
    }
}

fn pattern_of(pattern: &ListMailbox<'_>) -> Vec<u8> {
    match pattern {
        ListMailbox::Token(token) => token.as_ref().to_vec(),
        ListMailbox::String(string) => string.as_ref().to_vec(),
    }
}

fn mailbox_of(name: &str) -> Option<Mailbox<'static>> {
    Mailbox::try_from(name.to_string()).ok()
}

fn flags_of(strings: &[String]) -> Vec<FlagFetch<'static>> {
    strings
        .iter()
        .filter_map(|s| Flag::try_from(s.as_str()).ok().map(IntoStatic::into_static))
        .map(FlagFetch::Flag)
        .collect()
}

fn uid_set(uids: &[u32]) -> Option<UidSet> {
    let elements: Vec<UidElement> = uids.iter().map(|&u| UidElement::Single(nz(u))).collect();
    Vec1::try_from(elements).ok().map(UidSet)
}

fn internal_date(ms: u64) -> DateTime {
    let utc = chrono::DateTime::from_timestamp_millis(ms as i64).unwrap_or_default();
    DateTime::unvalidated(utc.with_timezone(&chrono::FixedOffset::east_opt(0).expect("UTC")))
}

/// A temporary failure of the cluster, for a NO response.
fn unavailable(error: &ServiceError) -> String {
    format!("[UNAVAILABLE] {error}; try again")
}

const SYSTEM_FLAGS: [Flag<'static>; 5] = [Flag::Answered, Flag::Flagged, Flag::Deleted, Flag::Seen, Flag::Draft];

impl Session {
    pub fn new(
        service: Arc<dyn MailService>,
        logins: Arc<LoginThrottle>,
        client_ip: IpAddr,
        tls_available: bool,
        allow_insecure_auth: bool,
        max_auth_failures: u32,
    ) -> Self {
        Self {
            service,
            logins,
            client_ip,
            tls_available,
            tls: false,
            allow_insecure_auth,
            max_auth_failures,
            auth_failures: 0,
            user: None,
            selected: None,
            condstore: false,
        }
    }

    /// The greeting, with the capabilities.
    pub fn greeting(&self) -> Vec<u8> {
        untagged_ok(Code::Capability(self.capabilities()), "UMS IMAP4rev1 ready")
    }

    pub fn is_authenticated(&self) -> bool {
        self.user.is_some()
    }

    pub fn tls_started(&mut self) {
        self.tls = true;
    }

    fn auth_allowed(&self) -> bool {
        self.tls || self.allow_insecure_auth
    }

    fn capabilities(&self) -> Vec1<Capability<'static>> {
        let mut caps = vec![Capability::Imap4Rev1];
        if self.tls_available && !self.tls {
            caps.push(Capability::StartTls);
        }
        if self.user.is_none() {
            if self.auth_allowed() {
                caps.push(Capability::Auth(imap_types::auth::AuthMechanism::Plain));
                caps.push(Capability::SaslIr);
            } else {
                caps.push(Capability::LoginDisabled);
            }
        }
        caps.extend([
            Capability::Idle,
            Capability::UidPlus,
            Capability::Move,
            Capability::Namespace,
            Capability::LiteralPlus,
            Capability::Enable,
            Capability::CondStore,
            Capability::Unselect,
        ]);
        Vec1::try_from(caps).expect("not empty")
    }

    /// One IDLE poll: a cheap look at this node's replica of the selected mailbox (the
    /// leader's, if this node holds no replica of it), and a refresh when anything
    /// changed. False when the mailbox is gone: the session must end.
    pub async fn idle_tick(&mut self, out: &mut Vec<u8>) -> bool {
        let (Some(user), Some(selected)) = (self.user.clone(), self.selected.as_ref()) else { return true };
        let state = match self.service.mailbox(&user, &selected.name, true).await {
            Err(ServiceError::NotFound(_)) => self.service.mailbox(&user, &selected.name, false).await,
            local => local,
        };
        let state = match state {
            Ok(state) => state,
            Err(ServiceError::NotFound(_)) => return self.refresh(out).await,
            Err(_) => return true,
        };
        let known_last = selected.uids.last().copied().unwrap_or(0);
        let changed = state.uid_validity != selected.uid_validity
            || state.highest_modseq > selected.highest_modseq
            || state.uid_next.saturating_sub(1) > known_last
            || state.messages as usize != selected.uids.len();
        !changed || self.refresh(out).await
    }

    /// Checks credentials (throttled per IP and account); the user id or why not.
    pub async fn login(&mut self, tag: &Tag<'_>, login: &str, password: &str) -> (Vec<u8>, After) {
        if !self.auth_allowed() {
            return (
                no(
                    tag,
                    Some(Code::Other(imap_types::response::CodeOther::unvalidated(&b"PRIVACYREQUIRED"[..]))),
                    "Use STARTTLS first",
                ),
                After::Continue,
            );
        }
        if !self.logins.allows(self.client_ip, login, Instant::now()) {
            return (no(tag, None, "[UNAVAILABLE] Too many failed logins, try again later"), After::Continue);
        }
        match self.service.verify_login(login, password).await {
            Ok(Some(account)) => {
                self.logins.record_success(self.client_ip, login);
                // Every user has an INBOX (older users get theirs here).
                if let Err(e) = self.service.create_mailbox(&account.user_id, "INBOX").await
                    && !matches!(e, ServiceError::Conflict(_))
                {
                    return (no(tag, None, &unavailable(&e)), After::Continue);
                }
                self.user = Some(account.user_id);
                (ok(tag, Some(Code::Capability(self.capabilities())), "Logged in"), After::Continue)
            }
            Ok(None) => {
                self.logins.record_failure(self.client_ip, login, Instant::now());
                self.auth_failures += 1;
                let reply = no(
                    tag,
                    Some(Code::Other(imap_types::response::CodeOther::unvalidated(&b"AUTHENTICATIONFAILED"[..]))),
                    "Invalid credentials",
                );
                if self.auth_failures >= self.max_auth_failures {
                    let mut out = reply;
                    out.extend(bye("Too many failed logins"));
                    return (out, After::Close);
                }
                (reply, After::Continue)
            }
            Err(e) => (no(tag, None, &unavailable(&e)), After::Continue),
        }
    }

    /// Handles one command (AUTHENTICATE's exchange and IDLE's wait are the server's).
    pub async fn handle(&mut self, command: Command<'_>) -> (Vec<u8>, After) {
        let tag = command.tag.clone();
        let mut out = Vec::new();
        let after = match self.dispatch(&tag, command.body, &mut out).await {
            Ok(after) => after,
            Err(reply) => {
                out.extend(reply);
                After::Continue
            }
        };
        (out, after)
    }

    fn user(&self, tag: &Tag<'_>) -> Result<String, Vec<u8>> {
        self.user.clone().ok_or_else(|| bad(tag, "Log in first"))
    }

    fn selected(&self, tag: &Tag<'_>) -> Result<&Selected, Vec<u8>> {
        self.selected.as_ref().ok_or_else(|| bad(tag, "Select a mailbox first"))
    }

    fn writable(&self, tag: &Tag<'_>) -> Result<&Selected, Vec<u8>> {
        let selected = self.selected(tag)?;
        if selected.read_only {
            return Err(no(tag, Some(Code::ReadOnly), "Mailbox is read-only (EXAMINE)"));
        }
        Ok(selected)
    }

    async fn dispatch(&mut self, tag: &Tag<'_>, body: CommandBody<'_>, out: &mut Vec<u8>) -> Result<After, Vec<u8>> {
        match body {
            CommandBody::Capability => {
                out.extend(data(Data::Capability(self.capabilities())));
                out.extend(ok(tag, None, "Capabilities listed"));
            }
            CommandBody::Noop | CommandBody::Check => {
                if !self.refresh(out).await {
                    return Ok(After::Close);
                }
                out.extend(ok(tag, None, "Done"));
            }
            CommandBody::Logout => {
                out.extend(bye("Logging out"));
                out.extend(ok(tag, None, "Logged out"));
                return Ok(After::Close);
            }
            CommandBody::StartTLS => {
                if self.tls || !self.tls_available {
                    return Err(bad(tag, "STARTTLS not available"));
                }
                out.extend(ok(tag, None, "Begin TLS negotiation now"));
                return Ok(After::StartTls);
            }
            CommandBody::Login { username, password } => {
                if self.user.is_some() {
                    return Err(bad(tag, "Already logged in"));
                }
                let login = String::from_utf8_lossy(username.as_ref()).into_owned();
                let password = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                let (reply, after) = self.login(tag, &login, &password).await;
                out.extend(reply);
                return Ok(after);
            }
            CommandBody::Authenticate { .. } => return Err(bad(tag, "AUTHENTICATE is handled by the server")),
            CommandBody::Enable { capabilities } => {
                self.user(tag)?;
                let mut enabled = Vec::new();
                for capability in capabilities.as_ref() {
                    if matches!(capability, imap_types::extensions::enable::CapabilityEnable::CondStore) {
                        self.condstore = true;
                        enabled.push(capability.clone());
                    }
                }
                out.extend(data(Data::Enabled {
                    capabilities: enabled.into_iter().map(|c| c.into_static()).collect(),
                }));
                out.extend(ok(tag, None, "Enabled"));
            }
            CommandBody::Namespace => {
                self.user(tag)?;
                out.extend_from_slice(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
                out.extend(ok(tag, None, "Namespaces listed"));
            }
            CommandBody::Select { mailbox, .. } => return self.select(tag, &name_of(&mailbox), false, out).await,
            CommandBody::Examine { mailbox, .. } => return self.select(tag, &name_of(&mailbox), true, out).await,
            CommandBody::Unselect => {
                self.selected(tag)?;
                self.selected = None;
                out.extend(ok(tag, None, "Unselected"));
            }
            CommandBody::Close => {
                let selected = self.selected(tag)?;
                if !selected.read_only {
                    let (user, name) = (self.user(tag)?, selected.name.clone());
                    self.service.expunge(&user, &name, None).await.map_err(|e| no(tag, None, &unavailable(&e)))?;
                }
                self.selected = None;
                out.extend(ok(tag, None, "Closed"));
            }
            CommandBody::Create { mailbox } => {
                let user = self.user(tag)?;
                let name = name_of(&mailbox);
                let name = name.trim_end_matches('/');
                match self.service.create_mailbox(&user, name).await {
                    Ok(()) => out.extend(ok(tag, None, "Created")),
                    Err(ServiceError::Conflict(_)) => out.extend(no(
                        tag,
                        Some(Code::Other(imap_types::response::CodeOther::unvalidated(&b"ALREADYEXISTS"[..]))),
                        "Mailbox exists",
                    )),
                    Err(ServiceError::Invalid(e)) => out.extend(no(tag, None, &e)),
                    Err(e) => out.extend(no(tag, None, &unavailable(&e))),
                }
            }
            CommandBody::Delete { mailbox } => {
                let user = self.user(tag)?;
                let name = name_of(&mailbox);
                if self.selected.as_ref().is_some_and(|s| s.name == name) {
                    self.selected = None;
                }
                match self.service.delete_mailbox(&user, &name).await {
                    Ok(()) => out.extend(ok(tag, None, "Deleted")),
                    Err(ServiceError::NotFound(e) | ServiceError::Invalid(e)) => out.extend(no(tag, None, &e)),
                    Err(e) => out.extend(no(tag, None, &unavailable(&e))),
                }
            }
            CommandBody::Rename { from, to } => {
                let user = self.user(tag)?;
                match self.service.rename_mailbox(&user, &name_of(&from), &name_of(&to)).await {
                    Ok(()) => out.extend(ok(tag, None, "Renamed")),
                    Err(ServiceError::NotFound(e) | ServiceError::Invalid(e) | ServiceError::Conflict(e)) => {
                        out.extend(no(tag, None, &e))
                    }
                    Err(e) => out.extend(no(tag, None, &unavailable(&e))),
                }
            }
            CommandBody::Subscribe { mailbox } => self.set_subscribed(tag, &name_of(&mailbox), true, out).await?,
            CommandBody::Unsubscribe { mailbox } => self.set_subscribed(tag, &name_of(&mailbox), false, out).await?,
            CommandBody::List { reference, mailbox_wildcard } => {
                self.list(tag, &name_of(&reference), &pattern_of(&mailbox_wildcard), false, out).await?
            }
            CommandBody::Lsub { reference, mailbox_wildcard } => {
                self.list(tag, &name_of(&reference), &pattern_of(&mailbox_wildcard), true, out).await?
            }
            CommandBody::Status { mailbox, item_names } => {
                self.status(tag, &name_of(&mailbox), &item_names, out).await?
            }
            CommandBody::Append { mailbox, flags, date, message } => {
                let user = self.user(tag)?;
                let name = name_of(&mailbox);
                let raw = match message {
                    imap_types::extensions::binary::LiteralOrLiteral8::Literal(literal) => literal.data().to_vec(),
                    imap_types::extensions::binary::LiteralOrLiteral8::Literal8(literal) => literal.data.to_vec(),
                };
                let delivery = Delivery {
                    user_id: user,
                    mailbox: name.clone(),
                    raw,
                    kind: "email".into(),
                    client_ref: "imap-append".into(),
                    flags: flags.iter().map(|f| f.to_string()).collect(),
                    internal_date_ms: date.map(|d| d.as_ref().timestamp_millis().max(0) as u64),
                    existing_mailbox: true,
                    ..Delivery::default()
                };
                match self.service.deliver(delivery).await {
                    Ok(stored) => {
                        let code = Code::AppendUid { uid_validity: nz(stored.uid_validity), uid: nz(stored.uid) };
                        if self.selected.as_ref().is_some_and(|s| s.name == name) && !self.refresh(out).await {
                            return Ok(After::Close);
                        }
                        out.extend(ok(tag, Some(code), "Appended"));
                    }
                    Err(ServiceError::NotFound(_)) => out.extend(no(tag, Some(Code::TryCreate), "No such mailbox")),
                    Err(e) => out.extend(no(tag, None, &unavailable(&e))),
                }
            }
            CommandBody::Expunge => {
                let (user, name) = (self.user(tag)?, self.writable(tag)?.name.clone());
                let expunged =
                    self.service.expunge(&user, &name, None).await.map_err(|e| no(tag, None, &unavailable(&e)))?;
                self.report_expunged(&expunged, out);
                out.extend(ok(tag, None, "Expunged"));
            }
            CommandBody::ExpungeUid { sequence_set } => {
                let (user, selected) = (self.user(tag)?, self.writable(tag)?);
                let uids: Vec<u32> =
                    sets::select(&sequence_set, &selected.uids, true).into_iter().map(|(_, uid)| uid).collect();
                let name = selected.name.clone();
                let expunged = self
                    .service
                    .expunge(&user, &name, Some(&uids))
                    .await
                    .map_err(|e| no(tag, None, &unavailable(&e)))?;
                self.report_expunged(&expunged, out);
                out.extend(ok(tag, None, "Expunged"));
            }
            CommandBody::Search { criteria, uid, .. } => self.search(tag, criteria.as_ref(), uid, out).await?,
            CommandBody::Fetch { sequence_set, macro_or_item_names, uid, modifiers } => {
                let changed_since = modifiers.iter().find_map(|m| match m {
                    imap_types::command::FetchModifier::ChangedSince(since) => Some(since.get()),
                    _ => None,
                });
                self.fetch(tag, &sequence_set, macro_or_item_names, uid, changed_since, out).await?
            }
            CommandBody::Store { sequence_set, kind, response, flags, uid, modifiers } => {
                let unchanged_since =
                    modifiers.iter().map(|imap_types::command::StoreModifier::UnchangedSince(since)| *since).next();
                let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
                self.store(
                    tag,
                    &sequence_set,
                    kind,
                    response == StoreResponse::Silent,
                    &flags,
                    uid,
                    unchanged_since,
                    out,
                )
                .await?
            }
            CommandBody::Copy { sequence_set, mailbox, uid } => {
                self.copy(tag, &sequence_set, &name_of(&mailbox), uid, false, out).await?
            }
            CommandBody::Move { sequence_set, mailbox, uid } => {
                self.copy(tag, &sequence_set, &name_of(&mailbox), uid, true, out).await?
            }
            CommandBody::Idle => {
                self.selected(tag)?;
                out.extend_from_slice(b"+ idling\r\n");
                return Ok(After::Idle);
            }
            _ => return Err(bad(tag, "Command not supported")),
        }
        Ok(After::Continue)
    }

    async fn set_subscribed(
        &mut self,
        tag: &Tag<'_>,
        name: &str,
        subscribed: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), Vec<u8>> {
        let user = self.user(tag)?;
        match self.service.subscribe(&user, name, subscribed).await {
            Ok(()) => out.extend(ok(tag, None, "Done")),
            Err(ServiceError::NotFound(e)) => out.extend(no(tag, None, &e)),
            Err(e) => out.extend(no(tag, None, &unavailable(&e))),
        }
        Ok(())
    }

    async fn select(
        &mut self,
        tag: &Tag<'_>,
        name: &str,
        read_only: bool,
        out: &mut Vec<u8>,
    ) -> Result<After, Vec<u8>> {
        let user = self.user(tag)?;
        self.selected = None;
        let state = match self.service.mailbox(&user, name, false).await {
            Ok(state) => state,
            Err(ServiceError::NotFound(_)) => return Err(no(tag, None, "No such mailbox")),
            Err(e) => return Err(no(tag, None, &unavailable(&e))),
        };
        let messages =
            self.service.messages(&user, name, None, false).await.map_err(|e| no(tag, None, &unavailable(&e)))?;
        let uids: Vec<u32> = messages.iter().map(|m| m.uid).collect();
        out.extend(data(Data::Flags(SYSTEM_FLAGS.to_vec())));
        out.extend(data(Data::Exists(uids.len() as u32)));
        out.extend(data(Data::Recent(0)));
        if let Some(first) = messages.iter().position(|m| !m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen"))) {
            out.extend(untagged_ok(Code::Unseen(nz(first as u32 + 1)), "First unseen"));
        }
        let mut permanent: Vec<FlagPerm<'static>> = SYSTEM_FLAGS.iter().cloned().map(FlagPerm::Flag).collect();
        permanent.push(FlagPerm::Asterisk);
        out.extend(untagged_ok(
            Code::PermanentFlags(if read_only { Vec::new() } else { permanent }),
            "Flags permitted",
        ));
        // Two reads: a message may have arrived between them.
        let uid_next = state.uid_next.max(uids.last().map_or(1, |&u| u + 1));
        out.extend(untagged_ok(Code::UidNext(nz(uid_next)), "Predicted next UID"));
        out.extend(untagged_ok(Code::UidValidity(nz(state.uid_validity)), "UIDs valid"));
        let highest_modseq = messages.iter().map(|m| m.modseq).max().unwrap_or(0).max(state.highest_modseq);
        out.extend(untagged_ok(
            Code::HighestModSeq(NonZeroU64::new(highest_modseq.max(1)).expect("nonzero")),
            "Highest",
        ));
        self.selected = Some(Selected {
            name: name.to_string(),
            read_only,
            uid_validity: state.uid_validity,
            uids,
            highest_modseq,
        });
        let code = if read_only { Code::ReadOnly } else { Code::ReadWrite };
        out.extend(ok(tag, Some(code), if read_only { "EXAMINE completed" } else { "SELECT completed" }));
        Ok(After::Continue)
    }

    async fn list(
        &mut self,
        tag: &Tag<'_>,
        reference: &str,
        pattern: &[u8],
        subscribed_only: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), Vec<u8>> {
        let user = self.user(tag)?;
        let pattern = String::from_utf8_lossy(pattern).into_owned();
        if pattern.is_empty() {
            // The hierarchy delimiter and root.
            out.extend_from_slice(
                format!("* {} (\\Noselect) \"/\" \"\"\r\n", if subscribed_only { "LSUB" } else { "LIST" }).as_bytes(),
            );
            out.extend(ok(tag, None, "Listed"));
            return Ok(());
        }
        let reference = if reference.is_empty() || reference.ends_with('/') {
            reference.to_string()
        } else {
            format!("{reference}/")
        };
        let full = format!("{reference}{pattern}");
        let mailboxes = self.service.mailboxes(&user).await.map_err(|e| no(tag, None, &unavailable(&e)))?;
        for mailbox in mailboxes.iter().filter(|m| sets::matches(&full, &m.name) && (!subscribed_only || m.subscribed))
        {
            let Some(name) = mailbox_of(&mailbox.name) else { continue };
            let has_children = mailboxes.iter().any(|m| m.name.starts_with(&format!("{}/", mailbox.name)));
            let attribute = if has_children { "\\HasChildren" } else { "\\HasNoChildren" };
            let items =
                vec![imap_types::flag::FlagNameAttribute::from(imap_types::core::Atom::unvalidated(&attribute[1..]))];
            let delimiter = Some(imap_types::core::QuotedChar::unvalidated('/'));
            out.extend(data(if subscribed_only {
                Data::Lsub { items, delimiter, mailbox: name }
            } else {
                Data::List { items, delimiter, mailbox: name }
            }));
        }
        out.extend(ok(tag, None, "Listed"));
        Ok(())
    }

    async fn status(
        &mut self,
        tag: &Tag<'_>,
        name: &str,
        items: &[StatusDataItemName],
        out: &mut Vec<u8>,
    ) -> Result<(), Vec<u8>> {
        let user = self.user(tag)?;
        let mailboxes = self.service.mailboxes(&user).await.map_err(|e| no(tag, None, &unavailable(&e)))?;
        let Some(state) = mailboxes.into_iter().find(|m| m.name == name) else {
            return Err(no(tag, None, "No such mailbox"));
        };
        let values: Vec<StatusDataItem> = items
            .iter()
            .filter_map(|item| match item {
                StatusDataItemName::Messages => Some(StatusDataItem::Messages(state.messages)),
                StatusDataItemName::Recent => Some(StatusDataItem::Recent(0)),
                StatusDataItemName::UidNext => Some(StatusDataItem::UidNext(nz(state.uid_next))),
                StatusDataItemName::UidValidity => Some(StatusDataItem::UidValidity(nz(state.uid_validity))),
                StatusDataItemName::Unseen => Some(StatusDataItem::Unseen(state.unseen)),
                StatusDataItemName::HighestModSeq => Some(StatusDataItem::HighestModSeq(state.highest_modseq)),
                _ => None,
            })
            .collect();
        let mailbox = mailbox_of(name).ok_or_else(|| bad(tag, "Bad mailbox name"))?;
        out.extend(data(Data::Status { mailbox, items: values.into() }));
        out.extend(ok(tag, None, "STATUS completed"));
        Ok(())
    }

    /// Tells the client about expunged messages (highest sequence number first, so the
    /// numbers stay right) and forgets them.
    fn report_expunged(&mut self, expunged: &[u32], out: &mut Vec<u8>) {
        let Some(selected) = self.selected.as_mut() else { return };
        let mut positions: Vec<usize> =
            expunged.iter().filter_map(|uid| selected.uids.iter().position(|u| u == uid)).collect();
        positions.sort_unstable_by(|a, b| b.cmp(a));
        for position in positions {
            selected.uids.remove(position);
            out.extend(data(Data::Expunge(nz(position as u32 + 1))));
        }
    }

    /// Brings the selected mailbox up to date: EXPUNGE for messages gone, EXISTS for new
    /// ones, FETCH FLAGS for messages changed elsewhere. False (with a BYE in `out`) when
    /// the mailbox was deleted, or deleted and created again: the session must end
    /// (RFC 3501 7.1.1: UIDVALIDITY may only change between sessions).
    pub async fn refresh(&mut self, out: &mut Vec<u8>) -> bool {
        let (Some(user), Some(selected)) = (self.user.clone(), self.selected.as_ref()) else { return true };
        let name = selected.name.clone();
        match self.service.mailbox(&user, &name, false).await {
            Ok(state) if state.uid_validity == selected.uid_validity => {}
            Ok(_) | Err(ServiceError::NotFound(_)) => {
                out.extend(bye("The selected mailbox was deleted or replaced"));
                return false;
            }
            Err(_) => return true,
        }
        let Ok(messages) = self.service.messages(&user, &name, None, false).await else { return true };
        let current: Vec<u32> = messages.iter().map(|m| m.uid).collect();
        let gone: Vec<u32> = selected.uids.iter().filter(|u| current.binary_search(u).is_err()).copied().collect();
        self.report_expunged(&gone, out);
        let selected = self.selected.as_mut().expect("checked above");
        let known_max = selected.uids.last().copied().unwrap_or(0);
        let before = selected.highest_modseq;
        let new: Vec<u32> = current.iter().filter(|&&u| u > known_max).copied().collect();
        if !new.is_empty() {
            selected.uids.extend(new);
            out.extend(data(Data::Exists(selected.uids.len() as u32)));
        }
        for message in messages.iter().filter(|m| m.modseq > before && m.uid <= known_max) {
            if let Some(position) = selected.uids.iter().position(|&u| u == message.uid) {
                let mut items =
                    vec![MessageDataItem::Flags(flags_of(&message.flags)), MessageDataItem::Uid(nz(message.uid))];
                if self.condstore {
                    items.push(MessageDataItem::ModSeq(NonZeroU64::new(message.modseq.max(1)).expect("nonzero")));
                }
                out.extend(data(Data::Fetch {
                    seq: nz(position as u32 + 1),
                    items: Vec1::try_from(items).expect("not empty"),
                }));
            }
        }
        selected.highest_modseq = messages.iter().map(|m| m.modseq).max().unwrap_or(0).max(before);
        true
    }

    async fn fetch(
        &mut self,
        tag: &Tag<'_>,
        set: &SequenceSet,
        names: MacroOrMessageDataItemNames<'_>,
        by_uid: bool,
        changed_since: Option<u64>,
        out: &mut Vec<u8>,
    ) -> Result<(), Vec<u8>> {
        let user = self.user(tag)?;
        let selected = self.selected(tag)?;
        let targets = resolve_set(tag, selected, set, by_uid)?;
        let (name, read_only) = (selected.name.clone(), selected.read_only);
        let mut names: Vec<MessageDataItemName<'_>> = match names {
            MacroOrMessageDataItemNames::Macro(m) => {
                let mut names = vec![
                    MessageDataItemName::Flags,
                    MessageDataItemName::InternalDate,
                    MessageDataItemName::Rfc822Size,
                ];
                if !matches!(m, Macro::Fast) {
                    names.push(MessageDataItemName::Envelope);
                }
                names
            }
            MacroOrMessageDataItemNames::MessageDataItemNames(names) => names,
        };
        if names
            .iter()
            .any(|n| matches!(n, MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. }))
        {
            return Err(no(tag, None, "BINARY is not supported"));
        }
        if by_uid && !names.contains(&MessageDataItemName::Uid) {
            names.insert(0, MessageDataItemName::Uid);
        }
        if (self.condstore || changed_since.is_some()) && !names.contains(&MessageDataItemName::ModSeq) {
            names.push(MessageDataItemName::ModSeq);
        }
        let needs_body = names.iter().any(|n| {
            matches!(
                n,
                MessageDataItemName::BodyExt { .. }
                    | MessageDataItemName::Rfc822
                    | MessageDataItemName::Rfc822Header
                    | MessageDataItemName::Rfc822Text
                    | MessageDataItemName::Envelope
                    | MessageDataItemName::BodyStructure
                    | MessageDataItemName::Body
            )
        });
        let sets_seen = !read_only
            && names.iter().any(|n| {
                matches!(
                    n,
                    MessageDataItemName::BodyExt { peek: false, .. }
                        | MessageDataItemName::Rfc822
                        | MessageDataItemName::Rfc822Text
                )
            });
        let uids: Vec<u32> = targets.iter().map(|&(_, uid)| uid).collect();
        let mut messages = self
            .service
            .messages(&user, &name, Some(&uids), needs_body)
            .await
            .map_err(|e| no(tag, None, &unavailable(&e)))?;
        if sets_seen {
            let unseen: Vec<u32> = messages
                .iter()
                .filter(|m| !m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")))
                .map(|m| m.uid)
                .collect();
            if !unseen.is_empty() {
                let stored = self
                    .service
                    .store_flags(&user, &name, &unseen, FlagChange::Add, &["\\Seen".to_string()], None)
                    .await
                    .map_err(|e| no(tag, None, &unavailable(&e)))?;
                for changed in stored.messages {
                    if let Some(m) = messages.iter_mut().find(|m| m.uid == changed.uid) {
                        (m.flags, m.modseq) = (changed.flags, changed.modseq);
                    }
                }
                if !names.contains(&MessageDataItemName::Flags) {
                    names.push(MessageDataItemName::Flags);
                }
            }
        }
        for message in messages.iter().filter(|m| changed_since.is_none_or(|since| m.modseq > since)) {
            let Some(&(seq, _)) = targets.iter().find(|&&(_, uid)| uid == message.uid) else { continue };
            let items: Vec<MessageDataItem<'static>> = names.iter().filter_map(|n| item(n, message)).collect();
            if let Ok(items) = Vec1::try_from(items) {
                out.extend(data(Data::Fetch { seq: nz(seq), items }));
            }
        }
        out.extend(ok(tag, None, "FETCH completed"));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn store(
        &mut self,
        tag: &Tag<'_>,
        set: &SequenceSet,
        kind: StoreType,
        silent: bool,
        flags: &[String],
        by_uid: bool,
        unchanged_since: Option<u64>,
        out: &mut Vec<u8>,
    ) -> Result<(), Vec<u8>> {
        let user = self.user(tag)?;
        let selected = self.writable(tag)?;
        let targets = resolve_set(tag, selected, set, by_uid)?;
        let name = selected.name.clone();
        let uids: Vec<u32> = targets.iter().map(|&(_, uid)| uid).collect();
        let change = match kind {
            StoreType::Add => FlagChange::Add,
            StoreType::Remove => FlagChange::Remove,
            StoreType::Replace => FlagChange::Replace,
        };
        let stored = self
            .service
            .store_flags(&user, &name, &uids, change, flags, unchanged_since)
            .await
            .map_err(|e| no(tag, None, &unavailable(&e)))?;
        let condstore = self.condstore || unchanged_since.is_some();
        for message in &stored.messages {
            let Some(&(seq, _)) = targets.iter().find(|&&(_, uid)| uid == message.uid) else { continue };
            if silent && !condstore {
                continue;
            }
            let mut items = Vec::new();
            if !silent {
                items.push(MessageDataItem::Flags(flags_of(&message.flags)));
            }
            if by_uid {
                items.push(MessageDataItem::Uid(nz(message.uid)));
            }
            if condstore {
                items.push(MessageDataItem::ModSeq(NonZeroU64::new(message.modseq.max(1)).expect("nonzero")));
            }
            if let Ok(items) = Vec1::try_from(items) {
                out.extend(data(Data::Fetch { seq: nz(seq), items }));
            }
        }
        // highest_modseq stays: only a refresh may advance it, or changes made by other
        // sessions in between would never be reported.
        match SequenceSet::try_from(stored.modified.iter().map(|&u| nz(u)).collect::<Vec<_>>()) {
            Ok(modified) => {
                out.extend(ok(tag, Some(Code::Modified(modified)), "Conditional STORE failed for some messages"))
            }
            Err(_) => out.extend(ok(tag, None, "STORE completed")),
        }
        Ok(())
    }

    async fn copy(
        &mut self,
        tag: &Tag<'_>,
        set: &SequenceSet,
        to: &str,
        by_uid: bool,
        remove: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), Vec<u8>> {
        let user = self.user(tag)?;
        let selected = if remove { self.writable(tag)? } else { self.selected(tag)? };
        let uids: Vec<u32> = resolve_set(tag, selected, set, by_uid)?.into_iter().map(|(_, uid)| uid).collect();
        let from = selected.name.clone();
        let copied = match self.service.copy_messages(&user, &from, to, &uids, remove).await {
            Ok(copied) => copied,
            Err(ServiceError::NotFound(_)) => return Err(no(tag, Some(Code::TryCreate), "No such mailbox")),
            Err(ServiceError::Invalid(e)) => return Err(no(tag, None, &e)),
            Err(e) => return Err(no(tag, None, &unavailable(&e))),
        };
        let code = match (uid_set(&copied.source_uids), uid_set(&copied.dest_uids)) {
            (Some(source), Some(destination)) => {
                Some(Code::CopyUid { uid_validity: nz(copied.uid_validity), source, destination })
            }
            _ => None,
        };
        if remove {
            if let Some(code) = code {
                out.extend(untagged_ok(code, "Moved"));
            }
            self.report_expunged(&copied.expunged, out);
            out.extend(ok(tag, None, "MOVE completed"));
        } else {
            out.extend(ok(tag, code, "COPY completed"));
        }
        Ok(())
    }

    async fn search(
        &mut self,
        tag: &Tag<'_>,
        criteria: &[SearchKey<'_>],
        by_uid: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), Vec<u8>> {
        let user = self.user(tag)?;
        let selected = self.selected(tag)?;
        let name = selected.name.clone();
        let needs_body = criteria.iter().any(needs_text);
        // Sequence numbers are the session's: messages it has not been told about yet
        // (or that are gone) are not searched.
        let uids = selected.uids.clone();
        let messages = self
            .service
            .messages(&user, &name, Some(&uids), needs_body)
            .await
            .map_err(|e| no(tag, None, &unavailable(&e)))?;
        let mut hits = Vec::new();
        let mut highest_modseq = 0;
        for message in &messages {
            let Ok(position) = uids.binary_search(&message.uid) else { continue };
            let seq = position as u32 + 1;
            if criteria.iter().all(|key| matches_key(key, message, seq, &uids)) {
                hits.push(nz(if by_uid { message.uid } else { seq }));
                highest_modseq = highest_modseq.max(message.modseq);
            }
        }
        // RFC 7162: a search by MODSEQ reports the highest modseq of what it found.
        let modseq = criteria
            .iter()
            .any(|k| matches!(k, SearchKey::ModSequence { .. }))
            .then_some(highest_modseq)
            .and_then(NonZeroU64::new);
        out.extend(data(Data::Search(hits, modseq)));
        out.extend(ok(tag, None, "SEARCH completed"));
        Ok(())
    }
}

/// The `(sequence number, UID)` pairs a command's set names in the selected mailbox; BAD
/// for a sequence number beyond the last message.
fn resolve_set(
    tag: &Tag<'_>,
    selected: &Selected,
    set: &SequenceSet,
    by_uid: bool,
) -> Result<Vec<(u32, u32)>, Vec<u8>> {
    if !by_uid && sets::beyond(set, selected.uids.len() as u32) {
        return Err(bad(tag, "Invalid message sequence number"));
    }
    Ok(sets::select(set, &selected.uids, by_uid))
}

/// One FETCH item of one message, if it can be given.
fn item(name: &MessageDataItemName<'_>, message: &MessageInfo) -> Option<MessageDataItem<'static>> {
    let raw = message.raw.as_deref().unwrap_or_default();
    let literal = |bytes: &[u8]| NString::from(Literal::unvalidated(bytes.to_vec()));
    Some(match name {
        MessageDataItemName::Flags => MessageDataItem::Flags(flags_of(&message.flags)),
        MessageDataItemName::Uid => MessageDataItem::Uid(nz(message.uid)),
        MessageDataItemName::InternalDate => MessageDataItem::InternalDate(internal_date(message.internal_date_ms)),
        MessageDataItemName::Rfc822Size => MessageDataItem::Rfc822Size(message.size.min(u32::MAX as u64) as u32),
        MessageDataItemName::ModSeq => {
            MessageDataItem::ModSeq(NonZeroU64::new(message.modseq.max(1)).expect("nonzero"))
        }
        MessageDataItemName::Rfc822 => MessageDataItem::Rfc822(literal(raw)),
        MessageDataItemName::Envelope => MessageDataItem::Envelope(structure::envelope(raw)),
        MessageDataItemName::BodyStructure => MessageDataItem::BodyStructure(structure::body_structure(raw)),
        MessageDataItemName::Body => MessageDataItem::Body(structure::body_structure(raw)),
        MessageDataItemName::Rfc822Header => MessageDataItem::Rfc822Header(literal(sets::header(raw))),
        MessageDataItemName::Rfc822Text => MessageDataItem::Rfc822Text(literal(sets::text(raw))),
        MessageDataItemName::BodyExt { section, partial, .. } => {
            let whole: Vec<u8> = match section {
                None => raw.to_vec(),
                Some(Section::Header(None)) => sets::header(raw).to_vec(),
                Some(Section::Text(None)) => sets::text(raw).to_vec(),
                Some(Section::HeaderFields(None, fields)) => {
                    sets::header_fields(raw, &field_names(fields.as_ref()), false)
                }
                Some(Section::HeaderFieldsNot(None, fields)) => {
                    sets::header_fields(raw, &field_names(fields.as_ref()), true)
                }
                Some(Section::Part(part)) => structure::part_bytes(raw, &part_path(part), false).unwrap_or_default(),
                Some(Section::Mime(part)) => structure::part_bytes(raw, &part_path(part), true).unwrap_or_default(),
                // HEADER and TEXT of an attached message (BODY[2.HEADER]).
                Some(Section::Header(Some(part)) | Section::Text(Some(part))) => {
                    let inner = structure::part_bytes(raw, &part_path(part), false).unwrap_or_default();
                    if matches!(section, Some(Section::Header(_))) {
                        sets::header(&inner).to_vec()
                    } else {
                        sets::text(&inner).to_vec()
                    }
                }
                Some(Section::HeaderFields(Some(part), fields) | Section::HeaderFieldsNot(Some(part), fields)) => {
                    let inner = structure::part_bytes(raw, &part_path(part), false).unwrap_or_default();
                    sets::header_fields(
                        &inner,
                        &field_names(fields.as_ref()),
                        matches!(section, Some(Section::HeaderFieldsNot(..))),
                    )
                }
            };
            let (origin, bytes) = match partial {
                Some((origin, length)) => (Some(*origin), sets::partial(&whole, *origin, length.get()).to_vec()),
                None => (None, whole),
            };
            MessageDataItem::BodyExt {
                section: section.clone().map(|s| s.into_static()),
                origin,
                data: literal(&bytes),
            }
        }
        _ => return None,
    })
}

fn part_path(part: &imap_types::fetch::Part) -> Vec<u32> {
    part.0.as_ref().iter().map(|n| n.get()).collect()
}

fn field_names(fields: &[imap_types::core::AString<'_>]) -> Vec<String> {
    fields.iter().map(|f| String::from_utf8_lossy(f.as_ref()).into_owned()).collect()
}

fn needs_text(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(needs_text),
        SearchKey::Not(key) => needs_text(key),
        SearchKey::Or(a, b) => needs_text(a) || needs_text(b),
        SearchKey::Bcc(_)
        | SearchKey::Body(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Header(..)
        | SearchKey::Subject(_)
        | SearchKey::Text(_)
        | SearchKey::To(_)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_) => true,
        _ => false,
    }
}

fn has_flag(message: &MessageInfo, flag: &str) -> bool {
    message.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
}

/// Case-insensitive substring search in the named header fields (all fields: `None`).
fn header_contains(message: &MessageInfo, field: Option<&str>, needle: &[u8]) -> bool {
    let raw = message.raw.as_deref().unwrap_or_default();
    let haystack = match field {
        Some(name) => sets::header_fields(raw, &[name.to_string()], false),
        None => sets::header(raw).to_vec(),
    };
    contains_ignore_case(&haystack, needle)
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

fn matches_key(key: &SearchKey<'_>, message: &MessageInfo, seq: u32, uids: &[u32]) -> bool {
    let date = chrono::DateTime::from_timestamp_millis(message.internal_date_ms as i64).map(|d| d.date_naive());
    let raw = message.raw.as_deref().unwrap_or_default();
    match key {
        SearchKey::All => true,
        SearchKey::And(keys) => keys.as_ref().iter().all(|k| matches_key(k, message, seq, uids)),
        SearchKey::Not(k) => !matches_key(k, message, seq, uids),
        SearchKey::Or(a, b) => matches_key(a, message, seq, uids) || matches_key(b, message, seq, uids),
        SearchKey::SequenceSet(set) => sets::contains(set, seq, uids.len() as u32),
        SearchKey::Uid(set) => sets::contains(set, message.uid, uids.last().copied().unwrap_or(0)),
        SearchKey::Answered => has_flag(message, "\\Answered"),
        SearchKey::Unanswered => !has_flag(message, "\\Answered"),
        SearchKey::Deleted => has_flag(message, "\\Deleted"),
        SearchKey::Undeleted => !has_flag(message, "\\Deleted"),
        SearchKey::Draft => has_flag(message, "\\Draft"),
        SearchKey::Undraft => !has_flag(message, "\\Draft"),
        SearchKey::Flagged => has_flag(message, "\\Flagged"),
        SearchKey::Unflagged => !has_flag(message, "\\Flagged"),
        SearchKey::Seen | SearchKey::Old => has_flag(message, "\\Seen"),
        SearchKey::Unseen | SearchKey::New => !has_flag(message, "\\Seen"),
        SearchKey::Recent => false,
        SearchKey::Keyword(atom) => has_flag(message, atom.as_ref()),
        SearchKey::Unkeyword(atom) => !has_flag(message, atom.as_ref()),
        SearchKey::Larger(n) => message.size > *n as u64,
        SearchKey::Smaller(n) => message.size < *n as u64,
        SearchKey::Before(d) => date.is_some_and(|m| m < *d.as_ref()),
        SearchKey::On(d) => date.is_some_and(|m| m == *d.as_ref()),
        SearchKey::Since(d) => date.is_some_and(|m| m >= *d.as_ref()),
        SearchKey::ModSequence { modseq, .. } => message.modseq >= *modseq,
        SearchKey::Subject(s) => header_contains(message, Some("Subject"), s.as_ref()),
        SearchKey::From(s) => header_contains(message, Some("From"), s.as_ref()),
        SearchKey::To(s) => header_contains(message, Some("To"), s.as_ref()),
        SearchKey::Cc(s) => header_contains(message, Some("Cc"), s.as_ref()),
        SearchKey::Bcc(s) => header_contains(message, Some("Bcc"), s.as_ref()),
        SearchKey::Header(name, value) => {
            header_contains(message, Some(&String::from_utf8_lossy(name.as_ref())), value.as_ref())
        }
        SearchKey::Body(s) => contains_ignore_case(sets::text(raw), s.as_ref()),
        SearchKey::Text(s) => contains_ignore_case(raw, s.as_ref()),
        // Sent dates need the Date header parsed; treated as the internal date.
        SearchKey::SentBefore(d) => date.is_some_and(|m| m < *d.as_ref()),
        SearchKey::SentOn(d) => date.is_some_and(|m| m == *d.as_ref()),
        SearchKey::SentSince(d) => date.is_some_and(|m| m >= *d.as_ref()),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}
