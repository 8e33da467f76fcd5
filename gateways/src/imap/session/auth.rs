//! The connection's state commands: the greeting and CAPABILITY, STARTTLS, LOGIN (and
//! the credential check AUTHENTICATE PLAIN shares, throttled per IP and account),
//! ENABLE, ID and LOGOUT.

use imap_types::IntoStatic;
use imap_types::auth::AuthMechanism;
use imap_types::core::{IString, NString, Tag, Vec1};
use imap_types::extensions::enable::CapabilityEnable;
use imap_types::extensions::quota::Resource;
use imap_types::extensions::thread::ThreadingAlgorithm;
use imap_types::response::{Capability, Code, Data};

use super::responses::{bad, bye, data, no, no_unavailable, ok, other_code, untagged_ok};
use super::{After, Handled, Session};
use crate::logins::{LoginOutcome, check_login};
use crate::mail_service::ServiceError;

impl Session {
    /// The greeting, with the capabilities.
    pub fn greeting(&self) -> Vec<u8> {
        untagged_ok(Code::Capability(self.capabilities()), "UMS IMAP4rev1 ready")
    }

    /// Passwords may cross this connection: it is encrypted, or the operator allowed
    /// clear text (a dev cluster on loopback).
    fn auth_allowed(&self) -> bool {
        self.tls || self.allow_insecure_auth
    }

    pub(super) fn capabilities(&self) -> Vec1<Capability<'static>> {
        let mut caps = vec![Capability::Imap4Rev1];
        if self.tls_available && !self.tls {
            caps.push(Capability::StartTls);
        }
        if self.user.is_none() {
            if self.auth_allowed() {
                caps.push(Capability::Auth(AuthMechanism::Plain));
                caps.push(Capability::SaslIr);
            } else {
                caps.push(Capability::LoginDisabled);
            }
        }
        caps.extend([
            Capability::Idle,
            Capability::UidPlus,
            Capability::Move,
            Capability::Namespace,
            Capability::LiteralPlus,
            Capability::Enable,
            Capability::CondStore,
            Capability::QResync,
            Capability::Unselect,
            Capability::Id,
            Capability::try_from("SPECIAL-USE").expect("an atom"),
            Capability::Binary,
            Capability::try_from("ESEARCH").expect("an atom"),
            Capability::ListExtended,
            Capability::try_from("LIST-STATUS").expect("an atom"),
            Capability::Sort(None),
            Capability::Thread(ThreadingAlgorithm::References),
            Capability::Thread(ThreadingAlgorithm::OrderedSubject),
            Capability::Quota,
            Capability::QuotaRes(Resource::Storage),
        ]);
        if !self.compressed {
            caps.push(Capability::try_from("COMPRESS=DEFLATE").expect("an atom"));
        }
        Vec1::try_from(caps).expect("not empty")
    }

    pub(super) fn capability(&self, tag: &Tag<'_>, out: &mut Vec<u8>) -> Handled {
        out.extend(data(Data::Capability(self.capabilities())));
        out.extend(ok(tag, None, "Capabilities listed"));
        Ok(After::Continue)
    }

    pub(super) fn starttls(&self, tag: &Tag<'_>, out: &mut Vec<u8>) -> Handled {
        // After COMPRESS the TLS handshake would be compressed: TLS comes first (RFC 4978).
        if self.tls || !self.tls_available || self.compressed {
            return Err(bad(tag, "STARTTLS not available"));
        }
        out.extend(ok(tag, None, "Begin TLS negotiation now"));
        Ok(After::StartTls)
    }

    pub(super) async fn login_command(
        &mut self,
        tag: &Tag<'_>,
        login: &str,
        password: &str,
        out: &mut Vec<u8>,
    ) -> Handled {
        if self.user.is_some() {
            return Err(bad(tag, "Already logged in"));
        }
        let (reply, after) = self.login(tag, login, password).await;
        out.extend(reply);
        Ok(after)
    }

    /// Checks credentials (throttled per IP and account): the tagged answer, and whether
    /// the connection goes on (too many failures close it).
    pub async fn login(&mut self, tag: &Tag<'_>, login: &str, password: &str) -> (Vec<u8>, After) {
        if !self.auth_allowed() {
            return (no(tag, Some(other_code("PRIVACYREQUIRED")), "Use STARTTLS first"), After::Continue);
        }
        match check_login(self.service.as_ref(), &self.logins, "imap", self.client_ip, login, password).await {
            LoginOutcome::Throttled => {
                (no(tag, None, "[UNAVAILABLE] Too many failed logins, try again later"), After::Continue)
            }
            LoginOutcome::Valid(account) => {
                // Every user has an INBOX (older users get theirs here).
                if let Err(e) = self.service.create_mailbox(&account.user_id, "INBOX").await
                    && !matches!(e, ServiceError::Conflict(_))
                {
                    return (no_unavailable(tag, &e), After::Continue);
                }
                self.user = Some(account.user_id);
                (ok(tag, Some(Code::Capability(self.capabilities())), "Logged in"), After::Continue)
            }
            LoginOutcome::Invalid => {
                self.auth_failures += 1;
                self.offences += 1;
                let reply = no(tag, Some(other_code("AUTHENTICATIONFAILED")), "Invalid credentials");
                if self.auth_failures >= self.max_auth_failures {
                    let mut out = reply;
                    out.extend(bye("Too many failed logins"));
                    return (out, After::Close);
                }
                (reply, After::Continue)
            }
            LoginOutcome::Unavailable(e) => (no_unavailable(tag, &e), After::Continue),
        }
    }

    pub(super) fn enable(
        &mut self,
        tag: &Tag<'_>,
        capabilities: &[CapabilityEnable<'_>],
        out: &mut Vec<u8>,
    ) -> Handled {
        self.user(tag)?;
        let mut enabled = Vec::new();
        for capability in capabilities {
            if matches!(capability, CapabilityEnable::CondStore) {
                self.condstore = true;
                enabled.push(capability.clone().into_static());
            } else if capability.to_string().eq_ignore_ascii_case("QRESYNC") {
                // QRESYNC implies CONDSTORE (RFC 7162 3.2.3).
                (self.qresync, self.condstore) = (true, true);
                enabled.push(capability.clone().into_static());
            }
        }
        out.extend(data(Data::Enabled { capabilities: enabled }));
        out.extend(ok(tag, None, "Enabled"));
        Ok(After::Continue)
    }

    /// COMPRESS DEFLATE (RFC 4978): for slow mobile links; once, and for the rest of the
    /// connection.
    pub(super) fn compress(&mut self, tag: &Tag<'_>, out: &mut Vec<u8>) -> Handled {
        if self.compressed {
            return Err(no(tag, Some(other_code("COMPRESSIONACTIVE")), "Compression is already in effect"));
        }
        self.compressed = true;
        out.extend(ok(tag, None, "DEFLATE active"));
        Ok(After::Compress)
    }

    /// ID (RFC 2971): who we are; what the client says of itself is only informative.
    pub(super) fn id(&self, tag: &Tag<'_>, out: &mut Vec<u8>) -> Handled {
        let field = |name: &str, value: &str| {
            (IString::try_from(name.to_string()).expect("a quoted string"), NString::try_from(value.to_string()).ok())
        };
        let parameters = [field("name", "UMS"), field("version", env!("CARGO_PKG_VERSION")), field("vendor", "UMS")]
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?)))
            .collect();
        out.extend(data(Data::Id { parameters: Some(parameters) }));
        out.extend(ok(tag, None, "ID completed"));
        Ok(After::Continue)
    }

    pub(super) fn logout(&self, tag: &Tag<'_>, out: &mut Vec<u8>) -> Handled {
        out.extend(bye("Logging out"));
        out.extend(ok(tag, None, "Logged out"));
        Ok(After::Close)
    }
}
