#!/usr/bin/env python3
"""What a peer costs the server with a large request head: opens N peers (WebSocket upgrades or
SSE event streams) against `anyws-fixture --app soak`, each request carrying one header of
--header-bytes bytes, keeps them open, and prints the server's resident memory growth per peer
(VmRSS from /proc, read after GET /soak/trim gives the allocator's free memory back).

    cargo build --release -p anyws-fixture
    bench/heads.py --runtime tokio --header-bytes 0          # the control
    bench/heads.py --runtime tokio --header-bytes 100000     # raises the head limit to fit

Compare the two runs: the difference is what the header costs each peer.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def read_until(sock, needle, buf=b""):
    while needle not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed before {needle!r}: {buf[:200]!r}")
        buf += chunk
    return buf


def get(port, path):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", default="target/release/anyws-fixture")
    parser.add_argument("--runtime", default="tokio")
    parser.add_argument("--transport", default="ws", choices=["ws", "sse"])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--header-bytes", type=int, default=0)
    args = parser.parse_args()

    port = free_port()
    command = [args.fixture, "--runtime", args.runtime, "--app", "soak",
               "--transport", args.transport]
    if args.header_bytes:
        command += ["--max-request-head-bytes", str(args.header_bytes + 16 * 1024)]
    server = subprocess.Popen(command, env={**os.environ, "PORT": str(port)},
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.02)
        get(port, "/soak/trim")
        before = rss_kib(server.pid)

        extra = f"X-Big: {'a' * args.header_bytes}\r\n" if args.header_bytes else ""
        if args.transport == "ws":
            request = ("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode()
            welcome = b"Welcome to the server"
        else:
            request = ("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                       f"{extra}\r\n").encode()
            welcome = b"data: Welcome to the server"
        peers = []
        for _ in range(args.connections):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(request)
            head = read_until(s, b"\r\n\r\n")
            status = head.split(b" ", 2)[1]
            if status not in (b"101", b"200"):
                raise RuntimeError(f"refused: {head[:200]!r}")
            read_until(s, welcome, head)
            peers.append(s)
        listed = len(json.loads(get(port, "/peers").split(b"\r\n\r\n", 1)[1])["peers"])
        get(port, "/soak/trim")
        time.sleep(0.2)
        get(port, "/soak/trim")
        after = rss_kib(server.pid)
        print(f"{args.runtime} {args.transport} header {args.header_bytes} B: "
              f"{args.connections} peers ({listed} listed), RSS {before} -> {after} KiB, "
              f"{(after - before) / args.connections:.1f} KiB per peer")
        for s in peers:
            s.close()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    sys.exit(main())
