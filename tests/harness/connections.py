"""What a proxy in front of the real API server costs it in connections (issue 19): the TCP connections one
process holds to a port, counted from /proc, while a workload of watches and requests runs through the proxy;
and the API server's own memory, from its Go runtime metrics."""

from __future__ import annotations

import http.client
import os
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

ESTABLISHED = "01"  # the TCP state in /proc/net/tcp


def established(pid: int, port: int) -> int:
    """TCP connections of process `pid` (every thread: one fd table) in state ESTABLISHED to remote `port`."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    count = 0
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                remote, state, inode = fields[2], fields[3], fields[9]
                if state == ESTABLISHED and int(remote.rsplit(":", 1)[1], 16) == port and inode in inodes:
                    count += 1
    return count


class PeakSampler(threading.Thread):
    """The most connections `pid` held to `port`, sampled every 20 ms until stopped."""

    def __init__(self, pid: int, port: int):
        super().__init__(daemon=True)
        self.pid, self.port, self.peak = pid, port, 0
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.02):
            self.peak = max(self.peak, established(self.pid, self.port))

    def stop(self) -> int:
        self.done.set()
        self.join()
        return max(self.peak, established(self.pid, self.port))


class Watches:
    """`count` watches through a proxy, each on its own HTTP/1.1 connection as a plain app holds them; open once
    the proxy has passed on each response head."""

    def __init__(self, host: str, port: int, path: str, count: int, timeout: float = 30):
        self.sockets = []
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n".encode()
        for _ in range(count):
            connection = socket.create_connection((host, port), timeout=timeout)
            connection.sendall(request)
            self.sockets.append(connection)
        for connection in self.sockets:
            head = b""
            while b"\r\n\r\n" not in head:
                data = connection.recv(4096)
                if not data:
                    raise AssertionError(f"a watch was closed before its response head: {head!r}")
                head += data
            if not head.startswith(b"HTTP/1.1 200"):
                raise AssertionError(f"a watch was answered {head[:200]!r}")

    def close(self):
        for connection in self.sockets:
            connection.close()


def request_load(host: str, port: int, path: str, clients: int, requests_each: int) -> int:
    """`clients` concurrent clients, each sending `requests_each` GETs on its own kept-alive connection; the
    number answered 200."""
    def one_client(_) -> int:
        connection = http.client.HTTPConnection(host, port, timeout=30)
        ok = 0
        try:
            for _ in range(requests_each):
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                ok += response.status == 200
        finally:
            connection.close()
        return ok
    with ThreadPoolExecutor(clients) as pool:
        return sum(pool.map(one_client, range(clients)))


def go_memory_bytes(metrics: str) -> int:
    """What a Go server's heap and goroutine stacks hold (its /metrics): memory that grows with connections."""
    def value(name: str) -> float:
        return float(re.search(rf"^{name} (\S+)$", metrics, re.MULTILINE).group(1))
    return int(value("go_memstats_heap_inuse_bytes") + value("go_memstats_stack_inuse_bytes"))


def live_go_memory(kube, samples: int = 3) -> int:
    """The API server's live heap and stacks: each reading right after a garbage collection, which its
    profiling endpoint runs on request (`/debug/pprof/heap?gc=1`, on by default); the median of a few."""
    readings = []
    for _ in range(samples):
        kube.admin("GET", "/debug/pprof/heap?gc=1")
        readings.append(go_memory_bytes(kube.admin("GET", "/metrics").body.decode()))
    return sorted(readings)[len(readings) // 2]
