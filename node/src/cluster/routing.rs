//! Where a request for a shard goes next (pure policy): the leader this node knows of
//! first; the leader a refusal names; the shard's replicas (then every other node) in
//! turn when the node asked holds none, pausing after each full round; otherwise, after a growing pause, this node's replica again for a fresh leader
//! hint, until the request's deadline. [`super::Cluster`] carries the attempts out.

use std::time::{Duration, Instant};

use consensus::{GroupId, NodeId, ProposeError};
use gateways::mail_service::ServiceError;

/// The first pause after a failed attempt; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(400);

/// What to do after an attempt failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Try this node now.
    Try(NodeId),
    /// Pause, then try this node.
    WaitThenTry(Duration, NodeId),
    /// Give up with this error.
    Fail(ServiceError),
}

/// The routing state of one request.
pub struct Router {
    group: GroupId,
    /// This node.
    node: NodeId,
    /// The group's replicas, as placement has them.
    replicas: Vec<NodeId>,
    deadline: Instant,
    backoff: Duration,
    /// Which of the other replicas to ask next when this node holds none.
    replica_cursor: usize,
}

impl Router {
    pub fn new(group: GroupId, node: NodeId, replicas: Vec<NodeId>, deadline: Instant) -> Self {
        Self { group, node, replicas, deadline, backoff: FIRST_BACKOFF, replica_cursor: 0 }
    }

    /// The known leader, or this node (whose replica then says who leads).
    pub fn first_target(&self, known_leader: Option<NodeId>) -> NodeId {
        known_leader.unwrap_or(self.node)
    }

    /// The next step after `target` answered `error` at `now`.
    pub fn after_error(&mut self, target: NodeId, error: &ProposeError, now: Instant) -> Next {
        match error {
            ProposeError::NotLeader { leader: Some(leader), .. } if *leader != target => return Next::Try(*leader),
            ProposeError::GroupNotFound { .. } => {
                // Not hosted there (here, or a replica that moved away): ask the group's
                // replicas in turn, then the other nodes; once all were asked, pause.
                let others: Vec<NodeId> = self.replicas.iter().copied().filter(|&n| n != self.node).collect();
                if others.is_empty() {
                    return Next::Fail(ServiceError::NotFound(format!("shard {} does not exist", self.group)));
                }
                let mut next = others[self.replica_cursor % others.len()];
                if next == target && others.len() > 1 {
                    self.replica_cursor += 1;
                    next = others[self.replica_cursor % others.len()];
                }
                self.replica_cursor += 1;
                if self.replica_cursor <= others.len() {
                    return Next::Try(next);
                }
                return self.pause_then(next, now);
            }
            ProposeError::Invalid(message) => return Next::Fail(ServiceError::Internal(message.clone())),
            _ => {}
        }
        // Ask the local replica for a fresh leader hint.
        self.pause_then(self.node, now)
    }

    /// A growing pause before trying `next`, or failure if it would pass the deadline.
    fn pause_then(&mut self, next: NodeId, now: Instant) -> Next {
        if now + self.backoff > self.deadline {
            return Next::Fail(ServiceError::Unavailable(format!(
                "shard {} has no reachable leader; retry shortly",
                self.group
            )));
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Next::WaitThenTry(wait, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: GroupId = 7;
    const ME: NodeId = 1;

    fn not_leader(leader: Option<NodeId>) -> ProposeError {
        ProposeError::NotLeader { group: GROUP, leader }
    }

    fn router(replicas: &[NodeId], start: Instant) -> Router {
        Router::new(GROUP, ME, replicas.to_vec(), start + Duration::from_secs(10))
    }

    #[test]
    fn the_first_attempt_goes_to_the_known_leader_or_here() {
        let start = Instant::now();
        assert_eq!(router(&[1, 2, 3], start).first_target(Some(3)), 3);
        assert_eq!(router(&[1, 2, 3], start).first_target(None), ME);
    }

    #[test]
    fn each_failure_leads_to_its_next_step() {
        let start = Instant::now();
        let wait_here = |ms| Next::WaitThenTry(Duration::from_millis(ms), ME);
        let cases: Vec<(&str, &[NodeId], NodeId, ProposeError, Next)> = vec![
            ("a refusal naming the leader goes there at once", &[1, 2, 3], ME, not_leader(Some(2)), Next::Try(2)),
            ("a refusal naming itself waits, then asks here", &[1, 2, 3], 2, not_leader(Some(2)), wait_here(20)),
            ("no leader known waits, then asks here", &[1, 2, 3], 3, not_leader(None), wait_here(20)),
            (
                "a dropped request waits, then asks here",
                &[1, 2, 3],
                2,
                ProposeError::Dropped { group: GROUP },
                wait_here(20),
            ),
            (
                "a shard not hosted here goes to its first other replica",
                &[2, 3, 4],
                ME,
                ProposeError::GroupNotFound { group: GROUP },
                Next::Try(2),
            ),
            (
                "a replica that moved away sends the request on to the next one",
                &[2, 3, 4],
                2,
                ProposeError::GroupNotFound { group: GROUP },
                Next::Try(3),
            ),
            (
                "a shard nobody else hosts does not exist",
                &[1],
                ME,
                ProposeError::GroupNotFound { group: GROUP },
                Next::Fail(ServiceError::NotFound("shard 7 does not exist".into())),
            ),
            (
                "an invalid request is not retried",
                &[1, 2, 3],
                ME,
                ProposeError::Invalid("bad".into()),
                Next::Fail(ServiceError::Internal("bad".into())),
            ),
        ];
        for (case, replicas, target, error, expected) in cases {
            assert_eq!(router(replicas, start).after_error(target, &error, start), expected, "{case}");
        }
    }

    #[test]
    fn pauses_double_up_to_a_cap() {
        let start = Instant::now();
        let mut router = router(&[1, 2, 3], start);
        let waits: Vec<Duration> = (0..7)
            .map(|_| match router.after_error(2, &not_leader(None), start) {
                Next::WaitThenTry(wait, ME) => wait,
                other => panic!("expected a pause, got {other:?}"),
            })
            .collect();
        let ms: Vec<u64> = waits.iter().map(|w| w.as_millis() as u64).collect();
        assert_eq!(ms, [20, 40, 80, 160, 320, 400, 400]);
    }

    #[test]
    fn replicas_are_asked_in_turn_when_none_is_here() {
        let start = Instant::now();
        let mut router = router(&[2, 3], start);
        let not_here = ProposeError::GroupNotFound { group: GROUP };
        let targets: Vec<Next> = (0..3).map(|_| router.after_error(ME, &not_here, start)).collect();
        // Once every replica was asked, the next round starts after a pause.
        assert_eq!(targets, [Next::Try(2), Next::Try(3), Next::WaitThenTry(Duration::from_millis(20), 2)]);
    }

    #[test]
    fn a_pause_past_the_deadline_fails_as_unavailable() {
        let start = Instant::now();
        let mut router = router(&[1, 2, 3], start);
        let late = start + Duration::from_millis(9_990);
        match router.after_error(2, &not_leader(None), late) {
            Next::Fail(ServiceError::Unavailable(message)) => assert!(message.contains("shard 7"), "{message}"),
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
}
