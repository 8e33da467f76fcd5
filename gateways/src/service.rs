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
}

/// A message to store in one user's mailbox.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub user_id: String,
    pub mailbox: String,
    pub raw: Vec<u8>,
    /// `email`, `sms`, `fax`, `voicemail`, `video`.
    pub kind: String,
    /// The submitter's reference, kept with the message.
    pub client_ref: String,
    /// Names the request cluster-wide: the same key again is applied at most once.
    pub idempotency_key: String,
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
    /// The user whose login and password these are; `None` for wrong credentials.
    async fn verify_login(&self, login: &str, password: &str) -> Result<Option<Account>, ServiceError>;
    /// Stores a message in a mailbox.
    async fn deliver(&self, delivery: Delivery) -> Result<Stored, ServiceError>;
    /// Queues a message for delivery to another domain.
    async fn enqueue_relay(&self, relay: Relay) -> Result<(), ServiceError>;
}
