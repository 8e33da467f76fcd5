//! Table tests of the IMAP session, a command family each: wire text in (parsed by
//! imap-codec as the server would), the exact response lines out, over the in-memory
//! [`MemService`].

use std::sync::Arc;

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;

use super::{After, Session};
use crate::logins::{LoginLimits, LoginThrottle};
use crate::mem_service::MemService;

const ANA: &str = "ana@health.go.ke";
const PASSWORD: &str = "correct horse";

fn mail(subject: &str) -> String {
    format!("From: Ben <ben@example.org>\r\nTo: {ANA}\r\nSubject: {subject}\r\n\r\nHello Ana.\r\n")
}

/// A client session over a fresh in-memory service.
struct Client {
    session: Session,
    service: Arc<MemService>,
}

impl Client {
    /// Not logged in; `tls` says whether the connection is encrypted.
    fn connected(tls: bool) -> Self {
        Self::connected_to(Arc::new(MemService::with_users(&[(ANA, PASSWORD)])), tls)
    }

    fn connected_to(service: Arc<MemService>, tls: bool) -> Self {
        let logins = LoginThrottle::new(LoginLimits { failure_delay_ms: 0, ..LoginLimits::default() });
        let mut session = Session::new(Arc::clone(&service) as _, logins, "192.0.2.1".parse().unwrap(), true, false, 3);
        if tls {
            session.tls_started();
        }
        Self { session, service }
    }

    /// A second client of the same service, logged in as Ana.
    async fn another(&self) -> Self {
        let mut other = Self::connected_to(Arc::clone(&self.service), true);
        other.ok(&format!("o LOGIN {ANA} \"{PASSWORD}\"")).await;
        other
    }

    async fn logged_in() -> Self {
        let mut client = Self::connected(true);
        client.ok(&format!("a LOGIN {ANA} \"{PASSWORD}\"")).await;
        client
    }

    /// Ana's INBOX holds `subjects`, and is selected.
    async fn with_inbox(subjects: &[&str]) -> Self {
        let client = Self::logged_in().await;
        for subject in subjects {
            client.service.put_message(ANA, "INBOX", &mail(subject), &[]);
        }
        let mut client = client;
        client.ok("s SELECT INBOX").await;
        client
    }

    /// Sends one command line (LITERAL+ literals inline) and returns the responses.
    async fn send(&mut self, line: &str) -> (String, After) {
        let wire = format!("{line}\r\n");
        // As the server does: the forms imap-codec does not parse yet are split off first.
        let (wire, extension) = crate::imap::extended::split(wire.as_bytes());
        let (rest, command) = CommandCodec::default().decode(&wire).unwrap_or_else(|e| panic!("{line}: {e:?}"));
        assert!(rest.is_empty(), "{line}: left over {rest:?}");
        let (out, after) = self.session.handle(command, extension).await;
        (String::from_utf8(out).expect("UTF-8 responses"), after)
    }

    /// Sends a command that must end in a tagged OK; returns all responses.
    async fn ok(&mut self, line: &str) -> String {
        let (out, _) = self.send(line).await;
        let tag = line.split(' ').next().unwrap();
        assert!(out.contains(&format!("{tag} OK")), "{line}\n{out}");
        out
    }
}

/// Each expected line must appear in `out`, in this order.
fn assert_lines(out: &str, expected: &[&str]) {
    let lines: Vec<&str> = out.split("\r\n").collect();
    let mut from = 0;
    for want in expected {
        match lines[from..].iter().position(|l| l == want) {
            Some(at) => from += at + 1,
            None => panic!("missing (in order) {want:?} in\n{out}"),
        }
    }
}

#[tokio::test]
async fn auth_login_needs_tls_and_the_right_password() {
    let mut plain = Client::connected(false);
    let (out, _) = plain.send("a CAPABILITY").await;
    assert!(out.contains("LOGINDISABLED") && out.contains("STARTTLS") && !out.contains("AUTH=PLAIN"), "{out}");
    let (out, _) = plain.send(&format!("b LOGIN {ANA} \"{PASSWORD}\"")).await;
    assert_lines(&out, &["b NO [PRIVACYREQUIRED] Use STARTTLS first"]);
    let (out, after) = plain.send("c STARTTLS").await;
    assert_eq!((out.as_str(), after), ("c OK Begin TLS negotiation now\r\n", After::StartTls));

    let mut client = Client::connected(true);
    let (out, _) = client.send("a CAPABILITY").await;
    assert!(out.contains("AUTH=PLAIN") && !out.contains("STARTTLS") && !out.contains("LOGINDISABLED"), "{out}");
    let (out, _) = client.send("b SELECT INBOX").await;
    assert_lines(&out, &["b BAD Log in first"]);
    for (tag, after) in [("c", After::Continue), ("d", After::Continue)] {
        let (out, got) = client.send(&format!("{tag} LOGIN {ANA} wrong")).await;
        assert_lines(&out, &[&format!("{tag} NO [AUTHENTICATIONFAILED] Invalid credentials")]);
        assert_eq!(got, after);
    }
    assert_eq!(client.session.take_offences(), 2, "failed logins count against the client's address");
    // The third failure (max_auth_failures = 3) ends the connection.
    let (out, after) = client.send(&format!("e LOGIN {ANA} wrong")).await;
    assert!(out.ends_with("* BYE Too many failed logins\r\n"), "{out}");
    assert_eq!(after, After::Close);

    let mut client = Client::connected(true);
    let out = client.ok(&format!("a LOGIN {} \"{PASSWORD}\"", ANA.to_uppercase())).await;
    assert!(out.starts_with("a OK [CAPABILITY IMAP4REV1 IDLE"), "{out}");
    let (out, _) = client.send(&format!("b LOGIN {ANA} \"{PASSWORD}\"")).await;
    assert_lines(&out, &["b BAD Already logged in"]);
    let out = client.ok("c ENABLE CONDSTORE").await;
    assert_lines(&out, &["* ENABLED CONDSTORE", "c OK Enabled"]);
    let (out, after) = client.send("d LOGOUT").await;
    assert_eq!((out.as_str(), after), ("* BYE Logging out\r\nd OK Logged out\r\n", After::Close));
}

#[tokio::test]
async fn select_reports_the_mailbox_and_refresh_reports_changes() {
    let mut client = Client::logged_in().await;
    client.service.put_message(ANA, "INBOX", &mail("one"), &["\\Seen"]);
    client.service.put_message(ANA, "INBOX", &mail("two"), &[]);
    let out = client.ok("a SELECT INBOX").await;
    assert_lines(
        &out,
        &[
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
            "* 2 EXISTS",
            "* OK [UNSEEN 2] First unseen",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted",
            "* OK [UIDNEXT 3] Predicted next UID",
            "* OK [UIDVALIDITY 1] UIDs valid",
            "a OK [READ-WRITE] SELECT completed",
        ],
    );
    let out = client.ok("b EXAMINE INBOX").await;
    assert_lines(&out, &["* OK [PERMANENTFLAGS ()] Flags permitted", "b OK [READ-ONLY] EXAMINE completed"]);
    let (out, _) = client.send("c STORE 1 +FLAGS (\\Flagged)").await;
    assert_lines(&out, &["c NO [READ-ONLY] Mailbox is read-only (EXAMINE)"]);
    let (out, _) = client.send("d SELECT Nowhere").await;
    assert_lines(&out, &["d NO No such mailbox"]);
    let (out, _) = client.send("e FETCH 1 FLAGS").await;
    assert_lines(&out, &["e BAD Select a mailbox first"]);

    client.ok("f SELECT INBOX").await;
    // Another client delivers one message and expunges the first.
    client.service.put_message(ANA, "INBOX", &mail("three"), &[]);
    let mut other = client.another().await;
    other.ok("o2 SELECT INBOX").await;
    other.ok("o3 STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    other.ok("o4 EXPUNGE").await;
    let out = client.ok("g NOOP").await;
    assert_lines(&out, &["* 1 EXPUNGE", "* 2 EXISTS", "g OK Done"]);
    let out = client.ok("h UID FETCH 1:* UID").await;
    assert_lines(&out, &["* 1 FETCH (UID 2)", "* 2 FETCH (UID 3)"]);
    let out = client.ok("i UNSELECT").await;
    assert_lines(&out, &["i OK Unselected"]);
    let (out, after) = client.send("j IDLE").await;
    assert_eq!((out.as_str(), after), ("j BAD Select a mailbox first\r\n", After::Continue));
}

#[tokio::test]
async fn mailboxes_are_created_listed_renamed_and_deleted() {
    let mut client = Client::logged_in().await;
    // A missing superior is created with its child (RFC 3501 6.3.3).
    client.ok("a CREATE Projects/Budget").await;
    let (out, _) = client.send("b CREATE Projects/").await;
    assert_lines(&out, &["b NO [ALREADYEXISTS] Mailbox exists"]);
    let (out, _) = client.send("c CREATE Projects").await;
    assert_lines(&out, &["c NO [ALREADYEXISTS] Mailbox exists"]);
    let out = client.ok("d LIST \"\" *").await;
    assert_lines(
        &out,
        &[
            "* LIST (\\HasNoChildren \\Archive) \"/\" Archive",
            "* LIST (\\HasNoChildren \\Drafts) \"/\" Drafts",
            "* LIST (\\HasNoChildren) \"/\" INBOX",
            "* LIST (\\HasNoChildren \\Junk) \"/\" Junk",
            "* LIST (\\HasChildren) \"/\" Projects",
            "* LIST (\\HasNoChildren) \"/\" Projects/Budget",
            "* LIST (\\HasNoChildren \\Sent) \"/\" Sent",
            "* LIST (\\HasNoChildren \\Trash) \"/\" Trash",
            "d OK Listed",
        ],
    );
    let out = client.ok("e LIST \"\" \"\"").await;
    assert_lines(&out, &["* LIST (\\Noselect) \"/\" \"\"", "e OK Listed"]);
    let out = client.ok("f LIST Projects %").await;
    assert_lines(&out, &["* LIST (\\HasNoChildren) \"/\" Projects/Budget", "f OK Listed"]);
    // A subscribed child stands in for its unsubscribed parent as \Noselect (RFC 3501 6.3.9).
    client.ok("g1 UNSUBSCRIBE Projects").await;
    let out = client.ok("g2 LSUB \"\" %").await;
    assert_lines(&out, &["* LSUB (\\Noselect \\HasChildren) \"/\" Projects", "g2 OK Listed"]);
    client.ok("g UNSUBSCRIBE Projects/Budget").await;
    let out = client.ok("h LSUB \"\" *").await;
    assert!(!out.contains("Projects"), "{out}");
    client.ok("i RENAME Projects Done").await;
    let out = client.ok("j LIST \"\" *").await;
    assert!(out.contains("\"/\" Done/Budget") && !out.contains("Projects"), "{out}");
    client.service.put_message(ANA, "Done", &mail("old"), &[]);
    let out = client.ok("k STATUS Done (MESSAGES UIDNEXT UNSEEN RECENT)").await;
    assert_lines(&out, &["* STATUS Done (MESSAGES 1 UIDNEXT 2 UNSEEN 1 RECENT 1)", "k OK STATUS completed"]);
    let (out, _) = client.send("l STATUS Nowhere (MESSAGES)").await;
    assert_lines(&out, &["l NO No such mailbox"]);
    let (out, _) = client.send("m DELETE INBOX").await;
    assert_lines(&out, &["m NO INBOX cannot be deleted"]);
    client.ok("n DELETE Done/Budget").await;
    let (out, _) = client.send("o DELETE Done/Budget").await;
    assert!(out.starts_with("o NO"), "{out}");
    let out = client.ok("p NAMESPACE").await;
    assert_lines(&out, &["* NAMESPACE ((\"\" \"/\")) NIL NIL", "p OK Namespaces listed"]);
}

#[tokio::test]
async fn append_answers_with_its_uid_and_asks_to_create_a_missing_mailbox() {
    let mut client = Client::with_inbox(&["one"]).await;
    let message = mail("appended");
    let out = client.ok(&format!("a APPEND INBOX (\\Seen) {{{}+}}\r\n{message}", message.len())).await;
    // The selected mailbox learns of it before the tagged answer.
    assert_lines(&out, &["* 2 EXISTS", "a OK [APPENDUID 1 2] Appended"]);
    let (out, _) = client.send(&format!("b APPEND Nowhere {{{}+}}\r\n{message}", message.len())).await;
    assert_lines(&out, &["b NO [TRYCREATE] No such mailbox"]);
    let out = client.ok("c FETCH 2 FLAGS").await;
    assert_lines(&out, &["* 2 FETCH (FLAGS (\\Seen \\Recent))"]);
}

#[tokio::test]
async fn fetch_gives_items_sections_and_sets_seen_unless_peeking() {
    let mut client = Client::with_inbox(&["one", "two"]).await;
    let out = client.ok("a FETCH 1:2 (UID FLAGS RFC822.SIZE)").await;
    let size = mail("one").len();
    assert_lines(
        &out,
        &[
            &format!("* 1 FETCH (UID 1 FLAGS (\\Recent) RFC822.SIZE {size})"),
            &format!("* 2 FETCH (UID 2 FLAGS (\\Recent) RFC822.SIZE {size})"),
            "a OK FETCH completed",
        ],
    );
    let out = client.ok("b FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]").await;
    assert_lines(&out, &["* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {16}", "Subject: one", ")"]);
    let out = client.ok("c FETCH 1 FLAGS").await;
    assert_lines(&out, &["* 1 FETCH (FLAGS (\\Recent))"]);
    let out = client.ok("d FETCH 1 BODY[TEXT]").await;
    assert_lines(&out, &["* 1 FETCH (BODY[TEXT] {12}", "Hello Ana.", " FLAGS (\\Seen \\Recent))"]);
    let out = client.ok("e FETCH 2 BODY[]<0.4>").await;
    assert_lines(&out, &["* 2 FETCH (BODY[]<0> {4}", "From FLAGS (\\Seen \\Recent))"]);
    let out = client.ok("f UID FETCH 2 (FLAGS)").await;
    assert_lines(&out, &["* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent))"]);
    let out = client.ok("g FETCH 1 FAST").await;
    assert!(
        out.starts_with("* 1 FETCH (FLAGS (\\Seen \\Recent) INTERNALDATE \"04-Mar-2026 10:00:00 +0000\" RFC822.SIZE"),
        "{out}"
    );
    let (out, _) = client.send("h FETCH 3 FLAGS").await;
    assert_lines(&out, &["h BAD Invalid message sequence number"]);
    let out = client.ok("i UID FETCH 3:* FLAGS").await;
    // UID ranges name only what exists: "3:*" is "2" when 2 is the highest UID.
    assert_lines(&out, &["* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent))", "i OK FETCH completed"]);
}

#[tokio::test]
async fn store_changes_flags_silently_or_not_and_conditionally() {
    let mut client = Client::with_inbox(&["one", "two"]).await;
    let out = client.ok("a STORE 1 +FLAGS (\\Flagged)").await;
    assert_lines(&out, &["* 1 FETCH (FLAGS (\\Flagged \\Recent))", "a OK STORE completed"]);
    let out = client.ok("b STORE 1:2 +FLAGS.SILENT (\\Answered)").await;
    assert_eq!(out, "b OK STORE completed\r\n");
    let out = client.ok("c UID STORE 1 -FLAGS (\\Flagged)").await;
    assert_lines(&out, &["* 1 FETCH (FLAGS (\\Answered \\Recent) UID 1)"]);
    let out = client.ok("d STORE 2 FLAGS ($Label1)").await;
    assert_lines(&out, &["* 2 FETCH (FLAGS ($Label1 \\Recent))"]);
    // Message 1 changed after modseq 1: a conditional STORE leaves it alone.
    let out = client.ok("e STORE 1:2 (UNCHANGEDSINCE 1) +FLAGS (\\Seen)").await;
    assert_lines(&out, &["e OK [MODIFIED 1:2] Conditional STORE failed for some messages"]);
}

#[tokio::test]
async fn search_answers_with_sequence_numbers_or_uids() {
    let mut client = Client::with_inbox(&["budget", "lunch", "budget again"]).await;
    client.ok("a STORE 2 +FLAGS (\\Seen)").await;
    let cases = [
        ("b SEARCH UNSEEN", "* SEARCH 1 3"),
        ("c SEARCH SUBJECT budget", "* SEARCH 1 3"),
        ("d UID SEARCH SEEN", "* SEARCH 2"),
        ("e SEARCH NOT SUBJECT budget", "* SEARCH 2"),
        ("f SEARCH 2:3 UNSEEN", "* SEARCH 3"),
        ("g SEARCH FLAGGED", "* SEARCH"),
    ];
    for (command, expected) in cases {
        let out = client.ok(command).await;
        assert_lines(&out, &[expected]);
    }
}

#[tokio::test]
async fn copy_and_move_answer_with_copyuid_and_move_expunges() {
    let mut client = Client::with_inbox(&["one", "two", "three"]).await;
    let out = client.ok("b COPY 1 Archive").await;
    assert_lines(&out, &["b OK [COPYUID 6 1 1] COPY completed"]);
    let out = client.ok("c MOVE 2:3 Archive").await;
    assert_lines(&out, &["* OK [COPYUID 6 2:3 2:3] Moved", "* 2 EXPUNGE", "* 2 EXPUNGE", "c OK MOVE completed"]);
    assert_eq!(client.service.uids(ANA, "Archive"), [1, 2, 3]);
    let (out, _) = client.send("d COPY 1 Nowhere").await;
    assert_lines(&out, &["d NO [TRYCREATE] No such mailbox"]);
    let (out, _) = client.send("e MOVE 1 INBOX").await;
    assert_lines(&out, &["e NO cannot move messages into the mailbox they are in"]);
}

#[tokio::test]
async fn expunge_removes_deleted_messages_and_close_does_it_silently() {
    let mut client = Client::with_inbox(&["one", "two", "three", "four"]).await;
    client.ok("a STORE 1,3 +FLAGS.SILENT (\\Deleted)").await;
    let out = client.ok("b UID EXPUNGE 3").await;
    assert_lines(&out, &["* 3 EXPUNGE", "b OK Expunged"]);
    let out = client.ok("c EXPUNGE").await;
    assert_lines(&out, &["* 1 EXPUNGE", "c OK Expunged"]);
    assert_eq!(client.service.uids(ANA, "INBOX"), [2, 4]);
    client.ok("d STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    let out = client.ok("e CLOSE").await;
    assert_eq!(out, "e OK Closed\r\n");
    assert_eq!(client.service.uids(ANA, "INBOX"), [4]);
    client.ok("f EXAMINE INBOX").await;
    let (out, _) = client.send("g EXPUNGE").await;
    assert_lines(&out, &["g NO [READ-ONLY] Mailbox is read-only (EXAMINE)"]);
}

#[tokio::test]
async fn recent_goes_to_the_first_session_to_see_new_mail() {
    let mut first = Client::logged_in().await;
    first.service.put_message(ANA, "INBOX", &mail("one"), &[]);
    first.service.put_message(ANA, "INBOX", &mail("two"), &["\\Seen"]);
    let out = first.ok("a SELECT INBOX").await;
    assert_lines(&out, &["* 2 EXISTS", "* 2 RECENT"]);
    let mut second = first.another().await;
    let out = second.ok("b SELECT INBOX").await;
    assert_lines(&out, &["* 2 EXISTS", "* 0 RECENT"]);
    let out = second.ok("c STATUS INBOX (MESSAGES RECENT)").await;
    assert_lines(&out, &["* STATUS INBOX (MESSAGES 2 RECENT 0)"]);

    // New mail while both have INBOX selected: the first to look claims it.
    first.service.put_message(ANA, "INBOX", &mail("three"), &[]);
    let out = second.ok("d NOOP").await;
    assert_lines(&out, &["* 3 EXISTS", "* 1 RECENT", "d OK Done"]);
    let out = first.ok("e NOOP").await;
    assert_lines(&out, &["* 3 EXISTS", "e OK Done"]);
    assert!(!out.contains("RECENT"), "{out}");
    for (command, expected) in
        [("f SEARCH RECENT", "* SEARCH 3"), ("g SEARCH NEW", "* SEARCH 3"), ("h SEARCH OLD", "* SEARCH 1 2")]
    {
        assert_lines(&second.ok(command).await, &[expected]);
    }
    let out = first.ok("i FETCH 1:3 FLAGS").await;
    assert_lines(
        &out,
        &["* 1 FETCH (FLAGS (\\Recent))", "* 2 FETCH (FLAGS (\\Seen \\Recent))", "* 3 FETCH (FLAGS ())"],
    );

    // EXAMINE sees what nobody has claimed, and claims nothing.
    let mut third = first.another().await;
    first.service.put_message(ANA, "INBOX", &mail("four"), &[]);
    let out = third.ok("j EXAMINE INBOX").await;
    assert_lines(&out, &["* 4 EXISTS", "* 1 RECENT"]);
    let out = first.ok("k NOOP").await;
    assert_lines(&out, &["* 4 EXISTS", "* 3 RECENT"]);

    // APPEND and COPY into the selected mailbox: EXISTS and RECENT before the tagged OK.
    let message = mail("appended");
    let out = first.ok(&format!("l APPEND INBOX {{{}+}}\r\n{message}", message.len())).await;
    assert_lines(&out, &["* 5 EXISTS", "* 4 RECENT", "l OK [APPENDUID 1 5] Appended"]);
    let out = first.ok("m COPY 1 INBOX").await;
    assert_lines(&out, &["m OK [COPYUID 1 1 6] COPY completed"]);
    let out = first.ok("n NOOP").await;
    assert_lines(&out, &["* 6 EXISTS", "* 5 RECENT"]);
}

#[tokio::test]
async fn new_keywords_are_announced_before_a_fetch_shows_them() {
    let mut client = Client::with_inbox(&["one"]).await;
    let out = client.ok("a STORE 1 +FLAGS ($Forwarded)").await;
    assert_lines(
        &out,
        &[
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded)",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded \\*)] Flags permitted",
            "* 1 FETCH (FLAGS ($Forwarded \\Recent))",
            "a OK STORE completed",
        ],
    );
    let out = client.ok("b STORE 1 FLAGS ($forwarded)").await;
    assert!(!out.contains("* FLAGS"), "a known keyword, in any case, is not announced again: {out}");
    // A keyword another client sets is announced before the refresh shows it.
    let mut other = client.another().await;
    other.ok("o1 SELECT INBOX").await;
    other.ok("o2 STORE 1 +FLAGS.SILENT ($Junk)").await;
    let out = client.ok("c NOOP").await;
    assert_lines(
        &out,
        &[
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded $Junk)",
            "* 1 FETCH (FLAGS ($forwarded $Junk \\Recent) UID 1)",
        ],
    );
    // SELECT lists the keywords in use.
    let out = client.ok("d EXAMINE INBOX").await;
    assert_lines(&out, &["* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $forwarded $Junk)"]);
    let message = mail("labelled");
    let out = client.ok(&format!("e APPEND Archive ($Label1) {{{}+}}\r\n{message}", message.len())).await;
    assert!(!out.contains("* FLAGS"), "APPEND to another mailbox announces nothing here: {out}");
}

#[tokio::test]
async fn id_names_the_server() {
    let mut client = Client::connected(true);
    let out = client.ok("a ID (\"name\" \"Thunderbird\" \"version\" \"128.0\")").await;
    assert_lines(
        &out,
        &[
            &format!("* ID (\"name\" \"UMS\" \"version\" \"{}\" \"vendor\" \"UMS\")", env!("CARGO_PKG_VERSION")),
            "a OK ID completed",
        ],
    );
    let out = client.ok("b ID NIL").await;
    assert!(out.starts_with("* ID ("), "{out}");
    let out = client.ok("c CAPABILITY").await;
    assert!(out.contains(" ID ") && out.contains(" SPECIAL-USE"), "{out}");
}

#[tokio::test]
async fn fetch_macros_name_their_items() {
    let mut client = Client::with_inbox(&["one"]).await;
    let size = mail("one").len();
    let out = client.ok("a FETCH 1 FAST").await;
    assert!(
        out.starts_with("* 1 FETCH (FLAGS (\\Recent) INTERNALDATE \"04-Mar-2026 10:00:00 +0000\" RFC822.SIZE"),
        "{out}"
    );
    assert!(out.contains(&format!("RFC822.SIZE {size})")), "FAST ends at the size: {out}");
    let out = client.ok("b FETCH 1 ALL").await;
    assert!(out.contains(" ENVELOPE (") && !out.contains(" BODY ("), "{out}");
    let out = client.ok("c FETCH 1 FULL").await;
    assert!(out.contains(" ENVELOPE (") && out.contains(" BODY (\"TEXT\" \"plain\""), "{out}");
}

#[tokio::test]
async fn fetch_reaches_into_attached_messages_and_nested_multiparts() {
    let client = Client::logged_in().await;
    let nested = String::from_utf8(crate::imap::structure::tests::NESTED.to_vec()).unwrap();
    client.service.put_message(ANA, "INBOX", &nested, &["\\Seen"]);
    let mut client = client;
    client.ok("s EXAMINE INBOX").await;
    let cases = [
        ("a FETCH 1 BODY[1.1]", "* 1 FETCH (BODY[1.1] {11}\r\ninner plain)"),
        ("b FETCH 1 BODY[1.2]", "* 1 FETCH (BODY[1.2] {17}\r\n<p>inner html</p>)"),
        ("c FETCH 1 BODY[1.TEXT]<0.7>", "* 1 FETCH (BODY[1.TEXT]<0> {7}\r\n--B\r\nCo)"),
        (
            "d FETCH 1 BODY[1.HEADER.FIELDS (SUBJECT)]",
            "* 1 FETCH (BODY[1.HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: inner\r\n\r\n)",
        ),
        (
            "e FETCH 1 BODY[1.HEADER.FIELDS.NOT (FROM SUBJECT CONTENT-TYPE)]",
            "* 1 FETCH (BODY[1.HEADER.FIELDS.NOT (FROM SUBJECT CONTENT-TYPE)] {14}\r\nX-Inner: 1\r\n\r\n)",
        ),
        ("f FETCH 1 BODY[2.1]", "* 1 FETCH (BODY[2.1] {14}\r\n<p>related</p>)"),
        (
            "g FETCH 1 BODY[2.1.MIME]",
            "* 1 FETCH (BODY[2.1.MIME] {42}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n)",
        ),
        ("h FETCH 1 BODY[2.2]", "* 1 FETCH (BODY[2.2] {3}\r\nPNG)"),
        ("i FETCH 1 BODY[3]", "* 1 FETCH (BODY[3] {0}\r\n)"),
    ];
    for (command, expected) in cases {
        let out = client.ok(command).await;
        assert!(out.starts_with(expected), "{command}:\n{out}");
    }
    let out = client.ok("j FETCH 1 BODY[1.HEADER]").await;
    assert!(
        out.starts_with("* 1 FETCH (BODY[1.HEADER] {") && out.contains("\r\nSubject: inner\r\nX-Inner: 1\r\n"),
        "{out}"
    );
}

#[tokio::test]
async fn quota_is_reported_and_enforced_at_append_and_copy() {
    let mut client = Client::with_inbox(&["one"]).await;
    let size = mail("one").len() as u64;
    // Room for two and a half messages; usage and limit are reported in KiB.
    let quota = 2 * size + size / 2;
    client.service.set_quota(quota);
    let out = client.ok("a GETQUOTAROOT INBOX").await;
    let storage = format!("* QUOTA \"\" (STORAGE 1 {})", quota / 1024);
    assert_lines(&out, &["* QUOTAROOT INBOX \"\"", &storage, "a OK GETQUOTAROOT completed"]);
    let out = client.ok("b GETQUOTA \"\"").await;
    assert_lines(&out, &[&storage]);
    let (out, _) = client.send("c GETQUOTA other").await;
    assert!(out.starts_with("c NO"), "{out}");
    let (out, _) = client.send("d SETQUOTA \"\" (STORAGE 1)").await;
    assert!(out.starts_with("d NO Quotas are set by the operator"), "{out}");
    client.ok("e COPY 1 Archive").await;
    let (out, _) = client.send("f COPY 1 Archive").await;
    assert!(out.starts_with("f NO [OVERQUOTA]"), "a copy that does not fit: {out}");
    let out = client.ok("g MOVE 1 Archive").await;
    assert!(out.contains("g OK"), "a move takes no more room: {out}");
    let big = "x".repeat(2 * size as usize);
    let (out, _) = client.send(&format!("h APPEND INBOX {{{}+}}\r\n{big}", big.len())).await;
    assert!(out.starts_with("h NO [OVERQUOTA]"), "{out}");
    let out = client.ok("i CAPABILITY").await;
    assert!(out.contains(" QUOTA ") && out.contains(" QUOTA=RES-STORAGE"), "{out}");
    // RFC 9208 4.2: what an EXPUNGE would give back.
    client.ok("j SELECT Archive").await;
    client.ok("j2 STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    let out = client.ok("k STATUS Archive (DELETED DELETED-STORAGE)").await;
    assert_lines(&out, &["* STATUS Archive (DELETED 1 DELETED-STORAGE 1)"]);
}

#[tokio::test]
async fn qresync_resynchronises_with_vanished_and_changed_flags() {
    let mut client = Client::with_inbox(&["one", "two", "three", "four"]).await;
    let (out, _) = client.send("a SELECT INBOX (QRESYNC (1 1))").await;
    assert_lines(&out, &["a BAD QRESYNC parameters need ENABLE QRESYNC first"]);
    // The client's cache: UIDs 1-4 at modseq 4. Another client then changes things.
    let mut other = client.another().await;
    other.ok("o1 SELECT INBOX").await;
    other.ok("o2 STORE 2 +FLAGS.SILENT (\\Seen)").await;
    other.ok("o3 STORE 1,3 +FLAGS.SILENT (\\Deleted)").await;
    other.ok("o4 EXPUNGE").await;
    client.ok("b UNSELECT").await;
    let out = client.ok("c ENABLE QRESYNC").await;
    assert_lines(&out, &["* ENABLED QRESYNC"]);
    let out = client.ok("d SELECT INBOX (QRESYNC (1 4 1:4))").await;
    assert_lines(
        &out,
        &[
            "* VANISHED (EARLIER) 1,3",
            "* 1 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (5))",
            "d OK [READ-WRITE] SELECT completed",
        ],
    );
    assert!(!out.contains("UID 4"), "unchanged messages are not sent again: {out}");
    // Once QRESYNC is on, expunges are VANISHED by UID.
    client.ok("e UID STORE 2 +FLAGS.SILENT (\\Deleted)").await;
    let out = client.ok("f EXPUNGE").await;
    assert_lines(&out, &["* VANISHED 2", "f OK Expunged"]);
    let out = client.ok("g UID FETCH 1:4 (FLAGS) (CHANGEDSINCE 1 VANISHED)").await;
    assert_lines(&out, &["* VANISHED (EARLIER) 1:3", "* 1 FETCH (UID 4 FLAGS () MODSEQ (4))"]);
    let (out, _) = client.send("h FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)").await;
    assert!(out.starts_with("h BAD"), "VANISHED only with UID FETCH: {out}");
    // A new SELECT says where the old mailbox's responses end.
    let out = client.ok("i SELECT Archive").await;
    assert!(out.starts_with("* OK [CLOSED]"), "{out}");
    // A stale UIDVALIDITY gets the plain SELECT answer.
    let out = client.ok("j SELECT INBOX (QRESYNC (99 1))").await;
    assert!(!out.contains("VANISHED"), "{out}");
}

#[tokio::test]
async fn binary_fetches_parts_with_their_encoding_undone() {
    let client = Client::logged_in().await;
    let message = "From: a@x.org\r\nSubject: scan\r\nContent-Type: multipart/mixed; boundary=\"Z\"\r\n\r\n\
                   --Z\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n\
                   --Z\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQ=\r\n\
                   --Z\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n\
                   --Z\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n\
                   --Z--\r\n";
    client.service.put_message(ANA, "INBOX", message, &["\\Seen"]);
    let mut client = client;
    client.ok("s SELECT INBOX").await;
    let cases = [
        ("a FETCH 1 BINARY.PEEK[1]", "* 1 FETCH (BINARY[1] {5}\r\ncafé)"),
        ("b FETCH 1 BINARY.PEEK[2]", "* 1 FETCH (BINARY[2] {8}\r\n%PDF-1.4)"),
        ("c FETCH 1 BINARY.SIZE[2]", "* 1 FETCH (BINARY.SIZE[2] 8)"),
        ("d FETCH 1 BINARY.PEEK[2]<1.3>", "* 1 FETCH (BINARY[2]<1> {3}\r\nPDF)"),
        // Bytes a literal cannot carry go in a literal8.
        ("e FETCH 1 BINARY.PEEK[3]", "* 1 FETCH (BINARY[3] ~{3}\r\n\u{0}\u{1}\u{2})"),
    ];
    for (command, expected) in cases {
        let out = client.ok(command).await;
        assert!(out.starts_with(expected), "{command}:\n{out:?}");
    }
    let (out, _) = client.send("f FETCH 1 BINARY.PEEK[4]").await;
    assert!(out.starts_with("f NO [UNKNOWN-CTE]"), "{out}");
    let out = client.ok("g CAPABILITY").await;
    assert!(out.contains(" BINARY "), "{out}");
    // APPEND takes a literal8 (binary content) too.
    let out = client.ok("h APPEND Drafts ~{11+}\r\nSubject:\0\r\n").await;
    assert!(out.contains("h OK [APPENDUID"), "{out}");
}

#[tokio::test]
async fn compress_is_offered_once_and_tls_must_come_first() {
    let mut client = Client::connected(false);
    let (out, _) = client.send("a CAPABILITY").await;
    assert!(out.contains("COMPRESS=DEFLATE"), "{out}");
    let (out, after) = client.send("b COMPRESS DEFLATE").await;
    assert_eq!((out.as_str(), after), ("b OK DEFLATE active\r\n", After::Compress));
    let (out, _) = client.send("c COMPRESS DEFLATE").await;
    assert!(out.starts_with("c NO [COMPRESSIONACTIVE]"), "{out}");
    let (out, _) = client.send("d STARTTLS").await;
    assert!(out.starts_with("d BAD"), "no TLS inside compression: {out}");
    let (out, _) = client.send("e CAPABILITY").await;
    assert!(!out.contains("COMPRESS=DEFLATE"), "not offered again: {out}");
}

#[tokio::test]
async fn sort_and_thread_order_what_a_search_finds() {
    let client = Client::logged_in().await;
    let put = |subject: &str, date: &str, from: &str, extra: &str| {
        let raw = format!("From: {from}\r\nSubject: {subject}\r\nDate: {date}\r\n{extra}\r\nHello.\r\n");
        client.service.put_message(ANA, "INBOX", &raw, &[]);
    };
    put("Budget", "Mon, 2 Mar 2026 09:00:00 +0000", "ben@x.org", "Message-ID: <a@x>\r\n");
    put("Lunch", "Sun, 1 Mar 2026 12:00:00 +0000", "ana@x.org", "Message-ID: <b@x>\r\n");
    put("Re: Budget", "Tue, 3 Mar 2026 09:00:00 +0000", "carl@x.org", "Message-ID: <c@x>\r\nIn-Reply-To: <a@x>\r\n");
    put(
        "Re: Budget",
        "Wed, 4 Mar 2026 09:00:00 +0000",
        "ana@x.org",
        "Message-ID: <d@x>\r\nReferences: <a@x> <c@x>\r\n",
    );
    let mut client = client;
    client.ok("s SELECT INBOX").await;
    let cases = [
        ("a SORT (DATE) UTF-8 ALL", "* SORT 2 1 3 4"),
        ("b SORT (REVERSE DATE) UTF-8 ALL", "* SORT 4 3 1 2"),
        ("c SORT (SUBJECT DATE) US-ASCII ALL", "* SORT 1 3 4 2"),
        ("d SORT (FROM REVERSE DATE) UTF-8 ALL", "* SORT 4 2 1 3"),
        ("e SORT (ARRIVAL) UTF-8 SUBJECT budget", "* SORT 1 3 4"),
        ("f UID SORT (REVERSE DATE) UTF-8 ALL", "* SORT 4 3 1 2"),
        ("g THREAD REFERENCES UTF-8 ALL", "* THREAD (2)(1 3 4)"),
        ("h THREAD ORDEREDSUBJECT UTF-8 ALL", "* THREAD (2)(1 (3)(4))"),
        ("i UID THREAD REFERENCES UTF-8 NOT FROM ana", "* THREAD (1 3)"),
    ];
    for (command, expected) in cases {
        let out = client.ok(command).await;
        assert_lines(&out, &[expected]);
    }
    let (out, _) = client.send("j SORT (DATE) KOI8-R ALL").await;
    assert!(out.starts_with("j NO [BADCHARSET (UTF-8 US-ASCII)]"), "{out}");
    let out = client.ok("k CAPABILITY").await;
    assert!(
        out.contains(" SORT ") && out.contains(" THREAD=REFERENCES") && out.contains(" THREAD=ORDEREDSUBJECT"),
        "{out}"
    );
}

#[tokio::test]
async fn esearch_returns_what_was_asked_for() {
    let mut client = Client::with_inbox(&["one", "two", "three", "four", "five"]).await;
    client.ok("a STORE 2,4 +FLAGS.SILENT (\\Seen)").await;
    let cases = [
        ("b SEARCH RETURN (MIN MAX COUNT) UNSEEN", "* ESEARCH (TAG \"b\") MIN 1 MAX 5 COUNT 3"),
        ("c UID SEARCH RETURN (ALL) UNSEEN", "* ESEARCH (TAG \"c\") UID ALL 1,3,5"),
        ("d SEARCH RETURN () 1:3", "* ESEARCH (TAG \"d\") ALL 1:3"),
        ("e SEARCH RETURN (COUNT ALL) FLAGGED", "* ESEARCH (TAG \"e\") COUNT 0"),
    ];
    for (command, expected) in cases {
        let out = client.ok(command).await;
        assert_lines(&out, &[expected]);
    }
    let out = client.ok("f SEARCH UNSEEN").await;
    assert_lines(&out, &["* SEARCH 1 3 5"]);
}

#[tokio::test]
async fn list_extended_selects_and_returns_what_was_asked_for() {
    let mut client = Client::logged_in().await;
    client.ok("a CREATE Projects/Budget").await;
    client.ok("b UNSUBSCRIBE Projects").await;
    client.ok("c UNSUBSCRIBE Junk").await;
    client.service.put_message(ANA, "INBOX", &mail("one"), &[]);
    let out = client.ok("d LIST (SUBSCRIBED) \"\" \"*\" RETURN (CHILDREN)").await;
    assert!(out.contains("* LIST (\\HasNoChildren \\Subscribed) \"/\" INBOX"), "{out}");
    assert!(
        out.contains("\"/\" Projects/Budget") && !out.contains("\"/\" Projects\r\n") && !out.contains("Junk"),
        "{out}"
    );
    let out = client.ok("e LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\"").await;
    assert!(out.contains("* LIST (\\HasChildren) \"/\" Projects (\"CHILDINFO\" (\"SUBSCRIBED\"))"), "{out}");
    let out = client.ok("f LIST (SPECIAL-USE) \"\" \"*\"").await;
    assert!(out.contains("\\Sent") && out.contains("\\Junk") && !out.contains("INBOX"), "{out}");
    let out = client.ok("g LIST \"\" (INBOX Sent) RETURN (STATUS (MESSAGES UNSEEN) SUBSCRIBED)").await;
    assert_lines(
        &out,
        &[
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" INBOX",
            "* STATUS INBOX (MESSAGES 1 UNSEEN 1)",
            "* LIST (\\HasNoChildren \\Subscribed \\Sent) \"/\" Sent",
            "* STATUS Sent (MESSAGES 0 UNSEEN 0)",
            "g OK Listed",
        ],
    );
    let out = client.ok("h CAPABILITY").await;
    assert!(out.contains(" ESEARCH") && out.contains(" LIST-EXTENDED") && out.contains(" LIST-STATUS"), "{out}");
}

#[tokio::test]
async fn a_fetch_of_messages_expunged_elsewhere_answers_the_rest_and_says_why() {
    let mut client = Client::with_inbox(&["one", "two", "three"]).await;
    let mut other = client.another().await;
    other.ok("o1 SELECT INBOX").await;
    other.ok("o2 STORE 2 +FLAGS.SILENT (\\Deleted)").await;
    other.ok("o3 EXPUNGE").await;
    // This session still counts three messages; the second has no data any more.
    let (out, _) = client.send("a FETCH 1:3 (UID)").await;
    assert_lines(
        &out,
        &[
            "* 1 FETCH (UID 1)",
            "* 3 FETCH (UID 3)",
            "a NO [EXPUNGEISSUED] Some of the requested messages no longer exist",
        ],
    );
    let out = client.ok("b NOOP").await;
    assert_lines(&out, &["* 2 EXPUNGE"]);
    client.ok("c FETCH 1:2 (UID)").await;
}
