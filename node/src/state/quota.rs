//! Storage quotas (RFC 9208 STORAGE and MESSAGE): each user's usage over all mailboxes,
//! kept beside the user record and changed in the same apply as the messages, so every
//! replica agrees; a delivery or copy that would exceed the user's limit is refused.

use consensus::{ApplyContext, GroupId, state_machine_key};
use prost::Message;
use storage::{Cf, KvRead};

use super::{RecordCache, key, result, user_key};
use crate::proto::state::{CommandResult, Usage, User, command_result::Status};

/// The quota of a user whose record names none: room for years of a civil servant's mail.
pub const DEFAULT_QUOTA_BYTES: u64 = 5 << 30;

fn usage_key(user: &str) -> Vec<u8> {
    key(&[b"q", user.as_bytes()])
}

/// The limit in force for `user`.
pub fn limit(user: &User) -> u64 {
    if user.quota_bytes == 0 { DEFAULT_QUOTA_BYTES } else { user.quota_bytes }
}

fn load(ctx: &ApplyContext<'_>, cache: &mut RecordCache, user: &str) -> Usage {
    cache.get(ctx, &usage_key(user)).and_then(|bytes| Usage::decode(bytes.as_slice()).ok()).unwrap_or_default()
}

/// The refusal to apply when `user` has no room for `bytes` more; `None` when it fits.
pub(super) fn refusal(
    ctx: &ApplyContext<'_>,
    cache: &mut RecordCache,
    user: &str,
    bytes: u64,
) -> Option<CommandResult> {
    let limit = cache
        .get(ctx, &user_key(user))
        .and_then(|record| User::decode(record.as_slice()).ok())
        .map_or(DEFAULT_QUOTA_BYTES, |u| limit(&u));
    let used = load(ctx, cache, user).bytes;
    if used.saturating_add(bytes) > limit {
        return Some(result(
            Status::OverQuota,
            format!("{user} is over quota: {used} of {limit} bytes used, {bytes} more do not fit"),
        ));
    }
    None
}

/// Adds `bytes` and `messages` (negative: removes) to `user`'s usage.
pub(super) fn change(ctx: &mut ApplyContext<'_>, cache: &mut RecordCache, user: &str, bytes: i64, messages: i64) {
    if bytes == 0 && messages == 0 {
        return;
    }
    let mut usage = load(ctx, cache, user);
    usage.bytes = usage.bytes.saturating_add_signed(bytes);
    usage.messages = usage.messages.saturating_add_signed(messages);
    cache.put(ctx, &usage_key(user), usage.encode_to_vec());
}

/// `user`'s usage as this replica holds it (for the GET_USER query).
pub(super) fn usage(engine: &dyn KvRead, group: GroupId, user: &str) -> storage::Result<Usage> {
    let record = engine.get(Cf::Data, &state_machine_key(group, &usage_key(user)))?;
    Ok(record.and_then(|bytes| Usage::decode(bytes.as_slice()).ok()).unwrap_or_default())
}
