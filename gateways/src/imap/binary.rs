//! BINARY (RFC 3516): a part's content with its Content-Transfer-Encoding undone, so a
//! client on a slow mobile link fetches an attachment's bytes instead of base64 that is a
//! third larger. Pure: encoded bytes and the encoding's name in, decoded bytes out.

use base64::Engine as _;

/// The part's encoding is not one we can undo (RFC 3516: `NO [UNKNOWN-CTE]`).
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownEncoding(pub String);

/// `body` with the transfer encoding `encoding` (a Content-Transfer-Encoding value, or
/// none: 7bit) undone.
pub fn decode(body: &[u8], encoding: Option<&str>) -> Result<Vec<u8>, UnknownEncoding> {
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase()).unwrap_or_default();
    match encoding.as_str() {
        "" | "7bit" | "8bit" | "binary" => Ok(body.to_vec()),
        "base64" => {
            let text: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
            // Lenient with missing padding, as senders are; invalid input is the sender's.
            let engine = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
                    .with_decode_allow_trailing_bits(true),
            );
            engine.decode(&text).map_err(|_| UnknownEncoding("base64 that does not decode".into()))
        }
        "quoted-printable" => Ok(quoted_printable(body)),
        other => Err(UnknownEncoding(other.to_string())),
    }
}

/// RFC 2045 6.7: `=XX` is a byte, `=` at a line's end joins it to the next.
fn quoted_printable(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'=' => {
                let rest = &body[i + 1..];
                if rest.starts_with(b"\r\n") {
                    i += 3;
                } else if rest.starts_with(b"\n") {
                    i += 2;
                } else if let Some(byte) =
                    rest.get(..2).and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok())
                {
                    out.push(byte);
                    i += 3;
                } else {
                    // A stray '=' stays (RFC 2045 robustness).
                    out.push(b'=');
                    i += 1;
                }
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_undone() {
        let cases: [(&[u8], Option<&str>, &[u8]); 6] = [
            (b"plain\r\n", None, b"plain\r\n"),
            (b"plain\r\n", Some("8BIT"), b"plain\r\n"),
            (b"SlZC\r\nRVJp\r\nMA==\r\n", Some("base64"), b"JVBERi0"),
            (b"AAEC/w", Some(" Base64 "), &[0, 1, 2, 255]),
            (b"caf=C3=A9 =\r\nau lait=3D", Some("quoted-printable"), "café au lait=".as_bytes()),
            (b"a = b", Some("quoted-printable"), b"a = b"),
        ];
        for (body, encoding, expected) in cases {
            assert_eq!(decode(body, encoding).unwrap(), expected, "{encoding:?}");
        }
        assert_eq!(decode(b"x", Some("x-uuencode")), Err(UnknownEncoding("x-uuencode".into())));
    }
}
