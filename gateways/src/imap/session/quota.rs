//! QUOTA (RFC 9208): each user has one quota root, `""`, over all their mailboxes, with
//! a STORAGE limit (in KiB) that the replicated state enforces at delivery, APPEND and
//! COPY (`[OVERQUOTA]`). Limits are the operator's to set, not the client's.

use imap_types::core::{AString, Tag, Vec1};
use imap_types::extensions::quota::{QuotaGet, Resource};
use imap_types::response::Data;

use super::responses::{data, mailbox_of, no, no_unavailable, ok};
use super::{After, Handled, Session};

impl Session {
    /// GETQUOTA, or GETQUOTAROOT for a mailbox (`mailbox`: its name).
    pub(super) async fn get_quota(
        &mut self,
        tag: &Tag<'_>,
        root: &str,
        mailbox: Option<&str>,
        out: &mut Vec<u8>,
    ) -> Handled {
        let user = self.user(tag)?;
        if let Some(name) = mailbox {
            let exists = self.service.mailboxes(&user).await.map_err(|e| no_unavailable(tag, &e))?;
            let Some(mailbox) = exists.iter().any(|m| m.name == name).then(|| mailbox_of(name)).flatten() else {
                return Err(no(tag, None, "No such mailbox"));
            };
            out.extend(data(Data::QuotaRoot { mailbox, roots: vec![AString::try_from("").expect("a string")] }));
        } else if !root.is_empty() {
            return Err(no(tag, None, "No such quota root; yours is \"\""));
        }
        let quota = self.service.quota(&user).await.map_err(|e| no_unavailable(tag, &e))?;
        let storage = QuotaGet::new(Resource::Storage, quota.used_bytes.div_ceil(1024), quota.limit_bytes / 1024);
        out.extend(data(Data::Quota { root: AString::try_from("").expect("a string"), quotas: Vec1::from(storage) }));
        out.extend(ok(tag, None, if mailbox.is_some() { "GETQUOTAROOT completed" } else { "GETQUOTA completed" }));
        Ok(After::Continue)
    }

    pub(super) fn set_quota(&self, tag: &Tag<'_>, out: &mut Vec<u8>) -> Handled {
        self.user(tag)?;
        out.extend(no(tag, None, "Quotas are set by the operator (umsctl user add --quota)"));
        Ok(After::Continue)
    }
}
