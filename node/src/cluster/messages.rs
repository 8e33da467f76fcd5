//! Messages in mailboxes through the HTTP API: delivering one and listing a mailbox.

use consensus::GroupId;

use super::{Cluster, ServiceError};
use crate::clock::now_ms;
use crate::proto::state::{Deliver, Delivered, ListMessages, QueryResult, command, query};

impl Cluster {
    /// Delivers a message to the user owning `address`, returning its UID once the
    /// message is replicated and applied.
    pub async fn deliver(
        &self,
        address: &str,
        mailbox: &str,
        raw: Vec<u8>,
        kind: &str,
        client_ref: &str,
        idempotency_key: Option<&str>,
    ) -> Result<(GroupId, Delivered), ServiceError> {
        let user_id = self.resolve(address).await?;
        let deliver = Deliver {
            user_id,
            mailbox: mailbox.to_string(),
            raw,
            kind: kind.to_string(),
            internal_date_ms: now_ms(),
            client_ref: client_ref.to_string(),
            ..Default::default()
        };
        self.deliver_to_user(deliver, idempotency_key).await
    }

    /// Proposes a prepared delivery on the user's shard.
    pub async fn deliver_to_user(
        &self,
        deliver: Deliver,
        idempotency_key: Option<&str>,
    ) -> Result<(GroupId, Delivered), ServiceError> {
        let shard = self.shard_of(&deliver.user_id);
        let result = self.propose_once(shard, command::Op::Deliver(deliver), idempotency_key).await?;
        let delivered = result.delivered.ok_or_else(|| ServiceError::Internal("deliver returned no UID".into()))?;
        Ok((shard, delivered))
    }

    /// Lists a mailbox. With `local`, reads this node's replica without the leader.
    pub async fn list_messages(
        &self,
        address: &str,
        list: ListMessages,
        local: bool,
    ) -> Result<QueryResult, ServiceError> {
        let user_id = self.resolve(address).await?;
        let shard = self.shard_of(&user_id);
        let list = ListMessages { user_id, ..list };
        if local {
            self.query_local(shard, query::Q::ListMessages(list)).await
        } else {
            self.query(shard, query::Q::ListMessages(list)).await
        }
    }
}
