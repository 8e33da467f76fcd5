//! Who is calling: turns a request's `Authorization` header into a [`Principal`].
//!
//! - `Bearer ums_…`: this node's own admin token, or a token record of the meta group
//!   (read from this node's replica, see [`Cluster::token`]). Records are cached: a
//!   token in use is re-read in the background once its copy is [`REFRESH_AFTER`] old,
//!   and one not seen for [`USABLE_FOR`] is read before it is trusted again, so a
//!   revocation counts on every node well within a second while a busy token costs no
//!   storage read per request. Unknown ids are cached too, so replaying one bad token
//!   does not reach the meta group's leader each time.
//! - `Basic` with a user's login and password: that user (argon2, throttled like IMAP
//!   and SMTP logins; a success is remembered for [`LOGIN_REMEMBERED`]).
//!
//! Failures never say whether a user or a token id exists.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use gateways::logins::{LoginOutcome, LoginThrottle, check_login};
use sha2::{Digest, Sha256};

use super::policy::{Principal, Role};
use super::token::{self, TokenState};
use crate::clock::now_ms;
use crate::cluster::Cluster;
use crate::proto::state::ApiToken;

/// A cached record older than this is re-read in the background on its next use.
pub const REFRESH_AFTER: Duration = Duration::from_millis(250);
/// A cached record older than this is read again before it is trusted.
pub const USABLE_FOR: Duration = Duration::from_millis(750);
/// How long a verified user password is remembered (argon2 per request is too slow).
pub const LOGIN_REMEMBERED: Duration = Duration::from_secs(30);
/// Cached entries kept before a cache starts over (bounded memory under garbage).
const CACHE_CAPACITY: usize = 10_000;

/// What an `Authorization` header carries, by its scheme (case-insensitive, RFC 9110).
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials<'a> {
    Bearer(&'a str),
    Basic(&'a str),
    Other,
}

impl<'a> Credentials<'a> {
    pub fn of(header: &'a str) -> Self {
        let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => Credentials::Bearer(rest.trim()),
            "basic" => Credentials::Basic(rest.trim()),
            _ => Credentials::Other,
        }
    }
}

/// Why a request is refused before it is looked at.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No credentials, or ones that do not hold (401).
    Unauthenticated(String),
    /// A user's login refused by the login check, which has audited it (401).
    LoginRefused(String),
    /// The credentials could not be checked now (503).
    Unavailable(String),
}

struct CachedToken {
    record: Option<ApiToken>,
    fetched: Instant,
    refreshing: bool,
}

/// This node's own admin token: accepted here only, never replicated.
struct NodeToken {
    id: String,
    secret_sha256: [u8; 32],
}

pub struct Authenticator {
    cluster: Arc<Cluster>,
    node_token: NodeToken,
    node_token_name: String,
    tokens: Mutex<HashMap<String, CachedToken>>,
    /// SHA-256 of (login, password) → (user id, verified at).
    logins: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    throttle: Arc<LoginThrottle>,
}

/// Reads this node's admin token from `data_dir`, writing a new one at first start.
pub fn load_or_create_node_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(devkit::tokens::NODE_TOKEN_FILE);
    if let Some(text) = devkit::tokens::read_token(&path) {
        if token::parse(&text).is_none() {
            anyhow::bail!("{} does not hold a UMS token; delete it to get a new one", path.display());
        }
        return Ok(text);
    }
    let new = token::generate();
    devkit::tokens::write_secret_file(&path, &new.text)?;
    Ok(new.text)
}

impl Authenticator {
    /// `node_token` is this node's admin token (see [`load_or_create_node_token`]).
    /// `logins` is the node's failed-login bookkeeping, shared with IMAP and SMTP.
    pub fn new(cluster: Arc<Cluster>, node_token: &str, logins: Arc<LoginThrottle>) -> anyhow::Result<Arc<Self>> {
        let presented =
            token::parse(node_token).ok_or_else(|| anyhow::anyhow!("the node's admin token is malformed"))?;
        let node_token = NodeToken { id: presented.id.to_string(), secret_sha256: token::digest(presented.secret) };
        Ok(Arc::new(Self {
            node_token_name: format!("node-{}-admin", cluster.node_id()),
            cluster,
            node_token,
            tokens: Mutex::new(HashMap::new()),
            logins: Mutex::new(HashMap::new()),
            throttle: logins,
        }))
    }

    /// The principal behind an `Authorization` header value (`None`: no header).
    pub async fn authenticate(self: &Arc<Self>, header: Option<&str>, ip: IpAddr) -> Result<Principal, Refused> {
        let header = header.ok_or_else(|| {
            Refused::Unauthenticated("this endpoint needs a token: Authorization: Bearer ums_...".into())
        })?;
        match Credentials::of(header) {
            Credentials::Bearer(text) => self.bearer(text).await,
            Credentials::Basic(encoded) => self.basic(encoded, ip).await,
            Credentials::Other => {
                Err(Refused::Unauthenticated("use Authorization: Bearer (a token) or Basic (a user's login)".into()))
            }
        }
    }

    async fn bearer(self: &Arc<Self>, text: &str) -> Result<Principal, Refused> {
        let invalid = || Refused::Unauthenticated("invalid token".into());
        let presented = token::parse(text).ok_or_else(invalid)?;
        if presented.id == self.node_token.id {
            if !token::secret_matches(presented.secret, &self.node_token.secret_sha256) {
                return Err(invalid());
            }
            let name = self.node_token_name.clone();
            return Ok(Principal::Token { name, role: Role::Operator, scope: Vec::new() });
        }
        let record = self.record(presented.id).await?.ok_or_else(invalid)?;
        if !token::secret_matches(presented.secret, &record.secret_sha256) {
            return Err(invalid());
        }
        // Only the holder of the secret learns that the token has ended.
        match token::state(&record, now_ms()) {
            TokenState::Revoked => return Err(Refused::Unauthenticated("token revoked".into())),
            TokenState::Expired => return Err(Refused::Unauthenticated("token expired".into())),
            TokenState::Active => {}
        }
        let role = Role::parse(&record.role).map_err(|_| invalid())?;
        Ok(Principal::Token { name: record.name, role, scope: record.scope })
    }

    /// The token record with this id, from the cache while it is fresh enough.
    async fn record(self: &Arc<Self>, id: &str) -> Result<Option<ApiToken>, Refused> {
        let now = Instant::now();
        let refresh = {
            let mut tokens = self.tokens.lock().expect("token cache");
            match tokens.get_mut(id) {
                Some(cached) if now.duration_since(cached.fetched) < USABLE_FOR => {
                    let refresh = !cached.refreshing && now.duration_since(cached.fetched) >= REFRESH_AFTER;
                    cached.refreshing |= refresh;
                    if !refresh {
                        return Ok(cached.record.clone());
                    }
                    Some(cached.record.clone())
                }
                _ => None,
            }
        };
        if let Some(record) = refresh {
            let this = Arc::clone(self);
            let id = id.to_string();
            actix_web::rt::spawn(async move {
                let _ = this.fetch(&id).await;
            });
            return Ok(record);
        }
        self.fetch(id).await
    }

    /// Reads a record from the meta group and caches it.
    async fn fetch(&self, id: &str) -> Result<Option<ApiToken>, Refused> {
        let fetched = self.cluster.token(id).await;
        let mut tokens = self.tokens.lock().expect("token cache");
        match fetched {
            Ok(record) => {
                if tokens.len() >= CACHE_CAPACITY {
                    tokens.clear();
                }
                let cached = CachedToken { record: record.clone(), fetched: Instant::now(), refreshing: false };
                tokens.insert(id.to_string(), cached);
                Ok(record)
            }
            Err(error) => {
                // Let the next request try again; the old copy ages out as usual.
                if let Some(cached) = tokens.get_mut(id) {
                    cached.refreshing = false;
                }
                Err(Refused::Unavailable(format!("cannot check the token now: {error}")))
            }
        }
    }

    async fn basic(&self, credentials: &str, ip: IpAddr) -> Result<Principal, Refused> {
        let invalid = || Refused::Unauthenticated("invalid login or password".into());
        let decoded = base64::engine::general_purpose::STANDARD.decode(credentials).map_err(|_| invalid())?;
        let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
        let (login, password) = decoded.split_once(':').ok_or_else(invalid)?;
        let key: [u8; 32] =
            Sha256::new().chain_update(login).chain_update([0]).chain_update(password).finalize().into();
        let now = Instant::now();
        if let Some((user_id, at)) = self.logins.lock().expect("login cache").get(&key)
            && now.duration_since(*at) < LOGIN_REMEMBERED
        {
            return Ok(Principal::User { user_id: user_id.clone() });
        }
        match check_login(self.cluster.as_ref(), &self.throttle, "http", ip, login, password).await {
            LoginOutcome::Throttled => Err(Refused::LoginRefused("too many failed logins; try again later".into())),
            LoginOutcome::Valid(account) => {
                let mut logins = self.logins.lock().expect("login cache");
                if logins.len() >= CACHE_CAPACITY {
                    logins.clear();
                }
                logins.insert(key, (account.user_id.clone(), now));
                Ok(Principal::User { user_id: account.user_id })
            }
            LoginOutcome::Invalid => Err(Refused::LoginRefused("invalid login or password".into())),
            LoginOutcome::Unavailable(e) => Err(Refused::Unavailable(format!("cannot check the login now: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_read_case_insensitively() {
        assert_eq!(Credentials::of("Bearer ums_x"), Credentials::Bearer("ums_x"));
        assert_eq!(Credentials::of("  bearer   ums_x "), Credentials::Bearer("ums_x"));
        assert_eq!(Credentials::of("BASIC eDp5"), Credentials::Basic("eDp5"));
        assert_eq!(Credentials::of("Bearer"), Credentials::Bearer(""));
        assert_eq!(Credentials::of("Digest x"), Credentials::Other);
        assert_eq!(Credentials::of(""), Credentials::Other);
    }
}
