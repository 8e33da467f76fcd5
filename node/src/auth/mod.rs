//! Who may call the HTTP API: every endpoint but `/health` needs credentials.
//!
//! - [`token`] (pure): the bearer token's text, its generation and check.
//! - [`policy`] (pure): roles, principals, actions and the table that decides.
//! - [`authenticator`]: an `Authorization` header → a principal (token records from the
//!   meta group, cached; a user's own login and password).

pub mod authenticator;
pub mod policy;
pub mod token;

pub use authenticator::{Authenticator, Refused};
pub use policy::{Action, DomainAccess, Principal, Role, UserAccess};
