#!/usr/bin/env python3
"""Legitimate IMAP sessions and API calls with and without a flood from other loopback
addresses, for scripts/bench-flood. Prints one JSON object per phase.

  flood-load.py IMAP_PORTS SMTP_PORTS HTTP_PORTS TOKEN SECONDS LEGIT_THREADS FLOOD_THREADS

Prints a line and a JSON line per phase and kind of client.

The ports are comma-separated ports on 127.0.0.1. Legitimate clients come from 127.0.0.1:
half the threads IMAP sessions (user1..userN of the dev cluster, LOGIN, SELECT INBOX,
LOGOUT), half API calls (GET /api/v1/cluster with the operator TOKEN, 20 a second per thread). The flood comes
from 127.0.0.100-199: IMAP garbage and failed logins, SMTP garbage and unknown
recipients, HTTP requests with made-up tokens, connections held open.
"""
import json
import random
import socket
import sys
import threading
import time


def connect(port, source):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_line(f):
    return f.readline().decode(errors="replace")


def legit_session(port, n):
    sock = connect(port, "127.0.0.1")
    f = sock.makefile("rb")
    try:
        if not read_line(f).startswith("* OK"):
            return False
        sock.sendall(f'a LOGIN user{n}@ministry.go.ke demo-password-{n}\r\n'.encode())
        while True:
            line = read_line(f)
            if not line:
                return False
            if line.startswith("a "):
                if not line.startswith("a OK"):
                    return False
                break
        sock.sendall(b"b SELECT INBOX\r\n")
        while True:
            line = read_line(f)
            if not line:
                return False
            if line.startswith("b "):
                ok = line.startswith("b OK")
                break
        sock.sendall(b"c LOGOUT\r\n")
        return ok
    finally:
        sock.close()


def legit_call(port, token):
    sock = connect(port, "127.0.0.1")
    try:
        sock.sendall(f"GET /api/v1/cluster HTTP/1.1\r\nHost: ums\r\nAuthorization: Bearer {token}\r\n"
                     "Connection: close\r\n\r\n".encode())
        return sock.makefile("rb").readline().split(b" ")[1:2] == [b"200"]
    finally:
        sock.close()


def flood_once(imap_ports, smtp_ports, http_ports, rng):
    source = f"127.0.0.{rng.randint(100, 199)}"
    kind = rng.random()
    try:
        if kind < 0.4:
            sock = connect(rng.choice(imap_ports), source)
            sock.sendall(b"\x01\x02 garbage\r\n" * 20 + b"x LOGIN nobody@ministry.go.ke wrong\r\n")
        elif kind < 0.7:
            sock = connect(rng.choice(http_ports), source)
            fake = "ums_%016x_%s" % (rng.getrandbits(64), "A" * 43)
            sock.sendall((f"GET /api/v1/users/user1@ministry.go.ke/messages HTTP/1.1\r\nHost: ums\r\n"
                          f"Authorization: Bearer {fake}\r\n\r\n").encode() * 5)
        else:
            sock = connect(rng.choice(smtp_ports), source)
            sock.sendall(b"EHLO flood\r\nRCPT TO:<nobody@ministry.go.ke>\r\n" + b"GARBAGE\r\n" * 20)
        sock.settimeout(2)
        try:
            sock.recv(4096)
        except OSError:
            pass
        sock.close()
        return True
    except OSError:
        return False


def summary(name, kind, results, seconds, flood_attempts):
    latencies = sorted(d for ok, d in results if ok)
    pct = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1) if latencies else None
    ok = sum(1 for good, _ in results if good)
    return {"phase": name, "client": kind, "requests": len(results), "succeeded": ok,
            "success_pct": round(100.0 * ok / max(1, len(results)), 2),
            "per_s": round(ok / seconds, 1), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "flood_connections": flood_attempts}


def phase(name, ports, token, seconds, legit_threads, flood_threads):
    imap_ports, smtp_ports, http_ports = ports
    stop = time.time() + seconds
    results, lock = {"imap": [], "http": []}, threading.Lock()
    flood = {"attempts": 0}

    def legit(worker):
        n = worker + 1
        kind = "imap" if worker % 2 == 0 else "http"
        while time.time() < stop:
            started = time.time()
            try:
                if kind == "imap":
                    ok = legit_session(imap_ports[worker % len(imap_ports)], n)
                else:
                    ok = legit_call(http_ports[worker % len(http_ports)], token)
            except OSError:
                ok = False
            with lock:
                results[kind].append((ok, time.time() - started))
            if kind == "http":
                # An application pacing itself (20 calls a second per thread), far below
                # the rate one source may send.
                time.sleep(0.05)

    def flooder(worker):
        rng = random.Random(worker)
        while time.time() < stop:
            flood_once(imap_ports, smtp_ports, http_ports, rng)
            with lock:
                flood["attempts"] += 1

    threads = [threading.Thread(target=legit, args=(w,)) for w in range(legit_threads)]
    threads += [threading.Thread(target=flooder, args=(w,)) for w in range(flood_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [summary(name, kind, results[kind], seconds, flood["attempts"]) for kind in ("imap", "http")]


def main():
    ports = tuple([int(p) for p in arg.split(",")] for arg in sys.argv[1:4])
    token = sys.argv[4]
    seconds, legit_threads, flood_threads = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
    for name, flooders in (("no flood", 0), ("flood", flood_threads)):
        for r in phase(name, ports, token, seconds, legit_threads, flooders):
            print(f"  {r['phase']:>9} {r['client']}: {r['succeeded']}/{r['requests']} ok ({r['success_pct']} %), "
                  f"{r['per_s']}/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms; "
                  f"flood connections {r['flood_connections']}", flush=True)
            print("  " + json.dumps(r), flush=True)


main()
