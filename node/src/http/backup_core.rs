//! The backup core, for operators: the backup site's recovery point (`GET
//! /api/v1/backup-core`), what promoting it would keep (`GET
//! /api/v1/backup-core/promotion`), and the promotion itself after the primary site is
//! lost (`POST /api/v1/backup-core/promote`), refused while a primary node is reachable
//! unless forced; the planned switchover of the two sites (`POST
//! /api/v1/backup-core/switchover`); and the reseed of the lost machines as the new
//! backup site (`POST /api/v1/backup-core/reseed`).

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::caller::Caller;
use super::nodes::nodes_and_shards;
use super::{State, error_response};
use crate::auth::Action;

/// `GET /api/v1/backup-core`: the backup site's recovery point, per shard and the worst.
pub(super) async fn status(caller: Caller, state: State) -> HttpResponse {
    if let Err(denied) = caller.may(Action::ClusterStatus) {
        return *denied;
    }
    match nodes_and_shards(&state).await {
        Ok((nodes, views)) => HttpResponse::Ok().json(crate::backup_core::report(&nodes, &views)),
        Err(e) => error_response(&e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Force {
    #[serde(default)]
    force: bool,
}

/// `GET /api/v1/backup-core/promotion[?force=true]`: per group, the backup replica that
/// would recover it and how old the newest entry it holds is; or why not now.
pub(super) async fn promotion(caller: Caller, state: State, query: web::Query<Force>) -> HttpResponse {
    if let Err(denied) = caller.may(Action::ClusterManage) {
        return *denied;
    }
    match state.cluster.promotion_plan(query.force).await {
        Ok(plan) => HttpResponse::Ok().json(plan),
        Err(e) => error_response(&e),
    }
}

/// `POST /api/v1/backup-core/promote {"force": false}`: promotes the backup site.
pub(super) async fn promote(caller: Caller, state: State, body: Option<web::Json<Force>>) -> HttpResponse {
    if let Err(denied) = caller.may(Action::ClusterManage) {
        return *denied;
    }
    let force = body.is_some_and(|b| b.force);
    match state.cluster.promote_backup_site(force).await {
        Ok(plan) => HttpResponse::Ok().json(plan),
        Err(e) => error_response(&e),
    }
}

/// How long a switchover may take before it answers (it goes on in the background).
const SWITCHOVER_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// `POST /api/v1/backup-core/switchover`: swaps the sites once the backup is caught up;
/// answers when every group is on its new membership.
pub(super) async fn switchover(caller: Caller, state: State) -> HttpResponse {
    if let Err(denied) = caller.may(Action::ClusterManage) {
        return *denied;
    }
    match state.cluster.switchover(SWITCHOVER_LIMIT).await {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(e) => error_response(&e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Reseed {
    /// The removed nodes to record again; none: those the promotion lost.
    #[serde(default)]
    nodes: Vec<u64>,
}

/// `POST /api/v1/backup-core/reseed {"nodes": [..]}`: the lost primary nodes (or those
/// named) recorded again, at their addresses, as new backup-site nodes.
pub(super) async fn reseed(caller: Caller, state: State, body: Option<web::Json<Reseed>>) -> HttpResponse {
    if let Err(denied) = caller.may(Action::ClusterManage) {
        return *denied;
    }
    let named = body.map(|b| b.into_inner().nodes).unwrap_or_default();
    match state.cluster.reseed(&named).await {
        Ok(added) => {
            let nodes: Vec<serde_json::Value> = added
                .iter()
                .map(|(old, new)| serde_json::json!({ "old": old, "id": new.id, "peer": new.peer, "http": new.http, "labels": new.labels }))
                .collect();
            HttpResponse::Ok().json(serde_json::json!({ "nodes": nodes }))
        }
        Err(e) => error_response(&e),
    }
}
