//! Network faults between nodes, as iptables rules on their peer addresses (each node
//! of a local cluster has its own IP, 127.0.0.1N): a partition drops every packet one
//! side sends to the other's peer port, packet loss drops a random share. Matching the
//! port too keeps other clusters on the same addresses (parallel tests) unaffected.
//! A drill's rules live in its own chain, `UMS-CHAOS-<port>`, jumped to from INPUT
//! (loopback packets pass INPUT once), so healing removes one chain and a drill that
//! crashed leaves nothing the next drill on that cluster does not clear first.
//!
//! Rules are built by pure functions (unit-tested); [`Iptables`] runs them.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use anyhow::{Context, bail};

/// Prefix of every chain the drills create.
pub const CHAIN_PREFIX: &str = "UMS-CHAOS";

/// The arguments of one rule appended to a drill's chain.
pub type Rule = Vec<String>;

/// Drops what `from` (a node's peer IP) sends to the peer at `to`.
fn drop_rule(from: IpAddr, to: SocketAddr, probability: Option<f64>) -> Rule {
    let mut rule: Rule = ["-p", "tcp", "-s"].map(String::from).to_vec();
    rule.extend([from.to_string(), "-d".into(), to.ip().to_string(), "--dport".into(), to.port().to_string()]);
    if let Some(p) = probability {
        rule.extend(["-m", "statistic", "--mode", "random", "--probability"].map(String::from));
        rule.push(format!("{p:.3}"));
    }
    rule.extend(["-j", "DROP"].map(String::from));
    rule
}

/// Rules that cut `side_a` from `side_b` (peer addresses) in both directions; traffic
/// within a side flows.
pub fn partition_rules(side_a: &[SocketAddr], side_b: &[SocketAddr]) -> Vec<Rule> {
    let mut rules = Vec::new();
    for &a in side_a {
        for &b in side_b {
            rules.push(drop_rule(a.ip(), b, None));
            rules.push(drop_rule(b.ip(), a, None));
        }
    }
    rules
}

/// Rules that drop `probability` of the packets between every two of `peers`.
pub fn loss_rules(peers: &[SocketAddr], probability: f64) -> Vec<Rule> {
    let mut rules = Vec::new();
    for &from in peers {
        for &to in peers.iter().filter(|&&to| to != from) {
            rules.push(drop_rule(from.ip(), to, Some(probability)));
        }
    }
    rules
}

/// One drill's chain of rules; runs iptables (root needed; `scripts/setup` installs it).
pub struct Iptables {
    chain: String,
}

impl Iptables {
    /// The chain of the cluster whose first node listens for peers on `port`.
    pub fn for_cluster(port: u16) -> Self {
        Self { chain: format!("{CHAIN_PREFIX}-{port}") }
    }

    fn run(args: &[&str]) -> anyhow::Result<std::process::Output> {
        // -w: wait for the xtables lock when another drill changes rules at the same time.
        Command::new("iptables")
            .arg("-w")
            .args(args)
            .output()
            .context("cannot run iptables (install it with scripts/setup; network faults need root)")
    }

    fn must(args: &[&str]) -> anyhow::Result<()> {
        let output = Self::run(args)?;
        if !output.status.success() {
            bail!("iptables {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(())
    }

    /// Whether iptables can be run here (installed, and we may change rules).
    pub fn available() -> bool {
        Self::run(&["-S", "INPUT"]).is_ok_and(|output| output.status.success())
    }

    /// Creates the chain (emptied if it existed) and the jump to it from INPUT.
    pub fn install(&self) -> anyhow::Result<()> {
        let chain = self.chain.as_str();
        if !Self::run(&["-N", chain])?.status.success() {
            Self::must(&["-F", chain])?; // It existed: a leftover of an earlier drill.
        }
        if !Self::run(&["-C", "INPUT", "-j", chain])?.status.success() {
            Self::must(&["-I", "INPUT", "1", "-j", chain])?;
        }
        Ok(())
    }

    pub fn add(&self, rules: &[Rule]) -> anyhow::Result<()> {
        for rule in rules {
            let mut args = vec!["-A", self.chain.as_str()];
            args.extend(rule.iter().map(String::as_str));
            Self::must(&args)?;
        }
        Ok(())
    }

    /// Removes every rule, the jump and the chain; quiet when there is nothing to remove.
    pub fn uninstall(&self) -> anyhow::Result<()> {
        let chain = self.chain.as_str();
        while Self::run(&["-D", "INPUT", "-j", chain])?.status.success() {}
        let _ = Self::run(&["-F", chain])?;
        let _ = Self::run(&["-X", chain])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 10 + n], 7000 + 100 * u16::from(n)))
    }

    /// (source IP, destination IP, destination port) of each rule.
    fn flows(rules: &[Rule]) -> Vec<(String, String, String)> {
        rules.iter().map(|r| (r[3].clone(), r[5].clone(), r[7].clone())).collect()
    }

    #[test]
    fn a_partition_cuts_every_pair_across_the_sides_both_ways_and_nothing_within() {
        let rules = partition_rules(&[peer(1)], &[peer(2), peer(3)]);
        let expected = [("11", "12", "7200"), ("12", "11", "7100"), ("11", "13", "7300"), ("13", "11", "7100")]
            .map(|(a, b, port)| (format!("127.0.0.{a}"), format!("127.0.0.{b}"), port.to_string()));
        assert_eq!(flows(&rules), expected);
        assert!(rules.iter().all(|r| r.ends_with(&["-j".to_string(), "DROP".to_string()])));
        assert!(rules.iter().all(|r| !r.contains(&"statistic".to_string())));
    }

    #[test]
    fn loss_applies_to_every_ordered_pair_with_the_probability() {
        let rules = loss_rules(&[peer(1), peer(2), peer(3)], 0.2);
        assert_eq!(rules.len(), 6);
        assert!(flows(&rules).iter().all(|(from, to, _)| from != to));
        assert!(rules.iter().all(|r| r.contains(&"0.200".to_string())));
    }
}
