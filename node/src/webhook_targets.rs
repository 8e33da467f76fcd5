//! Where outbound webhooks may go (pure). A webhook is a request the cluster makes on a
//! caller's behalf, so without a rule it would reach whatever the nodes can reach: the
//! cloud metadata service, the nodes' own admin ports, the government's internal
//! network (server-side request forgery). Only public addresses are allowed, plus the
//! networks an operator lists in `[outbound] webhook_allow` (e.g. a ministry's own
//! systems, or 127.0.0.0/8 on a test machine).
//!
//! A target's host name is resolved once, at delivery, and the connection goes to an
//! address that passed ([`WebhookTargets::filter`] as the HTTP client's resolver), so a
//! name that resolves differently a moment later (DNS rebinding) gains nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use gateways::network::{Network, canonical};

/// Whether `ip` is an address on the public internet (not loopback, private, shared,
/// link-local — the metadata service —, multicast, reserved or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (18..20).contains(&b)))
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64, reaches IPv4 inside
}

/// The rule for webhook destinations.
#[derive(Clone, Debug, Default)]
pub struct WebhookTargets {
    allowed: Vec<Network>,
}

impl WebhookTargets {
    /// Public addresses and the networks in `allow` (from `[outbound] webhook_allow`).
    pub fn new(allow: &[String]) -> Result<Self, String> {
        Ok(Self { allowed: allow.iter().map(|n| Network::parse(n)).collect::<Result<_, _>>()? })
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.allowed.iter().any(|network| network.contains(ip))
    }

    /// The addresses a connection may use, of those a name resolved to.
    pub fn filter(&self, resolved: Vec<SocketAddr>) -> Vec<SocketAddr> {
        resolved.into_iter().filter(|address| self.permits(address.ip())).collect()
    }

    /// Checks a target URL as it is queued: http(s), a host, no credentials in it, and
    /// an IP literal only where it is allowed (names are checked at delivery).
    pub fn check_url(&self, target: &str) -> Result<(), String> {
        let url = url::Url::parse(target).map_err(|e| format!("target '{target}' is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("target '{target}' is not an http(s) URL"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("a target URL carries no credentials; put them in the body or ask for a header".into());
        }
        let ip = match url.host() {
            None => return Err(format!("target '{target}' names no host")),
            Some(url::Host::Domain(_)) => return Ok(()),
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        };
        if self.permits(ip) { Ok(()) } else { Err(format!("target address {ip} is not allowed for webhooks")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn only_public_addresses_are_public() {
        for public in ["8.8.8.8", "196.201.214.1", "2a00:1450:4001::1", "::ffff:8.8.8.8"] {
            assert!(is_public(ip(public)), "{public}");
        }
        let internal = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
        ];
        for address in internal {
            assert!(!is_public(ip(address)), "{address}");
        }
    }

    #[test]
    fn listed_networks_are_allowed_too() {
        let targets = WebhookTargets::new(&["10.20.0.0/16".into(), "fd12:3456::/32".into()]).unwrap();
        assert!(targets.permits(ip("10.20.9.9")) && targets.permits(ip("::ffff:10.20.9.9")));
        assert!(!targets.permits(ip("10.21.0.1")));
        assert!(targets.permits(ip("fd12:3456:1::1")) && !targets.permits(ip("fd12:3457::1")));
        assert!(WebhookTargets::new(&["10.0.0.0/33".into()]).is_err());
        assert!(WebhookTargets::new(&["10.0.0.0".into()]).is_err());
        assert!(Network::parse("0.0.0.0/0").unwrap().contains(ip("127.0.0.1")));
        let resolved = vec!["127.0.0.1:80".parse().unwrap(), "10.20.0.5:80".parse().unwrap()];
        assert_eq!(targets.filter(resolved), vec!["10.20.0.5:80".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn target_urls_are_checked_as_they_are_queued() {
        let targets = WebhookTargets::default();
        assert!(targets.check_url("https://sms.example.com/hook?x=1").is_ok());
        assert!(targets.check_url("http://hooks.internal.example/").is_ok(), "names are checked at delivery");
        for refused in [
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:7180/api/v1/tokens",
            "http://[::1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://user:secret@example.com/",
            "ftp://example.com/",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(targets.check_url(refused).is_err(), "{refused}");
        }
    }
}
