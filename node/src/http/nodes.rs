//! The cluster's nodes and shard placement, for operators: list, add, drain, cancel a
//! drain and remove nodes; list shards as their leaders see them; move one shard
//! replica. A move or drain is recorded in the meta group and carried out by the shard
//! leaders a step at a time, so these answer at once (202) and `GET` shows the progress.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use actix_web::{HttpResponse, web};
use consensus::{NodeId, Target};
use serde::Deserialize;
use serde_json::{Value, json};

use super::caller::Caller;
use super::{State, bad_request, error_response};
use crate::auth::Action;
use crate::cluster::{ServiceError, ShardView};
use crate::proto::state::NodeRecord;
use crate::proto::state::node_record::State as NodeState;

fn state_name(record: &NodeRecord) -> &'static str {
    match record.state() {
        NodeState::Up => "up",
        NodeState::Draining => "draining",
        NodeState::Removed => "removed",
    }
}

fn shard_json(view: &ShardView) -> Value {
    let Some(state) = &view.state else {
        return json!({
            "shard": view.group, "leader": null, "target": view.target,
            "target_learners": view.target_learners, "settled": false,
        });
    };
    let learner_lags: BTreeMap<String, Value> =
        state.learner_lags.iter().map(|l| (l.node.to_string(), super::lag_json(l.entries, l.age_ms))).collect();
    let lag: BTreeMap<String, u64> = state
        .matched
        .iter()
        .map(|(node, matched)| (node.to_string(), state.last_index.saturating_sub(*matched)))
        .collect();
    json!({
        "shard": view.group, "leader": state.leader, "term": state.term,
        "voters": state.voters, "learners": state.learners, "voters_outgoing": state.voters_outgoing,
        "joint": !state.voters_outgoing.is_empty(), "target": view.target,
        "target_learners": view.target_learners, "settled": view.settled(),
        "commit_index": state.commit_index, "last_index": state.last_index, "lag": lag,
        "learner_lags": learner_lags,
    })
}

pub(super) async fn list_shards(caller: Caller, state: State) -> HttpResponse {
    if let Err(denied) = caller.may(Action::ClusterStatus) {
        return *denied;
    }
    let views = state.cluster.shard_views().await;
    HttpResponse::Ok().json(json!({ "shards": views.iter().map(shard_json).collect::<Vec<_>>() }))
}

pub(super) async fn get_shard(caller: Caller, state: State, shard: web::Path<u64>) -> HttpResponse {
    if let Err(denied) = caller.may(Action::ClusterStatus) {
        return *denied;
    }
    match shard_view(&state, shard.into_inner()).await {
        Ok(view) => HttpResponse::Ok().json(shard_json(&view)),
        Err(e) => error_response(&e),
    }
}

async fn shard_view(state: &State, shard: u64) -> Result<ShardView, ServiceError> {
    if shard > state.cluster.shard_count() {
        return Err(ServiceError::NotFound(format!("shard {shard} does not exist")));
    }
    let group_state = state.cluster.group_state(shard).await?;
    let targets = state.cluster.shard_targets(false).await?;
    let target = targets.iter().find(|t| t.shard == shard);
    Ok(ShardView::new(shard, Some(group_state), target))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MoveBody {
    from: NodeId,
    to: NodeId,
}

pub(super) async fn move_shard(
    caller: Caller,
    state: State,
    shard: web::Path<u64>,
    body: web::Json<MoveBody>,
) -> HttpResponse {
    if let Err(denied) = caller.may(Action::ClusterManage) {
        return *denied;
    }
    let shard = shard.into_inner();
    let MoveBody { from, to } = body.into_inner();
    if from == to {
        return bad_request("from and to are the same node");
    }
    let view = match shard_view(&state, shard).await {
        Ok(view) => view,
        Err(e) => return error_response(&e),
    };
    let nodes = match state.cluster.nodes(false).await {
        Ok(nodes) => nodes,
        Err(e) => return error_response(&e),
    };
    let current = view.target.clone().or_else(|| view.state.as_ref().map(|s| s.voters.clone())).unwrap_or_default();
    let voters = match moved_voters(&current, from, to, &nodes) {
        Ok(voters) => voters,
        Err(e) => return error_response(&e),
    };
    let preferred = view.state.as_ref().map(|s| s.leader).filter(|l| voters.contains(l));
    let target = Target::new(voters.iter().copied(), view.target_learners.iter().copied());
    match state.cluster.set_shard_target(shard, target, preferred, view.target_changed_ms).await {
        Ok(()) => HttpResponse::Accepted().json(json!({ "shard": shard, "from": from, "to": to, "voters": voters })),
        Err(e) => error_response(&e),
    }
}

/// Pure: the voters after moving `from`'s replica to `to`, or why not.
fn moved_voters(
    current: &[NodeId],
    from: NodeId,
    to: NodeId,
    nodes: &[NodeRecord],
) -> Result<Vec<NodeId>, ServiceError> {
    if !current.contains(&from) {
        return Err(ServiceError::Conflict(format!("node {from} holds no voter of this shard (voters {current:?})")));
    }
    if current.contains(&to) {
        return Err(ServiceError::Conflict(format!("node {to} already holds this shard (voters {current:?})")));
    }
    match nodes.iter().find(|n| n.id == to) {
        None => return Err(ServiceError::NotFound(format!("no node {to}; add it first (umsctl node add)"))),
        Some(n) if n.state() != NodeState::Up => {
            return Err(ServiceError::Conflict(format!("node {to} is {}; it takes no new replicas", state_name(n))));
        }
        Some(_) => {}
    }
    let mut voters: Vec<NodeId> = current.iter().copied().filter(|&n| n != from).chain([to]).collect();
    voters.sort_unstable();
    Ok(voters)
}

pub(super) async fn list_nodes(caller: Caller, state: State) -> HttpResponse {
    if let Err(denied) = caller.may(Action::ClusterStatus) {
        return *denied;
    }
    let (nodes, views) = match nodes_and_shards(&state).await {
        Ok(both) => both,
        Err(e) => return error_response(&e),
    };
    let plan = crate::driver::plan_for(&nodes, &views, &state.placement, state.replicas);
    let mut replicas: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut leaders: BTreeMap<NodeId, usize> = BTreeMap::new();
    for view in &views {
        for node in view.holders() {
            *replicas.entry(node).or_default() += 1;
        }
        if let Some(state) = &view.state {
            *leaders.entry(state.leader).or_default() += 1;
        }
    }
    let listed: Vec<Value> = nodes
        .iter()
        .map(|n| {
            json!({
                "id": n.id, "peer": n.peer, "http": n.http, "labels": n.labels, "state": state_name(n),
                "reachable": n.id == state.cluster.node_id() || state.cluster.is_reachable(n.id),
                "replicas": replicas.get(&n.id).copied().unwrap_or(0),
                "leaders": leaders.get(&n.id).copied().unwrap_or(0),
                "drain_blocked": plan.blocked.get(&n.id),
            })
        })
        .collect();
    let unsettled = views.iter().filter(|v| !v.settled()).count();
    HttpResponse::Ok().json(json!({ "nodes": listed, "shards_moving": unsettled }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AddNodeBody {
    peer: String,
    http: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

pub(super) async fn add_node(caller: Caller, state: State, body: web::Json<AddNodeBody>) -> HttpResponse {
    if let Err(denied) = caller.may(Action::ClusterManage) {
        return *denied;
    }
    let body = body.into_inner();
    for (what, address) in [("peer", &body.peer), ("http", &body.http)] {
        if address.parse::<SocketAddr>().is_err() {
            return bad_request(format!("{what} must be IP:PORT, not {address:?}"));
        }
    }
    if let Some(bad) = body.labels.keys().find(|k| k.is_empty() || k.len() > 64) {
        return bad_request(format!("label names are 1 to 64 characters, not {bad:?}"));
    }
    let above = state.members.iter().map(|m| m.id).max().unwrap_or(0);
    let record = NodeRecord {
        peer: body.peer,
        http: body.http,
        labels: body.labels.into_iter().collect(),
        ..Default::default()
    };
    match state.cluster.add_node(record, above).await {
        Ok(node) => HttpResponse::Created()
            .json(json!({ "id": node.id, "peer": node.peer, "http": node.http, "state": state_name(&node) })),
        Err(e) => error_response(&e),
    }
}

/// `POST /api/v1/nodes/{id}/drain` and `/cancel-drain`.
pub(super) async fn drain(caller: Caller, state: State, id: web::Path<NodeId>) -> HttpResponse {
    set_state(caller, state, id.into_inner(), NodeState::Draining).await
}

pub(super) async fn cancel_drain(caller: Caller, state: State, id: web::Path<NodeId>) -> HttpResponse {
    set_state(caller, state, id.into_inner(), NodeState::Up).await
}

async fn set_state(caller: Caller, state: State, id: NodeId, to: NodeState) -> HttpResponse {
    if let Err(denied) = caller.may(Action::ClusterManage) {
        return *denied;
    }
    match state.cluster.set_node_state(id, to).await {
        Ok(node) => HttpResponse::Ok().json(json!({ "id": node.id, "state": state_name(&node) })),
        Err(e) => error_response(&e),
    }
}

/// `DELETE /api/v1/nodes/{id}`: only a node that holds no replica (drained) and no
/// target names; it is then refused by every member, for good.
pub(super) async fn remove_node(caller: Caller, state: State, id: web::Path<NodeId>) -> HttpResponse {
    if let Err(denied) = caller.may(Action::ClusterManage) {
        return *denied;
    }
    let id = id.into_inner();
    let views = state.cluster.shard_views().await;
    if let Some(unknown) = views.iter().find(|v| v.state.is_none()) {
        return error_response(&ServiceError::Unavailable(format!(
            "shard {} has no leader right now, so it cannot be told node {id} holds none of it; retry shortly",
            unknown.group
        )));
    }
    let held: Vec<u64> = views
        .iter()
        .filter(|v| {
            v.holders().contains(&id)
                || v.target.as_ref().is_some_and(|t| t.contains(&id))
                || v.target_learners.contains(&id)
        })
        .map(|v| v.group)
        .collect();
    if !held.is_empty() {
        return error_response(&ServiceError::Conflict(format!(
            "node {id} still holds replicas of shards {held:?}; drain it first (umsctl node drain {id} --wait)"
        )));
    }
    set_state(caller, state, id, NodeState::Removed).await
}

#[derive(Deserialize)]
pub(super) struct RebalanceQuery {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/v1/rebalance[?dry_run=true]`: one round of the placement driver now (the
/// moves it makes, or would make), with the drains it cannot finish and why.
pub(super) async fn rebalance(caller: Caller, state: State, query: web::Query<RebalanceQuery>) -> HttpResponse {
    if let Err(denied) = caller.may(Action::ClusterManage) {
        return *denied;
    }
    match crate::driver::round(&state.cluster, &state.placement, state.replicas, !query.dry_run).await {
        Ok(plan) => {
            let moves: Vec<Value> = plan
                .changes
                .iter()
                .filter(|c| !c.why.starts_with("spread"))
                .map(|c| json!({ "shard": c.group, "voters": c.voters, "why": c.why }))
                .collect();
            let leaders = plan.changes.iter().filter(|c| c.why.starts_with("spread")).count();
            let blocked: BTreeMap<String, &String> = plan.blocked.iter().map(|(n, why)| (n.to_string(), why)).collect();
            HttpResponse::Ok().json(json!({
                "dry_run": query.dry_run, "moves": moves, "leader_preferences_changed": leaders, "blocked": blocked,
            }))
        }
        Err(e) => error_response(&e),
    }
}

/// Every node record and every group's leader view.
pub(super) async fn nodes_and_shards(state: &State) -> Result<(Vec<NodeRecord>, Vec<ShardView>), ServiceError> {
    let nodes = state.cluster.nodes(false).await?;
    Ok((nodes, state.cluster.shard_views().await))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_takes_a_voter_to_an_up_node_outside_the_shard() {
        let node = |id, state: NodeState| NodeRecord { id, state: state as i32, ..Default::default() };
        let nodes = [
            node(1, NodeState::Up),
            node(2, NodeState::Up),
            node(3, NodeState::Up),
            node(4, NodeState::Up),
            node(5, NodeState::Draining),
        ];
        assert_eq!(moved_voters(&[1, 2, 3], 2, 4, &nodes).unwrap(), vec![1, 3, 4]);
        let refused = |from, to| moved_voters(&[1, 2, 3], from, to, &nodes).unwrap_err().to_string();
        assert!(refused(4, 1).contains("holds no voter"));
        assert!(refused(1, 2).contains("already holds"));
        assert!(refused(1, 9).contains("no node 9"));
        assert!(refused(1, 5).contains("draining"));
    }
}
