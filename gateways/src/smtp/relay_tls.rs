//! How outbound SMTP must protect a message, per destination (`[smtp.relay_tls]`): to
//! the smart host, encrypted with a verified certificate or not at all (the default: a
//! government's relay is a known host, and a downgrade there would expose every
//! ministry's outbound mail); to the internet's mail servers, STARTTLS when offered
//! unless a domain is listed as needing encryption (MTA-STS and DANE are not read yet).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What one hop must offer.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicy {
    /// STARTTLS with a certificate valid for the host, or no delivery (retried later).
    Encrypt,
    /// STARTTLS when the server offers it (a certificate it offers must be valid), else
    /// plain text.
    Opportunistic,
    /// Never TLS: only for test sinks and relays on the same host.
    None,
}

/// `[smtp.relay_tls]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RelayTlsSettings {
    /// To `relay_host`.
    pub smart_host: TlsPolicy,
    /// To a recipient domain's own servers, unless `domains` names the domain.
    pub default: TlsPolicy,
    /// Recipient domains (exactly as written, lower case) with a policy of their own,
    /// e.g. `{ "treasury.go.ke" = "encrypt" }`.
    pub domains: BTreeMap<String, TlsPolicy>,
    /// A PEM file of CA certificates trusted besides the public web roots (a relay with
    /// a certificate from the government's own CA).
    pub ca_file: Option<PathBuf>,
}

impl Default for RelayTlsSettings {
    fn default() -> Self {
        Self {
            smart_host: TlsPolicy::Encrypt,
            default: TlsPolicy::Opportunistic,
            domains: BTreeMap::new(),
            ca_file: None,
        }
    }
}

/// Where one attempt goes.
#[derive(Clone, Copy, Debug)]
pub enum Hop<'a> {
    SmartHost,
    /// A server of this recipient domain.
    Domain(&'a str),
}

impl RelayTlsSettings {
    /// The policy for `hop`.
    pub fn policy_for(&self, hop: Hop<'_>) -> TlsPolicy {
        match hop {
            Hop::SmartHost => self.smart_host,
            Hop::Domain(domain) => self.domains.get(&domain.to_ascii_lowercase()).copied().unwrap_or(self.default),
        }
    }

    /// Checks what `serde` cannot.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(domain) = self.domains.keys().find(|d| d.is_empty() || d.chars().any(|c| c.is_ascii_uppercase())) {
            return Err(format!("smtp.relay_tls.domains: '{domain}' must be a lower-case domain"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smart_host_is_encrypted_by_default_and_domains_can_ask_for_it() {
        let mut settings = RelayTlsSettings::default();
        assert_eq!(settings.policy_for(Hop::SmartHost), TlsPolicy::Encrypt);
        assert_eq!(settings.policy_for(Hop::Domain("example.org")), TlsPolicy::Opportunistic);
        settings.domains.insert("treasury.go.ke".into(), TlsPolicy::Encrypt);
        assert_eq!(settings.policy_for(Hop::Domain("Treasury.go.ke")), TlsPolicy::Encrypt);
        assert_eq!(settings.policy_for(Hop::Domain("sub.treasury.go.ke")), TlsPolicy::Opportunistic);
        let parsed: RelayTlsSettings =
            toml::from_str("smart_host = \"none\"\ndomains = { \"a.ke\" = \"encrypt\" }").unwrap();
        assert_eq!((parsed.smart_host, parsed.domains["a.ke"]), (TlsPolicy::None, TlsPolicy::Encrypt));
        assert!(toml::from_str::<RelayTlsSettings>("smart_host = \"maybe\"").is_err());
        settings.domains.insert("Bad.ke".into(), TlsPolicy::None);
        assert!(settings.validate().is_err());
    }
}
