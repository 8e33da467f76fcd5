//! The authenticated caller of a request: the middleware that authenticates it before
//! it is routed (401 with `WWW-Authenticate` when credentials are missing or wrong), the
//! extractor handlers take it with, and the checks a handler makes with it (403 when the
//! policy says no). A 403 for a user's address reads the same whether or not the user
//! exists.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, HttpResponse};
use futures::future::{Ready, ready};
use serde_json::json;

use super::{PUBLIC_PATH, State, error_response};
use crate::addresses::normalize_address;
use crate::audit::AuditEvent;
use crate::auth::authenticator::Credentials;
use crate::auth::policy::permits;
use crate::auth::{Action, Principal, Refused, UserAccess};
use crate::clock::now_ms;
use crate::cluster::ServiceError;

/// Who is calling; handlers take it as their first argument.
pub struct Caller(pub Principal);

fn refused(refusal: Refused) -> HttpResponse {
    match refusal {
        Refused::Unauthenticated(message) | Refused::LoginRefused(message) => {
            HttpResponse::build(StatusCode::UNAUTHORIZED)
                .append_header(("WWW-Authenticate", "Bearer realm=\"ums\""))
                .append_header(("WWW-Authenticate", "Basic realm=\"ums\", charset=\"UTF-8\""))
                .json(json!({ "error": message }))
        }
        Refused::Unavailable(message) => error_response(&ServiceError::Unavailable(message)),
    }
}

fn banned_response() -> HttpResponse {
    HttpResponse::build(StatusCode::FORBIDDEN)
        .json(json!({ "error": "your address is banned for abuse; try again later" }))
}

fn forbidden(principal: &Principal, action: &Action<'_>) -> HttpResponse {
    let who = match principal {
        Principal::Token { name, role, .. } => format!("token '{name}' ({role})"),
        Principal::User { user_id } => format!("user {user_id}"),
    };
    HttpResponse::build(StatusCode::FORBIDDEN).json(json!({ "error": format!("{who} may not {}", action.describe()) }))
}

/// Authenticates every request but `/health` before it is routed, so no handler runs,
/// and no body is read, for a caller without valid credentials. The principal goes into
/// the request's extensions, where [`Caller`] finds it.
pub(super) async fn authenticate(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if request.path() == PUBLIC_PATH {
        return next.call(request).await.map(ServiceResponse::map_into_left_body);
    }
    let state = request.app_data::<State>().cloned().expect("the app has its state");
    let ip = super::source_ip(&request);
    let action = format!("{} {}", request.method(), request.path());
    let header = request.headers().get(AUTHORIZATION).map(|value| value.to_str().map(str::to_string));
    // Banned sources cost nothing: only a token (cheap to check) is looked at, never a
    // password (argon2).
    let banned = state.bans.is_banned(ip, now_ms());
    let bearer = matches!(&header, Some(Ok(h)) if matches!(Credentials::of(h), Credentials::Bearer(_)));
    if banned && !bearer {
        return Ok(request.into_response(banned_response()).map_into_right_body());
    }
    let outcome = match &header {
        Some(Err(_)) => Err(Refused::Unauthenticated("the Authorization header is not ASCII".into())),
        Some(Ok(header)) => state.authenticator.authenticate(Some(header), ip).await,
        None => state.authenticator.authenticate(None, ip).await,
    };
    let audit = |actor: &str, result: u16, detail: &str| {
        state.audit.record(AuditEvent { actor, source: ip, action: &action, result: result.into(), detail });
    };
    match outcome {
        // A banned source is refused, but an operator's token still gets through, so a
        // ban can always be lifted.
        Ok(principal) if banned && !principal.is_operator() => {
            audit(principal.name(), 403, "banned source");
            Ok(request.into_response(banned_response()).map_into_right_body())
        }
        Ok(principal) => {
            // Changes are audited, and refusals; reads that were allowed are not, but for
            // the copies of whole groups a backup takes.
            let audited = request.method() != Method::GET || request.path().starts_with(AUDITED_READS);
            let actor = principal.name().to_string();
            request.extensions_mut().insert(principal);
            let response = next.call(request).await?;
            if audited || response.status() == StatusCode::FORBIDDEN {
                audit(&actor, response.status().as_u16(), "");
            }
            Ok(response.map_into_left_body())
        }
        Err(refusal) => {
            // A refused user login was audited by the login check itself.
            if let Refused::Unauthenticated(why) | Refused::Unavailable(why) = &refusal {
                let presented = header.and_then(Result::ok).map(|h| presented_token(&h)).unwrap_or_default();
                let status = if matches!(refusal, Refused::Unavailable(_)) { 503 } else { 401 };
                audit(&presented, status, why);
            }
            // A banned source is told so, whatever token it tried.
            let response = if banned { banned_response() } else { refused(refusal) };
            Ok(request.into_response(response).map_into_right_body())
        }
    }
}

/// Reads audited like changes: a backup's copy of a group is all of its data.
const AUDITED_READS: &str = "/api/v1/backup/";

/// Who a refused `Authorization` header claimed to be: a token's public id, never its
/// secret.
fn presented_token(header: &str) -> String {
    match Credentials::of(header) {
        Credentials::Bearer(text) => crate::auth::token::parse(text).map(|t| format!("token {}", t.id)),
        _ => None,
    }
    .unwrap_or_default()
}

impl FromRequest for Caller {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Only a route registered without the `authenticate` middleware has none.
        let principal = request.extensions().get::<Principal>().cloned();
        ready(principal.map(Caller).ok_or_else(|| {
            let refusal = refused(Refused::Unauthenticated("this endpoint needs a token".into()));
            actix_web::error::InternalError::from_response("unauthenticated", refusal).into()
        }))
    }
}

impl Caller {
    /// Ok when the policy lets the caller do `action`; the 403 to answer otherwise.
    pub fn may(&self, action: Action<'_>) -> Result<(), Box<HttpResponse>> {
        if permits(&self.0, &action) { Ok(()) } else { Err(Box::new(forbidden(&self.0, &action))) }
    }

    /// Like [`Caller::may`] for an action on the user behind `address` (an e-mail
    /// address, phone number or `emp:` number). Only a caller short of operator needs
    /// the address resolved, and one that does not resolve is refused like one outside
    /// the caller's scope.
    pub async fn may_for_user(
        &self,
        state: &State,
        access: UserAccess,
        address: &str,
    ) -> Result<(), Box<HttpResponse>> {
        if self.0.is_operator() {
            return Ok(());
        }
        let user_id = match normalize_address(address) {
            Ok(address) if address.contains('@') => address,
            Ok(_) => match state.cluster.resolve(address).await {
                Ok(user_id) => user_id,
                Err(ServiceError::Unavailable(e)) => {
                    return Err(Box::new(error_response(&ServiceError::Unavailable(e))));
                }
                Err(_) => String::new(),
            },
            Err(e) => return Err(Box::new(error_response(&e))),
        };
        self.may(Action::User(access, &user_id))
    }
}
