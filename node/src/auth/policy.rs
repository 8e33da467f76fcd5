//! Who may do what through the API (pure): roles, the principal a request
//! authenticated as, the action it asks for, and the one table that decides.
//!
//! - `operator`: everything (cluster, nodes, shards, tokens, faults, every mailbox).
//! - `ministry-admin`: the users and domains of its own domains (create, update, read
//!   user records, add a domain, see the outbound queue's state), never their mail.
//! - `application`: sends for its domains (deliver into a mailbox, queue outbound
//!   messages, read their state) and reads user records there.
//! - `carrier`: only its own endpoints, `/api/v1/carriers/{name}/...`.
//! - a user, by their own login and password: their own record and mail.

use std::fmt;

/// The role a token carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Operator,
    MinistryAdmin,
    Carrier,
    Application,
}

pub const ROLES: [Role; 4] = [Role::Operator, Role::MinistryAdmin, Role::Carrier, Role::Application];

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::MinistryAdmin => "ministry-admin",
            Role::Carrier => "carrier",
            Role::Application => "application",
        }
    }

    pub fn parse(text: &str) -> Result<Role, String> {
        ROLES.into_iter().find(|r| r.as_str() == text).ok_or_else(|| {
            let names: Vec<_> = ROLES.iter().map(|r| r.as_str()).collect();
            format!("unknown role '{text}'; use one of {}", names.join(", "))
        })
    }

    /// What the scope of a token with this role lists: `None` when it has none.
    pub fn scope_kind(self) -> Option<&'static str> {
        match self {
            Role::Operator => None,
            Role::MinistryAdmin | Role::Application => Some("domains"),
            Role::Carrier => Some("carrier name"),
        }
    }

    /// Checks a scope for this role: operators have none, carriers exactly one name,
    /// the others at least one domain (already normalised by the caller).
    pub fn check_scope(self, scope: &[String]) -> Result<(), String> {
        match (self, scope.len()) {
            (Role::Operator, 0) | (Role::Carrier, 1) => Ok(()),
            (Role::MinistryAdmin | Role::Application, n) if n > 0 => Ok(()),
            (Role::Operator, _) => Err("an operator token has no scope (it may do everything)".into()),
            (Role::Carrier, _) => Err("a carrier token names exactly one carrier as its scope".into()),
            (role, _) => Err(format!("a {} token needs its domains as scope", role.as_str())),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a request authenticated as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A token (replicated, or this node's own admin token): its name, role and scope.
    Token { name: String, role: Role, scope: Vec<String> },
    /// A user, by their own login and password.
    User { user_id: String },
}

impl Principal {
    pub fn is_operator(&self) -> bool {
        matches!(self, Principal::Token { role: Role::Operator, .. })
    }

    /// The name audit records and error messages use.
    pub fn name(&self) -> &str {
        match self {
            Principal::Token { name, .. } => name,
            Principal::User { user_id } => user_id,
        }
    }
}

/// What a request does to one user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserAccess {
    /// The user record (never the password hash).
    Read,
    /// Create or update the user, password included.
    Write,
    /// The user's messages, bodies included.
    ReadMail,
    /// Store a message in the user's mailbox.
    Deliver,
    /// Queue an outbound message (webhook, e-mail) in the user's name.
    SendOutbound,
    /// The state of the user's outbound messages.
    ReadOutbound,
}

/// What a request does to one domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainAccess {
    Read,
    Add,
}

/// What a request asks to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Cluster status, nodes, shards.
    ClusterStatus,
    /// Leader transfers and other changes to the cluster's shape.
    ClusterManage,
    /// Prometheus metrics.
    Metrics,
    /// Fault injection (drills).
    Faults,
    /// Create, list and revoke tokens.
    Tokens,
    /// Read the audit log.
    Audit,
    /// List, add and lift bans.
    Bans,
    Domain(DomainAccess, &'a str),
    /// `user_id` is the user's e-mail address (their id).
    User(UserAccess, &'a str),
    /// A carrier's own endpoints.
    Carrier(&'a str),
}

impl Action<'_> {
    /// A short description for a 403's message.
    pub fn describe(&self) -> String {
        match self {
            Action::ClusterStatus => "read the cluster's status".into(),
            Action::ClusterManage => "change the cluster".into(),
            Action::Metrics => "read metrics".into(),
            Action::Faults => "inject faults".into(),
            Action::Tokens => "manage tokens".into(),
            Action::Audit => "read the audit log".into(),
            Action::Bans => "manage bans".into(),
            Action::Domain(DomainAccess::Read, domain) => format!("read domain {domain}"),
            Action::Domain(DomainAccess::Add, domain) => format!("add domain {domain}"),
            Action::User(access, _) => format!("{access:?} this user").to_lowercase(),
            Action::Carrier(name) => format!("use the endpoints of carrier {name}"),
        }
    }
}

/// The domain of a user id (an e-mail address).
fn domain_of(user_id: &str) -> &str {
    user_id.rsplit_once('@').map_or("", |(_, domain)| domain)
}

/// The decision: may `principal` do `action`?
pub fn permits(principal: &Principal, action: &Action<'_>) -> bool {
    use UserAccess::*;
    let (role, scope) = match principal {
        Principal::User { user_id } => {
            return matches!(action, Action::User(Read | ReadMail | Deliver | ReadOutbound, id) if id == user_id);
        }
        Principal::Token { role, scope, .. } => (*role, scope),
    };
    let in_scope = |domain: &str| !domain.is_empty() && scope.iter().any(|s| s == domain);
    match (role, action) {
        (Role::Operator, _) => true,
        (Role::MinistryAdmin, Action::Domain(_, domain)) => in_scope(domain),
        (Role::MinistryAdmin, Action::User(Read | Write | ReadOutbound, user)) => in_scope(domain_of(user)),
        (Role::Application, Action::Domain(DomainAccess::Read, domain)) => in_scope(domain),
        (Role::Application, Action::User(Read | Deliver | SendOutbound | ReadOutbound, user)) => {
            in_scope(domain_of(user))
        }
        (Role::Carrier, Action::Carrier(name)) => scope.iter().any(|s| s == name),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(role: Role, scope: &[&str]) -> Principal {
        Principal::Token { name: "t".into(), role, scope: scope.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn the_table() {
        use UserAccess::*;
        let operator = token(Role::Operator, &[]);
        let health_admin = token(Role::MinistryAdmin, &["health.go.ke"]);
        let health_app = token(Role::Application, &["health.go.ke"]);
        let carrier = token(Role::Carrier, &["safaricom"]);
        let achieng = Principal::User { user_id: "achieng@health.go.ke".into() };
        let own = "achieng@health.go.ke";
        let other_ministry = "otieno@treasury.go.ke";
        // A domain whose name ends like one in scope is still another domain.
        let lookalike = "eve@evilhealth.go.ke";
        let cases: Vec<(&Principal, Action, bool)> = vec![
            (&operator, Action::ClusterManage, true),
            (&operator, Action::Faults, true),
            (&operator, Action::User(ReadMail, other_ministry), true),
            (&health_admin, Action::User(Write, own), true),
            (&health_admin, Action::User(Read, own), true),
            (&health_admin, Action::User(ReadMail, own), false),
            (&health_admin, Action::User(Deliver, own), false),
            (&health_admin, Action::User(Write, other_ministry), false),
            (&health_admin, Action::User(Write, lookalike), false),
            (&health_admin, Action::Domain(DomainAccess::Add, "health.go.ke"), true),
            (&health_admin, Action::Domain(DomainAccess::Add, "partner.go.ke"), false),
            (&health_admin, Action::ClusterStatus, false),
            (&health_admin, Action::Tokens, false),
            (&health_admin, Action::Metrics, false),
            (&health_app, Action::User(Deliver, own), true),
            (&health_app, Action::User(SendOutbound, own), true),
            (&health_app, Action::User(Write, own), false),
            (&health_app, Action::User(ReadMail, own), false),
            (&health_app, Action::User(Deliver, other_ministry), false),
            (&health_app, Action::Domain(DomainAccess::Add, "health.go.ke"), false),
            (&carrier, Action::Carrier("safaricom"), true),
            (&carrier, Action::Carrier("airtel"), false),
            (&carrier, Action::User(Deliver, own), false),
            (&carrier, Action::ClusterStatus, false),
            (&achieng, Action::User(ReadMail, own), true),
            (&achieng, Action::User(Read, own), true),
            (&achieng, Action::User(Deliver, own), true),
            (&achieng, Action::User(Write, own), false),
            (&achieng, Action::User(SendOutbound, own), false),
            (&achieng, Action::User(ReadMail, other_ministry), false),
            (&achieng, Action::ClusterStatus, false),
        ];
        for (principal, action, expected) in cases {
            assert_eq!(permits(principal, &action), expected, "{principal:?} {action:?}");
        }
    }

    #[test]
    fn roles_parse_and_check_their_scope() {
        for role in ROLES {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        assert!(Role::parse("root").unwrap_err().contains("operator, ministry-admin"));
        let domains = vec!["health.go.ke".to_string()];
        assert!(Role::Operator.check_scope(&[]).is_ok());
        assert!(Role::Operator.check_scope(&domains).is_err());
        assert!(Role::MinistryAdmin.check_scope(&domains).is_ok());
        assert!(Role::MinistryAdmin.check_scope(&[]).is_err());
        assert!(Role::Application.check_scope(&[]).is_err());
        assert!(Role::Carrier.check_scope(&["a".into(), "b".into()]).is_err());
        assert!(Role::Carrier.check_scope(&["safaricom".into()]).is_ok());
    }
}
