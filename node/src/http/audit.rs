//! The audit log, for operators: `GET /api/v1/audit` with `after` (a sequence number),
//! `since_ms`, `actor`, `limit` (at most 1,000) and `local=true` (this node's replica).
//! There is no way to change or delete a record through the API.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::caller::Caller;
use super::{State, error_response};
use crate::auth::Action;
use crate::proto::state::{AuditRecord, ListAudit};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    since_ms: u64,
    #[serde(default)]
    actor: String,
    #[serde(default = "default_limit")]
    limit: u32,
    #[serde(default)]
    local: bool,
}

fn default_limit() -> u32 {
    100
}

fn record_view(record: &AuditRecord) -> serde_json::Value {
    let at = chrono::DateTime::from_timestamp_millis(record.at_ms as i64).map(|t| t.to_rfc3339());
    json!({
        "seq": record.seq, "at_ms": record.at_ms, "at": at, "actor": record.actor, "source": record.source,
        "node": record.node, "action": record.action, "result": record.result, "detail": record.detail,
    })
}

pub(super) async fn list(caller: Caller, state: State, query: web::Query<AuditQuery>) -> HttpResponse {
    if let Err(denied) = caller.may(Action::Audit) {
        return *denied;
    }
    let query = query.into_inner();
    let list = ListAudit { after_seq: query.after, since_ms: query.since_ms, actor: query.actor, limit: query.limit };
    match state.cluster.audit(list, query.local).await {
        Ok(records) => HttpResponse::Ok().json(json!({ "audit": records.iter().map(record_view).collect::<Vec<_>>() })),
        Err(e) => error_response(&e),
    }
}
