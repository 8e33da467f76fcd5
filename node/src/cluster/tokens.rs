//! API tokens in the meta group: create one (its text is returned once and never
//! stored), read one, list them, revoke one.

use super::{Cluster, ServiceError};
use crate::addresses::normalize_domain;
use crate::auth::policy::Role;
use crate::auth::token;
use crate::clock::now_ms;
use crate::placement::META_GROUP;
use crate::proto::state::{ApiToken, GetToken, ListTokens, PutToken, RevokeToken, command, query};

/// A token to create, as an operator asked for it.
pub struct TokenRequest {
    pub name: String,
    pub role: Role,
    /// Domains (ministry-admin, application) or the carrier's name.
    pub scope: Vec<String>,
    /// 0: never expires.
    pub expires_ms: u64,
    /// The name of the principal creating it.
    pub created_by: String,
}

/// A carrier's name: what its endpoints' paths and its token's scope say.
fn valid_carrier_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The scope in its one spelling, checked against the role.
fn normalized_scope(role: Role, scope: &[String]) -> Result<Vec<String>, ServiceError> {
    let mut normalized = Vec::with_capacity(scope.len());
    for entry in scope {
        let entry = match role {
            Role::Carrier if valid_carrier_name(entry.trim()) => entry.trim().to_string(),
            Role::Carrier => {
                return Err(ServiceError::Invalid(format!(
                    "'{entry}' is not a carrier name (lower-case letters, digits, '-')"
                )));
            }
            _ => normalize_domain(entry)?,
        };
        if !normalized.contains(&entry) {
            normalized.push(entry);
        }
    }
    role.check_scope(&normalized).map_err(ServiceError::Invalid)?;
    Ok(normalized)
}

impl Cluster {
    /// Creates a token; returns its record and its text, which only the caller sees.
    pub async fn create_token(&self, request: TokenRequest) -> Result<(ApiToken, String), ServiceError> {
        let name = request.name.trim();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(ServiceError::Invalid("a token's name is 1 to 100 printable characters".into()));
        }
        let scope = normalized_scope(request.role, &request.scope)?;
        let new = token::generate();
        let record = ApiToken {
            id: new.id,
            name: name.to_string(),
            role: request.role.as_str().to_string(),
            scope,
            secret_sha256: new.secret_sha256.to_vec(),
            created_ms: now_ms(),
            expires_ms: request.expires_ms,
            revoked_ms: 0,
            created_by: request.created_by,
        };
        let result = self.propose(META_GROUP, command::Op::PutToken(PutToken { token: Some(record) })).await?;
        Ok((result.token.unwrap_or_default(), new.text))
    }

    /// The token with this id, if there is one (revoked and expired ones too).
    ///
    /// Read from this node's replica of the meta group, so checking a token needs no
    /// leader (a meta-group election does not stop the API) and a revocation counts here
    /// once this node has applied it. An id this replica does not hold is asked of the
    /// leader: a token created a moment ago elsewhere may not have reached this replica.
    /// A node cut off from the meta group goes on trusting what it last applied.
    pub async fn token(&self, id: &str) -> Result<Option<ApiToken>, ServiceError> {
        let get = || query::Q::GetToken(GetToken { id: id.to_string() });
        match self.query_local(META_GROUP, get()).await {
            Ok(result) if !result.tokens.is_empty() => return Ok(result.tokens.into_iter().next()),
            Ok(_) | Err(ServiceError::NotFound(_)) => {}
            Err(e) => tracing::warn!(error = %e, "reading a token from the local replica"),
        }
        match self.query(META_GROUP, get()).await {
            Ok(result) => Ok(result.tokens.into_iter().next()),
            Err(ServiceError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn tokens(&self) -> Result<Vec<ApiToken>, ServiceError> {
        Ok(self.query(META_GROUP, query::Q::ListTokens(ListTokens {})).await?.tokens)
    }

    /// Revokes a token on every node (within the authenticators' cache time).
    pub async fn revoke_token(&self, id: &str) -> Result<ApiToken, ServiceError> {
        let revoke = RevokeToken { id: id.to_string(), now_ms: now_ms() };
        let result = self.propose(META_GROUP, command::Op::RevokeToken(revoke)).await?;
        Ok(result.token.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_normalised_and_checked_per_role() {
        let scope = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            normalized_scope(Role::MinistryAdmin, &scope(&["Health.GO.ke", "health.go.ke."])).unwrap(),
            ["health.go.ke"]
        );
        assert!(normalized_scope(Role::MinistryAdmin, &scope(&["not a domain"])).is_err());
        assert!(normalized_scope(Role::Application, &[]).is_err());
        assert_eq!(normalized_scope(Role::Carrier, &scope(&["safaricom"])).unwrap(), ["safaricom"]);
        assert!(normalized_scope(Role::Carrier, &scope(&["Safari com"])).is_err());
        assert!(normalized_scope(Role::Operator, &scope(&["health.go.ke"])).is_err());
        assert!(normalized_scope(Role::Operator, &[]).unwrap().is_empty());
    }
}
