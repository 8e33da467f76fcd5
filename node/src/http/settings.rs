//! The `[http]` section of a node's configuration: how the API is served (HTTPS unless
//! told otherwise) and the limits that keep one source from starving the rest.

use std::path::PathBuf;

use gateways::limits::ConnectionLimits;
use serde::{Deserialize, Serialize};

/// How the API on `http_listen` is served.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// PEM certificate chain and private key: the API speaks HTTPS (TLS 1.2 and 1.3).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Plain HTTP instead (`umsd dev`, the tests, or behind a TLS-terminating proxy on
    /// the same host). Without a certificate a node refuses to start unless this is set,
    /// so tokens and passwords never cross a network in clear text by accident.
    pub plain: bool,
    /// Connections per source address and in all, new connections per second, and the
    /// offences (refused credentials, requests over the rate) that ban a source
    /// cluster-wide; the same limits the mail gateways apply.
    pub connections: ConnectionLimits,
    /// Requests per second one source (an IPv4 address or an IPv6 /64) may send,
    /// sustained, and in a burst above that; more are answered 429 and count as offences.
    /// Networks in `[bans] never` are exempt.
    pub requests_per_ip: u32,
    pub request_burst_per_ip: u32,
    /// A client has this long to send a request's headers (slow-header floods).
    pub header_timeout_ms: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            tls_cert: None,
            tls_key: None,
            plain: false,
            connections: ConnectionLimits::default(),
            // An application delivering for a whole ministry stays below this; a flood
            // from one source does not.
            requests_per_ip: 500,
            request_burst_per_ip: 2_000,
            header_timeout_ms: 5_000,
        }
    }
}

impl HttpSettings {
    /// Checks what `serde` cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("http: tls_cert and tls_key go together".into());
        }
        if self.tls_cert.is_none() && !self.plain {
            return Err(
                "http: the API is served over HTTPS: set http.tls_cert and http.tls_key, or http.plain = true \
                 (development, or behind a TLS-terminating proxy on this host)"
                    .into(),
            );
        }
        if self.tls_cert.is_some() && self.plain {
            return Err("http: plain = true and a certificate exclude each other".into());
        }
        if self.requests_per_ip == 0 || self.request_burst_per_ip == 0 || self.header_timeout_ms == 0 {
            return Err("http: requests_per_ip, request_burst_per_ip and header_timeout_ms must be positive".into());
        }
        Ok(())
    }

    /// The scheme clients use.
    pub fn scheme(&self) -> &'static str {
        if self.tls_cert.is_some() { "https" } else { "http" }
    }

    /// Plain HTTP with these limits otherwise at their defaults (local clusters).
    pub fn plain() -> Self {
        Self { plain: true, ..Self::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_unless_plain_is_asked_for() {
        assert!(HttpSettings::default().validate().unwrap_err().contains("HTTPS"));
        assert!(HttpSettings::plain().validate().is_ok());
        let https =
            HttpSettings { tls_cert: Some("c.pem".into()), tls_key: Some("k.pem".into()), ..Default::default() };
        assert!(https.validate().is_ok());
        assert_eq!(https.scheme(), "https");
        assert!(HttpSettings { plain: true, ..https.clone() }.validate().is_err());
        assert!(HttpSettings { tls_key: None, ..https }.validate().is_err());
    }
}
