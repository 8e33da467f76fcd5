//! Keeps this node's [`BanList`] (what its gateways and API check at accept time) equal
//! to the cluster's, read from the local replica every [`SYNC_EVERY`], and turns a
//! gateway's own ban of a misbehaving address into a cluster-wide one, so a source
//! banned on one node is refused by every node within a second.

use std::sync::Arc;
use std::time::Duration;

use gateways::bans::{Ban as GatewayBan, BanList, Offender};
use gateways::network::Network;
use tracing::{info, warn};

use crate::clock::now_ms;
use crate::cluster::Cluster;
use crate::proto::state::Ban;

/// How often the node copies the cluster's bans from its replica.
pub const SYNC_EVERY: Duration = Duration::from_millis(200);

/// Starts the copying on the current tokio runtime, and reports gateways' bans to the
/// cluster.
pub fn start(cluster: Arc<Cluster>, bans: Arc<BanList>) {
    let proposer = Arc::clone(&cluster);
    let runtime = tokio::runtime::Handle::current();
    bans.report_to(Box::new(move |offender: Offender| {
        let cluster = Arc::clone(&proposer);
        runtime.spawn(async move {
            let network = offender.network.to_string();
            let ban = Ban {
                network: network.clone(),
                until_ms: now_ms() + offender.length.as_millis() as u64,
                reason: offender.reason,
                created_by: format!("node {}", cluster.node_id()),
                created_ms: now_ms(),
            };
            match cluster.ban(ban, false).await {
                Ok(()) => info!(%network, "banned on every node for abuse"),
                Err(e) => warn!(%network, error = %e, "could not replicate a ban; it holds on this node only"),
            }
        });
    }));
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SYNC_EVERY);
        loop {
            every.tick().await;
            if let Ok(records) = cluster.bans(true).await {
                bans.replace(in_force(&records, now_ms()));
            }
        }
    });
}

/// The bans of `records` still in force at `now`, as the gateways check them.
fn in_force(records: &[Ban], now: u64) -> Vec<GatewayBan> {
    records
        .iter()
        .filter(|ban| ban.until_ms > now)
        .filter_map(|ban| {
            Network::parse(&ban.network).ok().map(|network| GatewayBan { network, until_ms: ban.until_ms })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bans_in_force_are_checked() {
        let ban = |network: &str, until_ms| Ban { network: network.into(), until_ms, ..Default::default() };
        let records = [ban("203.0.113.9/32", 2_000), ban("198.51.100.0/24", 500), ban("garbage", 9_000)];
        let checked = in_force(&records, 1_000);
        assert_eq!(checked.len(), 1);
        assert_eq!(checked[0].network.to_string(), "203.0.113.9/32");
    }
}
