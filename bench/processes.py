"""The benchmark's processes: where they run (CPU placement, niceness), how they start and stop, and HTTP to them.

Every process the benchmark starts is a `Service` and is stopped by `stop_all()` when the run ends, however it
ends. Memory and CPU are read from /proc by measure.py, never from a proxy's admin interface.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import time
import urllib.error
import urllib.request
from typing import Callable

from podward.local.envoy_process import terminate


# wrk and nginx share CPU 0; the proxy under test gets CPU 1 to itself at concurrency 1, both CPUs at 2.
LOAD_CPUS = "0"
PROXY_CPUS = {1: "1", 2: "0,1"}
# The machine may be shared: everything measured runs at this niceness (as root), so that other sessions'
# builds and tests at nice 0 get little CPU while a run lasts.
NICE = -10 if os.geteuid() == 0 else 0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def pinned(cpus: str, argv: list) -> list:
    """argv pinned to `cpus` at NICE; taskset and nice exec, so the pid is the program's."""
    return ["taskset", "-c", cpus, "nice", "-n", str(NICE), *argv]


RUNNING: list["Service"] = []


class Service:
    """A process under test, stopped by `stop()` or by `stop_all()`.

    `ready` says when it serves; `admin` queries its admin interface (an Envoy's), set by whoever knows where
    that listens.
    """

    def __init__(self, name: str, argv: list, env: dict, log_path: pathlib.Path, url: str,
                 ready: Callable[["Service"], bool]):
        self.name, self.argv, self.env, self.log_path, self.url, self.ready = name, argv, env, log_path, url, ready
        self.process: subprocess.Popen | None = None
        self.admin: Callable[[str], tuple[int, str]] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def launch(self) -> float:
        """Starts the process without waiting for it; returns the monotonic time just before the fork."""
        log_file = open(self.log_path, "ab")
        launched_at = time.monotonic()
        self.process = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.DEVNULL, stderr=log_file)
        RUNNING.append(self)
        return launched_at

    def start(self, timeout: float = 30) -> "Service":
        self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.raise_if_exited()
            if self.ready(self):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready within {timeout}s:\n{self.log_tail()}")

    def raise_if_exited(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process:
            terminate(self.process)
        if self in RUNNING:
            RUNNING.remove(self)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


def stop_all() -> None:
    for service in list(RUNNING):
        service.stop()


def http_get(url: str, headers: dict | None = None, timeout: float = 5) -> tuple[int, str]:
    """Status and body; status 0 when nothing answered (refused, reset, timed out)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError:
        return 0, ""


