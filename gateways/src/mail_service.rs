//! What the gateways need from the cluster, as a trait: `node` implements it (routing
//! to shard leaders, Raft), the gateways only speak protocols. Keeping the trait here
//! lets `node` start the gateway servers without a dependency cycle.

use async_trait::async_trait;

/// Why a request failed, in terms a protocol can answer with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// No leader could be reached in time; the client should retry later.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// The user's storage quota would be exceeded.
    #[error("{0}")]
    OverQuota(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// Whether trying the same request again later may succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(self, ServiceError::Unavailable(_) | ServiceError::Internal(_))
    }
}

/// A user as the gateways see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The user id (the primary e-mail address, lower-case).
    pub user_id: String,
    pub email: String,
    /// The storage quota is used up: no more mail fits until some is deleted.
    pub over_quota: bool,
}

/// A user's storage, as IMAP QUOTA reports it (RFC 9208).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    pub used_bytes: u64,
    pub limit_bytes: u64,
    pub messages: u64,
}

/// A message to store in one user's mailbox.
#[derive(Clone, Debug, Default)]
pub struct NewMessage {
    pub user_id: String,
    pub mailbox: String,
    pub raw: Vec<u8>,
    /// `email`, `sms`, `fax`, `voicemail`, `video`.
    pub kind: String,
    /// The submitter's reference, kept with the message.
    pub client_ref: String,
    /// Names the request cluster-wide: the same key again is applied at most once.
    pub idempotency_key: Option<String>,
    /// Initial flags (IMAP APPEND).
    pub flags: Vec<String>,
    /// The internal date; `None` means now.
    pub internal_date_ms: Option<u64>,
    /// Fail with `NotFound` instead of creating a missing mailbox (IMAP APPEND).
    pub existing_mailbox: bool,
}

/// The mailboxes every user has beside INBOX, with their RFC 6154 special-use attribute,
/// so that mail clients find where sent mail, drafts, deleted and junk mail belong
/// instead of each making its own ("Sent Items", "Deleted Messages", ...).
pub const SPECIAL_USE_MAILBOXES: [(&str, &str); 5] =
    [("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"), ("Junk", "\\Junk"), ("Archive", "\\Archive")];

/// A mailbox's counters, as IMAP SELECT and STATUS report them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailboxState {
    pub name: String,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub highest_modseq: u64,
    pub messages: u32,
    /// Only filled in by [`MailService::mailboxes`].
    pub unseen: u32,
    /// Messages no session has seen as `\Recent` yet; only filled in by
    /// [`MailService::mailboxes`].
    pub recent: u32,
    /// Messages flagged `\Deleted` and their bytes (STATUS DELETED and DELETED-STORAGE,
    /// RFC 9208); only filled in by [`MailService::mailboxes`].
    pub deleted: u32,
    pub deleted_bytes: u64,
    /// Messages from this UID on are `\Recent` for the next session to claim them.
    pub first_recent_uid: u32,
    pub subscribed: bool,
    /// The RFC 6154 attribute (`\Sent`, `\Trash`, ...), if it is a special-use mailbox.
    pub special_use: Option<String>,
}

/// One message's metadata, and its bytes when asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageInfo {
    pub uid: u32,
    pub modseq: u64,
    pub flags: Vec<String>,
    pub internal_date_ms: u64,
    pub size: u64,
    pub raw: Option<Vec<u8>>,
}

/// How STORE changes flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagChange {
    Add,
    Remove,
    Replace,
}

impl FlagChange {
    /// A message's flags after this change with `flags`; flags compare without regard to
    /// case (RFC 3501 2.3.2), and an added flag already there keeps its spelling. The one
    /// definition of STORE's effect, used by the replicated state and the test service.
    pub fn apply(self, current: &[String], flags: &[String]) -> Vec<String> {
        let mut out = if self == FlagChange::Replace { Vec::new() } else { current.to_vec() };
        match self {
            FlagChange::Add | FlagChange::Replace => {
                for flag in flags {
                    if !out.iter().any(|f| f.eq_ignore_ascii_case(flag)) {
                        out.push(flag.clone());
                    }
                }
            }
            FlagChange::Remove => out.retain(|f| !flags.iter().any(|r| r.eq_ignore_ascii_case(f))),
        }
        out
    }
}

/// What a STORE did.
#[derive(Clone, Debug, Default)]
pub struct FlagsStored {
    /// The targeted messages with their flags and modseq after the change.
    pub messages: Vec<MessageInfo>,
    /// UIDs skipped because they changed after UNCHANGEDSINCE (CONDSTORE).
    pub modified: Vec<u32>,
}

/// What a COPY or MOVE did (for UIDPLUS's COPYUID).
#[derive(Clone, Debug, Default)]
pub struct Copied {
    pub uid_validity: u32,
    pub source_uids: Vec<u32>,
    pub dest_uids: Vec<u32>,
    /// MOVE: the UIDs removed from the source.
    pub expunged: Vec<u32>,
}

/// Where a delivered message landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    pub uid: u32,
    pub uid_validity: u32,
    pub modseq: u64,
}

/// A message to relay to another domain over SMTP, queued in the sender's shard.
#[derive(Clone, Debug)]
pub struct Relay {
    /// The authenticated sender's user id (whose shard queues the item).
    pub user_id: String,
    /// The envelope sender (MAIL FROM), where a bounce goes.
    pub mail_from: String,
    pub recipient: String,
    pub raw: Vec<u8>,
    pub idempotency_key: String,
}

/// The cluster, as seen by a protocol gateway. Every write returns only after the
/// change is committed on a quorum, fsynced and applied.
#[async_trait]
pub trait MailService: Send + Sync + 'static {
    /// Whether mail for `domain` (lower-case) is ours to accept.
    async fn is_local_domain(&self, domain: &str) -> Result<bool, ServiceError>;
    /// The user owning `address`, if any.
    async fn find_user(&self, address: &str) -> Result<Option<Account>, ServiceError>;
    /// The user id a login names (an e-mail address, phone number or `emp:` number),
    /// whether or not the user exists; `None` when it names nobody. Failed logins are
    /// counted under it, so each spelling of one account is not a fresh count.
    async fn login_account(&self, login: &str) -> Result<Option<String>, ServiceError> {
        Ok(Some(login.trim().to_lowercase()))
    }
    /// The user whose login and password these are; `None` for wrong credentials.
    async fn verify_login(&self, login: &str, password: &str) -> Result<Option<Account>, ServiceError>;
    /// Stores a message in a mailbox.
    async fn deliver(&self, message: NewMessage) -> Result<Stored, ServiceError>;
    /// Queues a message for delivery to another domain.
    async fn enqueue_relay(&self, relay: Relay) -> Result<(), ServiceError>;

    // Mailboxes (IMAP). Names are full paths with "/" between levels; "INBOX" is INBOX.

    /// Every mailbox of a user, with counters and unseen counts.
    async fn mailboxes(&self, user_id: &str) -> Result<Vec<MailboxState>, ServiceError>;
    /// One mailbox's counters; `local` reads this node's replica (cheap, maybe stale).
    async fn mailbox(&self, user_id: &str, mailbox: &str, local: bool) -> Result<MailboxState, ServiceError>;
    /// A receiver that changes whenever one of the user's mailboxes changes on this
    /// node's replica, so IDLE can wait on it instead of polling; `None` when this node
    /// cannot tell (no replica here: IDLE polls).
    fn mailbox_changes(&self, _user_id: &str) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    async fn create_mailbox(&self, user_id: &str, mailbox: &str) -> Result<(), ServiceError>;
    async fn delete_mailbox(&self, user_id: &str, mailbox: &str) -> Result<(), ServiceError>;
    async fn rename_mailbox(&self, user_id: &str, from: &str, to: &str) -> Result<(), ServiceError>;
    async fn subscribe(&self, user_id: &str, mailbox: &str, subscribed: bool) -> Result<(), ServiceError>;
    /// Messages of a mailbox in UID order: all, or only `uids`; with bodies if asked.
    async fn messages(
        &self,
        user_id: &str,
        mailbox: &str,
        uids: Option<&[u32]>,
        bodies: bool,
    ) -> Result<Vec<MessageInfo>, ServiceError>;
    async fn store_flags(
        &self,
        user_id: &str,
        mailbox: &str,
        uids: &[u32],
        change: FlagChange,
        flags: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<FlagsStored, ServiceError>;
    /// Removes messages flagged \Deleted (among `uids`, or all); returns their UIDs.
    async fn expunge(&self, user_id: &str, mailbox: &str, uids: Option<&[u32]>) -> Result<Vec<u32>, ServiceError>;
    async fn copy_messages(
        &self,
        user_id: &str,
        from: &str,
        to: &str,
        uids: &[u32],
        remove: bool,
    ) -> Result<Copied, ServiceError>;
    /// A user's storage usage and limit.
    async fn quota(&self, user_id: &str) -> Result<Quota, ServiceError>;
    /// Makes this session the first to see the messages no session has seen yet: the UIDs
    /// in the returned range are `\Recent` for it alone (RFC 3501 2.3.2).
    async fn claim_recent(&self, user_id: &str, mailbox: &str) -> Result<std::ops::Range<u32>, ServiceError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flag_changes_ignore_case() {
        let current = flags(&["\\Seen", "work"]);
        assert_eq!(
            FlagChange::Add.apply(&current, &flags(&["\\Flagged", "\\seen"])),
            flags(&["\\Seen", "work", "\\Flagged"])
        );
        assert_eq!(FlagChange::Remove.apply(&current, &flags(&["\\SEEN"])), flags(&["work"]));
        assert_eq!(FlagChange::Replace.apply(&current, &flags(&["\\Answered"])), flags(&["\\Answered"]));
    }
}
