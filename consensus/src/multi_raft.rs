//! [`MultiRaft`]: every Raft group of one node, driven in rounds.
//!
//! A round ([`MultiRaft::handle_ready`]) follows TiKV's raftstore: collect the readies
//! of all groups with work; send the messages that need no persistence; write all
//! entries and hard states in one batch with one fsync; send the messages that waited
//! for persistence; apply committed entries into one apply batch; write it; then run the
//! callbacks of completed proposals and reads. Nothing is acknowledged before its entry
//! is committed on a quorum, fsynced here, and applied.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, ConfState, Entry, EntryType, Message};
use raft::{RawNode, SnapshotStatus, StateRole};
use storage::{ApplyState, Cf, Engine, GroupStorage, WriteBatch, keys};
use tracing::{debug, info, warn};

use crate::command::Command;
use crate::compaction::{self, LogPosition};
use crate::config::RaftConfig;
use crate::election;
use crate::quiesce;
use crate::reconfigure::{self, GroupView, Step, Target, sorted};
use crate::stale;

/// Ticks a read may wait for its read index (at least two election timeouts): a leader
/// that lost its quorum without noticing yet never answers, and the caller should retry.
const READ_INDEX_TICKS: u32 = 40;
/// Ticks between a leader's looks at its membership (see [`crate::reconfigure`]).
const RECONFIGURE_EVERY_TICKS: u64 = 5;
/// Learners catching up (by snapshot, mostly) at once in the groups one node leads.
pub const MAX_CATCHING_UP: usize = 2;
use crate::dedup;
use crate::error::{Error, ProposeError, Result};
use crate::group::{Completion, Group, PendingProposal, PendingRead};
use crate::state_machine::{ApplyBatch, ApplyContext, StateMachine};
use crate::transport::{Outbox, Transport};
use crate::{GroupId, NodeId};

/// Receives the outcome of a proposal: the state machine's response, once applied.
pub type ProposalCallback = Box<dyn FnOnce(std::result::Result<Vec<u8>, ProposeError>) + Send>;

/// Receives the outcome of a ReadIndex request: `Ok` once this replica has applied
/// everything committed before the read arrived, so a local read is linearizable.
pub type ReadCallback = Box<dyn FnOnce(std::result::Result<(), ProposeError>) + Send>;

/// Something the driver may want to act on (start/stop per-leader work, metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// This replica's role or its view of the leader changed.
    RoleChanged { group: GroupId, role: StateRole, leader: Option<NodeId>, term: u64 },
    /// A conf change removed this node from the group; its data is deleted.
    GroupRemoved { group: GroupId },
}

/// A group replica's state for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    pub group: GroupId,
    pub role: StateRole,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    pub first_index: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// The outgoing voters while the group is in a joint configuration; else empty.
    pub voters_outgoing: Vec<NodeId>,
    /// For a leader: each peer's matched index.
    pub progress: BTreeMap<NodeId, u64>,
    /// For a leader: what each learner lacks of the committed log.
    pub learner_lags: BTreeMap<NodeId, Lag>,
}

/// How far a replica is behind the committed log: what would be lost if it were the
/// only one left (a backup site's recovery point).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lag {
    /// Committed entries it does not hold.
    pub entries: u64,
    /// Age of the oldest committed client entry it does not hold, in ms (by the
    /// proposing leader's clock); 0 when it holds every one.
    pub age_ms: u64,
}

impl Lag {
    /// The largest entries and the largest age of any learner of `statuses` (each
    /// figure of its own: the worst case of losing every replica but the learners).
    pub fn worst_of(statuses: &[GroupStatus]) -> Lag {
        let lags = statuses.iter().flat_map(|s| s.learner_lags.values());
        lags.fold(Lag::default(), |w, lag| Lag {
            entries: w.entries.max(lag.entries),
            age_ms: w.age_ms.max(lag.age_ms),
        })
    }
}

/// All Raft groups hosted by one node.
pub struct MultiRaft<M: StateMachine> {
    node_id: NodeId,
    config: RaftConfig,
    engine: Engine,
    groups: BTreeMap<GroupId, Group>,
    state_machine: M,
    events: Vec<Event>,
    logger: slog::Logger,
    next_read_id: u64,
    /// The membership each group should have (set by the placement driver); a group's
    /// leader moves its membership there a step at a time.
    targets: BTreeMap<GroupId, Target>,
    /// Probes and notices about stale replicas, sent with the next round.
    stale_messages: Vec<(GroupId, Message)>,
    /// Empty replicas no leader keeps, deleted at the start of the next round.
    retiring: Vec<GroupId>,
    /// Groups that may have a Ready: those stepped, proposed to, ticked or otherwise
    /// touched since the last round (or left with work by it). A round looks at these
    /// only, so a node hosting a thousand quiet groups does not walk them all per round.
    touched: BTreeSet<GroupId>,
    /// Which groups tick and which sleep, kept beside the groups so the timer walks the
    /// awake ones only.
    sleep: SleepTable,
    ticks: u64,
}

/// Which groups are awake and which are quiesced (with the leader each knows), as of the
/// last time each was touched. The timer walks `awake` and [`MultiRaft::wake_orphans`]
/// walks `asleep`, never every group: a node may host a thousand quiesced groups, and a
/// group's state is kilobytes, so walking them all 20 times a second costs a cache miss
/// per group each time.
#[derive(Default)]
struct SleepTable {
    awake: BTreeSet<GroupId>,
    asleep: BTreeMap<GroupId, NodeId>,
}

impl SleepTable {
    fn note(&mut self, g: &Group) {
        if g.quiesced {
            self.awake.remove(&g.id);
            self.asleep.insert(g.id, g.raw.raft.leader_id);
        } else {
            self.asleep.remove(&g.id);
            self.awake.insert(g.id);
        }
    }

    fn forget(&mut self, group: GroupId) {
        self.awake.remove(&group);
        self.asleep.remove(&group);
    }
}

impl<M: StateMachine> MultiRaft<M> {
    /// Opens every group persisted on `engine` (a fresh engine opens with none).
    pub fn open(node_id: NodeId, config: RaftConfig, engine: Engine, state_machine: M) -> Result<Self> {
        let mut multi = Self {
            node_id,
            config,
            engine,
            groups: BTreeMap::new(),
            state_machine,
            events: Vec::new(),
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            next_read_id: 1,
            targets: BTreeMap::new(),
            stale_messages: Vec::new(),
            retiring: Vec::new(),
            touched: BTreeSet::new(),
            sleep: SleepTable::default(),
            ticks: 0,
        };
        for group in GroupStorage::list_groups(&multi.engine)? {
            multi.load_group(group)?;
        }
        info!(node = node_id, groups = multi.groups.len(), "multi-raft opened");
        Ok(multi)
    }

    /// Creates group `group` with `voters` as its initial members. Every initial member
    /// calls this with the same voters; nodes added later receive a snapshot instead.
    pub fn bootstrap_group(&mut self, group: GroupId, voters: &[NodeId]) -> Result<()> {
        if self.groups.contains_key(&group) || GroupStorage::exists(&self.engine, group)? {
            return Err(Error::GroupExists(group));
        }
        let conf_state = ConfState { voters: voters.to_vec(), ..Default::default() };
        let mut batch = WriteBatch::new();
        GroupStorage::bootstrap(group, &conf_state, &mut batch);
        self.engine.write(&batch, true)?;
        self.load_group(group)
    }

    fn load_group(&mut self, group: GroupId) -> Result<()> {
        let storage = GroupStorage::open(self.engine.clone(), group)?;
        let apply_state = storage.apply_state()?;
        let raft_config = self.config.raft_config(self.node_id, apply_state.applied_index);
        let raw = RawNode::new(&raft_config, storage, &self.logger)?;
        self.groups.insert(group, Group::new(group, raw, apply_state.applied_index, apply_state.applied_term));
        self.touched.insert(group);
        Ok(())
    }

    /// `group`, marked as possibly having a Ready for the next round.
    fn touch(&mut self, group: GroupId) -> Option<&mut Group> {
        let g = self.groups.get_mut(&group)?;
        self.touched.insert(group);
        Some(g)
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn state_machine(&self) -> &M {
        &self.state_machine
    }

    pub fn state_machine_mut(&mut self) -> &mut M {
        &mut self.state_machine
    }

    pub fn group_ids(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.keys().copied()
    }

    pub fn has_group(&self, group: GroupId) -> bool {
        self.groups.contains_key(&group)
    }

    /// The leader this replica knows of, if any.
    pub fn leader_of(&self, group: GroupId) -> Option<NodeId> {
        let leader = self.groups.get(&group)?.raw.raft.leader_id;
        (leader != raft::INVALID_ID).then_some(leader)
    }

    pub fn is_leader(&self, group: GroupId) -> bool {
        self.groups.get(&group).is_some_and(Group::is_leader)
    }

    pub fn status(&self, group: GroupId) -> Option<GroupStatus> {
        let g = self.groups.get(&group)?;
        let raft = &g.raw.raft;
        let applied = g.raw.store().conf_state();
        let progress =
            if g.is_leader() { raft.prs().iter().map(|(id, pr)| (*id, pr.matched)).collect() } else { BTreeMap::new() };
        let learner_lags = if g.is_leader() {
            let now = crate::command::now_ms();
            applied.learners.iter().map(|&id| (id, lag_of(g, progress.get(&id).copied().unwrap_or(0), now))).collect()
        } else {
            BTreeMap::new()
        };
        Some(GroupStatus {
            group,
            role: raft.state,
            leader: self.leader_of(group),
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: g.applied_index,
            last_index: raft.raft_log.last_index(),
            first_index: g.raw.store().truncated().index + 1,
            voters: sorted(&applied.voters),
            learners: sorted(&applied.learners),
            voters_outgoing: sorted(&applied.voters_outgoing),
            progress,
            learner_lags,
        })
    }

    /// The groups this replica leads, each with its term (cheap; for checkers).
    pub fn leading(&self) -> impl Iterator<Item = (GroupId, u64)> + '_ {
        self.groups.values().filter(|g| g.is_leader()).map(|g| (g.id, g.raw.raft.term))
    }

    /// The status of every group hosted here.
    pub fn statuses(&self) -> Vec<GroupStatus> {
        self.groups.keys().filter_map(|&group| self.status(group)).collect()
    }

    /// The status of every group led here.
    pub fn led_statuses(&self) -> Vec<GroupStatus> {
        self.leading().filter_map(|(group, _)| self.status(group)).collect()
    }

    /// Events since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Advances every group's logical clock by one tick (one timer for all groups); a
    /// leader proposes compacting its group's log when the policy says so.
    pub fn tick(&mut self) {
        self.note_sleep_of_touched();
        let limit = READ_INDEX_TICKS.max(2 * self.config.election_tick as u32);
        self.ticks += 1;
        let reconfigure_now = self.ticks.is_multiple_of(RECONFIGURE_EVERY_TICKS);
        let mut catching_up = if reconfigure_now { self.learners_catching_up() } else { 0 };
        let probe_after = stale::probe_after_ticks(self.config.election_tick);
        let mut empty_and_unled = Vec::new();
        let compact_every = compaction::compact_every(&self.config, self.sleep.awake.len());
        for &id in &self.sleep.awake {
            let Some(group) = self.groups.get_mut(&id) else { continue };
            if group.quiesced {
                continue;
            }
            order_successors(&self.config, group, self.node_id);
            // Only a group this tick gave work is walked by the next round: most ticks of
            // a follower only count towards its election timeout.
            let mut has_work = group.raw.tick();
            if !group.reads.is_empty() {
                group.expire_reads(limit);
            }
            if group.is_leader() {
                has_work |= propose_compaction(&self.config, compact_every, group);
                let target = self.targets.get(&group.id);
                if reconfigure_now {
                    has_work = true;
                    if reconfigure(group, target, catching_up < MAX_CATCHING_UP) {
                        catching_up += 1;
                    }
                }
                // A group that quiesces is touched so the sleep table learns it.
                has_work |= maybe_quiesce(group, target, self.node_id, &mut self.stale_messages);
            } else {
                group.ticks_unled += 1;
                let initialized = !group.raw.store().conf_state().voters.is_empty();
                if stale::retires_empty(initialized, group.ticks_unled, self.config.election_tick) {
                    empty_and_unled.push(group.id);
                } else if group.ticks_unled > probe_after {
                    group.ticks_unled = 0;
                    for to in probe_targets(group) {
                        self.stale_messages.push((group.id, stale::probe(self.node_id, to)));
                    }
                }
            }
            if has_work {
                self.touched.insert(id);
            }
        }
        self.retiring.extend(empty_and_unled);
    }

    /// Sets (or, with `None`, clears) the membership `group` should end up with; a
    /// changed target wakes the group, so its leader acts on it.
    pub fn set_target(&mut self, group: GroupId, target: Option<Target>) {
        let target = target.map(|t| Target::new(t.voters, t.learners));
        if self.targets.get(&group) == target.as_ref() {
            return;
        }
        match target {
            Some(target) => self.targets.insert(group, target),
            None => self.targets.remove(&group),
        };
        self.wake(group);
    }

    /// Starts ticking `group` again (see [`crate::quiesce`]).
    fn wake(&mut self, group: GroupId) {
        if let Some(g) = self.touch(group) {
            g.wake();
        }
    }

    /// Brings the sleep table up to date for the groups touched since the last round
    /// (only a touched group can have quiesced or woken).
    fn note_sleep_of_touched(&mut self) {
        for id in &self.touched {
            if let Some(g) = self.groups.get(id) {
                self.sleep.note(g);
            }
        }
    }

    /// Wakes the quiesced followers whose leader `reachable` says is gone, so they elect
    /// another; called every tick by the driver of this node (`reachable` is asked once
    /// per leader).
    pub fn wake_orphans(&mut self, reachable: impl Fn(NodeId) -> bool) {
        let mut reachable_leaders: Vec<(NodeId, bool)> = Vec::new();
        let mut is_reachable = |leader: NodeId| match reachable_leaders.iter().find(|(n, _)| *n == leader) {
            Some(&(_, answer)) => answer,
            None => {
                let answer = reachable(leader);
                reachable_leaders.push((leader, answer));
                answer
            }
        };
        let me = self.node_id;
        let orphans: Vec<GroupId> = self
            .sleep
            .asleep
            .iter()
            .filter(|&(_, &leader)| leader != me && (leader == raft::INVALID_ID || !is_reachable(leader)))
            .map(|(&id, _)| id)
            .collect();
        for id in orphans {
            if self.groups.get(&id).is_some_and(|g| g.quiesced && !g.is_leader()) {
                self.wake(id);
            }
        }
    }

    /// How many groups hosted here are quiesced (as of the last round).
    pub fn quiesced_count(&self) -> usize {
        self.sleep.asleep.len()
    }

    /// Makes `targets` every group's target (groups absent have none); only the groups
    /// whose target changed are woken.
    pub fn replace_targets(&mut self, targets: impl IntoIterator<Item = (GroupId, Target)>) {
        let targets: BTreeMap<GroupId, Target> = targets.into_iter().collect();
        let dropped: Vec<GroupId> = self.targets.keys().filter(|g| !targets.contains_key(g)).copied().collect();
        for group in dropped {
            self.set_target(group, None);
        }
        for (group, target) in targets {
            self.set_target(group, Some(target));
        }
    }

    /// The membership `group` should end up with, if it has a target.
    pub fn target(&self, group: GroupId) -> Option<&Target> {
        self.targets.get(&group)
    }

    /// The groups led here with a learner of the target still catching up.
    /// (A quiesced leader has every member matched, so only awake groups are looked at.)
    fn learners_catching_up(&self) -> usize {
        self.sleep
            .awake
            .iter()
            .filter_map(|id| self.groups.get(id))
            .filter(|g| g.is_leader())
            .filter(|g| {
                let raft = &g.raw.raft;
                let last = raft.raft_log.last_index();
                raft.prs().conf().learners().iter().any(|learner| {
                    let wanted = self.targets.get(&g.id).is_some_and(|t| t.names(*learner));
                    let matched = raft.prs().get(*learner).map_or(0, |p| p.matched);
                    wanted && !reconfigure::caught_up(matched, g.raw.store().truncated().index, last)
                })
            })
            .count()
    }

    /// Hands an incoming message to its group. A message from a leader for a group this
    /// node does not host yet creates an empty replica (a newly added member), which
    /// then catches up by snapshot; stale messages for a removed group are ignored.
    pub fn step(&mut self, group: GroupId, message: Message) -> Result<()> {
        if !self.groups.contains_key(&group) && !self.create_replica(group, &message)? {
            debug!(shard = group, node = self.node_id, "message for unknown group ignored");
            return Ok(());
        }
        let me = self.node_id;
        self.touched.insert(group);
        let g = self.groups.get_mut(&group).expect("present or just created");
        let conf = g.raw.store().conf_state();
        let initialized = !conf.voters.is_empty();
        let kind = stale::kind(&message);
        let from_outsider = initialized && !reconfigure::is_member(conf, message.from);
        if from_outsider && !matches!(kind, stale::Kind::NotMember { .. }) {
            // Tell it; it decides whether it is stale (it may be a member we have not
            // applied yet, so its message still goes to Raft).
            self.stale_messages.push((group, stale::notice(me, message.from, g.applied_index)));
        }
        if quiesce::is_request(&message) {
            let raft = &g.raw.raft;
            let (term, last, committed) = (raft.term, raft.raft_log.last_index(), raft.raft_log.committed);
            if !g.is_leader() && quiesce::follower_may_quiesce(&message, raft.leader_id, term, last, committed) {
                g.quiesced = true;
            }
            return Ok(());
        }
        match kind {
            stale::Kind::Raft if quiesce::keeps_quiet(&message, g.raw.raft.leader_id, g.raw.raft.term) => {}
            stale::Kind::Raft => g.wake(),
            stale::Kind::Probe => {
                // A member that hears from no leader: a quiesced leader wakes, so its
                // heartbeats bring the member back in (a restarted learner never
                // campaigns, which is what wakes a quiet group for a restarted voter).
                if !from_outsider && g.is_leader() {
                    g.wake();
                }
                return Ok(());
            }
            stale::Kind::NotMember { as_of } => {
                if stale::retires(g.raw.raft.raft_log.last_index(), as_of) {
                    info!(shard = group, node = me, by = message.from, as_of, "stale replica retires: not a member");
                    self.destroy_group(group, as_of)?;
                }
                return Ok(());
            }
        }
        if message.from == g.raw.raft.leader_id {
            g.ticks_unled = 0;
        }
        let mut message = message;
        let last_index = g.raw.raft.raft_log.last_index();
        if message.msg_type() == raft::eraftpb::MessageType::MsgHeartbeat && message.commit > last_index {
            // A leader that has not applied this replica's removal yet, greeting the
            // replica created since as if it still held the old one's log: commit only
            // what is here (raft-rs would fail on the rest).
            message.commit = last_index;
        }
        if let Err(e) = g.raw.step(message) {
            // Messages from removed peers or for stale terms are normal; Raft moves on.
            debug!(shard = group, node = self.node_id, error = %e, "step rejected");
        }
        Ok(())
    }

    /// Creates the replica a leader's `message` is for, unless this node left the group
    /// and the message is from before (see [`stale::revives`]). Returns whether it did.
    fn create_replica(&mut self, group: GroupId, message: &Message) -> Result<bool> {
        if !creates_replica(message) || message.to != self.node_id {
            return Ok(false);
        }
        if let Some(tombstone) = GroupStorage::tombstone(&self.engine, group)? {
            if !stale::revives(tombstone.removed_at, tombstone.term, message) {
                return Ok(false);
            }
            let mut batch = WriteBatch::new();
            GroupStorage::revive(group, &tombstone, &mut batch);
            self.engine.write(&batch, true)?;
            info!(shard = group, node = self.node_id, removed_at = tombstone.removed_at, "replica added back");
        }
        info!(shard = group, node = self.node_id, "creating replica on leader's message");
        self.load_group(group)?;
        Ok(true)
    }

    /// Proposes `command` to `group`. The callback gets the state machine's response
    /// after the entry is committed, persisted and applied here; or an error.
    pub fn propose(&mut self, group: GroupId, command: &Command, callback: ProposalCallback) {
        if command.compact_log_to != 0 {
            // Only the group's leader asks for compaction, from what all members hold.
            return callback(Err(ProposeError::Invalid("compact_log_to is for the group itself".into())));
        }
        let data = command.encode_stamped(crate::command::now_ms());
        self.propose_with(group, callback, |raw| raw.propose(Vec::new(), data));
    }

    /// Proposes a membership change (add/remove voter, add learner, promote learner).
    /// The response is the encoded new `ConfState`.
    pub fn propose_conf_change(&mut self, group: GroupId, change: ConfChangeV2, callback: ProposalCallback) {
        self.propose_with(group, callback, |raw| raw.propose_conf_change(Vec::new(), change));
    }

    fn propose_with(
        &mut self,
        group: GroupId,
        callback: ProposalCallback,
        propose: impl FnOnce(&mut RawNode<GroupStorage>) -> raft::Result<()>,
    ) {
        let Some(g) = self.touch(group) else {
            return callback(Err(ProposeError::GroupNotFound { group }));
        };
        g.wake();
        if !g.is_leader() {
            return callback(Err(g.not_leader()));
        }
        let last_before = g.raw.raft.raft_log.last_index();
        let accepted = propose(&mut g.raw).is_ok();
        let index = g.raw.raft.raft_log.last_index();
        if !accepted || index == last_before {
            return callback(Err(ProposeError::Dropped { group }));
        }
        metrics::counter!("ums_raft_proposals_total").increment(1);
        g.proposals.push_back(PendingProposal {
            index,
            term: g.raw.raft.term,
            callback,
            proposed_at: std::time::Instant::now(),
        });
    }

    /// Requests a linearizable read of `group`: the callback fires once this replica
    /// (the leader) has confirmed its leadership and applied everything committed
    /// before the request, after which reading the engine directly is up to date.
    pub fn read_index(&mut self, group: GroupId, callback: ReadCallback) {
        self.touched.insert(group);
        let Some(g) = self.groups.get_mut(&group) else {
            return callback(Err(ProposeError::GroupNotFound { group }));
        };
        g.wake();
        if !g.is_leader() {
            return callback(Err(g.not_leader()));
        }
        if !g.raw.raft.commit_to_current_term() {
            // A new leader answers no read until its first entry of the term commits;
            // raft-rs drops such a request without a word, so refuse it: retry shortly.
            return callback(Err(ProposeError::Dropped { group }));
        }
        let id = self.next_read_id;
        self.next_read_id += 1;
        g.raw.read_index(id.to_be_bytes().to_vec());
        g.reads.push_back(PendingRead { id, index: None, callback, ticks: 0 });
    }

    /// Asks the leader of `group` (this node) to hand leadership to `to`.
    pub fn transfer_leader(&mut self, group: GroupId, to: NodeId) -> std::result::Result<(), ProposeError> {
        let g = self.touch(group).ok_or(ProposeError::GroupNotFound { group })?;
        if !g.is_leader() {
            return Err(g.not_leader());
        }
        g.wake();
        g.raw.transfer_leader(to);
        Ok(())
    }

    /// Starts an election in `group` now (used to speed up tests and drills).
    pub fn campaign(&mut self, group: GroupId) -> Result<()> {
        if let Some(g) = self.touch(group) {
            g.wake();
            g.raw.campaign()?;
        }
        Ok(())
    }

    /// Where this replica's log ends, `(last term, last index)`, and the leader's stamp
    /// (ms) on the newest stamped entry it holds (looked for among the last few): what
    /// an unsafe recovery compares replicas by, and how old what it would keep is.
    pub fn log_end(&self, group: GroupId) -> Option<(u64, u64, Option<u64>)> {
        let log = &self.groups.get(&group)?.raw.raft.raft_log;
        let last = log.last_index();
        let newest =
            (log.first_index().max(last.saturating_sub(LAG_AGE_SCAN - 1))..=last).rev().find_map(|i| stamp_at(log, i));
        Some((log.last_term(), last, newest))
    }

    /// Unsafe recovery, after the group lost every voter it had (a primary site gone):
    /// this replica counts every entry of its log as committed and applies them, then
    /// becomes the group's only voter with its log compacted to that point, and
    /// campaigns (alone, it leads at once). The compaction matters: a replica added
    /// back later starts from a snapshot carrying the new membership, never by replaying
    /// the old membership's entries. Entries the lost voters committed after the last
    /// one this replica holds are lost; that is the price the operator accepted.
    /// Returns the index it recovered at.
    ///
    /// # Errors
    /// A storage failure, or `NoReplica`.
    pub fn recover_as_sole_voter(&mut self, group: GroupId, transport: &mut dyn Transport) -> Result<u64> {
        let Some(g) = self.touch(group) else {
            return Err(Error::NoReplica(group));
        };
        g.wake();
        let last = g.raw.raft.raft_log.last_index();
        g.raw.raft.raft_log.commit_to(last);
        // Apply it all through the normal rounds (bounded: the log is at most a
        // compaction threshold long, applied a round at a time).
        for _ in 0..10_000 {
            if self.groups.get(&group).is_none_or(|g| g.applied_index >= last) {
                break;
            }
            self.touched.insert(group);
            self.handle_ready(transport)?;
        }
        let Some(g) = self.groups.get_mut(&group) else {
            return Err(Error::NoReplica(group));
        };
        let conf = ConfState { voters: vec![self.node_id], ..Default::default() };
        let mut batch = WriteBatch::new();
        let store = g.raw.mut_store();
        store.set_conf_state(conf.clone());
        store.compact(g.applied_index, &mut batch)?;
        let mut hard_state = store.hard_state().clone();
        hard_state.commit = hard_state.commit.max(g.applied_index);
        store.set_hard_state(&hard_state, &mut batch);
        let apply_state =
            ApplyState { applied_index: g.applied_index, applied_term: g.applied_term, conf_state: Some(conf) };
        batch.put(Cf::RaftState, keys::apply_state_key(group), apply_state.encode_to_vec());
        self.engine.write(&batch, true)?;
        let recovered_at = g.applied_index;
        // A fresh raft-rs node from what was just written: the new membership, no
        // progress or votes of the old one.
        let mut old = self.groups.remove(&group).expect("present");
        let mut done = Vec::new();
        old.fail_all(ProposeError::Dropped { group }, &mut done);
        done.into_iter().for_each(Completion::run);
        self.load_group(group)?;
        warn!(shard = group, node = self.node_id, index = recovered_at, "unsafe recovery: sole voter of the group");
        self.campaign(group)?;
        Ok(recovered_at)
    }

    /// Unsafe recovery on the other survivors: drops this replica (as removed at
    /// `recovered_at`, the recovering replica's index), so the group's new leader adds
    /// it back from a snapshot of the new membership.
    ///
    /// # Errors
    /// A storage failure.
    pub fn drop_replica(&mut self, group: GroupId, recovered_at: u64) -> Result<()> {
        warn!(shard = group, node = self.node_id, recovered_at, "unsafe recovery: replica dropped for a fresh copy");
        self.destroy_group(group, recovered_at)
    }

    /// Tells `group` whether a snapshot sent to `to` arrived.
    pub fn report_snapshot(&mut self, group: GroupId, to: NodeId, delivered: bool) {
        if let Some(g) = self.touch(group) {
            let status = if delivered { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
            g.raw.report_snapshot(to, status);
        }
    }

    /// Tells `group` that messages to `to` could not be sent.
    pub fn report_unreachable(&mut self, group: GroupId, to: NodeId) {
        if let Some(g) = self.touch(group) {
            g.raw.report_unreachable(to);
        }
    }

    /// Whether any group has work for [`MultiRaft::handle_ready`].
    pub fn has_ready(&self) -> bool {
        !self.stale_messages.is_empty()
            || !self.retiring.is_empty()
            || self.touched.iter().any(|id| self.groups.get(id).is_some_and(|g| g.raw.has_ready()))
    }

    /// Runs one round over every group with work (see the module docs).
    ///
    /// # Errors
    /// A storage failure is returned; the node must then stop, since its durable state
    /// may no longer match what raft-rs believes.
    pub fn handle_ready(&mut self, transport: &mut dyn Transport) -> Result<()> {
        for group in std::mem::take(&mut self.retiring) {
            info!(shard = group, node = self.node_id, "empty replica no leader keeps retires");
            self.destroy_group(group, 0)?;
        }
        let mut outbox = Outbox::default();
        for (group, message) in self.stale_messages.drain(..) {
            outbox.add(group, vec![message]);
        }
        let mut log_batch = WriteBatch::new();
        let mut must_sync = false;
        let mut done = Vec::new();
        let mut readies = Vec::new();

        // Phase 1: collect readies, stage their persistence, send what needs none.
        self.note_sleep_of_touched();
        let touched = std::mem::take(&mut self.touched);
        for &id in &touched {
            let Some(g) = self.groups.get_mut(&id) else { continue };
            if !g.raw.has_ready() {
                continue;
            }
            let mut ready = g.raw.ready();
            if let Some(soft) = ready.ss() {
                let leader = (soft.leader_id != raft::INVALID_ID).then_some(soft.leader_id);
                let (role, changed_leader) = (soft.raft_state, leader != g.leader);
                if role != g.role || changed_leader {
                    if role == StateRole::Leader {
                        metrics::counter!("ums_leader_changes_total").increment(1);
                    }
                    g.on_soft_state(role, leader, &mut done);
                    self.events.push(Event::RoleChanged { group: id, role, leader, term: g.raw.raft.term });
                }
            }
            let mut messages = ready.take_messages();
            if g.is_leader() {
                let interval = self.config.heartbeat_tick as u64;
                g.recent_appends.drop_redundant_heartbeats(&mut messages, self.ticks, interval);
            }
            outbox.add(id, messages);
            let snapshot_index = if ready.snapshot().is_empty() {
                None
            } else {
                storage::snapshot::apply_raft_snapshot(g.raw.mut_store(), ready.snapshot(), &mut log_batch)?;
                ready.snapshot().metadata.as_ref().map(|m| (m.index, m.term))
            };
            g.raw.mut_store().append(ready.entries(), &mut log_batch);
            if let Some(hard_state) = ready.hs() {
                g.raw.mut_store().set_hard_state(hard_state, &mut log_batch);
            }
            for read_state in ready.take_read_states() {
                g.on_read_state(&read_state.request_ctx, read_state.index);
            }
            must_sync |= ready.must_sync();
            readies.push((id, ready, snapshot_index));
        }
        outbox.flush(transport);
        if readies.is_empty() {
            done.into_iter().for_each(Completion::run);
            return Ok(());
        }
        let handled: Vec<GroupId> = readies.iter().map(|(id, ..)| *id).collect();
        if !log_batch.is_empty() {
            self.engine.write(&log_batch, must_sync)?;
            if must_sync {
                metrics::counter!("ums_raft_fsyncs_total").increment(1);
            }
        }
        metrics::counter!("ums_raft_ready_rounds_total").increment(1);

        // Phase 2: persisted; send the rest, apply what is committed.
        let mut staged = ApplyBatch::default();
        let mut removed = Vec::new();
        for (id, mut ready, snapshot_index) in readies {
            let g = self.groups.get_mut(&id).expect("group of a ready");
            if let Some((index, term)) = snapshot_index {
                g.applied_index = index;
                g.applied_term = term;
                self.state_machine.on_snapshot_applied(id);
            }
            outbox.add(id, ready.take_persisted_messages());
            let mut committed = ready.take_committed_entries();
            let mut light = g.raw.advance_append(ready);
            // A group of one voter commits by itself and learns it here, not from a later
            // Ready's hard state: the commit goes into the batch that records the applied
            // entries, so no restart finds entries applied past the commit it kept.
            if let Some(commit) = light.commit_index() {
                let mut hard_state = g.raw.store().hard_state().clone();
                hard_state.commit = commit;
                g.raw.mut_store().set_hard_state(&hard_state, &mut staged.batch);
            }
            let messages = light.take_messages();
            if g.is_leader() {
                g.recent_appends.note(&messages, self.ticks);
            }
            outbox.add(id, messages);
            committed.extend(light.take_committed_entries());
            if !committed.is_empty() {
                apply_entries(
                    &self.config,
                    g,
                    &mut self.state_machine,
                    &*self.engine,
                    &mut staged,
                    committed,
                    &mut done,
                )?;
                maybe_compact(&self.config, g, &*self.engine, &mut staged.batch)?;
            }
            g.raw.advance_apply_to(g.applied_index);
            g.complete_reads(&mut done);
            if g.removed {
                removed.push((id, g.applied_index));
            }
        }
        outbox.flush(transport);
        let apply_batch = staged.take_batch();
        if !apply_batch.is_empty() {
            // Not synced: the log already holds these entries durably, and the WAL is
            // ordered, so this batch is durable no later than the next synced write.
            self.engine.write(&apply_batch, false)?;
        }
        self.state_machine.on_applied_written();
        done.into_iter().for_each(Completion::run);
        for (id, removed_at) in removed {
            self.destroy_group(id, removed_at)?;
        }
        // Applying may leave more to do (a conf change's effects, reads now answerable).
        for id in handled {
            if self.groups.get(&id).is_some_and(|g| g.raw.has_ready()) {
                self.touched.insert(id);
            }
        }
        Ok(())
    }

    /// Deletes this node's replica of `id`, which is not a member as of `removed_at`.
    fn destroy_group(&mut self, id: GroupId, removed_at: u64) -> Result<()> {
        let Some(mut g) = self.groups.remove(&id) else {
            return Ok(());
        };
        self.sleep.forget(id);
        let mut batch = WriteBatch::new();
        g.raw.mut_store().destroy(removed_at, &mut batch);
        self.engine.write(&batch, true)?;
        let mut done = Vec::new();
        g.fail_all(ProposeError::GroupNotFound { group: id }, &mut done);
        done.into_iter().for_each(Completion::run);
        self.state_machine.on_group_removed(id);
        self.events.push(Event::GroupRemoved { group: id });
        info!(shard = id, node = self.node_id, "replica removed from group");
        Ok(())
    }
}

/// Messages a leader sends to members; only these may create a replica. A heartbeat
/// only when it commits nothing: one that commits entries is for a replica holding them
/// (one removed since), and raft-rs would fail on an empty log told to commit them.
fn creates_replica(message: &Message) -> bool {
    use raft::eraftpb::MessageType::*;
    match message.msg_type() {
        MsgAppend | MsgSnapshot => true,
        MsgHeartbeat => message.commit == 0,
        _ => false,
    }
}

/// Applies one group's committed entries into `staged` and resolves their proposals.
fn apply_entries<M: StateMachine>(
    config: &RaftConfig,
    g: &mut Group,
    state_machine: &mut M,
    engine: &dyn storage::KvRead,
    staged: &mut ApplyBatch,
    entries: Vec<Entry>,
    done: &mut Vec<Completion>,
) -> Result<()> {
    let node_id = g.raw.raft.id;
    let dedup_window = config.dedup_window;
    let mut conf_changed = false;
    for entry in entries {
        if entry.index <= g.applied_index {
            continue; // Already applied before a restart; raft-rs may hand it out again.
        }
        assert_eq!(
            entry.index,
            g.applied_index + 1,
            "group {} on node {node_id}: apply gap after {}",
            g.id,
            g.applied_index
        );
        let response = match entry.entry_type() {
            EntryType::EntryNormal if entry.data.is_empty() => Vec::new(), // a new leader's no-op
            EntryType::EntryNormal => {
                let command = Command::decode(entry.data.as_slice()).map_err(decode_error(g.id))?;
                if command.compact_log_to > 0 {
                    g.compact_requested = g.compact_requested.max(command.compact_log_to);
                    Vec::new()
                } else {
                    apply_command(g.id, &entry, command, dedup_window, state_machine, engine, staged)?
                }
            }
            EntryType::EntryConfChange => {
                let change = ConfChange::decode(entry.data.as_slice()).map_err(decode_error(g.id))?;
                conf_changed = true;
                apply_conf_change(node_id, g, &change)
            }
            EntryType::EntryConfChangeV2 => {
                let change = ConfChangeV2::decode(entry.data.as_slice()).map_err(decode_error(g.id))?;
                conf_changed = true;
                apply_conf_change(node_id, g, &change)
            }
        };
        g.applied_index = entry.index;
        g.applied_term = entry.term;
        g.on_entry_applied(entry.index, entry.term, &response, done);
    }
    let apply_state = ApplyState {
        applied_index: g.applied_index,
        applied_term: g.applied_term,
        conf_state: Some(g.raw.store().conf_state().clone()),
    };
    staged.batch.put(Cf::RaftState, keys::apply_state_key(g.id), apply_state.encode_to_vec());
    if conf_changed {
        debug!(shard = g.id, node = node_id, conf = ?g.raw.store().conf_state(), "membership changed");
    }
    Ok(())
}

fn decode_error(group: GroupId) -> impl Fn(prost::DecodeError) -> Error {
    move |e| Error::Storage(storage::Error::Corrupt { group, what: "committed entry", detail: e.to_string() })
}

/// Applies a normal entry: a client command, unless that request was applied before.
fn apply_command<M: StateMachine>(
    group: GroupId,
    entry: &Entry,
    command: Command,
    dedup_window: u64,
    state_machine: &mut M,
    engine: &dyn storage::KvRead,
    staged: &mut ApplyBatch,
) -> Result<Vec<u8>> {
    let deduplicated = command.client_id != 0;
    if deduplicated {
        let request = (command.client_id, command.request_id);
        if let Some(response) = dedup::lookup(staged, engine, group, request, entry.index, dedup_window)? {
            debug!(
                shard = group,
                client = command.client_id,
                request = command.request_id,
                "replayed request not applied again"
            );
            return Ok(response);
        }
    }
    let mut ctx = ApplyContext { group, index: entry.index, term: entry.term, engine, staged };
    let response = state_machine.apply(&mut ctx, &command.payload);
    if deduplicated {
        dedup::record(staged, group, command.client_id, command.request_id, entry.index, &response);
    }
    Ok(response)
}

fn apply_conf_change(node_id: NodeId, g: &mut Group, change: &impl raft_proto::ConfChangeI) -> Vec<u8> {
    match g.raw.apply_conf_change(change) {
        Ok(conf_state) => {
            let member = conf_state.voters.contains(&node_id)
                || conf_state.learners.contains(&node_id)
                || conf_state.voters_outgoing.contains(&node_id)
                || conf_state.learners_next.contains(&node_id);
            g.removed = !member;
            let response = conf_state.encode_to_vec();
            g.raw.mut_store().set_conf_state(conf_state);
            response
        }
        Err(e) => {
            // An invalid change (e.g. removing the last voter) is committed but has no
            // effect on any replica: raft-rs rejects it deterministically everywhere.
            warn!(shard = g.id, node = node_id, error = %e, "conf change rejected");
            Vec::new()
        }
    }
}

/// Gives a follower of a known leader its place in the order of successors (see
/// [`crate::election`]); reads raft-rs's own state, which is current, unlike the
/// role last reported in a ready.
fn order_successors(config: &RaftConfig, g: &mut Group, me: NodeId) {
    let raft = &mut g.raw.raft;
    let leader = raft.leader_id;
    if raft.state != StateRole::Follower || leader == raft::INVALID_ID {
        return;
    }
    let voters: Vec<NodeId> = raft.prs().conf().voters().ids().iter().collect();
    let (min, max) = config.election_range();
    if let Some(timeout) = election::follower_timeout(g.id, &voters, leader, me, min, max)
        && raft.randomized_election_timeout() != timeout
    {
        raft.set_randomized_election_timeout(timeout);
    }
}

/// Where the group's log starts and how far it is applied here.
fn log_position(g: &Group) -> LogPosition {
    LogPosition { truncated: g.raw.store().truncated().index, applied: g.applied_index }
}

/// As leader: proposes compacting every replica's log (see [`crate::compaction`]). No
/// one waits for it; a proposal lost to a leader change is made again later. Returns
/// whether it proposed.
fn propose_compaction(config: &RaftConfig, every: u64, g: &mut Group) -> bool {
    let replicated = g.raw.raft.prs().iter().map(|(_, progress)| progress.matched).min().unwrap_or(0);
    let Some(index) = compaction::leader_proposal(config, every, log_position(g), replicated, g.compact_proposed)
    else {
        return false;
    };
    let proposed = g.raw.propose(Vec::new(), Command::compact_log(index).encode_to_vec()).is_ok();
    if proposed {
        g.compact_proposed = index;
    }
    proposed
}

/// Compacts the log as the leader asked or the local limit demands, and now and then
/// forgets dedup records older than the window.
fn maybe_compact(
    config: &RaftConfig,
    g: &mut Group,
    engine: &dyn storage::KvRead,
    batch: &mut WriteBatch,
) -> Result<()> {
    let log = log_position(g);
    let Some(target) = compaction::replica_target(config, log, g.compact_requested) else {
        return Ok(());
    };
    if !g.raw.mut_store().compact(target, batch)? {
        return Ok(());
    }
    debug!(shard = g.id, index = target, "log compacted");
    if compaction::collect_dedup_now(config, log.truncated, target)
        && let Some(before) = target.checked_sub(config.dedup_window)
    {
        dedup::collect_garbage(engine, g.id, before, batch)?;
    }
    Ok(())
}

/// Entries a lag's age is looked for among (no-ops and membership changes carry no
/// stamp; past these the age is not known better than "at least the next stamped one").
const LAG_AGE_SCAN: u64 = 16;

/// What a member that holds the log up to `matched` lacks of what `g`'s leader committed,
/// as of `now_ms`.
fn lag_of(g: &Group, matched: u64, now_ms: u64) -> Lag {
    let log = &g.raw.raft.raft_log;
    let entries = log.committed.saturating_sub(matched);
    if entries == 0 {
        return Lag::default();
    }
    // A member behind the log's start lacks compacted entries too: the oldest stamp
    // still in the log is the best lower bound of their age. One entry at a time: the
    // first is nearly always stamped, and entries can be megabytes.
    let from = (matched + 1).max(log.first_index());
    let to = log.committed.min(from + LAG_AGE_SCAN - 1);
    let oldest = (from..=to).find_map(|index| stamp_at(log, index));
    Lag { entries, age_ms: oldest.map_or(0, |stamp| now_ms.saturating_sub(stamp)) }
}

/// The leader's stamp on entry `index` of `log`, if it is a client command there.
fn stamp_at(log: &raft::RaftLog<GroupStorage>, index: u64) -> Option<u64> {
    let entry = log.slice(index, index + 1, None, raft::GetEntriesContext::empty(false)).ok()?.pop()?;
    (entry.entry_type() == EntryType::EntryNormal).then(|| Command::stamp_of(&entry.data)).flatten()
}

/// Where a replica that hears from no leader sends its probe: the members it knows and
/// the last leader it heard of.
fn probe_targets(g: &Group) -> Vec<NodeId> {
    let conf = g.raw.store().conf_state();
    let mut to: Vec<NodeId> = conf.voters.iter().chain(&conf.voters_outgoing).copied().collect();
    let leader = g.raw.raft.leader_id;
    if leader != raft::INVALID_ID {
        to.push(leader);
    }
    to.sort_unstable();
    to.dedup();
    to.retain(|&n| n != g.raw.raft.id);
    to
}

/// As leader: takes the next membership step towards `target` (see
/// [`crate::reconfigure`]). Returns whether it started a learner's catch-up, which
/// the caller counts against the node's limit.
fn reconfigure(g: &mut Group, target: Option<&Target>, may_add_learner: bool) -> bool {
    let conf = g.raw.store().conf_state().clone();
    if target.is_none() && !reconfigure::is_joint(&conf) {
        return false;
    }
    let raft = &g.raw.raft;
    let matched: BTreeMap<NodeId, u64> = raft.prs().iter().map(|(id, p)| (*id, p.matched)).collect();
    let view = GroupView {
        leader: raft.id,
        conf: &conf,
        matched: &matched,
        last_index: raft.raft_log.last_index(),
        truncated_index: g.raw.store().truncated().index,
        busy: raft.has_pending_conf() || raft.lead_transferee.is_some(),
        may_add_learner,
    };
    let step = reconfigure::next_step(&view, target);
    match step {
        Step::Done | Step::Wait => false,
        Step::TransferLeader(to) => {
            info!(shard = g.id, to, "handing leadership over for a membership change");
            g.raw.transfer_leader(to);
            false
        }
        step => {
            let change = step.conf_change().expect("a conf change step");
            info!(shard = g.id, step = ?step, "membership step");
            let accepted = g.raw.propose_conf_change(Vec::new(), change).is_ok();
            accepted && matches!(step, Step::AddLearner(_))
        }
    }
}

/// As leader: counts idle ticks and, past [`quiesce::IDLE_TICKS_BEFORE_QUIESCE`], asks
/// every member to quiesce and stops ticking (see [`crate::quiesce`]); returns whether
/// it did.
fn maybe_quiesce(g: &mut Group, target: Option<&Target>, me: NodeId, out: &mut Vec<(GroupId, Message)>) -> bool {
    let raft = &g.raw.raft;
    let conf = g.raw.store().conf_state();
    // Standing learners of the target are members like the voters; any other learner
    // (or a joint state) is a change under way.
    let reconfiguring = match target {
        Some(target) => !target.reached_by(conf),
        None => reconfigure::is_joint(conf) || !conf.learners.is_empty(),
    };
    let state = quiesce::LeaderState {
        last_index: raft.raft_log.last_index(),
        committed: raft.raft_log.committed,
        applied: g.applied_index,
        min_matched: raft.prs().iter().map(|(_, p)| p.matched).min().unwrap_or(0),
        busy: !g.proposals.is_empty()
            || !g.reads.is_empty()
            || raft.has_pending_conf()
            || raft.lead_transferee.is_some()
            || reconfiguring,
    };
    if !quiesce::leader_idle(&state) {
        g.idle_ticks = 0;
        return false;
    }
    g.idle_ticks += 1;
    if g.idle_ticks < quiesce::IDLE_TICKS_BEFORE_QUIESCE {
        return false;
    }
    let term = raft.term;
    for (&member, _) in raft.prs().iter().filter(|(id, _)| **id != me) {
        out.push((g.id, quiesce::request(me, member, term, state.last_index)));
    }
    g.quiesced = true;
    true
}
