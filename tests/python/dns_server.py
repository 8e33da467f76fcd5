#!/usr/bin/env python3
"""A tiny authoritative DNS server for the mail authentication tests (stdlib only).

  dns_server.py ZONE.json [PORT]
      Answers on 127.0.0.1:PORT (a free port when left out, the same one for UDP and
      TCP) from ZONE.json, read again for every query so a test may rewrite it:
          {"spf.example.": {"TXT": ["v=spf1 ip4:127.0.0.0/8 -all"]},
           "_dmarc.spf.example": {"TXT": ["v=DMARC1; p=reject"]},
           "mx.spf.example": {"A": ["127.0.0.1"]}}
      Names are matched without regard to case or a final dot. A name in the zone with
      no record of the asked type gets an empty answer (NODATA), any other name
      NXDOMAIN, both with an SOA so resolvers cache the absence briefly. TXT strings
      longer than 255 bytes are split into several character-strings, as DKIM keys
      need. Prints "listening 127.0.0.1:PORT" once both sockets are bound, then serves
      until killed.

The MX under test asks it instead of the system's resolver ([smtp.mail_auth]
nameserver), so the tests need no network and decide every record themselves.
"""

import json
import socket
import socketserver
import struct
import sys
import threading

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}
NAMES = {number: name for name, number in TYPES.items()}
OPT = 41
NEGATIVE_TTL = 5


def read_name(packet, offset):
    """The dotted name at offset (compression pointers followed) and the offset after it."""
    labels, jumped, end, hops = [], False, offset, 0
    while True:
        length = packet[offset]
        if length & 0xC0 == 0xC0:
            if not jumped:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | packet[offset + 1]
            jumped, hops = True, hops + 1
            if hops > 32:
                raise ValueError("compression loop")
            continue
        if length == 0:
            if not jumped:
                end = offset + 1
            return ".".join(labels), end
        labels.append(packet[offset + 1:offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length


def encode_name(name):
    out = b""
    for label in name.strip(".").split("."):
        if label:
            raw = label.encode("ascii")
            out += bytes([len(raw)]) + raw
    return out + b"\0"


def rdata(kind, value):
    if kind == "TXT":
        raw = value.encode()
        chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
        return b"".join(bytes([len(c)]) + c for c in chunks)
    if kind == "A":
        return socket.inet_pton(socket.AF_INET, value)
    if kind == "AAAA":
        return socket.inet_pton(socket.AF_INET6, value)
    if kind == "MX":
        preference, exchange = value.split(None, 1)
        return struct.pack("!H", int(preference)) + encode_name(exchange)
    if kind in ("CNAME", "PTR", "NS"):
        return encode_name(value)
    raise ValueError(f"record type {kind} is not served")


def soa(zone_apex):
    data = encode_name("ns." + zone_apex) + encode_name("hostmaster." + zone_apex)
    data += struct.pack("!IIIII", 1, 3600, 600, 86400, NEGATIVE_TTL)
    return encode_name(zone_apex) + struct.pack("!HHIH", TYPES["SOA"], 1, NEGATIVE_TTL, len(data)) + data


def load_zone(path):
    with open(path) as f:
        zone = json.load(f)
    return {name.strip(".").lower(): records for name, records in zone.items()}


def answer(query, zone_path, max_size):
    """The response to one query packet, or None for garbage."""
    if len(query) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", query[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    name, offset = read_name(query, 12)
    qtype, qclass = struct.unpack("!HH", query[offset:offset + 4])
    question = query[12:offset + 4]
    zone = load_zone(zone_path)
    key = name.strip(".").lower()
    records = zone.get(key)
    answers = []
    if records is not None:
        for kind, values in records.items():
            if TYPES.get(kind.upper()) == qtype:
                for value in values:
                    data = rdata(kind.upper(), value)
                    answers.append(b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 60, len(data)) + data)
    rcode = 3 if records is None else 0  # NXDOMAIN, or NOERROR (maybe NODATA)
    authority = [] if answers else [soa(key.split(".", 1)[-1] if "." in key else key)]
    # QR, AA, RD copied, RA.
    response_flags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
    header = struct.pack("!HHHHHH", ident, response_flags, 1, len(answers), len(authority), 0)
    response = header + question + b"".join(answers) + b"".join(authority)
    if max_size is not None and len(response) > max_size:
        # Too big for this UDP query: the client asks again over TCP (RFC 1035 4.2.1).
        header = struct.pack("!HHHHHH", ident, response_flags | 0x0200, 1, 0, 0, 0)
        response = header + question
    log(f"{NAMES.get(qtype, qtype)} {name} -> {'NXDOMAIN' if rcode else len(answers)}")
    return response


def udp_limit(query):
    """The UDP payload size the client takes: 512, or its EDNS0 OPT record's size."""
    try:
        _, _, qdcount, ancount, nscount, arcount = struct.unpack("!HHHHHH", query[:12])
        _, offset = read_name(query, 12)
        offset += 4
        for _ in range(ancount + nscount + arcount):
            _, offset = read_name(query, offset)
            rtype, rclass, _, length = struct.unpack("!HHIH", query[offset:offset + 10])
            if rtype == OPT:
                return max(512, rclass)
            offset += 10 + length
    except (IndexError, struct.error, ValueError):
        pass
    return 512


def log(line):
    print(line, file=sys.stderr, flush=True)


class UdpHandler(socketserver.BaseRequestHandler):
    def handle(self):
        query, sock = self.request
        try:
            response = answer(query, self.server.zone_path, udp_limit(query))
        except (IndexError, struct.error, ValueError, OSError, json.JSONDecodeError) as e:
            log(f"bad query or zone: {e}")
            return
        if response:
            sock.sendto(response, self.client_address)


class TcpHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(10)
        try:
            while True:
                prefix = self.request.recv(2, socket.MSG_WAITALL)
                if len(prefix) < 2:
                    return
                (length,) = struct.unpack("!H", prefix)
                query = self.request.recv(length, socket.MSG_WAITALL)
                response = answer(query, self.server.zone_path, None)
                if not response:
                    return
                self.request.sendall(struct.pack("!H", len(response)) + response)
        except (OSError, IndexError, struct.error, ValueError, json.JSONDecodeError) as e:
            log(f"tcp: {e}")


class ThreadingUdp(socketserver.ThreadingMixIn, socketserver.UDPServer):
    daemon_threads = True


class ThreadingTcp(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def bind(zone_path, port):
    """UDP and TCP servers on the same port (a free one when port is 0)."""
    for _ in range(50):
        udp = ThreadingUdp(("127.0.0.1", port), UdpHandler)
        try:
            tcp = ThreadingTcp(("127.0.0.1", udp.server_address[1]), TcpHandler)
        except OSError:
            udp.server_close()
            if port:
                raise
            continue
        udp.zone_path = tcp.zone_path = zone_path
        return udp, tcp
    raise SystemExit("no port free for both UDP and TCP")


def main():
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    zone_path = sys.argv[1]
    load_zone(zone_path)  # fail early on a bad file
    udp, tcp = bind(zone_path, int(sys.argv[2]) if len(sys.argv) == 3 else 0)
    threading.Thread(target=tcp.serve_forever, daemon=True).start()
    print(f"listening 127.0.0.1:{udp.server_address[1]}", flush=True)
    udp.serve_forever()


if __name__ == "__main__":
    main()
