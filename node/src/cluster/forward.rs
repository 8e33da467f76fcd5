//! Requests forwarded between nodes: a node that does not lead a shard sends the request
//! to the leader over the peer transport and waits for its reply; the leader executes
//! forwarded requests here, without forwarding them again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use consensus::{Command, GroupId, NodeId, ProposeError};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};

use super::{Cluster, mailbox_user};
use crate::peer::Incoming;
use crate::proto::peer::{
    ForwardReply, ForwardRequest, GroupStates, LogEnd, LogEnds, ServiceError as WireError, forward_request, frame,
    service_error,
};
use crate::proto::state::{Command as StateCommand, Query};

/// How long a forwarded request waits for the leader's reply before retrying.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

impl Cluster {
    /// Serves forwarded requests and replies from peers until the channel closes.
    pub async fn serve_incoming(self: Arc<Self>, mut incoming: mpsc::Receiver<Incoming>) {
        while let Some(item) = incoming.recv().await {
            match item {
                Incoming::Forward { from, request } => {
                    let service = Arc::clone(&self);
                    tokio::spawn(async move {
                        let reply = service.execute_forwarded(request).await;
                        service.network.send_frame(from, frame::Body::Reply(reply));
                    });
                }
                Incoming::Reply(reply) => {
                    if let Some(waiter) = self.pending_forwards.lock().expect("pending lock").remove(&reply.id) {
                        let _ = waiter.send(reply);
                    }
                }
            }
        }
    }

    /// Executes a forwarded request here, without forwarding it again.
    async fn execute_forwarded(&self, request: ForwardRequest) -> ForwardReply {
        let result = match request.body {
            Some(forward_request::Body::Command(bytes)) => match Command::decode(bytes.as_slice()) {
                Ok(command) => {
                    let mailbox = StateCommand::decode(command.payload.as_slice())
                        .ok()
                        .and_then(|c| c.op)
                        .as_ref()
                        .and_then(mailbox_user);
                    self.propose_here(request.group, command, mailbox).await
                }
                Err(e) => Err(ProposeError::Invalid(e.to_string())),
            },
            Some(forward_request::Body::Query(bytes)) => match Query::decode(bytes.as_slice()) {
                Ok(query) => self.query_here(request.group, query).await.map(|r| r.encode_to_vec()),
                Err(e) => Err(ProposeError::Invalid(e.to_string())),
            },
            Some(forward_request::Body::GroupState(_)) => {
                self.group_state_here(request.group).await.map(|state| state.encode_to_vec())
            }
            Some(forward_request::Body::LedGroups(_)) => {
                Ok(GroupStates { states: self.led_group_states_here().await }.encode_to_vec())
            }
            Some(forward_request::Body::LogEnds(_)) => Ok(LogEnds { ends: self.log_ends_here().await }.encode_to_vec()),
            Some(forward_request::Body::Recover(step)) => self
                .recover_here(request.group, step)
                .await
                .map(|last_index| LogEnd { group: request.group, last_index, ..Default::default() }.encode_to_vec()),
            None => Err(ProposeError::Invalid("empty forward".into())),
        };
        match result {
            Ok(response) => ForwardReply { id: request.id, response, error: None },
            Err(error) => ForwardReply { id: request.id, response: Vec::new(), error: Some(to_wire(&error)) },
        }
    }

    pub(super) async fn forward(
        &self,
        to: NodeId,
        group: GroupId,
        body: forward_request::Body,
    ) -> Result<Vec<u8>, ProposeError> {
        let id = self.next_forward_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        self.pending_forwards.lock().expect("pending lock").insert(id, sender);
        let sent = self.network.is_reachable(to)
            && self.network.send_frame(to, frame::Body::Forward(ForwardRequest { id, group, body: Some(body) }));
        let reply = if sent { self.await_reply(to, receiver).await } else { None };
        self.pending_forwards.lock().expect("pending lock").remove(&id);
        // No reply: the outcome is unknown; the caller retries with the same request id.
        let reply = reply.ok_or(ProposeError::Dropped { group })?;
        match reply.error {
            Some(error) if error.kind != service_error::Kind::None as i32 => Err(from_wire(group, &error)),
            _ => Ok(reply.response),
        }
    }

    /// Waits for a forwarded request's reply, giving up early if the node becomes
    /// unreachable (it died or was cut off: waiting out the timeout only delays failover).
    async fn await_reply(&self, to: NodeId, mut receiver: oneshot::Receiver<ForwardReply>) -> Option<ForwardReply> {
        let deadline = tokio::time::Instant::now() + FORWARD_TIMEOUT;
        loop {
            tokio::select! {
                reply = &mut receiver => return reply.ok(),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    if !self.network.is_reachable(to) || tokio::time::Instant::now() >= deadline {
                        return None;
                    }
                }
            }
        }
    }
}

fn to_wire(error: &ProposeError) -> WireError {
    let (kind, leader) = match error {
        ProposeError::NotLeader { leader, .. } => (service_error::Kind::NotLeader, leader.unwrap_or(0)),
        ProposeError::Dropped { .. } => (service_error::Kind::Dropped, 0),
        ProposeError::GroupNotFound { .. } => (service_error::Kind::GroupNotFound, 0),
        ProposeError::Invalid(_) => (service_error::Kind::Internal, 0),
    };
    WireError { kind: kind as i32, leader, message: error.to_string() }
}

fn from_wire(group: GroupId, error: &WireError) -> ProposeError {
    match service_error::Kind::from_i32(error.kind).unwrap_or(service_error::Kind::Internal) {
        service_error::Kind::NotLeader => {
            ProposeError::NotLeader { group, leader: (error.leader != 0).then_some(error.leader) }
        }
        service_error::Kind::GroupNotFound => ProposeError::GroupNotFound { group },
        service_error::Kind::Internal => ProposeError::Invalid(error.message.clone()),
        service_error::Kind::None | service_error::Kind::Dropped | service_error::Kind::Unavailable => {
            ProposeError::Dropped { group }
        }
    }
}
