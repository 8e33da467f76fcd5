//! The `[imap]` section of a node's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::limits::ConnectionLimits;

/// The IMAP listener and its limits. Without `listen` the node runs no IMAP service.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ImapSettings {
    /// e.g. 127.0.0.1:7143 (STARTTLS).
    pub listen: Option<SocketAddr>,
    /// IMAPS, TLS from the first byte (RFC 8314), e.g. 127.0.0.1:7193; needs the
    /// certificate.
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain and private key: STARTTLS is offered when both are set.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// LOGIN and AUTHENTICATE without TLS (development only).
    pub allow_insecure_auth: bool,
    /// Largest APPEND literal in bytes (default 35 MB, like the SMTP SIZE).
    pub max_literal_bytes: u32,
    /// An idle client is logged out after this long (RFC 3501: at least 30 minutes).
    pub autologout_secs: u64,
    /// A client that has not logged in is dropped after this long silent (the 30 minutes
    /// of RFC 3501 5.4 are for sessions after authentication).
    pub login_timeout_secs: u64,
    /// Largest command, literals included, before login (LOGIN with a literal password
    /// and AUTHENTICATE fit easily); a longer one closes the connection.
    pub max_preauth_bytes: u32,
    /// How often an IDLE session looks for changes to its mailbox when the node cannot
    /// tell it of them (no replica of the user's mailboxes there, or `idle_push` off).
    pub idle_poll_ms: u64,
    /// IDLE hears of changes the moment this node's replica applies them, instead of
    /// polling (`false` polls every `idle_poll_ms`, as before; for comparisons).
    pub idle_push: bool,
    /// Failed LOGIN/AUTHENTICATE attempts before a connection is closed.
    pub max_auth_failures: u32,
    pub connections: ConnectionLimits,
}

impl Default for ImapSettings {
    fn default() -> Self {
        Self {
            listen: None,
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            allow_insecure_auth: false,
            max_literal_bytes: 35 * 1024 * 1024,
            autologout_secs: 30 * 60,
            login_timeout_secs: 60,
            max_preauth_bytes: 8 * 1024,
            idle_poll_ms: 250,
            idle_push: true,
            max_auth_failures: 3,
            connections: ConnectionLimits::default(),
        }
    }
}

impl ImapSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("imap: tls_cert and tls_key go together".into());
        }
        if self.tls_listen.is_some() && self.tls_cert.is_none() {
            return Err("imap: tls_listen (IMAPS) needs tls_cert and tls_key".into());
        }
        if [self.max_literal_bytes, self.max_preauth_bytes].contains(&0)
            || [self.autologout_secs, self.login_timeout_secs, self.idle_poll_ms].contains(&0)
        {
            return Err("imap: max_literal_bytes, max_preauth_bytes, autologout_secs, login_timeout_secs and idle_poll_ms must be positive".into());
        }
        Ok(())
    }
}
