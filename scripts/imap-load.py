#!/usr/bin/python3
"""IMAP fetch load for scripts/bench-imap, with Python's imaplib and one thread a session.

  imap-load.py count --servers HOST:PORT[,...] --users N [--login FMT --password FMT]
      Logs in as each user in turn (STARTTLS first; user n on server (n - 1) % #servers),
      EXAMINEs INBOX and prints the total number of messages (EXISTS) on stdout, each
      user's count on stderr.

  imap-load.py run --servers HOST:PORT[,...] --users N --sessions N --duration S
                   [--batch N] [--expect N] [--server-root PID] [--slow S] [--grace S]
      Session i (0-based) logs in as user (i % users) + 1 on server i % #servers, after
      STARTTLS, EXAMINEs INBOX, reads the UIDs (UID SEARCH ALL), and waits for the others.
      Then for DURATION seconds every session fetches its whole mailbox again and again,
      `UID FETCH first:last (UID FLAGS RFC822.SIZE BODY.PEEK[])` over BATCH messages at
      a time (the sessions of one user start at different batches, so they do not read
      the same messages in lockstep). Each answer is checked: as many messages as asked
      for, each body as long as its RFC822.SIZE. A broken connection is reopened. A batch
      unanswered for --slow seconds (10) is told about on stderr at once; a session still
      waiting --grace seconds (15) after the end is given up on (an error).
      Prints one line of key=value results on stdout: messages fetched, elapsed seconds
      (from the common start to the end of the last batch, or of the duration if later),
      messages a second, p50 and p99 of the batch latency in ms, batches, errors, MB
      fetched, the CPU seconds this process used and, with --server-root, those of that
      process and its descendants (Dovecot's master, `umsd dev`), how busy the machine's
      CPUs were (all processes), and the TLS version and cipher. Errors (with the
      server's reply) go to stderr.

  imap-load.py mixed --servers HOST:PORT[,...] --users N --sessions N --duration S
                     [--relogin N] [--size BYTES] [--server-root PID]
      A mail client's day, from one address: session i works on user (i % users) + 1 on
      server i % #servers, in rounds for DURATION seconds: (every RELOGIN rounds, default
      10, a new connection: STARTTLS and LOGIN) SELECT INBOX, FETCH 10 messages whole,
      STORE +FLAGS (\Seen) on them, APPEND a message of SIZE bytes (4096), and UID STORE
      \Deleted + EXPUNGE of that message again, so the mailbox keeps its size. Every answer
      is checked. Prints one line of key=value results: per command (login, select, fetch,
      store, append, expunge) operations a second and p50/p99 latency in ms, and errors,
      elapsed seconds, CPU as for `run`.

The {n} in --login and --password is the user's number. Certificates are not verified
(both systems in the benchmark use self-signed ones). Latencies are measured in this
process, so they include waiting for Python's GIL with the other session threads.
"""

import argparse
import collections
import imaplib
import os
import re
import resource
import ssl
import sys
import threading
import time

SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
ITEMS = "(UID FLAGS RFC822.SIZE BODY.PEEK[])"


def tls_context():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


CONTEXT = tls_context()


def connect(server, login, password, timeout=120):
    host, port = server.rsplit(":", 1)
    imap = imaplib.IMAP4(host, int(port), timeout=timeout)
    try:
        imap.starttls(ssl_context=CONTEXT)
        imap.login(login, password)
    except BaseException:
        close(imap)
        raise
    return imap


def close(imap):
    try:
        imap.shutdown()
    except Exception:
        pass


def examine(imap):
    """EXAMINE INBOX; the number of messages it holds."""
    typ, data = imap.select("INBOX", readonly=True)
    if typ != "OK":
        raise RuntimeError(f"EXAMINE INBOX: {typ} {text(data)}")
    return int(data[0])


def text(data):
    parts = []
    for item in data or []:
        if isinstance(item, tuple):
            item = item[0]
        parts.append(item.decode(errors="replace") if isinstance(item, bytes) else str(item))
    return " ".join(parts)


def describe(error):
    message = str(error).strip() or repr(error)
    return f"{type(error).__name__}: {message}"[:400]


def cpu_of_tree(root):
    """CPU seconds used by process `root` and its descendants, with reaped children."""
    if not root:
        return None
    parents, times = {}, {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        # After the command: state ppid ... utime (11) stime cutime cstime (14).
        parents[int(name)] = int(fields[1])
        times[int(name)] = sum(int(x) for x in fields[11:15])
    children = collections.defaultdict(list)
    for pid, parent in parents.items():
        children[parent].append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu():
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


def own_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values, p):
    """Nearest-rank percentile of sorted `values`."""
    if not values:
        return float("nan")
    rank = max(1, -(-len(values) * p // 100))
    return values[int(rank) - 1]


def count(args):
    total = 0
    for n in range(1, args.users + 1):
        server = args.servers[(n - 1) % len(args.servers)]
        imap = connect(server, args.login.format(n=n), args.password.format(n=n))
        try:
            exists = examine(imap)
            imap.logout()
        finally:
            close(imap)
        print(f"  {args.login.format(n=n)} on {server}: {exists} messages", file=sys.stderr)
        total += exists
    print(total)


class Errors:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()

    def add(self, session, what):
        with self.lock:
            if what not in self.counts:
                print(f"  session {session}: {what}", file=sys.stderr, flush=True)
            self.counts[what] += 1

    def total(self):
        return sum(self.counts.values())


class Session:
    def __init__(self, index, args, errors):
        self.index = index
        self.n = index % args.users + 1
        self.server = args.servers[index % len(args.servers)]
        self.login = args.login.format(n=self.n)
        self.password = args.password.format(n=self.n)
        self.args = args
        self.errors = errors
        self.imap = None
        self.chunks = []
        self.latencies = []
        self.fetched = 0
        self.bytes = 0
        self.done = None
        self.tls = None
        self.pending = None  # (monotonic start, command) of the batch in flight

    def open(self):
        self.imap = connect(self.server, self.login, self.password)
        self.tls = f"{self.imap.sock.version()}/{self.imap.sock.cipher()[0]}"
        exists = examine(self.imap)
        if self.args.expect is not None and exists != self.args.expect:
            self.errors.add(self.index, f"{self.login} holds {exists} messages, expected {self.args.expect}")
        typ, data = self.imap.uid("SEARCH", "ALL")
        if typ != "OK":
            raise RuntimeError(f"UID SEARCH ALL: {typ} {text(data)}")
        uids = sorted(int(u) for u in b" ".join(data).split())
        batch = self.args.batch
        self.chunks = [uids[i : i + batch] for i in range(0, len(uids), batch)]

    def hang_up(self):
        """LOGOUT (best effort) and close the connection, if one is open."""
        if self.imap is not None:
            try:
                self.imap.logout()
            except Exception:
                pass
            close(self.imap)
            self.imap = None

    def reopen(self):
        close(self.imap)
        self.imap = None
        time.sleep(1)
        try:
            self.open()
        except Exception as e:
            self.errors.add(self.index, f"reconnecting: {describe(e)}")
            close(self.imap)
            self.imap = None

    def fetch(self, chunk):
        """One batch; (messages, bytes) or raises."""
        typ, data = self.imap.uid("FETCH", f"{chunk[0]}:{chunk[-1]}", ITEMS)
        if typ != "OK":
            raise RuntimeError(f"UID FETCH {chunk[0]}:{chunk[-1]}: {typ} {text(data)}")
        messages = size_errors = 0
        nbytes = 0
        for i, item in enumerate(data):
            if not isinstance(item, tuple):
                continue
            messages += 1
            nbytes += len(item[1])
            size = SIZE.search(item[0])
            if size is None and i + 1 < len(data) and isinstance(data[i + 1], bytes):
                size = SIZE.search(data[i + 1])  # RFC822.SIZE after the literal
            if size is None or int(size.group(1)) != len(item[1]):
                size_errors += 1
        if messages != len(chunk):
            raise RuntimeError(f"UID FETCH {chunk[0]}:{chunk[-1]}: {messages} messages in the answer, {len(chunk)} asked for")
        if size_errors:
            raise RuntimeError(f"UID FETCH {chunk[0]}:{chunk[-1]}: {size_errors} bodies differ from their RFC822.SIZE")
        return messages, nbytes

    def run(self, barrier, clock):
        try:
            self.open()
        except Exception as e:
            self.errors.add(self.index, f"{self.login} on {self.server}: {describe(e)}")
            close(self.imap)
            self.imap = None
        barrier.wait()
        end = clock["end"]
        k = (self.index // self.args.users) * 7 % len(self.chunks) if self.chunks else 0
        while time.monotonic() < end:
            if self.imap is None or not self.chunks:
                self.reopen()
                continue
            chunk = self.chunks[k]
            k = (k + 1) % len(self.chunks)
            started = time.perf_counter()
            self.pending = (time.monotonic(), f"UID FETCH {chunk[0]}:{chunk[-1]}")
            try:
                messages, nbytes = self.fetch(chunk)
            except (imaplib.IMAP4.abort, OSError, EOFError) as e:
                self.pending = None
                self.errors.add(self.index, f"connection: {describe(e)}")
                self.reopen()
                continue
            except Exception as e:
                self.pending = None
                self.errors.add(self.index, describe(e))
                continue
            self.pending = None
            self.latencies.append(time.perf_counter() - started)
            self.fetched += messages
            self.bytes += nbytes
        self.done = time.monotonic()
        self.hang_up()


def start_barrier(args, sessions, clock):
    """A barrier the sessions pass together; the last to arrive starts the clock."""

    def start():
        clock["cpu"] = own_cpu()
        clock["machine"] = machine_cpu()
        clock["server_cpu"] = cpu_of_tree(args.server_root)
        clock["start"] = time.monotonic()
        clock["end"] = clock["start"] + args.duration

    return threading.Barrier(len(sessions), action=start, timeout=900)


def resources(args, clock):
    """CPU used since the clock started: by this process, by the server's process tree,
    and how busy the machine's CPUs were."""
    cpu = own_cpu() - clock["cpu"]
    busy, total = (b - a for a, b in zip(clock["machine"], machine_cpu()))
    server_cpu = cpu_of_tree(args.server_root)
    return {
        "client_cpu_s": f"{cpu:.1f}",
        "server_cpu_s": "-" if server_cpu is None else f"{server_cpu - clock['server_cpu']:.1f}",
        "machine_busy": f"{100 * busy / total:.0f}%" if total else "-",
    }


def report_errors(errors):
    if errors.total():
        print(f"  {errors.total()} errors:", file=sys.stderr)
        for what, n in errors.counts.most_common(10):
            print(f"    {n:6d}  {what}", file=sys.stderr)


def start_sessions(kind, args):
    """`args.sessions` sessions of `kind`, each on a thread of its own, started together:
    (errors, sessions, clock, threads); the clock starts when all are ready."""
    errors = Errors()
    sessions = [kind(i, args, errors) for i in range(args.sessions)]
    clock = {}
    barrier = start_barrier(args, sessions, clock)
    threads = [threading.Thread(target=s.run, args=(barrier, clock), daemon=True) for s in sessions]
    for thread in threads:
        thread.start()
    return errors, sessions, clock, threads


def run(args):
    setup = time.monotonic()
    errors, sessions, clock, threads = start_sessions(Session, args)
    # Wait for the sessions, telling about batches that go unanswered for long; give up
    # on those still waiting `grace` seconds after the end (they count as errors).
    told = set()
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        now = time.monotonic()
        for s in sessions:
            pending = s.pending
            if pending and now - pending[0] >= args.slow and (s.index, pending) not in told:
                told.add((s.index, pending))
                at = f"{pending[0] - clock['start']:.1f} s" if "start" in clock else "setup"
                print(f"  session {s.index} ({s.login} on {s.server}): {pending[1]}, sent at {at}, unanswered after {now - pending[0]:.0f} s", file=sys.stderr, flush=True)
        if "end" in clock and now > clock["end"] + args.grace:
            break
    stuck = [s for s, t in zip(sessions, threads) if t.is_alive()]
    for s in stuck:
        pending = s.pending
        what = f"{pending[1]}: no answer within {time.monotonic() - pending[0]:.0f} s" if pending else "session did not finish"
        errors.add(s.index, f"{what} (given up {args.grace:g} s after the end)")
    used = resources(args, clock)
    end = max([clock["end"]] + [s.done for s in sessions if s.done is not None])
    elapsed = end - clock["start"]
    latencies = sorted(x for s in sessions for x in s.latencies)
    fetched = sum(s.fetched for s in sessions)
    tls = sorted({s.tls for s in sessions if s.tls})
    print(f"  {len(sessions)} sessions ready after {clock['start'] - setup:.1f} s; measured for {elapsed:.1f} s", file=sys.stderr)
    report_errors(errors)
    result = {
        "fetched": fetched,
        "elapsed": f"{elapsed:.3f}",
        "rate": f"{fetched / elapsed:.0f}" if elapsed > 0 else "-",
        "p50_ms": f"{percentile(latencies, 50) * 1000:.1f}",
        "p99_ms": f"{percentile(latencies, 99) * 1000:.1f}",
        "batches": len(latencies),
        "errors": errors.total(),
        "mbytes": f"{sum(s.bytes for s in sessions) / 1e6:.1f}",
        **used,
        "tls": ",".join(tls) or "-",
    }
    print(" ".join(f"{k}={v}" for k, v in result.items()), flush=True)


MIXED = ("login", "select", "fetch", "store", "append", "expunge")


class Mixed(Session):
    """A client's day over and over (see `mixed` in the module docstring)."""

    def __init__(self, index, args, errors):
        super().__init__(index, args, errors)
        self.times = {name: [] for name in MIXED}
        self.body = (f"From: bench@example.org\r\nTo: {self.login}\r\nSubject: draft {index}\r\n\r\n".encode()
                     + b"x" * max(0, args.size - 80) + b"\r\n")

    def timed(self, name, call):
        started = time.perf_counter()
        self.pending = (time.monotonic(), name)
        result = call()
        self.pending = None
        self.times[name].append(time.perf_counter() - started)
        return result

    def checked(self, name, typ, data):
        if typ != "OK":
            raise RuntimeError(f"{name}: {typ} {text(data)}")
        return data

    def login_again(self):
        self.hang_up()
        self.imap = self.timed("login", lambda: connect(self.server, self.login, self.password))
        self.tls = f"{self.imap.sock.version()}/{self.imap.sock.cipher()[0]}"

    def round(self, number):
        if self.imap is None or number % self.args.relogin == 0:
            self.login_again()
        imap = self.imap
        data = self.checked("select", *self.timed("select", lambda: imap.select("INBOX")))
        exists = int(data[0])
        if exists >= 10:
            first = 1 + (number * 10 + self.index * 7) % (exists - 9)
            window = f"{first}:{first + 9}"
            data = self.checked("fetch", *self.timed("fetch", lambda: imap.fetch(window, "(UID FLAGS BODY[])")))
            bodies = sum(1 for item in data if isinstance(item, tuple))
            if bodies != 10:
                raise RuntimeError(f"FETCH {window}: {bodies} messages in the answer, 10 asked for")
            self.checked("store", *self.timed("store", lambda: imap.store(window, "+FLAGS", "(\\Seen)")))
        typ, data = self.timed("append", lambda: imap.append("INBOX", None, None, self.body))
        self.checked("append", typ, data)
        uid = re.search(rb"APPENDUID \d+ (\d+)", data[0] if data and data[0] else b"")
        if uid is None:
            raise RuntimeError(f"APPEND: no APPENDUID in {text(data)}")
        uid = uid.group(1).decode()

        def remove():
            self.checked("expunge", *imap.uid("STORE", uid, "+FLAGS", "(\\Deleted)"))
            return imap.expunge()

        self.checked("expunge", *self.timed("expunge", remove))

    def run(self, barrier, clock):
        barrier.wait()
        end, number = clock["end"], 0
        while time.monotonic() < end:
            try:
                self.round(number)
            except (imaplib.IMAP4.abort, OSError, EOFError) as e:
                self.pending = None
                self.errors.add(self.index, f"connection: {describe(e)}")
                close(self.imap)
                self.imap = None
            except Exception as e:
                self.pending = None
                self.errors.add(self.index, describe(e))
            number += 1
        self.done = time.monotonic()
        self.hang_up()


def mixed(args):
    errors, sessions, clock, threads = start_sessions(Mixed, args)
    for thread in threads:
        thread.join(timeout=args.duration + args.grace + 60)
    used = resources(args, clock)
    end = max([clock["end"]] + [s.done for s in sessions if s.done is not None])
    elapsed = end - clock["start"]
    report_errors(errors)
    result = {"elapsed": f"{elapsed:.3f}", "errors": errors.total()}
    for name in MIXED:
        times = sorted(x for s in sessions for x in s.times[name])
        result[f"{name}_ops"] = len(times)
        result[f"{name}_rate"] = f"{len(times) / elapsed:.1f}" if elapsed > 0 else "-"
        result[f"{name}_p50_ms"] = f"{percentile(times, 50) * 1000:.1f}"
        result[f"{name}_p99_ms"] = f"{percentile(times, 99) * 1000:.1f}"
    result.update(used)
    print(" ".join(f"{k}={v}" for k, v in result.items()), flush=True)


def main():
    parser = argparse.ArgumentParser(description="IMAP fetch load (see the module docstring)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("count", "run", "mixed"):
        p = sub.add_parser(name)
        p.add_argument("--servers", required=True, type=lambda s: s.split(","), help="HOST:PORT[,HOST:PORT...]")
        p.add_argument("--users", type=int, default=10)
        p.add_argument("--login", default="user{n}@ministry.go.ke")
        p.add_argument("--password", default="demo-password-{n}")
        if name == "mixed":
            p.add_argument("--sessions", type=int, default=20)
            p.add_argument("--duration", type=float, default=30)
            p.add_argument("--relogin", type=int, default=10, help="rounds per connection")
            p.add_argument("--size", type=int, default=4096, help="bytes of each APPENDed message")
            p.add_argument("--server-root", type=int, help="pid whose process tree's CPU time to report")
            p.add_argument("--grace", type=float, default=15)
        if name == "run":
            p.add_argument("--sessions", type=int, default=50)
            p.add_argument("--duration", type=float, default=20)
            p.add_argument("--batch", type=int, default=50)
            p.add_argument("--expect", type=int, help="messages each INBOX should hold")
            p.add_argument("--server-root", type=int, help="pid whose process tree's CPU time to report")
            p.add_argument("--slow", type=float, default=10, help="tell about a batch unanswered for this long")
            p.add_argument("--grace", type=float, default=15, help="give up on sessions this long after the end")
    args = parser.parse_args()
    if args.users < 1 or getattr(args, "sessions", 1) < 1 or getattr(args, "batch", 1) < 1:
        parser.error("--users, --sessions and --batch must be positive")
    if getattr(args, "relogin", 1) < 1:
        parser.error("--relogin must be positive")
    {"count": count, "run": run, "mixed": mixed}[args.command](args)


if __name__ == "__main__":
    main()
