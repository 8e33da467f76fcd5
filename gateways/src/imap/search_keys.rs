//! SEARCH keys against one message (pure): flags, `\Recent`, sizes, dates (internal and
//! sent), sequence and UID sets, header fields and text. The session decides which
//! messages to test and what to answer; this module only says whether one message
//! matches one key (RFC 3501 6.4.4).

use std::cell::OnceCell;

use chrono::NaiveDate;
use imap_types::search::SearchKey;
use mail_parser::{Message, MessageParser};

use super::sets;
use crate::mail_service::MessageInfo;

/// One message as a SEARCH sees it.
pub struct Candidate<'a> {
    pub message: &'a MessageInfo,
    /// Its sequence number in the session's view.
    pub seq: u32,
    /// The session's view: its UIDs in order (`*` in sets is the last of them).
    pub view: &'a [u32],
    /// `\Recent` in this session.
    pub recent: bool,
    /// The parse of the message's bytes, made on first use (only header keys need it).
    parsed: OnceCell<Option<Message<'a>>>,
}

impl<'a> Candidate<'a> {
    pub fn new(message: &'a MessageInfo, seq: u32, view: &'a [u32], recent: bool) -> Self {
        Self { message, seq, view, recent, parsed: OnceCell::new() }
    }

    fn raw(&self) -> &'a [u8] {
        self.message.raw.as_deref().unwrap_or_default()
    }

    fn parsed(&self) -> Option<&Message<'a>> {
        self.parsed.get_or_init(|| MessageParser::default().parse(self.raw())).as_ref()
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.message.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }

    fn internal_date(&self) -> Option<NaiveDate> {
        chrono::DateTime::from_timestamp_millis(self.message.internal_date_ms as i64).map(|d| d.date_naive())
    }

    /// The date of the Date header as written there, disregarding time and zone (RFC 3501
    /// SENTBEFORE); the internal date when the header is missing or unreadable.
    fn sent_date(&self) -> Option<NaiveDate> {
        let written = self.parsed().and_then(Message::date);
        written
            .and_then(|d| NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day)))
            .or_else(|| self.internal_date())
    }

    /// Whether an address header contains `needle`: in an address or a display name as
    /// the header shows it once encoded words are decoded, or in the raw field.
    fn address_contains(&self, field: &str, needle: &[u8]) -> bool {
        let needle = String::from_utf8_lossy(needle).to_lowercase();
        let decoded = self.parsed().and_then(|message| match field {
            "From" => message.from(),
            "To" => message.to(),
            "Cc" => message.cc(),
            _ => message.bcc(),
        });
        let in_decoded = decoded.is_some_and(|list| {
            list.iter().any(|addr| {
                let name = addr.name.as_deref().unwrap_or_default();
                let address = addr.address.as_deref().unwrap_or_default();
                format!("{name} <{address}>").to_lowercase().contains(&needle)
            })
        });
        in_decoded || field_values(self.raw(), field).iter().any(|value| contains_ignore_case(value, needle.as_bytes()))
    }

    /// SUBJECT: the decoded subject, or the raw field.
    fn subject_contains(&self, needle: &[u8]) -> bool {
        let needle_text = String::from_utf8_lossy(needle).to_lowercase();
        self.parsed().and_then(Message::subject).is_some_and(|subject| subject.to_lowercase().contains(&needle_text))
            || field_values(self.raw(), "Subject").iter().any(|value| contains_ignore_case(value, needle))
    }
}

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

/// The values of every header field called `name` (after the colon, continuation lines
/// unfolded).
fn field_values(raw: &[u8], name: &str) -> Vec<Vec<u8>> {
    let fields = sets::header_fields(raw, &[name.to_string()], false);
    let mut values: Vec<Vec<u8>> = Vec::new();
    for line in fields.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            if let Some(value) = values.last_mut() {
                value.extend_from_slice(content);
            }
        } else if let Some(colon) = content.iter().position(|&b| b == b':') {
            values.push(content[colon + 1..].to_vec());
        }
    }
    values
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// Whether `candidate` matches `key`.
pub fn matches_key(key: &SearchKey<'_>, candidate: &Candidate<'_>) -> bool {
    let message = candidate.message;
    let has = |flag: &str| candidate.has_flag(flag);
    let date = || candidate.internal_date();
    let sent = || candidate.sent_date();
    match key {
        SearchKey::All => true,
        SearchKey::And(keys) => keys.as_ref().iter().all(|k| matches_key(k, candidate)),
        SearchKey::Not(k) => !matches_key(k, candidate),
        SearchKey::Or(a, b) => matches_key(a, candidate) || matches_key(b, candidate),
        SearchKey::SequenceSet(set) => sets::contains(set, candidate.seq, candidate.view.len() as u32),
        SearchKey::Uid(set) => sets::contains(set, message.uid, candidate.view.last().copied().unwrap_or(0)),
        SearchKey::Answered => has("\\Answered"),
        SearchKey::Unanswered => !has("\\Answered"),
        SearchKey::Deleted => has("\\Deleted"),
        SearchKey::Undeleted => !has("\\Deleted"),
        SearchKey::Draft => has("\\Draft"),
        SearchKey::Undraft => !has("\\Draft"),
        SearchKey::Flagged => has("\\Flagged"),
        SearchKey::Unflagged => !has("\\Flagged"),
        SearchKey::Seen => has("\\Seen"),
        SearchKey::Unseen => !has("\\Seen"),
        SearchKey::Recent => candidate.recent,
        // NEW is RECENT UNSEEN; OLD is NOT RECENT (RFC 3501 6.4.4).
        SearchKey::New => candidate.recent && !has("\\Seen"),
        SearchKey::Old => !candidate.recent,
        SearchKey::Keyword(atom) => has(atom.as_ref()),
        SearchKey::Unkeyword(atom) => !has(atom.as_ref()),
        SearchKey::Larger(n) => message.size > *n as u64,
        SearchKey::Smaller(n) => message.size < *n as u64,
        SearchKey::Before(d) => date().is_some_and(|m| m < *d.as_ref()),
        SearchKey::On(d) => date().is_some_and(|m| m == *d.as_ref()),
        SearchKey::Since(d) => date().is_some_and(|m| m >= *d.as_ref()),
        SearchKey::SentBefore(d) => sent().is_some_and(|m| m < *d.as_ref()),
        SearchKey::SentOn(d) => sent().is_some_and(|m| m == *d.as_ref()),
        SearchKey::SentSince(d) => sent().is_some_and(|m| m >= *d.as_ref()),
        SearchKey::ModSequence { modseq, .. } => message.modseq >= *modseq,
        SearchKey::Subject(s) => candidate.subject_contains(s.as_ref()),
        SearchKey::From(s) => candidate.address_contains("From", s.as_ref()),
        SearchKey::To(s) => candidate.address_contains("To", s.as_ref()),
        SearchKey::Cc(s) => candidate.address_contains("Cc", s.as_ref()),
        SearchKey::Bcc(s) => candidate.address_contains("Bcc", s.as_ref()),
        // A field with an empty value to look for matches every message that has it.
        SearchKey::Header(name, value) => {
            let values = field_values(candidate.raw(), &String::from_utf8_lossy(name.as_ref()));
            values.iter().any(|v| contains_ignore_case(v, value.as_ref()))
        }
        SearchKey::Body(s) => contains_ignore_case(sets::text(candidate.raw()), s.as_ref()),
        SearchKey::Text(s) => contains_ignore_case(candidate.raw(), s.as_ref()),
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

    const RAW: &str = "From: =?UTF-8?Q?Ana_Mw=C3=A9ndwa?= <ana@health.go.ke>\r\nTo: user1@ministry.go.ke\r\n\
                       Subject: =?UTF-8?B?QnVkZ2V0IDIwMjcg4oCTIGRyYWZ0?=\r\nDate: Sun, 1 Mar 2026 23:30:00 -0800\r\n\
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
            // The internal date is 2026-03-04.
            ("SINCE 4-Mar-2026", true),
            ("ON 4-Mar-2026", true),
            ("BEFORE 4-Mar-2026", false),
            ("SINCE 5-Mar-2026", false),
            // The Date header says 1 March (in its own zone; 2 March in UTC).
            ("SENTON 1-Mar-2026", true),
            ("SENTON 2-Mar-2026", false),
            ("SENTBEFORE 2-Mar-2026", true),
            ("SENTSINCE 2-Mar-2026", false),
            // Subjects and names are matched decoded ("Budget 2027 – draft", "Ana Mwéndwa").
            ("SUBJECT budget", true),
            ("CHARSET UTF-8 SUBJECT {14+}\r\n2027 – draft", true),
            ("SUBJECT invoice", false),
            ("FROM ana@health", true),
            ("FROM \"Ana\"", true),
            ("CHARSET UTF-8 FROM {8+}\r\nMWÉNDWA", true),
            ("FROM ben", false),
            ("TO user1", true),
            ("CC user1", false),
            ("HEADER X-Priority 1", true),
            ("HEADER X-Priority 5", false),
            // An empty string matches every message that has the field, and only those.
            ("HEADER X-Priority \"\"", true),
            ("HEADER X-Spam \"\"", false),
            ("BODY attached", true),
            ("BODY 2027", false),
            ("TEXT \"x-priority: 1\"", true),
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
            let candidate = Candidate::new(&message, 2, &[3, 7], false);
            let matched = keys.iter().all(|key| matches_key(key, &candidate));
            assert_eq!(matched, expected, "SEARCH {criteria}");
        }
    }

    #[test]
    fn recent_new_and_old_follow_this_sessions_recent_flag() {
        let mut unseen = message();
        unseen.flags.clear();
        let seen = message();
        let cases = [
            (&unseen, true, [("RECENT", true), ("NEW", true), ("OLD", false)]),
            (&seen, true, [("RECENT", true), ("NEW", false), ("OLD", false)]),
            (&unseen, false, [("RECENT", false), ("NEW", false), ("OLD", true)]),
        ];
        for (message, recent, expectations) in cases {
            let candidate = Candidate::new(message, 1, &[7], recent);
            for (criteria, expected) in expectations {
                let matched = keys(criteria).iter().all(|key| matches_key(key, &candidate));
                assert_eq!(matched, expected, "SEARCH {criteria} (recent: {recent}, flags {:?})", message.flags);
            }
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
