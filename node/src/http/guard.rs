//! Flood defence of the API, the first thing every connection and request meets: the
//! mail gateways' per-source connection limits (admitted when the connection is
//! accepted, refused on its first request), a request rate per source (governor's
//! GCRA; an IPv4 address or an IPv6 /64, as logins count them), and offences — requests
//! over the rate, refused credentials — that past the limit ban the source on every
//! node, like a password sprayer on IMAP.

use std::any::Any;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use gateways::bans::BanList;
use gateways::limits::{ConnectionPermit, IpLimiter, Refusal};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use serde_json::json;

use super::settings::HttpSettings;

type RequestLimiter = RateLimiter<IpAddr, HashMapStateStore<IpAddr>, DefaultClock>;

/// Sources whose rate state is kept before idle ones are forgotten (bounds memory when a
/// flood comes from many addresses).
const FORGET_IDLE_ABOVE: usize = 10_000;

/// The API's limits on one node.
pub struct HttpGuard {
    connections: Arc<IpLimiter>,
    /// Its allow-list (`[bans] never`: a ministry's NAT, a carrier) is exempt from the
    /// request rate too.
    bans: Arc<BanList>,
    requests: RequestLimiter,
    checks: AtomicU64,
}

/// What the guard decided when a connection was accepted, kept with the connection
/// (its permit frees the source's slot when the connection closes).
struct Admission(Result<ConnectionPermit, Refusal>);

/// Why a request is refused before it is authenticated.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Go on (a banned source is left to the authentication step, which lets an
    /// operator's token through so that bans can always be lifted).
    Pass,
    /// The source holds or opens too many connections, or the node is full.
    Refused(Refusal),
    /// Over the request rate; retry after this long.
    TooFast(Duration),
}

impl HttpGuard {
    pub fn new(settings: &HttpSettings, bans: Arc<BanList>) -> Arc<Self> {
        let rate = NonZeroU32::new(settings.requests_per_ip).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(settings.request_burst_per_ip).unwrap_or(rate);
        Arc::new(Self {
            connections: IpLimiter::new(settings.connections.clone(), Arc::clone(&bans)),
            bans,
            requests: RateLimiter::hashmap(Quota::per_second(rate).allow_burst(burst)),
            checks: AtomicU64::new(0),
        })
    }

    /// `HttpServer::on_connect`: admits the new connection by its source address.
    pub fn on_connect(&self, connection: &dyn Any, extensions: &mut Extensions) {
        if let Some(peer) = peer_of(connection) {
            extensions.insert(Admission(self.connections.admit(peer.ip(), Instant::now())));
        }
    }

    fn verdict(&self, admission: Option<&Admission>, ip: IpAddr) -> Verdict {
        match admission {
            Some(Admission(Err(Refusal::Banned | Refusal::Misbehaving))) | None => {}
            Some(Admission(Err(refusal))) => return Verdict::Refused(*refusal),
            Some(Admission(Ok(_))) => {}
        }
        if self.bans.is_allow_listed(ip) {
            return Verdict::Pass;
        }
        if self.checks.fetch_add(1, Ordering::Relaxed).is_multiple_of(1024) && self.requests.len() > FORGET_IDLE_ABOVE {
            self.requests.retain_recent();
        }
        match self.requests.check_key(&gateways::logins::source_of(ip)) {
            Ok(()) => Verdict::Pass,
            Err(not_until) => Verdict::TooFast(not_until.wait_time_from(self.requests.clock().now())),
        }
    }

    fn offence(&self, ip: IpAddr) {
        self.connections.record_offences(ip, 1, Instant::now());
    }
}

/// The peer address of a connection as actix hands it to `on_connect`: plain TCP or TLS.
fn peer_of(connection: &dyn Any) -> Option<SocketAddr> {
    use actix_tls::accept::rustls_0_23::TlsStream;
    use actix_web::rt::net::TcpStream;
    if let Some(tcp) = connection.downcast_ref::<TcpStream>() {
        return tcp.peer_addr().ok();
    }
    connection.downcast_ref::<TlsStream<TcpStream>>().and_then(|tls| tls.get_ref().0.peer_addr().ok())
}

fn refusal_response(verdict: &Verdict) -> HttpResponse {
    let (status, retry_after, message) = match verdict {
        Verdict::TooFast(wait) => {
            (StatusCode::TOO_MANY_REQUESTS, wait.as_secs().max(1), "too many requests from your address; slow down")
        }
        Verdict::Refused(Refusal::Busy) => (StatusCode::SERVICE_UNAVAILABLE, 1, "this node is at its connection limit"),
        Verdict::Refused(_) => (StatusCode::TOO_MANY_REQUESTS, 1, "too many connections from your address"),
        Verdict::Pass => unreachable!("a passed request is not refused"),
    };
    let mut response = HttpResponse::build(status);
    response.insert_header(("Retry-After", retry_after.to_string()));
    if matches!(verdict, Verdict::Refused(_)) {
        // The connection was not admitted: close it with this answer.
        response.force_close();
    }
    response.json(json!({ "error": message }))
}

/// The outermost middleware: refuses what the limits refuse, and counts requests over
/// the rate and refused credentials (401) as offences of the source.
pub(super) async fn protect(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let guard = request.app_data::<web::Data<HttpGuard>>().cloned().expect("the app has its guard");
    let ip = super::source_ip(&request);
    let verdict = guard.verdict(request.conn_data::<Admission>(), ip);
    if verdict != Verdict::Pass {
        if matches!(verdict, Verdict::TooFast(_)) {
            guard.offence(ip);
        }
        metrics::counter!("ums_http_refused_total").increment(1);
        return Ok(request.into_response(refusal_response(&verdict)).map_into_right_body());
    }
    let response = next.call(request).await?;
    if response.status() == StatusCode::UNAUTHORIZED {
        guard.offence(ip);
    }
    Ok(response.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(rate: u32, burst: u32) -> Arc<HttpGuard> {
        let settings = HttpSettings { requests_per_ip: rate, request_burst_per_ip: burst, ..HttpSettings::plain() };
        let never = vec![gateways::network::Network::parse("198.51.100.0/24").unwrap()];
        HttpGuard::new(&settings, Arc::new(BanList::new(never)))
    }

    #[test]
    fn a_source_over_its_burst_waits_while_others_pass() {
        let guard = guard(1, 3);
        let flooder: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(guard.verdict(None, flooder), Verdict::Pass);
        }
        assert!(matches!(guard.verdict(None, flooder), Verdict::TooFast(wait) if wait <= Duration::from_secs(1)));
        assert_eq!(guard.verdict(None, "192.0.2.2".parse().unwrap()), Verdict::Pass);
        let allow_listed: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(guard.verdict(None, allow_listed), Verdict::Pass);
        }
    }

    #[test]
    fn one_ipv6_network_is_one_source() {
        let guard = guard(1, 2);
        assert_eq!(guard.verdict(None, "2001:db8::1".parse().unwrap()), Verdict::Pass);
        assert_eq!(guard.verdict(None, "2001:db8::2".parse().unwrap()), Verdict::Pass);
        assert!(matches!(guard.verdict(None, "2001:db8::3".parse().unwrap()), Verdict::TooFast(_)));
        assert_eq!(guard.verdict(None, "2001:db8:0:1::1".parse().unwrap()), Verdict::Pass);
    }

    #[test]
    fn a_connection_over_the_limits_is_refused_and_a_banned_one_left_to_authentication() {
        let guard = guard(100, 100);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let full = Admission(Err(Refusal::TooManyConnections));
        assert_eq!(guard.verdict(Some(&full), ip), Verdict::Refused(Refusal::TooManyConnections));
        let banned = Admission(Err(Refusal::Banned));
        assert_eq!(guard.verdict(Some(&banned), ip), Verdict::Pass);
    }
}
