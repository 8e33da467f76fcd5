//! Users and their addresses: resolving an address (e-mail, MSISDN, fax number,
//! employee number) to a user id, reading a user, creating or updating one.

use gateways::mail_service::Quota;

use super::{Cluster, ServiceError};
use crate::addresses::{normalize_address, normalize_phone};
use crate::clock::now_ms;
use crate::passwords::{hash_password_off_thread, one_time_password};
use crate::placement::META_GROUP;
use crate::proto::state::{ClaimAddresses, GetUser, PutUser, ResolveAddress, User, command, query};

/// A user as submitted by an operator or an HR import.
#[derive(Clone, Debug, Default)]
pub struct UserInput {
    pub email: String,
    pub name: String,
    pub ministry: String,
    pub msisdn: String,
    pub fax: String,
    pub employee_number: String,
    /// `None` keeps an existing password, or generates a one-time one for a new user.
    pub password: Option<String>,
    /// An existing argon2 hash (PHC string), e.g. migrated from another directory;
    /// used instead of `password`.
    pub password_hash: Option<String>,
    /// Storage quota in bytes; `None` keeps the user's (a new user gets the default).
    pub quota_bytes: Option<u64>,
}

/// The result of [`Cluster::upsert_user`].
pub struct UpsertedUser {
    pub user: User,
    pub created: bool,
    /// Set when a new user got a generated one-time password.
    pub initial_password: Option<String>,
}

impl Cluster {
    /// The user id owning `address` (an e-mail address, MSISDN, fax number or
    /// `emp:NUMBER`).
    pub async fn resolve(&self, address: &str) -> Result<String, ServiceError> {
        let address = normalize_address(address)?;
        if address.contains('@') {
            // A user's id is its e-mail address: no directory round trip. Whether the
            // user exists is checked where the request lands (NOT_FOUND from the shard).
            return Ok(address);
        }
        let result = self.query(META_GROUP, query::Q::ResolveAddress(ResolveAddress { address })).await?;
        Ok(result.user_id)
    }

    pub async fn lookup_user(&self, address: &str) -> Result<User, ServiceError> {
        Ok(self.lookup_account(address).await?.0)
    }

    /// The user owning `address`, with its storage usage and quota.
    pub async fn lookup_account(&self, address: &str) -> Result<(User, Quota), ServiceError> {
        let user_id = self.resolve(address).await?;
        let result =
            self.query(self.shard_of(&user_id), query::Q::GetUser(GetUser { user_id: user_id.clone() })).await?;
        let usage = result.usage.unwrap_or_default();
        let quota = Quota { used_bytes: usage.bytes, limit_bytes: result.quota_bytes, messages: usage.messages };
        let user = result.user.ok_or_else(|| ServiceError::NotFound(format!("no such user: {user_id}")))?;
        Ok((user, quota))
    }

    /// Creates a user, or updates the one with the same e-mail address.
    pub async fn upsert_user(&self, input: UserInput) -> Result<UpsertedUser, ServiceError> {
        let email = normalize_address(&input.email)?;
        if !email.contains('@') {
            return Err(ServiceError::Invalid(format!("'{}' is not an e-mail address", input.email)));
        }
        let optional_phone = |what: &str, value: &str| -> Result<String, ServiceError> {
            if value.trim().is_empty() {
                return Ok(String::new());
            }
            normalize_phone(value).map_err(|e| ServiceError::Invalid(format!("{what}: {e}")))
        };
        let msisdn = optional_phone("mobile", &input.msisdn)?;
        let fax = optional_phone("fax", &input.fax)?;
        let employee_number = input.employee_number.trim().to_string();
        let mut addresses = vec![email.clone()];
        addresses.extend([&msisdn, &fax].into_iter().filter(|a| !a.is_empty()).cloned());
        if !employee_number.is_empty() {
            addresses.push(normalize_address(&format!("emp:{employee_number}"))?);
        }
        let shard = self.shard_of(&email);
        let existing = match self.query(shard, query::Q::GetUser(GetUser { user_id: email.clone() })).await {
            Ok(result) => result.user,
            Err(ServiceError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let (password_hash, initial_password) = match (input.password_hash, input.password, &existing) {
            (Some(hash), _, _) => {
                if let Err(why) = crate::passwords::check_hash(&hash) {
                    return Err(ServiceError::Invalid(why));
                }
                (hash, None)
            }
            (None, Some(password), _) => (hash_password_off_thread(password).await?, None),
            (None, None, Some(user)) => (user.password_hash.clone(), None),
            (None, None, None) => {
                let generated = one_time_password();
                (hash_password_off_thread(generated.clone()).await?, Some(generated))
            }
        };
        self.propose(META_GROUP, command::Op::ClaimAddresses(ClaimAddresses { user_id: email.clone(), addresses }))
            .await?;
        let user = User {
            id: email.clone(),
            email,
            name: input.name.trim().to_string(),
            ministry: input.ministry.trim().to_string(),
            msisdn,
            fax,
            employee_number,
            password_hash,
            created_ms: existing.as_ref().map_or_else(now_ms, |u| u.created_ms),
            quota_bytes: input.quota_bytes.or(existing.as_ref().map(|u| u.quota_bytes)).unwrap_or(0),
        };
        let result = self.propose(shard, command::Op::PutUser(PutUser { user: Some(user) })).await?;
        Ok(UpsertedUser { user: result.user.unwrap_or_default(), created: existing.is_none(), initial_password })
    }
}
