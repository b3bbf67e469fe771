"""How each number is taken: CPU and memory from /proc, load from wrk, start-up by the clock, floods by sockets.

Memory is /proc/PID/status (VmRSS, RssAnon, RssFile) and /proc/PID/smaps_rollup (Pss) of the proxy process;
CPU is its utime + stime (all threads) from /proc/PID/stat. Nothing here asks the proxy about itself.
"""

from __future__ import annotations

import os
import re
import resource
import socket
import subprocess
import threading
import time

from processes import LOAD_CPUS, Service, http_get, pinned

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- /proc ----------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kb(pid: int) -> dict:
    """VmRSS, RssAnon, RssFile and RssShmem from /proc/PID/status, in kB."""
    wanted = {"VmRSS:": "rss_kb", "RssAnon:": "anon_kb", "RssFile:": "file_kb", "RssShmem:": "shmem_kb"}
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(None, 1)[0]
            if key in wanted:
                out[wanted[key]] = int(line.split()[1])
    return out


def pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def memory(pid: int) -> dict:
    return {**status_kb(pid), "pss_kb": pss_kb(pid)}


def busy_cpu_seconds() -> float:
    """Non-idle CPU time of the whole machine (/proc/stat), to spot load from other processes."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


class Quiet:
    """Waits, within a fixed budget for the whole run, until other processes leave the CPUs alone.

    The machine may be shared (builds, other tests); a measurement starts once the whole machine has
    been below QUIET_CORES busy for a second, or at once when the budget is spent.
    """

    QUIET_CORES = 0.15

    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.waited_s = 0.0

    def wait(self) -> None:
        while self.waited_s < self.budget_s:
            before, started = busy_cpu_seconds(), time.monotonic()
            time.sleep(1.0)
            elapsed = time.monotonic() - started
            if (busy_cpu_seconds() - before) / elapsed < self.QUIET_CORES:
                return
            self.waited_s += elapsed


class MemorySampler(threading.Thread):
    """Peaks of a process's RSS, anonymous and file-backed RSS (every 0.25 s) and PSS (every 1 s)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peaks = {"rss_kb": 0, "anon_kb": 0, "file_kb": 0, "pss_kb": 0}
        self.done = threading.Event()

    def run(self):
        tick = 0
        while not self.done.wait(0.25):
            try:
                now = status_kb(self.pid)
                if tick % 4 == 0:
                    now["pss_kb"] = pss_kb(self.pid)
            except OSError:
                return
            for key in self.peaks:
                self.peaks[key] = max(self.peaks[key], now.get(key, 0))
            tick += 1

    def stop(self) -> dict:
        self.done.set()
        self.join()
        return dict(self.peaks)


# --- load -----------------------------------------------------------------------------------------

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * UNITS[match.group(2)]


def parse_wrk(out: str) -> dict:
    result = {"requests": 0, "rps": 0.0, "socket_errors": 0, "non_2xx": 0}
    for percent in ("50", "75", "90", "99"):
        match = re.search(rf"^\s+{percent}%\s+(\S+)", out, re.M)
        if match:
            result[f"p{percent}_ms"] = parse_duration_ms(match.group(1))
    if match := re.search(r"^\s+(\d+) requests in", out, re.M):
        result["requests"] = int(match.group(1))
    if match := re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M):
        result["rps"] = float(match.group(1))
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        result["socket_errors"] = sum(int(g) for g in match.groups())
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        result["non_2xx"] = int(match.group(1))
    return result


def wrk_argv(url: str, connections: int, seconds: float, headers: dict, script: str | None = None) -> list:
    argv = pinned(LOAD_CPUS, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"])
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    if script:
        argv += ["-s", script]
    return argv + [url]


def wrk(url: str, connections: int, seconds: float, headers: dict, script: str | None = None) -> tuple[dict, float]:
    """Runs wrk (bounded by -d and a timeout); returns its results and its CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(wrk_argv(url, connections, seconds, headers, script), capture_output=True, text=True,
                          timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr}{done.stdout}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = parse_wrk(done.stdout)
    result["wrk_output"] = done.stdout
    return result, cpu


def measure(service: Service, nginx_pid: int, url: str, headers: dict, connections: int, seconds: float,
            warmup: float, quiet: Quiet) -> dict:
    """One wrk run through `service` after a warm-up: throughput, latency, CPU per request, peak memory."""
    if warmup:
        wrk(url, connections, warmup, headers)
    quiet.wait()
    sampler = MemorySampler(service.pid)
    sampler.start()
    proxy_before, nginx_before = cpu_seconds(service.pid), cpu_seconds(nginx_pid)
    busy_before, started = busy_cpu_seconds(), time.monotonic()
    result, wrk_cpu = wrk(url, connections, seconds, headers)
    wall = time.monotonic() - started
    proxy_cpu, nginx_cpu = cpu_seconds(service.pid) - proxy_before, cpu_seconds(nginx_pid) - nginx_before
    busy = busy_cpu_seconds() - busy_before
    load = sampler.stop()
    requests = max(result["requests"], 1)
    result.update(
        cpu_us_per_request=proxy_cpu * 1e6 / requests,
        proxy_cores=proxy_cpu / wall,
        nginx_cores=nginx_cpu / wall,
        wrk_cores=wrk_cpu / wall,
        other_cores=max(0.0, busy - proxy_cpu - nginx_cpu - wrk_cpu) / wall,
        rss_load_kb=load["rss_kb"],
        anon_load_kb=load["anon_kb"],
        file_load_kb=load["file_kb"],
        pss_load_kb=load["pss_kb"],
    )
    return result


def settle_and_read_memory(service: Service, seconds: float) -> dict:
    time.sleep(seconds)
    return memory(service.pid)


# --- start-up -------------------------------------------------------------------------------------

def seconds_to_first_200(service: Service, url: str, headers: dict, timeout: float = 30) -> float:
    """Launches `service` and asks `url` through it until it answers 200: what an app waits at pod start.

    `url` must need the token upstream, so that a 200 means the proxy is ready with credentials, not merely
    listening; a proxy that holds requests until it has a token is timed until it answers.
    """
    launched_at = service.launch()
    while time.monotonic() - launched_at < timeout:
        if http_get(url, headers, timeout=timeout)[0] == 200:
            return time.monotonic() - launched_at
        service.raise_if_exited()
        time.sleep(0.005)
    raise RuntimeError(f"{service.name} answered no 200 within {timeout}s:\n{service.log_tail()}")


# --- floods ---------------------------------------------------------------------------------------

class Slowloris:
    """Connections that send an unfinished request head and then wait, as a slow or hostile client does."""

    HEAD = b"GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: localhost\r\nX-Slow: "

    def __init__(self, port: int, count: int):
        self.sockets: list[socket.socket] = []
        self.refused = 0
        for _ in range(count):
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=2)
                connection.sendall(self.HEAD)
                connection.setblocking(False)  # so that closed_by_peer() looks without waiting
                self.sockets.append(connection)
            except OSError:
                self.refused += 1

    def closed_by_peer(self) -> int:
        """Connections the proxy has closed or answered (it may time slow heads out)."""
        closed = 0
        for connection in self.sockets:
            try:
                connection.recv(1, socket.MSG_PEEK)
                closed += 1  # an answer (a 408, say) or the end of the stream
            except BlockingIOError:
                pass  # still waiting for the rest of the head
            except OSError:
                closed += 1  # reset
        return closed

    def close(self) -> None:
        for connection in self.sockets:
            connection.close()
        self.sockets.clear()


def made_up_resources_script(prefix: str) -> str:
    """A wrk script whose every request asks for another made-up resource under `prefix`."""
    return "\n".join([
        "counter = 0",
        "request = function()",
        "  counter = counter + 1",
        f'  return wrk.format("GET", "{prefix}" .. counter)',
        "end",
        "",
    ])
