//! Arbitrary bytes as an IMAP client's commands after login, framed and decoded as the
//! server does it and driven into the session (`gateways::imap::session`) over the
//! in-memory `MemService`: the user's INBOX holds real MIME messages (multipart, an
//! attached message, encoded words, groups, a thread) and is selected, so FETCH, SEARCH,
//! SORT, THREAD, STORE, COPY/MOVE, EXPUNGE, APPEND, LIST and the rest run on them. Now
//! and then another client changes the mailbox, so the session's refresh (EXPUNGE,
//! EXISTS, FETCH FLAGS) runs too. Nothing may panic, and what the session sends must be
//! well-formed IMAP that ends each command with its tag.
#![no_main]

use std::sync::Arc;

use gateways::fuzzing::imap_codec::CommandCodec;
use gateways::fuzzing::imap_codec::decode::Decoder as _;
use gateways::fuzzing::imap_types::command::{Command, CommandBody};
use gateways::fuzzing::imap_types::core::Tag;
use gateways::fuzzing::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName};
use gateways::imap::extended::Extension;
use gateways::imap::session::{After, Session};
use gateways::logins::{LoginLimits, LoginThrottle};
use gateways::mail_service::{FlagChange, MailService};
use gateways::mem_service::MemService;
use libfuzzer_sys::fuzz_target;
use ums_fuzz::{Framed, Framer, Limits, MESSAGES, OTHER_USER, PASSWORD, USER};

fuzz_target!(|input: &[u8]| ums_fuzz::on_worker_stack(|| ums_fuzz::block_on(converse(input))));

async fn converse(input: &[u8]) {
    let service = Arc::new(MemService::with_users(&[(USER, PASSWORD), (OTHER_USER, PASSWORD)]));
    for (raw, flags) in MESSAGES {
        service.put_message(USER, "INBOX", raw, flags);
    }
    service.put_message(USER, "Archive", MESSAGES[0].0, &[]);
    service.put_message(USER, "Projects/2026", MESSAGES[1].0, &["\\Seen"]);
    let logins = LoginThrottle::new(LoginLimits { failure_delay_ms: 0, ..LoginLimits::default() });
    let mut session = Session::new(Arc::clone(&service) as _, logins, "192.0.2.143".parse().unwrap(), true, false, 3);
    session.tls_started();
    let (out, _) = session.login(&Tag::try_from("a").unwrap(), USER, PASSWORD).await;
    assert!(out.starts_with(b"a OK"), "{}", String::from_utf8_lossy(&out));
    let (_, select) = CommandCodec::default().decode(b"s SELECT INBOX\r\n").expect("SELECT parses");
    session.handle(select, Extension::None).await;

    let mut framer = Framer::new(input, &[], Limits::SCALED);
    let mut idling = false;
    let mut commands = 0;
    while let Some(framed) = framer.next(session.is_authenticated()) {
        let Framed::Complete = framed else { continue };
        if std::mem::take(&mut idling) {
            // Whatever ends IDLE (DONE or not) is the server's to answer.
            continue;
        }
        let Ok((command, extension)) = framer.command() else { continue };
        if matches!(command.body, CommandBody::Authenticate { .. }) {
            // The server's (and refused after login).
            continue;
        }
        commands += 1;
        elsewhere(&service, commands).await;
        let tag = command.tag.as_ref().to_string();
        let partial_binary = asks_partial_binary(&command);
        let (mut out, after) = session.handle(command, extension).await;
        let mut alive = after != After::Close;
        if after == After::Idle {
            // One poll of the wait; the mailbox gone ends the connection.
            alive = session.idle_tick(&mut out).await;
            idling = true;
        } else {
            let done = [" OK", " NO", " BAD"].iter().any(|status| {
                let line = format!("\r\n{tag}{status}");
                out.starts_with(&line.as_bytes()[2..]) || out.windows(line.len()).any(|w| w == line.as_bytes())
            });
            assert!(done, "no tagged answer for {tag}: {}", String::from_utf8_lossy(&out));
        }
        ums_fuzz::assert_well_formed_responses(&out, partial_binary);
        let _ = session.take_offences();
        if !alive {
            return;
        }
    }
}

/// What another client of the same user does before the session's `n`th command: new
/// mail, flags changed, messages expunged, so the session must report it.
async fn elsewhere(service: &MemService, n: u32) {
    match n % 5 {
        2 => {
            service.put_message(USER, "INBOX", MESSAGES[(n as usize / 5) % MESSAGES.len()].0, &[]);
        }
        4 => {
            let uids = service.uids(USER, "INBOX");
            let some: Vec<u32> = uids.iter().copied().step_by(2).collect();
            let change = if n % 10 == 4 { FlagChange::Add } else { FlagChange::Remove };
            let flags = ["\\Deleted".to_string(), "$Elsewhere".to_string()];
            service.store_flags(USER, "INBOX", &some, change, &flags, None).await.expect("flags stored");
            if n % 15 == 4 {
                service.expunge(USER, "INBOX", None).await.expect("expunged");
            }
        }
        _ => {}
    }
}

/// A FETCH with `BINARY[..]<origin.length>`, whose responses the session splices.
fn asks_partial_binary(command: &Command<'_>) -> bool {
    let CommandBody::Fetch { macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(names), .. } =
        &command.body
    else {
        return false;
    };
    names.iter().any(|name| matches!(name, MessageDataItemName::Binary { partial: Some(_), .. }))
}
