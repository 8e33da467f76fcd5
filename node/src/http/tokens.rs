//! API tokens (operators only): create one (its text is in this one answer and never
//! again), list them without their secrets, revoke one.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::caller::Caller;
use super::{State, bad_request, error_response};
use crate::auth::{Action, Role};
use crate::clock::now_ms;
use crate::cluster::TokenRequest;
use crate::proto::state::ApiToken;

/// The longest lifetime a token may be given: ten years (or none: `null`).
const MAX_LIFETIME: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    name: String,
    role: String,
    #[serde(default)]
    scope: Vec<String>,
    /// Seconds from now; absent or `null`: never expires.
    #[serde(default)]
    expires_in_s: Option<u64>,
}

/// A token as lists show it: never its secret or the secret's hash.
fn token_view(token: &ApiToken) -> serde_json::Value {
    let optional = |ms: u64| if ms == 0 { serde_json::Value::Null } else { json!(ms) };
    json!({
        "id": token.id, "name": token.name, "role": token.role, "scope": token.scope,
        "state": crate::auth::token::state(token, now_ms()).as_str(), "created_ms": token.created_ms, "created_by": token.created_by,
        "expires_ms": optional(token.expires_ms), "revoked_ms": optional(token.revoked_ms),
    })
}

pub(super) async fn create(caller: Caller, state: State, body: web::Json<CreateBody>) -> HttpResponse {
    if let Err(denied) = caller.may(Action::Tokens) {
        return *denied;
    }
    let body = body.into_inner();
    let role = match Role::parse(&body.role) {
        Ok(role) => role,
        Err(e) => return bad_request(e),
    };
    let expires_ms = match body.expires_in_s.map(Duration::from_secs) {
        None => 0,
        Some(lifetime) if lifetime.is_zero() || lifetime > MAX_LIFETIME => {
            return bad_request("expires_in_s is 1 second to 10 years, or null for a token that never expires");
        }
        Some(lifetime) => now_ms() + lifetime.as_millis() as u64,
    };
    let request =
        TokenRequest { name: body.name, role, scope: body.scope, expires_ms, created_by: caller.0.name().to_string() };
    match state.cluster.create_token(request).await {
        Ok((record, text)) => {
            let mut view = token_view(&record);
            view["token"] = json!(text);
            HttpResponse::Created().json(view)
        }
        Err(e) => error_response(&e),
    }
}

pub(super) async fn list(caller: Caller, state: State) -> HttpResponse {
    if let Err(denied) = caller.may(Action::Tokens) {
        return *denied;
    }
    match state.cluster.tokens().await {
        Ok(tokens) => HttpResponse::Ok().json(json!({ "tokens": tokens.iter().map(token_view).collect::<Vec<_>>() })),
        Err(e) => error_response(&e),
    }
}

pub(super) async fn revoke(caller: Caller, state: State, id: web::Path<String>) -> HttpResponse {
    if let Err(denied) = caller.may(Action::Tokens) {
        return *denied;
    }
    if !crate::auth::token::valid_id(&id) {
        return bad_request(format!("'{id}' is not a token id (16 hex digits)"));
    }
    match state.cluster.revoke_token(&id).await {
        Ok(record) => HttpResponse::Ok().json(token_view(&record)),
        Err(e) => error_response(&e),
    }
}
