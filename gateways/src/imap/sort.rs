//! SORT (RFC 5256): the keys messages are ordered by, and the base subject that SORT and
//! THREAD compare (the subject without "Re:", "Fwd:", "[list]" and "(fwd)" decorations).
//! Pure: header values in, orderings out.

use std::cmp::Ordering;

use imap_types::extensions::sort::{SortCriterion, SortKey};
use mail_parser::{Address, HeaderValue, MessageParser};

use crate::mail_service::MessageInfo;

/// The most References of one message THREAD follows. The header is the sender's to
/// write: a message may name millions of ancestors, and THREAD's work grows with the
/// square of a chain's length.
pub const MAX_REFERENCES: usize = 100;

/// What SORT and THREAD need of one message, read from its header once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sortable {
    /// Its sequence number in the session's view (the tie-breaker).
    pub seq: u32,
    pub uid: u32,
    pub size: u64,
    /// The internal date, milliseconds since the epoch (ARRIVAL).
    pub arrival_ms: i64,
    /// The Date header in UTC milliseconds, or the internal date without one (RFC 5256 DATE).
    pub sent_ms: i64,
    /// The first From, To and Cc addresses' mailbox part, lower-case (RFC 5256 FROM/TO/CC).
    pub from: String,
    pub to: String,
    pub cc: String,
    /// The base subject (see [`base_subject`]).
    pub subject: String,
    /// Whether the subject carried a reply or forward decoration (for THREAD's grouping).
    pub is_reply: bool,
    pub message_id: Option<String>,
    /// References, oldest first; In-Reply-To when there are none.
    pub references: Vec<String>,
}

/// What SORT and THREAD need of a message (its bytes must be there), number `seq` here.
pub fn sortable(message: &MessageInfo, seq: u32) -> Sortable {
    let raw = message.raw.as_deref().unwrap_or_default();
    let parsed = MessageParser::default().parse_headers(raw);
    let arrival_ms = message.internal_date_ms as i64;
    let Some(parsed) = parsed else {
        return Sortable {
            seq,
            uid: message.uid,
            size: message.size,
            arrival_ms,
            sent_ms: arrival_ms,
            ..Sortable::default()
        };
    };
    let first_mailbox = |list: Option<&Address<'_>>| {
        let address = list.and_then(|l| l.first()).and_then(|a| a.address.as_deref()).unwrap_or_default();
        address.rsplit_once('@').map_or(address, |(mailbox, _)| mailbox).to_lowercase()
    };
    let ids = |value: &HeaderValue<'_>| -> Vec<String> {
        match value {
            HeaderValue::Text(id) => vec![format!("<{id}>")],
            HeaderValue::TextList(ids) => ids.iter().map(|id| format!("<{id}>")).collect(),
            _ => Vec::new(),
        }
    };
    let mut references = ids(parsed.references());
    if references.is_empty() {
        references = ids(parsed.in_reply_to()).into_iter().take(1).collect();
    }
    // The nearest ancestors are last; those before them change no thread a client
    // shows, and each costs THREAD a walk up the conversation.
    references.drain(..references.len().saturating_sub(MAX_REFERENCES));
    let (subject, is_reply) = base_subject(parsed.subject().unwrap_or_default());
    Sortable {
        seq,
        uid: message.uid,
        size: message.size,
        arrival_ms,
        sent_ms: parsed.date().map_or(arrival_ms, |d| d.to_timestamp() * 1000),
        from: first_mailbox(parsed.from()),
        to: first_mailbox(parsed.to()),
        cc: first_mailbox(parsed.cc()),
        subject,
        is_reply,
        message_id: parsed.message_id().map(|id| format!("<{id}>")),
        references,
    }
}

/// The base subject of RFC 5256 2.1: decorations ("Re:", "Fw:", "Fwd:", "[tag]" in front,
/// "(fwd)" behind) taken off again and again, white space folded; compared case-blind, so
/// returned in lower case. Also says whether any reply or forward decoration was taken.
pub fn base_subject(subject: &str) -> (String, bool) {
    let mut text: String = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut decorated = false;
    loop {
        let before = text.clone();
        // Trailers: "(fwd)" and white space.
        while let Some(rest) = text.strip_suffix("(fwd)").or_else(|| text.strip_suffix("(FWD)")) {
            text = rest.trim_end().to_string();
            decorated = true;
        }
        // Leaders: "[blob]" groups and "re:", "fw:", "fwd:" (each maybe with a "[blob]").
        loop {
            let trimmed = text.trim_start().to_string();
            if let Some(rest) = strip_leader(&trimmed) {
                text = rest;
                decorated = true;
            } else if let Some(rest) = strip_blob(&trimmed).filter(|rest| !rest.trim().is_empty()) {
                text = rest;
            } else {
                text = trimmed;
                break;
            }
        }
        // "[fwd: ... ]" wrapping the whole subject.
        let lower = text.to_lowercase();
        if lower.starts_with("[fwd:") && text.ends_with(']') {
            text = text[5..text.len() - 1].trim().to_string();
            decorated = true;
        }
        if text == before {
            break;
        }
    }
    (text.to_lowercase(), decorated)
}

/// "re:", "fw:" or "fwd:", maybe with "[blob]" groups before the colon.
fn strip_leader(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let word = ["fwd", "fw", "re"].into_iter().find(|w| lower.starts_with(w))?;
    let mut rest = text[word.len()..].trim_start().to_string();
    while let Some(after) = strip_blob(&rest) {
        rest = after;
    }
    rest.strip_prefix(':').map(str::to_string)
}

/// A leading "[...]" group (a mailing list's tag).
fn strip_blob(text: &str) -> Option<String> {
    let rest = text.strip_prefix('[')?;
    let end = rest.find(']')?;
    if rest[..end].contains('[') {
        return None;
    }
    Some(rest[end + 1..].trim_start().to_string())
}

fn compare(a: &Sortable, b: &Sortable, key: &SortKey) -> Ordering {
    match key {
        SortKey::Arrival => a.arrival_ms.cmp(&b.arrival_ms),
        SortKey::Date => a.sent_ms.cmp(&b.sent_ms),
        SortKey::Size => a.size.cmp(&b.size),
        SortKey::Subject => a.subject.cmp(&b.subject),
        SortKey::From | SortKey::DisplayFrom => a.from.cmp(&b.from),
        SortKey::To | SortKey::DisplayTo => a.to.cmp(&b.to),
        SortKey::Cc => a.cc.cmp(&b.cc),
    }
}

/// `messages` in the order `criteria` give (each maybe REVERSE), ties in sequence order.
pub fn sorted<'m>(messages: &'m [Sortable], criteria: &[SortCriterion]) -> Vec<&'m Sortable> {
    let mut order: Vec<&Sortable> = messages.iter().collect();
    order.sort_by(|a, b| {
        criteria
            .iter()
            .map(|c| if c.reverse { compare(b, a, &c.key) } else { compare(a, b, &c.key) })
            .find(|o| o.is_ne())
            .unwrap_or_else(|| a.seq.cmp(&b.seq))
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects_lose_their_decorations() {
        let cases = [
            ("Budget 2027", "budget 2027", false),
            ("Re: Budget 2027", "budget 2027", true),
            ("RE: re: Fwd: Budget   2027 (fwd)", "budget 2027", true),
            ("[ministry-all] Re: [ministry-all] Budget 2027", "budget 2027", true),
            ("Re[2]: Budget 2027", "budget 2027", true),
            ("[Fwd: Budget 2027]", "budget 2027", true),
            ("[only a tag]", "[only a tag]", false),
            ("Reminder", "reminder", false),
            ("", "", false),
        ];
        for (subject, base, decorated) in cases {
            assert_eq!(base_subject(subject), (base.to_string(), decorated), "{subject:?}");
        }
    }

    #[test]
    fn sorting_follows_the_criteria_then_the_sequence() {
        let message = |seq: u32, size: u64, from: &str, subject: &str| Sortable {
            seq,
            uid: seq * 10,
            size,
            from: from.into(),
            subject: subject.into(),
            ..Sortable::default()
        };
        let messages = [message(1, 300, "ben", "b"), message(2, 100, "ana", "a"), message(3, 300, "ana", "c")];
        let criterion = |reverse: bool, key: SortKey| SortCriterion { reverse, key };
        let seqs = |criteria: &[SortCriterion]| sorted(&messages, criteria).iter().map(|m| m.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&[criterion(false, SortKey::Size)]), [2, 1, 3], "ties in sequence order");
        assert_eq!(seqs(&[criterion(true, SortKey::Size)]), [1, 3, 2]);
        assert_eq!(seqs(&[criterion(false, SortKey::From), criterion(true, SortKey::Size)]), [3, 2, 1]);
        assert_eq!(seqs(&[criterion(false, SortKey::Subject)]), [2, 1, 3]);
    }

    /// Found with `fuzz/fuzz_targets/mime_structure.rs`: a message naming 9,000 ancestors
    /// made THREAD walk 40 million links, and its chain overflowed a worker's stack.
    #[test]
    fn only_the_nearest_references_are_followed() {
        let references: Vec<String> = (0..9_000).map(|i| format!("<{i}@x>")).collect();
        let raw =
            format!("Subject: deep\r\nMessage-ID: <top@x>\r\nReferences: {}\r\n\r\nbody\r\n", references.join(" "));
        let message = MessageInfo { raw: Some(raw.into_bytes()), ..MessageInfo::default() };
        let kept = sortable(&message, 1).references;
        assert_eq!(kept.len(), MAX_REFERENCES);
        assert_eq!(kept.last().map(String::as_str), Some("<8999@x>"), "the parent is kept");
        assert_eq!(kept[0], "<8900@x>");
    }
}
