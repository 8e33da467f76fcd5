//! Failed logins, wherever they happen (IMAP, SMTP submission, the HTTP API's Basic
//! login): one [`LoginThrottle`] per node that every protocol shares, and the one login
//! check they all call, [`check_login`].
//!
//! - A *source* is an IPv4 address or an IPv6 /64 (one customer's network: a guesser
//!   holds a whole /64, so counting single IPv6 addresses would count nothing).
//! - An *account* is the user a login names, whichever spelling was typed (e-mail
//!   address, phone number, `emp:` number): it is resolved before it is counted.
//! - A source past `max_failures_per_ip` failures in the window is refused (spraying).
//! - Every failure is answered only after a delay that doubles with the account's recent
//!   failures, so guessing one person's password slows to a crawl.
//! - An account past `max_failures_per_account` is refused only to sources it has not
//!   logged in from lately: from a familiar source the real user still gets in (after
//!   the delay), so a guesser elsewhere cannot lock them out.
//!
//! The bookkeeping is pure (callers pass the time); [`check_login`] adds the directory
//! and the delay.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::mail_service::{Account, MailService, ServiceError};

/// Failed-login limits of a node (`[logins]` in `node.toml`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoginLimits {
    /// Failed logins from one source within `window_secs` before it is refused. An
    /// office of 1,000 staff behind one address shares it, so it is generous.
    pub max_failures_per_ip: u32,
    /// Failed logins for one account within `window_secs` before sources it has not
    /// logged in from are refused for it.
    pub max_failures_per_account: u32,
    pub window_secs: u64,
    /// The delay before a failure is answered, doubled for each recent failure of the
    /// account, up to `max_failure_delay_ms`.
    pub failure_delay_ms: u64,
    pub max_failure_delay_ms: u64,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            max_failures_per_ip: 300,
            max_failures_per_account: 10,
            window_secs: 300,
            failure_delay_ms: 500,
            max_failure_delay_ms: 8_000,
        }
    }
}

impl LoginLimits {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_failures_per_ip == 0 || self.max_failures_per_account == 0 || self.window_secs == 0 {
            return Err("logins: max_failures_per_ip, max_failures_per_account and window_secs must be positive".into());
        }
        if self.failure_delay_ms > self.max_failure_delay_ms {
            return Err("logins: failure_delay_ms cannot exceed max_failure_delay_ms".into());
        }
        Ok(())
    }
}

/// How long a source a user logged in from stays familiar for that account.
const FAMILIAR_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Familiar sources remembered per account (a laptop at home, the office, a phone).
const FAMILIAR_MAX: usize = 8;
/// Entries kept before expired ones are swept.
const SWEEP_ABOVE: usize = 10_000;

/// The source a failure is counted against: the address itself for IPv4 (and IPv4
/// mapped into IPv6), its /64 for IPv6.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & (!0u128 << 64)).into()),
        },
    }
}

/// Failures within a window that started at `since`.
#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    since: Instant,
}

impl Failures {
    /// The count, or 0 once the window has passed.
    fn current(&self, now: Instant, window: Duration) -> u32 {
        if now.saturating_duration_since(self.since) < window { self.count } else { 0 }
    }

    fn add(entry: &mut Option<Failures>, now: Instant, window: Duration) -> u32 {
        let count = entry.map_or(0, |f| f.current(now, window)) + 1;
        let since = match entry {
            Some(f) if count > 1 => f.since,
            _ => now,
        };
        *entry = Some(Failures { count, since });
        count
    }
}

#[derive(Debug, Default)]
struct AccountRecord {
    failures: Option<Failures>,
    /// Sources the account logged in from, with when it last did.
    familiar: Vec<(IpAddr, Instant)>,
}

#[derive(Debug, Default)]
struct Books {
    sources: HashMap<IpAddr, Failures>,
    accounts: HashMap<String, AccountRecord>,
}

/// A refused login, as the node's audit log hears of it.
pub struct LoginFailure<'a> {
    /// Where: `imap`, `smtp`, `http`.
    pub protocol: &'a str,
    /// The login as typed.
    pub login: &'a str,
    pub ip: IpAddr,
    /// Refused unchecked, for too many failures (else: a wrong login or password).
    pub throttled: bool,
}

/// Where refused logins are reported.
pub type LoginReporter = Box<dyn Fn(&LoginFailure<'_>) + Send + Sync>;

/// The failed-login bookkeeping of a node, shared by every protocol.
pub struct LoginThrottle {
    limits: LoginLimits,
    books: Mutex<Books>,
    reporter: OnceLock<LoginReporter>,
}

impl LoginThrottle {
    pub fn new(limits: LoginLimits) -> Arc<Self> {
        Arc::new(Self { limits, books: Mutex::new(Books::default()), reporter: OnceLock::new() })
    }

    /// Reports every refused login to `reporter` from now on (set once: the audit log).
    pub fn report_to(&self, reporter: LoginReporter) {
        let _ = self.reporter.set(reporter);
    }

    fn report(&self, failure: LoginFailure<'_>) {
        if let Some(reporter) = self.reporter.get() {
            reporter(&failure);
        }
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.limits.window_secs)
    }

    /// Whether a login from `ip` for `account` (resolved) may be checked now.
    pub fn allows(&self, ip: IpAddr, account: &str, now: Instant) -> bool {
        let (source, window) = (source_of(ip), self.window());
        let books = self.books.lock().unwrap();
        if books.sources.get(&source).is_some_and(|f| f.current(now, window) >= self.limits.max_failures_per_ip) {
            return false;
        }
        let Some(record) = books.accounts.get(account) else { return true };
        let failures = record.failures.map_or(0, |f| f.current(now, window));
        failures < self.limits.max_failures_per_account
            || record
                .familiar
                .iter()
                .any(|&(known, at)| known == source && now.saturating_duration_since(at) < FAMILIAR_FOR)
    }

    /// Counts a failure; returns how long to wait before answering it.
    pub fn record_failure(&self, ip: IpAddr, account: &str, now: Instant) -> Duration {
        let (source, window) = (source_of(ip), self.window());
        let mut books = self.books.lock().unwrap();
        if books.sources.len() > SWEEP_ABOVE {
            books.sources.retain(|_, f| f.current(now, window) > 0);
        }
        if books.accounts.len() > SWEEP_ABOVE {
            books.accounts.retain(|_, r| {
                r.familiar.retain(|&(_, at)| now.saturating_duration_since(at) < FAMILIAR_FOR);
                r.failures.is_some_and(|f| f.current(now, window) > 0) || !r.familiar.is_empty()
            });
        }
        let mut entry = books.sources.get(&source).copied();
        Failures::add(&mut entry, now, window);
        books.sources.insert(source, entry.expect("just added"));
        let record = books.accounts.entry(account.to_string()).or_default();
        let failures = Failures::add(&mut record.failures, now, window);
        self.delay_after(failures)
    }

    /// The delay before answering the account's `failures`-th recent failure.
    fn delay_after(&self, failures: u32) -> Duration {
        let doubled = self.limits.failure_delay_ms.saturating_mul(1 << failures.saturating_sub(1).min(20));
        Duration::from_millis(doubled.min(self.limits.max_failure_delay_ms))
    }

    /// A successful login clears the account's failures (not the source's) and makes
    /// the source familiar to the account.
    pub fn record_success(&self, ip: IpAddr, account: &str, now: Instant) {
        let source = source_of(ip);
        let mut books = self.books.lock().unwrap();
        let record = books.accounts.entry(account.to_string()).or_default();
        record.failures = None;
        record.familiar.retain(|&(known, _)| known != source);
        if record.familiar.len() >= FAMILIAR_MAX {
            record.familiar.remove(0);
        }
        record.familiar.push((source, now));
    }
}

/// What a login attempt came to.
#[derive(Debug)]
pub enum LoginOutcome {
    Valid(Account),
    /// Wrong login or password (answered after the failure delay).
    Invalid,
    /// Too many recent failures: not checked at all.
    Throttled,
    /// The directory could not be asked.
    Unavailable(ServiceError),
}

/// Checks a login for any protocol: resolves the account the login names, asks the
/// throttle, checks the password, reports a refusal, and waits out the failure delay
/// before an `Invalid`.
pub async fn check_login(
    service: &dyn MailService,
    throttle: &LoginThrottle,
    protocol: &str,
    ip: IpAddr,
    login: &str,
    password: &str,
) -> LoginOutcome {
    let refused = |throttled| LoginFailure { protocol, login, ip, throttled };
    let account = match service.login_account(login).await {
        Ok(Some(user_id)) => user_id,
        // Unknown logins are counted under their own spelling, like a real account.
        Ok(None) => login.trim().to_lowercase(),
        Err(e) => return LoginOutcome::Unavailable(e),
    };
    if !throttle.allows(ip, &account, Instant::now()) {
        throttle.report(refused(true));
        return LoginOutcome::Throttled;
    }
    match service.verify_login(&account, password).await {
        Ok(Some(found)) => {
            throttle.record_success(ip, &account, Instant::now());
            LoginOutcome::Valid(found)
        }
        Ok(None) => {
            let delay = throttle.record_failure(ip, &account, Instant::now());
            throttle.report(refused(false));
            tokio::time::sleep(delay).await;
            LoginOutcome::Invalid
        }
        Err(e) => LoginOutcome::Unavailable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_ip: u32, per_account: u32) -> LoginLimits {
        LoginLimits {
            max_failures_per_ip: per_ip,
            max_failures_per_account: per_account,
            window_secs: 60,
            ..LoginLimits::default()
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_slash_64() {
        assert_eq!(source_of(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_of(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")), ip("2001:db8:1:2::"));
        assert_eq!(source_of(ip("2001:db8:1:2::1")), source_of(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(source_of(ip("2001:db8:1:2::1")), source_of(ip("2001:db8:1:3::1")));
    }

    #[test]
    fn a_source_that_keeps_failing_is_refused_for_a_window() {
        let throttle = LoginThrottle::new(limits(5, 100));
        let now = Instant::now();
        for n in 0..5 {
            assert!(throttle.allows(ip("2001:db8::1"), "spray", now));
            throttle.record_failure(ip(&format!("2001:db8::{n}")), &format!("user{n}@x"), now);
        }
        assert!(!throttle.allows(ip("2001:db8::ffff"), "another@x", now), "the whole /64 reached 5 failures");
        assert!(throttle.allows(ip("2001:db9::1"), "another@x", now), "another network is not affected");
        assert!(throttle.allows(ip("2001:db8::1"), "another@x", now + Duration::from_secs(61)));
    }

    #[test]
    fn a_guessed_account_stays_open_to_where_its_user_logs_in_from() {
        let throttle = LoginThrottle::new(limits(1000, 3));
        let (office, guesser) = (ip("192.0.2.10"), ip("198.51.100.66"));
        let now = Instant::now();
        throttle.record_success(office, "achieng@health.go.ke", now);
        for _ in 0..3 {
            throttle.record_failure(guesser, "achieng@health.go.ke", now);
        }
        assert!(!throttle.allows(guesser, "achieng@health.go.ke", now), "the guesser is refused");
        assert!(!throttle.allows(ip("203.0.113.1"), "achieng@health.go.ke", now), "so is any unfamiliar source");
        assert!(throttle.allows(office, "achieng@health.go.ke", now), "the real user is not locked out");
        // Her success clears the count, so the guesser starts over (and slowly).
        throttle.record_success(office, "achieng@health.go.ke", now);
        assert!(throttle.allows(guesser, "achieng@health.go.ke", now));
        assert!(throttle.allows(guesser, "achieng@health.go.ke", now + Duration::from_secs(61)));
    }

    #[test]
    fn each_failure_of_an_account_waits_twice_as_long_up_to_the_cap() {
        let throttle =
            LoginThrottle::new(LoginLimits { failure_delay_ms: 500, max_failure_delay_ms: 3000, ..limits(1000, 1000) });
        let now = Instant::now();
        let delays: Vec<u64> =
            (0..5).map(|_| throttle.record_failure(ip("192.0.2.1"), "a@x", now).as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 3000, 3000]);
        assert_eq!(throttle.record_failure(ip("192.0.2.1"), "b@x", now), Duration::from_millis(500), "per account");
        let later = now + Duration::from_secs(61);
        assert_eq!(throttle.record_failure(ip("192.0.2.1"), "a@x", later), Duration::from_millis(500), "a new window");
    }

    #[test]
    fn familiar_sources_are_bounded_and_forgotten() {
        let throttle = LoginThrottle::new(limits(1000, 1));
        let now = Instant::now();
        for n in 0..=FAMILIAR_MAX {
            throttle.record_success(ip(&format!("192.0.2.{n}")), "a@x", now);
        }
        throttle.record_failure(ip("198.51.100.1"), "a@x", now);
        assert!(!throttle.allows(ip("192.0.2.0"), "a@x", now), "the oldest of too many is dropped");
        assert!(throttle.allows(ip("192.0.2.8"), "a@x", now));
        let month_later = now + FAMILIAR_FOR;
        throttle.record_failure(ip("198.51.100.1"), "a@x", month_later);
        assert!(!throttle.allows(ip("192.0.2.8"), "a@x", month_later), "familiar only for a while");
    }
}
