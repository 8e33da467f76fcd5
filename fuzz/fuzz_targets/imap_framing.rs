//! Arbitrary bytes as what an IMAP client sends, framed and decoded as the server does it
//! (`gateways::imap::server`): imap-codec's `Fragmentizer` with the literal limits, the
//! `imap::extended` split of ESEARCH and LIST-EXTENDED, imap-codec's command decoder, and
//! AUTHENTICATE's and IDLE's continuations after the commands that start them. Nothing
//! may panic, and the commands must not depend on how TCP cut the bytes.
#![no_main]

use gateways::fuzzing::imap_codec::{AuthenticateDataCodec, IdleDoneCodec};
use gateways::fuzzing::imap_types::auth::AuthMechanism;
use gateways::fuzzing::imap_types::command::CommandBody;
use libfuzzer_sys::fuzz_target;
use ums_fuzz::{Framed, Framer, Limits};

/// Read sizes, cycled: lines, CRLFs and literal announcements cut anywhere.
const ODD_PIECES: &[u8] = &[1, 2, 5, 13, 64, 200, 3];

fuzz_target!(|input: &[u8]| {
    let whole = frames(input, &[], true);
    let pieces = frames(input, ODD_PIECES, true);
    assert_eq!(whole, pieces, "the commands depend on how the input was cut");
    // Before login the server's room is small and checked at every read.
    frames(input, ODD_PIECES, false);
});

/// What the server makes of each message, described for comparison.
fn frames(input: &[u8], chunks: &[u8], authenticated: bool) -> Vec<String> {
    let mut framer = Framer::new(input, chunks, Limits::SCALED);
    let mut seen = Vec::new();
    // What the next message is read as: the server's `Reading`.
    let mut continuation: Option<&str> = None;
    while let Some(framed) = framer.next(authenticated) {
        let seen_now = match (framed, continuation.take()) {
            (Framed::TooBig { tag }, _) => format!("too big: {tag}"),
            (Framed::Complete, Some("AUTHENTICATE")) => {
                format!("{:?}", framer.fragmentizer().decode_message(&AuthenticateDataCodec::default()).ok())
            }
            (Framed::Complete, Some(_)) => {
                format!("{:?}", framer.fragmentizer().decode_message(&IdleDoneCodec::default()).ok())
            }
            (Framed::Complete, None) => match framer.command() {
                Ok((command, extension)) => {
                    continuation = match &command.body {
                        CommandBody::Authenticate { mechanism: AuthMechanism::Plain, initial_response: None } => {
                            Some("AUTHENTICATE")
                        }
                        CommandBody::Idle => Some("IDLE"),
                        _ => None,
                    };
                    format!("{command:?} {extension:?}")
                }
                Err(tag) => format!("bad: {tag:?}"),
            },
        };
        seen.push(seen_now);
    }
    seen
}
