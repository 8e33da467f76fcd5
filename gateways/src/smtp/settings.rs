//! The `[smtp]` section of a node's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::authentication::MailAuthSettings;
use crate::limits::ConnectionLimits;

/// SMTP listeners and their limits. Without `listen` / `submission_listen` the node
/// runs no SMTP service.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSettings {
    /// MX service (mail for local users from anyone), e.g. 127.0.0.1:7125.
    pub listen: Option<SocketAddr>,
    /// Submission service (authenticated users send anywhere), e.g. 127.0.0.1:7187.
    pub submission_listen: Option<SocketAddr>,
    /// Submission over implicit TLS (SMTPS, RFC 8314: TLS from the first byte, port 465
    /// in production, 7N65 in the dev cluster); needs the certificate.
    #[serde(default)]
    pub submissions_listen: Option<SocketAddr>,
    /// The name in the greeting and in Received headers.
    pub hostname: String,
    /// PEM certificate chain and private key: STARTTLS is offered when both are set.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// AUTH over an unencrypted connection (development only).
    pub allow_insecure_auth: bool,
    /// The SIZE limit in bytes (default 35 MB).
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    /// Bad commands before a connection is closed.
    pub max_errors: u32,
    /// Failed AUTH attempts before a connection is closed.
    pub max_auth_failures: u32,
    /// A client silent this long is disconnected (RFC 5321 suggests 5 minutes).
    pub command_timeout_secs: u64,
    pub connections: ConnectionLimits,
    /// Outbound mail goes to this host:port instead of the recipient domain's server.
    pub relay_host: Option<String>,
    /// How outbound mail is protected, per destination (the smart host: encrypted).
    pub relay_tls: super::relay_tls::RelayTlsSettings,
    /// SPF, DKIM, ARC and DMARC on the MX (`[smtp.mail_auth]`).
    pub mail_auth: MailAuthSettings,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            listen: None,
            submission_listen: None,
            submissions_listen: None,
            hostname: "localhost".into(),
            tls_cert: None,
            tls_key: None,
            allow_insecure_auth: false,
            max_message_bytes: 35 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 10,
            max_auth_failures: 3,
            command_timeout_secs: 300,
            connections: ConnectionLimits::default(),
            relay_host: None,
            relay_tls: Default::default(),
            mail_auth: MailAuthSettings::default(),
        }
    }
}

impl SmtpSettings {
    /// Checks what `serde` cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("smtp: tls_cert and tls_key go together".into());
        }
        if self.submissions_listen.is_some() && self.tls_cert.is_none() {
            return Err("smtp: submissions_listen (SMTPS) needs tls_cert and tls_key".into());
        }
        if self.max_message_bytes == 0 || self.max_recipients == 0 || self.command_timeout_secs == 0 {
            return Err("smtp: max_message_bytes, max_recipients and command_timeout_secs must be positive".into());
        }
        self.relay_tls.validate()?;
        if self.hostname.is_empty() || !self.hostname.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(format!("smtp: hostname '{}' is not a host name", self.hostname));
        }
        self.mail_auth.validate()
    }
}
