//! The cluster's ban list in the meta group: ban a network, lift a ban, list them.

use super::{Cluster, ServiceError};
use crate::placement::META_GROUP;
use crate::proto::state::{Ban, ListBans, PutBan, RemoveBan, command, query};

impl Cluster {
    /// Bans `ban.network`; `replace` lets it shorten a ban in force (an operator's).
    pub async fn ban(&self, ban: Ban, replace: bool) -> Result<(), ServiceError> {
        gateways::network::Network::parse(&ban.network).map_err(ServiceError::Invalid)?;
        self.propose(META_GROUP, command::Op::PutBan(PutBan { ban: Some(ban), replace })).await.map(|_| ())
    }

    pub async fn unban(&self, network: &str) -> Result<(), ServiceError> {
        let op = command::Op::RemoveBan(RemoveBan { network: network.to_string() });
        self.propose(META_GROUP, op).await.map(|_| ())
    }

    /// Every ban record (ended ones too); `local` reads this node's replica.
    pub async fn bans(&self, local: bool) -> Result<Vec<Ban>, ServiceError> {
        let q = query::Q::ListBans(ListBans {});
        let result = self.query_from(META_GROUP, q, local).await?;
        Ok(result.bans)
    }
}
