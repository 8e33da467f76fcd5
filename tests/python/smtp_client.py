#!/usr/bin/env python3
"""Real-client SMTP checks for the UMS tests, with Python's smtplib.

  smtp_client.py conformance MX MX2 SUBMISSION USER1 USER2 PASSWORD1 MAX_BYTES
      Protocol checks against an MX (and a second node's MX) and a submission port
      (host:port); asserts the reply
      codes a client sees and prints JSON {"stored": [{"to": [...], "raw_b64": ...}]}
      with every message that got 250, for the caller to find in the mailboxes.

  smtp_client.py send-many SECONDS USER1,USER2,... NODE1 NODE2 ...
      Sends unique messages to the users through every node for SECONDS, in parallel, retrying
      a failed message (same bytes) on the next node like an MTA would; prints JSON
      {"acked": [[user, ref], ...], "unacked": [[user, ref], ...]}.

  smtp_client.py submit SUBMISSION USER PASSWORD RCPT1,RCPT2,...
      Authenticates on the submission port (STARTTLS, AUTH) and sends one message to each
      recipient, with an X-UMS-Test-Ref header naming it; prints JSON {"acked": [ref, ...]}.
"""

import base64
import json
import smtplib
import ssl
import sys
import threading
import time


def hostport(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def insecure_tls():
    # The test cluster's certificate is self-signed.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def expect_code(action, code, enhanced):
    """Runs action(), which must fail with `code` and the enhanced status `enhanced`."""
    try:
        result = action()
    except smtplib.SMTPRecipientsRefused as e:
        (reply_code, text), = e.recipients.values()
    except smtplib.SMTPResponseException as e:
        reply_code, text = e.smtp_code, e.smtp_error
    else:
        if isinstance(result, tuple):
            reply_code, text = result
        else:
            raise AssertionError(f"expected {code} {enhanced}, got success {result!r}")
    text = text.decode() if isinstance(text, bytes) else text
    assert reply_code == code and text.startswith(enhanced), f"expected {code} {enhanced}, got {reply_code} {text}"


def message(subject, to, body, sender="citizen@example.org"):
    lines = [f"From: {sender}", f"To: {', '.join(to)}", f"Subject: {subject}",
             f"Message-ID: <{subject}.{time.time_ns()}@example.org>", "", *body]
    return ("\r\n".join(lines) + "\r\n").encode()


def conformance(mx, mx2, submission, user1, user2, password1, max_bytes):
    stored = []

    # A client that never saw the 250 (connection lost after the final dot) sends the
    # same message again through another node: it must be stored once.
    raw = message("lost-reply", [user1], ["The first 250 never arrived."])
    s = smtplib.SMTP(*hostport(mx), timeout=30)
    s.ehlo("client.example.org")
    s.mail("citizen@example.org")
    s.rcpt(user1)
    code, _ = s.docmd("DATA")
    assert code == 354
    s.send(raw + b".\r\n")
    s.sock.close()
    time.sleep(1)
    with smtplib.SMTP(*hostport(mx2), timeout=30) as again:
        assert again.sendmail("citizen@example.org", [user1], raw) == {}
    stored.append({"to": [user1], "raw_b64": base64.b64encode(raw).decode()})

    with smtplib.SMTP(*hostport(mx), timeout=30) as s:
        code, _ = s.ehlo("client.example.org")
        assert code == 250
        for feature in ["pipelining", "8bitmime", "size", "enhancedstatuscodes", "smtputf8", "starttls"]:
            assert s.has_extn(feature), f"MX does not advertise {feature}"
        assert not s.has_extn("auth"), "the MX must not offer AUTH"
        assert int(s.esmtp_features["size"]) == max_bytes

        # Two local recipients (different users, usually different shards).
        raw = message("two-recipients", [user1, user2], ["Hello both.", ".a line starting with a dot", ""])
        assert s.sendmail("citizen@example.org", [user1, user2], raw) == {}
        stored.append({"to": [user1, user2], "raw_b64": base64.b64encode(raw).decode()})

        # 8-bit content with SMTPUTF8: stored byte for byte.
        raw = message("eight-bit", [user1], ["Habari ya asubuhi, caf\u00e9 \u2615".encode().decode("latin-1")])
        raw = raw.decode("latin-1").encode("latin-1")
        assert s.sendmail("citizen@example.org", [user1], raw, mail_options=["BODY=8BITMIME", "SMTPUTF8"]) == {}
        stored.append({"to": [user1], "raw_b64": base64.b64encode(raw).decode()})

        # One good and one unknown recipient: accepted for the good one only.
        raw = message("partly", [user2], ["x"])
        refused = s.sendmail("citizen@example.org", [user2, "nobody@" + user2.split("@")[1]], raw)
        (code, text), = refused.values()
        assert code == 550 and text.startswith(b"5.1.1"), refused
        stored.append({"to": [user2], "raw_b64": base64.b64encode(raw).decode()})

        expect_code(lambda: s.sendmail("citizen@example.org", ["nobody@" + user1.split("@")[1]], message("unknown", [], ["x"])), 550, "5.1.1")
        expect_code(lambda: s.sendmail("citizen@example.org", ["someone@gmail.com"], message("relay", [], ["x"])), 550, "5.7.1")
        s.rset()
        expect_code(lambda: s.mail("citizen@example.org", [f"SIZE={max_bytes + 1}"]), 552, "5.3.4")
        s.rset()
        big = message("too-big", [user1], ["y" * 998] * (max_bytes // 1000 + 10))
        expect_code(lambda: s.sendmail("citizen@example.org", [user1], big), 552, "5.3.4")
        # The session is still usable after a refused message.
        assert s.noop()[0] == 250

    # STARTTLS on the MX, then mail as usual.
    with smtplib.SMTP(*hostport(mx), timeout=30) as s:
        s.starttls(context=insecure_tls())
        s.ehlo("client.example.org")
        assert not s.has_extn("starttls")
        raw = message("over-tls", [user2], ["Sent over TLS."])
        assert s.sendmail("citizen@example.org", [user2], raw) == {}
        stored.append({"to": [user2], "raw_b64": base64.b64encode(raw).decode()})

    with smtplib.SMTP(*hostport(submission), timeout=30) as s:
        s.ehlo("laptop")
        assert not s.has_extn("auth"), "AUTH must not be offered before STARTTLS"
        expect_code(lambda: s.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{user1}\0{password1}".encode()).decode()), 538, "5.7.11")
        expect_code(lambda: s.sendmail(user1, [user2], message("no-auth", [user2], ["x"])), 530, "5.7.0")
        s.starttls(context=insecure_tls())
        s.ehlo("laptop")
        assert "PLAIN" in s.esmtp_features["auth"] and "LOGIN" in s.esmtp_features["auth"]
        expect_code(lambda: s.login(user1, "wrong-password"), 535, "5.7.8")
        s.login(user1, password1)
        expect_code(lambda: s.sendmail(user2, [user1], message("spoofed", [user1], ["x"], user2)), 553, "5.7.1")
        # The envelope is the user's own, but the From: header someone else's: refused.
        forged = message("forged", [user2], ["x"], f"The Minister <{user2}>")
        expect_code(lambda: s.sendmail(user1, [user2], forged), 550, "5.7.1")
        no_from = b"To: " + user2.encode() + b"\r\nSubject: anonymous\r\n\r\nx\r\n"
        expect_code(lambda: s.sendmail(user1, [user2], no_from), 550, "5.6.0")
        raw = message("submitted", [user2], ["From a staff member."], f"Staff Member <{user1.upper()}>")
        assert s.sendmail(user1, [user2], raw) == {}
        stored.append({"to": [user2], "raw_b64": base64.b64encode(raw).decode()})

    # AUTH LOGIN works too.
    with smtplib.SMTP(*hostport(submission), timeout=30) as s:
        s.starttls(context=insecure_tls())
        s.ehlo("laptop")
        s.user, s.password = user1, password1
        code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        assert code == 235

    print(json.dumps({"stored": stored}))


def send_many(seconds, users, nodes):
    acked, unacked, lock = [], [], threading.Lock()
    deadline = time.time() + seconds

    def sender(worker):
        n = 0
        while time.time() < deadline:
            n += 1
            ref = f"w{worker}-m{n}"
            user = users[(worker + n) % len(users)]
            raw = message(ref, [user], [f"X-Ref {ref}"]).replace(b"Subject:", f"X-UMS-Test-Ref: {ref}\r\nSubject:".encode(), 1)
            ok = False
            # An MTA retries a deferred message; the same bytes must not be stored twice.
            for attempt in range(6):
                node = nodes[(worker + attempt) % len(nodes)]
                try:
                    with smtplib.SMTP(*hostport(node), timeout=15) as s:
                        s.sendmail("citizen@example.org", [user], raw)
                    ok = True
                    break
                except (OSError, smtplib.SMTPException):
                    time.sleep(0.2)
            with lock:
                (acked if ok else unacked).append([user, ref])

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(4 * len(nodes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"acked": acked, "unacked": unacked}))


def submit(submission, user, password, recipients):
    acked = []
    with smtplib.SMTP(*hostport(submission), timeout=30) as s:
        s.starttls(context=insecure_tls())
        s.login(user, password)
        for n, rcpt in enumerate(recipients):
            ref = f"out-{n}"
            raw = message(ref, [rcpt], ["Outbound."], user).replace(b"Subject:", f"X-UMS-Test-Ref: {ref}\r\nSubject:".encode(), 1)
            assert s.sendmail(user, [rcpt], raw) == {}
            acked.append(ref)
    print(json.dumps({"acked": acked}))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "conformance":
        conformance(args[0], args[1], args[2], args[3], args[4], args[5], int(args[6]))
    elif command == "send-many":
        send_many(float(args[0]), args[1].split(","), args[2:])
    elif command == "submit":
        submit(args[0], args[1], args[2], args[3].split(","))
    else:
        sys.exit(f"unknown command {command}; see the docstring")
