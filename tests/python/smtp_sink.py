#!/usr/bin/env python3
"""An SMTP server standing in for the outside world in the UMS tests (aiosmtpd).

  smtp_sink.py PORT OUTFILE [DELAY_SECONDS [CERT KEY]]

Listens on 127.0.0.1:PORT and appends one JSON line per accepted message to OUTFILE:
{"at": unix seconds, "mail_from": ..., "rcpt_tos": [...], "data_b64": ..., "tls": whether
the session was encrypted}. With CERT and KEY it offers STARTTLS and requires it before
any mail (a relay that insists on encryption, like a government smart host).
Recipients whose local part starts with "refuse" get 550 5.1.1; each DATA is answered
after DELAY_SECONDS (default 0), to keep a queue busy. Runs until killed.
"""

import asyncio
import base64
import json
import ssl
import sys
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, path, delay):
        self.path, self.delay = path, delay

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@")[0].startswith("refuse"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(self.delay)
        record = {"at": time.time(), "mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                  "data_b64": base64.b64encode(envelope.original_content).decode(),
                  "tls": session.ssl is not None}
        with open(self.path, "a") as out:
            out.write(json.dumps(record) + "\n")
        return "250 2.0.0 Message accepted"


if __name__ == "__main__":
    port, path = int(sys.argv[1]), sys.argv[2]
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    tls = {}
    if len(sys.argv) > 5:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[4], sys.argv[5])
        tls = {"tls_context": context, "require_starttls": True}
    controller = Controller(Sink(path, delay), hostname="127.0.0.1", port=port, decode_data=False, **tls)
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()
