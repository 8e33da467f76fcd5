//! Arbitrary bytes as a stored message, through everything IMAP computes of one: ENVELOPE
//! and BODYSTRUCTURE (`imap::structure`, encoded as the FETCH response a client reads),
//! the bytes of every part BODYSTRUCTURE names and of parts it does not (`BODY[1.2]`,
//! `.MIME`, `.HEADER`, `.TEXT`, header fields, partials), BINARY's decoding
//! (`imap::binary`), SORT's keys and base subject (`imap::sort`), THREAD over it and a
//! few real messages (`imap::thread`), and every kind of SEARCH key
//! (`imap::search_keys`). Nothing may panic; the responses must parse; the sizes
//! BODYSTRUCTURE gives must be those of the parts' bytes.
#![no_main]

use std::sync::LazyLock;

use gateways::fuzzing::imap_codec::CommandCodec;
use gateways::fuzzing::imap_codec::decode::Decoder as _;
use gateways::fuzzing::imap_types::IntoStatic;
use gateways::fuzzing::imap_types::body::{BasicFields, Body, BodyStructure, SpecificFields};
use gateways::fuzzing::imap_types::command::CommandBody;
use gateways::fuzzing::imap_types::core::Vec1;
use gateways::fuzzing::imap_types::extensions::sort::{SortCriterion, SortKey};
use gateways::fuzzing::imap_types::fetch::MessageDataItem;
use gateways::fuzzing::imap_types::response::{Data, Response};
use gateways::fuzzing::imap_types::search::SearchKey;
use gateways::imap::search_keys::{Candidate, matches_key, needs_text};
use gateways::imap::session::encode;
use gateways::imap::sort::{Sortable, base_subject, sortable, sorted};
use gateways::imap::{binary, sets, structure, thread};
use gateways::mail_service::MessageInfo;
use libfuzzer_sys::fuzz_target;
use ums_fuzz::MESSAGES;

/// Every kind of SEARCH key, as a client writes them.
const SEARCHES: &[&str] = &[
    "ALL ANSWERED DELETED DRAFT FLAGGED SEEN RECENT NEW OLD UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNSEEN",
    "BCC ana CC team FROM \"Ben <ben\" TO health.go.ke SUBJECT rota SUBJECT \"\" BODY hello TEXT hello",
    "HEADER Message-ID \"\" HEADER X-Priority 1 HEADER References rota HEADER Subject caf",
    "BEFORE 1-Jan-2026 ON 4-Mar-2026 SINCE 1-Jan-2026 SENTBEFORE 1-Jan-2000 SENTON 3-Mar-2026 SENTSINCE 1-Jan-2026",
    "LARGER 100 SMALLER 10000 KEYWORD urgent UNKEYWORD $Forwarded UID 1:* 1,3:* MODSEQ 1",
    "OR NOT FROM x (TO y CC z) OR SUBJECT \"re:\" NOT HEADER From \"@\"",
];

static KEYS: LazyLock<Vec<SearchKey<'static>>> = LazyLock::new(|| {
    let mut keys = Vec::new();
    for search in SEARCHES {
        let line = format!("t SEARCH {search}\r\n");
        let (_, command) =
            CommandCodec::default().decode(line.as_bytes()).unwrap_or_else(|e| panic!("{search}: {e:?}"));
        let CommandBody::Search { criteria, .. } = command.body else { unreachable!("a SEARCH") };
        keys.extend(criteria.into_inner().into_iter().map(IntoStatic::into_static));
    }
    keys
});

/// Every sort key, forwards and reversed.
static CRITERIA: LazyLock<Vec<SortCriterion>> = LazyLock::new(|| {
    let keys =
        [SortKey::Arrival, SortKey::Cc, SortKey::Date, SortKey::From, SortKey::Size, SortKey::Subject, SortKey::To];
    keys.into_iter().flat_map(|key| [false, true].map(|reverse| SortCriterion { reverse, key: key.clone() })).collect()
});

/// The sample messages as SORT and THREAD see them (numbers 3 and on).
static OTHERS: LazyLock<Vec<Sortable>> = LazyLock::new(|| {
    MESSAGES.iter().enumerate().map(|(i, (raw, _))| sortable(&info(raw.as_bytes()), i as u32 + 3)).collect()
});

fn info(raw: &[u8]) -> MessageInfo {
    MessageInfo {
        uid: 7,
        modseq: 3,
        flags: vec!["\\Seen".into(), "urgent".into()],
        internal_date_ms: 1_772_618_400_000,
        size: raw.len() as u64,
        raw: Some(raw.to_vec()),
    }
}

fuzz_target!(|raw: &[u8]| ums_fuzz::on_worker_stack(|| examine(raw)));

fn examine(raw: &[u8]) {
    let envelope = structure::envelope(raw);
    let body = structure::body_structure(raw);
    let mut items = vec![MessageDataItem::Envelope(envelope)];
    // imap-codec reads BODYSTRUCTURE only 6 deep (a client's limit, not IMAP's).
    if depth(&body) <= 6 {
        items.extend([MessageDataItem::BodyStructure(body.clone()), MessageDataItem::Body(body.clone())]);
    }
    let response = Data::Fetch { seq: 1.try_into().unwrap(), items: Vec1::try_from(items).unwrap() };
    ums_fuzz::assert_well_formed_responses(&encode(&Response::Data(response)), false);

    // The parts BODYSTRUCTURE names, with their sizes, then some it does not.
    let mut parts = Vec::new();
    part_paths(&body, &mut Vec::new(), &mut parts);
    let named = parts.len();
    parts.extend([vec![0], vec![99], vec![1, 1, 1, 1], vec![2, 0], vec![1; 40]].map(|p| (p, None)));
    for (index, (path, size)) in parts.iter().enumerate() {
        let bytes = structure::part_bytes(raw, path, false);
        if let (Some(bytes), Some(size)) = (&bytes, size) {
            assert_eq!(bytes.len() as u32, *size, "BODYSTRUCTURE's size of part {path:?} is not its bytes'");
        }
        // (What mail-parser cannot parse is described as one text part, and has none.)
        let described = index < named && path != &[1];
        assert!(!described || bytes.is_some(), "BODYSTRUCTURE names {path:?}, which has no bytes");
        let inner = bytes.unwrap_or_default();
        let _ = structure::part_bytes(raw, path, true);
        let _ = (sets::header(&inner), sets::text(&inner));
        let _ = sets::header_fields(&inner, &["subject".into(), "From".into()], false);
        let _ = structure::binary_part(raw, path);
    }
    let _ = structure::binary_part(raw, &[]);

    let (header, text) = (sets::header(raw), sets::text(raw));
    assert_eq!(header.len() + text.len(), raw.len(), "HEADER and TEXT are the whole message");
    let names = ["Subject".to_string(), "x-priority".into(), "".into(), "From:".into()];
    let chosen = sets::header_fields(raw, &names, false);
    let others = sets::header_fields(raw, &names, true);
    assert!(chosen.len() + others.len() <= header.len() + 4, "header fields come from the header");
    for (origin, length) in [(0, 1), (3, 10), (u32::MAX, 5), (5, u32::MAX), (raw.len() as u32 / 2, 7)] {
        assert!(sets::partial(raw, origin, length).len() <= length as usize);
    }
    for encoding in [None, Some("base64"), Some(" Quoted-Printable "), Some("8bit"), Some("x-uuencode")] {
        let decoded = binary::decode(raw, encoding);
        if let (Ok(decoded), Some(" Quoted-Printable ")) = (&decoded, encoding) {
            assert!(decoded.len() <= raw.len(), "quoted-printable only shrinks");
        }
    }

    let message = info(raw);
    let this = sortable(&message, 1);
    let (again, _) = base_subject(&this.subject);
    assert_eq!(again, this.subject, "the base subject has no decorations left");
    let mut messages = vec![this.clone(), Sortable { seq: 2, uid: 8, ..this }];
    messages.extend(OTHERS.iter().cloned());
    let order = sorted(&messages, &CRITERIA);
    assert_eq!(order.len(), messages.len());
    for threads in [thread::references(&messages), thread::ordered_subject(&messages)] {
        let rendered = thread::render(&threads, &messages, |m| m.seq);
        let mut numbers: Vec<u32> = rendered
            .split(|c: char| !c.is_ascii_digit())
            .filter(|n| !n.is_empty())
            .map(|n| n.parse().unwrap())
            .collect();
        numbers.sort_unstable();
        let all: Vec<u32> = (1..=messages.len() as u32).collect();
        assert_eq!(numbers, all, "every message in exactly one thread: {rendered}");
    }

    let view = [3, 5, 7, 9];
    for recent in [false, true] {
        let candidate = Candidate::new(&message, 3, &view, recent);
        for key in KEYS.iter() {
            let _ = (matches_key(key, &candidate), needs_text(key));
        }
    }
}

/// How deep BODYSTRUCTURE nests: 1 for a single part.
fn depth(body: &BodyStructure<'_>) -> usize {
    match body {
        BodyStructure::Multi { bodies, .. } => 1 + bodies.as_ref().iter().map(depth).max().unwrap_or(0),
        BodyStructure::Single {
            body: Body { specific: SpecificFields::Message { body_structure, .. }, .. }, ..
        } => 1 + depth(body_structure),
        BodyStructure::Single { .. } => 1,
    }
}

/// The parts below `body` as FETCH numbers them (`prefix.1`, `prefix.2`, ...), each with the
/// size BODYSTRUCTURE gives it; a message of one part has part 1.
fn part_paths(body: &BodyStructure<'_>, prefix: &mut Vec<u32>, out: &mut Vec<(Vec<u32>, Option<u32>)>) {
    if out.len() > 100 {
        return;
    }
    let children: Vec<&BodyStructure<'_>> = match body {
        BodyStructure::Multi { bodies, .. } => bodies.as_ref().iter().collect(),
        BodyStructure::Single {
            body: Body { specific: SpecificFields::Message { body_structure, .. }, .. }, ..
        } => match body_structure.as_ref() {
            BodyStructure::Multi { bodies, .. } => bodies.as_ref().iter().collect(),
            single => vec![single],
        },
        single if prefix.is_empty() => vec![single],
        BodyStructure::Single { .. } => Vec::new(),
    };
    for (i, child) in children.into_iter().enumerate() {
        prefix.push(i as u32 + 1);
        let size = match child {
            BodyStructure::Single { body: Body { basic: BasicFields { size, .. }, .. }, .. } => Some(*size),
            BodyStructure::Multi { .. } => None,
        };
        out.push((prefix.clone(), size));
        if !matches!(
            child,
            BodyStructure::Single {
                body: Body { specific: SpecificFields::Basic { .. } | SpecificFields::Text { .. }, .. },
                ..
            }
        ) {
            part_paths(child, prefix, out);
        }
        prefix.pop();
    }
}
