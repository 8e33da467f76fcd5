//! Key encoding. Every key starts with the 8-byte big-endian group id, so one group's
//! records form a contiguous, ordered range in each column family; log keys then carry
//! the 8-byte big-endian entry index so entries sort by index.

use crate::GroupId;

/// Suffix tags of the per-group records in [`crate::Cf::RaftState`].
const HARD_STATE: u8 = 0x01;
const TRUNCATED_STATE: u8 = 0x02;
const APPLY_STATE: u8 = 0x03;
const TOMBSTONE: u8 = 0x04;

/// Key of log entry `index` of `group` in [`crate::Cf::RaftLog`].
pub fn log_key(group: GroupId, index: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&group.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

/// Decodes the entry index from a [`log_key`].
///
/// # Panics
/// Panics if `key` is not 16 bytes long, which would mean a foreign key in the log family.
pub fn log_index(key: &[u8]) -> u64 {
    assert_eq!(key.len(), 16, "raft log key of unexpected length: {key:?}");
    u64::from_be_bytes(key[8..].try_into().expect("8 bytes"))
}

pub fn hard_state_key(group: GroupId) -> [u8; 9] {
    state_key(group, HARD_STATE)
}

pub fn truncated_state_key(group: GroupId) -> [u8; 9] {
    state_key(group, TRUNCATED_STATE)
}

pub fn apply_state_key(group: GroupId) -> [u8; 9] {
    state_key(group, APPLY_STATE)
}

/// Marks a group removed from this node, so stale messages do not recreate it.
pub fn tombstone_key(group: GroupId) -> [u8; 9] {
    state_key(group, TOMBSTONE)
}

/// The group of a [`hard_state_key`], or `None` for any other record: used to list
/// the groups a node hosts.
pub fn group_of_hard_state_key(key: &[u8]) -> Option<GroupId> {
    (key.len() == 9 && key[8] == HARD_STATE).then(|| u64::from_be_bytes(key[..8].try_into().expect("8 bytes")))
}

fn state_key(group: GroupId, tag: u8) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[..8].copy_from_slice(&group.to_be_bytes());
    key[8] = tag;
    key
}

/// Prefixes a state-machine key with its group, for [`crate::Cf::Data`] and [`crate::Cf::Blobs`].
pub fn data_key(group: GroupId, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&group.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The half-open key range `[start, end)` holding every key of `group` in any family.
///
/// # Panics
/// Panics for `u64::MAX`, which is reserved: its range would have no finite end.
pub fn group_range(group: GroupId) -> (Vec<u8>, Vec<u8>) {
    let next = group.checked_add(1).expect("group id u64::MAX is reserved");
    (group.to_be_bytes().to_vec(), next.to_be_bytes().to_vec())
}

/// The smallest key strictly greater than `key` (used to resume a scan after it).
pub fn next_key(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_group_then_index() {
        let keys = [log_key(1, 2), log_key(1, 256), log_key(2, 1), log_key(0, u64::MAX)];
        let mut sorted = keys;
        sorted.sort();
        assert_eq!(sorted, [log_key(0, u64::MAX), log_key(1, 2), log_key(1, 256), log_key(2, 1)]);
        assert_eq!(log_index(&log_key(7, 99)), 99);
    }

    #[test]
    fn group_range_contains_only_that_group() {
        let (start, end) = group_range(5);
        for key in [data_key(5, b""), data_key(5, b"\xff\xff"), log_key(5, u64::MAX).to_vec()] {
            assert!(key.as_slice() >= start.as_slice() && key.as_slice() < end.as_slice());
        }
        for key in [data_key(4, b"\xff"), data_key(6, b"")] {
            assert!(!(key.as_slice() >= start.as_slice() && key.as_slice() < end.as_slice()));
        }
    }
}
