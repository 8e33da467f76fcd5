//! The history checker of the simulation (pure, no IO).
//!
//! Input: what each client request's outcome was, and each replica's applied sequence
//! per group. Violations: replicas that disagree on order or content, a request applied
//! twice, an acknowledged request missing or not at the position it was acknowledged
//! with.

use std::collections::{BTreeMap, HashMap};

use crate::{GroupId, NodeId};

/// The outcome of one client request as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub request_id: u64,
    pub group: GroupId,
    /// `Some(position)` if acknowledged (the 1-based place it was applied at).
    pub acked_position: Option<u64>,
}

/// Checks the replicas' sequences against the client outcomes.
///
/// `sequences[node][group]` lists the request ids in apply order on that replica.
pub fn check(outcomes: &[Outcome], sequences: &BTreeMap<NodeId, BTreeMap<GroupId, Vec<u64>>>) -> Vec<String> {
    let mut violations = Vec::new();
    let mut reference: BTreeMap<GroupId, (NodeId, &Vec<u64>)> = BTreeMap::new();
    for (&node, groups) in sequences {
        for (&group, sequence) in groups {
            match reference.get(&group) {
                None => {
                    reference.insert(group, (node, sequence));
                }
                Some(&(first_node, first)) if first != sequence => {
                    let at = first.iter().zip(sequence.iter()).position(|(a, b)| a != b);
                    violations.push(format!(
                        "group {group}: node {node} diverges from node {first_node} (lengths {} vs {}, first difference at {at:?})",
                        sequence.len(),
                        first.len()
                    ));
                }
                Some(_) => {}
            }
        }
    }
    for (&group, &(node, sequence)) in &reference {
        let mut seen = HashMap::new();
        for (position, &request) in sequence.iter().enumerate() {
            if let Some(earlier) = seen.insert(request, position + 1) {
                violations.push(format!(
                    "group {group}: request {request} applied twice on node {node} (positions {earlier} and {})",
                    position + 1
                ));
            }
        }
    }
    for outcome in outcomes {
        let Some(position) = outcome.acked_position else {
            continue;
        };
        let Some(&(node, sequence)) = reference.get(&outcome.group) else {
            violations.push(format!("group {}: no replica holds acknowledged request {}", outcome.group, outcome.request_id));
            continue;
        };
        let applied_at = sequence.get((position as usize).wrapping_sub(1)).copied();
        if applied_at != Some(outcome.request_id) {
            violations.push(format!(
                "group {}: request {} acknowledged at position {position}, but node {node} has {:?} there (lost or misplaced)",
                outcome.group, outcome.request_id, applied_at
            ));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequences(rows: &[(NodeId, GroupId, &[u64])]) -> BTreeMap<NodeId, BTreeMap<GroupId, Vec<u64>>> {
        let mut out: BTreeMap<NodeId, BTreeMap<GroupId, Vec<u64>>> = BTreeMap::new();
        for &(node, group, seq) in rows {
            out.entry(node).or_default().insert(group, seq.to_vec());
        }
        out
    }

    fn acked(request_id: u64, group: GroupId, position: u64) -> Outcome {
        Outcome {
            request_id,
            group,
            acked_position: Some(position),
        }
    }

    #[test]
    fn a_consistent_history_passes() {
        let seqs = sequences(&[(1, 1, &[10, 11, 12]), (2, 1, &[10, 11, 12]), (1, 2, &[20])]);
        let outcomes = [acked(10, 1, 1), acked(12, 1, 3), acked(20, 2, 1), Outcome { request_id: 11, group: 1, acked_position: None }];
        assert!(check(&outcomes, &seqs).is_empty());
    }

    #[test]
    fn each_kind_of_violation_is_reported() {
        let cases: [(&[Outcome], BTreeMap<NodeId, BTreeMap<GroupId, Vec<u64>>>, &str); 4] = [
            (&[], sequences(&[(1, 1, &[1, 2]), (2, 1, &[2, 1])]), "diverges"),
            (&[], sequences(&[(1, 1, &[1, 2, 1])]), "applied twice"),
            (&[acked(3, 1, 3)], sequences(&[(1, 1, &[1, 2])]), "lost or misplaced"),
            (&[acked(2, 1, 1)], sequences(&[(1, 1, &[1, 2])]), "lost or misplaced"),
        ];
        for (outcomes, seqs, expected) in cases {
            let violations = check(outcomes, &seqs);
            assert!(violations.iter().any(|v| v.contains(expected)), "{expected}: {violations:?}");
        }
    }
}
