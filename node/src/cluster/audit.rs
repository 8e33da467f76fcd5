//! The audit log in the meta group: append a batch (once, however often it is retried
//! under its key), and read records back, from the leader or from this node's replica.

use super::{Cluster, ServiceError};
use crate::placement::META_GROUP;
use crate::proto::state::{AppendAudit, AuditRecord, ListAudit, command, query};

impl Cluster {
    /// Appends `records` in order; a retry with the same `key` is applied once.
    pub async fn append_audit(&self, records: Vec<AuditRecord>, key: &str) -> Result<(), ServiceError> {
        let op = command::Op::AppendAudit(AppendAudit { records });
        self.propose_once(META_GROUP, op, Some(key)).await.map(|_| ())
    }

    /// Records matching `list`, oldest first; `local` reads this node's replica.
    pub async fn audit(&self, list: ListAudit, local: bool) -> Result<Vec<AuditRecord>, ServiceError> {
        let q = query::Q::ListAudit(list);
        let result = self.query_from(META_GROUP, q, local).await?;
        Ok(result.audit)
    }
}
