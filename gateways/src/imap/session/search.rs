//! SEARCH: the keys are matched by [`crate::imap::search_keys`] against the messages of
//! this session's view, answered with sequence numbers or UIDs (and, for a MODSEQ
//! search, the highest modseq found, RFC 7162). SORT and THREAD search the same way.

use std::num::NonZeroU64;

use imap_types::core::Tag;
use imap_types::response::Data;
use imap_types::search::SearchKey;

use super::responses::runs;
use super::responses::{data, no_unavailable, nz, ok};
use super::{After, Handled, Session};
use crate::imap::extended::SearchReturn;
use crate::imap::search_keys::{Candidate, matches_key, needs_text};
use crate::mail_service::MessageInfo;

impl Session {
    /// SEARCH, or with return options (`returns`) ESEARCH (RFC 4731).
    pub(super) async fn search(
        &mut self,
        tag: &Tag<'_>,
        criteria: &[SearchKey<'_>],
        by_uid: bool,
        returns: Option<SearchReturn>,
        out: &mut Vec<u8>,
    ) -> Handled {
        let hits = self.matching(tag, criteria, false).await?;
        if let Some(returns) = returns {
            let mut numbers: Vec<u32> = hits.iter().map(|(seq, m)| if by_uid { m.uid } else { *seq }).collect();
            numbers.sort_unstable();
            out.extend(esearch(tag, by_uid, &returns, &numbers));
            out.extend(ok(tag, None, "SEARCH completed"));
            return Ok(After::Continue);
        }
        // RFC 7162: a search by MODSEQ reports the highest modseq of what it found.
        let modseq = criteria
            .iter()
            .any(|k| matches!(k, SearchKey::ModSequence { .. }))
            .then(|| hits.iter().map(|(_, m)| m.modseq).max().unwrap_or(0))
            .and_then(NonZeroU64::new);
        let numbers = hits.iter().map(|(seq, m)| nz(if by_uid { m.uid } else { *seq })).collect();
        out.extend(data(Data::Search(numbers, modseq)));
        out.extend(ok(tag, None, "SEARCH completed"));
        Ok(After::Continue)
    }

    /// The messages of this session's view that match every key, with their sequence
    /// numbers; with their bytes when `with_bytes` (SORT and THREAD read headers) or a key
    /// needs them. Messages the session has not been told about yet (or that are gone)
    /// are not searched: the numbers are the session's.
    pub(super) async fn matching(
        &mut self,
        tag: &Tag<'_>,
        criteria: &[SearchKey<'_>],
        with_bytes: bool,
    ) -> Result<Vec<(u32, MessageInfo)>, Vec<u8>> {
        let user = self.user(tag)?;
        let selected = self.selected(tag)?;
        let name = selected.name.clone();
        let uids = selected.uids.clone();
        let bytes = with_bytes || criteria.iter().any(needs_text);
        let messages =
            self.service.messages(&user, &name, Some(&uids), bytes).await.map_err(|e| no_unavailable(tag, &e))?;
        let selected = self.selected(tag)?;
        let mut hits = Vec::new();
        for message in messages {
            let Some(seq) = selected.seq_of(message.uid) else { continue };
            let candidate = Candidate::new(&message, seq, &uids, selected.is_recent(message.uid));
            if criteria.iter().all(|key| matches_key(key, &candidate)) {
                hits.push((seq, message));
            }
        }
        Ok(hits)
    }
}

/// `* ESEARCH (TAG "a") UID MIN 2 MAX 9 COUNT 3 ALL 2,5,9`: what was asked for of the
/// hits (sorted); MIN, MAX and ALL are left out when nothing matched (RFC 4731 3.1).
fn esearch(tag: &Tag<'_>, by_uid: bool, returns: &SearchReturn, numbers: &[u32]) -> Vec<u8> {
    let mut line = format!("* ESEARCH (TAG \"{}\")", tag.as_ref());
    if by_uid {
        line.push_str(" UID");
    }
    if let (true, Some(min)) = (returns.min, numbers.first()) {
        line.push_str(&format!(" MIN {min}"));
    }
    if let (true, Some(max)) = (returns.max, numbers.last()) {
        line.push_str(&format!(" MAX {max}"));
    }
    if returns.count {
        line.push_str(&format!(" COUNT {}", numbers.len()));
    }
    if returns.all && !numbers.is_empty() {
        let set: Vec<String> = runs(numbers)
            .into_iter()
            .map(|(first, last)| if first == last { first.to_string() } else { format!("{first}:{last}") })
            .collect();
        line.push_str(&format!(" ALL {}", set.join(",")));
    }
    line.push_str("\r\n");
    line.into_bytes()
}
