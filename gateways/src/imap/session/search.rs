//! SEARCH: the keys are matched by [`crate::imap::search_keys`] against the messages of
//! this session's view, answered with sequence numbers or UIDs (and, for a MODSEQ
//! search, the highest modseq found, RFC 7162).

use std::num::NonZeroU64;

use imap_types::core::Tag;
use imap_types::response::Data;
use imap_types::search::SearchKey;

use super::responses::{data, no_unavailable, nz, ok};
use super::{After, Handled, Session};
use crate::imap::search_keys::{Candidate, matches_key, needs_text};

impl Session {
    pub(super) async fn search(
        &mut self,
        tag: &Tag<'_>,
        criteria: &[SearchKey<'_>],
        by_uid: bool,
        out: &mut Vec<u8>,
    ) -> Handled {
        let user = self.user(tag)?;
        let selected = self.selected(tag)?;
        let name = selected.name.clone();
        let needs_body = criteria.iter().any(needs_text);
        // Sequence numbers are the session's: messages it has not been told about yet
        // (or that are gone) are not searched.
        let uids = selected.uids.clone();
        let messages =
            self.service.messages(&user, &name, Some(&uids), needs_body).await.map_err(|e| no_unavailable(tag, &e))?;
        let selected = self.selected(tag)?;
        let mut hits = Vec::new();
        let mut highest_modseq = 0;
        for message in &messages {
            let Some(seq) = selected.seq_of(message.uid) else { continue };
            let candidate = Candidate::new(message, seq, &uids, selected.is_recent(message.uid));
            if criteria.iter().all(|key| matches_key(key, &candidate)) {
                hits.push(nz(if by_uid { message.uid } else { seq }));
                highest_modseq = highest_modseq.max(message.modseq);
            }
        }
        // RFC 7162: a search by MODSEQ reports the highest modseq of what it found.
        let modseq = criteria
            .iter()
            .any(|k| matches!(k, SearchKey::ModSequence { .. }))
            .then_some(highest_modseq)
            .and_then(NonZeroU64::new);
        out.extend(data(Data::Search(hits, modseq)));
        out.extend(ok(tag, None, "SEARCH completed"));
        Ok(After::Continue)
    }
}
