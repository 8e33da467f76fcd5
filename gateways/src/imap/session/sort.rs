//! SORT and THREAD (RFC 5256): the messages a search finds, in the order the sort
//! criteria give, or as conversations (THREAD=REFERENCES, THREAD=ORDEREDSUBJECT).

use imap_types::core::Tag;
use imap_types::extensions::sort::SortCriterion;
use imap_types::extensions::thread::ThreadingAlgorithm;
use imap_types::response::Data;
use imap_types::search::SearchKey;

use super::responses::{data, no, nz, ok};
use super::{After, Handled, Session};
use crate::imap::sort::{Sortable, sortable, sorted};
use crate::imap::thread;

/// The charsets search strings may come in (RFC 5256: US-ASCII and UTF-8 at least).
fn charset_supported(charset: &str) -> bool {
    charset.eq_ignore_ascii_case("UTF-8") || charset.eq_ignore_ascii_case("US-ASCII")
}

const BADCHARSET: &str = "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset";

impl Session {
    async fn sortables(
        &mut self,
        tag: &Tag<'_>,
        charset: &str,
        criteria: &[SearchKey<'_>],
    ) -> Result<Vec<Sortable>, Vec<u8>> {
        if !charset_supported(charset) {
            return Err(no(tag, None, BADCHARSET));
        }
        let hits = self.matching(tag, criteria, true).await?;
        Ok(hits.iter().map(|(seq, message)| sortable(message, *seq)).collect())
    }

    pub(super) async fn sort(
        &mut self,
        tag: &Tag<'_>,
        criteria: &[SortCriterion],
        charset: &str,
        search: &[SearchKey<'_>],
        by_uid: bool,
        out: &mut Vec<u8>,
    ) -> Handled {
        let messages = self.sortables(tag, charset, search).await?;
        let numbers = sorted(&messages, criteria).iter().map(|m| nz(if by_uid { m.uid } else { m.seq })).collect();
        out.extend(data(Data::Sort(numbers, None)));
        out.extend(ok(tag, None, "SORT completed"));
        Ok(After::Continue)
    }

    pub(super) async fn thread(
        &mut self,
        tag: &Tag<'_>,
        algorithm: &ThreadingAlgorithm<'_>,
        charset: &str,
        search: &[SearchKey<'_>],
        by_uid: bool,
        out: &mut Vec<u8>,
    ) -> Handled {
        let threads: fn(&[Sortable]) -> Vec<thread::Node> = match algorithm {
            ThreadingAlgorithm::References => thread::references,
            ThreadingAlgorithm::OrderedSubject => thread::ordered_subject,
            other => return Err(no(tag, None, &format!("Unknown threading algorithm {other}"))),
        };
        let messages = self.sortables(tag, charset, search).await?;
        let number = |m: &Sortable| if by_uid { m.uid } else { m.seq };
        let rendered = thread::render(&threads(&messages), &messages, number);
        out.extend_from_slice(format!("* THREAD {rendered}\r\n").as_bytes());
        out.extend(ok(tag, None, "THREAD completed"));
        Ok(After::Continue)
    }
}
