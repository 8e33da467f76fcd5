//! Faults, each logged with its time and each undoable: kill -9 (undone by restarting
//! the node from its data), SIGSTOP (undone by SIGCONT), and network partitions and
//! packet loss between nodes' peer addresses (undone by removing the rules), and a
//! full disk (a filler file on the node's own small filesystem, undone by deleting it
//! and restarting the node if it stopped), and a slow network or disk (delays set
//! through the nodes' debug API, undone by setting them to zero).

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cluster::Cluster;
use crate::history::{FaultEvent, Isolation};
use crate::network::{self, Iptables};

/// Injected faults and how to undo them.
pub struct Faults {
    started: Instant,
    pub events: Vec<FaultEvent>,
    killed: Vec<u64>,
    paused: Vec<u64>,
    /// Nodes partitioned away from the majority, for the checker.
    pub isolations: Vec<Isolation>,
    network_faulty: bool,
    /// Filler files written to fill a node's filesystem.
    fillers: Vec<Filler>,
    /// Nodes given network or disk delays through their debug API.
    slowed: Vec<u64>,
}

fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status()?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed");
    }
    Ok(())
}

impl Faults {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            events: Vec::new(),
            killed: Vec::new(),
            paused: Vec::new(),
            isolations: Vec::new(),
            network_faulty: false,
            fillers: Vec::new(),
            slowed: Vec::new(),
        }
    }

    /// Prints and records a fault, its undoing, or an observation during one.
    pub fn log(&mut self, what: String) {
        let at_ms = self.now_ms();
        println!("  {:>7.1}s  {what}", at_ms as f64 / 1000.0);
        self.events.push(FaultEvent { at_ms, what });
    }

    /// kill -9: the node loses everything not fsynced, like a power cut.
    pub fn kill(&mut self, cluster: &Cluster, id: u64) -> anyhow::Result<()> {
        let pid = cluster.running_pid(id)?;
        signal(pid, "KILL")?;
        self.killed.push(id);
        self.log(format!("kill -9 node {id} (pid {pid})"));
        Ok(())
    }

    /// Starts a killed node again from its data directory and waits until it answers.
    pub fn restart(&mut self, cluster: &Cluster, id: u64) -> anyhow::Result<()> {
        let node = cluster.node(id);
        devkit::process::start_umsd(&cluster.umsd, &node.config_path)
            .with_context(|| format!("restarting node {id}"))?;
        self.killed.retain(|&k| k != id);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster.is_healthy(id) {
            if Instant::now() > deadline {
                bail!("node {id} did not come back within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.log(format!("node {id} restarted"));
        Ok(())
    }

    /// For a node the cluster removed while it was down (a lost site's, after the
    /// promotion): starts it again from its old data and waits until it stops, refused by
    /// the cluster and marked removed, so it is no longer a fault to undo. A node that
    /// keeps running instead is killed and reported.
    pub fn restart_expecting_refusal(&mut self, cluster: &Cluster, id: u64) -> anyhow::Result<()> {
        let node = cluster.node(id);
        let (mut child, log) = devkit::process::start_umsd(&cluster.umsd, &node.config_path)
            .with_context(|| format!("restarting node {id}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("node {id} started again with its old data and kept running (see {})", log.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let marker = node.data_dir().join("removed");
        if !marker.exists() {
            bail!("node {id} stopped ({status}) without being marked removed (see {})", log.display());
        }
        self.killed.retain(|&k| k != id);
        self.log(format!("node {id} started again with its old data: refused, stopped ({status})"));
        Ok(())
    }

    /// SIGSTOP: the node freezes with its connections open, like a long GC pause or a
    /// hung VM.
    pub fn pause(&mut self, cluster: &Cluster, id: u64) -> anyhow::Result<()> {
        let pid = cluster.running_pid(id)?;
        signal(pid, "STOP")?;
        self.paused.push(id);
        self.log(format!("SIGSTOP node {id}"));
        Ok(())
    }

    pub fn resume(&mut self, cluster: &Cluster, id: u64) -> anyhow::Result<()> {
        if let Some(pid) = cluster.pid(id) {
            signal(pid, "CONT")?;
        }
        self.paused.retain(|&p| p != id);
        self.log(format!("SIGCONT node {id}"));
        Ok(())
    }

    /// A graceful stop (SIGTERM) for rolling restarts.
    pub fn stop(&mut self, cluster: &Cluster, id: u64) -> anyhow::Result<()> {
        let pid = cluster.running_pid(id)?;
        signal(pid, "TERM")?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while cluster.pid(id).is_some() {
            if Instant::now() > deadline {
                signal(pid, "KILL")?;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.killed.push(id);
        self.log(format!("node {id} stopped (SIGTERM)"));
        Ok(())
    }

    /// Milliseconds since the drill started, the time base of its history.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn peer_addresses(cluster: &Cluster, ids: &[u64]) -> Vec<SocketAddr> {
        ids.iter().map(|&id| cluster.node(id).config.peer_listen).collect()
    }

    /// Drops every packet between `isolated` and the other nodes, both ways.
    pub fn isolate(&mut self, cluster: &Cluster, isolated: u64) -> anyhow::Result<()> {
        let others: Vec<u64> = cluster.ids().into_iter().filter(|&id| id != isolated).collect();
        let rules = network::partition_rules(
            &Self::peer_addresses(cluster, &[isolated]),
            &Self::peer_addresses(cluster, &others),
        );
        self.apply_rules(cluster, &rules)?;
        self.isolations.push(Isolation { node: isolated, from_ms: self.now_ms(), to_ms: None });
        self.log(format!("partition: node {isolated} | nodes {others:?}"));
        Ok(())
    }

    /// Drops `probability` of the packets between every two nodes.
    pub fn packet_loss(&mut self, cluster: &Cluster, probability: f64) -> anyhow::Result<()> {
        let rules = network::loss_rules(&Self::peer_addresses(cluster, &cluster.ids()), probability);
        self.apply_rules(cluster, &rules)?;
        self.log(format!("packet loss {:.0} % between all nodes", probability * 100.0));
        Ok(())
    }

    /// Installs `rules`, once the cluster is known to support them (every node on its
    /// own peer IP, iptables usable).
    fn apply_rules(&mut self, cluster: &Cluster, rules: &[network::Rule]) -> anyhow::Result<()> {
        if let Some(why) = network_faults_unsupported(cluster) {
            bail!(why);
        }
        let iptables = Self::iptables(cluster);
        self.network_faulty = true; // Before installing: removing is safe to repeat.
        iptables.install()?;
        iptables.add(rules)
    }

    fn iptables(cluster: &Cluster) -> Iptables {
        Iptables::for_cluster(cluster.nodes[0].config.peer_listen.port())
    }

    /// Removes every network fault.
    fn heal_network(&mut self, cluster: &Cluster) -> anyhow::Result<()> {
        // The isolation ends when healing starts: an acknowledgement after this moment
        // may be legitimate.
        let now = self.now_ms();
        for isolation in self.isolations.iter_mut().filter(|i| i.to_ms.is_none()) {
            isolation.to_ms = Some(now);
        }
        Self::iptables(cluster).uninstall()?;
        self.network_faulty = false;
        self.log("network healed".into());
        Ok(())
    }

    /// Fills the filesystem holding node `id`'s data until writes fail with "no space".
    /// Only on a filesystem of its own (see [`has_own_filesystem`]): filling a shared disk
    /// would hit every node and the machine.
    pub fn fill_disk(&mut self, cluster: &Cluster, id: u64) -> anyhow::Result<()> {
        let dir = &cluster.node(id).config.data_dir;
        if !has_own_filesystem(dir) {
            bail!(
                "node {id}'s data directory {} is not a small filesystem of its own (at most 4 GiB, \
                 e.g. `mount -t tmpfs -o size=256m tmpfs {}` before the node first starts)",
                dir.display(),
                dir.display()
            );
        }
        let path = dir.join("chaos-disk-filler");
        let mut file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let log_len = std::fs::metadata(node_log(cluster, id)).map_or(0, |m| m.len());
        self.fillers.push(Filler { node: id, path: path.clone(), log_len });
        let block = vec![0xA5u8; 1 << 20];
        let mut written_mib = 0u64;
        // Never more than the largest filesystem we agree to fill, even if space keeps freeing up.
        while written_mib << 20 < MAX_FILLABLE_BYTES && file.write_all(&block).is_ok() {
            written_mib += 1;
        }
        let _ = file.sync_all();
        self.log(format!("filled node {id}'s filesystem with {written_mib} MiB ({})", path.display()));
        Ok(())
    }

    /// Deletes the filler files; a node that stopped on its storage failure is restarted.
    fn free_disks(&mut self, cluster: &Cluster) -> anyhow::Result<()> {
        while let Some(Filler { node: id, path, log_len }) = self.fillers.last().cloned() {
            if path.exists() {
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
            self.fillers.pop(); // Only once undone, so a failed heal can be retried.
            self.log(format!("freed node {id}'s filesystem"));
            // A node that hit its storage failure may finish exiting only now: something
            // blocked on the full filesystem holds the process until the space is back.
            // (Its last log line may itself be cut short by the full disk, so any error
            // logged since the fill counts.)
            let log = std::fs::read(node_log(cluster, id)).unwrap_or_default();
            let since_fill = String::from_utf8_lossy(log.get(log_len as usize..).unwrap_or_default());
            if since_fill.contains("ERROR") {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while cluster.pid(id).is_some() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            if cluster.pid(id).is_none() {
                self.log(format!("node {id} had stopped on its storage failure"));
                self.restart(cluster, id)?;
            }
        }
        Ok(())
    }

    /// Delays every frame every node sends to its peers by `delay` (one way).
    pub fn slow_network(&mut self, cluster: &Cluster, delay: Duration) -> anyhow::Result<()> {
        for id in cluster.ids() {
            cluster.set_debug_faults(id, &serde_json::json!({ "peer_delay_ms": delay.as_millis() as u64 }))?;
            self.slowed.push(id);
        }
        self.log(format!("every node's peer frames delayed {} ms", delay.as_millis()));
        Ok(())
    }

    /// Makes every fsync of node `id` take `delay` longer.
    pub fn slow_disk(&mut self, cluster: &Cluster, id: u64, delay: Duration) -> anyhow::Result<()> {
        cluster.set_debug_faults(id, &serde_json::json!({ "fsync_delay_ms": delay.as_millis() as u64 }))?;
        self.slowed.push(id);
        self.log(format!("node {id}'s fsyncs slowed by {} ms", delay.as_millis()));
        Ok(())
    }

    /// Removes every network and disk delay.
    fn heal_slowness(&mut self, cluster: &Cluster) -> anyhow::Result<()> {
        while let Some(&id) = self.slowed.last() {
            // A node restarted since has no delays left.
            if cluster.pid(id).is_some() {
                cluster.set_debug_faults(id, &serde_json::json!({ "peer_delay_ms": 0, "fsync_delay_ms": 0 }))?;
            }
            self.slowed.pop(); // Only once undone, so a failed heal can be retried.
        }
        self.log("network and disk delays removed".into());
        Ok(())
    }

    /// Undoes every fault still in effect. Tries every kind of undo even when one
    /// fails (reporting the first failure), and keeps what failed for another try.
    pub fn heal(&mut self, cluster: &Cluster) -> anyhow::Result<()> {
        let mut first_error = None;
        if !self.slowed.is_empty() {
            first_error = first_error.or(self.heal_slowness(cluster).err());
        }
        if self.network_faulty {
            first_error = first_error.or(self.heal_network(cluster).err());
        }
        if !self.fillers.is_empty() {
            first_error = first_error.or(self.free_disks(cluster).err());
        }
        for id in self.paused.clone() {
            first_error = first_error.or(self.resume(cluster, id).err());
        }
        for id in self.killed.clone() {
            first_error = first_error.or(self.restart(cluster, id).err());
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Largest filesystem disk-full will fill: a real data volume is not a drill target.
const MAX_FILLABLE_BYTES: u64 = 4 << 30;

/// A file filling a node's filesystem, and how long the node's log was then.
#[derive(Clone)]
struct Filler {
    node: u64,
    path: PathBuf,
    log_len: u64,
}

fn node_log(cluster: &Cluster, id: u64) -> PathBuf {
    cluster.node(id).config_path.with_file_name("umsd.log")
}

/// Whether `dir` is the root of a small filesystem of its own (a mount point of at most
/// 4 GiB), so filling it leaves the other nodes and the machine alone.
pub fn has_own_filesystem(dir: &Path) -> bool {
    let device = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    let own_mount = match (device(dir), dir.parent().and_then(device)) {
        (Some(own), Some(parent)) => own != parent,
        _ => false,
    };
    own_mount && filesystem_bytes(dir).is_some_and(|bytes| bytes <= MAX_FILLABLE_BYTES)
}

/// Total size of the filesystem holding `dir`.
fn filesystem_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; an all-zero value is valid and is overwritten.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stat` is a valid place to write the result.
    let ok = unsafe { libc::statvfs(path.as_ptr(), &mut stat) } == 0;
    ok.then(|| stat.f_blocks as u64 * stat.f_frsize as u64)
}

/// Why iptables-based faults cannot run against `cluster`, if they cannot.
pub fn network_faults_unsupported(cluster: &Cluster) -> Option<String> {
    let mut ips: Vec<IpAddr> = cluster.ids().iter().map(|&id| cluster.node(id).config.peer_listen.ip()).collect();
    let count = ips.len();
    ips.sort();
    ips.dedup();
    if ips.len() != count || ips.iter().any(IpAddr::is_unspecified) {
        return Some(format!(
            "network faults need each node on its own peer IP (umsd dev uses 127.0.0.1N); these nodes have {ips:?}"
        ));
    }
    if !Iptables::available() {
        return Some("network faults need iptables and root (scripts/setup installs iptables)".into());
    }
    None
}
