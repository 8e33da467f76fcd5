//! Backup and restore between real processes: `umsctl backup create` under load, right
//! after the busiest leader is killed, reads every group from the backup site's learners;
//! `umsctl backup verify` passes; `umsd restore` starts a fresh one-node cluster from it
//! whose every mailbox is the source's as of the backup (a prefix of the source's final
//! mailbox holding everything acknowledged before the backup began), which takes new
//! writes at the next UIDs. Bad input: a backup into a non-empty directory, a restore into
//! one, and a corrupted file (verify and restore fail naming it; restore leaves nothing).

use std::path::Path;
use std::process::{Command, Output};

use tests::{TestCluster, append};

use crate::backup_core::{BACKUP, two_sites, umsctl};
use crate::load::{Load, USERS, converged, email};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn restore(backup: &Path, config: &Path, data: &Path) -> Output {
    Command::new(tests::binary("umsd"))
        .arg("restore")
        .arg(backup)
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data)
        .output()
        .expect("run umsd restore")
}

/// How many group copies the audit log holds since `since_ms` (read page by page; the
/// log is written in batches, so it is read again until the count settles).
fn audited_copies(cluster: &TestCluster, since_ms: u64) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (mut after, mut copies) = (0, 0);
        loop {
            let url = cluster.url(1, &format!("/api/v1/audit?since_ms={since_ms}&after={after}&limit=1000"));
            let page = tests::get_json(&url, &cluster.token).expect("audit log");
            let records = page["audit"].as_array().cloned().unwrap_or_default();
            let Some(last) = records.last() else { break };
            after = last["seq"].as_u64().unwrap();
            copies += records
                .iter()
                .filter(|r| r["action"].as_str().is_some_and(|a| a.starts_with("GET /api/v1/backup/groups/")))
                .count();
        }
        if copies >= 9 || std::time::Instant::now() > deadline {
            return copies;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn a_backup_under_load_restores_into_a_fresh_cluster_with_every_mailbox_as_it_was() {
    let mut source = two_sites();
    let load = Load::start(&source, &[1, 2, 3]);
    load.wait_for(300);
    let leader = source.busiest_leader(1);
    source.kill(leader);
    let backup_started_ms = node::clock::now_ms();
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let created = umsctl(&source, &["--json", "backup", "create", backup.to_str().unwrap()]);
    assert!(created.status.success(), "backup create: {}", stderr(&created));
    source.restart(leader);
    let outcomes = load.finish();
    let summary = tests::json_printed(&created);
    let sources = summary["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 9, "the meta group and 8 shards: {summary}");
    for group in sources {
        assert!(BACKUP.contains(&group["node"].as_u64().unwrap()), "read from the backup site: {group}");
    }
    // Copying a group's data is audited, as changes are.
    assert_eq!(audited_copies(&source, backup_started_ms), 9, "every group's copy in the audit log");
    let verified = umsctl(&source, &["backup", "verify", backup.to_str().unwrap()]);
    assert!(verified.status.success(), "verify: {}", stderr(&verified));

    let restored = TestCluster::start_restored(&backup);
    for n in 1..=USERS {
        let before = converged(&source, &[1, 2, 3], &email(n));
        let after = restored.local_messages(1, &email(n)).expect("the user's mailbox on the restored node");
        assert_eq!(after[..], before[..after.len()], "user {n}: the restored mailbox is the source's as it was");
        for outcome in outcomes.iter().filter(|o| o.user == n && o.answered_ms < backup_started_ms) {
            if let Some(uid) = outcome.uid {
                assert!(
                    after.contains(&(uid, outcome.client_ref.clone())),
                    "user {n}: {} (UID {uid}) acknowledged before the backup, not restored",
                    outcome.client_ref
                );
            }
        }
        let next = after.last().map_or(1, |(uid, _)| uid + 1);
        let url = restored.url(1, &format!("/api/v1/users/{}/messages", email(n)));
        assert_eq!(append(&url, &restored.token, &format!("after-restore-{n}"), "x"), Some(next), "user {n}");
    }

    // Bad input, each refused with the reason.
    let again = umsctl(&source, &["backup", "create", backup.to_str().unwrap()]);
    assert!(!again.status.success() && stderr(&again).contains("not empty"), "{}", stderr(&again));
    let config = dir.path().join("another-node.toml");
    std::fs::write(&config, toml::to_string(&restored.nodes[0].config).unwrap()).unwrap();
    let occupied = restore(&backup, &config, &backup);
    assert!(!occupied.status.success() && stderr(&occupied).contains("not empty"), "{}", stderr(&occupied));

    let corrupted = dir.path().join("corrupted");
    std::fs::create_dir(&corrupted).unwrap();
    for file in std::fs::read_dir(&backup).unwrap() {
        let file = file.unwrap().path();
        std::fs::copy(&file, corrupted.join(file.file_name().unwrap())).unwrap();
    }
    let victim = corrupted.join("group-00003.ums");
    let mut bytes = std::fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&victim, bytes).unwrap();
    let verify = umsctl(&source, &["backup", "verify", corrupted.to_str().unwrap()]);
    assert!(!verify.status.success() && stderr(&verify).contains("group-00003.ums"), "{}", stderr(&verify));
    let target = dir.path().join("never-written");
    let refused = restore(&corrupted, &config, &target);
    assert!(!refused.status.success() && stderr(&refused).contains("group-00003.ums"), "{}", stderr(&refused));
    assert!(!target.exists(), "a failed restore leaves no data directory behind");
}
