//! The `[smtp.mail_auth]` section of a node's configuration: whether the MX verifies
//! SPF, DKIM, ARC and DMARC, which DNS server it asks, how long it may wait, and where
//! the operator overrides a domain's own DMARC policy.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// What the MX does with mail that fails DMARC, when the operator decides instead of the
/// sending domain's published policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyOverride {
    /// Refuse it (550 5.7.1), as `p=reject` asks.
    Reject,
    /// Deliver it to the recipient's Junk folder, as `p=quarantine` asks.
    #[serde(alias = "quarantine")]
    Junk,
    /// Deliver it to INBOX; only the `Authentication-Results` header tells, as `p=none`.
    #[serde(alias = "none")]
    Tag,
}

/// Mail authentication on the MX (submission is authenticated by login instead).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MailAuthSettings {
    /// Verify incoming mail and act on DMARC. Off, mail is stored without an
    /// `Authentication-Results` header and a local domain in `From:` is not checked.
    pub enabled: bool,
    /// The DNS server to ask (`ip:port`, UDP and TCP); without it, the system's
    /// (`/etc/resolv.conf`). Tests point it at their own server.
    pub nameserver: Option<SocketAddr>,
    /// How long one DNS query may take before it counts as a temporary error.
    pub timeout_ms: u64,
    /// How long all the checks of one message may take together (SPF alone may need ten
    /// queries); what is not answered by then counts as a temporary error.
    pub total_timeout_ms: u64,
    /// Per sending domain (and its subdomains), what to do instead of its DMARC policy
    /// when a message fails DMARC, e.g. `{ "partner.go.ke" = "tag" }` for a partner whose
    /// forwarding breaks DKIM.
    pub policy_overrides: BTreeMap<String, PolicyOverride>,
}

impl Default for MailAuthSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            nameserver: None,
            timeout_ms: 2_000,
            total_timeout_ms: 8_000,
            policy_overrides: BTreeMap::new(),
        }
    }
}

impl MailAuthSettings {
    /// Mail authentication off: for local clusters on machines that may have no DNS at all
    /// (a lookup would hold every message for the whole timeout).
    pub fn disabled() -> Self {
        Self { enabled: false, ..Self::default() }
    }

    /// Verification on, asking only the DNS server at `nameserver` (a test's own).
    pub fn with_nameserver(nameserver: SocketAddr) -> Self {
        Self { enabled: true, nameserver: Some(nameserver), ..Self::default() }
    }

    /// Checks what `serde` cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout_ms == 0 || self.total_timeout_ms < self.timeout_ms {
            return Err("smtp.mail_auth: timeout_ms must be positive and at most total_timeout_ms".into());
        }
        if let Some(domain) = self.policy_overrides.keys().find(|d| d.is_empty() || d.contains(['@', ' '])) {
            return Err(format!("smtp.mail_auth.policy_overrides: '{domain}' is not a domain"));
        }
        Ok(())
    }

    /// The operator's override for mail from `domain`: its own entry, else its closest
    /// parent domain's.
    pub fn override_for(&self, domain: &str) -> Option<PolicyOverride> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut name = domain.as_str();
        loop {
            if let Some(found) =
                self.policy_overrides.iter().find(|(d, _)| d.trim_end_matches('.').eq_ignore_ascii_case(name))
            {
                return Some(*found.1);
            }
            name = name.split_once('.')?.1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_from_toml_with_defaults() {
        let settings: MailAuthSettings = toml::from_str(
            "nameserver = \"127.0.0.1:5353\"\npolicy_overrides = { \"partner.go.ke\" = \"tag\", \"x.org\" = \"quarantine\" }\n",
        )
        .unwrap();
        assert!(settings.enabled);
        assert_eq!(settings.nameserver, Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(settings.timeout_ms, 2_000);
        assert_eq!(settings.override_for("partner.go.ke"), Some(PolicyOverride::Tag));
        assert_eq!(settings.override_for("Mail.Partner.go.ke."), Some(PolicyOverride::Tag), "subdomains too");
        assert_eq!(settings.override_for("x.org"), Some(PolicyOverride::Junk), "quarantine is junk");
        assert_eq!(settings.override_for("go.ke"), None, "not a parent");
        assert_eq!(settings.override_for("otherpartner.go.ke"), None);
        settings.validate().unwrap();
        assert!(toml::from_str::<MailAuthSettings>("enable = true").is_err(), "unknown keys are refused");
        assert!(toml::from_str::<MailAuthSettings>("policy_overrides = { \"a.org\" = \"drop\" }").is_err());
        assert!(MailAuthSettings { timeout_ms: 0, ..MailAuthSettings::default() }.validate().is_err());
    }
}
