//! FETCH: message data items (flags, dates, sizes, ENVELOPE, BODYSTRUCTURE, whole
//! messages, header fields, MIME parts, partials, MODSEQ), setting `\\Seen` for a
//! non-PEEK body fetch in a writable mailbox; CHANGEDSINCE (CONDSTORE) filters by modseq.

use std::collections::HashMap;

use imap_types::IntoStatic;
use imap_types::core::{AString, LiteralMode, NString, NString8, Tag, Vec1};
use imap_types::extensions::binary::Literal8;
use imap_types::fetch::{Macro, MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Part, Section};
use imap_types::response::{Code, Data};
use imap_types::sequence::SequenceSet;

use super::responses::{
    bad, data, flags_of, internal_date, no, no_unavailable, nz, nz64, ok, other_code, sequence_set,
};
use super::{After, Handled, Session, resolve_set};
use crate::imap::binary::UnknownEncoding;
use crate::imap::{sets, structure};
use crate::mail_service::{FlagChange, MessageInfo};

/// What a FETCH command asks for, beside the messages and items it names.
pub(super) struct FetchRequest {
    /// `UID FETCH`: the set holds UIDs, and responses carry them.
    pub by_uid: bool,
    /// CONDSTORE: only messages changed after this modseq.
    pub changed_since: Option<u64>,
    /// QRESYNC: also report, as `VANISHED (EARLIER)`, the set's UIDs that are gone.
    pub vanished: bool,
}

impl Session {
    pub(super) async fn fetch(
        &mut self,
        tag: &Tag<'_>,
        set: &SequenceSet,
        names: MacroOrMessageDataItemNames<'_>,
        request: FetchRequest,
        out: &mut Vec<u8>,
    ) -> Handled {
        let FetchRequest { by_uid, changed_since, vanished } = request;
        if vanished && !(self.qresync && by_uid && changed_since.is_some()) {
            // RFC 7162 3.2.6: only UID FETCH with CHANGEDSINCE, once QRESYNC is enabled.
            return Err(bad(tag, "VANISHED needs ENABLE QRESYNC, UID FETCH and CHANGEDSINCE"));
        }
        let user = self.user(tag)?;
        let selected = self.selected(tag)?;
        if vanished {
            let largest = selected.uids.last().map_or(1, |&uid| uid + 1);
            if let Some(gone) = sequence_set(&sets::vanished(Some(set), &selected.uids, largest)) {
                out.extend(data(Data::Vanished { earlier: true, known_uids: gone }));
            }
        }
        let targets = resolve_set(tag, selected, set, by_uid)?;
        let (name, read_only) = (selected.name.clone(), selected.read_only);
        let mut names: Vec<MessageDataItemName<'_>> = match names {
            // RFC 3501 6.4.5: FAST, ALL (FAST and ENVELOPE), FULL (ALL and BODY).
            MacroOrMessageDataItemNames::Macro(m) => {
                let mut names = vec![
                    MessageDataItemName::Flags,
                    MessageDataItemName::InternalDate,
                    MessageDataItemName::Rfc822Size,
                ];
                if matches!(m, Macro::All | Macro::Full) {
                    names.push(MessageDataItemName::Envelope);
                }
                if matches!(m, Macro::Full) {
                    names.push(MessageDataItemName::Body);
                }
                names
            }
            MacroOrMessageDataItemNames::MessageDataItemNames(names) => names,
        };
        if by_uid && !names.contains(&MessageDataItemName::Uid) {
            names.insert(0, MessageDataItemName::Uid);
        }
        if (self.condstore || changed_since.is_some()) && !names.contains(&MessageDataItemName::ModSeq) {
            names.push(MessageDataItemName::ModSeq);
        }
        let needs_body = names.iter().any(|n| {
            matches!(
                n,
                MessageDataItemName::BodyExt { .. }
                    | MessageDataItemName::Rfc822
                    | MessageDataItemName::Rfc822Header
                    | MessageDataItemName::Rfc822Text
                    | MessageDataItemName::Envelope
                    | MessageDataItemName::BodyStructure
                    | MessageDataItemName::Body
                    | MessageDataItemName::Binary { .. }
                    | MessageDataItemName::BinarySize { .. }
            )
        });
        let sets_seen = !read_only
            && names.iter().any(|n| {
                matches!(
                    n,
                    MessageDataItemName::BodyExt { peek: false, .. }
                        | MessageDataItemName::Binary { peek: false, .. }
                        | MessageDataItemName::Rfc822
                        | MessageDataItemName::Rfc822Text
                )
            });
        let uids: Vec<u32> = targets.iter().map(|&(_, uid)| uid).collect();
        let mut messages =
            self.service.messages(&user, &name, Some(&uids), needs_body).await.map_err(|e| no_unavailable(tag, &e))?;
        // RFC 3516: a part whose encoding cannot be undone fails the whole FETCH, before
        // anything (\Seen included) changes.
        for message in &messages {
            for name in &names {
                if let MessageDataItemName::Binary { section, .. } | MessageDataItemName::BinarySize { section } = name
                    && let Some(Err(UnknownEncoding(encoding))) =
                        structure::binary_part(message.raw.as_deref().unwrap_or_default(), &numbers(section))
                {
                    return Err(no(tag, Some(Code::UnknownCte), &format!("cannot decode {encoding} content")));
                }
            }
        }
        if sets_seen {
            let unseen: Vec<u32> = messages
                .iter()
                .filter(|m| !m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")))
                .map(|m| m.uid)
                .collect();
            if !unseen.is_empty() {
                let stored = self
                    .service
                    .store_flags(&user, &name, &unseen, FlagChange::Add, &["\\Seen".to_string()], None)
                    .await
                    .map_err(|e| no_unavailable(tag, &e))?;
                for changed in stored.messages {
                    if let Some(m) = messages.iter_mut().find(|m| m.uid == changed.uid) {
                        (m.flags, m.modseq) = (changed.flags, changed.modseq);
                    }
                }
                if !names.contains(&MessageDataItemName::Flags) {
                    names.push(MessageDataItemName::Flags);
                }
            }
        }
        let shown: Vec<&MessageInfo> =
            messages.iter().filter(|m| changed_since.is_none_or(|since| m.modseq > since)).collect();
        if names.contains(&MessageDataItemName::Flags) {
            self.announce_keywords(shown.iter().copied(), out);
        }
        let selected = self.selected(tag)?;
        let seq_of: HashMap<u32, u32> = targets.iter().map(|&(seq, uid)| (uid, seq)).collect();
        for message in shown {
            let Some(&seq) = seq_of.get(&message.uid) else { continue };
            let recent = selected.is_recent(message.uid);
            let items: Vec<MessageDataItem<'static>> = names.iter().map(|n| item(n, message, recent)).collect();
            let partial_binary =
                names.iter().any(|n| matches!(n, MessageDataItemName::Binary { partial: Some(_), .. }));
            if partial_binary {
                out.extend(fetch_with_origins(seq, &names, items));
            } else if let Ok(items) = Vec1::try_from(items) {
                out.extend(data(Data::Fetch { seq: nz(seq), items }));
            }
        }
        // Messages another session expunged, which this one has not been told of yet, have
        // no data to give any more: the others are answered, and the client is told why
        // some are missing (RFC 2180 4.1.2, RFC 5530 EXPUNGEISSUED).
        if messages.len() < targets.len() {
            out.extend(no(tag, Some(other_code("EXPUNGEISSUED")), "Some of the requested messages no longer exist"));
            return Ok(After::Continue);
        }
        out.extend(ok(tag, None, "FETCH completed"));
        Ok(After::Continue)
    }
}

/// One FETCH item of one message (`recent`: `\Recent` in this session).
fn item(name: &MessageDataItemName<'_>, message: &MessageInfo, recent: bool) -> MessageDataItem<'static> {
    let raw = message.raw.as_deref().unwrap_or_default();
    let literal = |bytes: &[u8]| NString::from(structure::literal(bytes));
    match name {
        MessageDataItemName::Flags => MessageDataItem::Flags(flags_of(&message.flags, recent)),
        MessageDataItemName::Uid => MessageDataItem::Uid(nz(message.uid)),
        MessageDataItemName::InternalDate => MessageDataItem::InternalDate(internal_date(message.internal_date_ms)),
        MessageDataItemName::Rfc822Size => MessageDataItem::Rfc822Size(message.size.min(u32::MAX as u64) as u32),
        MessageDataItemName::ModSeq => MessageDataItem::ModSeq(nz64(message.modseq)),
        MessageDataItemName::Rfc822 => MessageDataItem::Rfc822(literal(raw)),
        MessageDataItemName::Envelope => MessageDataItem::Envelope(structure::envelope(raw)),
        MessageDataItemName::BodyStructure => MessageDataItem::BodyStructure(structure::body_structure(raw)),
        MessageDataItemName::Body => MessageDataItem::Body(structure::body_structure(raw)),
        MessageDataItemName::Rfc822Header => MessageDataItem::Rfc822Header(literal(sets::header(raw))),
        MessageDataItemName::Rfc822Text => MessageDataItem::Rfc822Text(literal(sets::text(raw))),
        MessageDataItemName::BodyExt { section, partial, .. } => {
            let whole: Vec<u8> = match section {
                None => raw.to_vec(),
                Some(Section::Header(None)) => sets::header(raw).to_vec(),
                Some(Section::Text(None)) => sets::text(raw).to_vec(),
                Some(Section::HeaderFields(None, fields)) => {
                    sets::header_fields(raw, &field_names(fields.as_ref()), false)
                }
                Some(Section::HeaderFieldsNot(None, fields)) => {
                    sets::header_fields(raw, &field_names(fields.as_ref()), true)
                }
                Some(Section::Part(part)) => structure::part_bytes(raw, &part_path(part), false).unwrap_or_default(),
                Some(Section::Mime(part)) => structure::part_bytes(raw, &part_path(part), true).unwrap_or_default(),
                // HEADER and TEXT of an attached message (BODY[2.HEADER]).
                Some(Section::Header(Some(part)) | Section::Text(Some(part))) => {
                    let inner = structure::part_bytes(raw, &part_path(part), false).unwrap_or_default();
                    if matches!(section, Some(Section::Header(_))) {
                        sets::header(&inner).to_vec()
                    } else {
                        sets::text(&inner).to_vec()
                    }
                }
                Some(Section::HeaderFields(Some(part), fields) | Section::HeaderFieldsNot(Some(part), fields)) => {
                    let inner = structure::part_bytes(raw, &part_path(part), false).unwrap_or_default();
                    sets::header_fields(
                        &inner,
                        &field_names(fields.as_ref()),
                        matches!(section, Some(Section::HeaderFieldsNot(..))),
                    )
                }
            };
            let (origin, bytes) = match partial {
                Some((origin, length)) => (Some(*origin), sets::partial(&whole, *origin, length.get()).to_vec()),
                None => (None, whole),
            };
            MessageDataItem::BodyExt {
                section: section.clone().map(|s| s.into_static()),
                origin,
                data: literal(&bytes),
            }
        }
        // A part that does not exist is empty (as for BODY[]).
        MessageDataItemName::Binary { section, partial, .. } => {
            let whole = structure::binary_part(raw, &numbers(section)).and_then(Result::ok).unwrap_or_default();
            let bytes = match partial {
                Some((origin, length)) => sets::partial(&whole, *origin, length.get()).to_vec(),
                None => whole,
            };
            // Bytes that a literal cannot carry (NUL) go in a literal8 (RFC 3516 4.2).
            let value = if bytes.contains(&0) {
                NString8::Literal8(Literal8 { data: bytes.into(), mode: LiteralMode::Sync })
            } else {
                NString8::NString(literal(&bytes))
            };
            MessageDataItem::Binary { section: section.clone(), value }
        }
        MessageDataItemName::BinarySize { section } => {
            let size = structure::binary_part(raw, &numbers(section)).and_then(Result::ok).map_or(0, |b| b.len());
            MessageDataItem::BinarySize { section: section.clone(), size: size.min(u32::MAX as usize) as u32 }
        }
    }
}

/// A FETCH response whose partial BINARY items carry their origin (`BINARY[2]<1> {3}`, RFC
/// 3516 4.2), which imap-types has no field for: each item is encoded on its own and the
/// origin put after its section.
fn fetch_with_origins(seq: u32, names: &[MessageDataItemName<'_>], items: Vec<MessageDataItem<'static>>) -> Vec<u8> {
    let mut out = format!("* {seq} FETCH (").into_bytes();
    for (index, (name, item)) in names.iter().zip(items).enumerate() {
        let alone = data(Data::Fetch { seq: nz(seq), items: Vec1::from(item) });
        let prefix = format!("* {seq} FETCH (");
        let mut text = alone[prefix.len()..alone.len() - b")\r\n".len()].to_vec();
        if let MessageDataItemName::Binary { partial: Some((origin, _)), .. } = name
            && let Some(end) = text.iter().position(|&b| b == b']')
        {
            text.splice(end + 1..end + 1, format!("<{origin}>").into_bytes());
        }
        if index > 0 {
            out.push(b' ');
        }
        out.extend(text);
    }
    out.extend_from_slice(b")\r\n");
    out
}

fn numbers(section: &[std::num::NonZeroU32]) -> Vec<u32> {
    section.iter().map(|n| n.get()).collect()
}

fn part_path(part: &Part) -> Vec<u32> {
    part.0.as_ref().iter().map(|n| n.get()).collect()
}

fn field_names(fields: &[AString<'_>]) -> Vec<String> {
    fields.iter().map(|f| String::from_utf8_lossy(f.as_ref()).into_owned()).collect()
}

#[cfg(test)]
mod tests {
    use imap_codec::ResponseCodec;
    use imap_codec::encode::Encoder;
    use imap_types::response::Response;

    use super::*;

    fn fetched(name: MessageDataItemName<'static>, message: &MessageInfo) -> Vec<u8> {
        let items = Vec1::from(item(&name, message, false));
        ResponseCodec::default().encode(&Response::Data(Data::Fetch { seq: nz(1), items })).dump()
    }

    /// Found by `fuzz/fuzz_targets/imap_session.rs`: `BODY[]` of a message holding a NUL
    /// byte went out as a literal with the NUL in it (and a debug build panicked making
    /// it). Only BINARY may carry NUL, in a literal8.
    #[test]
    fn a_nul_byte_is_sent_as_0x80_except_by_binary() {
        let message =
            MessageInfo { uid: 1, raw: Some(b"Subject: png\r\n\r\nPNG\0\r\n".to_vec()), ..MessageInfo::default() };
        let body = fetched(MessageDataItemName::BodyExt { section: None, partial: None, peek: true }, &message);
        assert!(body.ends_with(b"{22}\r\nSubject: png\r\n\r\nPNG\x80\r\n)\r\n"), "{}", String::from_utf8_lossy(&body));
        let binary = fetched(MessageDataItemName::Binary { section: Vec::new(), partial: None, peek: true }, &message);
        assert!(
            binary.ends_with(b"~{22}\r\nSubject: png\r\n\r\nPNG\0\r\n)\r\n"),
            "{}",
            String::from_utf8_lossy(&binary)
        );
    }
}
