//! Outbound items (webhooks, relayed e-mail): queued in the sender's shard, read by the
//! shard leader's queue actor, and the outcome of each delivery attempt replicated.

use consensus::{GroupId, ProposeError};

use super::{Cluster, ServiceError};
use crate::clock::now_ms;
use crate::proto::state::{Enqueue, ListOutbound, OutboundAttempt, OutboundItem, Query, command, query};

impl Cluster {
    /// Queues an outbound item in the sender's shard; the shard leader's queue actor
    /// delivers it. Returns the item as stored (with its sequence number).
    pub async fn enqueue_outbound(
        &self,
        address: &str,
        mut item: OutboundItem,
        idempotency_key: Option<&str>,
    ) -> Result<(GroupId, OutboundItem), ServiceError> {
        item.user_id = self.resolve(address).await?;
        item.created_ms = now_ms();
        let shard = self.shard_of(&item.user_id);
        let result =
            self.propose_once(shard, command::Op::Enqueue(Enqueue { item: Some(item) }), idempotency_key).await?;
        Ok((shard, result.outbound.unwrap_or_default()))
    }

    pub async fn list_outbound(&self, address: &str) -> Result<Vec<OutboundItem>, ServiceError> {
        let user_id = self.resolve(address).await?;
        let shard = self.shard_of(&user_id);
        Ok(self.query(shard, query::Q::ListOutbound(ListOutbound { user_id, limit: 10_000 })).await?.outbound)
    }

    /// The shard's pending items, read on this node, which must lead the shard.
    pub async fn pending_outbound(&self, shard: GroupId, limit: usize) -> Result<Vec<OutboundItem>, ProposeError> {
        let query =
            Query { q: Some(query::Q::ListOutbound(ListOutbound { user_id: String::new(), limit: limit as u32 })) };
        Ok(self.query_here(shard, query).await?.outbound)
    }

    /// Replicates the outcome of a delivery attempt.
    pub async fn record_attempt(&self, shard: GroupId, attempt: OutboundAttempt) -> Result<(), ServiceError> {
        match self.propose(shard, command::Op::OutboundAttempt(attempt)).await {
            Ok(_) | Err(ServiceError::NotFound(_)) => Ok(()), // NotFound: already final.
            Err(e) => Err(e),
        }
    }
}
