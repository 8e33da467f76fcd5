//! The cluster's nodes and shard placement: the node records and shard targets of the
//! meta group, and this node's view of where every group's replicas are, which routing
//! uses and the membership task keeps current.

use std::collections::HashMap;

use consensus::{GroupId, GroupStatus, NodeId, Target};

use futures::StreamExt as _;
use prost::Message as _;

use super::{Cluster, ServiceError};
use crate::clock::now_ms;
use crate::placement::META_GROUP;
use crate::proto::peer::{GroupState, GroupStates, LearnerLag, forward_request};
use crate::proto::state::node_record::State;
use crate::proto::state::{
    AddNode, ListNodes, ListShardTargets, NodeRecord, PutShardTarget, SetNodeState, ShardTarget, command, query,
};
use crate::runtime::Statuses;

/// A group as its leader sees it, and where it should be.
#[derive(Clone, Debug)]
pub struct ShardView {
    pub group: GroupId,
    pub state: Option<GroupState>,
    /// The target's voters (`None`: no target, the bootstrap placement).
    pub target: Option<Vec<NodeId>>,
    /// The target's standing learners (a backup site's replicas).
    pub target_learners: Vec<NodeId>,
    pub preferred_leader: Option<NodeId>,
    /// The target's version (`changed_ms`), 0 without one: what a change must expect.
    pub target_changed_ms: u64,
}

impl ShardView {
    pub fn new(group: GroupId, state: Option<GroupState>, target: Option<&ShardTarget>) -> Self {
        Self {
            group,
            state,
            target: target.map(|t| t.voters.clone()),
            target_learners: target.map(|t| t.learners.clone()).unwrap_or_default(),
            preferred_leader: target.map(|t| t.preferred_leader).filter(|&l| l != 0),
            target_changed_ms: target.map_or(0, |t| t.changed_ms),
        }
    }

    /// Whether its membership is where the target says: the voters, the standing
    /// learners and no other, not joint.
    pub fn settled(&self) -> bool {
        let Some(state) = &self.state else { return false };
        let voters_right = self.target.as_ref().is_none_or(|target| &state.voters == target);
        voters_right && state.learners == self.target_learners && state.voters_outgoing.is_empty()
    }

    /// Every node holding a replica (voters, learners, outgoing voters).
    pub fn holders(&self) -> Vec<NodeId> {
        let Some(state) = &self.state else { return Vec::new() };
        let mut nodes: Vec<NodeId> =
            state.voters.iter().chain(&state.learners).chain(&state.voters_outgoing).copied().collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }
}

impl Cluster {
    /// Every node record; `local` reads this node's replica of the meta group if it has one.
    pub async fn nodes(&self, local: bool) -> Result<Vec<NodeRecord>, ServiceError> {
        Ok(self.query_from(META_GROUP, query::Q::ListNodes(ListNodes {}), local).await?.nodes)
    }

    /// Records a node: a new one (id 0: the next id above every recorded one and above
    /// `above`), or a bootstrap member registering itself (kept if already there).
    pub async fn add_node(&self, node: NodeRecord, above: u64) -> Result<NodeRecord, ServiceError> {
        let node = NodeRecord { added_ms: now_ms(), ..node };
        let result = self.propose(META_GROUP, command::Op::AddNode(AddNode { node: Some(node), above })).await?;
        result.node.ok_or_else(|| ServiceError::Internal("no node record in the answer".into()))
    }

    pub async fn set_node_state(&self, id: NodeId, state: State) -> Result<NodeRecord, ServiceError> {
        let op = command::Op::SetNodeState(SetNodeState { id, state: state as i32, changed_ms: now_ms() });
        let result = self.propose(META_GROUP, op).await?;
        result.node.ok_or_else(|| ServiceError::Internal("no node record in the answer".into()))
    }

    /// Every shard's target voters; `local` as for [`Cluster::nodes`].
    pub async fn shard_targets(&self, local: bool) -> Result<Vec<ShardTarget>, ServiceError> {
        Ok(self.query_from(META_GROUP, query::Q::ListShardTargets(ListShardTargets {}), local).await?.shard_targets)
    }

    /// Sets the voters and standing learners `shard` should move to, and where its
    /// leadership should be, if its target is still the one read (`expect_changed_ms`;
    /// 0: it had none).
    pub async fn set_shard_target(
        &self,
        shard: GroupId,
        target: Target,
        preferred_leader: Option<NodeId>,
        expect_changed_ms: u64,
    ) -> Result<(), ServiceError> {
        if shard > self.shards {
            return Err(ServiceError::NotFound(format!("shard {shard} does not exist (0..={})", self.shards)));
        }
        let Target { voters, learners } = Target::new(target.voters, target.learners);
        let preferred_leader = preferred_leader.filter(|l| voters.contains(l)).unwrap_or(0);
        let target = ShardTarget { shard, voters, learners, changed_ms: now_ms(), preferred_leader };
        let op = command::Op::PutShardTarget(PutShardTarget { target: Some(target), expect_changed_ms });
        self.propose(META_GROUP, op).await.map(|_| ())
    }

    /// `group` as its leader sees it, from whichever node leads it.
    pub async fn group_state(&self, group: GroupId) -> Result<GroupState, ServiceError> {
        let wire = forward_request::Body::GroupState(true);
        let here = || async { self.group_state_here(group).await.map(|state| state.encode_to_vec()) };
        let bytes = self.on_leader(group, here, wire).await?;
        GroupState::decode(bytes.as_slice()).map_err(|e| ServiceError::Internal(e.to_string()))
    }

    /// Every group (meta group and shards) as its leader sees it (`None`: no leader
    /// answered), with its target voters. One request per node (the groups it leads),
    /// not one per group: the driver asks every round, and a cluster may have a thousand
    /// shards; a group two nodes claim is taken from the higher term, and only groups no
    /// node claimed are asked for one by one (a leader this node does not know yet).
    pub async fn shard_views(&self) -> Vec<ShardView> {
        let targets: HashMap<GroupId, ShardTarget> =
            self.shard_targets(false).await.map(|t| t.into_iter().map(|t| (t.shard, t)).collect()).unwrap_or_default();
        let mut nodes = self.known_nodes();
        if !nodes.contains(&self.node_id) {
            nodes.push(self.node_id);
        }
        let reports = futures::future::join_all(nodes.into_iter().map(|node| self.led_group_states(node))).await;
        let mut led: HashMap<GroupId, GroupState> = HashMap::new();
        for state in reports.into_iter().flatten() {
            if led.get(&state.group).is_none_or(|known| known.term < state.term) {
                led.insert(state.group, state);
            }
        }
        let unclaimed: Vec<GroupId> = (0..=self.shards).filter(|group| !led.contains_key(group)).collect();
        let asked = futures::stream::iter(unclaimed)
            .map(|group| async move { (group, self.group_state(group).await.ok()) })
            .buffered(16)
            .collect::<Vec<_>>()
            .await;
        led.extend(asked.into_iter().filter_map(|(group, state)| Some((group, state?))));
        (0..=self.shards).map(|group| ShardView::new(group, led.remove(&group), targets.get(&group))).collect()
    }

    /// The groups `node` leads, as it sees them (none if it does not answer).
    async fn led_group_states(&self, node: NodeId) -> Vec<GroupState> {
        if node == self.node_id {
            return self.led_group_states_here().await;
        }
        match self.forward(node, META_GROUP, forward_request::Body::LedGroups(true)).await {
            Ok(bytes) => GroupStates::decode(bytes.as_slice()).map(|r| r.states).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// This node's view of `group`, if it leads it.
    pub(super) async fn group_state_here(&self, group: GroupId) -> Result<GroupState, consensus::ProposeError> {
        let Some(status) = self.raft.statuses(Statuses::Group(group)).await.pop() else {
            return Err(consensus::ProposeError::GroupNotFound { group });
        };
        if status.role != raft::StateRole::Leader {
            return Err(consensus::ProposeError::NotLeader { group, leader: status.leader });
        }
        Ok(self.group_state_of(status))
    }

    /// Every group this node leads, as it sees it.
    pub(super) async fn led_group_states_here(&self) -> Vec<GroupState> {
        let statuses = self.raft.statuses(Statuses::Led).await;
        statuses.into_iter().map(|status| self.group_state_of(status)).collect()
    }

    fn group_state_of(&self, status: GroupStatus) -> GroupState {
        GroupState {
            group: status.group,
            leader: self.node_id,
            term: status.term,
            voters: status.voters,
            learners: status.learners,
            voters_outgoing: status.voters_outgoing,
            commit_index: status.commit_index,
            last_index: status.last_index,
            first_index: status.first_index,
            matched: status.progress.into_iter().collect(),
            learner_lags: status
                .learner_lags
                .into_iter()
                .map(|(node, lag)| LearnerLag { node, entries: lag.entries, age_ms: lag.age_ms })
                .collect(),
        }
    }

    /// How many shards the cluster has (groups 1..=this; group 0 is the meta group).
    pub fn shard_count(&self) -> u64 {
        self.shards
    }

    /// Whether node `id` can be talked to now.
    pub fn is_reachable(&self, id: NodeId) -> bool {
        self.network.is_reachable(id)
    }

    /// Whether this node holds a replica of `group`.
    pub fn hosts(&self, group: GroupId) -> bool {
        self.hosted.read().expect("hosted").contains(&group)
    }

    /// The voters of `group` as this node last learnt them.
    pub fn replicas(&self, group: GroupId) -> Vec<NodeId> {
        self.replicas_of.read().expect("replicas").get(&group).cloned().unwrap_or_default()
    }

    /// Where a request for `group` may be tried: its known replicas first, then every
    /// other node (a replica may have moved since this node last looked).
    pub(super) fn candidates(&self, group: GroupId) -> Vec<NodeId> {
        let mut candidates = self.replicas(group);
        for node in self.known_nodes() {
            if !candidates.contains(&node) {
                candidates.push(node);
            }
        }
        candidates
    }

    /// Every node the records name that is not removed, as this node last learnt them.
    fn known_nodes(&self) -> Vec<NodeId> {
        let directory = self.directory.read().expect("directory");
        directory.values().filter(|n| n.state() != State::Removed).map(|n| n.id).collect()
    }

    /// Learns where groups are: this node's own replicas from their statuses (voters and
    /// learners as applied), the others from their targets.
    pub fn learn_placement(&self, statuses: &[GroupStatus], targets: &[ShardTarget]) {
        let mut replicas = self.replicas_of.write().expect("replicas");
        for target in targets {
            replicas.insert(target.shard, target.voters.clone());
        }
        // Voters only (the outgoing ones too while joint): they are who may lead and
        // whose majority a write needs; a learner (a backup site's replica) is neither.
        for status in statuses {
            let mut voters: Vec<NodeId> = status.voters.iter().chain(&status.voters_outgoing).copied().collect();
            voters.sort_unstable();
            voters.dedup();
            replicas.insert(status.group, voters);
        }
        *self.hosted.write().expect("hosted") = statuses.iter().map(|s| s.group).collect();
    }

    /// Remembers the node records (for routing and the status pages).
    pub fn learn_nodes(&self, nodes: &[NodeRecord]) {
        *self.directory.write().expect("directory") = nodes.iter().map(|n| (n.id, n.clone())).collect();
    }
}
