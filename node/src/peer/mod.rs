//! The peer transport: one TCP connection per ordered pair of nodes, carrying
//! length-delimited protobuf [`Frame`]s.
//!
//! Each node dials every other node and only *writes* on that connection (after a
//! Hello exchange that checks the cluster id); it *reads* on the connections others
//! dialled to it. So a reply to a forwarded request travels on the replier's own
//! outbound connection. Outbound frames wait in a bounded per-peer queue; when it is
//! full or the peer is down they are dropped, which Raft tolerates (it retransmits),
//! and lost snapshots are reported so the leader retries them.
//!
//! A connection can look up while nothing crosses it (a partition that drops packets),
//! so every dialer also sends a Ping a few times a second and reachability asks when the
//! peer was last heard from; a node that has lost touch with the majority knows it is
//! cut off and says so instead of making clients wait.
//!
//! With `[peer_tls]` every connection is mutual TLS 1.3 with the cluster CA, and a node
//! is known by its certificate ([`tls`]); either way only members get past the Hello
//! ([`handshake`]). Files: [`dial`] (sending), [`serve`] (receiving).

mod chunks;
mod dial;
mod handshake;
mod serve;
pub mod tls;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use consensus::{GroupId, GroupMessage, NodeId, Transport};
use prost::Message as _;
use raft::eraftpb::MessageType;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::LengthDelimitedCodec;

use crate::proto::peer::{ForwardReply, ForwardRequest, Frame, Hello, RaftBatch, RaftMessage, frame};
use crate::runtime::{Input, RaftHandle};
pub use serve::{Listener, listen};
use tls::PeerTls;

/// A peer connection, plain TCP or TLS.
trait PeerIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> PeerIo for T {}
type PeerStream = Box<dyn PeerIo>;

/// Frames queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Largest frame accepted from an admitted member: one Raft message with the largest
/// entry (a 48 MiB HTTP append), or a forwarded request as big; snapshots travel in
/// [`chunks`] and batches are cut at [`BATCH_TARGET_BYTES`]. Before its Hello a
/// connection gets [`serve::HELLO_FRAME_BYTES`].
const MAX_FRAME_BYTES: usize = 64 << 20;
/// A round's Raft messages to one peer go in frames of about this size (a message
/// bigger than this goes alone).
const BATCH_TARGET_BYTES: usize = 8 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often a dialer pings its peer.
const PING_EVERY: Duration = Duration::from_millis(250);
/// A peer heard from before but not for this long counts as unreachable: six missed
/// pings, so a busy machine does not cut its own cluster apart.
const PEER_SILENCE: Duration = Duration::from_millis(1500);

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME_BYTES).new_codec()
}

/// A frame on its way to a peer, with the snapshots it carries (to report their fate).
struct Outgoing {
    frame: Bytes,
    snapshots: Vec<GroupId>,
    /// When it was queued (an injected network delay counts from here).
    queued_at: Instant,
}

impl Outgoing {
    fn new(frame: Bytes, snapshots: Vec<GroupId>) -> Self {
        Self { frame, snapshots, queued_at: Instant::now() }
    }
}

/// Forwarded requests and replies that arrived from peers, for the service.
pub enum Incoming {
    Forward { from: NodeId, request: ForwardRequest },
    Reply(ForwardReply),
}

/// One peer as the sending side knows it.
struct Peer {
    address: SocketAddr,
    /// Its dialer's queue; dropping the last sender ends the dialer.
    queue: mpsc::Sender<Outgoing>,
    /// Whether the outbound connection is up, so requests can fail fast (and go
    /// elsewhere) instead of waiting out a timeout on a dead node.
    connected: Arc<AtomicBool>,
    /// When it last sent us a frame, in milliseconds since `epoch` plus one; 0 = never.
    heard: AtomicU64,
    /// How long its dialer lets a frame wait for the next ones, in ms (0 = not at all).
    linger_ms: Arc<AtomicU64>,
}

/// A member of the cluster as the peer network needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerMember {
    pub id: NodeId,
    pub address: SocketAddr,
    /// Removed from the cluster: never dialled, and told so (then refused) when it calls.
    pub removed: bool,
    /// A backup-site node: frames to it linger (see [`BACKUP_LINGER`]).
    pub backup: bool,
}

/// How long a frame to a backup-site node waits for the frames that follow it, so they
/// go out together: a backup node holds a learner of every group, and receiving a
/// round's appends of many groups at once costs it one Raft round (one fsync, one apply
/// batch) instead of one per round of every leader. No commit waits for a learner; its
/// recovery point grows by at most this much.
pub const BACKUP_LINGER: Duration = Duration::from_millis(20);

/// What every dialer is started with.
struct DialSetup {
    runtime: tokio::runtime::Handle,
    cluster_id: String,
    local_ip: IpAddr,
    tls: Option<Arc<PeerTls>>,
}

/// Sending side of the peer network, shared by the Raft thread and the service. The
/// members change while it runs ([`PeerNetwork::set_members`]): a new node gets a
/// dialer, a removed one loses it.
pub struct PeerNetwork {
    node_id: NodeId,
    peers: RwLock<HashMap<NodeId, Arc<Peer>>>,
    /// Who may connect: member id → removed.
    admitted: RwLock<HashMap<NodeId, bool>>,
    dialing: DialSetup,
    epoch: Instant,
    /// Injected one-way delay of every outgoing frame, in ms (drills; 0 = off).
    delay_ms: Arc<AtomicU64>,
    raft: RaftHandle,
    /// Called when a peer says this node was removed from the cluster.
    on_removed: RemovedHook,
}

/// What to run when a peer says this node was removed; shared with the dialers.
type RemovedHook = Arc<OnceLock<Box<dyn Fn() + Send + Sync>>>;

impl PeerNetwork {
    /// Starts a dialer per member on `runtime`; frames to unknown nodes are dropped.
    /// Outbound connections leave from `local_ip` (this node's peer address), so each
    /// node's traffic is recognisable by address, e.g. for firewall rules.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        node_id: NodeId,
        cluster_id: &str,
        local_ip: IpAddr,
        members: &[PeerMember],
        tls: Option<Arc<PeerTls>>,
        raft: RaftHandle,
    ) -> Arc<Self> {
        let dialing = DialSetup { runtime: runtime.clone(), cluster_id: cluster_id.to_string(), local_ip, tls };
        let network = Arc::new(Self {
            node_id,
            peers: RwLock::new(HashMap::new()),
            admitted: RwLock::new(HashMap::new()),
            dialing,
            epoch: Instant::now(),
            delay_ms: Arc::new(AtomicU64::new(0)),
            raft,
            on_removed: Arc::new(OnceLock::new()),
        });
        network.set_members(members);
        network
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Makes `members` the cluster: dialers for new ones (an address change restarts
    /// the dialer), none for removed or vanished ones.
    pub fn set_members(&self, members: &[PeerMember]) {
        *self.admitted.write().expect("admitted") = members.iter().map(|m| (m.id, m.removed)).collect();
        let mut peers = self.peers.write().expect("peers");
        peers.retain(|id, peer| members.iter().any(|m| m.id == *id && !m.removed && m.address == peer.address));
        for member in members.iter().filter(|m| !m.removed && m.id != self.node_id) {
            let linger_ms = if member.backup { BACKUP_LINGER.as_millis() as u64 } else { 0 };
            if let Some(peer) = peers.get(&member.id) {
                // A switchover swaps which nodes are the backup site.
                peer.linger_ms.store(linger_ms, Ordering::Relaxed);
                continue;
            }
            let linger = Arc::new(AtomicU64::new(linger_ms));
            let (queue, receiver) = mpsc::channel(PEER_QUEUE);
            let connected = Arc::new(AtomicBool::new(false));
            let hello = Hello { cluster_id: self.dialing.cluster_id.clone(), node_id: self.node_id, removed: false };
            let dial = dial::Dial {
                peer: member.id,
                address: member.address,
                local_ip: self.dialing.local_ip,
                hello,
                tls: self.dialing.tls.clone(),
            };
            let up = Arc::clone(&connected);
            let delay = Arc::clone(&self.delay_ms);
            let removed = Arc::clone(&self.on_removed);
            let waits = dial::Waits { delay_ms: delay, linger_ms: Arc::clone(&linger) };
            self.dialing.runtime.spawn(dial::dial_loop(dial, receiver, self.raft.clone(), up, waits, removed));
            let peer = Peer { address: member.address, queue, connected, heard: AtomicU64::new(0), linger_ms: linger };
            peers.insert(member.id, Arc::new(peer));
        }
    }

    /// Whether `node` may connect: `Some(false)` a member, `Some(true)` a removed one.
    pub fn admission(&self, node: NodeId) -> Option<bool> {
        self.admitted.read().expect("admitted").get(&node).copied()
    }

    /// What to do when a peer says this node was removed (set once, at start).
    pub fn on_removed(&self, act: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_removed.set(act);
    }

    fn peer(&self, id: NodeId) -> Option<Arc<Peer>> {
        self.peers.read().expect("peers").get(&id).cloned()
    }

    /// Whether the connection to `to` is established right now.
    pub fn is_connected(&self, to: NodeId) -> bool {
        self.peer(to).is_some_and(|peer| peer.connected.load(Ordering::Relaxed))
    }

    /// Delays every frame sent from now on by `delay` (drills; zero turns it off).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms.load(Ordering::Relaxed))
    }

    /// Now, on the clock of `heard` (never 0, which means "never heard from").
    fn clock_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn heard_from(&self, from: NodeId) {
        if let Some(peer) = self.peer(from) {
            peer.heard.store(self.clock_ms(), Ordering::Relaxed);
        }
    }

    /// Whether `to` can be talked to: connected, and heard from recently.
    pub fn is_reachable(&self, to: NodeId) -> bool {
        self.is_connected(to) && !self.is_silent(to)
    }

    /// Heard from once, but not within [`PEER_SILENCE`].
    fn is_silent(&self, peer: NodeId) -> bool {
        let Some(heard) = self.peer(peer).map(|p| p.heard.load(Ordering::Relaxed)) else {
            return true;
        };
        heard != 0 && self.clock_ms().saturating_sub(heard) >= PEER_SILENCE.as_millis() as u64
    }

    /// True when this node has lost touch with a majority of `replicas` (a shard's
    /// members, maybe including this node): nothing it is asked to write to that shard
    /// can commit until the network heals. Only silence counts as evidence: a peer never
    /// heard from yet (the cluster is starting) or one still talking while our own
    /// connection to it is being re-dialled is not held against it, so start-up and
    /// restarts keep waiting for leaders.
    pub fn is_cut_off_from(&self, replicas: &[NodeId]) -> bool {
        let in_touch = replicas.iter().filter(|&&node| node == self.node_id || !self.is_silent(node)).count();
        in_touch <= replicas.len() / 2
    }

    /// Queues `frame` for `to`; false if it was dropped.
    pub fn send_frame(&self, to: NodeId, body: frame::Body) -> bool {
        let frame = Frame { body: Some(body) }.encode_to_vec();
        self.enqueue(to, Outgoing::new(frame.into(), Vec::new()))
    }

    fn enqueue(&self, to: NodeId, outgoing: Outgoing) -> bool {
        let Some(peer) = self.peer(to) else {
            return false;
        };
        let queue = &peer.queue;
        metrics::gauge!("ums_peer_queue_depth", "peer" => to.to_string()).set((PEER_QUEUE - queue.capacity()) as f64);
        match queue.try_send(outgoing) {
            Ok(()) => true,
            Err(e) => {
                metrics::counter!("ums_peer_frames_dropped_total").increment(1);
                let outgoing = match e {
                    mpsc::error::TrySendError::Full(o) | mpsc::error::TrySendError::Closed(o) => o,
                };
                report_snapshots(&self.raft, to, &outgoing.snapshots, false);
                false
            }
        }
    }
}

/// The Raft thread's view of the network.
pub struct PeerTransport(pub Arc<PeerNetwork>);

impl Transport for PeerTransport {
    fn is_reachable(&self, to: NodeId) -> bool {
        self.0.is_reachable(to)
    }

    fn send(&mut self, to: NodeId, batch: Vec<GroupMessage>) {
        let mut messages = Vec::with_capacity(batch.len());
        for GroupMessage { group, mut message } in batch {
            let is_snapshot = message.msg_type() == MessageType::MsgSnapshot;
            let (pieces, chunked_snapshot_bytes) = chunks::split(group, &mut message, chunks::CHUNK_BYTES);
            for piece in pieces {
                metrics::counter!("ums_peer_snapshot_chunks_sent_total").increment(1);
                // A piece dropped here makes the receiver refuse the snapshot; the leader
                // then finds the follower still behind and sends it again.
                self.0.send_frame(to, frame::Body::SnapshotChunk(piece));
            }
            let encoded = RaftMessage { group, message: message.encode_to_vec(), chunked_snapshot_bytes };
            messages.push((encoded, is_snapshot.then_some(group)));
        }
        for frame_messages in batches(messages, BATCH_TARGET_BYTES) {
            let snapshots = frame_messages.iter().filter_map(|(_, snapshot)| *snapshot).collect();
            let messages = frame_messages.into_iter().map(|(message, _)| message).collect();
            let frame = Frame { body: Some(frame::Body::Raft(RaftBatch { messages })) }.encode_to_vec();
            self.0.enqueue(to, Outgoing::new(frame.into(), snapshots));
        }
    }
}

/// Pure: `messages` in order, cut into runs of about `target` encoded bytes (a message
/// bigger than that is a run of its own).
fn batches<T>(messages: Vec<(RaftMessage, T)>, target: usize) -> Vec<Vec<(RaftMessage, T)>> {
    let mut runs: Vec<Vec<(RaftMessage, T)>> = Vec::new();
    let mut size = 0;
    for entry in messages {
        let bytes = entry.0.message.len() + 16;
        if runs.is_empty() || (size + bytes > target && !runs.last().is_some_and(Vec::is_empty)) {
            runs.push(Vec::new());
            size = 0;
        }
        size += bytes;
        runs.last_mut().expect("a run").push(entry);
    }
    runs
}

fn report_snapshots(raft: &RaftHandle, to: NodeId, groups: &[GroupId], delivered: bool) {
    for &group in groups {
        raft.send(Input::SnapshotReport { group, to, delivered });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_is_cut_into_frames_of_about_the_target_and_a_big_message_goes_alone() {
        let message = |bytes: usize| (RaftMessage { group: 1, message: vec![0; bytes], chunked_snapshot_bytes: 0 }, ());
        let sizes = |runs: &[Vec<(RaftMessage, ())>]| -> Vec<usize> { runs.iter().map(Vec::len).collect() };
        assert!(batches::<()>(Vec::new(), 100).is_empty());
        assert_eq!(sizes(&batches(vec![message(10), message(10), message(10)], 100)), [3]);
        assert_eq!(sizes(&batches(vec![message(40), message(40), message(40)], 100)), [1, 1, 1]);
        assert_eq!(sizes(&batches(vec![message(10), message(500), message(10)], 100)), [1, 1, 1]);
        assert_eq!(sizes(&batches(vec![message(500)], 100)), [1]);
    }
}
