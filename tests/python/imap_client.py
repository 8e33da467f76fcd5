#!/usr/bin/env python3
"""Real-client IMAP checks for the UMS tests, with Python's imaplib.

  imap_client.py conformance IMAP MX USER PASSWORD
      A mail client's day against IMAP (host:port), asserting what a client relies on;
      MX is used to deliver a message while the session IDLEs. Prints JSON with what
      it saw.

  imap_client.py refs IMAP USER PASSWORD
      Logs in (STARTTLS) and prints JSON [[uid, X-UMS-Test-Ref], ...] for the INBOX.

  imap_client.py idle IMAP OTHER_IMAP MX USER PASSWORD
      While a session IDLEs on IMAP (whose nodes poll only every few minutes): a message
      delivered through MX arrives as EXISTS, and \Seen stored by a second session on
      OTHER_IMAP arrives as FETCH FLAGS, each within 10 s. The INBOX must be empty.

  imap_client.py two-sessions IMAP USER PASSWORD
      Two sessions on the same account: numbers stay those each session was told about
      while the other expunges, and a session whose mailbox is deleted and created again
      is ended (its UIDs would mean other messages). The INBOX must hold 3 messages.

  imap_client.py details IMAP MX USER PASSWORD IMAPS
      What strict clients lean on (RFC 3501 and extensions): \Recent for the first session
      only, keywords announced in FLAGS before a FETCH shows them, SEARCH by the Date
      header and by header fields, sections inside attached messages, SPECIAL-USE
      mailboxes, ID, and IMAPS (TLS from the first byte). The INBOX must be empty; MX
      delivers the test messages.

  imap_client.py quota IMAP MX USER PASSWORD
      For a user with an 8 KiB quota and an empty INBOX: SMTP takes mail until it no longer
      fits (552 5.2.2), a full mailbox refuses recipients (452 4.2.2), APPEND and COPY are
      refused with [OVERQUOTA], GETQUOTAROOT reports the usage, and EXPUNGE makes room.

  imap_client.py qresync IMAP_A IMAP_B IMAP_C USER PASSWORD
      QRESYNC (RFC 7162) across nodes: a client caches the INBOX (5 messages) through node A;
      through node B messages are expunged and flagged; the client comes back through node C
      and learns exactly that (VANISHED (EARLIER), FETCH of the changed ones only).

  imap_client.py compress IMAPS USER PASSWORD
      COMPRESS=DEFLATE (RFC 4978) over IMAPS: after the tagged OK both directions are raw
      DEFLATE; SELECT, FETCH and LOGOUT work compressed, each response burst arrives
      without waiting for more. The INBOX must hold at least one message.

  imap_client.py guess IMAP USER RIGHT_PASSWORD ATTEMPTS
      Tries ATTEMPTS wrong passwords, then the right one (each on a new connection), and
      prints JSON with the server's answers.
"""

import json
import re
import smtplib
import ssl
import sys
import time
import imaplib


def hostport(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def connect(address, user, password):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    imap = imaplib.IMAP4(*hostport(address), timeout=30)
    imap.starttls(ssl_context=context)
    imap.login(user, password)
    return imap


def ok(result):
    typ, data = result
    assert typ == "OK", (typ, data)
    return data


def refs(address, user, password):
    imap = connect(address, user, password)
    ok(imap.select("INBOX", readonly=True))
    data = ok(imap.uid("FETCH", "1:*", "(UID BODY.PEEK[HEADER.FIELDS (X-UMS-Test-Ref)])"))
    out = []
    for item in data:
        if isinstance(item, tuple):
            uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
            header = item[1].decode(errors="replace").strip()
            out.append([uid, header.split(":", 1)[1].strip() if ":" in header else ""])
    imap.logout()
    print(json.dumps(out))


def conformance(address, mx, user, password):
    seen = {}
    # Before TLS: LOGIN is disabled, STARTTLS offered.
    plain = imaplib.IMAP4(*hostport(address), timeout=30)
    assert "LOGINDISABLED" in plain.capabilities and "STARTTLS" in plain.capabilities, plain.capabilities
    try:
        plain.login(user, password)
        raise AssertionError("LOGIN without TLS must fail")
    except imaplib.IMAP4.error:
        pass
    plain.logout()

    imap = connect(address, user, password)
    caps = ok(imap.capability())[0].decode().upper().split()
    for cap in ["IMAP4REV1", "IDLE", "UIDPLUS", "MOVE", "NAMESPACE", "LITERAL+", "ENABLE", "CONDSTORE"]:
        assert cap in caps, (cap, caps)
    assert b"INBOX" in b" ".join(ok(imap.list()))
    ok(imap.namespace())

    data = ok(imap.select("INBOX"))
    exists = int(data[0])
    seen["inbox_exists"] = exists
    uidvalidity = int(imap.untagged_responses["UIDVALIDITY"][0])
    seen["uidvalidity"] = uidvalidity
    fetched = ok(imap.fetch("1:*", "(UID FLAGS RFC822.SIZE BODY.PEEK[])")) if exists else []
    bodies = [item for item in fetched if isinstance(item, tuple)]
    assert len(bodies) == exists, (len(bodies), exists)
    for meta, body in bodies:
        size = int(re.search(rb"RFC822\.SIZE (\d+)", meta).group(1))
        assert size == len(body), (size, len(body))
        assert b"\\Seen" not in meta, "BODY.PEEK must not set \\Seen"

    # What a mail client shows in its message list: ENVELOPE and BODYSTRUCTURE.
    if exists:
        data = ok(imap.fetch("1", "(ENVELOPE BODYSTRUCTURE)"))
        text = data[0] if isinstance(data[0], bytes) else data[0][0]
        assert re.search(rb'ENVELOPE \(NIL "letter \d" \(\(NIL NIL "citizen\d" "example.org"\)\)', text), text
        assert b'BODYSTRUCTURE ("TEXT" "plain"' in text, text

    # Folders: CREATE, APPEND (APPENDUID), LIST, STATUS.
    ok(imap.create("Projects"))
    typ, _ = imap.create("Projects")
    assert typ == "NO", "CREATE of an existing mailbox"
    message = b"From: a@example.org\r\nSubject: appended draft\r\n\r\nDraft body.\r\n"
    typ, data = imap.append("Projects", "(\\Draft)", None, message)
    assert typ == "OK" and b"APPENDUID" in data[0], data
    typ, data = imap.append("Nowhere", None, None, message)
    assert typ == "NO" and b"TRYCREATE" in data[0], data
    status = ok(imap.status("Projects", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)"))[0].decode()
    assert "MESSAGES 1" in status and "UNSEEN 1" in status, status

    # Flags: STORE, FETCH FLAGS, SEARCH.
    if exists:
        first_uid = int(re.search(rb"UID (\d+)", bodies[0][0]).group(1))
        data = ok(imap.uid("STORE", str(first_uid), "+FLAGS", "(\\Flagged \\Seen)"))
        assert b"\\Flagged" in data[0] and b"\\Seen" in data[0], data
        flagged = ok(imap.uid("SEARCH", None, "FLAGGED"))[0].split()
        assert flagged == [str(first_uid).encode()], flagged
        unseen = ok(imap.search(None, "UNSEEN"))[0].split()
        assert len(unseen) == exists - 1, unseen
        # FETCH BODY[] (not PEEK) marks a message read.
        if exists > 1:
            ok(imap.fetch("2", "(BODY[HEADER])"))
            flags = ok(imap.fetch("2", "(FLAGS)"))[0]
            assert b"\\Seen" in flags, flags

    # COPY (COPYUID) and MOVE between folders, EXPUNGE.
    if exists:
        typ, data = imap.uid("COPY", "1:*", "Projects")
        # imaplib files the tagged response's [COPYUID ...] code under its name.
        assert typ == "OK" and "COPYUID" in imap.untagged_responses, (typ, imap.untagged_responses)
        ok(imap.select("Projects"))
        archived = int(imap.untagged_responses.get("EXISTS", [b"0"])[-1])
        assert archived == exists + 1, (archived, exists)
        ok(imap.create("Projects/2026"))
        typ, data = imap.uid("MOVE", "1:*", "Projects/2026")
        assert typ == "OK", (typ, data)
        ok(imap.select("Projects"))
        assert int(imap.untagged_responses["EXISTS"][-1]) == 0
        status = ok(imap.status("Projects/2026", "(MESSAGES)"))[0].decode()
        assert f"MESSAGES {exists + 1}" in status, status
        ok(imap.select("Projects/2026"))
        ok(imap.store("1", "+FLAGS", "(\\Deleted)"))
        data = ok(imap.expunge())
        assert data[0] == b"1", data
        ok(imap.rename("Projects", "Old"))
        names = b" ".join(ok(imap.list()))
        assert b"Old/2026" in names and b'"Projects"' not in names, names
        ok(imap.delete("Old/2026"))

    # IDLE: a message delivered over SMTP shows up as EXISTS while idling.
    ok(imap.select("INBOX"))
    before = int(imap.untagged_responses["EXISTS"][-1])
    tag = imap._new_tag().decode()
    imap.send(f"{tag} IDLE\r\n".encode())
    assert imap.readline().startswith(b"+"), "IDLE continuation"
    with smtplib.SMTP(*hostport(mx), timeout=30) as s:
        s.sendmail("citizen@example.org", [user], b"Subject: while idling\r\n\r\nhello\r\n")
    deadline, line = time.time() + 10, b""
    while time.time() < deadline:
        line = imap.readline()
        if line.endswith(b"EXISTS\r\n"):
            break
    assert line == f"* {before + 1} EXISTS\r\n".encode(), line
    # The new message is \Recent for this session, the first to see it (RFC 3501 2.3.2).
    line = imap.readline()
    assert line.endswith(b" RECENT\r\n") and line != b"* 0 RECENT\r\n", line
    imap.send(b"DONE\r\n")
    assert imap.readline().startswith(f"{tag} OK".encode())
    seen["idle_saw_new_mail"] = True

    assert imap.logout()[0] == "BYE"  # imaplib reports the untagged BYE
    print(json.dumps(seen))

def idle(address, other, mx, user, password):
    imap = connect(address, user, password)
    ok(imap.select("INBOX"))
    tag = imap._new_tag().decode()
    imap.send(f"{tag} IDLE\r\n".encode())
    assert imap.readline().startswith(b"+"), "IDLE continuation"

    def next_line_ending(suffix):
        deadline = time.time() + 10
        while time.time() < deadline:
            line = imap.readline()
            if line.endswith(suffix):
                return line
        raise AssertionError(f"nothing ending {suffix!r} within 10 s")

    with smtplib.SMTP(*hostport(mx), timeout=30) as s:
        s.sendmail("citizen@example.org", [user], b"Subject: pushed\r\n\r\nhello\r\n")
    assert next_line_ending(b"EXISTS\r\n") == b"* 1 EXISTS\r\n"
    second = connect(other, user, password)
    ok(second.select("INBOX"))
    ok(second.store("1", "+FLAGS", "(\\Seen)"))
    line = next_line_ending(b")\r\n")
    assert line.startswith(b"* 1 FETCH") and b"\\Seen" in line, line
    imap.send(b"DONE\r\n")
    while not (line := imap.readline()).startswith(tag.encode()):
        pass
    assert line.startswith(f"{tag} OK".encode()), line
    print(json.dumps({"exists": True, "flags": True}))


def two_sessions(address, user, password):
    a, b = connect(address, user, password), connect(address, user, password)
    ok(a.select("INBOX"))
    ok(b.select("INBOX"))
    ok(b.store("1", "+FLAGS", "(\\Deleted)"))
    ok(b.expunge())
    # A has not been told yet: its numbers still count the expunged message.
    hits = ok(a.search(None, "ALL"))[0].split()
    assert hits == [b"2", b"3"], hits
    data = ok(a.noop())
    assert a.untagged_responses.get("EXPUNGE") == [b"1"], a.untagged_responses
    assert ok(a.search(None, "ALL"))[0].split() == [b"1", b"2"]

    ok(b.create("Work"))
    ok(a.select("Work"))
    ok(b.delete("Work"))
    ok(b.create("Work"))
    try:
        a.noop()
        raise AssertionError("a session on a replaced mailbox must end")
    except imaplib.IMAP4.abort as e:
        assert "deleted or replaced" in str(e), e
    b.logout()
    print(json.dumps({"ok": True}))


NESTED = (
    b"From: a@x.org\r\nSubject: outer\r\nDate: Sun, 1 Mar 2026 23:30:00 -0800\r\nX-Case: 4711\r\n"
    b"Content-Type: multipart/mixed; boundary=\"A\"\r\n\r\n"
    b"--A\r\nContent-Type: message/rfc822\r\n\r\n"
    b"From: b@y.org\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=\"B\"\r\n\r\n"
    b"--B\r\nContent-Type: text/plain\r\n\r\ninner plain\r\n--B\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--B--\r\n"
    b"--A\r\nContent-Type: text/plain\r\n\r\nouter text\r\n--A--\r\n"
)


def details(address, mx, user, password, imaps):
    with smtplib.SMTP(*hostport(mx), timeout=30) as s:
        s.sendmail("citizen@example.org", [user], NESTED)
        s.sendmail("citizen@example.org", [user], b"Subject: plain\r\nDate: Mon, 9 Mar 2026 08:00:00 +0300\r\n\r\nhi\r\n")
    first, second = connect(address, user, password), connect(address, user, password)
    caps = ok(first.capability())[0].decode().upper().split()
    assert "ID" in caps and "SPECIAL-USE" in caps, caps

    # \Recent: the first session to select the mailbox gets it, the next one does not.
    ok(first.select("INBOX"))
    assert first.untagged_responses["RECENT"] == [b"2"], first.untagged_responses
    ok(second.select("INBOX"))
    assert second.untagged_responses["RECENT"] == [b"0"], second.untagged_responses
    assert ok(first.search(None, "RECENT"))[0].split() == [b"1", b"2"]
    assert ok(second.search(None, "OLD"))[0].split() == [b"1", b"2"]
    assert b"\\Recent" in ok(first.fetch("1", "(FLAGS)"))[0]

    # A new keyword is announced (FLAGS, PERMANENTFLAGS) before a FETCH shows it.
    tag = first._new_tag().decode()
    first.send(f"{tag} STORE 1 +FLAGS ($Label1)\r\n".encode())
    lines = []
    while not lines or not lines[-1].startswith(tag.encode()):
        lines.append(first.readline())
    flags_at = next(i for i, l in enumerate(lines) if l.startswith(b"* FLAGS ") and b"$Label1" in l)
    fetch_at = next(i for i, l in enumerate(lines) if b" FETCH " in l)
    assert flags_at < fetch_at, lines
    assert any(b"PERMANENTFLAGS" in l and b"$Label1" in l and b"\\*" in l for l in lines), lines

    # SEARCH by the Date header (its own date, not the arrival date) and by header fields.
    assert ok(first.search(None, "SENTON", "1-Mar-2026"))[0].split() == [b"1"]
    assert ok(first.search(None, "SENTSINCE", "2-Mar-2026"))[0].split() == [b"2"]
    assert ok(first.search(None, "HEADER", "X-Case", '""'))[0].split() == [b"1"]
    assert ok(first.search(None, "HEADER", "X-Case", "4711"))[0].split() == [b"1"]

    # Sections inside the attached message, and in a nested multipart.
    for section, expected in [("1.1", b"inner plain"), ("1.2", b"<p>html</p>"), ("2", b"outer text")]:
        data = ok(first.fetch("1", f"(BODY.PEEK[{section}])"))
        assert data[0][1] == expected, (section, data)
    data = ok(first.fetch("1", "(BODY.PEEK[1.HEADER.FIELDS (SUBJECT)])"))
    assert data[0][1] == b"Subject: inner\r\n\r\n", data
    data = ok(first.fetch("1", "(BODY.PEEK[1.TEXT])"))
    assert data[0][1].startswith(b"--B\r\n"), data

    # SPECIAL-USE: every user has Sent, Drafts, Trash, Junk and Archive, marked as such.
    listed = b"\n".join(ok(first.list()))
    for name, attribute in [("Sent", "Sent"), ("Drafts", "Drafts"), ("Trash", "Trash"), ("Junk", "Junk"), ("Archive", "Archive")]:
        assert re.search(rf'\(.*\\{attribute}.*\) "/" {name}\b'.encode(), listed), (name, listed)

    # ID: the server says who it is.
    typ, data = first.xatom("ID", '("name" "imaplib")')
    assert typ == "OK" and b'"name" "UMS"' in first.untagged_responses.get("ID", [b""])[0], (typ, data, first.untagged_responses)
    first.logout()
    second.logout()

    # IMAPS: TLS from the first byte, then a login straight away (no STARTTLS offered).
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    secure = imaplib.IMAP4_SSL(*hostport(imaps), ssl_context=context, timeout=30)
    assert "STARTTLS" not in secure.capabilities and "AUTH=PLAIN" in secure.capabilities, secure.capabilities
    secure.login(user, password)
    assert int(ok(secure.select("INBOX", readonly=True))[0]) == 2
    secure.logout()
    print(json.dumps({"ok": True}))


def quota(address, mx, user, password):
    sent = [0]

    def send(size):
        # Each message its own (an identical resend would be stored once, by design).
        sent[0] += 1
        message = f"Subject: filler {sent[0]}\r\n\r\n".encode() + b"x" * size + b"\r\n"
        with smtplib.SMTP(*hostport(mx), timeout=30) as s:
            try:
                s.sendmail("citizen@example.org", [user], message)
                return 250
            except smtplib.SMTPRecipientsRefused as e:
                return e.recipients[user][0]
            except smtplib.SMTPDataError as e:
                return e.smtp_code

    assert send(3000) == 250 and send(3000) == 250
    third = send(3000)
    assert third == 552, f"a message that does not fit the quota is refused for good: {third}"
    assert send(800) == 250, "a smaller one still fits"
    imap = connect(address, user, password)
    typ, data = imap.getquotaroot("INBOX")
    assert typ == "OK", (typ, data)
    storage = re.search(rb"STORAGE (\d+) (\d+)", b" ".join(d for d in data[1])).groups()
    used, limit = int(storage[0]), int(storage[1])
    assert limit == 8 and 6 <= used <= 8, (used, limit)
    typ, data = imap.append("INBOX", None, None, b"Subject: draft\r\n\r\n" + b"y" * 3000 + b"\r\n")
    assert typ == "NO" and b"OVERQUOTA" in data[0], (typ, data)
    ok(imap.select("INBOX"))
    typ, data = imap.copy("1", "Archive")
    assert typ == "NO" and b"OVERQUOTA" in data[0], (typ, data)
    # Room is made by deleting mail; then mail is taken again.
    ok(imap.store("1:2", "+FLAGS", "(\\Deleted)"))
    # RFC 9208 4.2: what an EXPUNGE would give back.
    status = ok(imap.status("INBOX", "(DELETED DELETED-STORAGE)"))[0].decode()
    assert "DELETED 2" in status and re.search(r"DELETED-STORAGE [67]\b", status), status
    ok(imap.expunge())
    assert send(3000) == 250, "room was made"
    imap.logout()
    print(json.dumps({"ok": True}))


def qresync(a, b, c, user, password):
    first = connect(a, user, password)
    assert "QRESYNC" in ok(first.capability())[0].decode().upper().split()
    ok(first.enable("QRESYNC"))
    ok(first.select("INBOX"))
    uidvalidity = int(first.untagged_responses["UIDVALIDITY"][0])
    modseq = int(re.search(rb"\d+", first.untagged_responses["HIGHESTMODSEQ"][0]).group())
    uids = ok(first.uid("SEARCH", None, "ALL"))[0].split()
    assert len(uids) == 5, uids
    first.logout()

    other = connect(b, user, password)
    ok(other.select("INBOX"))
    ok(other.uid("STORE", f"{uids[0].decode()},{uids[2].decode()}", "+FLAGS", "(\\Deleted)"))
    ok(other.expunge())
    ok(other.uid("STORE", uids[3].decode(), "+FLAGS", "($Label1)"))
    other.logout()

    back = connect(c, user, password)
    ok(back.enable("QRESYNC"))
    typ, data = back.xatom("SELECT", "INBOX", f"(QRESYNC ({uidvalidity} {modseq} {uids[0].decode()}:{uids[-1].decode()}))")
    assert typ == "OK", (typ, data)
    vanished = back.untagged_responses.get("VANISHED", [])
    assert vanished == [f"(EARLIER) {uids[0].decode()},{uids[2].decode()}".encode()], vanished
    fetched = back.untagged_responses.get("FETCH", [])
    assert len(fetched) == 1 and f"UID {uids[3].decode()}".encode() in fetched[0] and b"$Label1" in fetched[0], fetched
    back.logout()
    print(json.dumps({"ok": True}))


def compress(imaps, user, password):
    import socket
    import zlib

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = context.wrap_socket(socket.create_connection(hostport(imaps), timeout=20))
    reader = raw.makefile("rb")
    assert b"COMPRESS=DEFLATE" in reader.readline()
    raw.sendall(f'a LOGIN {user} "{password}"\r\n'.encode())
    assert reader.readline().startswith(b"a OK")
    raw.sendall(b"b COMPRESS DEFLATE\r\n")
    assert reader.readline() == b"b OK DEFLATE active\r\n"
    compressor, decompressor = zlib.compressobj(wbits=-15), zlib.decompressobj(wbits=-15)
    pending = b""

    def command(line, tag):
        nonlocal pending
        raw.sendall(compressor.compress(line) + compressor.flush(zlib.Z_SYNC_FLUSH))
        while True:
            while b"\r\n" in pending:
                text, pending = pending.split(b"\r\n", 1)
                lines.append(text)
                if text.startswith(tag + b" "):
                    return text
            chunk = raw.recv(65536)
            assert chunk, "the server closed the connection"
            pending += decompressor.decompress(chunk)

    lines = []
    assert command(b"c SELECT INBOX\r\n", b"c").startswith(b"c OK"), lines
    assert any(l.endswith(b" EXISTS") for l in lines), lines
    assert command(b"d UID FETCH 1:* (UID RFC822.SIZE)\r\n", b"d").startswith(b"d OK"), lines
    assert any(b" FETCH (UID " in l for l in lines), lines
    assert command(b"e COMPRESS DEFLATE\r\n", b"e").startswith(b"e NO [COMPRESSIONACTIVE]"), lines
    assert command(b"f LOGOUT\r\n", b"f").startswith(b"f OK"), lines
    raw.close()
    print(json.dumps({"ok": True, "lines": len(lines)}))


def guess(address, user, right, attempts):
    answers = []
    for password in [f"wrong-{n}" for n in range(int(attempts))] + [right]:
        try:
            connect(address, user, password).logout()
            answers.append("OK")
        except imaplib.IMAP4.error as e:
            answers.append(str(e))
    print(json.dumps(answers))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "conformance":
        conformance(*args)
    elif command == "refs":
        refs(*args)
    elif command == "idle":
        idle(*args)
    elif command == "two-sessions":
        two_sessions(*args)
    elif command == "details":
        details(*args)
    elif command == "quota":
        quota(*args)
    elif command == "qresync":
        qresync(*args)
    elif command == "compress":
        compress(*args)
    elif command == "guess":
        guess(*args)
    else:
        sys.exit(f"unknown command {command}; see the docstring")
