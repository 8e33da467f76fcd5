//! A mailbox's messages: append one (JSON or the raw message as the body), list them
//! (with their bodies on request).

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::caller::Caller;
use super::{State, bad_request, error_response, idempotency_key};
use crate::auth::UserAccess;
use crate::proto::state::ListMessages;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    #[serde(default = "default_kind")]
    kind: String,
    /// The message text (UTF-8), or use `body_base64` for binary content.
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
    #[serde(default)]
    mailbox: Option<String>,
    /// The submitter's own reference for this message, kept with it.
    #[serde(default)]
    client_ref: String,
}

fn default_kind() -> String {
    "email".into()
}

const KINDS: [&str; 5] = ["email", "sms", "fax", "voicemail", "video"];

#[derive(Deserialize)]
pub(super) struct AppendQuery {
    kind: Option<String>,
    mailbox: Option<String>,
    client_ref: Option<String>,
}

/// JSON (`{"kind": "sms", "body": "..."}`) or any other content type as the raw message.
pub(super) async fn append(
    caller: Caller,
    state: State,
    request: HttpRequest,
    address: web::Path<String>,
    query: web::Query<AppendQuery>,
    payload: web::Bytes,
) -> HttpResponse {
    if let Err(denied) = caller.may_for_user(&state, UserAccess::Deliver, &address).await {
        return *denied;
    }
    let is_json = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (kind, mailbox, raw, client_ref) = if is_json {
        let body: MessageBody = match serde_json::from_slice(&payload) {
            Ok(body) => body,
            Err(e) => return bad_request(format!("invalid JSON message: {e}")),
        };
        let raw = match (body.body, body.body_base64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(encoded)) => match base64::engine::general_purpose::STANDARD.decode(encoded) {
                Ok(bytes) => bytes,
                Err(e) => return bad_request(format!("body_base64: {e}")),
            },
            _ => return bad_request("give exactly one of body and body_base64"),
        };
        (body.kind, body.mailbox.unwrap_or_else(|| "INBOX".into()), raw, body.client_ref)
    } else {
        let query = query.into_inner();
        (
            query.kind.unwrap_or_else(default_kind),
            query.mailbox.unwrap_or_else(|| "INBOX".into()),
            payload.to_vec(),
            query.client_ref.unwrap_or_default(),
        )
    };
    if !KINDS.contains(&kind.as_str()) {
        return bad_request(format!("unknown kind '{kind}'; use one of {}", KINDS.join(", ")));
    }
    if raw.is_empty() {
        return bad_request("empty message");
    }
    let key = match idempotency_key(&request) {
        Ok(key) => key,
        Err(error) => return error_response(&error),
    };
    match state.cluster.deliver(&address, &mailbox, raw, &kind, &client_ref, key.as_deref()).await {
        Ok((shard, delivered)) => {
            let mut response = HttpResponse::Created();
            // A hint for clients that want to skip the forwarding hop next time.
            if let Some(leader) =
                state.cluster.raft().leader(shard).and_then(|l| state.members.iter().find(|m| m.id == l))
            {
                response.insert_header(("X-UMS-Shard-Leader", leader.http.to_string()));
            }
            response.json(json!({
                "uid": delivered.uid,
                "modseq": delivered.modseq,
                "uid_validity": delivered.uid_validity,
                "shard": shard,
            }))
        }
        Err(e) => error_response(&e),
    }
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    mailbox: Option<String>,
    after_uid: Option<u32>,
    limit: Option<u32>,
    bodies: Option<bool>,
    /// Read this node's replica without asking the leader (may be stale).
    local: Option<bool>,
}

pub(super) async fn list(
    caller: Caller,
    state: State,
    address: web::Path<String>,
    query: web::Query<ListQuery>,
) -> HttpResponse {
    if let Err(denied) = caller.may_for_user(&state, UserAccess::ReadMail, &address).await {
        return *denied;
    }
    let list = ListMessages {
        user_id: String::new(),
        mailbox: query.mailbox.clone().unwrap_or_else(|| "INBOX".into()),
        after_uid: query.after_uid.unwrap_or(0),
        limit: query.limit.unwrap_or(1000).min(10_000),
        with_bodies: query.bodies.unwrap_or(false),
        uids: Vec::new(),
    };
    match state.cluster.list_messages(&address, list, query.local.unwrap_or(false)).await {
        Ok(result) => {
            let messages: Vec<_> = result
                .messages
                .iter()
                .map(|m| {
                    let meta = m.meta.clone().unwrap_or_default();
                    let mut view = json!({
                        "uid": meta.uid,
                        "modseq": meta.modseq,
                        "kind": meta.kind,
                        "size": meta.size,
                        "internal_date_ms": meta.internal_date_ms,
                        "flags": meta.flags,
                        "client_ref": meta.client_ref,
                    });
                    if query.bodies.unwrap_or(false) {
                        view["body"] = json!(String::from_utf8_lossy(&m.raw));
                        // The exact bytes (8-bit mail is not always UTF-8).
                        view["body_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&m.raw));
                    }
                    view
                })
                .collect();
            let mailbox = result.mailbox.unwrap_or_default();
            HttpResponse::Ok().json(json!({
                "uid_validity": mailbox.uid_validity,
                "next_uid": mailbox.next_uid,
                "highest_modseq": mailbox.highest_modseq,
                "messages": messages,
            }))
        }
        Err(e) => error_response(&e),
    }
}
