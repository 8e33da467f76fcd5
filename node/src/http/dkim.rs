//! A local domain's DKIM key: make one (`POST /api/v1/domains/{domain}/dkim`: operators,
//! and ministry admins for their domains), or read the record to publish (`GET`). The
//! private key stays in the cluster; answers carry the DNS record only.

use actix_web::{HttpResponse, web};
use gateways::smtp::authentication::signing::{DkimAlgorithm, record_name};
use serde::Deserialize;
use serde_json::json;

use super::caller::Caller;
use super::{State, bad_request, error_response};
use crate::addresses::normalize_domain;
use crate::auth::{Action, DomainAccess};
use crate::cluster::ServiceError;
use crate::proto::state::DkimKey;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyBody {
    /// Default: `ums` and the year, e.g. `ums2026`.
    selector: Option<String>,
    /// `rsa` (2048 bits, the default: every receiver verifies it) or `ed25519`.
    algorithm: Option<String>,
}

fn view(key: &DkimKey) -> serde_json::Value {
    json!({
        "domain": key.domain,
        "selector": key.selector,
        "record_name": record_name(&key.selector, &key.domain),
        "dns_record": key.dns_record,
        "created_ms": key.created_ms,
        "created_by": key.created_by,
    })
}

pub(super) async fn create(
    caller: Caller,
    state: State,
    domain: web::Path<String>,
    body: Option<web::Json<KeyBody>>,
) -> HttpResponse {
    let domain = match normalize_domain(&domain) {
        Ok(domain) => domain,
        Err(e) => return error_response(&e),
    };
    if let Err(denied) = caller.may(Action::Domain(DomainAccess::Add, &domain)) {
        return *denied;
    }
    let body = body.map(web::Json::into_inner).unwrap_or_default();
    let algorithm = match body.algorithm.as_deref() {
        None | Some("rsa") => DkimAlgorithm::Rsa2048,
        Some("ed25519") => DkimAlgorithm::Ed25519,
        Some(other) => return bad_request(format!("algorithm '{other}': use rsa or ed25519")),
    };
    let year = chrono::Utc::now().format("%Y").to_string();
    let selector = body.selector.unwrap_or_else(|| format!("ums{year}"));
    match state.cluster.create_dkim_key(&domain, &selector, algorithm, caller.0.name()).await {
        Ok(key) => HttpResponse::Created().json(view(&key)),
        Err(e) => error_response(&e),
    }
}

pub(super) async fn get(caller: Caller, state: State, domain: web::Path<String>) -> HttpResponse {
    let domain = match normalize_domain(&domain) {
        Ok(domain) => domain,
        Err(e) => return error_response(&e),
    };
    if let Err(denied) = caller.may(Action::Domain(DomainAccess::Read, &domain)) {
        return *denied;
    }
    match state.cluster.dkim_keys(false).await {
        Ok(keys) => match keys.iter().find(|k| k.domain == domain) {
            Some(key) => HttpResponse::Ok().json(view(key)),
            None => error_response(&ServiceError::NotFound(format!("{domain} has no DKIM key"))),
        },
        Err(e) => error_response(&e),
    }
}
