//! Pure: snapshots in pieces, so that a peer frame stays small ([`super::MAX_FRAME_BYTES`])
//! however big a shard grows. The sender takes a snapshot's data out of its Raft message
//! and sends it ahead in chunks; the receiver puts the pieces back together, in order,
//! per group and connection, and hands Raft the message only when every byte arrived.

use std::collections::HashMap;

use consensus::GroupId;
use raft::eraftpb::Message as RaftMessage;

use crate::proto::peer::SnapshotChunk;

/// Bytes of snapshot data per chunk frame.
pub const CHUNK_BYTES: usize = 4 << 20;
/// Snapshot bytes one connection may hold while they arrive, over all groups (a member
/// cannot make the node hold more).
pub const MAX_PENDING_BYTES: usize = 8 << 30;

/// Takes the snapshot data out of `message` when it is bigger than `chunk` bytes: the
/// chunks to send before it, and its length (0 and no chunks when it fits one frame).
pub fn split(group: GroupId, message: &mut RaftMessage, chunk: usize) -> (Vec<SnapshotChunk>, u64) {
    let Some(snapshot) = message.snapshot.as_mut().filter(|s| s.data.len() > chunk) else {
        return (Vec::new(), 0);
    };
    let data = std::mem::take(&mut snapshot.data);
    let chunks = data
        .chunks(chunk)
        .enumerate()
        .map(|(n, piece)| SnapshotChunk { group, offset: (n * chunk) as u64, data: piece.to_vec() })
        .collect();
    (chunks, data.len() as u64)
}

/// The snapshot data arriving on one connection, per group.
#[derive(Default)]
pub struct Reassembly {
    pending: HashMap<GroupId, Vec<u8>>,
    held: usize,
}

impl Reassembly {
    /// Adds the next piece. A piece out of order (one was lost) or over the limit drops
    /// what the group had; the snapshot then fails and the leader sends it again.
    pub fn add(&mut self, chunk: SnapshotChunk) -> Result<(), String> {
        let pending = self.pending.entry(chunk.group).or_default();
        if chunk.offset != pending.len() as u64 {
            let had = pending.len();
            self.drop_group(chunk.group);
            return Err(format!("snapshot piece at {} after {had} bytes", chunk.offset));
        }
        if self.held + chunk.data.len() > MAX_PENDING_BYTES {
            self.drop_group(chunk.group);
            return Err(format!("snapshot over {MAX_PENDING_BYTES} bytes"));
        }
        self.held += chunk.data.len();
        pending.extend_from_slice(&chunk.data);
        Ok(())
    }

    /// Puts the group's pieces back into `message`, which announced `bytes` of them;
    /// false (and nothing kept) when they are not all there.
    pub fn complete(&mut self, group: GroupId, message: &mut RaftMessage, bytes: u64) -> bool {
        let data = self.drop_group(group).unwrap_or_default();
        match message.snapshot.as_mut() {
            Some(snapshot) if data.len() as u64 == bytes => {
                snapshot.data = data;
                true
            }
            _ => false,
        }
    }

    fn drop_group(&mut self, group: GroupId) -> Option<Vec<u8>> {
        let data = self.pending.remove(&group)?;
        self.held -= data.len();
        Some(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{MessageType, Snapshot};

    fn snapshot_message(bytes: usize) -> RaftMessage {
        let data = (0..bytes).map(|i| (i % 251) as u8).collect();
        let mut message = RaftMessage { snapshot: Some(Snapshot { data, ..Default::default() }), ..Default::default() };
        message.set_msg_type(MessageType::MsgSnapshot);
        message
    }

    #[test]
    fn a_big_snapshot_travels_in_pieces_and_comes_back_whole() {
        let original = snapshot_message(10_000);
        let mut sent = original.clone();
        let (chunks, bytes) = split(7, &mut sent, 4_096);
        assert_eq!((chunks.len(), bytes), (3, 10_000));
        assert!(sent.snapshot.as_ref().unwrap().data.is_empty(), "the data left the message");
        let mut reassembly = Reassembly::default();
        for chunk in chunks {
            reassembly.add(chunk).unwrap();
        }
        assert!(reassembly.complete(7, &mut sent, bytes));
        assert_eq!(sent, original);
        assert_eq!(reassembly.held, 0);
        // A snapshot that fits one frame is left alone.
        let mut small = snapshot_message(100);
        assert_eq!(split(7, &mut small, 4_096), (Vec::new(), 0));
        assert_eq!(small.snapshot.unwrap().data.len(), 100);
    }

    #[test]
    fn a_lost_piece_fails_the_snapshot_instead_of_applying_part_of_it() {
        let mut sent = snapshot_message(10_000);
        let (mut chunks, bytes) = split(7, &mut sent, 4_096);
        let mut reassembly = Reassembly::default();
        reassembly.add(chunks.remove(0)).unwrap();
        assert!(reassembly.add(chunks.remove(1)).is_err(), "a gap is noticed");
        assert!(!reassembly.complete(7, &mut sent, bytes));
        // Pieces of the last chunk missing at the end: refused too.
        let mut again = snapshot_message(10_000);
        let (chunks, bytes) = split(7, &mut again, 4_096);
        for chunk in chunks.into_iter().take(2) {
            reassembly.add(chunk).unwrap();
        }
        assert!(!reassembly.complete(7, &mut again, bytes));
        assert_eq!(reassembly.held, 0, "nothing kept of a failed snapshot");
    }
}
