//! Building IMAP responses with imap-codec: tagged OK/NO/BAD, untagged status and data,
//! and the conversions between our mailbox names, flags and dates and imap-types'.

use std::num::{NonZeroU32, NonZeroU64};

use imap_codec::ResponseCodec;
use imap_codec::encode::Encoder;
use imap_types::IntoStatic;
use imap_types::core::{Tag, Text, Vec1};
use imap_types::datetime::DateTime;
use imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_types::flag::{Flag, FlagFetch};
use imap_types::mailbox::{ListMailbox, Mailbox};
use imap_types::response::{Code, CodeOther, Data, Response, Status, StatusBody, StatusKind, Tagged};
use imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use crate::mail_service::ServiceError;

/// The flags every mailbox supports; keywords come on top.
pub(super) const SYSTEM_FLAGS: [Flag<'static>; 5] =
    [Flag::Answered, Flag::Flagged, Flag::Deleted, Flag::Seen, Flag::Draft];

pub fn encode(response: &Response<'_>) -> Vec<u8> {
    ResponseCodec::default().encode(response).dump()
}

fn tagged(tag: &Tag<'_>, kind: StatusKind, code: Option<Code<'static>>, text: &str) -> Vec<u8> {
    let text = Text::try_from(text.to_string()).unwrap_or_else(|_| Text::unvalidated("done"));
    let body = StatusBody { kind, code, text };
    encode(&Response::Status(Status::Tagged(Tagged { tag: tag.clone(), body })))
}

pub(super) fn ok(tag: &Tag<'_>, code: Option<Code<'static>>, text: &str) -> Vec<u8> {
    tagged(tag, StatusKind::Ok, code, text)
}

pub(super) fn no(tag: &Tag<'_>, code: Option<Code<'static>>, text: &str) -> Vec<u8> {
    tagged(tag, StatusKind::No, code, text)
}

pub(super) fn bad(tag: &Tag<'_>, text: &str) -> Vec<u8> {
    tagged(tag, StatusKind::Bad, None, text)
}

/// NO for a temporary failure of the cluster: the client may try again.
pub(super) fn no_unavailable(tag: &Tag<'_>, error: &ServiceError) -> Vec<u8> {
    no(tag, None, &format!("[UNAVAILABLE] {error}; try again"))
}

/// A response code imap-types has no variant for (`ALREADYEXISTS`, `PRIVACYREQUIRED`).
pub(super) fn other_code(atom: &'static str) -> Code<'static> {
    Code::Other(CodeOther::unvalidated(atom.as_bytes()))
}

pub(super) fn untagged_ok(code: Code<'static>, text: &str) -> Vec<u8> {
    encode(&Response::Status(Status::ok(None, Some(code), text.to_string()).expect("valid text")))
}

pub(super) fn data(data: Data<'static>) -> Vec<u8> {
    encode(&Response::Data(data))
}

/// `*` untagged BYE, e.g. before closing an idle connection.
pub fn bye(text: &str) -> Vec<u8> {
    encode(&Response::Status(Status::bye(None, text.to_string()).expect("valid text")))
}

/// A sequence number, UID or count that IMAP requires to be non-zero.
pub(super) fn nz(value: u32) -> NonZeroU32 {
    NonZeroU32::new(value.max(1)).expect("at least 1")
}

/// A modseq as IMAP sends it (never 0).
pub(super) fn nz64(value: u64) -> NonZeroU64 {
    NonZeroU64::new(value.max(1)).expect("at least 1")
}

/// Our name of a mailbox: a full path with "/" between levels; INBOX in any case is INBOX.
pub(super) fn name_of(mailbox: &Mailbox<'_>) -> String {
    match mailbox {
        Mailbox::Inbox => "INBOX".into(),
        Mailbox::Other(other) => {
            let name = String::from_utf8_lossy(other.as_ref()).into_owned();
            if name.eq_ignore_ascii_case("INBOX") { "INBOX".into() } else { name }
        }
    }
}

pub(super) fn pattern_of(pattern: &ListMailbox<'_>) -> Vec<u8> {
    match pattern {
        ListMailbox::Token(token) => token.as_ref().to_vec(),
        ListMailbox::String(string) => string.as_ref().to_vec(),
    }
}

pub(super) fn mailbox_of(name: &str) -> Option<Mailbox<'static>> {
    Mailbox::try_from(name.to_string()).ok()
}

/// A message's flags as FETCH shows them, `\Recent` last when it is recent here.
pub(super) fn flags_of(strings: &[String], recent: bool) -> Vec<FlagFetch<'static>> {
    let mut flags: Vec<FlagFetch<'static>> = strings
        .iter()
        .filter_map(|s| Flag::try_from(s.as_str()).ok().map(IntoStatic::into_static))
        .map(FlagFetch::Flag)
        .collect();
    if recent {
        flags.push(FlagFetch::Recent);
    }
    flags
}

/// Flag names as FLAGS and PERMANENTFLAGS list them.
pub(super) fn flag_list(names: &[String]) -> Vec<Flag<'static>> {
    names.iter().filter_map(|s| Flag::try_from(s.as_str()).ok().map(IntoStatic::into_static)).collect()
}

/// Sorted, distinct numbers as runs of consecutive ones: `[2, 3, 4, 9]` is `[(2, 4), (9, 9)]`.
/// Order is kept, since COPYUID pairs its source and destination sets element by element.
pub(super) fn runs(numbers: &[u32]) -> Vec<(u32, u32)> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &n in numbers {
        match runs.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(n) => *last = n,
            _ => runs.push((n, n)),
        }
    }
    runs
}

/// UIDs as a UIDPLUS set, consecutive runs as ranges (`2:4,9`).
pub(super) fn uid_set(uids: &[u32]) -> Option<UidSet> {
    let elements: Vec<UidElement> = runs(uids)
        .into_iter()
        .map(
            |(first, last)| {
                if first == last { UidElement::Single(nz(first)) } else { UidElement::Range(nz(first), nz(last)) }
            },
        )
        .collect();
    Vec1::try_from(elements).ok().map(UidSet)
}

/// Runs of numbers as a sequence set (`2:4,9`), e.g. for VANISHED or MODIFIED.
pub(super) fn sequence_set(runs: &[(u32, u32)]) -> Option<SequenceSet> {
    let value = |n: u32| SeqOrUid::Value(nz(n));
    let sequences: Vec<Sequence> =
        runs.iter()
            .map(|&(first, last)| {
                if first == last { Sequence::Single(value(first)) } else { Sequence::Range(value(first), value(last)) }
            })
            .collect();
    Vec1::try_from(sequences).ok().map(SequenceSet)
}

pub(super) fn internal_date(ms: u64) -> DateTime {
    let utc = chrono::DateTime::from_timestamp_millis(ms as i64).unwrap_or_default();
    DateTime::unvalidated(utc.with_timezone(&chrono::FixedOffset::east_opt(0).expect("UTC")))
}
