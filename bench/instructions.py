"""Instructions per request (issue 19): each proxy under valgrind's callgrind, counting user-space instructions
of all its threads together, one request (or one watch event) at a time, after a warm-up.

Microseconds on a shared 2-CPU machine carry no signal; instructions do (the same configuration counted twice
agrees within about 1 %). The proxy starts under callgrind with instrumentation off (so start-up runs at
near-native speed), is checked like every other configuration, then instrumentation is switched on
(`callgrind_control --instr=on`), a warm-up runs, and each count is `--zero`, the workload, `--dump`: the
dump's `summary:` line is the count. Everything the proxy does on timers (Envoy's overload manager and memory
release, podward's 100 ms tick, Go's runtime) is counted too; an idle window of the same launch measures that
rate, and the workloads' counts have it taken off (rate × their wall time).

podward's file refresh (every `refresh_interval_ms`, 1 s as shipped: a fetch of each pod file through the
file listener in the wasm build) costs per second, not per request, and comes in lumps large enough to swing a
count by a percent; the counting launch of a podward configuration sets `refresh_interval_ms` to its maximum,
and a second launch as shipped measures the idle cost with the refresh.
"""

from __future__ import annotations

import http.client
import pathlib
import shutil
import subprocess
import time

from configs import Configuration, Testbed
from processes import Service, log
from upstream import PODS_PATH, REFUSED_PATH, WATCH_PATH

# No refresh while counting: src/config.rs's upper bound for refresh_interval_ms.
NO_REFRESH_MS = 3_600_000
START_TIMEOUT_S = 180      # Envoy and V8 start under valgrind, with instrumentation off
CONTROL_TIMEOUT_S = 120
CLIENT_TIMEOUT_S = 60      # one request under callgrind: milliseconds, but the machine may be busy


class Callgrind:
    """valgrind's callgrind around one proxy process: its command prefix, and counts taken through
    callgrind_control."""

    def __init__(self, out_dir: pathlib.Path, name: str):
        self.out_dir = out_dir
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.out_file = out_dir / f"callgrind.{name}"
        self.pid: int | None = None

    @property
    def wrapper(self) -> tuple:
        return ("valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=no",
                f"--callgrind-out-file={self.out_file}", f"--log-file={self.out_dir}/valgrind.%p.log")

    def control(self, *args: str) -> None:
        done = subprocess.run(["callgrind_control", *args, str(self.pid)], capture_output=True, text=True,
                              timeout=CONTROL_TIMEOUT_S)
        if done.returncode != 0 or "OK" not in done.stdout:
            raise RuntimeError(f"callgrind_control {' '.join(args)} {self.pid}: {done.stdout}{done.stderr}")

    def dumps(self) -> set[pathlib.Path]:
        return set(self.out_dir.glob(f"{self.out_file.name}.*"))

    def count(self, workload) -> tuple[int, float, pathlib.Path]:
        """(instructions, wall seconds, the dump) of `workload()` alone: counters zeroed before, dumped after."""
        before = self.dumps()
        self.control("--zero")
        started = time.monotonic()
        workload()
        seconds = time.monotonic() - started
        self.control("--dump")
        deadline = time.monotonic() + CONTROL_TIMEOUT_S
        while time.monotonic() < deadline:
            for dump in self.dumps() - before:
                summary = summary_of(dump)
                if summary is not None:
                    return summary, seconds, dump
            time.sleep(0.05)
        raise RuntimeError(f"callgrind wrote no dump for {self.pid} within {CONTROL_TIMEOUT_S}s")


def summary_of(dump: pathlib.Path) -> int | None:
    """The dump's total instruction count, once the file is complete (its `totals:` line comes last)."""
    text = dump.read_text(errors="replace")
    if "\ntotals:" not in text:
        return None
    return int(next(line for line in text.splitlines() if line.startswith("summary:")).split()[1])


class Client:
    """Sequential requests on one kept-alive HTTP/1.1 connection: concurrency 1."""

    def __init__(self, service: Service, headers: dict):
        host, port = service.url.removeprefix("http://").rsplit(":", 1)
        self.connection = http.client.HTTPConnection(host, int(port), timeout=CLIENT_TIMEOUT_S)
        self.headers = headers

    def get(self, path: str, expect: int, times: int) -> None:
        for _ in range(times):
            self.connection.request("GET", path, headers=self.headers)
            response = self.connection.getresponse()
            response.read()
            if response.status != expect:
                raise RuntimeError(f"GET {path} answered {response.status}, expected {expect}")

    def close(self) -> None:
        self.connection.close()


class Watch:
    """A watch through the proxy on its own connection; each `next()` has the upstream send one event and
    waits for it to arrive."""

    def __init__(self, service: Service, headers: dict, testbed: Testbed):
        self.events = testbed.nginx.watch_events
        self.client = Client(service, headers)
        self.client.connection.request("GET", WATCH_PATH, headers=headers)
        self.response = self.client.connection.getresponse()
        if self.response.status != 200:
            raise RuntimeError(f"the watch answered {self.response.status}: {self.response.read()[:300]!r}")
        self.read_event()  # the one the watch starts with

    def next(self, times: int) -> None:
        for _ in range(times):
            self.events.send()
            self.read_event()

    def read_event(self) -> None:
        line = self.response.readline()
        if not line.startswith(b'{"type":"MODIFIED"'):
            raise RuntimeError(f"the watch delivered {line[:100]!r}")

    def close(self) -> None:
        self.events.end_watch()
        self.client.close()


def launch(testbed: Testbed, config: Configuration, callgrind: Callgrind, plugin_config: dict | None) -> Service:
    service = testbed.service(config, 1, wrapper=callgrind.wrapper, plugin_config=plugin_config)
    service.start(timeout=START_TIMEOUT_S)
    callgrind.pid = service.pid
    testbed.check(config, service)
    callgrind.control("--instr=on")
    return service


def per_unit(instructions: int, seconds: float, background_per_s: float, units: int) -> float:
    return (instructions - background_per_s * seconds) / units


def count_configuration(testbed: Testbed, config: Configuration, plan, repeat: int,
                        out_dir: pathlib.Path, plugin_config: dict | None = None) -> list[dict]:
    """One launch under callgrind: the idle rate, then each workload; one row per workload. `plugin_config`:
    podward's configuration, for a podward configuration (the refresh is taken out in any case)."""
    callgrind = Callgrind(out_dir / f"{config.key}-{repeat}", f"{config.key}")
    if config.podward:
        plugin_config = {**(plugin_config or {}), "refresh_interval_ms": NO_REFRESH_MS}
    service = launch(testbed, config, callgrind, plugin_config)
    headers = testbed.client_headers(config)
    rows = []
    client = Client(service, headers)
    watch = None
    try:
        client.get(PODS_PATH, 200, plan.instruction_warmup)
        if config.refuses:
            client.get(REFUSED_PATH, 403, plan.instruction_warmup // 4)
        watch = Watch(service, headers, testbed)
        watch.next(plan.instruction_warmup // 4)
        idle, idle_s, _ = callgrind.count(lambda: time.sleep(plan.instruction_idle_s))
        background = idle / idle_s
        base = {"config": config.key, "repeat": repeat, "background_per_s": background}
        rows.append({**base, "workload": "idle", "count": 0, "instructions": idle, "seconds": idle_s,
                     "per_s": background, "refresh": "none" if config.podward else "as shipped"})
        workloads = [("forwarded", plan.instruction_requests, lambda: client.get(PODS_PATH, 200,
                                                                                 plan.instruction_requests))]
        if config.refuses:
            workloads.append(("refused", plan.instruction_requests,
                              lambda: client.get(REFUSED_PATH, 403, plan.instruction_requests)))
        workloads.append(("watch_event", plan.instruction_events, lambda: watch.next(plan.instruction_events)))
        for workload, units, run in workloads:
            instructions, seconds, dump = callgrind.count(run)
            rows.append({**base, "workload": workload, "count": units, "instructions": instructions,
                         "seconds": seconds, "per_unit": per_unit(instructions, seconds, background, units),
                         "dump": str(dump)})
    finally:
        if watch:
            watch.close()
        client.close()
        service.stop()
    return rows


def count_idle_as_shipped(testbed: Testbed, config: Configuration, plan, repeat: int,
                          out_dir: pathlib.Path) -> dict:
    """A podward configuration with its refresh as shipped, idle after a warm-up: instructions per second."""
    callgrind = Callgrind(out_dir / f"{config.key}-idle-{repeat}", f"{config.key}-idle")
    service = launch(testbed, config, callgrind, None)
    client = Client(service, testbed.client_headers(config))
    try:
        client.get(PODS_PATH, 200, plan.instruction_warmup // 4)
        idle, idle_s, _ = callgrind.count(lambda: time.sleep(plan.instruction_idle_s))
    finally:
        client.close()
        service.stop()
    return {"config": config.key, "repeat": repeat, "workload": "idle", "count": 0, "instructions": idle,
            "seconds": idle_s, "per_s": idle / idle_s, "refresh": "as shipped"}


def instruction_counts(testbed: Testbed, configs: list[Configuration], plan, keep: pathlib.Path | None) -> dict:
    """Every configuration counted `plan.instruction_repeats` times (launches interleaved); `keep`: where the
    forwarded-request dumps of the last repeat are copied for callgrind_annotate."""
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        return {"why": "valgrind is not installed"}
    out_dir = testbed.work / "callgrind"
    rows, failures = [], {}
    for repeat in range(plan.instruction_repeats):
        for config in configs:
            if config.key in failures:
                continue
            log(f"instructions ({repeat + 1}/{plan.instruction_repeats}): {config.label} under callgrind")
            try:
                counted = count_configuration(testbed, config, plan, repeat, out_dir)
                if config.podward:
                    counted.append(count_idle_as_shipped(testbed, config, plan, repeat, out_dir))
            except (RuntimeError, OSError, subprocess.TimeoutExpired, http.client.HTTPException) as error:
                # kubectl proxy (Go) may not run under valgrind: say so rather than lose the phase.
                failures[config.key] = f"{type(error).__name__}: {str(error)[:300]}"
                log(f"  not counted: {failures[config.key]}")
                continue
            rows += counted
            log("  " + ", ".join(f"{row['workload']} {row['per_unit'] / 1000:.1f}k" if "per_unit" in row else
                                 f"idle ({row['refresh']}) {row['per_s'] / 1e6:.2f}M/s" for row in counted))
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
        for row in rows:
            if row["workload"] == "forwarded" and row["repeat"] == plan.instruction_repeats - 1:
                shutil.copy(row["dump"], keep / f"callgrind.{row['config']}.forwarded")
    for row in rows:
        row.pop("dump", None)
    return {"tool": subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip(),
            "rows": rows, "failures": failures}
