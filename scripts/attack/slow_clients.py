#!/usr/bin/env python3
"""Measures how payguard holds up against slow and flooding clients (docs/security.md, "Attack
figures"). Standard library only. Start payguard first (scripts/attack/payguard.yaml), then:

  scripts/attack/slow_clients.py header-flood --pid PID [--connections 1000] [--head-bytes 1000000]
      Opens CONNECTIONS connections; each sends a request head of about HEAD_BYTES (header lines
      of ~4 KB, fewer than Pingora's 256-field limit) without the blank line that ends it, then
      holds the connection open. Prints payguard's resident memory (VmRSS of PID) before, while
      every connection is held, and after they are closed.

  scripts/attack/slow_clients.py body-stall [--path /notify/stripe] [--header 'NAME: VALUE' ...]
      Sends a request head announcing a 1000-byte body, sends 10 bytes of it, then nothing.
      Prints the status line payguard answers with and how long after the last byte it came.
"""

import argparse
import resource
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


def header_flood(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    line = b"X-Fill-%04d: " + b"a" * 4000 + b"\r\n"
    lines = max(1, args.head_bytes // len(line % 0))
    head = b"GET / HTTP/1.1\r\nHost: payguard.test\r\n" + b"".join(line % i for i in range(lines))
    print(f"{args.connections} connections x {len(head)} bytes of head ({lines} header lines), no final CRLF")
    before = rss_kib(args.pid)
    print(f"RSS before: {mib(before)}")
    conns = []
    refused = 0
    start = time.monotonic()
    for _ in range(args.connections):
        s = socket.create_connection((args.host, args.port))
        s.settimeout(args.send_timeout)
        try:
            s.sendall(head)
        except OSError:
            refused += 1
        conns.append(s)
    sent = time.monotonic() - start
    time.sleep(args.hold)
    during = rss_kib(args.pid)
    # A connection payguard already gave up on reads as closed (b"") or answers with a status.
    closed = 0
    for s in conns:
        s.setblocking(False)
        try:
            if s.recv(1, socket.MSG_PEEK) is not None:
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    print(f"sent in {sent:.1f}s; held {args.hold}s; RSS during: {mib(during)} "
          f"(+{mib(during - before)}); {refused} sends failed, {closed} connections closed or answered by payguard")
    for s in conns:
        s.close()
    time.sleep(args.settle)
    after = rss_kib(args.pid)
    print(f"RSS {args.settle}s after closing: {mib(after)}")


def body_stall(args):
    s = socket.create_connection((args.host, args.port))
    s.settimeout(args.wait)
    extra = "".join(f"{h}\r\n" for h in args.header)
    head = (f"POST {args.path} HTTP/1.1\r\nHost: payguard.test\r\nContent-Type: application/json\r\n"
            f"{extra}Content-Length: 1000\r\n\r\n").encode()
    s.sendall(head + b'{"id":"ev')
    stalled_at = time.monotonic()
    try:
        answer = s.recv(4096)
    except socket.timeout:
        print(f"no answer within {args.wait}s")
        return 1
    waited = time.monotonic() - stalled_at
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    print(f"{args.path}: {status!r} {waited:.2f}s after the last body byte")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18080)
    sub = p.add_subparsers(dest="scenario", required=True)
    f = sub.add_parser("header-flood")
    f.add_argument("--pid", type=int, required=True, help="payguard's process id (for VmRSS)")
    f.add_argument("--connections", type=int, default=1000)
    f.add_argument("--head-bytes", type=int, default=1_000_000)
    f.add_argument("--hold", type=float, default=5.0, help="seconds to hold every connection before measuring")
    f.add_argument("--settle", type=float, default=5.0, help="seconds to wait after closing before measuring")
    f.add_argument("--send-timeout", type=float, default=10.0)
    b = sub.add_parser("body-stall")
    b.add_argument("--path", default="/notify/stripe")
    b.add_argument("--wait", type=float, default=120.0)
    b.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="an extra request header (repeatable)")
    args = p.parse_args()
    if args.scenario == "header-flood":
        return header_flood(args)
    return body_stall(args)


if __name__ == "__main__":
    sys.exit(main() or 0)
