//! The HTTP API on port 7N80 (actix-web). Any node answers any request; errors are
//! JSON `{"error": "..."}` with a status that says what to do (401 without valid
//! credentials, 403 outside the caller's role or scope, 404, 400, 409, and 503 with
//! `Retry-After` while a shard has no leader).
//!
//! Every request first meets the flood defence ([`guard`]: connections and requests per
//! source, offences that ban it cluster-wide). Every request but `/health` is then authenticated before it is routed
//! ([`caller::authenticate`]), so nothing is read or done for a caller without valid
//! credentials; each handler takes the [`caller::Caller`] and asks the policy for the
//! one action it performs. [`ROUTES`] is the table of every route. The endpoints by subject: [`cluster`] (status, leader
//! transfer, metrics), [`users`] (users, domains), [`dkim`] (domains' signing keys), [`messages`], [`outbound`],
//! [`tokens`], [`audit`], [`bans`], [`nodes`] (nodes and shard placement: add, drain, remove, move), [`backup_core`] (the backup site), [`backup`] (a group's replica streamed for a backup), and [`debug`] (fault injection, only in builds that have it).

mod audit;
mod backup;
mod backup_core;
mod bans;
mod caller;
mod cluster;
#[cfg(any(debug_assertions, feature = "debug-faults"))]
mod debug;
mod dkim;
mod guard;
mod messages;
mod nodes;
mod outbound;
mod settings;
mod tokens;
mod users;

use std::sync::Arc;

use actix_web::dev::ResourceDef;
use actix_web::http::{Method, StatusCode};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, middleware, web};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::auth::Authenticator;
use crate::cluster::{Cluster, ServiceError};
use crate::config::Member;
#[cfg(any(debug_assertions, feature = "debug-faults"))]
pub use debug::DebugFaults;
pub use settings::HttpSettings;

/// Whether this build can inject faults (`debug_faults = true` needs it).
pub const FAULTS_COMPILED_IN: bool = cfg!(any(debug_assertions, feature = "debug-faults"));

/// Largest message accepted over HTTP (the SMTP limit, 35 MB, plus JSON overhead).
const MAX_BODY_BYTES: usize = 48 << 20;

/// What every handler can reach.
pub struct AppState {
    pub cluster: Arc<Cluster>,
    pub cluster_id: String,
    pub members: Vec<Member>,
    /// The placement driver's settings and the replicas per shard (for `rebalance`).
    pub placement: crate::driver::DriverSettings,
    pub replicas: usize,
    pub metrics: Option<PrometheusHandle>,
    pub authenticator: Arc<Authenticator>,
    /// The cluster's bans, checked before anything else.
    pub bans: Arc<gateways::bans::BanList>,
    /// Where administrative actions and refused requests are recorded.
    pub audit: Arc<crate::audit::AuditLog>,
    /// Where outbound webhooks may go (checked again at delivery).
    pub webhook_targets: Arc<crate::webhook_targets::WebhookTargets>,
    /// Fault injection for drills; `None` unless the node runs with `debug_faults`.
    #[cfg(any(debug_assertions, feature = "debug-faults"))]
    pub debug: Option<DebugFaults>,
}

type State = web::Data<AppState>;

fn error_response(error: &ServiceError) -> HttpResponse {
    let status = match error {
        ServiceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
        ServiceError::Conflict(_) => StatusCode::CONFLICT,
        ServiceError::Invalid(_) => StatusCode::BAD_REQUEST,
        ServiceError::OverQuota(_) => StatusCode::INSUFFICIENT_STORAGE,
        ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut response = HttpResponse::build(status);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.insert_header(("Retry-After", "1"));
    }
    response.json(json!({ "error": error.to_string() }))
}

/// The client's `Idempotency-Key` header: a retried request with the same key is
/// applied at most once.
fn idempotency_key(request: &HttpRequest) -> Result<Option<String>, ServiceError> {
    match request.headers().get("idempotency-key") {
        None => Ok(None),
        Some(value) => match value.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= 256 => Ok(Some(key.to_string())),
            _ => Err(ServiceError::Invalid("Idempotency-Key must be 1 to 256 visible ASCII characters".into())),
        },
    }
}

/// The address a request came from (unspecified if actix cannot say), which limits,
/// bans and the audit log are kept by.
fn source_ip(request: &actix_web::dev::ServiceRequest) -> std::net::IpAddr {
    request.peer_addr().map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |address| address.ip())
}

fn bad_request(message: impl Into<String>) -> HttpResponse {
    error_response(&ServiceError::Invalid(message.into()))
}

/// Open to anyone ([`PUBLIC_PATH`]): load balancers and supervisors ask it.
async fn health(state: State) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok", "node": state.cluster.node_id() }))
}

/// The one path open to anyone.
const PUBLIC_PATH: &str = "/health";

/// What a route does; [`Endpoint::handler`] names the function that does it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Health,
    Metrics,
    ClusterStatus,
    TransferLeader,
    UpsertUser,
    GetUser,
    AddDomain,
    GetDomain,
    CreateDkimKey,
    GetDkimKey,
    AppendMessage,
    ListMessages,
    EnqueueOutbound,
    ListOutbound,
    CreateToken,
    ListTokens,
    RevokeToken,
    Audit,
    ListBans,
    AddBan,
    RemoveBan,
    ListNodes,
    AddNode,
    DrainNode,
    CancelDrain,
    RemoveNode,
    ListShards,
    GetShard,
    MoveShard,
    Rebalance,
    BackupCoreStatus,
    PromotionPlan,
    Promote,
    Switchover,
    Reseed,
    BackupGroup,
    #[cfg(any(debug_assertions, feature = "debug-faults"))]
    GetFaults,
    #[cfg(any(debug_assertions, feature = "debug-faults"))]
    SetFaults,
}

/// A learner's lag as the API shows it: committed entries it lacks, and the age in
/// seconds of the oldest of them.
fn lag_json(entries: u64, age_ms: u64) -> serde_json::Value {
    serde_json::json!({ "entries": entries, "seconds": age_ms as f64 / 1000.0 })
}

/// One route of the API.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub endpoint: Endpoint,
}

const fn route(method: Method, path: &'static str, endpoint: Endpoint) -> Route {
    Route { method, path, endpoint }
}

/// Every route, in matching order: the server is built from this table, and the test
/// of "no token, no answer" walks it. The hot path comes first, because routes with a
/// `{name}` are matched by regular expression one after another until one fits.
pub const ROUTES: &[Route] = &[
    route(Method::POST, "/api/v1/users/{address}/messages", Endpoint::AppendMessage),
    route(Method::GET, "/api/v1/users/{address}/messages", Endpoint::ListMessages),
    route(Method::GET, PUBLIC_PATH, Endpoint::Health),
    route(Method::GET, "/metrics", Endpoint::Metrics),
    route(Method::GET, "/api/v1/cluster", Endpoint::ClusterStatus),
    route(Method::POST, "/api/v1/shards/{shard}/transfer-leader", Endpoint::TransferLeader),
    route(Method::POST, "/api/v1/users", Endpoint::UpsertUser),
    route(Method::GET, "/api/v1/users/{address}", Endpoint::GetUser),
    route(Method::POST, "/api/v1/domains", Endpoint::AddDomain),
    route(Method::GET, "/api/v1/domains/{domain}", Endpoint::GetDomain),
    route(Method::POST, "/api/v1/domains/{domain}/dkim", Endpoint::CreateDkimKey),
    route(Method::GET, "/api/v1/domains/{domain}/dkim", Endpoint::GetDkimKey),
    route(Method::POST, "/api/v1/users/{address}/outbound", Endpoint::EnqueueOutbound),
    route(Method::GET, "/api/v1/users/{address}/outbound", Endpoint::ListOutbound),
    route(Method::POST, "/api/v1/tokens", Endpoint::CreateToken),
    route(Method::GET, "/api/v1/tokens", Endpoint::ListTokens),
    route(Method::DELETE, "/api/v1/tokens/{id}", Endpoint::RevokeToken),
    route(Method::GET, "/api/v1/audit", Endpoint::Audit),
    route(Method::GET, "/api/v1/bans", Endpoint::ListBans),
    route(Method::POST, "/api/v1/bans", Endpoint::AddBan),
    route(Method::DELETE, "/api/v1/bans", Endpoint::RemoveBan),
    route(Method::GET, "/api/v1/nodes", Endpoint::ListNodes),
    route(Method::POST, "/api/v1/nodes", Endpoint::AddNode),
    route(Method::POST, "/api/v1/nodes/{id}/drain", Endpoint::DrainNode),
    route(Method::POST, "/api/v1/nodes/{id}/cancel-drain", Endpoint::CancelDrain),
    route(Method::DELETE, "/api/v1/nodes/{id}", Endpoint::RemoveNode),
    route(Method::GET, "/api/v1/shards", Endpoint::ListShards),
    route(Method::GET, "/api/v1/shards/{shard}", Endpoint::GetShard),
    route(Method::POST, "/api/v1/shards/{shard}/move", Endpoint::MoveShard),
    route(Method::POST, "/api/v1/rebalance", Endpoint::Rebalance),
    route(Method::GET, "/api/v1/backup-core", Endpoint::BackupCoreStatus),
    route(Method::GET, "/api/v1/backup-core/promotion", Endpoint::PromotionPlan),
    route(Method::POST, "/api/v1/backup-core/promote", Endpoint::Promote),
    route(Method::POST, "/api/v1/backup-core/switchover", Endpoint::Switchover),
    route(Method::POST, "/api/v1/backup-core/reseed", Endpoint::Reseed),
    route(Method::GET, "/api/v1/backup/groups/{group}", Endpoint::BackupGroup),
    #[cfg(any(debug_assertions, feature = "debug-faults"))]
    route(Method::GET, "/api/v1/debug/faults", Endpoint::GetFaults),
    #[cfg(any(debug_assertions, feature = "debug-faults"))]
    route(Method::POST, "/api/v1/debug/faults", Endpoint::SetFaults),
];

impl Endpoint {
    fn handler(self) -> actix_web::Route {
        match self {
            Endpoint::Health => web::to(health),
            Endpoint::Metrics => web::to(cluster::metrics),
            Endpoint::ClusterStatus => web::to(cluster::status),
            Endpoint::TransferLeader => web::to(cluster::transfer_leader),
            Endpoint::UpsertUser => web::to(users::upsert),
            Endpoint::GetUser => web::to(users::get),
            Endpoint::AddDomain => web::to(users::add_domain),
            Endpoint::GetDomain => web::to(users::get_domain),
            Endpoint::CreateDkimKey => web::to(dkim::create),
            Endpoint::GetDkimKey => web::to(dkim::get),
            Endpoint::AppendMessage => web::to(messages::append),
            Endpoint::ListMessages => web::to(messages::list),
            Endpoint::EnqueueOutbound => web::to(outbound::enqueue),
            Endpoint::ListOutbound => web::to(outbound::list),
            Endpoint::CreateToken => web::to(tokens::create),
            Endpoint::ListTokens => web::to(tokens::list),
            Endpoint::RevokeToken => web::to(tokens::revoke),
            Endpoint::Audit => web::to(audit::list),
            Endpoint::ListBans => web::to(bans::list),
            Endpoint::AddBan => web::to(bans::add),
            Endpoint::RemoveBan => web::to(bans::remove),
            Endpoint::ListNodes => web::to(nodes::list_nodes),
            Endpoint::AddNode => web::to(nodes::add_node),
            Endpoint::DrainNode => web::to(nodes::drain),
            Endpoint::CancelDrain => web::to(nodes::cancel_drain),
            Endpoint::RemoveNode => web::to(nodes::remove_node),
            Endpoint::ListShards => web::to(nodes::list_shards),
            Endpoint::GetShard => web::to(nodes::get_shard),
            Endpoint::MoveShard => web::to(nodes::move_shard),
            Endpoint::Rebalance => web::to(nodes::rebalance),
            Endpoint::BackupCoreStatus => web::to(backup_core::status),
            Endpoint::PromotionPlan => web::to(backup_core::promotion),
            Endpoint::Promote => web::to(backup_core::promote),
            Endpoint::Switchover => web::to(backup_core::switchover),
            Endpoint::Reseed => web::to(backup_core::reseed),
            Endpoint::BackupGroup => web::to(backup::group),
            #[cfg(any(debug_assertions, feature = "debug-faults"))]
            Endpoint::GetFaults => web::to(debug::get_faults),
            #[cfg(any(debug_assertions, feature = "debug-faults"))]
            Endpoint::SetFaults => web::to(debug::set_faults),
        }
    }
}

/// No route matched: 405 with the methods the path takes, or 404.
async fn unrouted(request: HttpRequest) -> HttpResponse {
    let allowed: Vec<&str> = ROUTES
        .iter()
        .filter(|r| ResourceDef::new(r.path).is_match(request.path()))
        .map(|r| r.method.as_str())
        .collect();
    if allowed.is_empty() {
        return error_response(&ServiceError::NotFound(
            "no such endpoint; see GET /api/v1/cluster, /api/v1/users/{address}, /health, /metrics".into(),
        ));
    }
    HttpResponse::MethodNotAllowed()
        .insert_header(("Allow", allowed.join(", ")))
        .json(json!({ "error": format!("use {} on this endpoint", allowed.join(" or ")) }))
}

fn routes(config: &mut web::ServiceConfig) {
    for route in ROUTES {
        config.route(route.path, route.endpoint.handler().method(route.method.clone()));
    }
    config.default_service(web::to(unrouted));
}

/// Serves the API until the server is stopped (SIGINT/SIGTERM stop it gracefully):
/// HTTPS with the configured certificate, or plain HTTP where `[http] plain` says so.
pub async fn serve(
    listen: std::net::SocketAddr,
    settings: &HttpSettings,
    workers: usize,
    state: AppState,
) -> anyhow::Result<()> {
    let guard = guard::HttpGuard::new(settings, Arc::clone(&state.bans));
    let state = web::Data::new(state);
    let app_guard = web::Data::from(Arc::clone(&guard));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(app_guard.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .app_data(web::JsonConfig::default().limit(MAX_BODY_BYTES).error_handler(|error, _| {
                let message = error.to_string();
                actix_web::error::InternalError::from_response(error, bad_request(message)).into()
            }))
            .configure(routes)
            .wrap(middleware::from_fn(caller::authenticate))
            .wrap(middleware::from_fn(guard::protect))
    })
    .workers(workers)
    .client_request_timeout(std::time::Duration::from_millis(settings.header_timeout_ms))
    .on_connect(move |connection, extensions| guard.on_connect(connection, extensions));
    let server = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => {
            let mut tls = gateways::tls::server_config(cert, key)?;
            // This server speaks HTTP/1.1 only.
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            server.bind_rustls_0_23(listen, tls)?
        }
        _ => server.bind(listen)?,
    };
    Ok(server.run().await?)
}
