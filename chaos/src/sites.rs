//! The backup core's drills: `switchover` swaps the primary and the backup site under
//! load through the cluster's API (`POST /api/v1/backup-core/switchover`), holds, and
//! swaps them back, so the drill leaves the cluster as it found it; the workload and
//! the checker measure what clients saw (nothing lost, the write pause per shard).
//! `site-loss` kills every primary node at once, promotes the backup site as an operator
//! would (`GET /api/v1/backup-core/promotion`, then `POST .../promote`) and starts the lost
//! nodes again to see them refused: it leaves the cluster on what was the backup site.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;

use crate::history::Operation;

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
    answer(cluster.post(entry, "/api/v1/backup-core/switchover").timeout(SWITCHOVER_LIMIT).call(), "switchover")
}

/// The JSON a site operation answered, or why the node refused `what`.
fn answer(response: Result<ureq::Response, ureq::Error>, what: &str) -> anyhow::Result<Value> {
    match response {
        Ok(response) => Ok(response.into_json()?),
        Err(ureq::Error::Status(code, response)) => {
            bail!("the {what} was refused ({code}): {}", response.into_string().unwrap_or_default())
        }
        Err(e) => Err(e.into()),
    }
}

/// What a site-loss drill did and found.
#[derive(Debug, Default, Serialize)]
pub struct SiteLoss {
    /// The primary-site nodes killed.
    pub lost_nodes: Vec<u64>,
    /// When the last of them was killed, in drill time.
    pub lost_at_ms: u64,
    /// The live recovery point the cluster reported just before the loss (worst shard).
    pub rpo_before_loss_entries: u64,
    pub rpo_before_loss_seconds: f64,
    /// Per shard, from the promotion plan: when (drill time) the newest entry the backup
    /// replica holds was proposed. Anything acknowledged after it may be lost.
    pub recovery_points_ms: BTreeMap<u64, u64>,
    /// The largest `lost_at_ms - point` over the shards: the promotion's reported loss.
    pub reported_rpo_ms: u64,
    /// From the loss to the promotion's answer.
    pub promoted_after_ms: u64,
    /// From the loss to the first write invoked after it and acknowledged by a node of
    /// the promoted site; `None` if none was.
    pub rto_ms: Option<u64>,
    /// Acknowledged writes (and queued webhooks) the promoted site lacks, all after their
    /// shard's recovery point (a missing one from before it is a checker violation).
    pub missing_acknowledged: usize,
    /// How long before the loss the earliest of them was acknowledged: never more than
    /// `reported_rpo_ms`.
    pub oldest_missing_before_loss_ms: Option<u64>,
}

impl SiteLoss {
    /// Fills in the RTO and the loss actually measured, from the history and what the
    /// checker excused.
    pub fn account(&mut self, history: &[Operation], excused: &[Operation]) {
        self.rto_ms = history
            .iter()
            .filter(|o| o.is_ok() && o.invoked_ms >= self.lost_at_ms && !self.lost_nodes.contains(&o.node))
            .map(|o| o.completed_ms - self.lost_at_ms)
            .min();
        self.missing_acknowledged = excused.len();
        self.oldest_missing_before_loss_ms =
            excused.iter().map(|o| self.lost_at_ms.saturating_sub(o.completed_ms)).max();
    }
}

/// How long a promotion may take before the node answers.
const PROMOTION_LIMIT: Duration = Duration::from_secs(120);

/// Kills every primary-site node at once, promotes the backup site, lets the workload
/// run on it for `span`, and starts the lost nodes again (they must be refused).
pub fn site_loss(cluster: &Cluster, faults: &mut Faults, span: Duration) -> anyhow::Result<SiteLoss> {
    let backup = backup_nodes(cluster)?;
    let primary: Vec<u64> = cluster.ids().into_iter().filter(|id| !backup.contains(id)).collect();
    let (Some(&entry), false) = (backup.first(), primary.is_empty()) else {
        bail!("site-loss needs nodes at both sites (backup {backup:?}, primary {primary:?})");
    };
    let before: Value =
        cluster.get(primary[0], "/api/v1/backup-core").timeout(Duration::from_secs(30)).call()?.into_json()?;
    for &id in &primary {
        faults.kill(cluster, id)?;
    }
    // The site is gone once its last node is.
    let mut loss = SiteLoss {
        lost_nodes: primary.clone(),
        lost_at_ms: faults.now_ms(),
        rpo_before_loss_entries: before["worst_entries"].as_u64().unwrap_or(0),
        rpo_before_loss_seconds: before["worst_seconds"].as_f64().unwrap_or(0.0),
        ..Default::default()
    };
    let plan = promotion_plan(cluster, entry)?;
    let wall_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let drill_ms = faults.now_ms();
    for group in plan["groups"].as_array().into_iter().flatten() {
        let (Some(shard), Some(stamp)) = (group["group"].as_u64(), group["newest_entry_ms"].as_u64()) else {
            continue;
        };
        // Wall clock to drill time (the nodes stamp with this machine's clock).
        let point = drill_ms.saturating_sub(wall_ms.saturating_sub(stamp));
        loss.recovery_points_ms.insert(shard, point);
    }
    loss.reported_rpo_ms =
        loss.recovery_points_ms.values().map(|&p| loss.lost_at_ms.saturating_sub(p)).max().unwrap_or(0);
    faults.log(format!(
        "promotion plan from node {entry}: {} groups, {} with stamped entries, reported loss up to {} ms before the kill",
        plan["groups"].as_array().map_or(0, Vec::len),
        loss.recovery_points_ms.len(),
        loss.reported_rpo_ms
    ));
    let promote = cluster.post(entry, "/api/v1/backup-core/promote").timeout(PROMOTION_LIMIT);
    let promoted = answer(promote.send_json(serde_json::json!({})), "promotion")?;
    loss.promoted_after_ms = faults.now_ms() - loss.lost_at_ms;
    faults.log(format!(
        "promoted {} groups onto nodes {backup:?} ({} ms after the loss)",
        promoted["groups"].as_array().map_or(0, Vec::len),
        loss.promoted_after_ms
    ));
    std::thread::sleep(span);
    for &id in &primary {
        faults.restart_expecting_refusal(cluster, id)?;
    }
    Ok(loss)
}

/// The promotion plan, asked of backup node `entry` until the lost nodes count as
/// unreachable there (a connection refused at once, a timeout after a few seconds).
fn promotion_plan(cluster: &Cluster, entry: u64) -> anyhow::Result<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match cluster.get(entry, "/api/v1/backup-core/promotion").timeout(Duration::from_secs(30)).call() {
            Ok(response) => return Ok(response.into_json()?),
            Err(ureq::Error::Status(code, response)) if std::time::Instant::now() > deadline => {
                bail!(
                    "node {entry} would not plan a promotion ({code}): {}",
                    response.into_string().unwrap_or_default()
                )
            }
            Err(ureq::Error::Status(..)) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Outcome;

    fn op(id: u64, node: u64, invoked_ms: u64, completed_ms: u64, outcome: Outcome) -> Operation {
        let client_ref = id.to_string();
        Operation { id, user: "u".into(), shard: 1, client_ref, node, invoked_ms, completed_ms, outcome }
    }

    #[test]
    fn the_rto_counts_only_writes_the_promoted_site_acknowledged_after_the_loss() {
        let mut loss = SiteLoss { lost_nodes: vec![1, 2, 3], lost_at_ms: 1000, ..Default::default() };
        let history = [
            op(1, 4, 900, 950, Outcome::Ok { uid: 1 }),   // before the loss
            op(2, 1, 1001, 1002, Outcome::Ok { uid: 2 }), // a lost node (its answer raced the kill)
            op(3, 4, 1010, 1400, Outcome::Unknown { reason: "timeout".into() }),
            op(4, 5, 1100, 1700, Outcome::Ok { uid: 3 }),
            op(5, 4, 1200, 1650, Outcome::Ok { uid: 4 }),
        ];
        let excused = [op(6, 2, 960, 990, Outcome::Ok { uid: 5 }), op(7, 1, 930, 980, Outcome::Ok { uid: 6 })];
        loss.account(&history, &excused);
        assert_eq!(loss.rto_ms, Some(650));
        assert_eq!(loss.missing_acknowledged, 2);
        assert_eq!(loss.oldest_missing_before_loss_ms, Some(20));
    }
}
