//! One IMAP4rev1 session's command handling (RFC 3501 with IDLE, UIDPLUS, MOVE,
//! NAMESPACE, LITERAL+, ENABLE, CONDSTORE, UNSELECT): a decoded command in, encoded
//! responses out. The session reaches mailboxes only through [`MailService`]; framing,
//! literals, TLS and IDLE's waiting are the server's.
//!
//! UIDs, UIDVALIDITY and modseqs come from the replicated mailbox state, so a client
//! that reconnects to another node after a failover sees the same numbers.
//!
//! This file holds the session's state and the dispatch; each command family has its
//! own file, an `impl Session` block each: [`auth`] (CAPABILITY, STARTTLS, LOGIN,
//! ENABLE, ID, LOGOUT), [`select`] (SELECT/EXAMINE, CLOSE, UNSELECT, NOOP, IDLE and the
//! refresh that reports changes made elsewhere), [`mailboxes`] (CREATE, DELETE, RENAME,
//! (UN)SUBSCRIBE, LIST/LSUB, STATUS, NAMESPACE), [`append`], [`fetch`], [`store`],
//! [`search`], [`sort`] (SORT, THREAD), [`copy`] (COPY/MOVE), [`expunge`] and [`quota`]; [`selected`] is the session's view
//! of its selected mailbox, [`responses`] builds the wire answers.

mod append;
mod auth;
mod copy;
mod expunge;
mod fetch;
mod mailboxes;
mod quota;
mod responses;
mod search;
mod select;
mod selected;
mod sort;
mod store;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;

use imap_types::command::{Command, CommandBody, FetchModifier, StoreModifier};
use imap_types::core::Tag;
use imap_types::flag::StoreResponse;
use imap_types::response::Code;
use imap_types::sequence::SequenceSet;

use super::extended::Extension;
use super::sets;
use crate::logins::LoginThrottle;
use crate::mail_service::MailService;
use responses::{bad, name_of, no, pattern_of};
pub use responses::{bye, encode};
use selected::Selected;

/// What the server does after sending a command's responses.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Continue,
    /// Upgrade the connection to TLS (STARTTLS was answered OK).
    StartTls,
    /// Enter IDLE: the continuation was sent; wait for DONE, polling for changes.
    Idle,
    /// Compress the connection both ways from here on (COMPRESS was answered OK).
    Compress,
    Close,
}

/// How a command handler ends: what the server does next, or the tagged NO/BAD that
/// ends the command early (written after any untagged responses already in `out`).
type Handled = Result<After, Vec<u8>>;

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
    /// CONDSTORE was enabled (or used): FETCH and STORE responses carry MODSEQ.
    condstore: bool,
    /// QRESYNC was enabled (RFC 7162): expunges are reported as VANISHED, SELECT may
    /// resynchronise, and a new SELECT first says the old mailbox was CLOSED.
    qresync: bool,
    /// Failed logins not yet reported to the listener's offence count.
    offences: u32,
    /// COMPRESS=DEFLATE is in effect (RFC 4978).
    compressed: bool,
}

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
            qresync: false,
            offences: 0,
            compressed: false,
        }
    }

    pub fn client_ip(&self) -> IpAddr {
        self.client_ip
    }

    /// Failed logins since the last call: what counts against the client's address (see
    /// [`crate::limits`]).
    pub fn take_offences(&mut self) -> u32 {
        std::mem::take(&mut self.offences)
    }

    pub fn is_authenticated(&self) -> bool {
        self.user.is_some()
    }

    /// What tells IDLE of changes to the logged-in user's mailboxes, if the service can.
    pub fn mailbox_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.service.mailbox_changes(self.user.as_deref()?)
    }

    pub fn tls_started(&mut self) {
        self.tls = true;
    }

    /// Handles one command (AUTHENTICATE's exchange and IDLE's wait are the server's),
    /// with what it asked beyond imap-codec's form of it (ESEARCH, LIST-EXTENDED).
    pub async fn handle(&mut self, command: Command<'_>, extension: Extension) -> (Vec<u8>, After) {
        let tag = command.tag.clone();
        let mut out = Vec::new();
        let after = match self.dispatch(&tag, command.body, extension, &mut out).await {
            Ok(after) => after,
            Err(reply) => {
                out.extend(reply);
                After::Continue
            }
        };
        (out, after)
    }

    async fn dispatch(
        &mut self,
        tag: &Tag<'_>,
        body: CommandBody<'_>,
        extension: Extension,
        out: &mut Vec<u8>,
    ) -> Handled {
        match body {
            CommandBody::Capability => self.capability(tag, out),
            CommandBody::Noop | CommandBody::Check => self.noop(tag, out).await,
            CommandBody::Logout => self.logout(tag, out),
            CommandBody::StartTLS => self.starttls(tag, out),
            CommandBody::Compress { .. } => self.compress(tag, out),
            CommandBody::Login { username, password } => {
                let login = String::from_utf8_lossy(username.as_ref()).into_owned();
                let password = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                self.login_command(tag, &login, &password, out).await
            }
            CommandBody::Authenticate { .. } => Err(bad(tag, "AUTHENTICATE is handled by the server")),
            CommandBody::Enable { capabilities } => self.enable(tag, capabilities.as_ref(), out),
            CommandBody::Namespace => self.namespace(tag, out),
            CommandBody::Id { .. } => self.id(tag, out),
            CommandBody::GetQuota { root } => {
                self.get_quota(tag, &String::from_utf8_lossy(root.as_ref()), None, out).await
            }
            CommandBody::GetQuotaRoot { mailbox } => self.get_quota(tag, "", Some(&name_of(&mailbox)), out).await,
            CommandBody::SetQuota { .. } => self.set_quota(tag, out),
            CommandBody::Select { mailbox, parameters } => {
                self.select(tag, &name_of(&mailbox), false, &parameters, out).await
            }
            CommandBody::Examine { mailbox, parameters } => {
                self.select(tag, &name_of(&mailbox), true, &parameters, out).await
            }
            CommandBody::Unselect => self.unselect(tag, out),
            CommandBody::Close => self.close(tag, out).await,
            CommandBody::Create { mailbox } => self.create(tag, &name_of(&mailbox), out).await,
            CommandBody::Delete { mailbox } => self.delete(tag, &name_of(&mailbox), out).await,
            CommandBody::Rename { from, to } => self.rename(tag, &name_of(&from), &name_of(&to), out).await,
            CommandBody::Subscribe { mailbox } => self.set_subscribed(tag, &name_of(&mailbox), true, out).await,
            CommandBody::Unsubscribe { mailbox } => self.set_subscribed(tag, &name_of(&mailbox), false, out).await,
            CommandBody::List { reference, mailbox_wildcard } => {
                let options = match extension {
                    Extension::List(options) => Some(options),
                    _ => None,
                };
                self.list(tag, &name_of(&reference), &pattern_of(&mailbox_wildcard), false, options, out).await
            }
            CommandBody::Lsub { reference, mailbox_wildcard } => {
                self.list(tag, &name_of(&reference), &pattern_of(&mailbox_wildcard), true, None, out).await
            }
            CommandBody::Status { mailbox, item_names } => self.status(tag, &name_of(&mailbox), &item_names, out).await,
            CommandBody::Append { mailbox, flags, date, message } => {
                self.append(tag, &name_of(&mailbox), &flags, date, message, out).await
            }
            CommandBody::Expunge => self.expunge(tag, None, out).await,
            CommandBody::ExpungeUid { sequence_set } => self.expunge(tag, Some(&sequence_set), out).await,
            CommandBody::Search { criteria, uid, .. } => {
                let returns = match extension {
                    Extension::SearchReturn(returns) => Some(returns),
                    _ => None,
                };
                self.search(tag, criteria.as_ref(), uid, returns, out).await
            }
            CommandBody::Sort { sort_criteria, charset, search_criteria, uid } => {
                let charset = charset.as_ref().to_string();
                self.sort(tag, sort_criteria.as_ref(), &charset, search_criteria.as_ref(), uid, out).await
            }
            CommandBody::Thread { algorithm, charset, search_criteria, uid } => {
                let charset = charset.as_ref().to_string();
                self.thread(tag, &algorithm, &charset, search_criteria.as_ref(), uid, out).await
            }
            CommandBody::Fetch { sequence_set, macro_or_item_names, uid, modifiers } => {
                let changed_since = modifiers.iter().find_map(|m| match m {
                    FetchModifier::ChangedSince(since) => Some(since.get()),
                    _ => None,
                });
                let vanished = modifiers.contains(&FetchModifier::Vanished);
                let request = fetch::FetchRequest { by_uid: uid, changed_since, vanished };
                self.fetch(tag, &sequence_set, macro_or_item_names, request, out).await
            }
            CommandBody::Store { sequence_set, kind, response, flags, uid, modifiers } => {
                let unchanged_since = modifiers.iter().map(|StoreModifier::UnchangedSince(since)| *since).next();
                let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
                let silent = response == StoreResponse::Silent;
                let request = store::StoreRequest { kind, silent, flags, by_uid: uid, unchanged_since };
                self.store(tag, &sequence_set, request, out).await
            }
            CommandBody::Copy { sequence_set, mailbox, uid } => {
                self.copy(tag, &sequence_set, &name_of(&mailbox), uid, false, out).await
            }
            CommandBody::Move { sequence_set, mailbox, uid } => {
                self.copy(tag, &sequence_set, &name_of(&mailbox), uid, true, out).await
            }
            CommandBody::Idle => self.idle(tag, out),
        }
    }

    /// The logged-in user, or BAD for a command that needs one.
    fn user(&self, tag: &Tag<'_>) -> Result<String, Vec<u8>> {
        self.user.clone().ok_or_else(|| bad(tag, "Log in first"))
    }

    /// The selected mailbox, or BAD for a command that needs one.
    fn selected(&self, tag: &Tag<'_>) -> Result<&Selected, Vec<u8>> {
        self.selected.as_ref().ok_or_else(|| bad(tag, "Select a mailbox first"))
    }

    /// The selected mailbox if it may be changed (SELECT, not EXAMINE).
    fn writable(&self, tag: &Tag<'_>) -> Result<&Selected, Vec<u8>> {
        let selected = self.selected(tag)?;
        if selected.read_only {
            return Err(no(tag, Some(Code::ReadOnly), "Mailbox is read-only (EXAMINE)"));
        }
        Ok(selected)
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
