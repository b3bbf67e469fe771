"""What an app can throw at the sidecar at once, and the sidecar's memory while it does.

`flood()` runs, for a while, on one asyncio loop: slowloris connections that send a header line a second
and reconnect when cut, and many keep-alive connections that each ask, one after another, for a resource
no one has seen before (`/apis/made.up/v1/thing<N>`), so that every request is a new metric key.
`PeakRss` samples a process's resident set size meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import http.client
import itertools
import json
import threading
import time

MADE_UP_PREFIX = "/apis/made.up/v1/thing"
# A connection the sidecar neither answers nor closes for this long counts as stalled (the kernel
# completes a handshake even while Envoy has stopped accepting).
STALL_SECONDS = 10


def memory_kib(pid: int) -> dict:
    """VmRSS and RssAnon of a process, in KiB (/proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {name: int(fields[name].split()[0]) for name in ("VmRSS", "RssAnon")}


def rss_bytes(pid: int) -> int:
    return memory_kib(pid)["VmRSS"] * 1024


class PeakRss:
    """Samples a process's resident set size in a thread until stopped; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.005):
        self.pid, self.interval, self.peak, self.samples = pid, interval, rss_bytes(pid), 1
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        while not self.stopped.wait(self.interval):
            self.peak = max(self.peak, rss_bytes(self.pid))
            self.samples += 1

    def stop(self) -> int:
        self.stopped.set()
        self.thread.join()
        return self.peak


@dataclasses.dataclass
class FloodResult:
    statuses: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    resources_asked: int = 0
    slowloris_connections: int = 0
    slowloris_cut: int = 0           # closed by the sidecar (header timeout, connection limit)
    connections_refused: int = 0     # closed or reset before an answer
    stalled: int = 0                 # neither answered nor closed within STALL_SECONDS


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Reads one HTTP/1.1 response (content-length or chunked) and returns its status."""
    return await asyncio.wait_for(_read_response_unbounded(reader), STALL_SECONDS)


async def _read_response_unbounded(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while size := int((await reader.readline()).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readline()
    return int(status_line.split()[1])


async def _connect(port: int, result: FloodResult):
    """A connection to the sidecar; None, counted, if it was refused."""
    try:
        return await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        result.connections_refused += 1
        await asyncio.sleep(0.05)  # deliberate: a refused client's pause before it tries again
        return None


async def _asker(port: int, deadline: float, numbers, result: FloodResult):
    while time.monotonic() < deadline:
        if not (connection := await _connect(port, result)):
            continue
        reader, writer = connection
        try:
            while time.monotonic() < deadline:
                writer.write(f"GET {MADE_UP_PREFIX}{next(numbers)} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
                result.resources_asked += 1
                result.statuses[await _read_response(reader)] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            result.connections_refused += 1
        except asyncio.TimeoutError:
            result.stalled += 1
        finally:
            writer.close()


async def _slowloris(port: int, deadline: float, result: FloodResult):
    while time.monotonic() < deadline:
        if not (connection := await _connect(port, result)):
            continue
        reader, writer = connection
        result.slowloris_connections += 1
        try:
            writer.write(b"GET /api HTTP/1.1\r\nHost: localhost\r\n")
            for line in itertools.count():
                if time.monotonic() >= deadline:
                    break
                await writer.drain()
                try:
                    await asyncio.wait_for(reader.read(4096), 1.0)
                except asyncio.TimeoutError:
                    writer.write(f"X-Slow-{line}: a\r\n".encode())
                    continue
                # An answer (a 408 Status) or a close: the sidecar cut us off.
                raise ConnectionResetError
        except OSError:
            result.slowloris_cut += 1
        finally:
            writer.close()


async def _flood(port: int, seconds: float, slowloris: int, askers: int, first_number: int) -> FloodResult:
    result = FloodResult()
    deadline = time.monotonic() + seconds
    numbers = itertools.count(first_number)
    tasks = [_slowloris(port, deadline, result) for _ in range(slowloris)]
    tasks += [_asker(port, deadline, numbers, result) for _ in range(askers)]
    await asyncio.gather(*tasks)
    return result


def flood(port: int, seconds: float, slowloris: int, askers: int, first_number: int = 0) -> FloodResult:
    return asyncio.run(_flood(port, seconds, slowloris, askers, first_number))


# --- The metrics port, from the app or the cluster network --------------------------------------------------
# Each attack holds `count` connections open at once for a while, and opens another as soon as one is cut (after
# RECONNECT_PAUSE, so that a thousand cut connections are not a busy loop). They run in a process of their own,
# `python -m harness.flood`, so that one can run in another network namespace.

SCRAPE = b"GET /stats/prometheus HTTP/1.1\r\nHost: pod\r\n\r\n"
# As the issue measured them: request heads as large as the app's listener allows, never finished.
HEAD_BYTES = 31 * 1024
# A scrape no one reads is held this long, then its connection is closed and another one asks again.
UNREAD_HOLD_SECONDS = 3.0
RECONNECT_PAUSE = 1.0


@dataclasses.dataclass
class HeldResult:
    opened: int = 0
    connect_failed: int = 0     # refused or reset while connecting
    closed_unanswered: int = 0  # closed by the sidecar with no answer: at the connection limit, or idle
    answered: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # status, then closed


def _unfinished_head() -> bytes:
    head = b"GET /stats/prometheus HTTP/1.1\r\nHost: pod\r\n"
    filler = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    return head + filler * ((HEAD_BYTES - len(head)) // len(filler))


async def _held(host: str, port: int, deadline: float, send: bytes, read: bool, hold: float, result: HeldResult):
    """One attacker: connect, send `send`, then hold the connection (reading what comes back if `read`, to see
    it cut) for `hold` seconds or until cut; then again, until the deadline."""
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            result.connect_failed += 1
            await asyncio.sleep(RECONNECT_PAUSE)
            continue
        result.opened += 1
        cut = False
        try:
            if send:
                writer.write(send)
            until = min(deadline, time.monotonic() + hold)
            received = b""
            while read and time.monotonic() < until:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), until - time.monotonic())
                except asyncio.TimeoutError:
                    break
                if not chunk:
                    cut = True
                    break
                received += chunk
            if not read:
                await asyncio.sleep(max(0.0, until - time.monotonic()))
            if cut and received:
                result.answered[received.split(b" ", 2)[1].decode(errors="replace")] += 1
            elif cut:
                result.closed_unanswered += 1
        except OSError:
            cut = True
            result.closed_unanswered += 1
        finally:
            writer.close()
        if cut:
            await asyncio.sleep(RECONNECT_PAUSE)


METRICS_ATTACKS = {
    # (what each connection sends, whether it reads, how long it holds its connection)
    "unread-scrapes": (SCRAPE, False, UNREAD_HOLD_SECONDS),
    "slow-heads": (_unfinished_head(), True, float("inf")),
    "idle-connections": (b"", True, float("inf")),
}
# The numbers: 1,000 unread scrapes, 3,000 unfinished heads, 15,000 idle connections.
METRICS_ATTACK_SIZES = {"unread-scrapes": 1000, "slow-heads": 3000, "idle-connections": 15000}


async def _metrics_flood(host: str, port: int, seconds: float, attacks: dict) -> dict:
    deadline = time.monotonic() + seconds
    results = {name: HeldResult() for name in attacks}
    tasks = [_held(host, port, deadline, *METRICS_ATTACKS[name], results[name])
             for name, count in attacks.items() for _ in range(count)]
    await asyncio.gather(*tasks)
    # Not dataclasses.asdict: it rebuilds a Counter from (key, value) pairs, counting the pairs.
    return {name: {"connections": attacks[name], **vars(result), "answered": dict(result.answered)}
            for name, result in results.items()}


def metrics_flood(host: str, port: int, seconds: float, attacks: dict) -> dict:
    """Runs the named attacks at once, `attacks[name]` connections each; returns what each saw."""
    return asyncio.run(_metrics_flood(host, port, seconds, attacks))


def outcome(host: str, port: int, path: str, timeout: float = 3) -> str:
    """What one GET got: `200`, `Status <code>`, `closed` (cut before an answer), `timeout`, or `other <code>`."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    except TimeoutError:
        return "timeout"
    except (ConnectionError, http.client.HTTPException):
        return "closed"
    finally:
        connection.close()
    if response.status == 200:
        return "200"
    try:
        status = json.loads(body)
        if status["kind"] == "Status" and status["code"] == response.status:
            return f"Status {response.status}"
    except (ValueError, KeyError, TypeError):
        pass
    return f"other {response.status}"


def probe(host: str, port: int, seconds: float, paths: list, interval: float = 0.2) -> dict:
    """Asks for each path every `interval` for `seconds`, as the kubelet and Prometheus would: what each got."""
    outcomes = {path: collections.Counter() for path in paths}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for path in paths:
            outcomes[path][outcome(host, port, path)] += 1
        time.sleep(interval)  # deliberate: the scrapers' and probers' cadence
    return {path: dict(counts) for path, counts in outcomes.items()}


def main() -> None:
    import argparse
    import resource

    parser = argparse.ArgumentParser(description="Floods the sidecar's metrics port (NAME=COUNT…), or probes it "
                                                 "(--probe PATH…); prints what it saw as JSON.")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("attacks", nargs="*", metavar="NAME=COUNT")
    parser.add_argument("--probe", nargs="+", metavar="PATH", default=[])
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(args.host, args.port, args.seconds, args.probe)))
        return
    attacks = {name: int(count) for name, count in (item.split("=") for item in args.attacks)}
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(json.dumps(metrics_flood(args.host, args.port, args.seconds, attacks)))


if __name__ == "__main__":
    main()
