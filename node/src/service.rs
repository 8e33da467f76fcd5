//! The service API of a node: what the HTTP layer (and later the protocol gateways)
//! call. Any node answers any request: a request for a shard is proposed or read on
//! the shard's leader, locally or forwarded over the peer transport, and retried on
//! leader changes with the same request id, so a retry is never applied twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consensus::{Command, GroupId, NodeId, ProposeError};
use prost::Message as _;
use storage::Engine;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::actors::mailbox::MailboxRegistry;
use crate::peer::{Incoming, PeerNetwork};
use crate::placement::{META_GROUP, shard_for_user, stable_hash};
use crate::proto::peer::{
    ForwardReply, ForwardRequest, ServiceError as WireError, forward_request, frame, service_error,
};
use crate::proto::state::{
    AddDomain, ClaimAddresses, Command as StateCommand, CommandResult, Deliver, Delivered, Enqueue, GetUser,
    ListMessages, ListOutbound, LocalDomain, OutboundAttempt, OutboundItem, PutUser, Query, QueryResult,
    ResolveAddress, User, command, command_result::Status, query,
};
use crate::runtime::RaftHandle;
use crate::state::execute_query;

/// How long one request may spend looking for a leader before it fails with 503.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// How long a forwarded request waits for the leader's reply before retrying.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a request failed, in terms a client can act on (shared with the gateways).
pub use gateways::service::ServiceError;

/// The error a non-OK state-machine status stands for.
fn error_from_status(status: i32, error: String) -> Result<(), ServiceError> {
    match Status::from_i32(status).unwrap_or(Status::Invalid) {
        Status::Ok => Ok(()),
        Status::NotFound => Err(ServiceError::NotFound(error)),
        Status::Conflict => Err(ServiceError::Conflict(error)),
        Status::Invalid => Err(ServiceError::Invalid(error)),
    }
}

/// A user as submitted by an operator or an HR import.
#[derive(Clone, Debug, Default)]
pub struct UserInput {
    pub email: String,
    pub name: String,
    pub ministry: String,
    pub msisdn: String,
    pub fax: String,
    pub employee_number: String,
    /// `None` keeps an existing password, or generates a one-time one for a new user.
    pub password: Option<String>,
    /// An existing argon2 hash (PHC string), e.g. migrated from another directory;
    /// used instead of `password`.
    pub password_hash: Option<String>,
}

/// The result of [`Service::upsert_user`].
pub struct UpsertedUser {
    pub user: User,
    pub created: bool,
    /// Set when a new user got a generated one-time password.
    pub initial_password: Option<String>,
}

/// Cluster-wide request routing and the messaging operations built on it.
pub struct Service {
    node_id: NodeId,
    shards: u64,
    replicas_of: HashMap<GroupId, Vec<NodeId>>,
    raft: RaftHandle,
    network: Arc<PeerNetwork>,
    engine: Engine,
    mailboxes: Arc<MailboxRegistry>,
    /// Identifies this process's requests in the dedup table; random per start.
    client_id: u64,
    next_request_id: AtomicU64,
    next_forward_id: AtomicU64,
    pending_forwards: Mutex<HashMap<u64, oneshot::Sender<ForwardReply>>>,
}

impl Service {
    pub fn new(
        node_id: NodeId,
        shards: u64,
        replicas_of: HashMap<GroupId, Vec<NodeId>>,
        raft: RaftHandle,
        network: Arc<PeerNetwork>,
        engine: Engine,
        mailboxes: Arc<MailboxRegistry>,
    ) -> Arc<Self> {
        Arc::new(Self {
            node_id,
            shards,
            replicas_of,
            raft,
            network,
            engine,
            mailboxes,
            client_id: rand::random::<u64>() | 1,
            next_request_id: AtomicU64::new(1),
            next_forward_id: AtomicU64::new(1),
            pending_forwards: Mutex::new(HashMap::new()),
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
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

    /// Serves forwarded requests and replies from peers until the channel closes.
    pub async fn serve_incoming(self: Arc<Self>, mut incoming: mpsc::Receiver<Incoming>) {
        while let Some(item) = incoming.recv().await {
            match item {
                Incoming::Forward { from, request } => {
                    let service = Arc::clone(&self);
                    tokio::spawn(async move {
                        let reply = service.execute_forwarded(request).await;
                        service.network.send_frame(from, frame::Body::Reply(reply));
                    });
                }
                Incoming::Reply(reply) => {
                    if let Some(waiter) = self.pending_forwards.lock().expect("pending lock").remove(&reply.id) {
                        let _ = waiter.send(reply);
                    }
                }
            }
        }
    }

    /// Executes a forwarded request here, without forwarding it again.
    async fn execute_forwarded(&self, request: ForwardRequest) -> ForwardReply {
        let result = match request.body {
            Some(forward_request::Body::Command(bytes)) => match Command::decode(bytes.as_slice()) {
                Ok(command) => {
                    let mailbox = StateCommand::decode(command.payload.as_slice())
                        .ok()
                        .and_then(|c| c.op)
                        .as_ref()
                        .and_then(mailbox_user);
                    self.propose_here(request.group, command, mailbox).await
                }
                Err(e) => Err(ProposeError::Invalid(e.to_string())),
            },
            Some(forward_request::Body::Query(bytes)) => match Query::decode(bytes.as_slice()) {
                Ok(query) => self.query_here(request.group, query).await.map(|r| r.encode_to_vec()),
                Err(e) => Err(ProposeError::Invalid(e.to_string())),
            },
            None => Err(ProposeError::Invalid("empty forward".into())),
        };
        match result {
            Ok(response) => ForwardReply { id: request.id, response, error: None },
            Err(error) => ForwardReply { id: request.id, response: Vec::new(), error: Some(to_wire(&error)) },
        }
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

    async fn forward(&self, to: NodeId, group: GroupId, body: forward_request::Body) -> Result<Vec<u8>, ProposeError> {
        let id = self.next_forward_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        self.pending_forwards.lock().expect("pending lock").insert(id, sender);
        let sent = self.network.is_reachable(to)
            && self.network.send_frame(to, frame::Body::Forward(ForwardRequest { id, group, body: Some(body) }));
        let reply = if sent { self.await_reply(to, receiver).await } else { None };
        self.pending_forwards.lock().expect("pending lock").remove(&id);
        // No reply: the outcome is unknown; the caller retries with the same request id.
        let reply = reply.ok_or(ProposeError::Dropped { group })?;
        match reply.error {
            Some(error) if error.kind != service_error::Kind::None as i32 => Err(from_wire(group, &error)),
            _ => Ok(reply.response),
        }
    }

    /// Waits for a forwarded request's reply, giving up early if the node becomes
    /// unreachable (it died or was cut off: waiting out the timeout only delays failover).
    async fn await_reply(&self, to: NodeId, mut receiver: oneshot::Receiver<ForwardReply>) -> Option<ForwardReply> {
        let deadline = tokio::time::Instant::now() + FORWARD_TIMEOUT;
        loop {
            tokio::select! {
                reply = &mut receiver => return reply.ok(),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    if !self.network.is_reachable(to) || tokio::time::Instant::now() >= deadline {
                        return None;
                    }
                }
            }
        }
    }

    /// Runs `attempt` on the leader of `group` until it succeeds or the deadline passes.
    async fn route<F, Fut>(&self, group: GroupId, mut attempt: F) -> Result<Vec<u8>, ServiceError>
    where
        F: FnMut(NodeId) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, ProposeError>>,
    {
        let deadline = Instant::now() + REQUEST_DEADLINE;
        let mut target = self.raft.leader(group).unwrap_or(self.node_id);
        let mut backoff = Duration::from_millis(20);
        let mut replica_cursor = 0usize;
        loop {
            if self.replicas_of.get(&group).is_some_and(|replicas| self.network.is_cut_off_from(replicas)) {
                // A minority cannot commit: tell the client now, so it tries another node.
                return Err(ServiceError::Unavailable(format!(
                    "node {} cannot reach a majority of the cluster; try another node",
                    self.node_id
                )));
            }
            match attempt(target).await {
                Ok(response) => return Ok(response),
                Err(ProposeError::NotLeader { leader: Some(leader), .. }) if leader != target => {
                    target = leader;
                    continue;
                }
                Err(ProposeError::GroupNotFound { .. }) if target == self.node_id => {
                    // Not hosted here: ask the group's replicas in turn.
                    let replicas = self.replicas_of.get(&group).cloned().unwrap_or_default();
                    let others: Vec<NodeId> = replicas.into_iter().filter(|&n| n != self.node_id).collect();
                    if others.is_empty() {
                        return Err(ServiceError::NotFound(format!("shard {group} does not exist")));
                    }
                    target = others[replica_cursor % others.len()];
                    replica_cursor += 1;
                    continue;
                }
                Err(ProposeError::Invalid(message)) => return Err(ServiceError::Internal(message)),
                Err(error) => debug!(shard = group, target, %error, "retrying on another leader"),
            }
            if Instant::now() + backoff > deadline {
                return Err(ServiceError::Unavailable(format!("shard {group} has no reachable leader; retry shortly")));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(400));
            target = self.node_id; // Ask the local replica for a fresh leader hint.
        }
    }

    /// Runs a request on the leader of `group`: `here` when that is this node, else the
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

    /// Like [`Service::propose`], but a client's `idempotency_key` names the request:
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

    /// The user id owning `address` (an e-mail address, MSISDN, fax number or
    /// `emp:NUMBER`).
    pub async fn resolve(&self, address: &str) -> Result<String, ServiceError> {
        let address = normalize_address(address)?;
        if address.contains('@') {
            // A user's id is its e-mail address: no directory round trip. Whether the
            // user exists is checked where the request lands (NOT_FOUND from the shard).
            return Ok(address);
        }
        let result = self.query(META_GROUP, query::Q::ResolveAddress(ResolveAddress { address })).await?;
        Ok(result.user_id)
    }

    pub async fn lookup_user(&self, address: &str) -> Result<User, ServiceError> {
        let user_id = self.resolve(address).await?;
        let result =
            self.query(self.shard_of(&user_id), query::Q::GetUser(GetUser { user_id: user_id.clone() })).await?;
        result.user.ok_or_else(|| ServiceError::NotFound(format!("no such user: {user_id}")))
    }

    /// Creates a user, or updates the one with the same e-mail address.
    pub async fn upsert_user(&self, input: UserInput) -> Result<UpsertedUser, ServiceError> {
        let email = normalize_address(&input.email)?;
        if !email.contains('@') {
            return Err(ServiceError::Invalid(format!("'{}' is not an e-mail address", input.email)));
        }
        let optional_phone = |what: &str, value: &str| -> Result<String, ServiceError> {
            if value.trim().is_empty() {
                return Ok(String::new());
            }
            normalize_phone(value).map_err(|e| ServiceError::Invalid(format!("{what}: {e}")))
        };
        let msisdn = optional_phone("mobile", &input.msisdn)?;
        let fax = optional_phone("fax", &input.fax)?;
        let employee_number = input.employee_number.trim().to_string();
        let mut addresses = vec![email.clone()];
        addresses.extend([&msisdn, &fax].into_iter().filter(|a| !a.is_empty()).cloned());
        if !employee_number.is_empty() {
            addresses.push(normalize_address(&format!("emp:{employee_number}"))?);
        }
        let shard = self.shard_of(&email);
        let existing = match self.query(shard, query::Q::GetUser(GetUser { user_id: email.clone() })).await {
            Ok(result) => result.user,
            Err(ServiceError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let (password_hash, initial_password) = match (input.password_hash, input.password, &existing) {
            (Some(hash), _, _) => {
                if argon2::password_hash::PasswordHash::new(&hash).is_err() {
                    return Err(ServiceError::Invalid("password_hash is not a PHC string (argon2)".into()));
                }
                (hash, None)
            }
            (None, Some(password), _) => (hash_password_off_thread(password).await?, None),
            (None, None, Some(user)) => (user.password_hash.clone(), None),
            (None, None, None) => {
                let generated = one_time_password();
                (hash_password_off_thread(generated.clone()).await?, Some(generated))
            }
        };
        self.propose(META_GROUP, command::Op::ClaimAddresses(ClaimAddresses { user_id: email.clone(), addresses }))
            .await?;
        let user = User {
            id: email.clone(),
            email,
            name: input.name.trim().to_string(),
            ministry: input.ministry.trim().to_string(),
            msisdn,
            fax,
            employee_number,
            password_hash,
            created_ms: existing.as_ref().map_or_else(now_ms, |u| u.created_ms),
        };
        let result = self.propose(shard, command::Op::PutUser(PutUser { user: Some(user) })).await?;
        Ok(UpsertedUser { user: result.user.unwrap_or_default(), created: existing.is_none(), initial_password })
    }

    /// Accepts mail for `domain` from now on.
    pub async fn add_domain(&self, domain: &str) -> Result<String, ServiceError> {
        let domain = normalize_domain(domain)?;
        self.propose(META_GROUP, command::Op::AddDomain(AddDomain { domain: domain.clone() })).await?;
        Ok(domain)
    }

    /// Whether mail for `domain` is accepted here.
    pub async fn is_local_domain(&self, domain: &str) -> Result<bool, ServiceError> {
        let domain = normalize_domain(domain)?;
        match self.query(META_GROUP, query::Q::LocalDomain(LocalDomain { domain })).await {
            Ok(_) => Ok(true),
            Err(ServiceError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Delivers a message to the user owning `address`, returning its UID once the
    /// message is replicated and applied.
    pub async fn deliver(
        &self,
        address: &str,
        mailbox: &str,
        raw: Vec<u8>,
        kind: &str,
        client_ref: &str,
        idempotency_key: Option<&str>,
    ) -> Result<(GroupId, Delivered), ServiceError> {
        let user_id = self.resolve(address).await?;
        let deliver = Deliver {
            user_id,
            mailbox: mailbox.to_string(),
            raw,
            kind: kind.to_string(),
            internal_date_ms: now_ms(),
            client_ref: client_ref.to_string(),
            ..Default::default()
        };
        self.deliver_to_user(deliver, idempotency_key).await
    }

    /// Proposes a prepared delivery on the user's shard.
    pub async fn deliver_to_user(
        &self,
        deliver: Deliver,
        idempotency_key: Option<&str>,
    ) -> Result<(GroupId, Delivered), ServiceError> {
        let shard = self.shard_of(&deliver.user_id);
        let result = self.propose_once(shard, command::Op::Deliver(deliver), idempotency_key).await?;
        let delivered = result.delivered.ok_or_else(|| ServiceError::Internal("deliver returned no UID".into()))?;
        Ok((shard, delivered))
    }

    /// Lists a mailbox. With `local`, reads this node's replica without the leader.
    pub async fn list_messages(
        &self,
        address: &str,
        list: ListMessages,
        local: bool,
    ) -> Result<QueryResult, ServiceError> {
        let user_id = self.resolve(address).await?;
        let shard = self.shard_of(&user_id);
        let list = ListMessages { user_id, ..list };
        if local {
            self.query_local(shard, query::Q::ListMessages(list)).await
        } else {
            self.query(shard, query::Q::ListMessages(list)).await
        }
    }
}

impl Service {
    /// Queues an outbound item in the sender's shard; the shard leader's queue actor
    /// delivers it. Returns the item as stored (with its sequence number).
    pub async fn enqueue_outbound(
        &self,
        address: &str,
        mut item: OutboundItem,
        idempotency_key: Option<&str>,
    ) -> Result<(GroupId, OutboundItem), ServiceError> {
        item.user_id = self.resolve(address).await?;
        item.created_ms = now_ms();
        let shard = self.shard_of(&item.user_id);
        let result =
            self.propose_once(shard, command::Op::Enqueue(Enqueue { item: Some(item) }), idempotency_key).await?;
        Ok((shard, result.outbound.unwrap_or_default()))
    }

    pub async fn list_outbound(&self, address: &str) -> Result<Vec<OutboundItem>, ServiceError> {
        let user_id = self.resolve(address).await?;
        let shard = self.shard_of(&user_id);
        Ok(self.query(shard, query::Q::ListOutbound(ListOutbound { user_id, limit: 10_000 })).await?.outbound)
    }

    /// The shard's pending items, read on this node, which must lead the shard.
    pub async fn pending_outbound(&self, shard: GroupId, limit: usize) -> Result<Vec<OutboundItem>, ProposeError> {
        let query =
            Query { q: Some(query::Q::ListOutbound(ListOutbound { user_id: String::new(), limit: limit as u32 })) };
        Ok(self.query_here(shard, query).await?.outbound)
    }

    /// Replicates the outcome of a delivery attempt.
    pub async fn record_attempt(&self, shard: GroupId, attempt: OutboundAttempt) -> Result<(), ServiceError> {
        match self.propose(shard, command::Op::OutboundAttempt(attempt)).await {
            Ok(_) | Err(ServiceError::NotFound(_)) => Ok(()), // NotFound: already final.
            Err(e) => Err(e),
        }
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
        command::Op::PutUser(_)
        | command::Op::ClaimAddresses(_)
        | command::Op::Enqueue(_)
        | command::Op::OutboundAttempt(_)
        | command::Op::AddDomain(_) => None,
    }
}

/// A state-machine reply: its status says whether the request did what was asked.
trait Reply: prost::Message + Default {
    fn status(&self) -> (i32, &str);
}

impl Reply for CommandResult {
    fn status(&self) -> (i32, &str) {
        (self.status, &self.error)
    }
}

impl Reply for QueryResult {
    fn status(&self) -> (i32, &str) {
        (self.status, &self.error)
    }
}

/// Turns a non-OK status into the matching error.
fn checked<R: Reply>(reply: R) -> Result<R, ServiceError> {
    let (status, error) = reply.status();
    error_from_status(status, error.to_string())?;
    Ok(reply)
}

fn decode_reply<R: Reply>(bytes: &[u8]) -> Result<R, ServiceError> {
    checked(R::decode(bytes).map_err(|e| ServiceError::Internal(e.to_string()))?)
}

fn to_wire(error: &ProposeError) -> WireError {
    let (kind, leader) = match error {
        ProposeError::NotLeader { leader, .. } => (service_error::Kind::NotLeader, leader.unwrap_or(0)),
        ProposeError::Dropped { .. } => (service_error::Kind::Dropped, 0),
        ProposeError::GroupNotFound { .. } => (service_error::Kind::GroupNotFound, 0),
        ProposeError::Invalid(_) => (service_error::Kind::Internal, 0),
    };
    WireError { kind: kind as i32, leader, message: error.to_string() }
}

fn from_wire(group: GroupId, error: &WireError) -> ProposeError {
    match service_error::Kind::from_i32(error.kind).unwrap_or(service_error::Kind::Internal) {
        service_error::Kind::NotLeader => {
            ProposeError::NotLeader { group, leader: (error.leader != 0).then_some(error.leader) }
        }
        service_error::Kind::GroupNotFound => ProposeError::GroupNotFound { group },
        service_error::Kind::Internal => ProposeError::Invalid(error.message.clone()),
        service_error::Kind::None | service_error::Kind::Dropped | service_error::Kind::Unavailable => {
            ProposeError::Dropped { group }
        }
    }
}

/// Milliseconds since the Unix epoch (times in commands are chosen by the proposer).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// E-mail addresses compare case-insensitively; phone numbers by their digits.
pub fn normalize_address(address: &str) -> Result<String, ServiceError> {
    let address = address.trim();
    if address.is_empty() || address.len() > 320 || address.contains('\0') {
        return Err(ServiceError::Invalid(format!("invalid address '{address}'")));
    }
    if address.contains('@') || address.starts_with("emp:") {
        if address.contains(char::is_whitespace) {
            return Err(ServiceError::Invalid(format!("invalid address '{address}'")));
        }
        return Ok(address.to_lowercase());
    }
    normalize_phone(address).map_err(ServiceError::Invalid)
}

/// Domains compare case-insensitively: `Health.GO.ke` is `health.go.ke`.
pub fn normalize_domain(domain: &str) -> Result<String, ServiceError> {
    let domain = domain.trim().trim_end_matches('.').to_lowercase();
    let label_ok = |l: &str| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_alphanumeric() || c == '-');
    if domain.len() > 253 || !domain.contains('.') || !domain.split('.').all(label_ok) {
        return Err(ServiceError::Invalid(format!("'{domain}' is not a domain name")));
    }
    Ok(domain)
}

/// Accepts E.164 numbers with optional spaces or dashes: `+254 700-000001`.
pub fn normalize_phone(number: &str) -> Result<String, String> {
    let compact: String = number.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')')).collect();
    let digits = compact
        .strip_prefix('+')
        .ok_or_else(|| format!("'{number}' must be in international form, starting with +"))?;
    if digits.len() < 7 || digits.len() > 15 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("'{number}' is not a valid international phone number"));
    }
    Ok(compact)
}

/// Argon2 is deliberately slow (tens of milliseconds): keep it off the async workers.
async fn hash_password_off_thread(password: String) -> Result<String, ServiceError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
}

/// Hashes a password for the directory (argon2id, random salt).
pub fn hash_password(password: &str) -> Result<String, ServiceError> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    if password.len() < 8 {
        return Err(ServiceError::Invalid("password must be at least 8 characters".into()));
    }
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| ServiceError::Internal(format!("password hashing failed: {e}")))
}

/// Checks `password` against an argon2 hash from the directory.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash)
        .is_ok_and(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

fn one_time_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..12).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_normalize() {
        assert_eq!(normalize_address(" User1@Ministry.GO.ke ").unwrap(), "user1@ministry.go.ke");
        assert_eq!(normalize_address("+254 700-000001").unwrap(), "+254700000001");
        assert_eq!(normalize_address("emp:123").unwrap(), "emp:123");
        for bad in ["", "0700000001", "+25470000000x", "+12", "a b@c"] {
            assert!(normalize_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("demo-password-1").unwrap();
        assert!(hash.starts_with("$argon2"));
        assert!(verify_password("demo-password-1", &hash));
        assert!(!verify_password("demo-password-2", &hash));
        assert!(hash_password("short").is_err());
        assert_eq!(one_time_password().len(), 12);
    }
}
