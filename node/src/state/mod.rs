//! The replicated UMS state machine and its queries.
//!
//! Records inside a group (all keys relative to the group, see
//! [`consensus::state_machine_key`]):
//! - `u\0{user}`: [`User`] (shard groups)
//! - `m\0{user}\0{mailbox}`: [`Mailbox`] counters: UIDVALIDITY, next UID, highest modseq,
//!   subscription (IMAP folder operations are in [`folders`])
//! - `i\0{user}\0{mailbox}\0{uid:be32}`: [`MessageMeta`]; the raw message is in the blob
//!   family under the same key
//! - `a\0{address}`: the user id owning an address (meta group)
//! - `c\0{user}`: the addresses a user claimed (meta group), to release old ones
//! - `d\0{domain}`: a domain we accept mail for (meta group); recorded when an e-mail
//!   address in it is claimed, or added by an operator
//! - `t\0{id}`: an API token (meta group, see [`tokens`])
//! - `k\0{domain}`: a local domain's DKIM signing key (meta group, see [`dkim`])
//! - `n\0{id:be64}`, `r\0{shard:be64}`: cluster nodes and shard target voters (meta
//!   group, see [`nodes`])
//! - `o\0{user}\0{seq:be64}`: an [`OutboundItem`]; `p\0{seq:be64}` → user id indexes
//!   the pending ones for the shard's queue actor; `q` holds the next sequence number
//!
//! UIDs and modseqs are allocated here, during apply, so they are identical on every
//! replica and survive failover. Apply is deterministic: times come in the command.

mod audit;
mod bans;
pub mod bell;
mod dkim;
pub mod folders;
pub mod mailbox_bell;
mod nodes;
pub mod quota;
mod tokens;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bell::OutboundBell;
use consensus::{ApplyContext, GroupId, StateMachine, state_machine_key};
use gateways::mail_service::SPECIAL_USE_MAILBOXES;
use mailbox_bell::MailboxBell;
pub use nodes::is_membership_key;
use prost::Message;
use storage::{Cf, KvRead};

use crate::proto::state::{
    AddDomain, ClaimAddresses, Command, CommandResult, Deliver, Delivered, Enqueue, ListMessages, ListOutbound,
    Mailbox, MessageMeta, OutboundAttempt, OutboundItem, PutUser, Query, QueryResult, StoredMessage, User, command,
    command_result::Status, outbound_item, query,
};

const SEP: u8 = 0;

fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(SEP);
        }
        out.extend_from_slice(part);
    }
    out
}

fn user_key(user: &str) -> Vec<u8> {
    key(&[b"u", user.as_bytes()])
}

fn mailbox_key(user: &str, mailbox: &str) -> Vec<u8> {
    key(&[b"m", user.as_bytes(), mailbox.as_bytes()])
}

fn message_key(user: &str, mailbox: &str, uid: u32) -> Vec<u8> {
    key(&[b"i", user.as_bytes(), mailbox.as_bytes(), &uid.to_be_bytes()])
}

fn address_key(address: &str) -> Vec<u8> {
    key(&[b"a", address.as_bytes()])
}

pub(super) fn domain_key(domain: &str) -> Vec<u8> {
    key(&[b"d", domain.as_bytes()])
}

fn claims_key(user: &str) -> Vec<u8> {
    key(&[b"c", user.as_bytes()])
}

fn outbound_key(user: &str, seq: u64) -> Vec<u8> {
    key(&[b"o", user.as_bytes(), &seq.to_be_bytes()])
}

fn pending_key(seq: u64) -> Vec<u8> {
    key(&[b"p", &seq.to_be_bytes()])
}

const OUTBOUND_SEQ_KEY: &[u8] = b"q";

/// The last number a counter under `key` gave out (0 before the first).
fn counter(ctx: &ApplyContext<'_>, key: &[u8]) -> u64 {
    ctx.get(Cf::Data, key).and_then(|b| b.as_slice().try_into().ok().map(u64::from_be_bytes)).unwrap_or(0)
}

/// Names may not contain the key separator (NUL) or be empty.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.as_bytes().contains(&SEP) && name.len() <= 512
}

fn result(status: Status, error: impl Into<String>) -> CommandResult {
    CommandResult { status: status as i32, error: error.into(), ..Default::default() }
}

/// Most recently used user and mailbox records, so a delivery does not read them from
/// RocksDB every time. Write-through (every change goes to the engine and here), cleared
/// per group when a snapshot replaces the group's data; the engine stays the truth.
#[derive(Default)]
struct RecordCache {
    records: HashMap<(GroupId, Vec<u8>), Vec<u8>>,
}

/// Records kept before the cache starts over (bounded memory with 50,000+ users).
const CACHE_CAPACITY: usize = 200_000;

impl RecordCache {
    fn get(&mut self, ctx: &ApplyContext<'_>, key: &[u8]) -> Option<Vec<u8>> {
        let cache_key = (ctx.group(), key.to_vec());
        if let Some(value) = self.records.get(&cache_key) {
            return Some(value.clone());
        }
        let value = ctx.get(Cf::Data, key)?;
        self.remember(cache_key, value.clone());
        Some(value)
    }

    fn put(&mut self, ctx: &mut ApplyContext<'_>, key: &[u8], value: Vec<u8>) {
        ctx.put(Cf::Data, key, value.clone());
        self.remember((ctx.group(), key.to_vec()), value);
    }

    fn remember(&mut self, key: (GroupId, Vec<u8>), value: Vec<u8>) {
        if self.records.len() >= CACHE_CAPACITY {
            self.records.clear();
        }
        self.records.insert(key, value);
    }

    fn delete(&mut self, ctx: &mut ApplyContext<'_>, key: &[u8]) {
        ctx.delete(Cf::Data, key);
        self.records.remove(&(ctx.group(), key.to_vec()));
    }

    fn forget_group(&mut self, group: GroupId) {
        self.records.retain(|(g, _), _| *g != group);
    }
}

/// The UMS state machine. Its only state is a cache; the records live in the engine.
#[derive(Default)]
pub struct UmsMachine {
    cache: RecordCache,
    /// Rung for the shards in `queues_changed` once their applies are written.
    bell: Arc<OutboundBell>,
    queues_changed: BTreeSet<GroupId>,
    /// Rung for the users in `mailboxes_changed` once their applies are written (and
    /// for every watched user after a snapshot).
    mailbox_bell: Arc<MailboxBell>,
    mailboxes_changed: BTreeSet<String>,
    snapshot_applied: bool,
}

impl UmsMachine {
    /// A machine that rings `bell` when a shard's outbound queue changes, and `mailboxes`
    /// when a user's mailboxes do.
    pub fn new(bell: Arc<OutboundBell>, mailboxes: Arc<MailboxBell>) -> Self {
        Self { bell, mailbox_bell: mailboxes, ..Self::default() }
    }
}

/// The user whose mailboxes `op` changes, if it changes any.
fn mailbox_owner(op: &command::Op) -> Option<&String> {
    match op {
        command::Op::Deliver(c) => Some(&c.user_id),
        command::Op::CreateMailbox(c) => Some(&c.user_id),
        command::Op::DeleteMailbox(c) => Some(&c.user_id),
        command::Op::RenameMailbox(c) => Some(&c.user_id),
        command::Op::Subscribe(c) => Some(&c.user_id),
        command::Op::StoreFlags(c) => Some(&c.user_id),
        command::Op::Expunge(c) => Some(&c.user_id),
        command::Op::CopyMessages(c) => Some(&c.user_id),
        command::Op::ClaimRecent(c) => Some(&c.user_id),
        _ => None,
    }
}

impl StateMachine for UmsMachine {
    fn on_snapshot_applied(&mut self, group: GroupId) {
        self.cache.forget_group(group);
        self.queues_changed.insert(group);
        self.snapshot_applied = true;
    }

    fn on_applied_written(&mut self) {
        if !self.queues_changed.is_empty() {
            self.bell.ring(std::mem::take(&mut self.queues_changed));
        }
        if std::mem::take(&mut self.snapshot_applied) {
            self.mailbox_bell.ring_all();
        }
        if !self.mailboxes_changed.is_empty() {
            self.mailbox_bell.ring(&std::mem::take(&mut self.mailboxes_changed));
        }
    }

    fn on_group_removed(&mut self, group: GroupId) {
        self.cache.forget_group(group);
    }

    fn apply(&mut self, ctx: &mut ApplyContext<'_>, payload: &[u8]) -> Vec<u8> {
        let outcome = match Command::decode(payload) {
            Ok(Command { op: Some(op) }) => {
                if let Some(user) = mailbox_owner(&op)
                    && !self.mailboxes_changed.contains(user)
                {
                    self.mailboxes_changed.insert(user.clone());
                }
                self.apply_op(ctx, op)
            }
            Ok(Command { op: None }) => result(Status::Invalid, "empty command"),
            Err(e) => result(Status::Invalid, format!("undecodable command: {e}")),
        };
        outcome.encode_to_vec()
    }
}

impl UmsMachine {
    fn apply_op(&mut self, ctx: &mut ApplyContext<'_>, op: command::Op) -> CommandResult {
        let cache = &mut self.cache;
        match op {
            command::Op::PutUser(put) => put_user(ctx, cache, put),
            command::Op::ClaimAddresses(claim) => claim_addresses(ctx, claim),
            command::Op::Deliver(deliver) => deliver_message(ctx, cache, deliver),
            command::Op::Enqueue(enqueue) => {
                self.queues_changed.insert(ctx.group());
                enqueue_outbound(ctx, enqueue)
            }
            command::Op::OutboundAttempt(attempt) => {
                self.queues_changed.insert(ctx.group());
                record_attempt(ctx, attempt)
            }
            command::Op::AddDomain(add) => add_domain(ctx, add),
            command::Op::CreateMailbox(create) => folders::create(ctx, cache, create),
            command::Op::DeleteMailbox(delete) => folders::delete(ctx, cache, delete),
            command::Op::RenameMailbox(rename) => folders::rename(ctx, cache, rename),
            command::Op::Subscribe(subscribe) => folders::subscribe(ctx, cache, subscribe),
            command::Op::StoreFlags(store) => folders::store(ctx, cache, store),
            command::Op::Expunge(expunge) => folders::expunge(ctx, cache, expunge),
            command::Op::CopyMessages(copy) => folders::copy(ctx, cache, copy),
            command::Op::ClaimRecent(claim) => folders::claim_recent(ctx, cache, claim),
            command::Op::PutToken(put) => tokens::put(ctx, put),
            command::Op::RevokeToken(revoke) => tokens::revoke(ctx, revoke),
            command::Op::AppendAudit(append) => audit::append(ctx, append),
            command::Op::PutBan(put) => bans::put(ctx, put),
            command::Op::RemoveBan(remove) => bans::remove(ctx, remove),
            command::Op::PutDkimKey(put) => dkim::put(ctx, put),
            command::Op::AddNode(add) => nodes::add(ctx, add),
            command::Op::SetNodeState(set) => nodes::set_state(ctx, set),
            command::Op::SetNodeLabels(set) => nodes::set_labels(ctx, set),
            command::Op::PutShardTarget(put) => nodes::put_target(ctx, put),
        }
    }
}

/// Every record under `kind` (a key's first part) of `group`, decoded.
fn scan_kind<M: Message + Default>(engine: &dyn KvRead, group: GroupId, kind: &[u8]) -> storage::Result<Vec<M>> {
    let start = state_machine_key(group, &key(&[kind, b""]));
    let end = state_machine_key(group, &key(&[kind, &[0xff]]));
    let mut records = Vec::new();
    engine.scan(Cf::Data, &start, &end, &mut |_, v| {
        if let Ok(record) = M::decode(v) {
            records.push(record);
        }
        true
    })?;
    Ok(records)
}

fn get<M: Message + Default>(ctx: &ApplyContext<'_>, cf: Cf, key: &[u8]) -> Option<M> {
    ctx.get(cf, key).and_then(|bytes| M::decode(bytes.as_slice()).ok())
}

fn put_user(ctx: &mut ApplyContext<'_>, cache: &mut RecordCache, put: PutUser) -> CommandResult {
    let Some(user) = put.user else {
        return result(Status::Invalid, "user missing");
    };
    if !valid_name(&user.id) {
        return result(Status::Invalid, "invalid user id");
    }
    cache.put(ctx, &user_key(&user.id), user.encode_to_vec());
    // Every user has an INBOX from the start, so its UIDVALIDITY never changes under an
    // IMAP client that selected it before the first message arrived, and the special-use
    // mailboxes (Sent, Drafts, Trash, Junk, Archive) mail clients look for.
    let defaults = std::iter::once((folders::INBOX, "")).chain(SPECIAL_USE_MAILBOXES);
    for (name, special_use) in defaults {
        let key = mailbox_key(&user.id, name);
        if cache.get(ctx, &key).is_none() {
            let special_use = special_use.to_string();
            let mailbox = Mailbox { subscribed: true, special_use, ..folders::new_mailbox(ctx) };
            cache.put(ctx, &key, mailbox.encode_to_vec());
        }
    }
    CommandResult { user: Some(user), ..Default::default() }
}

fn claim_addresses(ctx: &mut ApplyContext<'_>, claim: ClaimAddresses) -> CommandResult {
    if !valid_name(&claim.user_id) || !claim.addresses.iter().all(|a| valid_name(a)) {
        return result(Status::Invalid, "invalid user id or address");
    }
    for address in &claim.addresses {
        if let Some(owner) = ctx.get(Cf::Data, &address_key(address))
            && owner != claim.user_id.as_bytes()
        {
            return result(
                Status::Conflict,
                format!("{address} already belongs to {}", String::from_utf8_lossy(&owner)),
            );
        }
    }
    // Release addresses the user no longer has (a changed mobile number, say).
    if let Some(old) = get::<ClaimAddresses>(ctx, Cf::Data, &claims_key(&claim.user_id)) {
        for address in old.addresses.iter().filter(|a| !claim.addresses.contains(a)) {
            ctx.delete(Cf::Data, &address_key(address));
        }
    }
    for address in &claim.addresses {
        ctx.put(Cf::Data, &address_key(address), claim.user_id.as_bytes().to_vec());
        if let Some((_, domain)) = address.rsplit_once('@') {
            ctx.put(Cf::Data, &domain_key(domain), Vec::new());
        }
    }
    ctx.put(Cf::Data, &claims_key(&claim.user_id), claim.encode_to_vec());
    CommandResult::default()
}

fn add_domain(ctx: &mut ApplyContext<'_>, add: AddDomain) -> CommandResult {
    if !valid_name(&add.domain) || add.domain.contains('@') {
        return result(Status::Invalid, format!("invalid domain '{}'", add.domain));
    }
    ctx.put(Cf::Data, &domain_key(&add.domain), Vec::new());
    CommandResult::default()
}

fn deliver_message(ctx: &mut ApplyContext<'_>, cache: &mut RecordCache, deliver: Deliver) -> CommandResult {
    if !valid_name(&deliver.user_id) || !valid_name(&deliver.mailbox) {
        return result(Status::Invalid, "invalid user or mailbox name");
    }
    if cache.get(ctx, &user_key(&deliver.user_id)).is_none() {
        return result(Status::NotFound, format!("no such user: {}", deliver.user_id));
    }
    let box_key = mailbox_key(&deliver.user_id, &deliver.mailbox);
    let stored = cache.get(ctx, &box_key).and_then(|bytes| Mailbox::decode(bytes.as_slice()).ok());
    if stored.is_none() && deliver.existing_mailbox {
        return result(Status::NotFound, format!("{} has no mailbox {}", deliver.user_id, deliver.mailbox));
    }
    if !deliver.ignore_quota
        && let Some(refused) = quota::refusal(ctx, cache, &deliver.user_id, deliver.raw.len() as u64)
    {
        return refused;
    }
    quota::change(ctx, cache, &deliver.user_id, deliver.raw.len() as i64, 1);
    let mut mailbox = stored.unwrap_or_else(|| folders::new_mailbox(ctx));
    let uid = mailbox.next_uid;
    mailbox.next_uid += 1;
    mailbox.highest_modseq += 1;
    mailbox.exists += 1;
    let meta = MessageMeta {
        uid,
        modseq: mailbox.highest_modseq,
        flags: deliver.flags,
        internal_date_ms: deliver.internal_date_ms,
        size: deliver.raw.len() as u64,
        kind: deliver.kind,
        client_ref: deliver.client_ref,
    };
    let message_key = message_key(&deliver.user_id, &deliver.mailbox, uid);
    ctx.put(Cf::Data, &message_key, meta.encode_to_vec());
    ctx.put(Cf::Blobs, &message_key, deliver.raw);
    cache.put(ctx, &box_key, mailbox.encode_to_vec());
    CommandResult {
        delivered: Some(Delivered { uid, modseq: meta.modseq, uid_validity: mailbox.uid_validity }),
        ..Default::default()
    }
}

fn enqueue_outbound(ctx: &mut ApplyContext<'_>, enqueue: Enqueue) -> CommandResult {
    let Some(mut item) = enqueue.item else {
        return result(Status::Invalid, "item missing");
    };
    if !valid_name(&item.user_id) || item.target.is_empty() {
        return result(Status::Invalid, "invalid user or target");
    }
    if ctx.get(Cf::Data, &user_key(&item.user_id)).is_none() {
        return result(Status::NotFound, format!("no such user: {}", item.user_id));
    }
    let seq = counter(ctx, OUTBOUND_SEQ_KEY) + 1;
    ctx.put(Cf::Data, OUTBOUND_SEQ_KEY, seq.to_be_bytes().to_vec());
    item.seq = seq;
    item.attempts = 0;
    item.status = outbound_item::Status::Pending as i32;
    item.next_attempt_ms = item.created_ms;
    item.updated_ms = item.created_ms;
    ctx.put(Cf::Data, &outbound_key(&item.user_id, seq), item.encode_to_vec());
    ctx.put(Cf::Data, &pending_key(seq), item.user_id.as_bytes().to_vec());
    CommandResult { outbound: Some(item), ..Default::default() }
}

fn record_attempt(ctx: &mut ApplyContext<'_>, attempt: OutboundAttempt) -> CommandResult {
    let Some(user) = ctx.get(Cf::Data, &pending_key(attempt.seq)) else {
        // Already final: a report from a deposed leader's queue actor, or a replay.
        return result(Status::NotFound, format!("outbound item {} is not pending", attempt.seq));
    };
    let user = String::from_utf8_lossy(&user).into_owned();
    let item_key = outbound_key(&user, attempt.seq);
    let Some(mut item) = get::<OutboundItem>(ctx, Cf::Data, &item_key) else {
        return result(Status::NotFound, format!("outbound item {} missing", attempt.seq));
    };
    item.attempts += 1;
    item.updated_ms = attempt.now_ms;
    item.last_error = attempt.error;
    if attempt.delivered || attempt.give_up {
        item.status =
            if attempt.delivered { outbound_item::Status::Delivered } else { outbound_item::Status::Failed } as i32;
        ctx.delete(Cf::Data, &pending_key(attempt.seq));
    } else {
        item.next_attempt_ms = attempt.next_attempt_ms;
    }
    ctx.put(Cf::Data, &item_key, item.encode_to_vec());
    CommandResult { outbound: Some(item), ..Default::default() }
}

/// Answers a query from an engine (after a ReadIndex on the leader, or from the local
/// replica for a deliberately stale read).
pub fn execute_query(engine: &dyn KvRead, group: GroupId, query: &Query) -> storage::Result<QueryResult> {
    let read = |k: &[u8]| engine.get(Cf::Data, &state_machine_key(group, k));
    let not_found = |what: String| QueryResult { status: Status::NotFound as i32, error: what, ..Default::default() };
    Ok(match &query.q {
        Some(query::Q::GetUser(get)) => match read(&user_key(&get.user_id))? {
            Some(bytes) => {
                let user = User::decode(bytes.as_slice()).ok();
                let quota_bytes = user.as_ref().map_or(quota::DEFAULT_QUOTA_BYTES, quota::limit);
                let usage = Some(quota::usage(engine, group, &get.user_id)?);
                QueryResult { user, usage, quota_bytes, ..Default::default() }
            }
            None => not_found(format!("no such user: {}", get.user_id)),
        },
        Some(query::Q::ResolveAddress(resolve)) => match read(&address_key(&resolve.address))? {
            Some(owner) => QueryResult { user_id: String::from_utf8_lossy(&owner).into_owned(), ..Default::default() },
            None => not_found(format!("no user has the address {}", resolve.address)),
        },
        Some(query::Q::ListMessages(list)) => list_messages(engine, group, list)?,
        Some(query::Q::ListOutbound(list)) => list_outbound(engine, group, list)?,
        Some(query::Q::ListMailboxes(list)) => folders::list(engine, group, list)?,
        Some(query::Q::GetMailbox(get)) => match read(&mailbox_key(&get.user_id, &get.mailbox))? {
            Some(bytes) => QueryResult { mailbox: Mailbox::decode(bytes.as_slice()).ok(), ..Default::default() },
            None => not_found(format!("{} has no mailbox {}", get.user_id, get.mailbox)),
        },
        Some(query::Q::LocalDomain(local)) => match read(&domain_key(&local.domain))? {
            Some(_) => QueryResult::default(),
            None => not_found(format!("{} is not a local domain", local.domain)),
        },
        Some(query::Q::GetToken(get)) => tokens::get_one(engine, group, get)?,
        Some(query::Q::ListTokens(_)) => tokens::list(engine, group)?,
        Some(query::Q::ListAudit(list)) => audit::list(engine, group, list)?,
        Some(query::Q::ListBans(_)) => bans::list(engine, group)?,
        Some(query::Q::ListDkimKeys(_)) => dkim::list(engine, group)?,
        Some(query::Q::ListNodes(_)) => nodes::list_nodes(engine, group)?,
        Some(query::Q::ListShardTargets(_)) => nodes::list_targets(engine, group)?,
        None => QueryResult { status: Status::Invalid as i32, error: "empty query".into(), ..Default::default() },
    })
}

fn list_messages(engine: &dyn KvRead, group: GroupId, list: &ListMessages) -> storage::Result<QueryResult> {
    if engine.get(Cf::Data, &state_machine_key(group, &user_key(&list.user_id)))?.is_none() {
        return Ok(QueryResult {
            status: Status::NotFound as i32,
            error: format!("no such user: {}", list.user_id),
            ..Default::default()
        });
    }
    let mailbox = match engine.get(Cf::Data, &state_machine_key(group, &mailbox_key(&list.user_id, &list.mailbox)))? {
        Some(bytes) => Mailbox::decode(bytes.as_slice()).ok(),
        None => None,
    };
    let start = state_machine_key(group, &message_key(&list.user_id, &list.mailbox, list.after_uid.saturating_add(1)));
    let end = state_machine_key(group, &key(&[b"i", list.user_id.as_bytes(), list.mailbox.as_bytes(), &[0xff; 5]]));
    let limit = if list.limit == 0 { usize::MAX } else { list.limit as usize };
    let mut metas = Vec::new();
    if list.uids.is_empty() {
        engine.scan(Cf::Data, &start, &end, &mut |k, v| {
            if let Ok(meta) = MessageMeta::decode(v) {
                metas.push((k.to_vec(), meta));
            }
            metas.len() < limit
        })?;
    } else {
        let mut uids = list.uids.clone();
        uids.sort_unstable();
        uids.dedup();
        for uid in uids.into_iter().filter(|&uid| uid > list.after_uid).take(limit) {
            let message_key = state_machine_key(group, &message_key(&list.user_id, &list.mailbox, uid));
            if let Some(meta) = engine.get(Cf::Data, &message_key)?.and_then(|v| MessageMeta::decode(v.as_slice()).ok())
            {
                metas.push((message_key, meta));
            }
        }
    }
    let mut messages = Vec::with_capacity(metas.len());
    for (message_key, meta) in metas {
        let raw = if list.with_bodies { engine.get(Cf::Blobs, &message_key)?.unwrap_or_default() } else { Vec::new() };
        messages.push(StoredMessage { meta: Some(meta), raw });
    }
    Ok(QueryResult { mailbox, messages, ..Default::default() })
}

/// A user's outbound items, or (with no user) the shard's pending ones in order.
fn list_outbound(engine: &dyn KvRead, group: GroupId, list: &ListOutbound) -> storage::Result<QueryResult> {
    let limit = if list.limit == 0 { usize::MAX } else { list.limit as usize };
    let mut outbound = Vec::new();
    let decode_into = |outbound: &mut Vec<OutboundItem>, bytes: &[u8]| {
        if let Ok(item) = OutboundItem::decode(bytes) {
            outbound.push(item);
        }
    };
    if list.user_id.is_empty() {
        let mut pending = Vec::new();
        let (start, end) =
            (state_machine_key(group, &key(&[b"p", b""])), state_machine_key(group, &key(&[b"p", &[0xff; 9]])));
        engine.scan(Cf::Data, &start, &end, &mut |k, v| {
            let seq_bytes: [u8; 8] = k[k.len() - 8..].try_into().expect("8-byte seq");
            pending.push((String::from_utf8_lossy(v).into_owned(), u64::from_be_bytes(seq_bytes)));
            pending.len() < limit
        })?;
        for (user, seq) in pending {
            if let Some(bytes) = engine.get(Cf::Data, &state_machine_key(group, &outbound_key(&user, seq)))? {
                decode_into(&mut outbound, &bytes);
            }
        }
    } else {
        let start = state_machine_key(group, &key(&[b"o", list.user_id.as_bytes(), b""]));
        let end = state_machine_key(group, &key(&[b"o", list.user_id.as_bytes(), &[0xff; 9]]));
        engine.scan(Cf::Data, &start, &end, &mut |_, v| {
            decode_into(&mut outbound, v);
            outbound.len() < limit
        })?;
    }
    Ok(QueryResult { outbound, ..Default::default() })
}
