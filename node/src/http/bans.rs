//! The cluster's bans, for operators: list them, ban a network for a while, lift a ban
//! (`DELETE /api/v1/bans?network=203.0.113.9/32`). Every node refuses a banned network
//! at accept time within a second.

use actix_web::{HttpResponse, web};
use gateways::network::Network;
use serde::Deserialize;
use serde_json::json;

use super::caller::Caller;
use super::{State, bad_request, error_response};
use crate::auth::Action;
use crate::clock::now_ms;
use crate::proto::state::Ban;

/// The longest ban: a year (a permanent refusal belongs in a firewall).
const MAX_BAN_SECS: u64 = 366 * 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BanBody {
    /// A network (`203.0.113.0/24`) or one address.
    network: String,
    /// How long, in seconds.
    for_s: u64,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
pub(super) struct NetworkQuery {
    network: String,
}

fn ban_view(ban: &Ban, now: u64) -> serde_json::Value {
    json!({
        "network": ban.network, "until_ms": ban.until_ms, "in_force": ban.until_ms > now,
        "reason": ban.reason, "created_by": ban.created_by, "created_ms": ban.created_ms,
    })
}

pub(super) async fn list(caller: Caller, state: State) -> HttpResponse {
    if let Err(denied) = caller.may(Action::Bans) {
        return *denied;
    }
    match state.cluster.bans(false).await {
        Ok(bans) => {
            let now = now_ms();
            HttpResponse::Ok().json(json!({ "bans": bans.iter().map(|b| ban_view(b, now)).collect::<Vec<_>>() }))
        }
        Err(e) => error_response(&e),
    }
}

pub(super) async fn add(caller: Caller, state: State, body: web::Json<BanBody>) -> HttpResponse {
    if let Err(denied) = caller.may(Action::Bans) {
        return *denied;
    }
    let network = match Network::parse_or_host(&body.network) {
        Ok(network) => network.to_string(),
        Err(e) => return bad_request(e),
    };
    if body.for_s == 0 || body.for_s > MAX_BAN_SECS {
        return bad_request(format!("for_s must be 1 to {MAX_BAN_SECS} seconds"));
    }
    let now = now_ms();
    let ban = Ban {
        network,
        until_ms: now + body.for_s * 1000,
        reason: body.reason.chars().take(200).collect(),
        created_by: caller.0.name().to_string(),
        created_ms: now,
    };
    match state.cluster.ban(ban.clone(), true).await {
        Ok(()) => HttpResponse::Created().json(ban_view(&ban, now)),
        Err(e) => error_response(&e),
    }
}

pub(super) async fn remove(caller: Caller, state: State, query: web::Query<NetworkQuery>) -> HttpResponse {
    if let Err(denied) = caller.may(Action::Bans) {
        return *denied;
    }
    let network = match Network::parse_or_host(&query.network) {
        Ok(network) => network.to_string(),
        Err(e) => return bad_request(e),
    };
    match state.cluster.unban(&network).await {
        Ok(()) => HttpResponse::Ok().json(json!({ "network": network, "removed": true })),
        Err(e) => error_response(&e),
    }
}
