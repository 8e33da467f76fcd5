//! Abuse limits shared by the gateways: concurrent connections and connection rate per
//! client IP (a flood from one address must not starve everyone else), and throttling
//! of failed logins per IP and per account (password guessing).
//!
//! Pure bookkeeping: callers pass the current time, so tests need no clocks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Per-IP connection limits of one listener.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Connections one IP may hold open at once.
    pub max_per_ip: usize,
    /// New connections per second one IP may open, sustained.
    pub rate_per_ip: f64,
    /// New connections one IP may open in a burst above the sustained rate.
    pub burst_per_ip: f64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self { max_per_ip: 64, rate_per_ip: 50.0, burst_per_ip: 200.0 }
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    TooManyConnections,
    TooManyNewConnections,
}

#[derive(Debug)]
struct IpState {
    open: usize,
    /// Token bucket of new connections.
    tokens: f64,
    refilled: Instant,
}

/// Counts connections per client IP; a [`ConnectionPermit`] is held while one is open.
#[derive(Debug)]
pub struct IpLimiter {
    limits: ConnectionLimits,
    ips: Mutex<HashMap<IpAddr, IpState>>,
}

/// Bound to a connection: dropping it frees the IP's slot.
#[derive(Debug)]
pub struct ConnectionPermit {
    limiter: Arc<IpLimiter>,
    ip: IpAddr,
}

/// Entries kept before idle ones are swept (bounds memory under a spoofed-source flood).
const SWEEP_ABOVE: usize = 10_000;

impl IpLimiter {
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self { limits, ips: Mutex::new(HashMap::new()) })
    }

    /// Admits a new connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<ConnectionPermit, Refusal> {
        let mut ips = self.ips.lock().unwrap();
        if ips.len() > SWEEP_ABOVE {
            let burst = self.limits.burst_per_ip;
            ips.retain(|_, s| s.open > 0 || s.tokens + self.refill(s, now) < burst);
        }
        let state = ips.entry(ip).or_insert(IpState { open: 0, tokens: self.limits.burst_per_ip, refilled: now });
        state.tokens = (state.tokens + self.refill(state, now)).min(self.limits.burst_per_ip);
        state.refilled = now;
        if state.open >= self.limits.max_per_ip {
            return Err(Refusal::TooManyConnections);
        }
        if state.tokens < 1.0 {
            return Err(Refusal::TooManyNewConnections);
        }
        state.tokens -= 1.0;
        state.open += 1;
        Ok(ConnectionPermit { limiter: Arc::clone(self), ip })
    }

    fn refill(&self, state: &IpState, now: Instant) -> f64 {
        now.saturating_duration_since(state.refilled).as_secs_f64() * self.limits.rate_per_ip
    }

    /// Connections `ip` holds open.
    pub fn open(&self, ip: IpAddr) -> usize {
        self.ips.lock().unwrap().get(&ip).map_or(0, |s| s.open)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Some(state) = self.limiter.ips.lock().unwrap().get_mut(&self.ip) {
            state.open = state.open.saturating_sub(1);
        }
    }
}

/// Failed-login limits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoginLimits {
    /// Failed logins from one IP within `window_secs` before that IP is refused.
    pub max_failures_per_ip: u32,
    /// Failed logins for one account within `window_secs` before it is refused.
    pub max_failures_per_account: u32,
    pub window_secs: u64,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self { max_failures_per_ip: 20, max_failures_per_account: 10, window_secs: 300 }
    }
}

/// Remembers recent failed logins per IP and per account. Once either has failed too
/// often within the window, further attempts are refused until the window has passed
/// since the first failure, without even checking the password.
#[derive(Debug)]
pub struct LoginThrottle {
    limits: LoginLimits,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginThrottle {
    pub fn new(limits: LoginLimits) -> Arc<Self> {
        Arc::new(Self { limits, failures: Mutex::new(HashMap::new()) })
    }

    fn keys(ip: IpAddr, account: &str) -> [String; 2] {
        // Spelled as the directory would resolve it, so " Alice@x" is still alice@x.
        [format!("ip:{ip}"), format!("account:{}", account.trim().to_lowercase())]
    }

    /// Whether a login attempt from `ip` for `account` may go ahead now.
    pub fn allows(&self, ip: IpAddr, account: &str, now: Instant) -> bool {
        let window = Duration::from_secs(self.limits.window_secs);
        let mut failures = self.failures.lock().unwrap();
        let [ip_key, account_key] = Self::keys(ip, account);
        let mut within = |key: &str, max: u32| match failures.get(key) {
            Some(&(count, since)) if now.saturating_duration_since(since) < window => count < max,
            Some(_) => {
                failures.remove(key);
                true
            }
            None => true,
        };
        within(&ip_key, self.limits.max_failures_per_ip) && within(&account_key, self.limits.max_failures_per_account)
    }

    pub fn record_failure(&self, ip: IpAddr, account: &str, now: Instant) {
        let window = Duration::from_secs(self.limits.window_secs);
        let mut failures = self.failures.lock().unwrap();
        if failures.len() > SWEEP_ABOVE {
            failures.retain(|_, (_, since)| now.saturating_duration_since(*since) < window);
        }
        for key in Self::keys(ip, account) {
            let entry = failures.entry(key).or_insert((0, now));
            if now.saturating_duration_since(entry.1) >= window {
                *entry = (0, now);
            }
            entry.0 += 1;
        }
    }

    /// A successful login clears the account's record (not the IP's).
    pub fn record_success(&self, ip: IpAddr, account: &str) {
        let [_, account_key] = Self::keys(ip, account);
        self.failures.lock().unwrap().remove(&account_key);
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
        let limiter = IpLimiter::new(ConnectionLimits { max_per_ip: 2, rate_per_ip: 100.0, burst_per_ip: 100.0 });
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
        let limiter = IpLimiter::new(ConnectionLimits { max_per_ip: 100, rate_per_ip: 2.0, burst_per_ip: 3.0 });
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
    fn failed_logins_throttle_the_account_and_the_ip_for_a_window() {
        let throttle =
            LoginThrottle::new(LoginLimits { max_failures_per_ip: 5, max_failures_per_account: 3, window_secs: 60 });
        let now = Instant::now();
        for _ in 0..3 {
            assert!(throttle.allows(ip(1), "Alice@x", now));
            throttle.record_failure(ip(1), "Alice@x", now);
        }
        assert!(!throttle.allows(ip(1), "alice@x", now), "account throttled, case-insensitively");
        assert!(!throttle.allows(ip(9), "alice@x", now), "from any IP");
        assert!(throttle.allows(ip(1), "bob@x", now), "the IP is still under its own limit");
        throttle.record_failure(ip(1), "bob@x", now);
        throttle.record_failure(ip(1), "carol@x", now);
        assert!(!throttle.allows(ip(1), "dave@x", now), "the IP reached 5 failures");
        let after_window = now + Duration::from_secs(61);
        assert!(throttle.allows(ip(1), "alice@x", after_window));
    }

    #[test]
    fn success_clears_the_account() {
        let throttle =
            LoginThrottle::new(LoginLimits { max_failures_per_ip: 50, max_failures_per_account: 2, window_secs: 60 });
        let now = Instant::now();
        throttle.record_failure(ip(1), "a@x", now);
        throttle.record_success(ip(1), "a@x");
        throttle.record_failure(ip(1), "a@x", now);
        assert!(throttle.allows(ip(1), "a@x", now));
    }
}
