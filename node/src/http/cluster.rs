//! The cluster's own endpoints (operators only): status of nodes and shards, leader
//! transfer, and Prometheus metrics.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::caller::Caller;
use super::{State, error_response};
use crate::auth::Action;
use crate::cluster::ServiceError;

#[derive(Serialize)]
struct ShardView {
    shard: u64,
    role: String,
    leader: Option<u64>,
    term: u64,
    commit_index: u64,
    applied_index: u64,
    last_index: u64,
    first_index: u64,
    voters: Vec<u64>,
    learners: Vec<u64>,
    /// For shards this node leads: entries each replica is behind.
    replica_lag: BTreeMap<u64, u64>,
    /// For shards this node leads: what each learner (a backup site's replica) lacks of
    /// the committed log, in entries and seconds.
    learner_lag: BTreeMap<u64, serde_json::Value>,
}

pub(super) async fn status(caller: Caller, state: State) -> HttpResponse {
    if let Err(denied) = caller.may(Action::ClusterStatus) {
        return *denied;
    }
    let statuses = state.cluster.raft().status().await;
    // The worst over the shards led here; the cluster's is in `GET /api/v1/backup-core`.
    let worst = consensus::Lag::worst_of(&statuses);
    let shards: Vec<ShardView> = statuses
        .into_iter()
        .map(|s| ShardView {
            shard: s.group,
            role: format!("{:?}", s.role),
            leader: s.leader,
            term: s.term,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            last_index: s.last_index,
            first_index: s.first_index,
            voters: s.voters,
            learners: s.learners,
            replica_lag: s
                .progress
                .iter()
                .map(|(&node, &matched)| (node, s.last_index.saturating_sub(matched)))
                .collect(),
            learner_lag: s
                .learner_lags
                .iter()
                .map(|(&node, lag)| (node, super::lag_json(lag.entries, lag.age_ms)))
                .collect(),
        })
        .collect();
    let nodes: Vec<_> = state
        .members
        .iter()
        .map(|m| json!({ "id": m.id, "peer": m.peer.to_string(), "http": m.http.to_string() }))
        .collect();
    HttpResponse::Ok().json(json!({
        "node": state.cluster.node_id(),
        "nodes": nodes,
        "active_mailboxes": state.cluster.mailboxes().active_count(),
        "backup_core": {
            "led_here_worst_entries": worst.entries,
            "led_here_worst_seconds": worst.age_ms as f64 / 1000.0,
            "cluster": "/api/v1/backup-core",
        },
        "shards": shards,
    }))
}

#[derive(Deserialize)]
pub(super) struct TransferBody {
    node: u64,
}

pub(super) async fn transfer_leader(
    caller: Caller,
    state: State,
    shard: web::Path<u64>,
    body: web::Json<TransferBody>,
) -> HttpResponse {
    if let Err(denied) = caller.may(Action::ClusterManage) {
        return *denied;
    }
    let shard = shard.into_inner();
    match state.cluster.raft().transfer_leader(shard, body.node).await {
        Ok(()) => HttpResponse::Accepted().json(json!({ "shard": shard, "to": body.node })),
        Err(consensus::ProposeError::NotLeader { leader, .. }) => {
            let http = leader.and_then(|l| state.members.iter().find(|m| m.id == l)).map(|m| m.http.to_string());
            HttpResponse::build(StatusCode::MISDIRECTED_REQUEST)
                .json(json!({ "error": format!("this node does not lead shard {shard}"), "leader": leader, "leader_http": http }))
        }
        Err(e) => error_response(&ServiceError::NotFound(e.to_string())),
    }
}

pub(super) async fn metrics(caller: Caller, state: State) -> HttpResponse {
    if let Err(denied) = caller.may(Action::Metrics) {
        return *denied;
    }
    match &state.metrics {
        Some(handle) => HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(handle.render()),
        None => HttpResponse::Ok().insert_header(ContentType::plaintext()).body(""),
    }
}
