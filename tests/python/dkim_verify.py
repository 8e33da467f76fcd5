#!/usr/bin/env python3
"""Verifies a message's DKIM signature as a receiving server would, with dkimpy
(Debian's python3-dkim), the key record coming from the arguments instead of DNS.

Usage: dkim_verify.py RECORD_NAME RECORD MESSAGE_FILE
Prints JSON: {"verified": bool, "tampered_verified": bool (the same message with its
body changed)}.
"""

import json
import sys

import dkim


def main():
    name, record, path = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(path, "rb") as f:
        message = f.read()

    def dns(query, timeout=5):
        return record.encode() if query.decode().rstrip(".") == name else None

    tampered = message.replace(b"\r\n\r\n", b"\r\n\r\nInserted line.\r\n", 1)
    print(json.dumps({"verified": dkim.verify(message, dnsfunc=dns),
                      "tampered_verified": dkim.verify(tampered, dnsfunc=dns)}))


if __name__ == "__main__":
    main()
