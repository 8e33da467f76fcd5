//! The sending side of one peer: a dialer that keeps an outbound connection to it (TLS
//! and Hello first), writes queued frames in batches, pings, and reconnects with
//! backoff.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use consensus::NodeId;
use futures::{SinkExt, StreamExt};
use prost::Message as _;
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tracing::{debug, info, warn};

use super::tls::PeerTls;
use super::{CONNECT_TIMEOUT, MAX_BACKOFF, Outgoing, PING_EVERY, PeerStream, RemovedHook, codec, report_snapshots};
use crate::proto::peer::{Frame, Hello, Ping, frame};
use crate::runtime::RaftHandle;

/// Where and as whom a dialer connects.
pub(super) struct Dial {
    pub peer: NodeId,
    pub address: SocketAddr,
    pub local_ip: IpAddr,
    pub hello: Hello,
    /// Mutual TLS with the cluster CA; `None`: plain TCP (a cluster without `[peer_tls]`).
    pub tls: Option<Arc<PeerTls>>,
}

/// How long frames wait before they are written, in ms: an injected one-way delay
/// (drills; every frame waits that long), and the peer's linger (a frame waits that long
/// for the ones after it, written together).
pub(super) struct Waits {
    pub delay_ms: Arc<AtomicU64>,
    pub linger_ms: Arc<AtomicU64>,
}

/// Frames written before one flush.
const MAX_BATCH: usize = 1024;

/// Keeps one outbound connection to `peer` alive and writes queued frames to it.
pub(super) async fn dial_loop(
    dial: Dial,
    mut queue: mpsc::Receiver<Outgoing>,
    raft: RaftHandle,
    up: Arc<AtomicBool>,
    waits: Waits,
    on_removed: RemovedHook,
) {
    let Dial { peer, address, local_ip, ref hello, ref tls } = dial;
    let mut backoff = Duration::from_millis(50);
    loop {
        match connect(local_ip, address, peer, hello, tls.as_deref()).await {
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
                    let delay = Duration::from_millis(waits.delay_ms.load(Ordering::Relaxed));
                    let linger = Duration::from_millis(waits.linger_ms.load(Ordering::Relaxed));
                    let wait = delay.max(linger);
                    if !wait.is_zero() {
                        tokio::time::sleep_until((first.queued_at + wait).into()).await;
                    }
                    // Write everything already queued (and due), then flush once.
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
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
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && e.to_string() == REMOVED => {
                tracing::error!(node = hello.node_id, peer, "node {peer} says this node was removed from the cluster");
                if let Some(act) = on_removed.get() {
                    act();
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

/// The error a dialer gets from a peer that says this node was removed.
const REMOVED: &str = "this node was removed from the cluster";

fn ping_frame() -> Bytes {
    Frame { body: Some(frame::Body::Ping(Ping {})) }.encode_to_vec().into()
}

/// Connects to `peer` at `address` (over TLS, which checks it is `peer`) and exchanges
/// Hellos: the peer must name our cluster and itself.
async fn connect(
    local_ip: IpAddr,
    address: SocketAddr,
    peer: NodeId,
    hello: &Hello,
    tls: Option<&PeerTls>,
) -> std::io::Result<Framed<PeerStream, LengthDelimitedCodec>> {
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if !local_ip.is_unspecified() && local_ip.is_ipv4() == address.is_ipv4() {
        socket.bind(SocketAddr::new(local_ip, 0))?;
    }
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(address)).await??;
    stream.set_nodelay(true)?;
    let stream: PeerStream = match tls {
        Some(tls) => Box::new(tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(stream, peer)).await??),
        None => Box::new(stream),
    };
    let mut framed = Framed::new(stream, codec());
    let hello_frame = Frame { body: Some(frame::Body::Hello(hello.clone())) }.encode_to_vec();
    framed.send(Bytes::from(hello_frame)).await?;
    let reply = tokio::time::timeout(CONNECT_TIMEOUT, framed.next()).await?;
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let bytes = reply.ok_or_else(|| invalid("peer closed during handshake".into()))??;
    match Frame::decode(bytes)?.body {
        Some(frame::Body::Hello(theirs)) if theirs.removed && theirs.cluster_id == hello.cluster_id => {
            Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, REMOVED))
        }
        Some(frame::Body::Hello(theirs)) if theirs.cluster_id == hello.cluster_id && theirs.node_id == peer => {
            Ok(framed)
        }
        Some(frame::Body::Hello(theirs)) => {
            warn!(node = hello.node_id, peer, %address, their_cluster = %theirs.cluster_id, their_node = theirs.node_id, our_cluster = %hello.cluster_id, "the peer at this address is another cluster's or another node; not connecting");
            Err(invalid("cluster or node id mismatch".into()))
        }
        _ => Err(invalid("peer did not answer with Hello".into())),
    }
}
