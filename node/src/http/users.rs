//! Users and mail domains: create or update a user (operators, and ministry admins in
//! their domains), read a user record, add a domain or ask whether one is local.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::caller::Caller;
use super::{State, error_response};
use crate::addresses::{normalize_address, normalize_domain};
use crate::auth::{Action, DomainAccess, UserAccess};
use crate::cluster::{Cluster, UserInput};
use crate::proto::state::User;
use crate::state::quota;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DomainBody {
    domain: String,
}

/// Accept mail for a domain (also local once any user in it exists).
pub(super) async fn add_domain(caller: Caller, state: State, body: web::Json<DomainBody>) -> HttpResponse {
    let domain = match normalize_domain(&body.domain) {
        Ok(domain) => domain,
        Err(e) => return error_response(&e),
    };
    if let Err(denied) = caller.may(Action::Domain(DomainAccess::Add, &domain)) {
        return *denied;
    }
    match state.cluster.add_domain(&domain).await {
        Ok(domain) => HttpResponse::Created().json(json!({ "domain": domain, "local": true })),
        Err(e) => error_response(&e),
    }
}

pub(super) async fn get_domain(caller: Caller, state: State, domain: web::Path<String>) -> HttpResponse {
    let domain = match normalize_domain(&domain) {
        Ok(domain) => domain,
        Err(e) => return error_response(&e),
    };
    if let Err(denied) = caller.may(Action::Domain(DomainAccess::Read, &domain)) {
        return *denied;
    }
    match state.cluster.is_local_domain(&domain).await {
        Ok(local) => HttpResponse::Ok().json(json!({ "domain": domain, "local": local })),
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
pub(super) struct UserBody {
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

/// Creates a user or updates the one with this e-mail address (its password too: only
/// callers allowed to write users of the address's domain get here).
pub(super) async fn upsert(caller: Caller, state: State, body: web::Json<UserBody>) -> HttpResponse {
    let body = body.into_inner();
    let email = match normalize_address(&body.email) {
        Ok(email) => email,
        Err(e) => return error_response(&e),
    };
    if let Err(denied) = caller.may(Action::User(UserAccess::Write, &email)) {
        return *denied;
    }
    let input = UserInput {
        email,
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

pub(super) async fn get(caller: Caller, state: State, address: web::Path<String>) -> HttpResponse {
    if let Err(denied) = caller.may_for_user(&state, UserAccess::Read, &address).await {
        return *denied;
    }
    match state.cluster.lookup_user(&address).await {
        Ok(user) => HttpResponse::Ok().json(user_view(&state.cluster, &user)),
        Err(e) => error_response(&e),
    }
}
