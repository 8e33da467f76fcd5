#!/usr/bin/env python3
"""Talks to a UMS node's HTTPS API as a client with OpenSSL would (Python's ssl and
urllib): verified against the given CA file, with and without a token; also tries a
client that does not trust that CA, and plain HTTP on the same port.

Usage: https_client.py BASE_URL CA_FILE TOKEN   (prints one JSON object)
"""

import http.client
import json
import socket
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request


def get(base, path, context, headers):
    request = urllib.request.Request(base + path, headers=headers)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def main():
    base, ca_file, token = sys.argv[1:4]
    parts = urllib.parse.urlsplit(base)
    host, port = parts.hostname, parts.port
    trusting = ssl.create_default_context(cafile=ca_file)
    trusting.set_alpn_protocols(["http/1.1"])
    result = {
        "health": get(base, "/health", trusting, {}),
        "with_token": get(base, "/api/v1/cluster", trusting, {"Authorization": "Bearer " + token}),
        "without_token": get(base, "/api/v1/cluster", trusting, {}),
    }
    with socket.create_connection((host, port), timeout=10) as raw:
        with trusting.wrap_socket(raw, server_hostname=host) as tls:
            result["version"] = tls.version()
            result["alpn"] = tls.selected_alpn_protocol()
    try:
        get(base, "/health", ssl.create_default_context(), {})
        result["untrusting"] = "accepted"
    except (ssl.SSLError, urllib.error.URLError):
        result["untrusting"] = "refused"
    plain = http.client.HTTPConnection(host, port, timeout=10)
    try:
        plain.request("GET", "/health")
        result["plain"] = plain.getresponse().status
    except (http.client.HTTPException, OSError):
        result["plain"] = "no answer"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
