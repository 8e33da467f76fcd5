//! Rings when a shard's outbound queue changes, so its queue actor looks only then (and
//! when a retry falls due) instead of polling every shard with a quorum read: idle
//! shards stay quiet, and their Raft groups quiesce.
//!
//! The state machine notes the shards whose queue an entry changed while it applies,
//! and rings them once the applied batch is written, so a scan after a ring sees the
//! change.

use std::collections::HashMap;
use std::sync::Mutex;

use consensus::GroupId;

/// Per shard, how many applied batches changed its outbound queue.
#[derive(Debug, Default)]
pub struct OutboundBell {
    rings: Mutex<HashMap<GroupId, u64>>,
}

impl OutboundBell {
    /// Marks the queues of `shards` changed.
    pub fn ring(&self, shards: impl IntoIterator<Item = GroupId>) {
        let mut rings = self.rings.lock().expect("bell");
        for shard in shards {
            *rings.entry(shard).or_insert(0) += 1;
        }
    }

    /// A number that changes whenever `shard`'s queue does.
    pub fn generation(&self, shard: GroupId) -> u64 {
        self.rings.lock().expect("bell").get(&shard).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_changes_only_the_rung_shards_generation() {
        let bell = OutboundBell::default();
        let (one, two) = (bell.generation(1), bell.generation(2));
        bell.ring([1]);
        assert_ne!(bell.generation(1), one);
        assert_eq!(bell.generation(2), two);
    }
}
