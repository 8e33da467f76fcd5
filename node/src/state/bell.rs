//! Rings when a shard's outbound queue changes, so its queue actor looks only then (and
//! when a retry falls due) instead of polling every shard: idle shards cost nothing, and
//! their Raft groups quiesce.
//!
//! The state machine notes the shards whose queue an entry changed while it applies,
//! and rings them once the applied batch is written, so a scan after a ring sees the
//! change. Each ring bumps the shard's generation (a scan remembers the one it started
//! from, so a ring during a scan is never missed) and calls the listener, which wakes
//! the shard's actor.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use consensus::GroupId;

/// Called with the shards of each ring (on the Raft thread: it must not block).
pub type Listener = Box<dyn Fn(Vec<GroupId>) + Send + Sync>;

/// Per shard, how many applied batches changed its outbound queue.
#[derive(Default)]
pub struct OutboundBell {
    rings: Mutex<HashMap<GroupId, u64>>,
    listener: OnceLock<Listener>,
}

impl std::fmt::Debug for OutboundBell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundBell").field("rings", &self.rings).finish_non_exhaustive()
    }
}

impl OutboundBell {
    /// Sets who hears the rings (once; rings before that only bump generations, and a
    /// queue actor scans when it starts anyway).
    pub fn listen(&self, listener: Listener) {
        if self.listener.set(listener).is_err() {
            tracing::warn!("the outbound bell already has a listener");
        }
    }

    /// Marks the queues of `shards` changed.
    pub fn ring(&self, shards: impl IntoIterator<Item = GroupId>) {
        let shards: Vec<GroupId> = shards.into_iter().collect();
        if shards.is_empty() {
            return;
        }
        {
            let mut rings = self.rings.lock().expect("bell");
            for &shard in &shards {
                *rings.entry(shard).or_insert(0) += 1;
            }
        }
        if let Some(listener) = self.listener.get() {
            listener(shards);
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
    use std::sync::Arc;

    #[test]
    fn a_ring_changes_only_the_rung_shards_generation_and_tells_the_listener() {
        let bell = OutboundBell::default();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let (one, two) = (bell.generation(1), bell.generation(2));
        bell.ring([1]);
        let log = Arc::clone(&heard);
        bell.listen(Box::new(move |shards| log.lock().unwrap().push(shards)));
        bell.ring([1, 3]);
        bell.ring([]);
        assert_ne!(bell.generation(1), one);
        assert_eq!(bell.generation(2), two);
        assert_eq!(*heard.lock().unwrap(), [vec![1, 3]], "rings before listening and empty rings are not heard");
    }
}
