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

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use consensus::{GroupId, GroupMessage, NodeId, Transport};
use futures::{SinkExt, StreamExt};
use prost::Message as _;
use raft::eraftpb::{Message as RaftMessageProto, MessageType};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tracing::{debug, info, warn};

use crate::proto::peer::{ForwardReply, ForwardRequest, Frame, Hello, Ping, RaftBatch, RaftMessage, frame};
use crate::runtime::{Input, RaftHandle};

/// Frames queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Largest frame accepted (snapshots travel as one frame for now).
const MAX_FRAME_BYTES: usize = 512 << 20;
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

/// Sending side of the peer network, shared by the Raft thread and the service.
pub struct PeerNetwork {
    node_id: NodeId,
    queues: HashMap<NodeId, mpsc::Sender<Outgoing>>,
    /// Whether the outbound connection to each peer is up, so requests can fail fast
    /// (and go elsewhere) instead of waiting out a timeout on a dead node.
    connected: HashMap<NodeId, Arc<AtomicBool>>,
    /// When each peer last sent us a frame, in milliseconds since `epoch` plus one;
    /// 0 = never heard from.
    heard: HashMap<NodeId, AtomicU64>,
    epoch: Instant,
    /// Injected one-way delay of every outgoing frame, in ms (drills; 0 = off).
    delay_ms: Arc<AtomicU64>,
    raft: RaftHandle,
}

impl PeerNetwork {
    /// Starts a dialer per peer on `runtime`; frames to unknown nodes are dropped.
    /// Outbound connections leave from `local_ip` (this node's peer address), so each
    /// node's traffic is recognisable by address, e.g. for firewall rules.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        node_id: NodeId,
        cluster_id: &str,
        local_ip: IpAddr,
        peers: &[(NodeId, SocketAddr)],
        raft: RaftHandle,
    ) -> Arc<Self> {
        let mut queues = HashMap::new();
        let mut connected = HashMap::new();
        let delay_ms = Arc::new(AtomicU64::new(0));
        for &(peer, address) in peers.iter().filter(|(id, _)| *id != node_id) {
            let (sender, receiver) = mpsc::channel(PEER_QUEUE);
            queues.insert(peer, sender);
            let up = Arc::new(AtomicBool::new(false));
            connected.insert(peer, Arc::clone(&up));
            let dial = Dial { peer, address, local_ip, hello: Hello { cluster_id: cluster_id.to_string(), node_id } };
            runtime.spawn(dial_loop(dial, receiver, raft.clone(), up, Arc::clone(&delay_ms)));
        }
        let heard = queues.keys().map(|&peer| (peer, AtomicU64::new(0))).collect();
        Arc::new(Self { node_id, queues, connected, heard, epoch: Instant::now(), delay_ms, raft })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Whether the connection to `to` is established right now.
    pub fn is_connected(&self, to: NodeId) -> bool {
        self.connected.get(&to).is_some_and(|up| up.load(Ordering::Relaxed))
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
        if let Some(heard) = self.heard.get(&from) {
            heard.store(self.clock_ms(), Ordering::Relaxed);
        }
    }

    /// Whether `to` can be talked to: connected, and heard from recently.
    pub fn is_reachable(&self, to: NodeId) -> bool {
        self.is_connected(to) && !self.is_silent(to)
    }

    /// Heard from once, but not within [`PEER_SILENCE`].
    fn is_silent(&self, peer: NodeId) -> bool {
        let Some(heard) = self.heard.get(&peer).map(|h| h.load(Ordering::Relaxed)) else {
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
        let Some(queue) = self.queues.get(&to) else {
            return false;
        };
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
    fn send(&mut self, to: NodeId, batch: Vec<GroupMessage>) {
        let snapshots =
            batch.iter().filter(|m| m.message.msg_type() == MessageType::MsgSnapshot).map(|m| m.group).collect();
        let messages =
            batch.into_iter().map(|m| RaftMessage { group: m.group, message: m.message.encode_to_vec() }).collect();
        let frame = Frame { body: Some(frame::Body::Raft(RaftBatch { messages })) }.encode_to_vec();
        self.0.enqueue(to, Outgoing::new(frame.into(), snapshots));
    }
}

fn report_snapshots(raft: &RaftHandle, to: NodeId, groups: &[GroupId], delivered: bool) {
    for &group in groups {
        raft.send(Input::SnapshotReport { group, to, delivered });
    }
}

/// Where and as whom a dialer connects.
struct Dial {
    peer: NodeId,
    address: SocketAddr,
    local_ip: IpAddr,
    hello: Hello,
}

/// Keeps one outbound connection to `peer` alive and writes queued frames to it.
async fn dial_loop(
    dial: Dial,
    mut queue: mpsc::Receiver<Outgoing>,
    raft: RaftHandle,
    up: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
) {
    let Dial { peer, address, local_ip, ref hello } = dial;
    let mut backoff = Duration::from_millis(50);
    loop {
        match connect(local_ip, address, hello).await {
            Ok(mut framed) => {
                info!(node = hello.node_id, peer, %address, "connected to peer");
                up.store(true, Ordering::Relaxed);
                backoff = Duration::from_millis(50);
                let mut ping = tokio::time::interval(PING_EVERY);
                ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                // A frame taken from the queue but not due yet (injected delay).
                let mut held: Option<Outgoing> = None;
                loop {
                    // The peer never writes on this connection: a read that returns means it
                    // closed (e.g. the process died), which we want to know at once.
                    let first = match held.take() {
                        Some(first) => first,
                        None => tokio::select! {
                            next = queue.recv() => match next {
                                Some(first) => first,
                                None => return,
                            },
                            _ = ping.tick() => Outgoing::new(ping_frame(), Vec::new()),
                            _ = framed.next() => {
                                warn!(node = hello.node_id, peer, "peer closed the connection; reconnecting");
                                break;
                            }
                        },
                    };
                    let delay = Duration::from_millis(delay_ms.load(Ordering::Relaxed));
                    if !delay.is_zero() {
                        tokio::time::sleep_until((first.queued_at + delay).into()).await;
                    }
                    // Write everything already queued (and due), then flush once.
                    let mut batch = vec![first];
                    while batch.len() < 256 {
                        match queue.try_recv() {
                            Ok(next) if delay.is_zero() || next.queued_at + delay <= Instant::now() => batch.push(next),
                            Ok(next) => {
                                held = Some(next);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let mut failed = false;
                    for outgoing in &batch {
                        if framed.feed(outgoing.frame.clone()).await.is_err() {
                            failed = true;
                            break;
                        }
                    }
                    failed = failed || SinkExt::<Bytes>::flush(&mut framed).await.is_err();
                    for outgoing in &batch {
                        report_snapshots(&raft, peer, &outgoing.snapshots, !failed);
                    }
                    if failed {
                        warn!(node = hello.node_id, peer, "peer connection lost; reconnecting");
                        break;
                    }
                }
                if let Some(stale) = held {
                    report_snapshots(&raft, peer, &stale.snapshots, false);
                }
            }
            Err(e) => debug!(node = hello.node_id, peer, %address, error = %e, "peer unreachable"),
        }
        up.store(false, Ordering::Relaxed);
        // Drop what queued up while disconnected: Raft resends what still matters.
        while let Ok(stale) = queue.try_recv() {
            report_snapshots(&raft, peer, &stale.snapshots, false);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        if queue.is_closed() {
            return;
        }
    }
}

fn ping_frame() -> Bytes {
    Frame { body: Some(frame::Body::Ping(Ping {})) }.encode_to_vec().into()
}

async fn connect(
    local_ip: IpAddr,
    address: SocketAddr,
    hello: &Hello,
) -> std::io::Result<Framed<TcpStream, LengthDelimitedCodec>> {
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if !local_ip.is_unspecified() && local_ip.is_ipv4() == address.is_ipv4() {
        socket.bind(SocketAddr::new(local_ip, 0))?;
    }
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(address)).await??;
    stream.set_nodelay(true)?;
    let mut framed = Framed::new(stream, codec());
    let hello_frame = Frame { body: Some(frame::Body::Hello(hello.clone())) }.encode_to_vec();
    framed.send(Bytes::from(hello_frame)).await?;
    let reply = tokio::time::timeout(CONNECT_TIMEOUT, framed.next()).await?;
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let bytes = reply.ok_or_else(|| invalid("peer closed during handshake".into()))??;
    match Frame::decode(bytes)?.body {
        Some(frame::Body::Hello(theirs)) if theirs.cluster_id == hello.cluster_id => Ok(framed),
        Some(frame::Body::Hello(theirs)) => {
            warn!(node = hello.node_id, %address, their_cluster = %theirs.cluster_id, our_cluster = %hello.cluster_id, "peer belongs to another cluster; not connecting");
            Err(invalid("cluster id mismatch".into()))
        }
        _ => Err(invalid("peer did not answer with Hello".into())),
    }
}

/// Accepts peer connections and hands their frames to the Raft thread and the service.
pub async fn listen(
    listener: TcpListener,
    cluster_id: String,
    network: Arc<PeerNetwork>,
    raft: RaftHandle,
    incoming: mpsc::Sender<Incoming>,
) {
    let node_id = network.node_id();
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(
                    stream,
                    remote,
                    cluster_id.clone(),
                    Arc::clone(&network),
                    raft.clone(),
                    incoming.clone(),
                ));
            }
            Err(e) => {
                warn!(node = node_id, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    cluster_id: String,
    network: Arc<PeerNetwork>,
    raft: RaftHandle,
    incoming: mpsc::Sender<Incoming>,
) {
    let node_id = network.node_id();
    let mut framed = Framed::new(stream, codec());
    let from = match tokio::time::timeout(CONNECT_TIMEOUT, framed.next()).await {
        Ok(Some(Ok(bytes))) => match Frame::decode(bytes) {
            Ok(Frame { body: Some(frame::Body::Hello(hello)) }) => {
                let ours = Frame { body: Some(frame::Body::Hello(Hello { cluster_id: cluster_id.clone(), node_id })) };
                let _ = framed.send(Bytes::from(ours.encode_to_vec())).await;
                if hello.cluster_id != cluster_id {
                    warn!(node = node_id, %remote, their_cluster = %hello.cluster_id, our_cluster = %cluster_id, peer = hello.node_id, "refusing peer of another cluster");
                    return;
                }
                hello.node_id
            }
            _ => {
                warn!(node = node_id, %remote, "peer connection without Hello; closing");
                return;
            }
        },
        _ => return,
    };
    while let Some(Ok(bytes)) = framed.next().await {
        network.heard_from(from);
        let Ok(frame) = Frame::decode(bytes) else {
            warn!(node = node_id, peer = from, "undecodable frame; closing connection");
            return;
        };
        match frame.body {
            Some(frame::Body::Raft(batch)) => {
                let messages: Vec<GroupMessage> = batch
                    .messages
                    .into_iter()
                    .filter_map(|m| {
                        RaftMessageProto::decode(m.message.as_slice())
                            .ok()
                            .map(|message| GroupMessage { group: m.group, message })
                    })
                    .collect();
                if !raft.send(Input::Raft(messages)) {
                    metrics::counter!("ums_peer_frames_dropped_total").increment(1);
                }
            }
            Some(frame::Body::Forward(request)) => {
                let _ = incoming.send(Incoming::Forward { from, request }).await;
            }
            Some(frame::Body::Reply(reply)) => {
                let _ = incoming.send(Incoming::Reply(reply)).await;
            }
            // Pings only update `heard`, above.
            Some(frame::Body::Ping(_)) | Some(frame::Body::Hello(_)) | None => {}
        }
    }
    debug!(node = node_id, peer = from, "peer connection closed");
}
