//! A user's outbound messages: queue one (a webhook call, for now), list their state.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::caller::Caller;
use super::{State, bad_request, error_response, idempotency_key};
use crate::auth::UserAccess;
use crate::proto::state::{OutboundItem, outbound_item};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OutboundBody {
    /// Only "webhook" for now: an HTTP POST of `body` to `target`.
    #[serde(default = "default_channel")]
    channel: String,
    target: String,
    #[serde(default)]
    body: String,
    #[serde(default = "default_content_type")]
    content_type: String,
    #[serde(default)]
    client_ref: String,
}

fn default_channel() -> String {
    "webhook".into()
}

fn default_content_type() -> String {
    "application/json".into()
}

fn outbound_view(item: &OutboundItem) -> serde_json::Value {
    let status = match outbound_item::Status::from_i32(item.status) {
        Some(outbound_item::Status::Delivered) => "delivered",
        Some(outbound_item::Status::Failed) => "failed",
        _ => "pending",
    };
    json!({
        "seq": item.seq, "channel": item.channel, "target": item.target, "status": status,
        "attempts": item.attempts, "last_error": item.last_error, "client_ref": item.client_ref,
        "created_ms": item.created_ms, "updated_ms": item.updated_ms,
    })
}

pub(super) async fn enqueue(
    caller: Caller,
    state: State,
    request: HttpRequest,
    address: web::Path<String>,
    body: web::Json<OutboundBody>,
) -> HttpResponse {
    if let Err(denied) = caller.may_for_user(&state, UserAccess::SendOutbound, &address).await {
        return *denied;
    }
    let body = body.into_inner();
    let key = match idempotency_key(&request) {
        Ok(key) => key,
        Err(error) => return error_response(&error),
    };
    if body.channel != "webhook" {
        return bad_request(format!("unknown channel '{}'; only 'webhook' is available", body.channel));
    }
    if let Err(why) = state.webhook_targets.check_url(&body.target) {
        return bad_request(why);
    }
    let item = OutboundItem {
        channel: body.channel,
        target: body.target,
        payload: body.body.into_bytes(),
        content_type: body.content_type,
        client_ref: body.client_ref,
        ..Default::default()
    };
    match state.cluster.enqueue_outbound(&address, item, key.as_deref()).await {
        Ok((shard, item)) => {
            let mut view = outbound_view(&item);
            view["shard"] = json!(shard);
            HttpResponse::Accepted().json(view)
        }
        Err(e) => error_response(&e),
    }
}

pub(super) async fn list(caller: Caller, state: State, address: web::Path<String>) -> HttpResponse {
    if let Err(denied) = caller.may_for_user(&state, UserAccess::ReadOutbound, &address).await {
        return *denied;
    }
    match state.cluster.list_outbound(&address).await {
        Ok(items) => {
            HttpResponse::Ok().json(json!({ "outbound": items.iter().map(outbound_view).collect::<Vec<_>>() }))
        }
        Err(e) => error_response(&e),
    }
}
