//! Local mail domains: the MX accepts mail for these only (recorded in the meta group).

use super::{Cluster, ServiceError};
use crate::addresses::normalize_domain;
use crate::placement::META_GROUP;
use crate::proto::state::{AddDomain, LocalDomain, command, query};

impl Cluster {
    /// Accepts mail for `domain` from now on.
    pub async fn add_domain(&self, domain: &str) -> Result<String, ServiceError> {
        let domain = normalize_domain(domain)?;
        self.propose(META_GROUP, command::Op::AddDomain(AddDomain { domain: domain.clone() })).await?;
        Ok(domain)
    }

    /// Whether mail for `domain` is accepted here.
    pub async fn is_local_domain(&self, domain: &str) -> Result<bool, ServiceError> {
        let domain = normalize_domain(domain)?;
        match self.query(META_GROUP, query::Q::LocalDomain(LocalDomain { domain })).await {
            Ok(_) => Ok(true),
            Err(ServiceError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
