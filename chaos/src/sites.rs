//! The backup core's drills: `switchover` swaps the primary and the backup site under
//! load through the cluster's API (`POST /api/v1/backup-core/switchover`), holds, and
//! swaps them back, so the drill leaves the cluster as it found it; the workload and
//! the checker measure what clients saw (nothing lost, the write pause per shard).

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cluster::Cluster;
use crate::faults::Faults;

/// How long one switchover may take before the node answers.
const SWITCHOVER_LIMIT: Duration = Duration::from_secs(330);

/// The backup site's nodes, as the cluster reports them.
fn backup_nodes(cluster: &Cluster) -> anyhow::Result<Vec<u64>> {
    let entry = *cluster.ids().first().context("the cluster has no nodes")?;
    let report: Value =
        cluster.get(entry, "/api/v1/backup-core").timeout(Duration::from_secs(30)).call()?.into_json()?;
    Ok(report["backup_nodes"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect())
}

/// Why the site drills cannot run against `cluster`, if they cannot.
pub fn skip_reason(cluster: &Cluster) -> Option<String> {
    match backup_nodes(cluster) {
        Ok(nodes) if nodes.is_empty() => Some(
            "needs a backup site: nodes labelled site=backup (umsd dev --backup-site 2, or umsctl node add --label site=backup)"
                .into(),
        ),
        Ok(_) => None,
        Err(e) => Some(format!("the cluster does not report a backup core: {e:#}")),
    }
}

/// Switches the sites, holds for `span`, and switches them back.
pub fn switchover(cluster: &Cluster, faults: &mut Faults, span: Duration) -> anyhow::Result<()> {
    for direction in ["to the backup site", "back to the first site"] {
        faults.log(format!("switchover {direction}"));
        let report = switch(cluster)?;
        faults.log(format!(
            "switched over in {:.1} s: primary {}, backup {}; longest leaderless {} ms",
            report["seconds"].as_f64().unwrap_or(0.0),
            report["primary"],
            report["backup"],
            report["longest_leaderless_ms"]
        ));
        std::thread::sleep(span / 2);
    }
    Ok(())
}

fn switch(cluster: &Cluster) -> anyhow::Result<Value> {
    let entry = *cluster.ids().first().context("the cluster has no nodes")?;
    match cluster.post(entry, "/api/v1/backup-core/switchover").timeout(SWITCHOVER_LIMIT).call() {
        Ok(response) => Ok(response.into_json()?),
        Err(ureq::Error::Status(code, response)) => {
            bail!("the switchover was refused ({code}): {}", response.into_string().unwrap_or_default())
        }
        Err(e) => Err(e.into()),
    }
}
