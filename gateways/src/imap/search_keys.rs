//! SEARCH keys against one message (pure): flags, sizes, dates, sequence and UID sets,
//! header fields and text. The session decides which messages to test and what to
//! answer; this module only says whether one message matches one key.

use imap_types::search::SearchKey;

use super::sets;
use crate::mail_service::MessageInfo;

/// Whether a key reads the message's header or text (its bytes must be fetched).
pub fn needs_text(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(needs_text),
        SearchKey::Not(key) => needs_text(key),
        SearchKey::Or(a, b) => needs_text(a) || needs_text(b),
        SearchKey::Bcc(_)
        | SearchKey::Body(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Header(..)
        | SearchKey::Subject(_)
        | SearchKey::Text(_)
        | SearchKey::To(_)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_) => true,
        _ => false,
    }
}

fn has_flag(message: &MessageInfo, flag: &str) -> bool {
    message.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
}

/// Case-insensitive substring search in the named header fields (all fields: `None`).
fn header_contains(message: &MessageInfo, field: Option<&str>, needle: &[u8]) -> bool {
    let raw = message.raw.as_deref().unwrap_or_default();
    let haystack = match field {
        Some(name) => sets::header_fields(raw, &[name.to_string()], false),
        None => sets::header(raw).to_vec(),
    };
    contains_ignore_case(&haystack, needle)
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// Whether `message`, number `seq` in a view whose UIDs are `uids`, matches `key`.
pub fn matches_key(key: &SearchKey<'_>, message: &MessageInfo, seq: u32, uids: &[u32]) -> bool {
    let date = chrono::DateTime::from_timestamp_millis(message.internal_date_ms as i64).map(|d| d.date_naive());
    let raw = message.raw.as_deref().unwrap_or_default();
    match key {
        SearchKey::All => true,
        SearchKey::And(keys) => keys.as_ref().iter().all(|k| matches_key(k, message, seq, uids)),
        SearchKey::Not(k) => !matches_key(k, message, seq, uids),
        SearchKey::Or(a, b) => matches_key(a, message, seq, uids) || matches_key(b, message, seq, uids),
        SearchKey::SequenceSet(set) => sets::contains(set, seq, uids.len() as u32),
        SearchKey::Uid(set) => sets::contains(set, message.uid, uids.last().copied().unwrap_or(0)),
        SearchKey::Answered => has_flag(message, "\\Answered"),
        SearchKey::Unanswered => !has_flag(message, "\\Answered"),
        SearchKey::Deleted => has_flag(message, "\\Deleted"),
        SearchKey::Undeleted => !has_flag(message, "\\Deleted"),
        SearchKey::Draft => has_flag(message, "\\Draft"),
        SearchKey::Undraft => !has_flag(message, "\\Draft"),
        SearchKey::Flagged => has_flag(message, "\\Flagged"),
        SearchKey::Unflagged => !has_flag(message, "\\Flagged"),
        SearchKey::Seen | SearchKey::Old => has_flag(message, "\\Seen"),
        SearchKey::Unseen | SearchKey::New => !has_flag(message, "\\Seen"),
        SearchKey::Recent => false,
        SearchKey::Keyword(atom) => has_flag(message, atom.as_ref()),
        SearchKey::Unkeyword(atom) => !has_flag(message, atom.as_ref()),
        SearchKey::Larger(n) => message.size > *n as u64,
        SearchKey::Smaller(n) => message.size < *n as u64,
        SearchKey::Before(d) => date.is_some_and(|m| m < *d.as_ref()),
        SearchKey::On(d) => date.is_some_and(|m| m == *d.as_ref()),
        SearchKey::Since(d) => date.is_some_and(|m| m >= *d.as_ref()),
        SearchKey::ModSequence { modseq, .. } => message.modseq >= *modseq,
        SearchKey::Subject(s) => header_contains(message, Some("Subject"), s.as_ref()),
        SearchKey::From(s) => header_contains(message, Some("From"), s.as_ref()),
        SearchKey::To(s) => header_contains(message, Some("To"), s.as_ref()),
        SearchKey::Cc(s) => header_contains(message, Some("Cc"), s.as_ref()),
        SearchKey::Bcc(s) => header_contains(message, Some("Bcc"), s.as_ref()),
        SearchKey::Header(name, value) => {
            header_contains(message, Some(&String::from_utf8_lossy(name.as_ref())), value.as_ref())
        }
        SearchKey::Body(s) => contains_ignore_case(sets::text(raw), s.as_ref()),
        SearchKey::Text(s) => contains_ignore_case(raw, s.as_ref()),
        // Sent dates need the Date header parsed; treated as the internal date.
        SearchKey::SentBefore(d) => date.is_some_and(|m| m < *d.as_ref()),
        SearchKey::SentOn(d) => date.is_some_and(|m| m == *d.as_ref()),
        SearchKey::SentSince(d) => date.is_some_and(|m| m >= *d.as_ref()),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use imap_codec::CommandCodec;
    use imap_codec::decode::Decoder;
    use imap_types::IntoStatic;
    use imap_types::command::CommandBody;

    use super::*;

    /// The keys of `SEARCH <criteria>` as imap-codec parses them off the wire.
    fn keys(criteria: &str) -> Vec<SearchKey<'static>> {
        let line = format!("a SEARCH {criteria}\r\n");
        let (_, command) = CommandCodec::default().decode(line.as_bytes()).expect("a valid SEARCH");
        match command.body {
            CommandBody::Search { criteria, .. } => {
                criteria.into_inner().into_iter().map(|k| k.into_static()).collect()
            }
            other => panic!("not a SEARCH: {other:?}"),
        }
    }

    const RAW: &str = "From: Ana <ana@health.go.ke>\r\nTo: user1@ministry.go.ke\r\nSubject: Budget 2027\r\n\
                       X-Priority: 1\r\n\r\nThe draft budget is attached.\r\n";

    fn message() -> MessageInfo {
        MessageInfo {
            uid: 7,
            modseq: 12,
            flags: vec!["\\Seen".into(), "$Label1".into()],
            // 2026-03-04 10:00 UTC
            internal_date_ms: 1_772_618_400_000,
            size: RAW.len() as u64,
            raw: Some(RAW.as_bytes().to_vec()),
        }
    }

    #[test]
    fn each_key_matches_what_it_names() {
        let cases = [
            ("ALL", true),
            ("SEEN", true),
            ("UNSEEN", false),
            ("FLAGGED", false),
            ("UNFLAGGED", true),
            ("KEYWORD $Label1", true),
            ("KEYWORD $Label2", false),
            ("UNKEYWORD $Label2", true),
            ("LARGER 10", true),
            ("SMALLER 10", false),
            ("SINCE 4-Mar-2026", true),
            ("ON 4-Mar-2026", true),
            ("BEFORE 4-Mar-2026", false),
            ("SINCE 5-Mar-2026", false),
            ("SUBJECT budget", true),
            ("SUBJECT invoice", false),
            ("FROM ana@health", true),
            ("FROM \"Ana\"", true),
            ("TO user1", true),
            ("CC user1", false),
            ("HEADER X-Priority 1", true),
            ("HEADER X-Priority 5", false),
            ("BODY attached", true),
            ("BODY 2027", false),
            ("TEXT \"budget 2027\"", true),
            ("MODSEQ 12", true),
            ("MODSEQ 13", false),
            ("UID 7", true),
            ("UID 1:6", false),
            ("1", false),
            ("2", true),
            ("NOT SEEN", false),
            ("OR FLAGGED SEEN", true),
            ("(SEEN UNFLAGGED)", true),
            ("(SEEN FLAGGED)", false),
        ];
        let message = message();
        for (criteria, expected) in cases {
            let keys = keys(criteria);
            // The message is number 2 of a view holding UIDs 3 and 7.
            let matched = keys.iter().all(|key| matches_key(key, &message, 2, &[3, 7]));
            assert_eq!(matched, expected, "SEARCH {criteria}");
        }
    }

    #[test]
    fn only_header_and_text_keys_need_the_message_bytes() {
        for (criteria, expected) in
            [("SEEN", false), ("UID 1:*", false), ("SUBJECT x", true), ("NOT BODY x", true), ("OR SEEN TEXT x", true)]
        {
            assert_eq!(keys(criteria).iter().any(needs_text), expected, "SEARCH {criteria}");
        }
    }
}
