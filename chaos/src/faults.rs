//! Faults on node processes, each logged with its time and each undoable:
//! kill -9 (undone by restarting the node from its data) and SIGSTOP (undone by SIGCONT).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cluster::Cluster;
use crate::history::FaultEvent;

/// Injected faults and how to undo them.
pub struct Faults {
    started: Instant,
    pub events: Vec<FaultEvent>,
    killed: Vec<u64>,
    paused: Vec<u64>,
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
        Self { started, events: Vec::new(), killed: Vec::new(), paused: Vec::new() }
    }

    fn log(&mut self, what: String) {
        let at_ms = self.started.elapsed().as_millis() as u64;
        println!("  {:>7.1}s  {what}", at_ms as f64 / 1000.0);
        self.events.push(FaultEvent { at_ms, what });
    }

    /// kill -9: the node loses everything not fsynced, like a power cut.
    pub fn kill(&mut self, cluster: &Cluster, id: u64) -> anyhow::Result<()> {
        let pid = cluster.pid(id).with_context(|| format!("node {id} is not running"))?;
        signal(pid, "KILL")?;
        self.killed.push(id);
        self.log(format!("kill -9 node {id} (pid {pid})"));
        Ok(())
    }

    /// Starts a killed node again from its data directory and waits until it answers.
    pub fn restart(&mut self, cluster: &Cluster, id: u64) -> anyhow::Result<()> {
        let node = cluster.node(id);
        node::dev::spawn_node(&cluster.umsd, &node.config).with_context(|| format!("restarting node {id}"))?;
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

    /// SIGSTOP: the node freezes with its connections open, like a long GC pause or a
    /// hung VM.
    pub fn pause(&mut self, cluster: &Cluster, id: u64) -> anyhow::Result<()> {
        let pid = cluster.pid(id).with_context(|| format!("node {id} is not running"))?;
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
        let pid = cluster.pid(id).with_context(|| format!("node {id} is not running"))?;
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

    /// Undoes every fault still in effect.
    pub fn heal(&mut self, cluster: &Cluster) -> anyhow::Result<()> {
        for id in self.paused.clone() {
            self.resume(cluster, id)?;
        }
        for id in self.killed.clone() {
            self.restart(cluster, id)?;
        }
        Ok(())
    }
}
