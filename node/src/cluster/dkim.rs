//! Local domains' DKIM keys in the meta group: make one, list them.

use gateways::smtp::authentication::signing::{DkimAlgorithm, generate_key};

use super::{Cluster, ServiceError};
use crate::clock::now_ms;
use crate::placement::META_GROUP;
use crate::proto::state::{DkimKey, ListDkimKeys, PutDkimKey, command, query};

impl Cluster {
    /// Makes a key pair for `domain` (a local one) under `selector` and keeps it as the
    /// key the domain's outgoing mail is signed with; the record to publish is in it.
    pub async fn create_dkim_key(
        &self,
        domain: &str,
        selector: &str,
        algorithm: DkimAlgorithm,
        created_by: &str,
    ) -> Result<DkimKey, ServiceError> {
        if selector.is_empty()
            || selector.len() > 63
            || !selector.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ServiceError::Invalid(format!("selector '{selector}': 1 to 63 letters, digits, '-' or '_'")));
        }
        // RSA key generation takes a moment of CPU: off the async workers.
        let generated = tokio::task::spawn_blocking(move || generate_key(algorithm))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let key = DkimKey {
            domain: domain.to_string(),
            selector: selector.to_string(),
            private_key_pem: generated.private_key_pem,
            dns_record: generated.dns_record,
            created_ms: now_ms(),
            created_by: created_by.to_string(),
        };
        self.propose(META_GROUP, command::Op::PutDkimKey(PutDkimKey { key: Some(key.clone()) })).await?;
        Ok(key)
    }

    /// Every domain's key; `local` reads this node's replica.
    pub async fn dkim_keys(&self, local: bool) -> Result<Vec<DkimKey>, ServiceError> {
        let q = query::Q::ListDkimKeys(ListDkimKeys {});
        let result = self.query_from(META_GROUP, q, local).await?;
        Ok(result.dkim_keys)
    }
}
