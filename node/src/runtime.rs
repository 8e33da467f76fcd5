//! The Raft thread: owns this node's [`MultiRaft`] and drives it. Everything else talks
//! to it through a bounded channel ([`RaftHandle`]); a full channel is back-pressure
//! (requests fail fast with "overloaded" instead of queueing without bound).
//!
//! One loop iteration: wait for input or the next tick, drain what has arrived (bounded),
//! tick all groups if due, then run one ready round (one fsync for every group).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use consensus::{
    Command, Event, GroupId, GroupMessage, GroupStatus, MultiRaft, NodeId, ProposeError, Target, Transport,
};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;
use tracing::{error, info};

use crate::placement::leadership_handoffs;
use crate::proto::peer::LogEnd;
use crate::proto::state::ShardTarget;
use crate::state::UmsMachine;

/// Capacity of the Raft thread's inbox.
const INBOX_CAPACITY: usize = 1 << 16;
/// Inputs handled per round at most, so ticks and rounds are never starved.
const DRAIN_PER_ROUND: usize = 8192;
/// Leaderships handed to their preferred nodes per balancing round, at least...
const HANDOFFS_PER_ROUND: usize = 4;
/// ...or one in this many of the groups led here.
const HANDOFF_SHARE: usize = 32;

/// Which groups a status request asks about (a node may host a thousand; most callers
/// want one, or the ones it leads).
#[derive(Clone, Copy, Debug)]
pub enum Statuses {
    All,
    Group(GroupId),
    Led,
}

/// Work for the Raft thread.
pub enum Input {
    Raft(Vec<GroupMessage>),
    Propose {
        group: GroupId,
        command: Command,
        reply: oneshot::Sender<Result<Vec<u8>, ProposeError>>,
    },
    ReadIndex {
        group: GroupId,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
    TransferLeader {
        group: GroupId,
        to: NodeId,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
    Status {
        which: Statuses,
        reply: oneshot::Sender<Vec<GroupStatus>>,
    },
    /// Where each group should be (the meta group's shard targets: voters and the
    /// preferred leader), and which nodes drain (they lead nothing when avoidable).
    SetPlacement {
        targets: Vec<ShardTarget>,
        draining: Vec<NodeId>,
    },
    /// Where every replica's log ends here: (group, last term, last index, newest stamp).
    LogEnds {
        reply: oneshot::Sender<Vec<LogEnd>>,
    },
    /// Unsafe recovery of one group here (see [`Cluster::recover_here`](crate::cluster::Cluster)):
    /// as its sole voter, or dropping the replica as removed at `recovered_at`.
    Recover {
        group: GroupId,
        sole_voter: bool,
        recovered_at: u64,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// Whether a snapshot sent to a peer left this node (or was lost with its connection).
    SnapshotReport {
        group: GroupId,
        to: NodeId,
        delivered: bool,
    },
    Stop,
}

/// Who leads each group, as this node last heard: lets requests go straight to the
/// leader and keeps mailbox actors off replicas that do not lead.
#[derive(Default)]
pub struct LeaderTable {
    leaders: RwLock<HashMap<GroupId, NodeId>>,
}

impl LeaderTable {
    pub fn leader(&self, group: GroupId) -> Option<NodeId> {
        self.leaders.read().expect("leader table").get(&group).copied()
    }

    fn set(&self, group: GroupId, leader: Option<NodeId>) {
        let mut leaders = self.leaders.write().expect("leader table");
        match leader {
            Some(node) => leaders.insert(group, node),
            None => leaders.remove(&group),
        };
    }
}

/// A cheap, cloneable handle to the Raft thread.
#[derive(Clone)]
pub struct RaftHandle {
    inbox: Sender<Input>,
    leaders: Arc<LeaderTable>,
}

/// The Raft thread stopped or its inbox is full.
fn overloaded(group: GroupId) -> ProposeError {
    ProposeError::Dropped { group }
}

impl RaftHandle {
    pub fn send(&self, input: Input) -> bool {
        match self.inbox.try_send(input) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                metrics::counter!("ums_raft_inbox_full_total").increment(1);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    pub async fn propose(&self, group: GroupId, command: Command) -> Result<Vec<u8>, ProposeError> {
        let (reply, response) = oneshot::channel();
        if !self.send(Input::Propose { group, command, reply }) {
            return Err(overloaded(group));
        }
        response.await.unwrap_or(Err(overloaded(group)))
    }

    pub async fn read_index(&self, group: GroupId) -> Result<(), ProposeError> {
        let (reply, response) = oneshot::channel();
        if !self.send(Input::ReadIndex { group, reply }) {
            return Err(overloaded(group));
        }
        response.await.unwrap_or(Err(overloaded(group)))
    }

    pub async fn transfer_leader(&self, group: GroupId, to: NodeId) -> Result<(), ProposeError> {
        let (reply, response) = oneshot::channel();
        if !self.send(Input::TransferLeader { group, to, reply }) {
            return Err(overloaded(group));
        }
        response.await.unwrap_or(Err(overloaded(group)))
    }

    /// The status of every group hosted here.
    pub async fn status(&self) -> Vec<GroupStatus> {
        self.statuses(Statuses::All).await
    }

    /// The status of the groups `which` names, as far as this node hosts them.
    pub async fn statuses(&self, which: Statuses) -> Vec<GroupStatus> {
        let (reply, response) = oneshot::channel();
        if !self.send(Input::Status { which, reply }) {
            return Vec::new();
        }
        response.await.unwrap_or_default()
    }

    /// Where each replica's log ends on this node.
    pub async fn log_ends(&self) -> Vec<LogEnd> {
        let (reply, response) = oneshot::channel();
        if !self.send(Input::LogEnds { reply }) {
            return Vec::new();
        }
        response.await.unwrap_or_default()
    }

    /// Unsafe recovery of `group` here; the index it recovered at (or was dropped as of).
    pub async fn recover(&self, group: GroupId, sole_voter: bool, recovered_at: u64) -> Result<u64, String> {
        let (reply, response) = oneshot::channel();
        if !self.send(Input::Recover { group, sole_voter, recovered_at, reply }) {
            return Err("the Raft thread is overloaded; retry".into());
        }
        response.await.unwrap_or_else(|_| Err("the Raft thread stopped".into()))
    }

    pub fn stop(&self) {
        let _ = self.inbox.send(Input::Stop);
    }

    /// The leader of `group` as this node last heard, if any.
    pub fn leader(&self, group: GroupId) -> Option<NodeId> {
        self.leaders.leader(group)
    }
}

/// How the Raft thread paces itself and balances leadership.
pub struct LoopSettings {
    pub tick: Duration,
    /// Where each group's leadership should be when its replicas are healthy.
    pub preferred_leaders: BTreeMap<GroupId, NodeId>,
    /// How often leadership is handed back to preferred leaders.
    pub balance_every: Duration,
}

/// Starts the Raft thread. `make_transport` builds the transport once the handle
/// exists (the transport reports snapshot delivery back through it).
///
/// Leadership changes are also sent to `events` (dropped if nobody keeps up).
pub fn start(
    raft: MultiRaft<UmsMachine>,
    settings: LoopSettings,
    events: Sender<Event>,
    make_transport: impl FnOnce(RaftHandle) -> Box<dyn Transport + Send>,
) -> (RaftHandle, JoinHandle<()>) {
    let (inbox, receiver) = crossbeam_channel::bounded(INBOX_CAPACITY);
    let leaders = Arc::new(LeaderTable::default());
    let handle = RaftHandle { inbox, leaders: Arc::clone(&leaders) };
    let transport = make_transport(handle.clone());
    let node = raft.node_id();
    let raft_loop = RaftLoop { raft, inbox: receiver, transport, leaders, events, settings };
    let thread = std::thread::Builder::new()
        .name(format!("raft-{node}"))
        .spawn(move || raft_loop.run())
        .expect("spawn raft thread");
    (handle, thread)
}

/// Everything the Raft thread owns.
struct RaftLoop {
    raft: MultiRaft<UmsMachine>,
    inbox: Receiver<Input>,
    transport: Box<dyn Transport + Send>,
    leaders: Arc<LeaderTable>,
    events: Sender<Event>,
    settings: LoopSettings,
}

impl RaftLoop {
    fn run(mut self) {
        let (raft, inbox, leaders, events) = (&mut self.raft, &self.inbox, &self.leaders, &self.events);
        let (transport, settings) = (&mut *self.transport, &self.settings);
        let node = raft.node_id();
        let tick = settings.tick;
        let mut next_tick = Instant::now() + tick;
        let mut next_balance = Instant::now() + settings.balance_every;
        let mut placement = LeaderPlacement {
            bootstrap: settings.preferred_leaders.clone(),
            targets: BTreeMap::new(),
            draining: Vec::new(),
        };
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(wait) {
                Ok(input) => {
                    if !handle_input(raft, &mut placement, transport, input) {
                        break;
                    }
                    for input in inbox.try_iter().take(DRAIN_PER_ROUND) {
                        if !handle_input(raft, &mut placement, transport, input) {
                            return;
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_tick {
                raft.wake_orphans(|leader| transport.is_reachable(leader));
                raft.tick();
                metrics::gauge!("ums_raft_groups_quiesced").set(raft.quiesced_count() as f64);
                next_tick += tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + tick; // We fell behind; do not tick in a burst.
                }
            }
            if Instant::now() >= next_balance {
                next_balance = Instant::now() + settings.balance_every;
                let statuses = raft.led_statuses();
                report_backup_lag(&statuses);
                balance_leadership(raft, &placement, &statuses);
            }
            metrics::gauge!("ums_raft_inbox_depth").set(inbox.len() as f64);
            if let Err(e) = raft.handle_ready(transport) {
                // The durable state may no longer match what Raft believes: stop serving.
                error!(node, error = %e, "storage failure in ready round; stopping the node");
                // _exit, not exit: exit runs RocksDB's static destructors, which can block
                // forever behind a background job stuck on the same failure (a full disk),
                // leaving a process that answers HTTP with a replica that no longer moves.
                // Stopping at once is a crash, and crashes are what the log is built for.
                // SAFETY: _exit only ends the process.
                unsafe { libc::_exit(70) };
            }
            for event in raft.take_events() {
                match &event {
                    Event::RoleChanged { group, leader, .. } => leaders.set(*group, *leader),
                    Event::GroupRemoved { group } => leaders.set(*group, None),
                }
                log_event(node, &event);
                let _ = events.try_send(event);
            }
        }
        info!(node, "raft thread stopped");
    }
}

/// Where leadership should be: the bootstrap placement's preferred leaders, overridden
/// by the shard targets' (set by the placement driver), never on a draining node.
struct LeaderPlacement {
    bootstrap: BTreeMap<GroupId, NodeId>,
    targets: BTreeMap<GroupId, NodeId>,
    draining: Vec<NodeId>,
}

impl LeaderPlacement {
    /// Each group's preferred leader, for the groups `statuses` says this node leads.
    fn preferred(&self, raft: &MultiRaft<UmsMachine>, statuses: &[GroupStatus]) -> BTreeMap<GroupId, NodeId> {
        let me = raft.node_id();
        let usable = |group: GroupId, node: NodeId| {
            !self.draining.contains(&node) && raft.target(group).is_none_or(|t| t.voters.contains(&node))
        };
        let mut preferred = BTreeMap::new();
        for status in statuses.iter().filter(|s| s.role == raft::StateRole::Leader) {
            let group = status.group;
            let named = self.targets.get(&group).or_else(|| self.bootstrap.get(&group)).copied();
            match named.filter(|&n| usable(group, n) && status.voters.contains(&n)) {
                Some(node) => {
                    preferred.insert(group, node);
                }
                // A draining leader with no usable preference hands over to any
                // caught-up voter that is not draining.
                None if self.draining.contains(&me) => {
                    let other = status.voters.iter().copied().find(|&n| n != me && usable(group, n));
                    if let Some(node) = other {
                        preferred.insert(group, node);
                    }
                }
                None => {}
            }
        }
        preferred
    }
}

/// Sets the backup gauges from the groups led here: the most committed entries any
/// learner lacks and the age of the oldest one (what losing the primary site now would
/// lose). Each node reports its own groups; the cluster's figure is the maximum over
/// nodes, per shard in `umsctl backup-core status`.
fn report_backup_lag(statuses: &[GroupStatus]) {
    let worst = consensus::Lag::worst_of(statuses);
    metrics::gauge!("ums_backup_lag_entries").set(worst.entries as f64);
    metrics::gauge!("ums_backup_lag_seconds").set(worst.age_ms as f64 / 1000.0);
}

/// Hands a few groups to their preferred leaders (spreads leader work evenly, also
/// after a failed node comes back; empties a draining node of leaders first): at most
/// [`HANDOFFS_PER_ROUND`], or one in [`HANDOFF_SHARE`] of the groups led here when that
/// is more, so a node that won a thousand groups' first elections is even in seconds.
fn balance_leadership(raft: &mut MultiRaft<UmsMachine>, placement: &LeaderPlacement, statuses: &[GroupStatus]) {
    let preferred = placement.preferred(raft, statuses);
    let max = HANDOFFS_PER_ROUND.max(statuses.len() / HANDOFF_SHARE);
    for (group, to) in leadership_handoffs(statuses, raft.node_id(), &preferred, max) {
        info!(node = raft.node_id(), shard = group, to, "handing leadership to the preferred leader");
        let _ = raft.transfer_leader(group, to);
    }
}

/// Returns false when the thread should stop.
fn handle_input(
    raft: &mut MultiRaft<UmsMachine>,
    leaders: &mut LeaderPlacement,
    transport: &mut dyn Transport,
    input: Input,
) -> bool {
    match input {
        Input::Raft(batch) => {
            for message in batch {
                if let Err(e) = raft.step(message.group, message.message) {
                    error!(node = raft.node_id(), shard = message.group, error = %e, "step failed");
                }
            }
        }
        Input::Propose { group, command, reply } => {
            raft.propose(
                group,
                &command,
                Box::new(move |result| {
                    let _ = reply.send(result);
                }),
            );
        }
        Input::ReadIndex { group, reply } => {
            raft.read_index(
                group,
                Box::new(move |result| {
                    let _ = reply.send(result);
                }),
            );
        }
        Input::TransferLeader { group, to, reply } => {
            let _ = reply.send(raft.transfer_leader(group, to));
        }
        Input::Status { which, reply } => {
            let statuses = match which {
                Statuses::All => raft.statuses(),
                Statuses::Group(group) => raft.status(group).into_iter().collect(),
                Statuses::Led => raft.led_statuses(),
            };
            let _ = reply.send(statuses);
        }
        Input::SnapshotReport { group, to, delivered } => raft.report_snapshot(group, to, delivered),
        Input::LogEnds { reply } => {
            let ends = raft
                .group_ids()
                .filter_map(|group| {
                    let (last_term, last_index, stamp) = raft.log_end(group)?;
                    Some(LogEnd { group, last_term, last_index, newest_stamp_ms: stamp.unwrap_or(0) })
                })
                .collect();
            let _ = reply.send(ends);
        }
        Input::Recover { group, sole_voter, recovered_at, reply } => {
            let outcome = if sole_voter {
                raft.recover_as_sole_voter(group, transport)
            } else {
                raft.drop_replica(group, recovered_at).map(|()| recovered_at)
            };
            let _ = reply.send(outcome.map_err(|e| e.to_string()));
        }
        Input::SetPlacement { targets, draining } => {
            raft.replace_targets(
                targets.iter().map(|t| (t.shard, Target::new(t.voters.iter().copied(), t.learners.iter().copied()))),
            );
            leaders.targets =
                targets.iter().filter(|t| t.preferred_leader != 0).map(|t| (t.shard, t.preferred_leader)).collect();
            leaders.draining = draining;
        }
        Input::Stop => return false,
    }
    true
}

fn log_event(node: NodeId, event: &Event) {
    match event {
        Event::RoleChanged { group, role, leader, term } => {
            if *role == raft::StateRole::Leader {
                info!(node, shard = group, term, "became leader");
            } else {
                tracing::debug!(node, shard = group, term, ?role, ?leader, "role changed");
            }
        }
        Event::GroupRemoved { group } => info!(node, shard = group, "replica removed"),
    }
}
