//! The HTTP client umsctl talks through: one node's address and the token to send,
//! found on the command line, in the environment, or in a file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use serde_json::Value;

/// Where a token is looked for when none is given: a dev cluster's operator token.
pub const DEFAULT_TOKEN_FILE: &str = "data/dev/operator.token";

pub struct Client {
    node: String,
    token: Option<String>,
    agent: ureq::Agent,
    /// How long one request may take (a switchover answers when it is done).
    timeout: Duration,
}

/// A request's time limit unless a command needs longer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Says where tokens come from, for a 401's message.
const TOKEN_HINT: &str = "give --token (or UMS_TOKEN) or --token-file (or UMS_TOKEN_FILE); `umsd dev` keeps an \
    operator token in data/dev/operator.token, and every node its own in DATA/admin.token";

impl Client {
    /// `token` wins over `token_file`; with neither, [`DEFAULT_TOKEN_FILE`] if it exists.
    /// With `ca_file`, an https node must present a certificate that chains to it.
    pub fn new(
        node: &str,
        token: Option<String>,
        token_file: Option<PathBuf>,
        ca_file: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let token = match (token.filter(|t| !t.trim().is_empty()), token_file) {
            (Some(token), _) => Some(token.trim().to_string()),
            (None, Some(file)) => match devkit::tokens::read_token(&file) {
                Some(token) => Some(token),
                None => bail!("cannot read a token from {}", file.display()),
            },
            (None, None) => devkit::tokens::read_token(Path::new(DEFAULT_TOKEN_FILE)),
        };
        let agent = match ca_file {
            Some(file) => devkit::http::agent_trusting(&file)?,
            None => ureq::agent(),
        };
        Ok(Self { node: node.to_string(), token, agent, timeout: REQUEST_TIMEOUT })
    }

    /// The same client with another time limit per request.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self { node: self.node.clone(), token: self.token.clone(), agent: self.agent.clone(), timeout }
    }

    pub fn url(&self, path: &str) -> String {
        url(&self.node, path)
    }

    /// `path` on another node at `address` (IP:PORT), spoken to as this client's node is
    /// (https when it is https).
    pub fn url_on(&self, address: &str, path: &str) -> String {
        let scheme = if self.node.starts_with("https://") { "https" } else { "http" };
        format!("{scheme}://{address}{path}")
    }

    fn request(&self, method: &str, url: &str) -> ureq::Request {
        let request = self.agent.request(method, url).timeout(self.timeout);
        match &self.token {
            Some(token) => request.set("Authorization", &devkit::tokens::bearer(token)),
            None => request,
        }
    }

    /// Sends a request to `path` on this client's node; see [`Client::call_url`].
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        self.call_url(method, &self.url(path), body)
    }

    /// Sends a request and returns (status, JSON body); transport errors say which node,
    /// and a 401 says where a token comes from.
    pub fn call_url(&self, method: &str, url: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let request = self.request(method, url);
        let response = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        match response {
            Ok(r) => Ok((r.status(), r.into_json().unwrap_or(Value::Null))),
            Err(ureq::Error::Status(401, r)) => {
                let body: Value = r.into_json().unwrap_or(Value::Null);
                bail!("{} (HTTP 401): {TOKEN_HINT}", error_text(&body))
            }
            Err(ureq::Error::Status(code, r)) => Ok((code, r.into_json().unwrap_or(Value::Null))),
            Err(e) => bail!("cannot reach {url}: {e} (is the node running? see --node)"),
        }
    }

    /// A GET of `url` whose body is read as it comes (a backup file); anything but 200
    /// is an error with the node's message.
    pub fn get_reader(&self, url: &str) -> anyhow::Result<Box<dyn std::io::Read + Send + Sync>> {
        match self.request("GET", url).call() {
            Ok(response) if response.status() == 200 => Ok(response.into_reader()),
            Ok(response) => bail!("HTTP {} from {url}", response.status()),
            Err(ureq::Error::Status(code, r)) => {
                let body: Value = r.into_json().unwrap_or(Value::Null);
                let hint = if code == 401 { format!(": {TOKEN_HINT}") } else { String::new() };
                bail!("{} (HTTP {code}){hint}", error_text(&body))
            }
            Err(e) => bail!("cannot reach {url}: {e}"),
        }
    }

    /// Like [`Client::call`], but anything other than 2xx is an error with the node's message.
    pub fn expect_ok(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let (code, body) = self.call(method, path, body)?;
        if !(200..300).contains(&code) {
            bail!("{} (HTTP {code})", error_text(&body));
        }
        Ok((code, body))
    }
}

pub fn url(node: &str, path: &str) -> String {
    if node.starts_with("http://") || node.starts_with("https://") {
        format!("{node}{path}")
    } else {
        format!("http://{node}{path}")
    }
}

pub fn error_text(body: &Value) -> String {
    body.get("error").and_then(Value::as_str).unwrap_or("unexpected response").to_string()
}

/// A time in ms since the epoch (a JSON number) as UTC, to the minute; `-` for none.
pub fn format_time(ms: &Value) -> String {
    ms.as_u64()
        .and_then(|ms| chrono::DateTime::from_timestamp_millis(ms as i64))
        .map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
}

/// Percent-encodes a query value.
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Prints a JSON answer for scripts.
pub fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}
