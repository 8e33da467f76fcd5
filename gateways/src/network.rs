//! IP networks (`10.20.0.0/16`, `2001:db8::/32`): what bans, allow-lists and the
//! webhook rule are written in (pure).

use std::fmt;
use std::net::IpAddr;

/// An IP network, `address/prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("'{text}' is not a network like 10.20.0.0/16 or 2001:db8::/32");
        let (address, prefix) = text.trim().split_once('/').ok_or_else(bad)?;
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        if prefix > bits {
            return Err(bad());
        }
        Ok(Self { address, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4 written as IPv6 (`::ffff:10.0.0.1`) is judged as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Network {
    /// The network of one address (a /32 or /128).
    pub fn host(ip: IpAddr) -> Self {
        let ip = canonical(ip);
        Self { address: ip, prefix: if ip.is_ipv4() { 32 } else { 128 } }
    }

    /// Parses `a.b.c.d/len`, or a bare address as its host network.
    pub fn parse_or_host(text: &str) -> Result<Self, String> {
        match text.trim().parse::<IpAddr>() {
            Ok(ip) => Ok(Self::host(ip)),
            Err(_) => Self::parse(text),
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_contain_and_print() {
        let net = Network::parse("10.20.0.0/16").unwrap();
        assert!(net.contains("10.20.3.4".parse().unwrap()) && !net.contains("10.21.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.20.0.1".parse().unwrap()));
        assert_eq!(Network::parse_or_host("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(Network::parse_or_host("2001:db8::1").unwrap().to_string(), "2001:db8::1/128");
        assert!(Network::parse("10.0.0.0/33").is_err() && Network::parse_or_host("nonsense").is_err());
    }
}
