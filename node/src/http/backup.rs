//! `GET /api/v1/backup/groups/{group}` (operators): this node's own replica of a group,
//! streamed as a backup group file (see [`crate::backup::format`]): its header (group,
//! applied index and term, membership, cluster, node), then the data in chunks of about
//! 1 MiB read from one pinned RocksDB snapshot, so the copy is consistent at that index
//! while the group goes on applying. `umsctl backup create` picks the node per group.

use actix_web::{HttpResponse, web};
use bytes::Bytes;
use consensus::GroupId;

use super::caller::Caller;
use super::{State, error_response};
use crate::auth::Action;
use crate::backup::format::{self, GroupHeader};
use crate::cluster::ServiceError;

/// Chunks read ahead of a slow client.
const READ_AHEAD: usize = 4;

pub(super) async fn group(caller: Caller, state: State, path: web::Path<GroupId>) -> HttpResponse {
    if let Err(denied) = caller.may(Action::ClusterManage) {
        return *denied;
    }
    let group = path.into_inner();
    let node = state.cluster.node_id();
    let mut reader = match state.cluster.local_snapshot(group) {
        Ok(reader) => reader,
        Err(_) => {
            return error_response(&ServiceError::NotFound(format!(
                "node {node} holds no replica of group {group}; ask a node that does (GET /api/v1/shards)"
            )));
        }
    };
    let metadata = reader.metadata().clone();
    let conf = metadata.conf_state.clone().unwrap_or_default();
    let header = GroupHeader {
        group,
        index: metadata.index,
        term: metadata.term,
        voters: conf.voters,
        learners: conf.learners,
        cluster_id: state.cluster_id.clone(),
        node,
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(READ_AHEAD);
    actix_web::rt::task::spawn_blocking(move || {
        if sender.blocking_send(Ok(Bytes::from(format::frame(&header)))).is_err() {
            return;
        }
        loop {
            let item = match reader.next_chunk(storage::snapshot::DEFAULT_CHUNK_BYTES) {
                Ok(Some(chunk)) => Ok(Bytes::from(format::frame(&chunk))),
                Ok(None) => return,
                // The client sees a cut-off body and a file that fails its checks.
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let failed = item.is_err();
            if sender.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    let body =
        futures::stream::unfold(
            receiver,
            |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
        );
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("X-UMS-Applied-Index", metadata.index.to_string()))
        .insert_header(("X-UMS-Term", metadata.term.to_string()))
        .streaming(body)
}
