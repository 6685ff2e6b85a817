#!/usr/bin/env python3
"""Relay CPU per instance with disjoint rooms: one channel against interest routing.

For each instance count N (2, 3, 4 by default) and each routing (`one-channel`, then
`interest`), it starts a redis-server and N `anyws-fixture --redis URL --redis-routing MODE`
processes; instance i has one WebSocket subscriber to topic `room-i` (its own room, which no
other instance has), and MESSAGES publishes to `room-i` are made on instance i
(`GET /publish`, pipelined on a keep-alive connection), all instances at once. It checks that
every subscriber got all of its room's messages, and prints the CPU time (user + system, from
/proc) each fixture process spent during the publishing, and `relaysReceived` from
`GET /backplane/stats`. The ratio interest / one-channel is the figure: same run, same load.

    cargo build --release -p anyws-fixture
    bench/rooms.py [--runtime tokio] [--messages 20000] [--instances 2,3,4]

redis-server and the fixtures run on CPU 0 (taskset), this client on CPU 1 when there are two.
"""

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "anyws-fixture"
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_port(port, what, deadline=10.0):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"rooms.py: {what} did not listen on {port}")


def get(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1]


class Subscriber:
    """A raw WebSocket client: subscribes to a topic, then counts the texts that start with a
    prefix."""

    def __init__(self, port, topic, prefix):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /rooms HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        self.buf = self.buf.split(b"\r\n\r\n", 1)[1]
        self.prefix = prefix.encode()
        self.count = 0
        self.frame()  # the welcome line
        self.send(f"subscribe {topic}")
        while self.frame() != f"subscribed {topic}".encode():
            pass
        self.thread = threading.Thread(target=self.count_all, daemon=True)
        self.thread.start()

    def send(self, text):
        payload = text.encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    def need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def frame(self):
        self.need(2)
        length = self.buf[1] & 0x7F
        head = 2
        if length == 126:
            self.need(4)
            length = int.from_bytes(self.buf[2:4], "big")
            head = 4
        elif length == 127:
            self.need(10)
            length = int.from_bytes(self.buf[2:10], "big")
            head = 10
        self.need(head + length)
        payload = self.buf[head : head + length]
        self.buf = self.buf[head + length :]
        return payload

    def count_all(self):
        try:
            while True:
                if self.frame().startswith(self.prefix):
                    self.count += 1
        except (EOFError, OSError):
            pass


def publish_all(port, topic, prefix, messages):
    """MESSAGES pipelined GET /publish on one keep-alive connection, 100 in flight."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        answered = 0
        data = b""
        sent = 0
        while answered < messages:
            batch = min(100, messages - sent)
            if batch and sent - answered < 200:
                s.sendall(
                    b"".join(
                        f"GET /publish?topic={topic}&message={prefix}{sent + i} HTTP/1.1\r\n"
                        f"Host: x\r\n\r\n".encode()
                        for i in range(batch)
                    )
                )
                sent += batch
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("rooms.py: the fixture closed the publishing connection")
            data += chunk
            marker = b"HTTP/1.1 200"
            found = data.count(marker)
            if found:
                answered += found
                data = data[data.rfind(marker) + len(marker) :]


def run(runtime, routing, n, messages, server_cpu):
    work = tempfile.mkdtemp(prefix="anyws-rooms-")
    procs = []
    try:
        redis_port = free_port()
        procs.append(
            subprocess.Popen(
                ["taskset", "-c", server_cpu, "redis-server", "--port", str(redis_port),
                 "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", work],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )
        wait_port(redis_port, "redis-server")
        ports = []
        fixtures = []
        for i in range(n):
            port = free_port()
            env = dict(os.environ, PORT=str(port))
            log = open(os.path.join(work, f"fixture-{i}.log"), "w")
            p = subprocess.Popen(
                ["taskset", "-c", server_cpu, FIXTURE, "--runtime", runtime, "--redis",
                 f"redis://127.0.0.1:{redis_port}", "--redis-routing", routing],
                env=env, stdout=subprocess.DEVNULL, stderr=log,
            )
            procs.append(p)
            fixtures.append(p)
            ports.append(port)
            wait_port(port, f"fixture {i}")
        subs = [Subscriber(port, f"room-{i}", f"m{i}-") for i, port in enumerate(ports)]
        before = [cpu_seconds(p.pid) for p in fixtures]
        started = time.time()
        threads = [
            threading.Thread(target=publish_all, args=(port, f"room-{i}", f"m{i}-", messages))
            for i, port in enumerate(ports)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        deadline = time.time() + 60
        while any(s.count < messages for s in subs) and time.time() < deadline:
            time.sleep(0.05)
        # With one channel every instance also receives the others' publishes, which no
        # subscriber waits for: wait until those have arrived too, so their CPU counts.
        expected = (n - 1) * messages if routing == "one-channel" else 0
        while time.time() < deadline:
            relays = [json.loads(get(port, "/backplane/stats"))["relaysReceived"] for port in ports]
            if all(r >= expected for r in relays):
                break
            time.sleep(0.05)
        elapsed = time.time() - started
        cpu = [cpu_seconds(p.pid) - b for p, b in zip(fixtures, before)]
        counts = [s.count for s in subs]
        if any(c != messages for c in counts):
            sys.exit(f"rooms.py: subscribers got {counts}, expected {messages} each")
        return cpu, relays, elapsed
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["rm", "-rf", work])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", default="tokio")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--instances", default="2,3,4")
    args = parser.parse_args()
    server_cpu = "0"
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})
    print(f"== rooms on {args.runtime}: {args.messages} publishes per instance to its own room; "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| instances | routing | CPU per instance (ms, mean) | relays received per instance (mean) | interest / one-channel CPU |")
    print("| --- | --- | --- | --- | --- |")
    for n in [int(x) for x in args.instances.split(",")]:
        results = {}
        for routing in ["one-channel", "interest"]:
            cpu, relays, _ = run(args.runtime, routing, n, args.messages, server_cpu)
            results[routing] = (sum(cpu) / n, sum(relays) / n)
        for routing in ["one-channel", "interest"]:
            cpu, relays = results[routing]
            ratio = (
                f"{results['interest'][0] / results['one-channel'][0]:.2f}"
                if routing == "interest" else ""
            )
            print(f"| {n} | {routing} | {cpu * 1000:.0f} | {relays:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
