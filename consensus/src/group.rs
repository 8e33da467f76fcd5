//! One group's replica on this node: the raft-rs node plus the requests waiting on it.

use std::collections::VecDeque;

use raft::{RawNode, StateRole};
use storage::GroupStorage;

use crate::error::ProposeError;
use crate::heartbeats::RecentAppends;
use crate::multi_raft::{ProposalCallback, ReadCallback};
use crate::{GroupId, NodeId};

/// A proposal appended to the leader's log, waiting for its entry to be applied.
pub(crate) struct PendingProposal {
    pub(crate) index: u64,
    pub(crate) term: u64,
    pub(crate) callback: ProposalCallback,
    /// For the proposal-to-apply latency metric.
    pub(crate) proposed_at: std::time::Instant,
}

/// A linearizable read waiting for its read index, then for apply to reach it.
pub(crate) struct PendingRead {
    pub(crate) id: u64,
    pub(crate) index: Option<u64>,
    pub(crate) callback: ReadCallback,
    /// Ticks spent waiting for the read index.
    pub(crate) ticks: u32,
}

/// A finished request whose callback runs once the round's apply batch is written.
pub(crate) enum Completion {
    Proposal(ProposalCallback, Result<Vec<u8>, ProposeError>),
    Read(ReadCallback, Result<(), ProposeError>),
}

impl Completion {
    pub(crate) fn run(self) {
        match self {
            Completion::Proposal(callback, result) => callback(result),
            Completion::Read(callback, result) => callback(result),
        }
    }
}

pub(crate) struct Group {
    pub(crate) id: GroupId,
    pub(crate) raw: RawNode<GroupStorage>,
    pub(crate) applied_index: u64,
    pub(crate) applied_term: u64,
    /// In log order; resolved as their indexes are applied.
    pub(crate) proposals: VecDeque<PendingProposal>,
    pub(crate) reads: VecDeque<PendingRead>,
    /// Role and leader as last reported, to notice changes.
    pub(crate) role: StateRole,
    pub(crate) leader: Option<NodeId>,
    /// Set when a conf change removed this node; the group is destroyed after the round.
    pub(crate) removed: bool,
    /// The highest compaction index the leader asked for in the log (applied here).
    pub(crate) compact_requested: u64,
    /// As leader: the highest compaction index this replica proposed in its current
    /// term, so it does not propose the same again while the first is on its way.
    pub(crate) compact_proposed: u64,
    /// Ticks since a message from the leader arrived (see [`crate::stale`]).
    pub(crate) ticks_unled: u32,
    /// Not ticking: the group is idle (see [`crate::quiesce`]).
    pub(crate) quiesced: bool,
    /// As leader: consecutive ticks the group was idle.
    pub(crate) idle_ticks: u32,
    /// As leader: when each follower was last sent an append (see [`crate::heartbeats`]).
    pub(crate) recent_appends: RecentAppends,
}

impl Group {
    pub(crate) fn new(id: GroupId, raw: RawNode<GroupStorage>, applied_index: u64, applied_term: u64) -> Self {
        Self {
            id,
            raw,
            applied_index,
            applied_term,
            proposals: VecDeque::new(),
            reads: VecDeque::new(),
            role: StateRole::Follower,
            leader: None,
            removed: false,
            compact_requested: 0,
            compact_proposed: 0,
            ticks_unled: 0,
            quiesced: false,
            idle_ticks: 0,
            recent_appends: RecentAppends::default(),
        }
    }

    /// Ticks again from now on (see [`crate::quiesce`]).
    pub(crate) fn wake(&mut self) {
        self.quiesced = false;
        self.idle_ticks = 0;
        self.ticks_unled = 0;
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub(crate) fn not_leader(&self) -> ProposeError {
        let leader = self.raw.raft.leader_id;
        ProposeError::NotLeader { group: self.id, leader: (leader != raft::INVALID_ID).then_some(leader) }
    }

    /// Called when raft-rs reports a new role or leader. A replica that stops leading
    /// fails its waiting requests at once: their entries may still commit under the
    /// new leader, which is why clients retry with the same request id.
    pub(crate) fn on_soft_state(&mut self, role: StateRole, leader: Option<NodeId>, failed: &mut Vec<Completion>) {
        let was_leader = self.role == StateRole::Leader;
        self.role = role;
        self.leader = leader;
        if role == StateRole::Leader && !was_leader {
            // A proposal of an earlier term may have been overwritten: start afresh.
            self.compact_proposed = 0;
            self.recent_appends.clear();
        }
        if was_leader && role != StateRole::Leader {
            let error = self.not_leader();
            for proposal in self.proposals.drain(..) {
                failed.push(Completion::Proposal(proposal.callback, Err(error.clone())));
            }
            for read in self.reads.drain(..) {
                failed.push(Completion::Read(read.callback, Err(error.clone())));
            }
        }
    }

    /// Resolves proposals up to an applied entry: the one at this index and term gets
    /// `response`; any proposal at an earlier index, or at this index with another term,
    /// was overwritten by another leader and is dropped.
    pub(crate) fn on_entry_applied(&mut self, index: u64, term: u64, response: &[u8], done: &mut Vec<Completion>) {
        while let Some(front) = self.proposals.front() {
            if front.index > index {
                break;
            }
            let proposal = self.proposals.pop_front().expect("checked non-empty");
            let result = if proposal.index == index && proposal.term == term {
                metrics::histogram!("ums_apply_latency_seconds").record(proposal.proposed_at.elapsed().as_secs_f64());
                Ok(response.to_vec())
            } else {
                Err(ProposeError::Dropped { group: self.id })
            };
            done.push(Completion::Proposal(proposal.callback, result));
        }
    }

    pub(crate) fn on_read_state(&mut self, request_ctx: &[u8], index: u64) {
        let Ok(id) = <[u8; 8]>::try_from(request_ctx).map(u64::from_be_bytes) else {
            return;
        };
        if let Some(read) = self.reads.iter_mut().find(|r| r.id == id) {
            read.index = Some(index);
        }
    }

    /// Completes reads whose index has been applied (reads finish in any order).
    pub(crate) fn complete_reads(&mut self, done: &mut Vec<Completion>) {
        let applied = self.applied_index;
        let mut waiting = VecDeque::with_capacity(self.reads.len());
        for read in self.reads.drain(..) {
            if read.index.is_some_and(|index| index <= applied) {
                done.push(Completion::Read(read.callback, Ok(())));
            } else {
                waiting.push_back(read);
            }
        }
        self.reads = waiting;
    }

    /// Fails reads that got no read index within `limit` ticks, so their callers retry
    /// instead of waiting forever for an answer Raft will never give.
    pub(crate) fn expire_reads(&mut self, limit: u32) {
        let mut waiting = VecDeque::with_capacity(self.reads.len());
        for mut read in self.reads.drain(..) {
            read.ticks += 1;
            if read.index.is_none() && read.ticks > limit {
                metrics::counter!("ums_raft_reads_expired_total").increment(1);
                (read.callback)(Err(ProposeError::Dropped { group: self.id }));
            } else {
                waiting.push_back(read);
            }
        }
        self.reads = waiting;
    }

    /// Fails everything still waiting (the group is going away from this node).
    pub(crate) fn fail_all(&mut self, error: ProposeError, done: &mut Vec<Completion>) {
        for proposal in self.proposals.drain(..) {
            done.push(Completion::Proposal(proposal.callback, Err(error.clone())));
        }
        for read in self.reads.drain(..) {
            done.push(Completion::Read(read.callback, Err(error.clone())));
        }
    }
}
