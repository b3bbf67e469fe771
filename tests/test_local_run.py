"""`./build.sh run` (podward.local.example) as a user runs it: it serves, it says where metrics are, SIGTERM or Ctrl-C
stops everything it started and removes its directory, and a taken port is reported, not half-started."""

from __future__ import annotations

import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from podward.constants import REPO
from podward.local.envoy_process import accepts, free_port


START_TIMEOUT_S = 60


def start_local_run(port: int, metrics_port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "podward.local.example", "--port", str(port), "--metrics-port",
                             str(metrics_port)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_banner(process: subprocess.Popen) -> str:
    lines, deadline = [], time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        assert line, f"podward.local.example ended early: {process.stderr.read()}"
        lines.append(line)
        if line.startswith("Ctrl-C"):
            return "".join(lines)
    raise AssertionError("podward.local.example did not start in time")


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def run_directories() -> set:
    """podward.local.example's directories (tempfile.mkdtemp(prefix="podward-")) in /tmp now."""
    return {path for path in pathlib.Path("/tmp").glob("podward-*") if re.fullmatch(r"podward-[a-z0-9_]{8}", path.name)}


def http_status(port: int, path: str) -> int:
    result = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}{path}"],
                            capture_output=True, text=True, timeout=30)
    return int(result.stdout)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_everything_and_removes_the_run_directory(stop_signal):
    port, metrics_port = free_port(), free_port()
    process = start_local_run(port, metrics_port)
    try:
        banner = read_banner(process)
        run_dir = pathlib.Path(re.search(r"run directory: +(\S+)", banner).group(1))
        envoy_pid = int(re.search(r"Envoy pid (\d+)", banner).group(1))
        assert f"metrics (Prometheus): http://127.0.0.1:{metrics_port}/stats/prometheus" in banner
        assert http_status(port, "/api/v1/namespaces/default/pods") == 200
        assert http_status(metrics_port, "/stats/prometheus") == 200
        assert run_dir.is_dir() and accepts(port) and not process_gone(envoy_pid)

        process.send_signal(stop_signal)
        assert process.wait(timeout=30) == 0, process.stderr.read()
    finally:
        process.kill()
        process.wait()
    assert "podward: stopping" in process.stdout.read()
    assert process_gone(envoy_pid)
    assert not accepts(port) and not accepts(metrics_port)
    assert not run_dir.exists()


@pytest.mark.parametrize("taken", ["app", "metrics"])
def test_a_taken_port_is_reported_and_nothing_is_left_running(taken):
    port, metrics_port = free_port(), free_port()
    before = run_directories()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port if taken == "app" else metrics_port))
        squatter.listen()
        process = start_local_run(port, metrics_port)
        try:
            out, err = process.communicate(timeout=START_TIMEOUT_S)
        finally:
            process.kill()
    taken_port, what = (port, "the app's port") if taken == "app" else (metrics_port, "the metrics port")
    assert process.returncode == 1
    assert f"podward: port {taken_port} ({what}) is already in use" in err
    assert "podward is running" not in out
    assert not accepts(metrics_port if taken == "app" else port)
    assert run_directories() <= before
