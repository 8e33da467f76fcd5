//! The audit log in the meta group: `l\0{seq}` → [`AuditRecord`], numbered at apply
//! (`L` holds the last number), so every replica holds the same records in the same
//! order. Records are only ever appended: nothing in the API changes or removes one.

use consensus::{ApplyContext, GroupId, state_machine_key};
use prost::Message;
use storage::{Cf, KvRead};

use super::{counter, key, result};
use crate::proto::state::{AppendAudit, AuditRecord, CommandResult, ListAudit, QueryResult, command_result::Status};

const AUDIT_SEQ_KEY: &[u8] = b"L";
/// Records in one append, and in one answer.
pub const MAX_RECORDS: usize = 1000;
/// Bytes of text a record's fields may hold, together.
const MAX_RECORD_BYTES: usize = 4096;

fn record_key(seq: u64) -> Vec<u8> {
    key(&[b"l", &seq.to_be_bytes()])
}

pub(super) fn append(ctx: &mut ApplyContext<'_>, append: AppendAudit) -> CommandResult {
    if append.records.len() > MAX_RECORDS {
        return result(Status::Invalid, format!("at most {MAX_RECORDS} audit records at once"));
    }
    let size = |r: &AuditRecord| r.actor.len() + r.source.len() + r.action.len() + r.detail.len();
    if append.records.iter().any(|r| size(r) > MAX_RECORD_BYTES) {
        return result(Status::Invalid, "an audit record is too large");
    }
    let mut seq = counter(ctx, AUDIT_SEQ_KEY);
    for mut record in append.records {
        seq += 1;
        record.seq = seq;
        ctx.put(Cf::Data, &record_key(seq), record.encode_to_vec());
    }
    ctx.put(Cf::Data, AUDIT_SEQ_KEY, seq.to_be_bytes().to_vec());
    CommandResult::default()
}

pub(super) fn list(engine: &dyn KvRead, group: GroupId, list: &ListAudit) -> storage::Result<QueryResult> {
    let limit = (list.limit as usize).clamp(1, MAX_RECORDS);
    let start = state_machine_key(group, &record_key(list.after_seq.saturating_add(1)));
    let end = state_machine_key(group, &key(&[b"l", &[0xff; 9]]));
    let mut audit = Vec::new();
    engine.scan(Cf::Data, &start, &end, &mut |_, v| {
        if let Ok(record) = AuditRecord::decode(v)
            && record.at_ms >= list.since_ms
            && (list.actor.is_empty() || record.actor == list.actor)
        {
            audit.push(record);
        }
        audit.len() < limit
    })?;
    Ok(QueryResult { audit, ..Default::default() })
}
