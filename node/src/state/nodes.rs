//! The cluster's members and where shards should live, in the meta group:
//! `n\0{id:be64}` → [`NodeRecord`] (ids never reused; a removed node's record stays) and
//! `r\0{shard:be64}` → [`ShardTarget`] (the voters and standing learners the shard's
//! leader moves it to).

use consensus::{ApplyContext, GroupId};
use prost::Message;
use storage::{Cf, KvRead};

use super::{get, key, result, scan_kind};
use crate::proto::state::node_record::State;
use crate::proto::state::{
    AddNode, CommandResult, NodeRecord, PutShardTarget, QueryResult, SetNodeLabels, SetNodeState, ShardTarget,
    command_result::Status,
};

fn node_key(id: u64) -> Vec<u8> {
    key(&[b"n", &id.to_be_bytes()])
}

fn target_key(shard: u64) -> Vec<u8> {
    key(&[b"r", &shard.to_be_bytes()])
}

/// Whether a meta-group key holds a node record or a shard target: the cluster's own
/// membership, which a cluster restored from a backup does not inherit.
pub fn is_membership_key(key: &[u8]) -> bool {
    key.len() > 2 && key[1] == super::SEP && (key[0] == b'n' || key[0] == b'r')
}

fn all_nodes(ctx: &ApplyContext<'_>) -> Vec<NodeRecord> {
    let (start, end) = (key(&[b"n", b""]), key(&[b"n", &[0xff]]));
    let mut nodes = Vec::new();
    ctx.scan(Cf::Data, &start, &end, &mut |_, v| {
        nodes.extend(NodeRecord::decode(v).ok());
        true
    });
    nodes
}

pub(super) fn add(ctx: &mut ApplyContext<'_>, add: AddNode) -> CommandResult {
    let Some(mut node) = add.node else {
        return result(Status::Invalid, "node missing");
    };
    if node.peer.is_empty() || node.http.is_empty() {
        return result(Status::Invalid, "a node needs a peer and an HTTP address");
    }
    let nodes = all_nodes(ctx);
    if node.id != 0 {
        // A bootstrap member registering itself: the first record stays.
        if let Some(existing) = nodes.iter().find(|n| n.id == node.id) {
            return CommandResult { node: Some(existing.clone()), ..Default::default() };
        }
    } else {
        node.id = nodes.iter().map(|n| n.id).max().unwrap_or(0).max(add.above) + 1;
    }
    if let Some(other) = nodes.iter().find(|n| n.peer == node.peer && n.state != State::Removed as i32) {
        return result(Status::Conflict, format!("node {} already listens on {}", other.id, node.peer));
    }
    node.state = State::Up as i32;
    ctx.put(Cf::Data, &node_key(node.id), node.encode_to_vec());
    CommandResult { node: Some(node), ..Default::default() }
}

pub(super) fn set_state(ctx: &mut ApplyContext<'_>, set: SetNodeState) -> CommandResult {
    let Some(mut node) = get::<NodeRecord>(ctx, Cf::Data, &node_key(set.id)) else {
        return result(Status::NotFound, format!("no node {}", set.id));
    };
    let (from, to) = (node.state(), set.state());
    if from == State::Removed && to != State::Removed {
        return result(Status::Conflict, format!("node {} was removed; ids are never reused", set.id));
    }
    node.set_state(to);
    node.changed_ms = set.changed_ms;
    ctx.put(Cf::Data, &node_key(node.id), node.encode_to_vec());
    CommandResult { node: Some(node), ..Default::default() }
}

pub(super) fn set_labels(ctx: &mut ApplyContext<'_>, set: SetNodeLabels) -> CommandResult {
    let Some(mut node) = get::<NodeRecord>(ctx, Cf::Data, &node_key(set.id)) else {
        return result(Status::NotFound, format!("no node {}", set.id));
    };
    node.labels = set.labels;
    node.changed_ms = set.changed_ms;
    ctx.put(Cf::Data, &node_key(node.id), node.encode_to_vec());
    CommandResult { node: Some(node), ..Default::default() }
}

pub(super) fn put_target(ctx: &mut ApplyContext<'_>, put: PutShardTarget) -> CommandResult {
    let Some(mut target) = put.target else {
        return result(Status::Invalid, "target missing");
    };
    target.voters.sort_unstable();
    target.voters.dedup();
    if target.voters.is_empty() {
        return result(Status::Invalid, "a shard needs at least one voter");
    }
    target.learners.sort_unstable();
    target.learners.dedup();
    if let Some(both) = target.learners.iter().find(|l| target.voters.contains(l)) {
        return result(Status::Invalid, format!("node {both} cannot be a voter and a learner of one shard"));
    }
    let nodes = all_nodes(ctx);
    for voter in target.voters.iter().chain(&target.learners) {
        match nodes.iter().find(|n| n.id == *voter) {
            Some(n) if n.state() == State::Removed => {
                return result(Status::Invalid, format!("node {voter} was removed"));
            }
            Some(_) => {}
            None => return result(Status::NotFound, format!("no node {voter}")),
        }
    }
    let current = get::<ShardTarget>(ctx, Cf::Data, &target_key(target.shard)).map_or(0, |t| t.changed_ms);
    if current != put.expect_changed_ms {
        return result(Status::Conflict, format!("shard {}'s target changed meanwhile; read it again", target.shard));
    }
    // Strictly increasing, so a compare never mistakes a newer target for the one read.
    target.changed_ms = target.changed_ms.max(current + 1);
    ctx.put(Cf::Data, &target_key(target.shard), target.encode_to_vec());
    CommandResult::default()
}

pub(super) fn list_nodes(engine: &dyn KvRead, group: GroupId) -> storage::Result<QueryResult> {
    Ok(QueryResult { nodes: scan_kind(engine, group, b"n")?, ..Default::default() })
}

pub(super) fn list_targets(engine: &dyn KvRead, group: GroupId) -> storage::Result<QueryResult> {
    Ok(QueryResult { shard_targets: scan_kind(engine, group, b"r")?, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use consensus::ApplyBatch;
    use storage::MemEngine;

    use super::*;

    fn record(peer: &str) -> NodeRecord {
        NodeRecord { peer: peer.into(), http: "127.0.0.1:1".into(), ..Default::default() }
    }

    #[test]
    fn membership_keys_are_node_records_and_shard_targets_only() {
        assert!(is_membership_key(&node_key(7)) && is_membership_key(&target_key(3)));
        assert!(!is_membership_key(&key(&[b"t", b"abc"])) && !is_membership_key(&key(&[b"name", b"x"])));
        assert!(!is_membership_key(b"n"));
    }

    #[test]
    fn ids_are_allocated_once_and_a_removed_node_stays_removed() {
        let engine = MemEngine::new();
        let mut staged = ApplyBatch::default();
        let mut ctx = ApplyContext::new(0, 10, &engine, &mut staged);
        // Bootstrap members register with their ids; a second registration keeps the first.
        for id in 1..=3 {
            let added = add(
                &mut ctx,
                AddNode { node: Some(NodeRecord { id, ..record(&format!("10.0.0.{id}:7100")) }), above: 0 },
            );
            assert_eq!(added.node.unwrap().id, id);
        }
        let again = add(&mut ctx, AddNode { node: Some(NodeRecord { id: 2, ..record("10.9.9.9:1") }), above: 0 });
        assert_eq!(again.node.unwrap().peer, "10.0.0.2:7100");
        // A new node gets the next id above every recorded one and above the bootstrap list.
        let fourth = add(&mut ctx, AddNode { node: Some(record("10.0.0.4:7100")), above: 3 }).node.unwrap();
        assert_eq!(fourth.id, 4);
        let above = add(&mut ctx, AddNode { node: Some(record("10.0.0.9:7100")), above: 8 }).node.unwrap();
        assert_eq!(above.id, 9);
        // Two live nodes on one peer address: refused.
        let clash = add(&mut ctx, AddNode { node: Some(record("10.0.0.4:7100")), above: 3 });
        assert_eq!(clash.status(), Status::Conflict);
        // Removed for good; the address may then be used by a new node with a new id.
        let removed = set_state(&mut ctx, SetNodeState { id: 4, state: State::Removed as i32, changed_ms: 5 });
        assert_eq!(removed.node.unwrap().state(), State::Removed);
        let back = set_state(&mut ctx, SetNodeState { id: 4, state: State::Up as i32, changed_ms: 6 });
        assert_eq!(back.status(), Status::Conflict);
        let reused = add(&mut ctx, AddNode { node: Some(record("10.0.0.4:7100")), above: 3 }).node.unwrap();
        assert_eq!(reused.id, 10, "a removed node's id is never handed out again");
        assert_eq!(set_state(&mut ctx, SetNodeState { id: 77, state: 1, changed_ms: 1 }).status(), Status::NotFound);
    }

    #[test]
    fn targets_name_known_nodes_that_are_not_removed() {
        let engine = MemEngine::new();
        let mut staged = ApplyBatch::default();
        let mut ctx = ApplyContext::new(0, 10, &engine, &mut staged);
        for id in 1..=4 {
            add(&mut ctx, AddNode { node: Some(NodeRecord { id, ..record(&format!("10.0.0.{id}:7100")) }), above: 0 });
        }
        set_state(&mut ctx, SetNodeState { id: 4, state: State::Removed as i32, changed_ms: 1 });
        let put = |ctx: &mut ApplyContext<'_>, voters: &[u64]| {
            let expect_changed_ms = get::<ShardTarget>(ctx, Cf::Data, &target_key(3)).map_or(0, |t| t.changed_ms);
            let target = ShardTarget { shard: 3, voters: voters.to_vec(), ..Default::default() };
            put_target(ctx, PutShardTarget { target: Some(target), expect_changed_ms }).status()
        };
        assert_eq!(put(&mut ctx, &[3, 1, 2, 1]), Status::Ok);
        // A proposer that read an older target is refused.
        let stale = ShardTarget { shard: 3, voters: vec![1, 2, 3], ..Default::default() };
        let refused = put_target(&mut ctx, PutShardTarget { target: Some(stale), expect_changed_ms: 0 });
        assert_eq!(refused.status(), Status::Conflict);
        assert_eq!(put(&mut ctx, &[1, 2, 4]), Status::Invalid);
        assert_eq!(put(&mut ctx, &[1, 2, 5]), Status::NotFound);
        assert_eq!(put(&mut ctx, &[]), Status::Invalid);
        let stored: ShardTarget = get(&ctx, Cf::Data, &target_key(3)).unwrap();
        assert_eq!(stored.voters, vec![1, 2, 3], "sorted, without duplicates");
        // Standing learners: known, not removed, none a voter too.
        let with_learners = |ctx: &mut ApplyContext<'_>, learners: &[u64]| {
            let expect_changed_ms = get::<ShardTarget>(ctx, Cf::Data, &target_key(3)).map_or(0, |t| t.changed_ms);
            let target =
                ShardTarget { shard: 3, voters: vec![1, 2], learners: learners.to_vec(), ..Default::default() };
            put_target(ctx, PutShardTarget { target: Some(target), expect_changed_ms }).status()
        };
        assert_eq!(with_learners(&mut ctx, &[2]), Status::Invalid);
        assert_eq!(with_learners(&mut ctx, &[4]), Status::Invalid);
        assert_eq!(with_learners(&mut ctx, &[9]), Status::NotFound);
        assert_eq!(with_learners(&mut ctx, &[3, 3]), Status::Ok);
        let stored: ShardTarget = get(&ctx, Cf::Data, &target_key(3)).unwrap();
        assert_eq!((stored.voters, stored.learners), (vec![1, 2], vec![3]));
    }
}
