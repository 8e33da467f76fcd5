//! A deterministic simulated cluster for testing [`consensus::MultiRaft`] under faults.
//!
//! Everything runs on one thread in virtual milliseconds, driven by one seeded RNG:
//! message delays and drops, tick timing, client requests, and the fault schedule
//! (crash-restart that loses unsynced writes, partitions, isolation, lossy links).
//! Replaying a seed replays the run exactly, so a failing seed is a reproducible bug.
//!
//! [`SimCluster`] is the harness (usable step by step from tests); [`run_random`] runs
//! the standard randomized workload and checks the outcome with the drills' checker
//! ([`chaos_checker::checker::check`]): the same verdict `umschaos` gives real clusters.

pub mod sequence;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use raft::eraftpb::MessageType;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use storage::{Engine, MemEngine};

use crate::sequence::{SequenceMachine, position_of, read_sequence};
use chaos_checker::checker::{self, Observed};
use chaos_checker::history::{Operation, Outcome};
use consensus::ProposeError;
use consensus::{Command, GroupId, MultiRaft, NodeId, RaftConfig, Target};
use consensus::{GroupMessage, Transport};

/// Virtual milliseconds between ticks (plus a little random jitter per node).
pub const TICK_MS: u64 = 10;

/// The client id the simulated client uses for its requests.
const CLIENT_ID: u64 = 1;

/// Raft settings for simulations: deterministic election timeouts and a small log
/// threshold so compaction and snapshots happen often.
pub fn sim_raft_config() -> RaftConfig {
    RaftConfig {
        election_tick: 10,
        heartbeat_tick: 2,
        max_election_tick: Some(11),
        max_size_per_msg: 64 << 10,
        max_inflight_msgs: 64,
        compact_every: 16,
        compact_log_budget: 16_384,
        compact_threshold: 40,
        compact_keep: 10,
        dedup_window: 1_000_000,
    }
}

/// A message batch travelling between two simulated nodes.
struct Delivery {
    from: NodeId,
    to: NodeId,
    batch: Vec<GroupMessage>,
}

/// The simulated network: delayed, lossy, partitionable delivery.
#[derive(Default)]
struct Network {
    /// Keyed by (delivery time, sequence) so equal times keep send order.
    in_flight: BTreeMap<(u64, u64), Delivery>,
    next_seq: u64,
    /// Directed links that drop everything.
    blocked: BTreeSet<(NodeId, NodeId)>,
    drop_rate: f64,
    max_delay_ms: u64,
}

/// Collects one node's outgoing batches during a round.
#[derive(Default)]
struct Collect(Vec<(NodeId, Vec<GroupMessage>)>);

impl Transport for Collect {
    fn send(&mut self, to: NodeId, batch: Vec<GroupMessage>) {
        self.0.push((to, batch));
    }
}

struct SimNode {
    engine: Arc<MemEngine>,
    /// `None` while crashed.
    raft: Option<MultiRaft<SequenceMachine>>,
    next_tick_at: u64,
}

/// A completed proposal, as delivered to the simulated client.
struct Done {
    request_id: u64,
    attempt: u32,
    result: Result<Vec<u8>, ProposeError>,
}

/// Shape of a simulated cluster.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    pub nodes: usize,
    /// Replicas per group (placed round-robin over the nodes).
    pub replicas: usize,
    pub groups: u64,
}

/// A simulated cluster; see the module docs.
pub struct SimCluster {
    rng: StdRng,
    now: u64,
    config: RaftConfig,
    nodes: BTreeMap<NodeId, SimNode>,
    network: Network,
    placement: BTreeMap<GroupId, Vec<NodeId>>,
    /// The membership each group was told to move to (every node is told, as the real
    /// nodes read them from the meta group).
    targets: BTreeMap<GroupId, Target>,
    /// Who led each group in each term, to check there is at most one.
    leaders_by_term: BTreeMap<(GroupId, u64), NodeId>,
    violations: Vec<String>,
    completions: Arc<Mutex<Vec<Done>>>,
    /// Timestamped fault and recovery log, printed when a check fails.
    log: Vec<String>,
}

impl SimCluster {
    /// Creates and bootstraps the cluster; no leader exists until elections ran.
    pub fn new(options: &SimOptions) -> Self {
        let config = sim_raft_config();
        let mut rng = StdRng::seed_from_u64(options.seed);
        let mut nodes = BTreeMap::new();
        for id in 1..=options.nodes as NodeId {
            let engine = Arc::new(MemEngine::new());
            let raft = MultiRaft::open(id, config.clone(), engine.clone() as Engine, SequenceMachine::default())
                .expect("open fresh simulated node");
            let next_tick_at = rng.gen_range(1..=TICK_MS);
            nodes.insert(id, SimNode { engine, raft: Some(raft), next_tick_at });
        }
        let mut placement = BTreeMap::new();
        for group in 1..=options.groups {
            let replicas: Vec<NodeId> =
                (0..options.replicas).map(|k| ((group as usize + k) % options.nodes) as NodeId + 1).collect();
            for node in &replicas {
                let raft = nodes.get_mut(node).and_then(|n| n.raft.as_mut()).expect("node up");
                raft.bootstrap_group(group, &replicas).expect("bootstrap group");
            }
            placement.insert(group, replicas);
        }
        Self {
            rng,
            now: 0,
            config,
            nodes,
            network: Network { max_delay_ms: 3, ..Default::default() },
            placement,
            targets: BTreeMap::new(),
            leaders_by_term: BTreeMap::new(),
            violations: Vec::new(),
            completions: Arc::new(Mutex::new(Vec::new())),
            log: Vec::new(),
        }
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The voters a group should have: its target's, else those it was bootstrapped on.
    pub fn replicas(&self, group: GroupId) -> &[NodeId] {
        self.targets.get(&group).map_or(&self.placement[&group], |t| &t.voters)
    }

    /// Tells every node the membership `group` should move to.
    pub fn set_target(&mut self, group: GroupId, target: Target) {
        self.note(format!("group {group}: target voters {:?} learners {:?}", target.voters, target.learners));
        for node in self.nodes.values_mut() {
            if let Some(raft) = node.raft.as_mut() {
                raft.set_target(group, Some(target.clone()));
            }
        }
        self.targets.insert(group, target);
    }

    /// Violations seen while stepping (two leaders in one term of a group).
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// The running nodes holding a replica of `group`.
    fn hosts(&self, group: GroupId) -> Vec<NodeId> {
        let hosting = |n: &SimNode| n.raft.as_ref().is_some_and(|r| r.has_group(group));
        self.nodes.iter().filter(|(_, n)| hosting(n)).map(|(&id, _)| id).collect()
    }

    /// Whether `group` has exactly `target`'s voters and learners (per its leader), is
    /// not joint, and no other node holds a replica of it.
    fn on_target(&self, group: GroupId, target: &Target) -> bool {
        let status = self.leader(group).and_then(|l| self.node(l)).and_then(|r| r.status(group));
        let mut members: Vec<NodeId> = target.voters.iter().chain(&target.learners).copied().collect();
        members.sort_unstable();
        status
            .is_some_and(|s| s.voters == target.voters && s.learners == target.learners && s.voters_outgoing.is_empty())
            && self.hosts(group) == members
    }

    /// Whether every group with a target is on it (see [`SimCluster::on_target`]).
    pub fn membership_settled(&self) -> bool {
        self.targets.iter().all(|(&group, target)| self.on_target(group, target))
    }

    /// What differs from the targets, for a failure report.
    pub fn membership_report(&self) -> String {
        let mut lines = Vec::new();
        for (&group, target) in &self.targets {
            let status = self.leader(group).and_then(|l| self.node(l)).and_then(|r| r.status(group));
            let hosts = self.hosts(group);
            let fine = self.on_target(group, target);
            if !fine {
                lines.push(format!(
                    "group {group}: target {:?} learners {:?}, hosts {hosts:?}, leader's view {:?}",
                    target.voters,
                    target.learners,
                    status.map(|s| (s.voters, s.learners, s.voters_outgoing))
                ));
                for host in hosts {
                    let s = self.node(host).and_then(|r| r.status(group)).expect("host");
                    lines.push(format!(
                        "  node {host}: {:?} term {} leader {:?} applied {} last {} voters {:?} learners {:?} outgoing {:?}",
                        s.role, s.term, s.leader, s.applied_index, s.last_index, s.voters, s.learners, s.voters_outgoing
                    ));
                }
            }
        }
        lines.join("\n")
    }

    /// The running node `id`, or `None` while it is crashed.
    pub fn node(&self, id: NodeId) -> Option<&MultiRaft<SequenceMachine>> {
        self.nodes.get(&id)?.raft.as_ref()
    }

    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut MultiRaft<SequenceMachine>> {
        self.nodes.get_mut(&id)?.raft.as_mut()
    }

    /// Adds a node that hosts nothing yet (for membership changes).
    pub fn add_node(&mut self, id: NodeId) {
        let engine = Arc::new(MemEngine::new());
        let raft = MultiRaft::open(id, self.config.clone(), engine.clone() as Engine, SequenceMachine::default())
            .expect("open fresh simulated node");
        let mut raft = raft;
        for (&group, target) in &self.targets {
            raft.set_target(group, Some(target.clone()));
        }
        let next_tick_at = self.now + TICK_MS;
        self.nodes.insert(id, SimNode { engine, raft: Some(raft), next_tick_at });
    }

    /// The node that currently leads `group`, if one running node says it does.
    pub fn leader(&self, group: GroupId) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(&id, n)| n.raft.as_ref().map(|r| (id, r)))
            .filter(|(_, r)| r.is_leader(group))
            .max_by_key(|(_, r)| r.status(group).map(|s| s.term))
            .map(|(id, _)| id)
    }

    fn note(&mut self, what: String) {
        self.log.push(format!("{:>6}ms {what}", self.now));
    }

    /// The last lines of the fault log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.log[self.log.len().saturating_sub(lines)..].join("\n")
    }

    /// Power-fails node `id`: its process state and unsynced writes are gone.
    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        if node.raft.take().is_some() {
            node.engine.crash();
            self.note(format!("crash node {id}"));
        }
    }

    /// Restarts a crashed node from what its engine kept.
    pub fn restart(&mut self, id: NodeId) {
        let now = self.now;
        let config = self.config.clone();
        let node = self.nodes.get_mut(&id).expect("known node");
        if node.raft.is_none() {
            let mut raft = MultiRaft::open(id, config, node.engine.clone() as Engine, SequenceMachine::default())
                .unwrap_or_else(|e| panic!("node {id} failed to restart: {e}"));
            for (&group, target) in &self.targets {
                raft.set_target(group, Some(target.clone()));
            }
            node.raft = Some(raft);
            node.next_tick_at = now + TICK_MS;
            self.note(format!("restart node {id}"));
        }
    }

    /// Cuts both directions between every node in `side` and every node outside it.
    pub fn partition(&mut self, side: &[NodeId]) {
        let others: Vec<NodeId> = self.nodes.keys().copied().filter(|n| !side.contains(n)).collect();
        for &a in side {
            for &b in &others {
                self.network.blocked.insert((a, b));
                self.network.blocked.insert((b, a));
            }
        }
        self.note(format!("partition {side:?} | {others:?}"));
    }

    /// Removes all partitions and link faults.
    pub fn heal(&mut self) {
        self.network.blocked.clear();
        self.network.drop_rate = 0.0;
        self.network.max_delay_ms = 3;
        self.note("heal network".into());
    }

    pub fn set_drop_rate(&mut self, rate: f64) {
        self.network.drop_rate = rate;
        self.note(format!("drop rate {rate:.2}"));
    }

    pub fn set_max_delay(&mut self, ms: u64) {
        self.network.max_delay_ms = ms.max(1);
        self.note(format!("max delay {ms}ms"));
    }

    /// Proposes request `request_id` (payload = its id) on node `node`; the outcome
    /// arrives through [`SimCluster::take_completions`].
    pub fn propose(&mut self, node: NodeId, group: GroupId, request_id: u64, attempt: u32) -> bool {
        let sink = Arc::clone(&self.completions);
        let Some(raft) = self.node_mut(node) else {
            return false;
        };
        let command = Command::new(CLIENT_ID, request_id, request_id.to_be_bytes().to_vec());
        raft.propose(
            group,
            &command,
            Box::new(move |result| {
                sink.lock().expect("completion sink").push(Done { request_id, attempt, result });
            }),
        );
        true
    }

    /// Starts an asynchronous call on node `node` and steps until its callback fired or
    /// `limit_ms` passed. Returns `None` if the node is down or nothing came back.
    pub fn call<T: Send + 'static>(
        &mut self,
        node: NodeId,
        limit_ms: u64,
        start: impl FnOnce(&mut MultiRaft<SequenceMachine>, Box<dyn FnOnce(T) + Send>),
    ) -> Option<T> {
        let slot = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&slot);
        start(self.node_mut(node)?, Box::new(move |value| *sink.lock().expect("slot") = Some(value)));
        self.run_until(limit_ms, |_| slot.lock().expect("slot").is_some());
        slot.lock().expect("slot").take()
    }

    /// Unsafe recovery of `group` on node `node` (see
    /// [`MultiRaft::recover_as_sole_voter`]); the messages its rounds send go out as
    /// usual. Returns the index it recovered at.
    pub fn recover_as_sole_voter(&mut self, node: NodeId, group: GroupId) -> u64 {
        let mut out = Collect::default();
        let raft = self.node_mut(node).expect("node up");
        let at = raft.recover_as_sole_voter(group, &mut out).expect("recovery");
        for (to, batch) in out.0 {
            self.send(node, to, batch);
        }
        self.note(format!("group {group}: node {node} recovered as sole voter at {at}"));
        at
    }

    fn take_completions(&mut self) -> Vec<Done> {
        std::mem::take(&mut *self.completions.lock().expect("completion sink"))
    }

    /// Advances virtual time by one millisecond: deliver, tick, run every node's round.
    pub fn step(&mut self) {
        self.now += 1;
        self.deliver_due();
        let running: BTreeSet<NodeId> =
            self.nodes.iter().filter(|(_, n)| n.raft.is_some()).map(|(&id, _)| id).collect();
        for (&me, node) in self.nodes.iter_mut() {
            if node.next_tick_at <= self.now {
                node.next_tick_at = self.now + TICK_MS + self.rng.gen_range(0..=3);
                if let Some(raft) = node.raft.as_mut() {
                    // What a real node learns from its connections: a crashed or cut-off leader.
                    let blocked = &self.network.blocked;
                    raft.wake_orphans(|leader| running.contains(&leader) && !blocked.contains(&(leader, me)));
                    raft.tick();
                }
            }
        }
        if self.now.is_multiple_of(5) {
            self.check_leaders();
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let mut out = Collect::default();
            if let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) {
                raft.handle_ready(&mut out).unwrap_or_else(|e| panic!("node {id}: round failed: {e}"));
            }
            for (to, batch) in out.0 {
                self.send(id, to, batch);
            }
        }
    }

    /// Records who leads what in which term; a second leader of one term is a violation.
    fn check_leaders(&mut self) {
        for (&id, node) in &self.nodes {
            let Some(raft) = node.raft.as_ref() else { continue };
            for (group, term) in raft.leading() {
                let first = *self.leaders_by_term.entry((group, term)).or_insert(id);
                if first != id && self.violations.len() < 10 {
                    self.violations.push(format!("group {group}: nodes {first} and {id} both led term {term}"));
                }
            }
        }
    }

    /// Steps until `done` holds or `limit_ms` passed; returns whether it held.
    pub fn run_until(&mut self, limit_ms: u64, mut done: impl FnMut(&SimCluster) -> bool) -> bool {
        let deadline = self.now + limit_ms;
        while self.now < deadline {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    fn send(&mut self, from: NodeId, to: NodeId, batch: Vec<GroupMessage>) {
        let mut kept = Vec::with_capacity(batch.len());
        for message in batch {
            if self.network.drop_rate > 0.0 && self.rng.gen_bool(self.network.drop_rate) {
                self.report_lost_snapshot(from, &message);
            } else {
                kept.push(message);
            }
        }
        if kept.is_empty() {
            return;
        }
        let at = self.now + self.rng.gen_range(1..=self.network.max_delay_ms);
        let seq = self.network.next_seq;
        self.network.next_seq += 1;
        self.network.in_flight.insert((at, seq), Delivery { from, to, batch: kept });
    }

    fn report_lost_snapshot(&mut self, from: NodeId, message: &GroupMessage) {
        if message.message.msg_type() == MessageType::MsgSnapshot {
            let to = message.message.to;
            if let Some(raft) = self.node_mut(from) {
                raft.report_snapshot(message.group, to, false);
            }
        }
    }

    fn deliver_due(&mut self) {
        while let Some(entry) = self.network.in_flight.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let Delivery { from, to, batch } = entry.remove();
            let reachable = !self.network.blocked.contains(&(from, to)) && self.node(to).is_some();
            for message in batch {
                if !reachable {
                    self.report_lost_snapshot(from, &message);
                    continue;
                }
                let is_snapshot = message.message.msg_type() == MessageType::MsgSnapshot;
                let group = message.group;
                self.node_mut(to)
                    .expect("checked reachable")
                    .step(group, message.message)
                    .unwrap_or_else(|e| panic!("node {to}: step failed: {e}"));
                if is_snapshot && let Some(raft) = self.node_mut(from) {
                    raft.report_snapshot(group, to, true);
                }
            }
        }
    }

    /// Each replica's applied sequence of request ids per group, read from its engine.
    pub fn sequences(&self) -> BTreeMap<NodeId, BTreeMap<GroupId, Vec<u64>>> {
        let mut out = BTreeMap::new();
        for (&id, node) in &self.nodes {
            let Some(raft) = node.raft.as_ref() else { continue };
            let mut groups = BTreeMap::new();
            for group in raft.group_ids() {
                let items = read_sequence(&*node.engine, group).expect("read sequence");
                let ids = items
                    .iter()
                    .map(|item| u64::from_be_bytes(item.as_slice().try_into().expect("8-byte request id")))
                    .collect();
                groups.insert(group, ids);
            }
            out.insert(id, groups);
        }
        out
    }

    /// Whether every group has a leader and all its running replicas applied the
    /// leader's whole committed log.
    pub fn converged(&self) -> bool {
        self.placement.keys().all(|&group| {
            let Some(leader) = self.leader(group) else { return false };
            let commit = self.node(leader).and_then(|r| r.status(group)).map(|s| s.commit_index);
            self.nodes.values().filter_map(|n| n.raft.as_ref()).all(|raft| match raft.status(group) {
                Some(status) => Some(status.applied_index) == commit,
                None => true,
            })
        })
    }
}

/// Parameters of [`run_random`].
#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    pub cluster: SimOptions,
    /// Client requests issued in total.
    pub requests: u64,
    pub max_in_flight: usize,
    /// Virtual time during which faults are injected; requests are spread over it.
    pub workload_ms: u64,
    /// Virtual time allowed afterwards for every request to be acknowledged and every
    /// replica to converge, with all faults healed.
    pub settle_ms: u64,
    pub faults: bool,
    /// Replica moves, additions and removals during the workload (needs spare nodes).
    pub moves: bool,
}

impl WorkloadOptions {
    /// The standard run: `nodes` nodes with as many replicas per group, 64 groups.
    pub fn standard(seed: u64, nodes: usize) -> Self {
        Self {
            cluster: SimOptions { seed, nodes, replicas: nodes, groups: 64 },
            requests: 400,
            max_in_flight: 32,
            workload_ms: 3_000,
            settle_ms: 30_000,
            faults: true,
            moves: false,
        }
    }

    /// Membership changes under faults: 5 nodes, groups of 3 (sometimes 4) voters that
    /// move between them while leaders are killed and the network misbehaves.
    pub fn with_moves(seed: u64) -> Self {
        Self {
            cluster: SimOptions { seed, nodes: 5, replicas: 3, groups: 16 },
            settle_ms: 60_000,
            moves: true,
            ..Self::standard(seed, 5)
        }
    }
}

/// Changes one group's target: a move of one voter to a node outside the group, or a
/// voter more or fewer (between 3 and 4); a third of the targets also name a standing
/// learner outside the voters (a backup site's replica), which the next target may
/// promote, demote or drop.
fn random_target(rng: &mut StdRng, current: &[NodeId], nodes: &[NodeId]) -> Target {
    let voters = random_voters(rng, current, nodes);
    let outside: Vec<NodeId> = nodes.iter().copied().filter(|n| !voters.contains(n)).collect();
    let learner = (rng.gen_range(0..3) == 0).then(|| outside.choose(rng).copied()).flatten();
    Target::new(voters, learner)
}

fn random_voters(rng: &mut StdRng, current: &[NodeId], nodes: &[NodeId]) -> Vec<NodeId> {
    let outside: Vec<NodeId> = nodes.iter().copied().filter(|n| !current.contains(n)).collect();
    let mut voters = current.to_vec();
    match rng.gen_range(0..4) {
        0 if voters.len() == 3 && !outside.is_empty() => voters.push(*outside.choose(rng).expect("outside")),
        1 if voters.len() == 4 => {
            voters.remove(rng.gen_range(0..voters.len()));
        }
        _ if !outside.is_empty() => {
            let leaving = rng.gen_range(0..voters.len());
            voters[leaving] = *outside.choose(rng).expect("outside");
        }
        _ => {}
    }
    voters.sort_unstable();
    voters
}

/// What a passing run did.
#[derive(Clone, Debug)]
pub struct SimReport {
    pub seed: u64,
    pub requests: u64,
    pub attempts: u64,
    pub faults: u64,
    /// Target changes made (moves, additions, removals of voters).
    pub target_changes: u64,
    pub virtual_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RequestState {
    WaitingUntil(u64),
    InFlight { deadline: u64 },
    Acked(u64),
}

struct Request {
    group: GroupId,
    attempt: u32,
    state: RequestState,
    /// Virtual times of the first attempt and of the acknowledgement.
    invoked_ms: u64,
    completed_ms: u64,
}

/// The simulation's requests as a drill history: each group is a mailbox, the position
/// a request was applied at is its UID, and its id is its client reference.
fn drill_history(requests: &BTreeMap<u64, Request>) -> Vec<Operation> {
    requests
        .iter()
        .map(|(&id, request)| Operation {
            id,
            user: format!("group-{}", request.group),
            shard: request.group,
            client_ref: id.to_string(),
            node: 0, // Requests retry across nodes; the simulation does not isolate clients.
            invoked_ms: request.invoked_ms,
            completed_ms: request.completed_ms,
            outcome: match request.state {
                RequestState::Acked(position) => Outcome::Ok { uid: position },
                _ => Outcome::Unknown { reason: "not acknowledged".into() },
            },
        })
        .collect()
}

/// Every running replica's sequences, in the checker's terms (see [`drill_history`]).
fn observed(sequences: &BTreeMap<NodeId, BTreeMap<GroupId, Vec<u64>>>) -> Observed {
    let mut observed = Observed::new();
    for (&node, groups) in sequences {
        for (&group, ids) in groups {
            let messages = ids.iter().enumerate().map(|(i, id)| (i as u64 + 1, id.to_string())).collect();
            observed.insert((format!("group-{group}"), node), messages);
        }
    }
    observed
}

/// An active fault and when it heals.
enum Fault {
    Crashed(NodeId),
    Partitioned,
    Lossy,
}

/// Runs a randomized client workload under random faults, heals, waits for every
/// request to be acknowledged (clients retry with the same request id) and replicas to
/// converge, then checks the history. Returns the violations with the fault log.
pub fn run_random(options: &WorkloadOptions) -> Result<SimReport, String> {
    let mut cluster = SimCluster::new(&options.cluster);
    let mut rng = StdRng::seed_from_u64(options.cluster.seed ^ 0x5eed_c11e);
    let groups = options.cluster.groups;
    let mut requests: BTreeMap<u64, Request> = BTreeMap::new();
    let mut leader_guess: BTreeMap<GroupId, NodeId> = BTreeMap::new();
    let mut faults: Vec<(u64, Fault)> = Vec::new();
    let (mut attempts, mut fault_count) = (0u64, 0u64);
    let mut next_fault_at = 500;
    let issue_every = (options.workload_ms / options.requests.max(1)).max(1);
    let deadline = options.workload_ms + options.settle_ms;
    let max_crashed = (options.cluster.replicas - 1) / 2;
    let (mut next_move_at, mut target_changes) = (300, 0);

    while cluster.now() < deadline {
        let now = cluster.now();
        // Faults: heal what is due; inject new ones during the workload.
        let (due, active): (Vec<_>, Vec<_>) =
            faults.drain(..).partition(|(at, _)| *at <= now || now >= options.workload_ms);
        faults = active;
        for (_, fault) in due {
            match fault {
                Fault::Crashed(node) => cluster.restart(node),
                Fault::Partitioned | Fault::Lossy => cluster.heal(),
            }
        }
        if options.faults && now < options.workload_ms && now >= next_fault_at && faults.len() < 2 {
            next_fault_at = now + rng.gen_range(100..400);
            let heal_at = now + rng.gen_range(150..1200);
            let crashed = faults.iter().filter(|(_, f)| matches!(f, Fault::Crashed(_))).count();
            let nodes = cluster.node_ids();
            fault_count += 1;
            match rng.gen_range(0..5) {
                0 | 1 if crashed < max_crashed.max(1) => {
                    // Prefer a leader: that is where acknowledged-but-unreplicated data could hide.
                    let group = rng.gen_range(1..=groups);
                    let victim = cluster.leader(group).unwrap_or_else(|| *nodes.choose(&mut rng).expect("nodes"));
                    if cluster.node(victim).is_some() {
                        cluster.crash(victim);
                        faults.push((heal_at, Fault::Crashed(victim)));
                    }
                }
                2 if !faults.iter().any(|(_, f)| matches!(f, Fault::Partitioned)) => {
                    let mut side = nodes.clone();
                    side.shuffle(&mut rng);
                    side.truncate(rng.gen_range(1..=nodes.len() / 2));
                    cluster.partition(&side);
                    faults.push((heal_at, Fault::Partitioned));
                }
                3 => {
                    cluster.set_drop_rate(rng.gen_range(0.05..0.3));
                    faults.push((heal_at, Fault::Lossy));
                }
                _ => {
                    cluster.set_max_delay(rng.gen_range(5..40));
                    faults.push((heal_at, Fault::Lossy));
                }
            }
        }

        if options.moves && now < options.workload_ms && now >= next_move_at {
            next_move_at = now + rng.gen_range(100..300);
            let group = rng.gen_range(1..=groups);
            let target = random_target(&mut rng, cluster.replicas(group), &cluster.node_ids());
            cluster.set_target(group, target);
            target_changes += 1;
        }

        // Client: issue new requests, retry waiting ones, time out silent ones.
        let in_flight = requests.values().filter(|r| !matches!(r.state, RequestState::Acked(_))).count();
        // Requests keep coming after the fault window until all were issued.
        if now.is_multiple_of(issue_every)
            && (requests.len() as u64) < options.requests
            && in_flight < options.max_in_flight
        {
            let id = requests.len() as u64 + 1;
            requests.insert(
                id,
                Request {
                    group: rng.gen_range(1..=groups),
                    attempt: 0,
                    state: RequestState::WaitingUntil(now),
                    invoked_ms: now,
                    completed_ms: 0,
                },
            );
        }
        for (&id, request) in requests.iter_mut() {
            match request.state {
                RequestState::InFlight { deadline } if deadline <= now => {
                    request.state = RequestState::WaitingUntil(now); // Unknown outcome: retry.
                    leader_guess.remove(&request.group);
                }
                RequestState::WaitingUntil(at) if at <= now => {
                    let replicas = cluster.replicas(request.group).to_vec();
                    let target = *leader_guess
                        .entry(request.group)
                        .or_insert_with(|| *replicas.choose(&mut rng).expect("replicas"));
                    request.attempt += 1;
                    attempts += 1;
                    if cluster.propose(target, request.group, id, request.attempt) {
                        request.state = RequestState::InFlight { deadline: now + 1_500 };
                    } else {
                        leader_guess.remove(&request.group); // Connection refused: node down.
                        request.state = RequestState::WaitingUntil(now + rng.gen_range(5..30));
                    }
                }
                _ => {}
            }
        }

        cluster.step();

        for done in cluster.take_completions() {
            let request = requests.get_mut(&done.request_id).expect("known request");
            match done.result {
                Ok(response) => {
                    let position = position_of(&response).ok_or("bad response")?;
                    if let RequestState::Acked(earlier) = request.state
                        && earlier != position
                    {
                        return Err(format!(
                            "request {} acknowledged twice with different positions {earlier} and {position}\n{}",
                            done.request_id,
                            cluster.log_tail(40)
                        ));
                    }
                    if !matches!(request.state, RequestState::Acked(_)) {
                        request.completed_ms = cluster.now();
                    }
                    request.state = RequestState::Acked(position);
                }
                Err(_) if matches!(request.state, RequestState::Acked(_)) || done.attempt != request.attempt => {}
                Err(error) => {
                    match error {
                        ProposeError::NotLeader { leader: Some(leader), .. } => {
                            leader_guess.insert(request.group, leader);
                        }
                        _ => {
                            leader_guess.remove(&request.group);
                        }
                    }
                    request.state = RequestState::WaitingUntil(cluster.now() + rng.gen_range(5..30));
                }
            }
        }

        let all_acked = requests.len() as u64 == options.requests
            && requests.values().all(|r| matches!(r.state, RequestState::Acked(_)));
        if let Some(violation) = cluster.violations().first() {
            return Err(format!("{violation}\nfault log:\n{}", cluster.log_tail(60)));
        }
        if cluster.now() > options.workload_ms
            && all_acked
            && cluster.now().is_multiple_of(50)
            && cluster.converged()
            && cluster.membership_settled()
        {
            // No stall threshold: virtual time makes every slow write "unavailable".
            let verdict = checker::check(&drill_history(&requests), &observed(&cluster.sequences()), u64::MAX);
            if verdict.violations() > 0 {
                let violations: Vec<&str> = verdict.violation_lines().map(String::as_str).collect();
                return Err(format!("{}\nfault log:\n{}", violations.join("\n"), cluster.log_tail(60)));
            }
            return Ok(SimReport {
                seed: options.cluster.seed,
                requests: options.requests,
                attempts,
                faults: fault_count,
                target_changes,
                virtual_ms: cluster.now(),
            });
        }
    }
    let unacked = requests.values().filter(|r| !matches!(r.state, RequestState::Acked(_))).count();
    Err(format!(
        "no convergence within {deadline}ms: {unacked} requests unacknowledged, converged={}\n{}\nfault log:\n{}",
        cluster.converged(),
        cluster.membership_report(),
        cluster.log_tail(60)
    ))
}
