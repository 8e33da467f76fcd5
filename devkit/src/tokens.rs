//! Where the API's tokens are kept on this machine, and getting one.
//!
//! Every node writes its own admin token (`admin.token`, mode 0600) into its data
//! directory at first start: an operator token that only that node accepts, for the
//! first `umsctl token create` and for recovery. `umsd dev` creates a cluster-wide
//! operator token and keeps it in `operator.token` beside the nodes' directories.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// A node's own admin token, in its data directory.
pub const NODE_TOKEN_FILE: &str = "admin.token";

/// A local cluster's operator token, in the directory holding the nodes' directories.
pub const OPERATOR_TOKEN_FILE: &str = "operator.token";

/// The token in `path` (surrounding whitespace removed), if it can be read.
pub fn read_token(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// Writes a secret readable by its owner only, replacing the file atomically.
pub fn write_secret_file(path: &Path, text: &str) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
    file.write_all(format!("{text}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// The value of an `Authorization` header carrying `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Creates a token through the node at `base_url`, authenticated by `token`; returns the
/// new token's text. `expires_in` `None` means it never expires.
pub fn create_token(
    base_url: &str,
    token: &str,
    name: &str,
    role: &str,
    expires_in: Option<Duration>,
) -> anyhow::Result<String> {
    let body = json!({ "name": name, "role": role, "expires_in_s": expires_in.map(|d| d.as_secs()) });
    let created: Value = crate::http::post_with_retry(&format!("{base_url}/api/v1/tokens"), token, &body)
        .with_context(|| format!("creating token '{name}'"))?;
    match created["token"].as_str() {
        Some(text) => Ok(text.to_string()),
        None => bail!("the node answered without a token: {created}"),
    }
}
