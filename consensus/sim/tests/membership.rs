//! Membership changes, leader transfer and ReadIndex on the simulated cluster: a learner
//! joins a group whose log is compacted (so it needs a snapshot), is promoted, the old
//! leader hands over and is removed, and the group keeps every acknowledged write; the
//! leader compacts every log to what all members hold, and waits for a member that is down.

use consensus::{Command, GroupId, NodeId, ProposeError, Target};
use consensus_sim::sequence::position_of;
use consensus_sim::{SimCluster, SimOptions};
use raft::StateRole;
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};

const GROUP: GroupId = 1;
const LIMIT_MS: u64 = 5_000;

fn wait_for_leader(cluster: &mut SimCluster) -> NodeId {
    assert!(cluster.run_until(LIMIT_MS, |c| c.leader(GROUP).is_some()), "no leader elected");
    cluster.leader(GROUP).unwrap()
}

/// Writes request `id` through the current leader and returns its position.
fn write(cluster: &mut SimCluster, id: u64) -> u64 {
    for _ in 0..10 {
        let leader = wait_for_leader(cluster);
        let result = cluster.call(leader, LIMIT_MS, |raft, done| {
            raft.propose(GROUP, &Command::new(7, id, id.to_be_bytes().to_vec()), done)
        });
        if let Some(Ok(response)) = result {
            return position_of(&response).unwrap();
        }
    }
    panic!("request {id} never acknowledged");
}

fn change(cluster: &mut SimCluster, change_type: ConfChangeType, node_id: NodeId) {
    let leader = wait_for_leader(cluster);
    let change = ConfChangeV2 {
        changes: vec![ConfChangeSingle { change_type: change_type as i32, node_id }],
        ..Default::default()
    };
    let result = cluster.call(leader, LIMIT_MS, |raft, done| raft.propose_conf_change(GROUP, change, done));
    assert!(matches!(result, Some(Ok(_))), "{change_type:?} {node_id}: {result:?}");
}

fn caught_up(cluster: &SimCluster, node: NodeId) -> bool {
    let Some(leader) = cluster.leader(GROUP) else { return false };
    let commit = cluster.node(leader).unwrap().status(GROUP).unwrap().commit_index;
    cluster.node(node).and_then(|r| r.status(GROUP)).is_some_and(|s| s.applied_index == commit)
}

#[test]
fn learner_joins_by_snapshot_is_promoted_and_old_leader_leaves() {
    let mut cluster = SimCluster::new(&SimOptions { seed: 42, nodes: 3, replicas: 3, groups: 2 });
    for id in 1..=100 {
        assert_eq!(write(&mut cluster, id), id);
    }
    let first_leader = wait_for_leader(&mut cluster);
    let status = cluster.node(first_leader).unwrap().status(GROUP).unwrap();
    assert!(status.first_index > 50, "log should have been compacted: {status:?}");

    cluster.add_node(4);
    change(&mut cluster, ConfChangeType::AddLearnerNode, 4);
    assert!(cluster.run_until(LIMIT_MS, |c| caught_up(c, 4)), "learner did not catch up");
    let learner = cluster.node(4).unwrap().status(GROUP).unwrap();
    assert_eq!(learner.learners, vec![4]);
    change(&mut cluster, ConfChangeType::AddNode, 4);
    // The leader answers once it applied the promotion; node 4 ignores a hand-over
    // until it applied it too.
    let promoted = |c: &SimCluster| c.node(4).and_then(|r| r.status(GROUP)).is_some_and(|s| s.voters.contains(&4));
    assert!(cluster.run_until(LIMIT_MS, promoted), "node 4 never applied its promotion");

    // Hand leadership to the new member, then remove the old leader.
    let result = cluster.node_mut(first_leader).unwrap().transfer_leader(GROUP, 4);
    assert!(result.is_ok(), "{result:?}");
    assert!(cluster.run_until(LIMIT_MS, |c| c.leader(GROUP) == Some(4)), "transfer to 4 failed");
    change(&mut cluster, ConfChangeType::RemoveNode, first_leader);
    assert!(
        cluster.run_until(LIMIT_MS, |c| !c.node(first_leader).unwrap().has_group(GROUP)),
        "removed replica not destroyed"
    );
    // Group 2 on the old leader is untouched.
    assert!(cluster.node(first_leader).unwrap().has_group(2));

    for id in 101..=120 {
        assert_eq!(write(&mut cluster, id), id);
    }
    // A linearizable read on the leader completes once everything above is applied.
    let read = cluster.call(4, LIMIT_MS, |raft, done| raft.read_index(GROUP, done));
    assert_eq!(read, Some(Ok(())));
    let status = cluster.node(4).unwrap().status(GROUP).unwrap();
    assert_eq!(status.role, StateRole::Leader);
    assert_eq!(status.voters.len(), 3);
    assert!(!status.voters.contains(&first_leader));

    // The new leader crashes; the rest elect a leader and keep everything.
    cluster.crash(4);
    for id in 121..=130 {
        assert_eq!(write(&mut cluster, id), id);
    }
    cluster.restart(4);
    assert!(cluster.run_until(LIMIT_MS, |c| c.converged()), "no convergence after restart");
    let sequences = cluster.sequences();
    let expected: Vec<u64> = (1..=130).collect();
    for (node, groups) in &sequences {
        if let Some(sequence) = groups.get(&GROUP) {
            assert_eq!(sequence, &expected, "node {node}");
        }
    }
    assert_eq!(sequences.values().filter(|g| g.contains_key(&GROUP)).count(), 3);
}

#[test]
fn followers_refuse_proposals_and_name_the_leader() {
    let mut cluster = SimCluster::new(&SimOptions { seed: 7, nodes: 3, replicas: 3, groups: 1 });
    let leader = wait_for_leader(&mut cluster);
    let follower = cluster.replicas(GROUP).iter().copied().find(|&n| n != leader).unwrap();
    assert!(cluster.run_until(LIMIT_MS, |c| c.node(follower).unwrap().leader_of(GROUP) == Some(leader)));
    let result = cluster.call(follower, 100, |raft, done| raft.propose(GROUP, &Command::new(1, 1, vec![1]), done));
    assert_eq!(result, Some(Err(ProposeError::NotLeader { group: GROUP, leader: Some(leader) })));
    let result = cluster.call(follower, 100, |raft, done| raft.propose(99, &Command::new(1, 2, vec![1]), done));
    assert_eq!(result, Some(Err(ProposeError::GroupNotFound { group: 99 })));
}

#[test]
fn a_retried_request_is_applied_once_and_answered_with_the_first_result() {
    let mut cluster = SimCluster::new(&SimOptions { seed: 3, nodes: 3, replicas: 3, groups: 1 });
    assert_eq!(write(&mut cluster, 1), 1);
    assert_eq!(write(&mut cluster, 2), 2);
    // The same request id again (a client retry after a timeout): same answer, no apply.
    assert_eq!(write(&mut cluster, 1), 1);
    assert_eq!(write(&mut cluster, 3), 3);
    assert!(cluster.run_until(LIMIT_MS, |c| c.converged()));
    for groups in cluster.sequences().values() {
        assert_eq!(groups[&GROUP], vec![1, 2, 3]);
    }
}

/// A leader that has not yet committed an entry of its term cannot serve a ReadIndex
/// (raft-rs drops such a request without an answer). The read must be refused so the
/// caller retries, never left waiting forever; once the term's first entry commits,
/// reads succeed. Found by the IMAP benchmark: a FETCH right after a leadership
/// hand-off hung.
#[test]
fn a_read_on_a_brand_new_leader_is_refused_or_served_never_lost() {
    let mut cluster = SimCluster::new(&SimOptions { seed: 11, nodes: 3, replicas: 3, groups: 1 });
    for id in 1..=5 {
        write(&mut cluster, id);
    }
    let old = wait_for_leader(&mut cluster);
    let next = cluster.replicas(GROUP).iter().copied().find(|&n| n != old).unwrap();
    assert!(cluster.run_until(LIMIT_MS, |c| caught_up(c, next)));
    cluster.node_mut(old).unwrap().transfer_leader(GROUP, next).unwrap();
    assert!(
        cluster.run_until(LIMIT_MS, |c| c
            .node(next)
            .unwrap()
            .status(GROUP)
            .is_some_and(|s| s.role == StateRole::Leader))
    );
    // At once, before the new term's first entry can have committed.
    let first = cluster.call(next, 200, |raft, done| raft.read_index(GROUP, done));
    assert!(
        matches!(first, Some(Ok(())) | Some(Err(ProposeError::Dropped { .. }))),
        "answered, not dropped: {first:?}"
    );
    let mut served = first == Some(Ok(()));
    for _ in 0..20 {
        if served {
            break;
        }
        // A refused read returns at once: let the cluster run a little before retrying.
        cluster.run_until(50, |_| false);
        served = cluster.call(next, 200, |raft, done| raft.read_index(GROUP, done)) == Some(Ok(()));
    }
    assert!(served, "reads are served once the new leader committed in its term");
}

fn first_index(cluster: &SimCluster, node: NodeId) -> u64 {
    cluster.node(node).unwrap().status(GROUP).unwrap().first_index
}

#[test]
fn the_leader_compacts_every_log_to_what_all_members_hold_and_waits_for_a_member_that_is_down() {
    // sim_raft_config: compact every 16 entries held everywhere, regardless at 40.
    let mut cluster = SimCluster::new(&SimOptions { seed: 7, nodes: 3, replicas: 3, groups: 1 });
    for id in 1..=30 {
        write(&mut cluster, id);
    }
    let all_compacted = |c: &SimCluster| [1, 2, 3].iter().all(|&n| first_index(c, n) > 16);
    assert!(
        cluster.run_until(LIMIT_MS, all_compacted),
        "30 entries on every member, below the forced threshold, yet no compaction"
    );

    // A member goes down: the others keep what it lacks, until the forced threshold.
    let leader = wait_for_leader(&mut cluster);
    let down = [1, 2, 3].into_iter().find(|&n| n != leader).unwrap();
    let held_by_down = cluster.node(down).unwrap().status(GROUP).unwrap().last_index;
    cluster.crash(down);
    for id in 31..=50 {
        write(&mut cluster, id);
    }
    cluster.run_until(200, |_| false);
    for n in [1, 2, 3].into_iter().filter(|&n| n != down) {
        assert!(first_index(&cluster, n) <= held_by_down + 1, "node {n} compacted past what the down member holds");
    }
    cluster.restart(down);
    assert!(cluster.run_until(LIMIT_MS, |c| caught_up(c, down)), "the member did not catch up");
}

/// A group of one voter commits alone: raft-rs hands it the new commit index after the
/// append (`LightReady::commit_index`), not in a later hard state. It must be persisted
/// with the applied entries, or a restart finds them applied past the recorded commit
/// and raft-rs refuses to start (a dev cluster of one node did exactly that).
#[test]
fn a_group_of_one_voter_restarts_after_committing_alone() {
    let mut cluster = SimCluster::new(&SimOptions { seed: 3, nodes: 1, replicas: 1, groups: 1 });
    for id in 1..=20 {
        assert_eq!(write(&mut cluster, id), id);
    }
    let before = cluster.node(1).unwrap().status(GROUP).unwrap();
    cluster.crash(1);
    cluster.restart(1);
    assert_eq!(write(&mut cluster, 21), 21, "the restarted group lost or repeated writes");
    let after = cluster.node(1).unwrap().status(GROUP).unwrap();
    assert!(after.commit_index > before.commit_index.min(before.applied_index), "{before:?} → {after:?}");
}

fn settled(cluster: &SimCluster, voters: &[NodeId]) -> bool {
    let Some(leader) = cluster.leader(GROUP) else { return false };
    let status = cluster.node(leader).unwrap().status(GROUP).unwrap();
    let hosts: Vec<NodeId> =
        cluster.node_ids().into_iter().filter(|&n| cluster.node(n).is_some_and(|r| r.has_group(GROUP))).collect();
    status.voters == voters && status.voters_outgoing.is_empty() && status.learners.is_empty() && hosts == voters
}

#[test]
fn a_move_whose_leader_dies_while_joint_finishes_on_the_next_leader() {
    let mut cluster = SimCluster::new(&SimOptions { seed: 7, nodes: 4, replicas: 3, groups: 1 });
    for id in 1..=60 {
        write(&mut cluster, id);
    }
    // Group 1 is on nodes 2, 3, 4; move node 2's replica to node 1.
    let leader = wait_for_leader(&mut cluster);
    let from = if leader == 2 { 3 } else { 2 };
    let target: Vec<NodeId> = [1, 2, 3, 4].into_iter().filter(|&n| n != from).collect();
    cluster.set_target(GROUP, Target::voters(target.iter().copied()));
    let joint = |c: &SimCluster| {
        c.leader(GROUP)
            .and_then(|l| c.node(l))
            .and_then(|r| r.status(GROUP))
            .is_some_and(|s| !s.voters_outgoing.is_empty())
    };
    assert!(cluster.run_until(LIMIT_MS, joint), "the move never entered joint consensus");
    let joint_leader = cluster.leader(GROUP).unwrap();
    cluster.crash(joint_leader);
    // The survivors elect a leader, which leaves the joint configuration and finishes.
    cluster.run_until(2_000, |_| false);
    cluster.restart(joint_leader);
    for id in 61..=80 {
        write(&mut cluster, id);
    }
    assert!(cluster.run_until(20_000, |c| settled(c, &target) && c.converged()), "move did not finish");
    let sequences = cluster.sequences();
    for node in &target {
        assert_eq!(sequences[node][&GROUP], (1..=80).collect::<Vec<u64>>(), "node {node}");
    }
    assert!(cluster.violations().is_empty(), "{:?}", cluster.violations());
}

#[test]
fn a_replica_removed_while_cut_off_learns_it_and_retires() {
    let mut cluster = SimCluster::new(&SimOptions { seed: 11, nodes: 4, replicas: 3, groups: 1 });
    for id in 1..=30 {
        write(&mut cluster, id);
    }
    // Cut off one follower of group 1 (on nodes 2, 3, 4) and move its replica to node 1.
    let leader = wait_for_leader(&mut cluster);
    let cut_off = [2, 3, 4].into_iter().find(|&n| n != leader).unwrap();
    cluster.partition(&[cut_off]);
    let target: Vec<NodeId> = [1, 2, 3, 4].into_iter().filter(|&n| n != cut_off).collect();
    cluster.set_target(GROUP, Target::voters(target.iter().copied()));
    let moved = |c: &SimCluster| {
        c.leader(GROUP).and_then(|l| c.node(l)).and_then(|r| r.status(GROUP)).is_some_and(|s| s.voters == target)
    };
    assert!(cluster.run_until(20_000, moved), "move did not finish without the cut-off node");
    assert!(cluster.node(cut_off).unwrap().has_group(GROUP), "it cannot have heard of its removal yet");
    cluster.heal();
    // It never applies its removal (nobody sends it the log any more): its probe or its
    // campaign is answered with a notice, and it retires.
    assert!(cluster.run_until(20_000, |c| settled(c, &target)), "stale replica not retired");
    assert!(cluster.violations().is_empty(), "{:?}", cluster.violations());
}

#[test]
fn idle_groups_quiesce_and_wake_for_a_write_and_when_their_leader_dies() {
    let mut cluster = SimCluster::new(&SimOptions { seed: 5, nodes: 3, replicas: 3, groups: 4 });
    for id in 1..=10 {
        write(&mut cluster, id);
    }
    let all_quiet = |c: &SimCluster| c.node_ids().iter().all(|&n| c.node(n).is_some_and(|r| r.quiesced_count() == 4));
    assert!(cluster.run_until(LIMIT_MS, all_quiet), "idle groups never quiesced");
    // Quiet means quiet: a second of virtual time passes without a new term anywhere.
    let term = |c: &SimCluster| c.node(c.leader(GROUP).unwrap()).unwrap().status(GROUP).unwrap().term;
    let before = term(&cluster);
    cluster.run_until(1_000, |_| false);
    assert!(all_quiet(&cluster) && term(&cluster) == before);

    // A write wakes its group (and only needs its group).
    assert_eq!(write(&mut cluster, 11), 11);
    // Its leader dies while the group is quiet again: the others notice and elect.
    assert!(cluster.run_until(LIMIT_MS, all_quiet), "did not quiesce again");
    let leader = cluster.leader(GROUP).unwrap();
    cluster.crash(leader);
    let elected = |c: &SimCluster| c.leader(GROUP).is_some_and(|l| l != leader);
    assert!(cluster.run_until(LIMIT_MS, elected), "a quiesced group whose leader died elected nobody");
    assert_eq!(write(&mut cluster, 12), 12);
    assert!(cluster.violations().is_empty(), "{:?}", cluster.violations());
}

#[test]
fn a_standing_learner_follows_the_log_reports_its_lag_and_lets_the_group_quiesce() {
    let mut cluster = SimCluster::new(&SimOptions { seed: 5, nodes: 4, replicas: 3, groups: 1 });
    for id in 1..=20 {
        write(&mut cluster, id);
    }
    // Group 1 is on nodes 2, 3, 4; node 1 becomes a standing learner (a backup site).
    let target = Target::new([2, 3, 4], [1]);
    cluster.set_target(GROUP, target);
    let has_learner = |c: &SimCluster| {
        c.leader(GROUP).and_then(|l| c.node(l)).and_then(|r| r.status(GROUP)).is_some_and(|s| s.learners == [1])
    };
    assert!(cluster.run_until(20_000, has_learner), "the learner was never added");
    for id in 21..=40 {
        write(&mut cluster, id);
    }
    assert!(cluster.run_until(LIMIT_MS, |c| caught_up(c, 1)), "the learner never caught up");
    assert_eq!(cluster.sequences()[&1][&GROUP], (1..=40).collect::<Vec<u64>>());

    // Cut off, it counts for no commit: writes go on, and its leader reports what it lacks.
    cluster.partition(&[1]);
    for id in 41..=50 {
        write(&mut cluster, id);
    }
    let leader = wait_for_leader(&mut cluster);
    let lag = cluster.node(leader).unwrap().status(GROUP).unwrap().learner_lags[&1];
    assert!(lag.entries >= 10, "{lag:?}");
    cluster.heal();
    let no_lag = |c: &SimCluster| {
        c.leader(GROUP)
            .and_then(|l| c.node(l))
            .and_then(|r| r.status(GROUP))
            .is_some_and(|s| s.learner_lags.get(&1).is_some_and(|lag| lag.entries == 0 && lag.age_ms == 0))
    };
    assert!(cluster.run_until(LIMIT_MS, no_lag), "the learner never caught up after the partition");

    // A group with the learners its target names is settled: it quiesces, on the learner too.
    let quiet = |c: &SimCluster| c.node_ids().iter().all(|&n| c.node(n).is_some_and(|r| r.quiesced_count() == 1));
    assert!(cluster.run_until(LIMIT_MS, quiet), "a group with a standing learner never quiesced");
    // A learner restarted under a quiet group never campaigns; its probe wakes the leader,
    // whose heartbeats bring it back, and the group quiesces again.
    cluster.crash(1);
    cluster.restart(1);
    assert!(!quiet(&cluster));
    assert!(cluster.run_until(LIMIT_MS, quiet), "the group never quiesced again after its learner restarted");
    assert!(cluster.violations().is_empty(), "{:?}", cluster.violations());
}

#[test]
fn after_losing_every_voter_the_most_advanced_learner_recovers_the_group_with_the_others() {
    // Three voters and, on the other two nodes, standing learners (a backup site).
    let mut cluster = SimCluster::new(&SimOptions { seed: 3, nodes: 5, replicas: 3, groups: 1 });
    let voters = cluster.replicas(GROUP).to_vec();
    let backup: Vec<NodeId> = cluster.node_ids().into_iter().filter(|n| !voters.contains(n)).collect();
    cluster.set_target(GROUP, Target::new(voters.clone(), backup.clone()));
    let seeded = |c: &SimCluster| {
        c.leader(GROUP).and_then(|l| c.node(l)).and_then(|r| r.status(GROUP)).is_some_and(|s| s.learners == backup)
    };
    assert!(cluster.run_until(20_000, seeded), "the backup learners were never added");
    for id in 1..=40 {
        write(&mut cluster, id);
    }
    assert!(cluster.run_until(LIMIT_MS, |c| backup.iter().all(|&b| caught_up(c, b))), "backup behind");

    // The primary site is lost for good; the most advanced backup replica recovers the
    // group alone, the other is dropped and comes back from its snapshot.
    for &voter in &voters {
        cluster.crash(voter);
    }
    let ends: Vec<(NodeId, (u64, u64))> = backup
        .iter()
        .map(|&b| {
            let (term, index, stamp) = cluster.node(b).unwrap().log_end(GROUP).unwrap();
            assert!(stamp.is_some(), "the last entries carry the leader's stamp");
            (b, (term, index))
        })
        .collect();
    let chosen = ends.iter().max_by_key(|(_, end)| *end).unwrap().0;
    let at = cluster.recover_as_sole_voter(chosen, GROUP);
    for &other in backup.iter().filter(|&&b| b != chosen) {
        cluster.node_mut(other).unwrap().drop_replica(GROUP, at).unwrap();
    }
    cluster.set_target(GROUP, Target::voters(backup.iter().copied()));
    let recovered = |c: &SimCluster| {
        c.leader(GROUP)
            .and_then(|l| c.node(l))
            .and_then(|r| r.status(GROUP))
            .is_some_and(|s| s.voters == backup && s.learners.is_empty() && s.voters_outgoing.is_empty())
    };
    assert!(cluster.run_until(20_000, recovered), "the backup nodes never became the group's voters");
    for id in 41..=60 {
        write(&mut cluster, id);
    }
    assert!(cluster.run_until(LIMIT_MS, |c| backup.iter().all(|&b| caught_up(c, b))), "not converged");
    let sequences = cluster.sequences();
    for node in &backup {
        assert_eq!(sequences[node][&GROUP], (1..=60).collect::<Vec<u64>>(), "node {node} lost or repeated writes");
    }
    assert!(cluster.violations().is_empty(), "{:?}", cluster.violations());
}
