//! Abuse limits shared by the gateways. A client is told apart from an attacker by what it
//! does wrong, not by how much it does: a ministry's office of a thousand staff reaches
//! us from one NAT address, so volume from one address is only capped where it would
//! starve everyone else (concurrent connections, new connections per second, all sized
//! for such an office), while misbehaviour (failed logins, garbage and protocol errors,
//! unknown recipients) counts as offences, and an address with too many of them is
//! refused for a while. Failed logins are throttled in [`crate::logins`].
//!
//! Pure bookkeeping: callers pass the current time, so tests need no clocks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::bans::BanList;
use crate::clock::now_ms;

/// Connection limits of one protocol's listeners. The defaults suit an office of 1,000
/// staff behind one address: five IMAP connections each (a desktop client's usual pool),
/// all of them reconnecting within half a minute when the office's link comes back (a
/// burst of 2,000, then 150 a second).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Connections one IP may hold open at once.
    pub max_per_ip: usize,
    /// New connections per second one IP may open, sustained.
    pub rate_per_ip: f64,
    /// New connections one IP may open in a burst above the sustained rate.
    pub burst_per_ip: f64,
    /// Connections all clients together may hold open (the node's own protection).
    pub max_total: usize,
    /// Offences (failed logins, bad commands, unknown recipients) one IP may commit
    /// within `offence_window_secs` before its new connections are refused.
    pub max_offences_per_ip: u32,
    pub offence_window_secs: u64,
    /// How long an IP over its offences is refused.
    pub ban_secs: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_per_ip: 5_000,
            rate_per_ip: 150.0,
            burst_per_ip: 2_000.0,
            max_total: 20_000,
            // A thousand staff mistyping a password now and then stay far below this;
            // a password sprayer or a garbage flood passes it within seconds.
            max_offences_per_ip: 300,
            offence_window_secs: 600,
            ban_secs: 600,
        }
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    TooManyConnections,
    TooManyNewConnections,
    /// The IP committed too many offences recently.
    Misbehaving,
    /// The listener is full (all clients together).
    Busy,
    /// The address is in the cluster's ban list.
    Banned,
}

#[derive(Debug)]
struct IpState {
    open: usize,
    /// Token bucket of new connections.
    tokens: f64,
    refilled: Instant,
    /// Offences in the window that began at `offences_since`.
    offences: u32,
    offences_since: Instant,
    banned_until: Option<Instant>,
}

/// Counts connections and offences per client IP; a [`ConnectionPermit`] is held while
/// a connection is open.
pub struct IpLimiter {
    limits: ConnectionLimits,
    /// The cluster's bans, checked first; this limiter's own bans are reported to it.
    bans: Arc<BanList>,
    ips: Mutex<HashMap<IpAddr, IpState>>,
    open_total: AtomicUsize,
}

/// Bound to a connection: dropping it frees the IP's slot.
pub struct ConnectionPermit {
    limiter: Arc<IpLimiter>,
    ip: IpAddr,
}

/// Entries kept before idle ones are swept (bounds memory under a spoofed-source flood).
const SWEEP_ABOVE: usize = 10_000;

impl IpLimiter {
    pub fn new(limits: ConnectionLimits, bans: Arc<BanList>) -> Arc<Self> {
        Arc::new(Self { limits, bans, ips: Mutex::new(HashMap::new()), open_total: AtomicUsize::new(0) })
    }

    fn fresh(&self, now: Instant) -> IpState {
        IpState {
            open: 0,
            tokens: self.limits.burst_per_ip,
            refilled: now,
            offences: 0,
            offences_since: now,
            banned_until: None,
        }
    }

    /// Admits a new connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<ConnectionPermit, Refusal> {
        if self.bans.is_banned(ip, now_ms()) {
            return Err(Refusal::Banned);
        }
        let mut ips = self.ips.lock().unwrap();
        if ips.len() > SWEEP_ABOVE {
            let burst = self.limits.burst_per_ip;
            ips.retain(|_, s| {
                s.open > 0 || s.banned_until.is_some_and(|until| until > now) || s.tokens + self.refill(s, now) < burst
            });
        }
        let state = ips.entry(ip).or_insert_with(|| self.fresh(now));
        state.tokens = (state.tokens + self.refill(state, now)).min(self.limits.burst_per_ip);
        state.refilled = now;
        match state.banned_until {
            Some(until) if until > now => return Err(Refusal::Misbehaving),
            Some(_) => state.banned_until = None,
            None => {}
        }
        if state.open >= self.limits.max_per_ip {
            return Err(Refusal::TooManyConnections);
        }
        if self.open_total.load(Ordering::Relaxed) >= self.limits.max_total {
            return Err(Refusal::Busy);
        }
        if state.tokens < 1.0 {
            return Err(Refusal::TooManyNewConnections);
        }
        state.tokens -= 1.0;
        state.open += 1;
        self.open_total.fetch_add(1, Ordering::Relaxed);
        Ok(ConnectionPermit { limiter: Arc::clone(self), ip })
    }

    fn refill(&self, state: &IpState, now: Instant) -> f64 {
        now.saturating_duration_since(state.refilled).as_secs_f64() * self.limits.rate_per_ip
    }

    /// `count` offences by `ip`; past the limit its new connections are refused for
    /// `ban_secs`.
    pub fn record_offences(&self, ip: IpAddr, count: u32, now: Instant) {
        if count == 0 {
            return;
        }
        let mut ips = self.ips.lock().unwrap();
        let state = ips.entry(ip).or_insert_with(|| self.fresh(now));
        if now.saturating_duration_since(state.offences_since) >= Duration::from_secs(self.limits.offence_window_secs) {
            (state.offences, state.offences_since) = (0, now);
        }
        state.offences = state.offences.saturating_add(count);
        if state.offences >= self.limits.max_offences_per_ip {
            let length = Duration::from_secs(self.limits.ban_secs);
            if !self.bans.is_allow_listed(ip) {
                state.banned_until = Some(now + length);
                metrics::counter!("ums_gateway_bans_total").increment(1);
            }
            (state.offences, state.offences_since) = (0, now);
            drop(ips);
            self.bans.report(ip, length, "too many failed commands, logins or unknown recipients");
        }
    }

    /// Connections `ip` holds open.
    pub fn open(&self, ip: IpAddr) -> usize {
        self.ips.lock().unwrap().get(&ip).map_or(0, |s| s.open)
    }
}

impl std::fmt::Debug for ConnectionPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPermit").field("ip", &self.ip).finish()
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.limiter.open_total.fetch_sub(1, Ordering::Relaxed);
        if let Some(state) = self.limiter.ips.lock().unwrap().get_mut(&self.ip) {
            state.open = state.open.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn concurrent_connections_are_capped_per_ip_and_freed_on_drop() {
        let limiter = IpLimiter::new(
            ConnectionLimits { max_per_ip: 2, rate_per_ip: 100.0, burst_per_ip: 100.0, ..ConnectionLimits::default() },
            Arc::default(),
        );
        let now = Instant::now();
        let a = limiter.admit(ip(1), now).unwrap();
        let _b = limiter.admit(ip(1), now).unwrap();
        assert_eq!(limiter.admit(ip(1), now).unwrap_err(), Refusal::TooManyConnections);
        // Another IP is not affected.
        let _c = limiter.admit(ip(2), now).unwrap();
        drop(a);
        assert_eq!(limiter.open(ip(1)), 1);
        limiter.admit(ip(1), now).unwrap();
    }

    #[test]
    fn connection_rate_is_a_token_bucket() {
        let limiter = IpLimiter::new(
            ConnectionLimits { max_per_ip: 100, rate_per_ip: 2.0, burst_per_ip: 3.0, ..ConnectionLimits::default() },
            Arc::default(),
        );
        let start = Instant::now();
        for _ in 0..3 {
            drop(limiter.admit(ip(1), start).unwrap());
        }
        assert_eq!(limiter.admit(ip(1), start).unwrap_err(), Refusal::TooManyNewConnections);
        // Half a second at 2/s refills one token.
        let later = start + Duration::from_millis(500);
        drop(limiter.admit(ip(1), later).unwrap());
        assert_eq!(limiter.admit(ip(1), later).unwrap_err(), Refusal::TooManyNewConnections);
    }

    #[test]
    fn an_office_of_a_thousand_behind_one_address_gets_in() {
        let limiter = IpLimiter::new(ConnectionLimits::default(), Arc::default());
        let office = ip(7);
        let start = Instant::now();
        // The link comes back: every desktop client opens its five connections within 30 s.
        let permits: Vec<ConnectionPermit> = (0..5_000)
            .map(|n| limiter.admit(office, start + Duration::from_millis(n * 6)).expect("a well-behaved office"))
            .collect();
        assert_eq!(limiter.open(office), 5_000);
        // Everyone mistypes a password now and then: well below the offences limit.
        limiter.record_offences(office, 100, start);
        drop(permits.into_iter().take(10).collect::<Vec<_>>());
        limiter.admit(office, start + Duration::from_secs(31)).expect("still welcome");
    }

    #[test]
    fn an_address_that_keeps_misbehaving_is_refused_for_a_while() {
        let limits = ConnectionLimits { max_offences_per_ip: 10, ban_secs: 60, ..ConnectionLimits::default() };
        let limiter = IpLimiter::new(limits, Arc::default());
        let start = Instant::now();
        limiter.record_offences(ip(1), 9, start);
        drop(limiter.admit(ip(1), start).expect("nine offences are tolerated"));
        limiter.record_offences(ip(1), 1, start);
        assert_eq!(limiter.admit(ip(1), start).unwrap_err(), Refusal::Misbehaving);
        drop(limiter.admit(ip(2), start).expect("other addresses are not affected"));
        drop(limiter.admit(ip(1), start + Duration::from_secs(61)).expect("the ban ends"));
        // Offences age out with their window.
        let later = start + Duration::from_secs(1_000);
        limiter.record_offences(ip(3), 9, start);
        limiter.record_offences(ip(3), 9, later);
        drop(limiter.admit(ip(3), later).expect("offences from an old window do not add up"));
    }

    #[test]
    fn the_listener_as_a_whole_is_capped() {
        let limiter = IpLimiter::new(ConnectionLimits { max_total: 3, ..ConnectionLimits::default() }, Arc::default());
        let now = Instant::now();
        let held: Vec<ConnectionPermit> = (1..=3).map(|n| limiter.admit(ip(n), now).unwrap()).collect();
        assert_eq!(limiter.admit(ip(9), now).unwrap_err(), Refusal::Busy);
        drop(held);
        drop(limiter.admit(ip(9), now).expect("room again"));
    }
}
