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
import itertools
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


async def _asker(port: int, deadline: float, numbers, result: FloodResult):
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            result.connections_refused += 1
            await asyncio.sleep(0.05)
            continue
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
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            result.connections_refused += 1
            await asyncio.sleep(0.05)
            continue
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
