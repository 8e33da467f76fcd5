//! ENVELOPE and BODYSTRUCTURE (RFC 3501 section 7.4.2) of a stored message, and the
//! bytes of its MIME parts (`BODY[1.2]`, `BODY[1.MIME]`), from mail-parser's parse.

use std::borrow::Cow;

use imap_types::body::{BasicFields, Body, BodyStructure, SpecificFields};
use imap_types::core::{IString, Literal, NString, Vec1};
use imap_types::envelope::{Address, Envelope};
use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

fn nstring(text: Option<&str>) -> NString<'static> {
    match text.map(str::trim) {
        None => NString::NIL,
        Some(text) => NString::try_from(text.to_string())
            .unwrap_or_else(|_| NString::from(Literal::unvalidated(text.as_bytes().to_vec()))),
    }
}

fn istring(text: &str) -> IString<'static> {
    IString::try_from(text.to_string())
        .unwrap_or_else(|_| IString::from(Literal::unvalidated(text.as_bytes().to_vec())))
}

fn addresses(list: Option<&mail_parser::Address<'_>>) -> Vec<Address<'static>> {
    let Some(list) = list else { return Vec::new() };
    list.iter()
        .map(|addr| {
            let address = addr.address.as_deref().unwrap_or_default();
            let (mailbox, host) = address.rsplit_once('@').map_or((address, None), |(m, h)| (m, Some(h)));
            Address {
                name: nstring(addr.name.as_deref()),
                adl: NString::NIL,
                mailbox: nstring(Some(mailbox)),
                host: nstring(host),
            }
        })
        .collect()
}

fn envelope_of(message: &Message<'_>) -> Envelope<'static> {
    let from = addresses(message.from());
    // RFC 3501: sender and reply-to default to from.
    let or_from = |list: Vec<Address<'static>>| if list.is_empty() { from.clone() } else { list };
    Envelope {
        date: nstring(message.header_raw("Date")),
        subject: nstring(message.header_raw("Subject")),
        sender: or_from(addresses(message.sender())),
        reply_to: or_from(addresses(message.reply_to())),
        from: from.clone(),
        to: addresses(message.to()),
        cc: addresses(message.cc()),
        bcc: addresses(message.bcc()),
        in_reply_to: nstring(message.header_raw("In-Reply-To")),
        message_id: nstring(message.header_raw("Message-ID")),
    }
}

fn parse(raw: &[u8]) -> Option<Message<'_>> {
    MessageParser::default().parse(raw)
}

/// The ENVELOPE of a message (header values as they are, encoded words included).
pub fn envelope(raw: &[u8]) -> Envelope<'static> {
    match parse(raw) {
        Some(message) => envelope_of(&message),
        None => Envelope {
            date: NString::NIL,
            subject: NString::NIL,
            from: Vec::new(),
            sender: Vec::new(),
            reply_to: Vec::new(),
            to: Vec::new(),
            cc: Vec::new(),
            bcc: Vec::new(),
            in_reply_to: NString::NIL,
            message_id: NString::NIL,
        },
    }
}

/// The BODYSTRUCTURE of a message (without extension data).
pub fn body_structure(raw: &[u8]) -> BodyStructure<'static> {
    match parse(raw) {
        Some(message) => structure_of(&message, 0, 0),
        None => plain_text(raw.len(), raw.iter().filter(|&&b| b == b'\n').count()),
    }
}

fn opaque(size: u32) -> BodyStructure<'static> {
    let basic = BasicFields {
        parameter_list: Vec::new(),
        id: NString::NIL,
        description: NString::NIL,
        content_transfer_encoding: istring("7bit"),
        size,
    };
    BodyStructure::Single {
        body: Body {
            basic,
            specific: SpecificFields::Basic { r#type: istring("application"), subtype: istring("octet-stream") },
        },
        extension_data: None,
    }
}

fn plain_text(size: usize, lines: usize) -> BodyStructure<'static> {
    let basic = BasicFields {
        parameter_list: vec![(istring("charset"), istring("us-ascii"))],
        id: NString::NIL,
        description: NString::NIL,
        content_transfer_encoding: istring("7bit"),
        size: size as u32,
    };
    BodyStructure::Single {
        body: Body {
            basic,
            specific: SpecificFields::Text { subtype: istring("plain"), number_of_lines: lines as u32 },
        },
        extension_data: None,
    }
}

/// Deepest MIME nesting described; deeper parts are shown as opaque data (a message
/// nested thousands deep must not exhaust the stack).
const MAX_DEPTH: usize = 32;

fn structure_of(message: &Message<'_>, id: u32, depth: usize) -> BodyStructure<'static> {
    let Some(part) = message.part(id) else { return plain_text(0, 0) };
    if depth >= MAX_DEPTH {
        return opaque(part.offset_end.saturating_sub(part.offset_body));
    }
    let content_type = part.content_type();
    let kind = content_type.map_or(Cow::Borrowed("text"), |c| Cow::Owned(c.c_type.to_lowercase()));
    let default_subtype = if kind == "text" { "plain" } else { "octet-stream" };
    let subtype = content_type.and_then(|c| c.c_subtype.as_deref()).unwrap_or(default_subtype).to_lowercase();
    let mut parameters: Vec<(IString<'static>, IString<'static>)> = content_type
        .and_then(|c| c.attributes.as_ref())
        .map(|attributes| attributes.iter().map(|a| (istring(&a.name.to_lowercase()), istring(&a.value))).collect())
        .unwrap_or_default();
    if let PartType::Multipart(children) = &part.body {
        let bodies: Vec<BodyStructure<'static>> =
            children.iter().map(|&child| structure_of(message, child, depth + 1)).collect();
        return match Vec1::try_from(bodies) {
            Ok(bodies) => BodyStructure::Multi { bodies, subtype: istring(&subtype), extension_data: None },
            Err(_) => plain_text(0, 0),
        };
    }
    if kind == "text" && parameters.is_empty() {
        parameters.push((istring("charset"), istring("us-ascii")));
    }
    let raw = message.raw_message();
    let (start, end) = (part.offset_body as usize, (part.offset_end as usize).min(raw.len()));
    let body_bytes = raw.get(start..end).unwrap_or_default();
    let lines = body_bytes.iter().filter(|&&b| b == b'\n').count() as u32;
    let basic = BasicFields {
        parameter_list: parameters,
        id: nstring(part.content_id()),
        description: nstring(part.content_description()),
        content_transfer_encoding: istring(&part.content_transfer_encoding().unwrap_or("7bit").to_lowercase()),
        size: body_bytes.len() as u32,
    };
    let specific = match (&part.body, kind.as_ref()) {
        (PartType::Message(inner), _) => SpecificFields::Message {
            envelope: Box::new(envelope_of(inner)),
            body_structure: Box::new(structure_of(inner, 0, depth + 1)),
            number_of_lines: lines,
        },
        (_, "text") => SpecificFields::Text { subtype: istring(&subtype), number_of_lines: lines },
        _ => SpecificFields::Basic { r#type: istring(&kind), subtype: istring(&subtype) },
    };
    BodyStructure::Single { body: Body { basic, specific }, extension_data: None }
}

/// The body (or, with `mime`, the MIME header) of the part at `path` (1-based numbers,
/// as in `BODY[2.1]`); `None` if there is no such part.
pub fn part_bytes(raw: &[u8], path: &[u32], mime: bool) -> Option<Vec<u8>> {
    let message = parse(raw)?;
    if path.len() > MAX_DEPTH {
        return None;
    }
    let (message, id) = descend(&message, 0, path)?;
    let part = message.part(id)?;
    let bytes = message.raw_message();
    let range = if mime {
        part.offset_header as usize..part.offset_body as usize
    } else {
        part.offset_body as usize..part.offset_end as usize
    };
    bytes.get(range).map(<[u8]>::to_vec)
}

/// Follows `path` from part `id` of `message`, into attached messages where needed.
fn descend<'m>(message: &'m Message<'m>, id: u32, path: &[u32]) -> Option<(&'m Message<'m>, u32)> {
    let Some((&n, rest)) = path.split_first() else { return Some((message, id)) };
    let part = message.part(id)?;
    match &part.body {
        PartType::Multipart(children) => descend(message, *children.get(n.checked_sub(1)? as usize)?, rest),
        PartType::Message(inner) => {
            // An attached message's parts are numbered like its root's.
            match &inner.part(0)?.body {
                PartType::Multipart(children) => descend(inner, *children.get(n.checked_sub(1)? as usize)?, rest),
                _ if n == 1 => descend(inner, 0, rest),
                _ => None,
            }
        }
        // A single-part message has one part: 1.
        _ if n == 1 && rest.is_empty() => Some((message, id)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::ResponseCodec;
    use imap_codec::encode::Encoder;
    use imap_types::fetch::MessageDataItem;
    use imap_types::response::{Data, Response};

    const MULTIPART: &[u8] = b"From: Ana <ana@health.go.ke>\r\nTo: b@x.org, \"C D\" <c@y.org>\r\nSubject: Report\r\nMessage-ID: <1@health.go.ke>\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello\r\nthere\r\n--XX\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--XX--\r\n";

    fn encoded(item: MessageDataItem<'static>) -> String {
        let response =
            Response::Data(Data::Fetch { seq: std::num::NonZeroU32::new(1).unwrap(), items: Vec1::from(item) });
        String::from_utf8(ResponseCodec::default().encode(&response).dump()).unwrap()
    }

    #[test]
    fn envelope_of_a_message() {
        let text = encoded(MessageDataItem::Envelope(envelope(MULTIPART)));
        assert!(text.contains("\"Report\""), "{text}");
        assert!(text.contains("((\"Ana\" NIL \"ana\" \"health.go.ke\"))"), "{text}");
        assert!(text.contains("(NIL NIL \"b\" \"x.org\")(\"C D\" NIL \"c\" \"y.org\")"), "{text}");
        assert!(text.contains("\"<1@health.go.ke>\""), "{text}");
    }

    #[test]
    fn bodystructure_of_a_multipart_message() {
        let text = encoded(MessageDataItem::BodyStructure(body_structure(MULTIPART)));
        assert!(text.contains("(\"TEXT\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 12 1)"), "{text}");
        assert!(text.contains("(\"application\" \"pdf\" (\"name\" \"r.pdf\") NIL NIL \"base64\""), "{text}");
        assert!(text.contains(" \"mixed\")"), "{text}");
    }

    #[test]
    fn deep_nesting_is_cut_off_not_a_crash() {
        let depth = 2_000;
        let mut raw = String::from("Subject: deep\r\n");
        for level in 0..depth {
            raw.push_str(&format!("Content-Type: multipart/mixed; boundary=\"b{level}\"\r\n\r\n--b{level}\r\n"));
        }
        raw.push_str("Content-Type: text/plain\r\n\r\nbottom\r\n");
        for level in (0..depth).rev() {
            raw.push_str(&format!("--b{level}--\r\n"));
        }
        let text = encoded(MessageDataItem::BodyStructure(body_structure(raw.as_bytes())));
        assert!(text.contains("octet-stream"), "the depth limit applies");
        let path = vec![1; depth];
        assert!(part_bytes(raw.as_bytes(), &path, false).is_none());
    }

    #[test]
    fn parts_by_number() {
        assert_eq!(part_bytes(MULTIPART, &[1], false).unwrap(), b"Hello\r\nthere");
        assert!(String::from_utf8(part_bytes(MULTIPART, &[2], true).unwrap()).unwrap().contains("application/pdf"));
        assert!(part_bytes(MULTIPART, &[3], false).is_none());
        let single = b"Subject: x\r\n\r\nbody\r\n";
        assert_eq!(part_bytes(single, &[1], false).unwrap(), b"body\r\n");
    }
}
