//! Local domains' DKIM signing keys in the meta group: `k\0{domain}` → [`DkimKey`], one
//! per domain (a new key replaces the old), only for a domain that is local.

use consensus::{ApplyContext, GroupId};
use prost::Message;
use storage::{Cf, KvRead};

use super::{domain_key, key, result, scan_kind};
use crate::proto::state::{CommandResult, PutDkimKey, QueryResult, command_result::Status};

fn dkim_key(domain: &str) -> Vec<u8> {
    key(&[b"k", domain.as_bytes()])
}

pub(super) fn put(ctx: &mut ApplyContext<'_>, put: PutDkimKey) -> CommandResult {
    let Some(record) = put.key else {
        return result(Status::Invalid, "DKIM key missing");
    };
    if ctx.get(Cf::Data, &domain_key(&record.domain)).is_none() {
        return result(Status::NotFound, format!("{} is not a local domain", record.domain));
    }
    if record.selector.is_empty() || record.private_key_pem.is_empty() {
        return result(Status::Invalid, "a DKIM key needs a selector and a private key");
    }
    ctx.put(Cf::Data, &dkim_key(&record.domain), record.encode_to_vec());
    CommandResult::default()
}

pub(super) fn list(engine: &dyn KvRead, group: GroupId) -> storage::Result<QueryResult> {
    Ok(QueryResult { dkim_keys: scan_kind(engine, group, b"k")?, ..Default::default() })
}
