//! The history checker (pure). Given the operations and what every replica holds at
//! the end, it reports acknowledged messages that are lost or misplaced, messages
//! applied twice, UIDs that repeat or go backwards, replicas that disagree, writes an
//! isolated node acknowledged (it cannot reach a quorum, so it must not), and each
//! shard's unavailability windows: from the first write that failed, or stalled longer
//! than a threshold, to the next write that succeeded promptly. (The service retries a
//! write internally while a shard elects a leader, so a client sees an outage mostly
//! as a stall, not as an error.)

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::history::{Isolation, Operation, Outcome};

/// What each replica holds at the end: `(user, node)` → `(uid, client_ref)` in UID order.
pub type Observed = BTreeMap<(String, u64), Mailbox>;

/// One replica's copy of a mailbox: `(uid, client_ref)` in UID order.
pub type Mailbox = Vec<(u64, String)>;

/// A stretch of time in which a shard took no write successfully.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    pub shard: u64,
    pub start_ms: u64,
    pub end_ms: u64,
    /// False if the shard never recovered before the drill ended.
    pub recovered: bool,
}

impl Window {
    pub fn duration_ms(&self) -> u64 {
        self.end_ms - self.start_ms
    }
}

/// The checker's findings. A drill passes when every list of violations is empty.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verdict {
    pub operations: usize,
    pub acknowledged: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Unknown-outcome operations that turned out to be applied (allowed).
    pub unknown_applied: usize,
    pub lost: Vec<String>,
    pub duplicates: Vec<String>,
    pub uid_violations: Vec<String>,
    pub divergent: Vec<String>,
    /// Writes acknowledged by a node while it was cut off from the majority.
    pub isolated_acks: Vec<String>,
    pub windows: Vec<Window>,
}

impl Verdict {
    pub fn violations(&self) -> usize {
        self.violation_lines().count()
    }

    /// Every violation found, one line each.
    pub fn violation_lines(&self) -> impl Iterator<Item = &String> {
        self.lost
            .iter()
            .chain(&self.duplicates)
            .chain(&self.uid_violations)
            .chain(&self.divergent)
            .chain(&self.isolated_acks)
    }
}

/// Checks a history against the replicas' final state; a write slower than `stall_ms`
/// counts as an unavailable moment of its shard.
pub fn check(history: &[Operation], observed: &Observed, stall_ms: u64) -> Verdict {
    let mut verdict = Verdict {
        operations: history.len(),
        acknowledged: history.iter().filter(|o| o.is_ok()).count(),
        failed: history.iter().filter(|o| matches!(o.outcome, Outcome::Failed { .. })).count(),
        unknown: history.iter().filter(|o| matches!(o.outcome, Outcome::Unknown { .. })).count(),
        windows: unavailability(history, stall_ms),
        ..Default::default()
    };
    // Per replica: UID order, no repeats, no client_ref twice.
    let mut by_user: BTreeMap<&str, Vec<(u64, &Mailbox)>> = BTreeMap::new();
    for ((user, node), messages) in observed {
        by_user.entry(user.as_str()).or_default().push((*node, messages));
        if let Some(pair) = messages.windows(2).find(|w| w[0].0 >= w[1].0) {
            verdict.uid_violations.push(format!("{user} on node {node}: UID {} followed by {}", pair[0].0, pair[1].0));
        }
        let mut seen: HashMap<&str, u64> = HashMap::new();
        for (uid, client_ref) in messages {
            if let Some(first) = seen.insert(client_ref.as_str(), *uid) {
                verdict
                    .duplicates
                    .push(format!("{user} on node {node}: {client_ref} stored twice (UIDs {first} and {uid})"));
            }
        }
    }
    for (user, replicas) in &by_user {
        if let Some((node, _)) = replicas.iter().find(|(_, m)| *m != replicas[0].1) {
            verdict.divergent.push(format!("{user}: node {node} differs from node {}", replicas[0].0));
        }
    }
    for operation in history {
        let Some(replicas) = by_user.get(operation.user.as_str()) else {
            if operation.is_ok() {
                verdict.lost.push(format!("{}: no replica of {} was read", operation.client_ref, operation.user));
            }
            continue;
        };
        for (node, messages) in replicas {
            let found: Vec<u64> =
                messages.iter().filter(|(_, r)| *r == operation.client_ref).map(|(uid, _)| *uid).collect();
            match &operation.outcome {
                Outcome::Ok { uid } if found != [*uid] => verdict.lost.push(format!(
                    "{} acknowledged with UID {uid} but node {node} has it at {found:?}",
                    operation.client_ref
                )),
                Outcome::Accepted if found.is_empty() => {
                    verdict.lost.push(format!("{} acknowledged but node {node} does not have it", operation.client_ref))
                }
                Outcome::Accepted if found.len() > 1 => verdict
                    .duplicates
                    .push(format!("{} acknowledged once but node {node} has it at {found:?}", operation.client_ref)),
                Outcome::Failed { reason } if !found.is_empty() => verdict
                    .duplicates
                    .push(format!("{} failed ({reason}) yet node {node} stored it", operation.client_ref)),
                _ => {}
            }
        }
        if matches!(operation.outcome, Outcome::Unknown { .. })
            && replicas.iter().any(|(_, m)| m.iter().any(|(_, r)| *r == operation.client_ref))
        {
            verdict.unknown_applied += 1;
        }
    }
    verdict
}

/// Writes that a node acknowledged although it was cut off from the rest of the cluster
/// for the whole request: invoked after the partition began and answered before it
/// healed. A minority cannot commit, so each is an acknowledgement the cluster does not
/// stand behind (a deposed leader still answering, say).
pub fn acks_while_isolated(history: &[Operation], isolations: &[Isolation]) -> Vec<String> {
    let mut found = Vec::new();
    for isolation in isolations {
        let to_ms = isolation.to_ms.unwrap_or(u64::MAX);
        for operation in history {
            if operation.node == isolation.node
                && operation.is_ok()
                && operation.invoked_ms >= isolation.from_ms
                && operation.completed_ms < to_ms
            {
                found.push(format!(
                    "{} acknowledged by node {} at {} ms while it was isolated ({}..{} ms)",
                    operation.client_ref, operation.node, operation.completed_ms, isolation.from_ms, to_ms
                ));
            }
        }
    }
    found
}

/// After a site is lost and its backup promoted: splits `operations` into those still
/// held to their outcome, and the acknowledged ones the promoted site may lack because
/// they came after its recovery point: acknowledged at or after their shard's point
/// (`points`: shard → the instant, in history time, the newest entry the promoted replica
/// holds was proposed; everything proposed before it is kept, and an acknowledgement
/// comes after its proposal) and not `present`. A shard without a point gets no
/// allowance: losing what it acknowledged is a violation.
pub fn excuse_after_recovery_point(
    operations: Vec<Operation>,
    points: &BTreeMap<u64, u64>,
    present: impl Fn(&Operation) -> bool,
) -> (Vec<Operation>, Vec<Operation>) {
    operations.into_iter().partition(|operation| {
        let excused = operation.is_ok()
            && points.get(&operation.shard).is_some_and(|&point| operation.completed_ms >= point)
            && !present(operation);
        !excused
    })
}

/// Per shard, in invocation order: from the invocation of the first write that failed
/// or took longer than `stall_ms`, to the completion of the next prompt success.
pub fn unavailability(history: &[Operation], stall_ms: u64) -> Vec<Window> {
    let mut by_shard: BTreeMap<u64, Vec<&Operation>> = BTreeMap::new();
    for operation in history {
        by_shard.entry(operation.shard).or_default().push(operation);
    }
    let end = history.iter().map(|o| o.completed_ms).max().unwrap_or(0);
    let mut windows = Vec::new();
    for (shard, mut operations) in by_shard {
        operations.sort_by_key(|o| (o.invoked_ms, o.id));
        let mut open: Option<u64> = None;
        for operation in operations {
            let prompt = operation.is_ok() && operation.completed_ms - operation.invoked_ms <= stall_ms;
            match (prompt, open) {
                (false, None) => open = Some(operation.invoked_ms),
                (true, Some(start)) => {
                    windows.push(Window { shard, start_ms: start, end_ms: operation.completed_ms, recovered: true });
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(start) = open {
            windows.push(Window { shard, start_ms: start, end_ms: end, recovered: false });
        }
    }
    windows
}

/// The value at quantile `q` (0..=1) of `values`, which it sorts.
pub fn quantile(values: &mut [u64], q: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    values[((values.len() as f64 * q) as usize).min(values.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u64, user: &str, shard: u64, times: (u64, u64), outcome: Outcome) -> Operation {
        Operation {
            id,
            user: user.into(),
            shard,
            client_ref: format!("c{id}"),
            node: 1,
            invoked_ms: times.0,
            completed_ms: times.1,
            outcome,
        }
    }

    fn ok(uid: u64) -> Outcome {
        Outcome::Ok { uid }
    }

    /// One replica's mailbox: user, node, `(uid, client_ref)` pairs.
    type Row<'a> = (&'a str, u64, &'a [(u64, &'a str)]);

    fn observed(rows: &[Row<'_>]) -> Observed {
        rows.iter()
            .map(|(user, node, msgs)| {
                ((user.to_string(), *node), msgs.iter().map(|(u, r)| (*u, r.to_string())).collect())
            })
            .collect()
    }

    #[test]
    fn only_acks_from_the_isolated_node_inside_the_partition_count() {
        let mut history = vec![
            op(1, "a", 1, (90, 120), ok(1)),  // invoked before the partition: may commit
            op(2, "a", 1, (110, 150), ok(2)), // inside: a violation
            op(3, "a", 1, (150, 210), ok(3)), // answered after the heal: may commit then
            op(4, "a", 1, (120, 130), Outcome::Unknown { reason: "timeout".into() }),
            op(5, "a", 1, (120, 130), ok(4)), // another node: fine
        ];
        history[4].node = 2;
        let isolation = Isolation { node: 1, from_ms: 100, to_ms: Some(200) };
        let found = acks_while_isolated(&history, &[isolation]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("c2 acknowledged by node 1"));
        assert_eq!(acks_while_isolated(&history, &[Isolation { to_ms: None, ..isolation }]).len(), 2);
    }

    #[test]
    fn a_clean_history_passes_and_unknowns_may_go_either_way() {
        let history = [
            op(1, "a", 1, (0, 5), ok(1)),
            op(2, "a", 1, (6, 9), Outcome::Unknown { reason: "timeout".into() }),
            op(3, "a", 1, (10, 12), Outcome::Unknown { reason: "reset".into() }),
            op(4, "a", 1, (13, 15), ok(3)),
        ];
        let state =
            observed(&[("a", 1, &[(1, "c1"), (2, "c2"), (3, "c4")]), ("a", 2, &[(1, "c1"), (2, "c2"), (3, "c4")])]);
        let verdict = check(&history, &state, 1_000);
        assert_eq!(verdict.violations(), 0, "{verdict:?}");
        assert_eq!((verdict.acknowledged, verdict.unknown, verdict.unknown_applied), (2, 2, 1));
    }

    #[test]
    fn smtp_acceptances_must_be_stored_exactly_once() {
        let history = [
            op(1, "a", 1, (0, 5), Outcome::Accepted),
            op(2, "a", 1, (6, 9), Outcome::Accepted),
            op(3, "a", 1, (6, 9), Outcome::Accepted),
        ];
        // c1 stored once (fine), c2 missing, c3 twice.
        let state = observed(&[("a", 1, &[(1, "c1"), (2, "c3"), (3, "c3")])]);
        let verdict = check(&history, &state, 1_000);
        assert_eq!(verdict.acknowledged, 3);
        assert!(verdict.lost.iter().any(|l| l.contains("c2")), "{verdict:?}");
        assert!(verdict.duplicates.iter().any(|d| d.contains("c3")), "{verdict:?}");
        assert!(!verdict.lost.iter().chain(&verdict.duplicates).any(|v| v.contains("c1")), "{verdict:?}");
    }

    #[test]
    fn each_violation_is_caught() {
        let history = [
            op(1, "a", 1, (0, 5), ok(1)),
            op(2, "a", 1, (6, 9), ok(2)),
            op(3, "a", 1, (10, 12), Outcome::Failed { reason: "refused".into() }),
        ];
        // Lost: c2 missing on node 2. Duplicate: c1 twice on node 1. Failed-but-stored: c3.
        let state = observed(&[("a", 1, &[(1, "c1"), (2, "c2"), (3, "c1"), (4, "c3")]), ("a", 2, &[(1, "c1")])]);
        let verdict = check(&history, &state, 1_000);
        assert!(verdict.lost.iter().any(|l| l.contains("c2") && l.contains("node 2")), "{verdict:?}");
        assert!(verdict.duplicates.iter().any(|d| d.contains("c1 stored twice")), "{verdict:?}");
        assert!(verdict.duplicates.iter().any(|d| d.contains("c3 failed")), "{verdict:?}");
        assert_eq!(verdict.divergent.len(), 1);
        let backwards = observed(&[("b", 1, &[(2, "x"), (2, "y")])]);
        assert_eq!(check(&[], &backwards, 1_000).uid_violations.len(), 1);
    }

    #[test]
    fn unavailability_runs_from_first_failure_or_stall_to_next_prompt_success() {
        let history = [
            op(1, "a", 7, (0, 10), ok(1)),
            op(2, "a", 7, (100, 200), Outcome::Unknown { reason: "timeout".into() }),
            op(3, "a", 7, (150, 300), Outcome::Failed { reason: "refused".into() }),
            op(4, "a", 7, (310, 320), ok(2)),
            op(5, "a", 7, (400, 1_400), ok(3)), // acknowledged, but after a 1 s stall
            op(6, "a", 7, (500, 1_450), ok(4)),
            op(7, "a", 7, (1_500, 1_510), ok(5)),
            op(8, "b", 8, (50, 60), Outcome::Failed { reason: "refused".into() }),
        ];
        let windows = unavailability(&history, 250);
        assert_eq!(
            windows,
            vec![
                Window { shard: 7, start_ms: 100, end_ms: 320, recovered: true },
                Window { shard: 7, start_ms: 400, end_ms: 1_510, recovered: true },
                Window { shard: 8, start_ms: 50, end_ms: 1_510, recovered: false },
            ]
        );
        assert_eq!(quantile(&mut [5, 1, 3], 0.5), 3);
    }

    #[test]
    fn a_site_loss_excuses_only_what_was_acknowledged_after_the_recovery_point_and_is_missing() {
        let history = vec![
            op(1, "a", 1, (0, 90), ok(1)),   // before shard 1's point, missing: lost
            op(2, "a", 1, (95, 110), ok(2)), // after the point, missing: excused
            op(3, "a", 1, (96, 120), ok(3)), // after the point, present: still checked
            op(4, "b", 2, (95, 110), ok(1)), // shard 2 has no point: no allowance
            op(5, "a", 1, (97, 130), Outcome::Unknown { reason: "timeout".into() }),
        ];
        let points = BTreeMap::from([(1, 100)]);
        let (kept, excused) = excuse_after_recovery_point(history, &points, |o| o.id == 3);
        assert_eq!(excused.iter().map(|o| o.id).collect::<Vec<_>>(), [2]);
        assert_eq!(kept.iter().map(|o| o.id).collect::<Vec<_>>(), [1, 3, 4, 5]);
    }
}
