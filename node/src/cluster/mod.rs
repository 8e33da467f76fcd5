//! The cluster as one node reaches it: what the HTTP layer, the gateways (through
//! [`crate::mail_service`]) and the queue actors call. Any node answers any request: a
//! request for a shard is proposed or read on the shard's leader, locally or forwarded
//! over the peer transport ([`forward`]), and retried on leader changes with the same
//! request id, so a retry is never applied twice; where to try next is decided by the
//! pure [`routing`] policy.
//!
//! The operations built on this are grouped by what they touch: [`users`], [`domains`],
//! [`messages`], [`outbound`], [`tokens`]; [`replies`] turns state-machine statuses into errors.

mod audit;
mod bans;
mod dkim;
mod domains;
mod forward;
mod messages;
mod nodes;
mod outbound;
mod recovery;
mod replies;
pub mod routing;
mod switchover;
mod tokens;
mod users;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use consensus::{Command, GroupId, NodeId, ProposeError};
use prost::Message as _;
use storage::Engine;
use tokio::sync::oneshot;
use tracing::debug;

use crate::actors::mailbox::MailboxRegistry;
use crate::peer::PeerNetwork;
use crate::placement::{shard_for_user, stable_hash};
use crate::proto::peer::{ForwardReply, forward_request};
use crate::proto::state::{Command as StateCommand, CommandResult, Query, QueryResult, command, query};
use crate::runtime::RaftHandle;
use crate::state::execute_query;
pub use nodes::ShardView;
use replies::{checked, decode_reply};
use routing::{Next, Router};
pub use switchover::SwitchoverReport;
pub use tokens::TokenRequest;
pub use users::{UpsertedUser, UserInput};

/// Why a request failed, in terms a client can act on (shared with the gateways).
pub use gateways::mail_service::ServiceError;

/// How long one request may spend looking for a leader before it fails with 503.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// Cluster-wide request routing and the messaging operations built on it.
pub struct Cluster {
    node_id: NodeId,
    shards: u64,
    /// Where each group's voters are, as last learnt (see [`Cluster::learn_placement`]).
    replicas_of: RwLock<HashMap<GroupId, Vec<NodeId>>>,
    /// The groups this node holds a replica of.
    hosted: RwLock<HashSet<GroupId>>,
    /// Every node of the cluster, as last read from the meta group.
    directory: RwLock<BTreeMap<NodeId, crate::proto::state::NodeRecord>>,
    raft: RaftHandle,
    network: Arc<PeerNetwork>,
    engine: Engine,
    mailboxes: Arc<MailboxRegistry>,
    /// Rung by this node's state machine when a user's mailboxes change here.
    mailbox_bell: Arc<crate::state::mailbox_bell::MailboxBell>,
    /// Identifies this process's requests in the dedup table; random per start.
    client_id: u64,
    next_request_id: AtomicU64,
    next_forward_id: AtomicU64,
    pending_forwards: Mutex<HashMap<u64, oneshot::Sender<ForwardReply>>>,
}

/// This node's own replica, as the cluster reads it: the engine its groups live in, and
/// the bell its state machine rings when a user's mailboxes change.
pub struct LocalReplica {
    pub engine: Engine,
    pub mailbox_bell: Arc<crate::state::mailbox_bell::MailboxBell>,
}

impl Cluster {
    pub fn new(
        node_id: NodeId,
        shards: u64,
        replicas_of: HashMap<GroupId, Vec<NodeId>>,
        raft: RaftHandle,
        network: Arc<PeerNetwork>,
        replica: LocalReplica,
        mailboxes: Arc<MailboxRegistry>,
    ) -> Arc<Self> {
        let LocalReplica { engine, mailbox_bell } = replica;
        let hosted = replicas_of.iter().filter(|(_, r)| r.contains(&node_id)).map(|(&g, _)| g).collect();
        Arc::new(Self {
            node_id,
            shards,
            replicas_of: RwLock::new(replicas_of),
            hosted: RwLock::new(hosted),
            directory: RwLock::new(BTreeMap::new()),
            raft,
            network,
            engine,
            mailboxes,
            mailbox_bell,
            client_id: rand::random::<u64>() | 1,
            next_request_id: AtomicU64::new(1),
            next_forward_id: AtomicU64::new(1),
            pending_forwards: Mutex::new(HashMap::new()),
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// A consistent read of this node's own replica of `group` (its data at its applied
    /// index), as a Raft snapshot or a backup takes it; an error when it holds none.
    pub fn local_snapshot(&self, group: GroupId) -> storage::Result<storage::snapshot::SnapshotReader> {
        storage::snapshot::SnapshotReader::new(&self.engine, group)
    }

    pub fn raft(&self) -> &RaftHandle {
        &self.raft
    }

    pub fn mailboxes(&self) -> &Arc<MailboxRegistry> {
        &self.mailboxes
    }

    pub fn shard_of(&self, user_id: &str) -> GroupId {
        shard_for_user(user_id, self.shards)
    }

    /// Changes whenever `user_id`'s mailboxes change on this node's replica; `None`
    /// when this node holds no replica of the user's shard.
    pub fn mailbox_changes(&self, user_id: &str) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.hosts(self.shard_of(user_id)).then(|| self.mailbox_bell.subscribe(user_id))
    }

    /// Proposes on this node's replica; mailbox changes go through the mailbox's actor.
    async fn propose_here(
        &self,
        group: GroupId,
        command: Command,
        mailbox: Option<String>,
    ) -> Result<Vec<u8>, ProposeError> {
        match mailbox {
            // Mailbox actors live only where the shard is led.
            Some(user_id) if self.raft.leader(group) == Some(self.node_id) => {
                self.mailboxes.propose(&user_id, group, command).await
            }
            _ => self.raft.propose(group, command).await,
        }
    }

    async fn query_here(&self, group: GroupId, query: Query) -> Result<QueryResult, ProposeError> {
        self.raft.read_index(group).await?;
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || execute_query(&*engine, group, &query))
            .await
            .map_err(|e| ProposeError::Invalid(e.to_string()))?
            .map_err(|e| ProposeError::Invalid(e.to_string()))
    }

    /// Runs `attempt` on the leader of `group` until it succeeds or the deadline passes.
    async fn route<F, Fut>(&self, group: GroupId, mut attempt: F) -> Result<Vec<u8>, ServiceError>
    where
        F: FnMut(NodeId) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, ProposeError>>,
    {
        let replicas = self.replicas_of.read().expect("replicas").get(&group).cloned();
        let mut router = Router::new(group, self.node_id, self.candidates(group), Instant::now() + REQUEST_DEADLINE);
        let mut target = router.first_target(self.raft.leader(group));
        loop {
            if replicas.as_ref().is_some_and(|replicas| self.network.is_cut_off_from(replicas)) {
                // A minority cannot commit: tell the client now, so it tries another node.
                return Err(ServiceError::Unavailable(format!(
                    "node {} cannot reach a majority of the cluster; try another node",
                    self.node_id
                )));
            }
            let error = match attempt(target).await {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            match router.after_error(target, &error, Instant::now()) {
                Next::Try(next) => target = next,
                Next::WaitThenTry(wait, next) => {
                    debug!(shard = group, target, %error, "retrying on another leader");
                    tokio::time::sleep(wait).await;
                    target = next;
                }
                Next::Fail(error) => return Err(error),
            }
        }
    }

    /// same request forwarded as `wire`.
    async fn on_leader<F, Fut>(
        &self,
        group: GroupId,
        here: F,
        wire: forward_request::Body,
    ) -> Result<Vec<u8>, ServiceError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, ProposeError>>,
    {
        self.route(group, |target| {
            let (here, wire) = (&here, wire.clone());
            async move { if target == self.node_id { here().await } else { self.forward(target, group, wire).await } }
        })
        .await
    }

    /// Proposes a state command to `group` and returns its decoded result, after the
    /// command was committed on a quorum, fsynced and applied on the leader.
    pub async fn propose(&self, group: GroupId, op: command::Op) -> Result<CommandResult, ServiceError> {
        self.propose_once(group, op, None).await
    }

    /// Like [`Cluster::propose`], but a client's `idempotency_key` names the request:
    /// the same key sent again (a client retry, to any node) is applied at most once
    /// and answered with the first result.
    pub async fn propose_once(
        &self,
        group: GroupId,
        op: command::Op,
        idempotency_key: Option<&str>,
    ) -> Result<CommandResult, ServiceError> {
        let mailbox = mailbox_user(&op);
        let payload = StateCommand { op: Some(op) }.encode_to_vec();
        let (client_id, request_id) = match idempotency_key {
            // Two independent 64-bit hashes: a 128-bit name for the request, the same on
            // every node and every release (FNV-1a is fixed).
            Some(key) => (
                stable_hash(format!("idempotency-client:{key}").as_bytes()) | 1,
                stable_hash(format!("idempotency-request:{key}").as_bytes()),
            ),
            None => (self.client_id, self.next_request_id.fetch_add(1, Ordering::Relaxed)),
        };
        let command = Command::new(client_id, request_id, payload);
        let wire = forward_request::Body::Command(command.encode_to_vec());
        let bytes = self.on_leader(group, || self.propose_here(group, command.clone(), mailbox.clone()), wire).await?;
        decode_reply(&bytes)
    }

    /// A linearizable query of `group`, answered by its leader.
    pub async fn query(&self, group: GroupId, q: query::Q) -> Result<QueryResult, ServiceError> {
        let query = Query { q: Some(q) };
        let wire = forward_request::Body::Query(query.encode_to_vec());
        let bytes = self
            .on_leader(group, || async { self.query_here(group, query.clone()).await.map(|r| r.encode_to_vec()) }, wire)
            .await?;
        decode_reply(&bytes)
    }

    /// [`Cluster::query_local`] when `local` and this node holds a replica of `group`,
    /// else [`Cluster::query`].
    pub async fn query_from(&self, group: GroupId, q: query::Q, local: bool) -> Result<QueryResult, ServiceError> {
        if local && self.hosts(group) { self.query_local(group, q).await } else { self.query(group, q).await }
    }

    /// Reads this node's replica as it is, without asking the leader (may be stale).
    pub async fn query_local(&self, group: GroupId, q: query::Q) -> Result<QueryResult, ServiceError> {
        let engine = self.engine.clone();
        let query = Query { q: Some(q) };
        let result = tokio::task::spawn_blocking(move || execute_query(&*engine, group, &query))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        checked(result)
    }
}

/// The user whose mailbox `op` changes, if it is a mailbox operation.
fn mailbox_user(op: &command::Op) -> Option<String> {
    match op {
        command::Op::Deliver(deliver) => Some(deliver.user_id.clone()),
        command::Op::CreateMailbox(op) => Some(op.user_id.clone()),
        command::Op::DeleteMailbox(op) => Some(op.user_id.clone()),
        command::Op::RenameMailbox(op) => Some(op.user_id.clone()),
        command::Op::Subscribe(op) => Some(op.user_id.clone()),
        command::Op::StoreFlags(op) => Some(op.user_id.clone()),
        command::Op::Expunge(op) => Some(op.user_id.clone()),
        command::Op::CopyMessages(op) => Some(op.user_id.clone()),
        command::Op::ClaimRecent(op) => Some(op.user_id.clone()),
        command::Op::PutUser(_)
        | command::Op::ClaimAddresses(_)
        | command::Op::Enqueue(_)
        | command::Op::OutboundAttempt(_)
        | command::Op::AddDomain(_)
        | command::Op::PutToken(_)
        | command::Op::RevokeToken(_)
        | command::Op::AppendAudit(_)
        | command::Op::PutBan(_)
        | command::Op::RemoveBan(_)
        | command::Op::PutDkimKey(_)
        | command::Op::AddNode(_)
        | command::Op::SetNodeState(_)
        | command::Op::SetNodeLabels(_)
        | command::Op::PutShardTarget(_) => None,
    }
}
