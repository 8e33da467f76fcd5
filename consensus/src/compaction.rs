//! When to compact a group's log (pure policy; [`crate::MultiRaft`] carries it out).
//!
//! Normally the leader decides, as TiKV does: once every member holds enough entries
//! beyond the log's start, it proposes compacting up to what all of them hold. The
//! request travels through the log, so every replica compacts at the same point and no
//! member ever needs a snapshot for entries the others still had. Compacting this often
//! keeps each log to a few hundred entries, which RocksDB deletes while they are still
//! in its memtable instead of flushing them to files and compacting those. A node with
//! many busy groups compacts each after fewer entries ([`compact_every`]): a thousand
//! logs of 256 entries of 1 KB would fill the memtable eight times over.
//!
//! When a member is down or far behind, the leader does not compact for it, but only
//! up to a limit: past `compact_threshold` applied entries, the log is compacted anyway
//! (keeping `compact_keep`), and that member catches up by snapshot. Each replica
//! applies the same limit on its own, should no leader compact for a long time.

use crate::config::RaftConfig;

/// A group's log position as the policy sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LogPosition {
    /// Index of the last compacted entry (the log starts after it).
    pub(crate) truncated: u64,
    /// Index of the last applied entry here.
    pub(crate) applied: u64,
}

/// Fewest entries a leader compacts at once however many groups are busy (each
/// compaction is an entry of its own).
const MIN_COMPACT_EVERY: u64 = 16;

/// Entries after which a leader compacts its group's log when `awake_groups` groups are
/// awake on this node: `compact_every`, or the node's `compact_log_budget` shared
/// between them when that is less (but at least [`MIN_COMPACT_EVERY`]).
pub(crate) fn compact_every(config: &RaftConfig, awake_groups: usize) -> u64 {
    let share = config.compact_log_budget / awake_groups.max(1) as u64;
    share.max(MIN_COMPACT_EVERY).min(config.compact_every)
}

/// The index a leader should propose compacting to, if any, once `every` entries are
/// everywhere ([`compact_every`]). `replicated` is the lowest index every member
/// (voters and learners) is known to hold; `proposed` the highest index this leader
/// already proposed.
pub(crate) fn leader_proposal(
    config: &RaftConfig,
    every: u64,
    log: LogPosition,
    replicated: u64,
    proposed: u64,
) -> Option<u64> {
    let start = log.truncated.max(proposed);
    let everywhere = replicated.min(log.applied);
    if everywhere >= start + every {
        return Some(everywhere);
    }
    // Forced compaction counts from what was already proposed, so the leader asks once
    // per threshold rather than on every tick as the log grows.
    forced_target(config, LogPosition { truncated: start, ..log }).filter(|&target| target > start)
}

/// The index this replica compacts to after an apply round, if any: what the leader
/// asked for (never beyond what is applied here), or the forced limit.
pub(crate) fn replica_target(config: &RaftConfig, log: LogPosition, requested: u64) -> Option<u64> {
    let requested = requested.min(log.applied);
    let target = requested.max(forced_target(config, log).unwrap_or(0));
    (target > log.truncated).then_some(target)
}

/// Compaction regardless of lagging members, once the log holds too many entries.
fn forced_target(config: &RaftConfig, log: LogPosition) -> Option<u64> {
    (log.applied >= log.truncated + config.compact_threshold).then(|| log.applied.saturating_sub(config.compact_keep))
}

/// Whether dedup records should be collected with a compaction from `from` to `to`:
/// the scan reads the group's whole dedup table, so it runs when the log start passes
/// a multiple of `compact_threshold`, not on every compaction. Stateless, so a restart
/// does not rescan every group at once, and replicas compacting at the same indexes
/// (the leader's requests) collect at the same points.
pub(crate) fn collect_dedup_now(config: &RaftConfig, from: u64, to: u64) -> bool {
    let every = config.compact_threshold.max(1);
    to / every > from / every
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RaftConfig {
        RaftConfig { compact_every: 100, compact_threshold: 1_000, compact_keep: 50, ..RaftConfig::default() }
    }

    fn at(truncated: u64, applied: u64) -> LogPosition {
        LogPosition { truncated, applied }
    }

    #[test]
    fn leader_compacts_to_what_every_member_holds_once_enough_is_there() {
        let config = config();
        let every = config.compact_every;
        assert_eq!(leader_proposal(&config, every, at(0, 99), 99, 0), None, "not enough yet");
        assert_eq!(leader_proposal(&config, every, at(0, 150), 130, 0), Some(130), "up to the slowest member");
        assert_eq!(leader_proposal(&config, every, at(0, 120), 400, 0), Some(120), "never beyond what is applied here");
        assert_eq!(leader_proposal(&config, every, at(0, 180), 180, 130), None, "the last proposal is on its way");
        assert_eq!(leader_proposal(&config, every, at(130, 240), 240, 130), Some(240));
        assert_eq!(leader_proposal(&config, 20, at(0, 20), 20, 0), Some(20), "sooner when many groups are busy");
    }

    #[test]
    fn many_busy_groups_share_the_log_budget_but_compact_at_least_a_few_entries_at_once() {
        let config = RaftConfig { compact_every: 256, compact_log_budget: 16_384, ..RaftConfig::default() };
        assert_eq!(compact_every(&config, 0), 256);
        assert_eq!(compact_every(&config, 64), 256);
        assert_eq!(compact_every(&config, 128), 128);
        assert_eq!(compact_every(&config, 1_025), 16);
        assert_eq!(compact_every(&config, 100_000), 16);
        let small = RaftConfig { compact_every: 8, ..config };
        assert_eq!(compact_every(&small, 1_025), 8, "never more than compact_every");
    }

    #[test]
    fn a_member_far_behind_holds_compaction_back_only_up_to_the_threshold() {
        let config = config();
        let every = config.compact_every;
        assert_eq!(leader_proposal(&config, every, at(0, 999), 10, 0), None, "member at 10 catches up from the log");
        assert_eq!(leader_proposal(&config, every, at(0, 1_000), 10, 0), Some(950), "now it will need a snapshot");
        assert_eq!(leader_proposal(&config, every, at(0, 1_010), 10, 950), None, "already proposed");
    }

    #[test]
    fn replicas_compact_as_asked_but_never_past_their_own_apply() {
        let config = config();
        assert_eq!(replica_target(&config, at(0, 500), 300), Some(300));
        assert_eq!(replica_target(&config, at(0, 200), 300), Some(200), "behind the request: up to what is applied");
        assert_eq!(replica_target(&config, at(300, 500), 300), None, "done already");
        assert_eq!(replica_target(&config, at(0, 1_200), 0), Some(1_150), "no leader asked, the log is too long");
    }

    #[test]
    fn dedup_records_are_collected_once_per_threshold() {
        let config = config();
        assert!(!collect_dedup_now(&config, 0, 999));
        assert!(collect_dedup_now(&config, 990, 1_000));
        assert!(!collect_dedup_now(&config, 1_000, 1_500));
        assert!(collect_dedup_now(&config, 1_500, 3_700), "one scan however far the start moved");
    }
}
