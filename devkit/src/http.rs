//! Small HTTP client helpers for programs that drive a UMS cluster through its API
//! (`umsd dev`, `ums-bench`, `umschaos`, the integration tests).

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;

use crate::tokens::bearer;

/// An HTTP client that accepts only servers whose certificate chains to one in the PEM
/// file `ca_file` (a node's own certificate, or the CA that issued it), for HTTPS nodes
/// with a private CA.
pub fn agent_trusting(ca_file: &std::path::Path) -> anyhow::Result<ureq::Agent> {
    use anyhow::Context as _;
    let pem = std::fs::read(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.with_context(|| format!("{}: not PEM", ca_file.display()))?)?;
    }
    if roots.is_empty() {
        bail!("{}: no certificate in the file", ca_file.display());
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(ureq::AgentBuilder::new().tls_config(std::sync::Arc::new(tls)).build())
}

/// A GET request carrying `token`.
pub fn get(url: &str, token: &str) -> ureq::Request {
    ureq::get(url).set("Authorization", &bearer(token))
}

/// A POST request carrying `token`.
pub fn post(url: &str, token: &str) -> ureq::Request {
    ureq::post(url).set("Authorization", &bearer(token))
}

/// A DELETE request carrying `token`.
pub fn delete(url: &str, token: &str) -> ureq::Request {
    ureq::delete(url).set("Authorization", &bearer(token))
}

/// POSTs JSON with `token`, retrying while the cluster is still electing leaders (503)
/// or a node is not listening yet; returns the JSON answer.
pub fn post_with_retry(url: &str, token: &str, body: &Value) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let request = ureq::post(url).timeout(Duration::from_secs(15)).set("Authorization", &bearer(token));
        match request.send_json(body.clone()) {
            Ok(response) => return Ok(response.into_json()?),
            Err(ureq::Error::Status(503, _)) | Err(ureq::Error::Transport(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(ureq::Error::Status(code, response)) => {
                bail!("{url}: HTTP {code}: {}", response.into_string().unwrap_or_default())
            }
            Err(e) => bail!("{url}: {e}"),
        }
    }
}

/// The `(uid, client_ref)` list of `user`'s INBOX as the node at `base_url` holds it
/// in its own replica (a stale read, no leader involved). A replica that does not know
/// the user holds none of its messages; `None` means the node did not answer.
pub fn replica_messages(base_url: &str, token: &str, user: &str) -> Option<Vec<(u64, String)>> {
    let url = format!("{base_url}/api/v1/users/{user}/messages?local=true&limit=10000");
    let body: Value = match get(&url, token).timeout(Duration::from_secs(5)).call() {
        Ok(response) => response.into_json().ok()?,
        Err(ureq::Error::Status(404, _)) => return Some(Vec::new()),
        Err(_) => return None,
    };
    Some(
        body["messages"]
            .as_array()?
            .iter()
            .map(|m| (m["uid"].as_u64().unwrap_or(0), m["client_ref"].as_str().unwrap_or("").to_string()))
            .collect(),
    )
}
