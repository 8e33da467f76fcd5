//! The node's view of the cluster's bans: networks refused at accept time by every
//! gateway and the API. The list is replicated (the meta group holds it; the node copies
//! its replica here a few times a second), so a source banned on one node is refused by
//! all within a second. A gateway that bans a misbehaving address itself reports it
//! ([`BanList::report`]) so the node can make it a cluster-wide ban. Networks in the
//! allow-list (carriers, government NATs) are never banned automatically.

use std::net::IpAddr;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use crate::network::Network;

/// One ban as the gateways check it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub network: Network,
    /// Milliseconds since the epoch.
    pub until_ms: u64,
}

/// A ban a gateway decided on: `network` for `length`, and why.
pub struct Offender {
    pub network: Network,
    pub length: Duration,
    pub reason: String,
}

pub type BanReporter = Box<dyn Fn(Offender) + Send + Sync>;

#[derive(Default)]
pub struct BanList {
    bans: RwLock<Vec<Ban>>,
    never: Vec<Network>,
    reporter: OnceLock<BanReporter>,
}

impl BanList {
    /// An empty list; `never` are the networks never banned automatically.
    pub fn new(never: Vec<Network>) -> Self {
        Self { bans: RwLock::new(Vec::new()), never, reporter: OnceLock::new() }
    }

    /// Whether `ip` is banned at `now_ms`.
    pub fn is_banned(&self, ip: IpAddr, now_ms: u64) -> bool {
        self.bans.read().unwrap().iter().any(|ban| ban.until_ms > now_ms && ban.network.contains(ip))
    }

    /// Replaces the list with the cluster's.
    pub fn replace(&self, bans: Vec<Ban>) {
        *self.bans.write().unwrap() = bans;
    }

    /// Where gateways' own bans go (set once: the node's proposer).
    pub fn report_to(&self, reporter: BanReporter) {
        let _ = self.reporter.set(reporter);
    }

    /// A gateway banned `ip` for `length`: made cluster-wide unless it is allow-listed.
    pub fn report(&self, ip: IpAddr, length: Duration, reason: &str) {
        if self.never.iter().any(|network| network.contains(ip)) {
            return;
        }
        if let Some(reporter) = self.reporter.get() {
            reporter(Offender { network: Network::host(ip), length, reason: reason.to_string() });
        }
    }

    /// Whether automatic bans leave `ip` alone.
    pub fn is_allow_listed(&self, ip: IpAddr) -> bool {
        self.never.iter().any(|network| network.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn bans_hold_for_their_networks_until_they_end() {
        let list = BanList::new(Vec::new());
        list.replace(vec![Ban { network: Network::parse("198.51.100.0/24").unwrap(), until_ms: 1_000 }]);
        assert!(list.is_banned("198.51.100.7".parse().unwrap(), 999));
        assert!(!list.is_banned("198.51.100.7".parse().unwrap(), 1_000), "ended");
        assert!(!list.is_banned("198.51.101.7".parse().unwrap(), 0));
    }

    #[test]
    fn allow_listed_networks_are_never_reported() {
        let list = BanList::new(vec![Network::parse("10.0.0.0/8").unwrap()]);
        let reported = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&reported);
        list.report_to(Box::new(move |offender| seen.lock().unwrap().push(offender.network.to_string())));
        list.report("10.1.2.3".parse().unwrap(), Duration::from_secs(60), "garbage");
        list.report("203.0.113.9".parse().unwrap(), Duration::from_secs(60), "garbage");
        assert_eq!(*reported.lock().unwrap(), ["203.0.113.9/32"]);
    }
}
