//! Fault injection for drills (operators only): slows this node's peer network and/or
//! disk. Compiled only into builds with debug assertions or the `debug-faults` feature,
//! and answered only on nodes with `debug_faults = true` (404 otherwise).

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use storage::DiskFaults;

use super::caller::Caller;
use super::{State, bad_request, error_response};
use crate::auth::Action;
use crate::cluster::ServiceError;
use crate::peer::PeerNetwork;

/// What `POST /api/v1/debug/faults` can slow down.
pub struct DebugFaults {
    pub network: Arc<PeerNetwork>,
    pub disk: Arc<DiskFaults>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FaultsBody {
    /// Delay of every frame this node sends to its peers.
    peer_delay_ms: Option<u64>,
    /// Added to every fsync of this node.
    fsync_delay_ms: Option<u64>,
}

/// Longest delay a drill may inject: below the silence after which peers count a node
/// as cut off (1.5 s), so a slow network stays a slow network, not a partition.
const MAX_DEBUG_DELAY_MS: u64 = 1_000;

fn faults_json(debug: &DebugFaults) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "peer_delay_ms": debug.network.delay().as_millis() as u64,
        "fsync_delay_ms": debug.disk.fsync_delay().as_millis() as u64,
    }))
}

fn debug_off() -> HttpResponse {
    error_response(&ServiceError::NotFound(
        "debug faults are off on this node (debug_faults = true in node.toml; never in production)".into(),
    ))
}

pub(super) async fn get_faults(caller: Caller, state: State) -> HttpResponse {
    if let Err(denied) = caller.may(Action::Faults) {
        return *denied;
    }
    state.debug.as_ref().map_or_else(debug_off, faults_json)
}

/// Zero turns a fault off.
pub(super) async fn set_faults(caller: Caller, state: State, body: web::Json<FaultsBody>) -> HttpResponse {
    if let Err(denied) = caller.may(Action::Faults) {
        return *denied;
    }
    let Some(debug) = state.debug.as_ref() else {
        return debug_off();
    };
    let requested = [body.peer_delay_ms, body.fsync_delay_ms];
    if requested.iter().flatten().any(|&ms| ms > MAX_DEBUG_DELAY_MS) {
        return bad_request(format!("delays are at most {MAX_DEBUG_DELAY_MS} ms"));
    }
    if let Some(ms) = body.peer_delay_ms {
        debug.network.set_delay(Duration::from_millis(ms));
    }
    if let Some(ms) = body.fsync_delay_ms {
        debug.disk.set_fsync_delay(Duration::from_millis(ms));
    }
    tracing::warn!(peer_delay_ms = ?body.peer_delay_ms, fsync_delay_ms = ?body.fsync_delay_ms, "debug faults changed");
    faults_json(debug)
}
