//! The HTTP API on port 7N80 (actix-web): health, cluster status, users, messages,
//! leader transfer, and Prometheus metrics. Any node answers any request; errors are
//! JSON `{"error": "..."}` with a status that says what to do (404, 400, 409, and 503
//! with `Retry-After` while a shard has no leader).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine as _;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::json;

use storage::DiskFaults;

use crate::cluster::{Cluster, ServiceError, UserInput};
use crate::config::Member;
use crate::peer::PeerNetwork;
use crate::proto::state::{ListMessages, OutboundItem, User, outbound_item};
use crate::state::quota;

/// Largest message accepted over HTTP (the SMTP limit, 35 MB, plus JSON overhead).
const MAX_BODY_BYTES: usize = 48 << 20;

/// What every handler can reach.
pub struct AppState {
    pub cluster: Arc<Cluster>,
    pub members: Vec<Member>,
    pub metrics: Option<PrometheusHandle>,
    /// Fault injection for drills; `None` unless the node runs with `debug_faults`.
    pub debug: Option<DebugFaults>,
}

/// What `POST /api/v1/debug/faults` can slow down.
pub struct DebugFaults {
    pub network: Arc<PeerNetwork>,
    pub disk: Arc<DiskFaults>,
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

fn bad_request(message: impl Into<String>) -> HttpResponse {
    error_response(&ServiceError::Invalid(message.into()))
}

async fn health(state: State) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok", "node": state.cluster.node_id() }))
}

#[derive(Serialize)]
struct ShardView {
    shard: u64,
    role: String,
    leader: Option<u64>,
    term: u64,
    commit_index: u64,
    applied_index: u64,
    last_index: u64,
    first_index: u64,
    voters: Vec<u64>,
    learners: Vec<u64>,
    /// For shards this node leads: entries each replica is behind.
    replica_lag: BTreeMap<u64, u64>,
}

async fn cluster(state: State) -> HttpResponse {
    let statuses = state.cluster.raft().status().await;
    let shards: Vec<ShardView> = statuses
        .into_iter()
        .map(|s| ShardView {
            shard: s.group,
            role: format!("{:?}", s.role),
            leader: s.leader,
            term: s.term,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            last_index: s.last_index,
            first_index: s.first_index,
            voters: s.voters,
            learners: s.learners,
            replica_lag: s
                .progress
                .iter()
                .map(|(&node, &matched)| (node, s.last_index.saturating_sub(matched)))
                .collect(),
        })
        .collect();
    let nodes: Vec<_> = state
        .members
        .iter()
        .map(|m| json!({ "id": m.id, "peer": m.peer.to_string(), "http": m.http.to_string() }))
        .collect();
    HttpResponse::Ok().json(json!({
        "node": state.cluster.node_id(),
        "nodes": nodes,
        "active_mailboxes": state.cluster.mailboxes().active_count(),
        "shards": shards,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainBody {
    domain: String,
}

/// Accept mail for a domain (also local once any user in it exists).
async fn add_domain(state: State, body: web::Json<DomainBody>) -> HttpResponse {
    match state.cluster.add_domain(&body.domain).await {
        Ok(domain) => HttpResponse::Created().json(json!({ "domain": domain, "local": true })),
        Err(e) => error_response(&e),
    }
}

async fn get_domain(state: State, domain: web::Path<String>) -> HttpResponse {
    match state.cluster.is_local_domain(&domain).await {
        Ok(local) => HttpResponse::Ok().json(json!({ "domain": domain.to_lowercase(), "local": local })),
        Err(e) => error_response(&e),
    }
}

/// A user as the API shows it (never the password hash).
fn user_view(cluster: &Cluster, user: &User) -> serde_json::Value {
    json!({
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "ministry": user.ministry,
        "msisdn": user.msisdn,
        "fax": user.fax,
        "employee_number": user.employee_number,
        "shard": cluster.shard_of(&user.id),
        "created_ms": user.created_ms,
        "quota_bytes": quota::limit(user),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    ministry: String,
    #[serde(default, alias = "mobile")]
    msisdn: String,
    #[serde(default)]
    fax: String,
    #[serde(default)]
    employee_number: String,
    #[serde(default)]
    password: Option<String>,
    /// An argon2 PHC hash migrated from another directory, instead of `password`.
    #[serde(default)]
    password_hash: Option<String>,
    /// Storage quota in bytes; absent keeps the user's (or the default, 5 GiB).
    #[serde(default)]
    quota_bytes: Option<u64>,
}

async fn upsert_user(state: State, body: web::Json<UserBody>) -> HttpResponse {
    let body = body.into_inner();
    let input = UserInput {
        email: body.email,
        name: body.name,
        ministry: body.ministry,
        msisdn: body.msisdn,
        fax: body.fax,
        employee_number: body.employee_number,
        password: body.password.filter(|p| !p.is_empty()),
        password_hash: body.password_hash.filter(|p| !p.is_empty()),
        quota_bytes: body.quota_bytes,
    };
    match state.cluster.upsert_user(input).await {
        Ok(upserted) => {
            let mut view = user_view(&state.cluster, &upserted.user);
            if let Some(password) = upserted.initial_password {
                view["initial_password"] = json!(password);
            }
            let status = if upserted.created { StatusCode::CREATED } else { StatusCode::OK };
            HttpResponse::build(status).json(view)
        }
        Err(e) => error_response(&e),
    }
}

async fn get_user(state: State, address: web::Path<String>) -> HttpResponse {
    match state.cluster.lookup_user(&address).await {
        Ok(user) => HttpResponse::Ok().json(user_view(&state.cluster, &user)),
        Err(e) => error_response(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    #[serde(default = "default_kind")]
    kind: String,
    /// The message text (UTF-8), or use `body_base64` for binary content.
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
    #[serde(default)]
    mailbox: Option<String>,
    /// The submitter's own reference for this message, kept with it.
    #[serde(default)]
    client_ref: String,
}

fn default_kind() -> String {
    "email".into()
}

const KINDS: [&str; 5] = ["email", "sms", "fax", "voicemail", "video"];

#[derive(Deserialize)]
struct AppendQuery {
    kind: Option<String>,
    mailbox: Option<String>,
    client_ref: Option<String>,
}

/// JSON (`{"kind": "sms", "body": "..."}`) or any other content type as the raw message.
async fn append_message(
    state: State,
    request: HttpRequest,
    address: web::Path<String>,
    query: web::Query<AppendQuery>,
    payload: web::Bytes,
) -> HttpResponse {
    let is_json = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (kind, mailbox, raw, client_ref) = if is_json {
        let body: MessageBody = match serde_json::from_slice(&payload) {
            Ok(body) => body,
            Err(e) => return bad_request(format!("invalid JSON message: {e}")),
        };
        let raw = match (body.body, body.body_base64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(encoded)) => match base64::engine::general_purpose::STANDARD.decode(encoded) {
                Ok(bytes) => bytes,
                Err(e) => return bad_request(format!("body_base64: {e}")),
            },
            _ => return bad_request("give exactly one of body and body_base64"),
        };
        (body.kind, body.mailbox.unwrap_or_else(|| "INBOX".into()), raw, body.client_ref)
    } else {
        let query = query.into_inner();
        (
            query.kind.unwrap_or_else(default_kind),
            query.mailbox.unwrap_or_else(|| "INBOX".into()),
            payload.to_vec(),
            query.client_ref.unwrap_or_default(),
        )
    };
    if !KINDS.contains(&kind.as_str()) {
        return bad_request(format!("unknown kind '{kind}'; use one of {}", KINDS.join(", ")));
    }
    if raw.is_empty() {
        return bad_request("empty message");
    }
    let key = match idempotency_key(&request) {
        Ok(key) => key,
        Err(error) => return error_response(&error),
    };
    match state.cluster.deliver(&address, &mailbox, raw, &kind, &client_ref, key.as_deref()).await {
        Ok((shard, delivered)) => {
            let mut response = HttpResponse::Created();
            // A hint for clients that want to skip the forwarding hop next time.
            if let Some(leader) =
                state.cluster.raft().leader(shard).and_then(|l| state.members.iter().find(|m| m.id == l))
            {
                response.insert_header(("X-UMS-Shard-Leader", leader.http.to_string()));
            }
            response.json(json!({
                "uid": delivered.uid,
                "modseq": delivered.modseq,
                "uid_validity": delivered.uid_validity,
                "shard": shard,
            }))
        }
        Err(e) => error_response(&e),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    mailbox: Option<String>,
    after_uid: Option<u32>,
    limit: Option<u32>,
    bodies: Option<bool>,
    /// Read this node's replica without asking the leader (may be stale).
    local: Option<bool>,
}

async fn list_messages(state: State, address: web::Path<String>, query: web::Query<ListQuery>) -> HttpResponse {
    let list = ListMessages {
        user_id: String::new(),
        mailbox: query.mailbox.clone().unwrap_or_else(|| "INBOX".into()),
        after_uid: query.after_uid.unwrap_or(0),
        limit: query.limit.unwrap_or(1000).min(10_000),
        with_bodies: query.bodies.unwrap_or(false),
        uids: Vec::new(),
    };
    match state.cluster.list_messages(&address, list, query.local.unwrap_or(false)).await {
        Ok(result) => {
            let messages: Vec<_> = result
                .messages
                .iter()
                .map(|m| {
                    let meta = m.meta.clone().unwrap_or_default();
                    let mut view = json!({
                        "uid": meta.uid,
                        "modseq": meta.modseq,
                        "kind": meta.kind,
                        "size": meta.size,
                        "internal_date_ms": meta.internal_date_ms,
                        "flags": meta.flags,
                        "client_ref": meta.client_ref,
                    });
                    if query.bodies.unwrap_or(false) {
                        view["body"] = json!(String::from_utf8_lossy(&m.raw));
                        // The exact bytes (8-bit mail is not always UTF-8).
                        view["body_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&m.raw));
                    }
                    view
                })
                .collect();
            let mailbox = result.mailbox.unwrap_or_default();
            HttpResponse::Ok().json(json!({
                "uid_validity": mailbox.uid_validity,
                "next_uid": mailbox.next_uid,
                "highest_modseq": mailbox.highest_modseq,
                "messages": messages,
            }))
        }
        Err(e) => error_response(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboundBody {
    /// Only "webhook" for now: an HTTP POST of `body` to `target`.
    #[serde(default = "default_channel")]
    channel: String,
    target: String,
    #[serde(default)]
    body: String,
    #[serde(default = "default_content_type")]
    content_type: String,
    #[serde(default)]
    client_ref: String,
}

fn default_channel() -> String {
    "webhook".into()
}

fn default_content_type() -> String {
    "application/json".into()
}

fn outbound_view(item: &OutboundItem) -> serde_json::Value {
    let status = match outbound_item::Status::from_i32(item.status) {
        Some(outbound_item::Status::Delivered) => "delivered",
        Some(outbound_item::Status::Failed) => "failed",
        _ => "pending",
    };
    json!({
        "seq": item.seq, "channel": item.channel, "target": item.target, "status": status,
        "attempts": item.attempts, "last_error": item.last_error, "client_ref": item.client_ref,
        "created_ms": item.created_ms, "updated_ms": item.updated_ms,
    })
}

async fn enqueue_outbound(
    state: State,
    request: HttpRequest,
    address: web::Path<String>,
    body: web::Json<OutboundBody>,
) -> HttpResponse {
    let body = body.into_inner();
    let key = match idempotency_key(&request) {
        Ok(key) => key,
        Err(error) => return error_response(&error),
    };
    if body.channel != "webhook" {
        return bad_request(format!("unknown channel '{}'; only 'webhook' is available", body.channel));
    }
    if !(body.target.starts_with("http://") || body.target.starts_with("https://")) {
        return bad_request(format!("target '{}' is not an http(s) URL", body.target));
    }
    let item = OutboundItem {
        channel: body.channel,
        target: body.target,
        payload: body.body.into_bytes(),
        content_type: body.content_type,
        client_ref: body.client_ref,
        ..Default::default()
    };
    match state.cluster.enqueue_outbound(&address, item, key.as_deref()).await {
        Ok((shard, item)) => {
            let mut view = outbound_view(&item);
            view["shard"] = json!(shard);
            HttpResponse::Accepted().json(view)
        }
        Err(e) => error_response(&e),
    }
}

async fn list_outbound(state: State, address: web::Path<String>) -> HttpResponse {
    match state.cluster.list_outbound(&address).await {
        Ok(items) => {
            HttpResponse::Ok().json(json!({ "outbound": items.iter().map(outbound_view).collect::<Vec<_>>() }))
        }
        Err(e) => error_response(&e),
    }
}

#[derive(Deserialize)]
struct TransferBody {
    node: u64,
}

async fn transfer_leader(state: State, shard: web::Path<u64>, body: web::Json<TransferBody>) -> HttpResponse {
    let shard = shard.into_inner();
    match state.cluster.raft().transfer_leader(shard, body.node).await {
        Ok(()) => HttpResponse::Accepted().json(json!({ "shard": shard, "to": body.node })),
        Err(consensus::ProposeError::NotLeader { leader, .. }) => {
            let http = leader.and_then(|l| state.members.iter().find(|m| m.id == l)).map(|m| m.http.to_string());
            HttpResponse::build(StatusCode::MISDIRECTED_REQUEST)
                .json(json!({ "error": format!("this node does not lead shard {shard}"), "leader": leader, "leader_http": http }))
        }
        Err(e) => error_response(&ServiceError::NotFound(e.to_string())),
    }
}

async fn metrics(state: State) -> HttpResponse {
    match &state.metrics {
        Some(handle) => HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(handle.render()),
        None => HttpResponse::Ok().insert_header(ContentType::plaintext()).body(""),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsBody {
    /// Delay of every frame this node sends to its peers.
    peer_delay_ms: Option<u64>,
    /// Added to every fsync of this node.
    fsync_delay_ms: Option<u64>,
}

/// Longest delay a drill may inject: below the silence after which peers count a node
/// as cut off (1.5 s), so a slow network stays a slow network, not a partition.
const MAX_DEBUG_DELAY_MS: u64 = 1_000;

fn faults_json(debug: &DebugFaults) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "peer_delay_ms": debug.network.delay().as_millis() as u64,
        "fsync_delay_ms": debug.disk.fsync_delay().as_millis() as u64,
    }))
}

fn debug_off() -> HttpResponse {
    error_response(&ServiceError::NotFound(
        "debug faults are off on this node (debug_faults = true in node.toml; never in production)".into(),
    ))
}

async fn get_debug_faults(state: State) -> HttpResponse {
    state.debug.as_ref().map_or_else(debug_off, faults_json)
}

/// Slows this node's peer network and/or disk, for drills; zero turns a fault off.
async fn set_debug_faults(state: State, body: web::Json<FaultsBody>) -> HttpResponse {
    let Some(debug) = state.debug.as_ref() else {
        return debug_off();
    };
    let requested = [body.peer_delay_ms, body.fsync_delay_ms];
    if requested.iter().flatten().any(|&ms| ms > MAX_DEBUG_DELAY_MS) {
        return bad_request(format!("delays are at most {MAX_DEBUG_DELAY_MS} ms"));
    }
    if let Some(ms) = body.peer_delay_ms {
        debug.network.set_delay(Duration::from_millis(ms));
    }
    if let Some(ms) = body.fsync_delay_ms {
        debug.disk.set_fsync_delay(Duration::from_millis(ms));
    }
    tracing::warn!(peer_delay_ms = ?body.peer_delay_ms, fsync_delay_ms = ?body.fsync_delay_ms, "debug faults changed");
    faults_json(debug)
}

async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header(("Allow", "GET, POST"))
        .json(json!({ "error": "use GET or POST on this endpoint" }))
}

async fn not_found() -> HttpResponse {
    error_response(&ServiceError::NotFound(
        "no such endpoint; see GET /api/v1/cluster, /api/v1/users/{address}, /health, /metrics".into(),
    ))
}

/// Serves the API until the server is stopped (SIGINT/SIGTERM stop it gracefully).
pub async fn serve(listen: std::net::SocketAddr, workers: usize, state: AppState) -> std::io::Result<()> {
    let state = web::Data::new(state);
    HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .app_data(web::JsonConfig::default().limit(MAX_BODY_BYTES).error_handler(|error, _| {
                let message = error.to_string();
                actix_web::error::InternalError::from_response(error, bad_request(message)).into()
            }))
            // The hot path first: routes with a `{name}` are matched by regular
            // expression, one after another until one fits.
            .service(
                web::resource("/api/v1/users/{address}/messages")
                    .route(web::post().to(append_message))
                    .route(web::get().to(list_messages))
                    .default_service(web::to(method_not_allowed)),
            )
            .route("/health", web::get().to(health))
            .route("/metrics", web::get().to(metrics))
            .route("/api/v1/cluster", web::get().to(cluster))
            .route("/api/v1/users", web::post().to(upsert_user))
            .route("/api/v1/domains", web::post().to(add_domain))
            .route("/api/v1/domains/{domain}", web::get().to(get_domain))
            .route("/api/v1/users/{address}", web::get().to(get_user))
            .route("/api/v1/users/{address}/outbound", web::post().to(enqueue_outbound))
            .route("/api/v1/users/{address}/outbound", web::get().to(list_outbound))
            .route("/api/v1/shards/{shard}/transfer-leader", web::post().to(transfer_leader))
            .route("/api/v1/debug/faults", web::get().to(get_debug_faults))
            .route("/api/v1/debug/faults", web::post().to(set_debug_faults))
            .default_service(web::to(not_found))
    })
    .workers(workers)
    .bind(listen)?
    .run()
    .await
}
