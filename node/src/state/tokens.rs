//! API tokens in the meta group: `t\0{id}` → [`ApiToken`]. A token is created once
//! (its id, chosen by the proposer, must be new) and revoked for good; revoked and
//! expired records stay, so lists and audits can still name them.

use consensus::{ApplyContext, GroupId, state_machine_key};
use prost::Message;
use storage::{Cf, KvRead};

use super::{get, key, result, scan_kind, valid_name};
use crate::proto::state::{
    ApiToken, CommandResult, GetToken, PutToken, QueryResult, RevokeToken, command_result::Status,
};

fn token_key(id: &str) -> Vec<u8> {
    key(&[b"t", id.as_bytes()])
}

pub(super) fn put(ctx: &mut ApplyContext<'_>, put: PutToken) -> CommandResult {
    let Some(token) = put.token else {
        return result(Status::Invalid, "token missing");
    };
    if !valid_name(&token.id) || token.secret_sha256.len() != 32 {
        return result(Status::Invalid, "invalid token id or secret hash");
    }
    let key = token_key(&token.id);
    if ctx.get(Cf::Data, &key).is_some() {
        return result(Status::Conflict, format!("token {} exists", token.id));
    }
    ctx.put(Cf::Data, &key, token.encode_to_vec());
    CommandResult { token: Some(token), ..Default::default() }
}

pub(super) fn revoke(ctx: &mut ApplyContext<'_>, revoke: RevokeToken) -> CommandResult {
    let key = token_key(&revoke.id);
    let Some(mut token) = get::<ApiToken>(ctx, Cf::Data, &key) else {
        return result(Status::NotFound, format!("no token {}", revoke.id));
    };
    // Revoking twice keeps the first time: the moment it died is what an audit needs.
    if token.revoked_ms == 0 {
        token.revoked_ms = revoke.now_ms.max(1);
        ctx.put(Cf::Data, &key, token.encode_to_vec());
    }
    CommandResult { token: Some(token), ..Default::default() }
}

pub(super) fn get_one(engine: &dyn KvRead, group: GroupId, get: &GetToken) -> storage::Result<QueryResult> {
    Ok(match engine.get(Cf::Data, &state_machine_key(group, &token_key(&get.id)))? {
        Some(bytes) => {
            QueryResult { tokens: ApiToken::decode(bytes.as_slice()).into_iter().collect(), ..Default::default() }
        }
        None => {
            QueryResult { status: Status::NotFound as i32, error: format!("no token {}", get.id), ..Default::default() }
        }
    })
}

pub(super) fn list(engine: &dyn KvRead, group: GroupId) -> storage::Result<QueryResult> {
    Ok(QueryResult { tokens: scan_kind(engine, group, b"t")?, ..Default::default() })
}
