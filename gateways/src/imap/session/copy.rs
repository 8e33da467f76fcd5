//! COPY and MOVE (RFC 6851): messages into another mailbox of the same user, answered
//! with UIDPLUS's COPYUID; MOVE also expunges them from the selected mailbox.

use imap_types::core::Tag;
use imap_types::response::Code;
use imap_types::sequence::SequenceSet;

use super::responses::{no, no_unavailable, nz, ok, uid_set, untagged_ok};
use super::{After, Handled, Session, resolve_set};
use crate::mail_service::ServiceError;

impl Session {
    /// COPY, or MOVE (`remove`).
    pub(super) async fn copy(
        &mut self,
        tag: &Tag<'_>,
        set: &SequenceSet,
        to: &str,
        by_uid: bool,
        remove: bool,
        out: &mut Vec<u8>,
    ) -> Handled {
        let user = self.user(tag)?;
        let selected = if remove { self.writable(tag)? } else { self.selected(tag)? };
        let uids: Vec<u32> = resolve_set(tag, selected, set, by_uid)?.into_iter().map(|(_, uid)| uid).collect();
        let from = selected.name.clone();
        let copied = match self.service.copy_messages(&user, &from, to, &uids, remove).await {
            Ok(copied) => copied,
            Err(ServiceError::NotFound(_)) => return Err(no(tag, Some(Code::TryCreate), "No such mailbox")),
            Err(ServiceError::Invalid(e)) => return Err(no(tag, None, &e)),
            Err(ServiceError::OverQuota(e)) => return Err(no(tag, Some(Code::OverQuota), &e)),
            Err(e) => return Err(no_unavailable(tag, &e)),
        };
        let code = match (uid_set(&copied.source_uids), uid_set(&copied.dest_uids)) {
            (Some(source), Some(destination)) => {
                Some(Code::CopyUid { uid_validity: nz(copied.uid_validity), source, destination })
            }
            _ => None,
        };
        if remove {
            if let Some(code) = code {
                out.extend(untagged_ok(code, "Moved"));
            }
            self.report_expunged(&copied.expunged, out);
            out.extend(ok(tag, None, "MOVE completed"));
        } else {
            out.extend(ok(tag, code, "COPY completed"));
        }
        Ok(After::Continue)
    }
}
