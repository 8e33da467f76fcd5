//! IMAP folder operations of the replicated state: create, delete, rename and subscribe
//! mailboxes, store flags, expunge, copy and move messages, and the mailbox list query.
//!
//! Like every apply, these are deterministic: the proposer chooses nothing but the
//! request; UIDs and modseqs are allocated here from the mailbox records.

use consensus::{ApplyContext, GroupId, state_machine_key};
use gateways::mail_service::FlagChange;
use prost::Message;
use storage::{Cf, KvRead};

use super::{RecordCache, key, mailbox_key, message_key, quota, result, valid_name};
use crate::proto::state::{
    ClaimRecent, CommandResult, CopyMessages, CreateMailbox, DeleteMailbox, Expunge, ListMailboxes, Mailbox,
    MailboxInfo, MessageMeta, QueryResult, RenameMailbox, StoreFlags, Subscribe, command_result::Status,
    store_flags::Mode,
};

pub const INBOX: &str = "INBOX";
const DELETED: &str = "\\Deleted";
const SEEN: &str = "\\Seen";

/// A fresh mailbox. Log indexes only grow, so a mailbox created again under an old
/// name gets a larger UIDVALIDITY than before.
pub(super) fn new_mailbox(ctx: &ApplyContext<'_>) -> Mailbox {
    Mailbox {
        uid_validity: (ctx.index() as u32).max(1),
        next_uid: 1,
        highest_modseq: 0,
        exists: 0,
        subscribed: false,
        first_recent_uid: 1,
        special_use: String::new(),
    }
}

fn load(ctx: &ApplyContext<'_>, cache: &mut RecordCache, user: &str, mailbox: &str) -> Option<Mailbox> {
    cache.get(ctx, &mailbox_key(user, mailbox)).and_then(|bytes| Mailbox::decode(bytes.as_slice()).ok())
}

fn save(ctx: &mut ApplyContext<'_>, cache: &mut RecordCache, user: &str, name: &str, mailbox: &Mailbox) {
    cache.put(ctx, &mailbox_key(user, name), mailbox.encode_to_vec());
}

/// Every message of a mailbox, in UID order.
fn messages(ctx: &ApplyContext<'_>, user: &str, mailbox: &str) -> Vec<MessageMeta> {
    let (start, end) = (message_key(user, mailbox, 0), key(&[b"i", user.as_bytes(), mailbox.as_bytes(), &[0xff; 5]]));
    let mut metas = Vec::new();
    ctx.scan(Cf::Data, &start, &end, &mut |_, v| {
        if let Ok(meta) = MessageMeta::decode(v) {
            metas.push(meta);
        }
        true
    });
    metas
}

/// The listed messages that exist, in UID order.
fn selected(ctx: &ApplyContext<'_>, user: &str, mailbox: &str, uids: &[u32]) -> Vec<MessageMeta> {
    let mut uids = uids.to_vec();
    uids.sort_unstable();
    uids.dedup();
    uids.into_iter()
        .filter_map(|uid| ctx.get(Cf::Data, &message_key(user, mailbox, uid)))
        .filter_map(|bytes| MessageMeta::decode(bytes.as_slice()).ok())
        .collect()
}

fn remove_message(ctx: &mut ApplyContext<'_>, user: &str, mailbox: &str, uid: u32) {
    let message = message_key(user, mailbox, uid);
    ctx.delete(Cf::Data, &message);
    ctx.delete(Cf::Blobs, &message);
}

fn not_found(user: &str, mailbox: &str) -> CommandResult {
    result(Status::NotFound, format!("{user} has no mailbox {mailbox}"))
}

fn names_valid(user: &str, names: &[&str]) -> bool {
    valid_name(user) && names.iter().all(|n| valid_name(n))
}

pub(super) fn create(ctx: &mut ApplyContext<'_>, cache: &mut RecordCache, create: CreateMailbox) -> CommandResult {
    if !names_valid(&create.user_id, &[&create.mailbox]) {
        return result(Status::Invalid, "invalid user or mailbox name");
    }
    if load(ctx, cache, &create.user_id, &create.mailbox).is_some() {
        return result(Status::Conflict, format!("mailbox {} exists", create.mailbox));
    }
    // RFC 3501 6.3.3: superior names that do not exist yet are created too (a/b for a/b/c),
    // so the hierarchy a client lists has no gaps.
    for (at, _) in create.mailbox.match_indices('/') {
        let superior = &create.mailbox[..at];
        if !superior.is_empty() && load(ctx, cache, &create.user_id, superior).is_none() {
            save(ctx, cache, &create.user_id, superior, &Mailbox { subscribed: true, ..new_mailbox(ctx) });
        }
    }
    let mailbox = Mailbox { subscribed: true, ..new_mailbox(ctx) };
    save(ctx, cache, &create.user_id, &create.mailbox, &mailbox);
    CommandResult { mailbox: Some(mailbox), ..Default::default() }
}

pub(super) fn delete(ctx: &mut ApplyContext<'_>, cache: &mut RecordCache, delete: DeleteMailbox) -> CommandResult {
    let (user, name) = (&delete.user_id, &delete.mailbox);
    if !names_valid(user, &[name]) || name == INBOX {
        return result(Status::Invalid, "INBOX cannot be deleted");
    }
    if load(ctx, cache, user, name).is_none() {
        return not_found(user, name);
    }
    let (mut bytes, mut count) = (0, 0);
    for meta in messages(ctx, user, name) {
        remove_message(ctx, user, name, meta.uid);
        (bytes, count) = (bytes + meta.size as i64, count + 1);
    }
    quota::change(ctx, cache, user, -bytes, -count);
    cache.delete(ctx, &mailbox_key(user, name));
    CommandResult::default()
}

/// Renames `from` (and the mailboxes below it) to `to`; see [`RenameMailbox`].
pub(super) fn rename(ctx: &mut ApplyContext<'_>, cache: &mut RecordCache, rename: RenameMailbox) -> CommandResult {
    let (user, from, to) = (&rename.user_id, &rename.from, &rename.to);
    if !names_valid(user, &[from, to]) || to == INBOX || to.starts_with(&format!("{from}/")) {
        return result(Status::Invalid, format!("cannot rename {from} to {to}"));
    }
    if load(ctx, cache, user, from).is_none() {
        return not_found(user, from);
    }
    let mut moves = vec![(from.clone(), to.clone())];
    if from != INBOX {
        // Inferior names move along: a/b becomes c/b when a becomes c.
        let prefix = format!("{from}/");
        let (start, end) = (mailbox_key(user, &prefix), key(&[b"m", user.as_bytes(), format!("{from}0").as_bytes()]));
        ctx.scan(Cf::Data, &start, &end, &mut |k, _| {
            let name = String::from_utf8_lossy(&k[mailbox_key(user, "").len()..]).into_owned();
            moves.push((name.clone(), format!("{to}{}", &name[from.len()..])));
            true
        });
    }
    if moves.iter().any(|(_, target)| load(ctx, cache, user, target).is_some()) {
        return result(Status::Conflict, format!("mailbox {to} exists"));
    }
    for (old, new) in moves {
        let source = load(ctx, cache, user, &old).expect("listed above");
        let target = Mailbox { uid_validity: new_mailbox(ctx).uid_validity, ..source.clone() };
        for meta in messages(ctx, user, &old) {
            let blob = ctx.get(Cf::Blobs, &message_key(user, &old, meta.uid)).unwrap_or_default();
            remove_message(ctx, user, &old, meta.uid);
            ctx.put(Cf::Data, &message_key(user, &new, meta.uid), meta.encode_to_vec());
            ctx.put(Cf::Blobs, &message_key(user, &new, meta.uid), blob);
        }
        save(ctx, cache, user, &new, &target);
        if old == INBOX {
            // INBOX stays, empty; its UIDs are never reused.
            save(ctx, cache, user, &old, &Mailbox { exists: 0, highest_modseq: source.highest_modseq + 1, ..source });
        } else {
            cache.delete(ctx, &mailbox_key(user, &old));
        }
    }
    CommandResult::default()
}

pub(super) fn subscribe(ctx: &mut ApplyContext<'_>, cache: &mut RecordCache, subscribe: Subscribe) -> CommandResult {
    let Some(mut mailbox) = load(ctx, cache, &subscribe.user_id, &subscribe.mailbox) else {
        return not_found(&subscribe.user_id, &subscribe.mailbox);
    };
    mailbox.subscribed = subscribe.subscribed;
    save(ctx, cache, &subscribe.user_id, &subscribe.mailbox, &mailbox);
    CommandResult::default()
}

pub(super) fn store(ctx: &mut ApplyContext<'_>, cache: &mut RecordCache, store: StoreFlags) -> CommandResult {
    let (user, name) = (&store.user_id, &store.mailbox);
    let Some(mut mailbox) = load(ctx, cache, user, name) else {
        return not_found(user, name);
    };
    let change = match Mode::from_i32(store.mode).unwrap_or(Mode::Add) {
        Mode::Add => FlagChange::Add,
        Mode::Remove => FlagChange::Remove,
        Mode::Replace => FlagChange::Replace,
    };
    let mut out = CommandResult::default();
    for mut meta in selected(ctx, user, name, &store.uids) {
        if store.unchanged_since.is_some_and(|since| meta.modseq > since) {
            out.modified.push(meta.uid);
            continue;
        }
        let flags = change.apply(&meta.flags, &store.flags);
        if flags != meta.flags {
            mailbox.highest_modseq += 1;
            meta.flags = flags;
            meta.modseq = mailbox.highest_modseq;
            ctx.put(Cf::Data, &message_key(user, name, meta.uid), meta.encode_to_vec());
        }
        out.changed.push(meta);
    }
    save(ctx, cache, user, name, &mailbox);
    out.mailbox = Some(mailbox);
    out
}

pub(super) fn expunge(ctx: &mut ApplyContext<'_>, cache: &mut RecordCache, expunge: Expunge) -> CommandResult {
    let (user, name) = (&expunge.user_id, &expunge.mailbox);
    let Some(mut mailbox) = load(ctx, cache, user, name) else {
        return not_found(user, name);
    };
    let candidates =
        if expunge.all_deleted { messages(ctx, user, name) } else { selected(ctx, user, name, &expunge.uids) };
    let mut out = CommandResult::default();
    let mut freed = 0;
    for meta in candidates.into_iter().filter(|m| m.flags.iter().any(|f| f.eq_ignore_ascii_case(DELETED))) {
        remove_message(ctx, user, name, meta.uid);
        mailbox.exists = mailbox.exists.saturating_sub(1);
        out.expunged.push(meta.uid);
        freed += meta.size as i64;
    }
    quota::change(ctx, cache, user, -freed, -(out.expunged.len() as i64));
    if !out.expunged.is_empty() {
        mailbox.highest_modseq += 1;
        save(ctx, cache, user, name, &mailbox);
    }
    out.mailbox = Some(mailbox);
    out
}

/// The claiming session is the first to see the messages no session has seen yet: they
/// are \Recent for it (RFC 3501 2.3.2), and for no session after it.
pub(super) fn claim_recent(ctx: &mut ApplyContext<'_>, cache: &mut RecordCache, claim: ClaimRecent) -> CommandResult {
    let Some(mut mailbox) = load(ctx, cache, &claim.user_id, &claim.mailbox) else {
        return not_found(&claim.user_id, &claim.mailbox);
    };
    let (from, to) = (first_recent(&mailbox), mailbox.next_uid);
    if from < to {
        mailbox.first_recent_uid = to;
        save(ctx, cache, &claim.user_id, &claim.mailbox, &mailbox);
    }
    CommandResult { recent_from: from, recent_to: to, mailbox: Some(mailbox), ..Default::default() }
}

/// The first UID no session has claimed (records from before \Recent existed hold 0).
pub fn first_recent(mailbox: &Mailbox) -> u32 {
    mailbox.first_recent_uid.max(1)
}

pub(super) fn copy(ctx: &mut ApplyContext<'_>, cache: &mut RecordCache, copy: CopyMessages) -> CommandResult {
    let (user, from, to) = (&copy.user_id, &copy.from, &copy.to);
    let Some(mut source) = load(ctx, cache, user, from) else {
        return not_found(user, from);
    };
    let Some(mut target) = load(ctx, cache, user, to) else {
        return not_found(user, to);
    };
    if from == to && copy.r#move {
        return result(Status::Invalid, "cannot move messages into the mailbox they are in");
    }
    let mut out = CommandResult { dest_uid_validity: target.uid_validity, ..Default::default() };
    let picked = selected(ctx, user, from, &copy.uids);
    // A copy takes room; a move only changes where the room is taken.
    if !copy.r#move {
        let (bytes, count) = (picked.iter().map(|m| m.size).sum::<u64>(), picked.len() as i64);
        if let Some(refused) = quota::refusal(ctx, cache, user, bytes) {
            return refused;
        }
        quota::change(ctx, cache, user, bytes as i64, count);
    }
    for meta in picked {
        let blob = ctx.get(Cf::Blobs, &message_key(user, from, meta.uid)).unwrap_or_default();
        let uid = target.next_uid;
        target.next_uid += 1;
        target.highest_modseq += 1;
        target.exists += 1;
        let copied = MessageMeta { uid, modseq: target.highest_modseq, ..meta.clone() };
        ctx.put(Cf::Data, &message_key(user, to, uid), copied.encode_to_vec());
        ctx.put(Cf::Blobs, &message_key(user, to, uid), blob);
        out.source_uids.push(meta.uid);
        out.dest_uids.push(uid);
        if copy.r#move {
            remove_message(ctx, user, from, meta.uid);
            source.exists = source.exists.saturating_sub(1);
            out.expunged.push(meta.uid);
        }
    }
    save(ctx, cache, user, to, &target);
    if !out.expunged.is_empty() {
        source.highest_modseq += 1;
        save(ctx, cache, user, from, &source);
    }
    out.mailbox = Some(if from == to { target } else { source });
    out
}

/// A user's mailboxes, with the number of unseen messages in each.
pub(super) fn list(engine: &dyn KvRead, group: GroupId, list: &ListMailboxes) -> storage::Result<QueryResult> {
    let user = list.user_id.as_bytes();
    let prefix_len = state_machine_key(group, &key(&[b"m", user, b""])).len();
    let (start, end) =
        (state_machine_key(group, &key(&[b"m", user, b""])), state_machine_key(group, &key(&[b"m", user, &[0xff]])));
    let mut mailboxes = Vec::new();
    engine.scan(Cf::Data, &start, &end, &mut |k, v| {
        if let Ok(mailbox) = Mailbox::decode(v) {
            mailboxes.push(MailboxInfo {
                name: String::from_utf8_lossy(&k[prefix_len..]).into_owned(),
                mailbox: Some(mailbox),
                unseen: 0,
                recent: 0,
                deleted: 0,
                deleted_bytes: 0,
            });
        }
        true
    })?;
    for info in &mut mailboxes {
        let start = state_machine_key(group, &message_key(&list.user_id, &info.name, 0));
        let end = state_machine_key(group, &key(&[b"i", user, info.name.as_bytes(), &[0xff; 5]]));
        let first_recent = info.mailbox.as_ref().map_or(1, first_recent);
        engine.scan(Cf::Data, &start, &end, &mut |_, v| {
            if let Ok(meta) = MessageMeta::decode(v) {
                let has = |flag: &str| meta.flags.iter().any(|f| f.eq_ignore_ascii_case(flag));
                info.unseen += u32::from(!has(SEEN));
                info.recent += u32::from(meta.uid >= first_recent);
                if has(DELETED) {
                    (info.deleted, info.deleted_bytes) = (info.deleted + 1, info.deleted_bytes + meta.size);
                }
            }
            true
        })?;
    }
    Ok(QueryResult { mailboxes, ..Default::default() })
}
