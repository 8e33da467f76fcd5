//! The receiving side: accepts peer connections (at most [`MAX_INBOUND`] at once),
//! completes TLS and the Hello within [`CONNECT_TIMEOUT`], with frames of at most
//! [`HELLO_FRAME_BYTES`] until then, admits only members holding their own certificate
//! ([`handshake::admit`]) before saying anything itself, and hands their frames to the
//! Raft thread and the service. A connection silent for [`PEER_IDLE`] is closed (a
//! dialer pings four times a second).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use consensus::{GroupMessage, NodeId};
use futures::{SinkExt, StreamExt};
use prost::Message as _;
use raft::eraftpb::Message as RaftMessageProto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tracing::{debug, warn};

use super::tls::PeerTls;
use super::{CONNECT_TIMEOUT, Incoming, MAX_FRAME_BYTES, PeerNetwork, PeerStream, chunks, codec, handshake};
use crate::proto::peer::{Frame, Hello, frame};
use crate::runtime::{Input, RaftHandle};

/// Inbound peer connections held at once: a member dials each node once (and again
/// after a failure), so this leaves room for reconnects and none for a flood.
pub const MAX_INBOUND: usize = 64;
/// The largest frame before the Hello is accepted.
pub const HELLO_FRAME_BYTES: usize = 4 << 10;
/// An inbound connection that carries nothing for this long is closed.
pub const PEER_IDLE: Duration = Duration::from_secs(30);

/// Who may connect, and where their frames go.
pub struct Listener {
    pub cluster_id: String,
    pub tls: Option<Arc<PeerTls>>,
    pub network: Arc<PeerNetwork>,
    pub raft: RaftHandle,
    pub incoming: mpsc::Sender<Incoming>,
}

/// Accepts peer connections until the process ends.
pub async fn listen(listener: TcpListener, setup: Listener) {
    let setup = Arc::new(setup);
    let node_id = setup.network.node_id();
    let slots = Arc::new(Semaphore::new(MAX_INBOUND));
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    metrics::counter!("ums_peer_connections_refused_total").increment(1);
                    debug!(node = node_id, %remote, "too many inbound peer connections; refusing");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let setup = Arc::clone(&setup);
                tokio::spawn(async move {
                    serve_connection(stream, remote, &setup).await;
                    drop(slot);
                });
            }
            Err(e) => {
                warn!(node = node_id, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

type PeerFramed = Framed<PeerStream, LengthDelimitedCodec>;

/// TLS (when configured), then the dialer's Hello, judged before we answer ours.
async fn handshake(stream: TcpStream, setup: &Listener) -> Result<(PeerFramed, NodeId), String> {
    let (stream, certificate): (PeerStream, _) = match &setup.tls {
        Some(tls) => match tokio::time::timeout(CONNECT_TIMEOUT, tls.accept(stream)).await {
            Ok(Ok(encrypted)) => {
                let certificate = PeerTls::client_certificate(&encrypted);
                (Box::new(encrypted), certificate)
            }
            Ok(Err(e)) => return Err(format!("TLS handshake failed: {e}")),
            Err(_) => return Err("TLS handshake timed out".into()),
        },
        None => (Box::new(stream), None),
    };
    let mut hello_codec = codec();
    hello_codec.set_max_frame_length(HELLO_FRAME_BYTES);
    let mut framed = Framed::new(stream, hello_codec);
    let hello = match tokio::time::timeout(CONNECT_TIMEOUT, framed.next()).await {
        Ok(Some(Ok(bytes))) => match Frame::decode(bytes) {
            Ok(Frame { body: Some(frame::Body::Hello(hello)) }) => hello,
            _ => return Err("its first frame is not a Hello".into()),
        },
        Ok(Some(Err(e))) => return Err(format!("reading its Hello: {e}")),
        Ok(None) => return Err("it closed before its Hello".into()),
        Err(_) => return Err("no Hello in time".into()),
    };
    let holds = |node| match (&setup.tls, &certificate) {
        (Some(tls), Some(certificate)) => tls.holds(certificate, node),
        (Some(_), None) => false,
        (None, _) => true,
    };
    let this_node = setup.network.node_id();
    let admission = |node| setup.network.admission(node);
    let answer = |removed| Frame {
        body: Some(frame::Body::Hello(Hello { cluster_id: setup.cluster_id.clone(), node_id: this_node, removed })),
    };
    let from = match handshake::admit(&hello, &setup.cluster_id, this_node, admission, holds) {
        Ok(from) => from,
        Err(handshake::Refusal::Outsider(why)) => return Err(why),
        Err(handshake::Refusal::Removed(node)) => {
            // Its certificate proves it was ours: tell it, so it stops instead of waiting.
            let _ = framed.send(Bytes::from(answer(true).encode_to_vec())).await;
            return Err(format!("node {node} was removed from the cluster; told it so"));
        }
    };
    framed.send(Bytes::from(answer(false).encode_to_vec())).await.map_err(|e| format!("answering its Hello: {e}"))?;
    framed.codec_mut().set_max_frame_length(MAX_FRAME_BYTES);
    Ok((framed, from))
}

async fn serve_connection(stream: TcpStream, remote: SocketAddr, setup: &Listener) {
    let node_id = setup.network.node_id();
    let (mut framed, from) = match handshake(stream, setup).await {
        Ok(admitted) => admitted,
        Err(why) => {
            metrics::counter!("ums_peer_connections_refused_total").increment(1);
            warn!(node = node_id, %remote, "refusing a peer connection: {why}");
            return;
        }
    };
    let mut snapshots = chunks::Reassembly::default();
    loop {
        let bytes = match tokio::time::timeout(PEER_IDLE, framed.next()).await {
            Ok(Some(Ok(bytes))) => bytes,
            Ok(Some(Err(e))) => {
                debug!(node = node_id, peer = from, error = %e, "peer connection failed");
                break;
            }
            Ok(None) => break,
            Err(_) => {
                debug!(node = node_id, peer = from, "peer connection idle; closing");
                break;
            }
        };
        if setup.network.admission(from) != Some(false) {
            // Removed since it connected (a node restarted just before its peers learned
            // of its removal): close, so its next Hello is answered with the news.
            warn!(node = node_id, peer = from, "peer is no longer a member; closing its connection");
            return;
        }
        setup.network.heard_from(from);
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
                        let mut message = RaftMessageProto::decode(m.message.as_slice()).ok()?;
                        if m.chunked_snapshot_bytes > 0
                            && !snapshots.complete(m.group, &mut message, m.chunked_snapshot_bytes)
                        {
                            metrics::counter!("ums_peer_snapshots_incomplete_total").increment(1);
                            warn!(node = node_id, peer = from, group = m.group, "snapshot arrived incomplete; dropped");
                            return None;
                        }
                        Some(GroupMessage { group: m.group, message })
                    })
                    .collect();
                if !setup.raft.send(Input::Raft(messages)) {
                    metrics::counter!("ums_peer_frames_dropped_total").increment(1);
                }
            }
            Some(frame::Body::SnapshotChunk(piece)) => {
                if let Err(why) = snapshots.add(piece) {
                    warn!(node = node_id, peer = from, "snapshot piece refused: {why}");
                }
            }
            Some(frame::Body::Forward(request)) => {
                let _ = setup.incoming.send(Incoming::Forward { from, request }).await;
            }
            Some(frame::Body::Reply(reply)) => {
                let _ = setup.incoming.send(Incoming::Reply(reply)).await;
            }
            // Pings only update `heard`, above.
            Some(frame::Body::Ping(_)) | Some(frame::Body::Hello(_)) | None => {}
        }
    }
    debug!(node = node_id, peer = from, "peer connection closed");
}
