//! EXPUNGE and UID EXPUNGE (UIDPLUS): remove messages flagged `\Deleted`, all of them
//! or those in a UID set, and tell the client which sequence numbers went.

use imap_types::core::Tag;
use imap_types::sequence::SequenceSet;

use super::responses::{no_unavailable, ok};
use super::{After, Handled, Session, sets};

impl Session {
    pub(super) async fn expunge(&mut self, tag: &Tag<'_>, uid_set: Option<&SequenceSet>, out: &mut Vec<u8>) -> Handled {
        let (user, selected) = (self.user(tag)?, self.writable(tag)?);
        let uids: Option<Vec<u32>> =
            uid_set.map(|set| sets::select(set, &selected.uids, true).into_iter().map(|(_, uid)| uid).collect());
        let name = selected.name.clone();
        let expunged =
            self.service.expunge(&user, &name, uids.as_deref()).await.map_err(|e| no_unavailable(tag, &e))?;
        self.report_expunged(&expunged, out);
        out.extend(ok(tag, None, "Expunged"));
        Ok(After::Continue)
    }
}
