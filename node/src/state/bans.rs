//! The cluster's ban list in the meta group: `b\0{network}` → [`Ban`]. A gateway's
//! automatic ban never shortens one in force (an operator's week-long ban outlives a
//! node's ten minutes); an operator's `replace` does. Ended bans stay until removed
//! and are ignored by readers.

use consensus::{ApplyContext, GroupId};
use prost::Message;
use storage::{Cf, KvRead};

use super::{get, key, result, scan_kind};
use crate::proto::state::{Ban, CommandResult, PutBan, QueryResult, RemoveBan, command_result::Status};

fn ban_key(network: &str) -> Vec<u8> {
    key(&[b"b", network.as_bytes()])
}

pub(super) fn put(ctx: &mut ApplyContext<'_>, put: PutBan) -> CommandResult {
    let Some(ban) = put.ban else {
        return result(Status::Invalid, "ban missing");
    };
    if gateways::network::Network::parse(&ban.network).is_err() {
        return result(Status::Invalid, format!("'{}' is not a network", ban.network));
    }
    let key = ban_key(&ban.network);
    if let Some(existing) = get::<Ban>(ctx, Cf::Data, &key)
        && !put.replace
        && existing.until_ms >= ban.until_ms
    {
        return CommandResult::default();
    }
    ctx.put(Cf::Data, &key, ban.encode_to_vec());
    CommandResult::default()
}

pub(super) fn remove(ctx: &mut ApplyContext<'_>, remove: RemoveBan) -> CommandResult {
    let key = ban_key(&remove.network);
    if ctx.get(Cf::Data, &key).is_none() {
        return result(Status::NotFound, format!("no ban of {}", remove.network));
    }
    ctx.delete(Cf::Data, &key);
    CommandResult::default()
}

pub(super) fn list(engine: &dyn KvRead, group: GroupId) -> storage::Result<QueryResult> {
    Ok(QueryResult { bans: scan_kind(engine, group, b"b")?, ..Default::default() })
}
