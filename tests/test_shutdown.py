"""Graceful shutdown: the sidecar container runs Envoy under ENTRYPOINT, which on SIGTERM turns the drain
file to 1 (Envoy then refuses new connections and closes kept-alive ones after their current request), waits
DRAIN_SECONDS, and passes SIGTERM on. Here the test is the kubelet: it starts the entrypoint as the
container's command, in front of the real API server, and sends it SIGTERM while a kubectl watch (client-go), a
Python-client watch, two slow uploads and a burst on kept-alive connections are under way.

On main, Envoy exited 0.2 s (native) or 0.9 s (wasm) after SIGTERM: the uploads got a bare FIN. The timings
go to /tmp/podward-figures/shutdown.json.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time

import pytest
from kubernetes import client, watch

from podward.bootstrap import DRAIN_MONITOR, bootstrap
from podward.constants import ADMIN_DIR
from podward.pod import DRAIN_SECONDS, ENTRYPOINT, ENVOY_PATH, example_pod, sidecar_container
from podward.settings import shipped_settings

from harness.figures import record_figures
from podward.local.waiting import wait_for
from test_attacks import http1, parse_answers

BURST = 50


def upload(port: int, namespace: str, name: str, pieces: int, pause: float):
    """Creates a ConfigMap whose body arrives in pieces, one every `pause` seconds (all six of them, or only
    `pieces`); returns the sidecar's answer, or None if it closed the connection without one."""
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                       "data": {"blob": "x" * 600}}).encode()
    step = -(-len(body) // 6)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(f"POST /api/v1/namespaces/{namespace}/configmaps HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n".encode())
        for start in range(0, min(pieces, 6) * step, step):
            connection.sendall(body[start:start + step])
            time.sleep(pause)  # deliberate: a client that sends its body slowly, in pieces
        return read_answer(connection)


class Background:
    """Runs `work()` in a thread; `result` is what it returned or raised, `seconds` when it ended (monotonic)."""

    def __init__(self, work):
        self.result, self.ended = None, None
        self.thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self.thread.start()

    def _run(self, work):
        try:
            self.result = work()
        except Exception as error:  # recorded, then judged by the test
            self.result = error
        self.ended = time.monotonic()

    def join(self, timeout: float):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "still running"
        return self.result


def python_client_watch(url: str, namespace: str, events: list):
    configuration = client.Configuration()
    configuration.host = url
    with client.ApiClient(configuration) as api_client:
        for event in watch.Watch().stream(client.CoreV1Api(api_client).list_namespaced_config_map, namespace,
                                          timeout_seconds=600):
            events.append(event["type"])
    return "ended"


def read_answer(connection: socket.socket):
    """The next HTTP/1.1 answer on a connection, or None if it closed first."""
    data = b""
    while not parse_answers(data):
        chunk = connection.recv(65536)
        if not chunk:
            return None
        data += chunk
    return parse_answers(data)[0]


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
            connection.sendall(http1("GET", "/api"))
            return connection.recv(100) == b""
    except (ConnectionResetError, ConnectionRefusedError, BrokenPipeError):
        return True


@pytest.mark.envtest
def test_sigterm_drains_in_flight_requests_then_stops(real_pod, start_real_envoy, kube, tmp_path):
    envoy = start_real_envoy(real_pod, drain=True, entrypoint=True)
    port, namespace = envoy.settings.listen_port, real_pod.namespace
    home = tmp_path / "home"
    home.mkdir()
    kubectl = subprocess.Popen([os.environ["KUBECTL"], "--server", envoy.url, "-n", namespace, "get", "configmaps",
                                "-w"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "HOME": str(home)})
    python_events: list = []
    python_watch = Background(lambda: python_client_watch(envoy.url, namespace, python_events))
    kept_alive = []
    for _ in range(BURST):
        connection = socket.create_connection(("127.0.0.1", port), timeout=15)
        connection.sendall(http1("GET", "/api"))
        assert read_answer(connection).status == 200
        kept_alive.append(connection)
    wait_for(lambda: envoy.stats()["cluster.kubernetes.upstream_rq_active"] == 2, 10,
             "the two watches at the API server")
    # Two uploads under way: one whose body ends within the drain, one whose body never ends.
    build = envoy.settings.build
    finishing = Background(lambda: upload(port, namespace, f"sent-during-the-drain-{build}", pieces=6, pause=0.4))
    stalled = Background(lambda: upload(port, namespace, f"never-finished-{build}", pieces=3, pause=0.1))
    wait_for(lambda: envoy.stats()["http.podward.downstream_rq_active"] == 4, what="the two watches and the two "
             "uploads in Envoy")

    sigterm = time.monotonic()
    envoy.process.send_signal(signal.SIGTERM)
    wait_for(lambda: refused(port), 2, "new connections refused", interval=0.02)
    refused_after = time.monotonic() - sigterm
    # The burst: one more request on each kept-alive connection, all at once.
    for connection in kept_alive:
        connection.sendall(http1("GET", f"/api/v1/namespaces/{namespace}/pods"))
    burst = []
    for connection in kept_alive:
        burst.append(read_answer(connection))
        connection.close()
    burst_done = time.monotonic() - sigterm
    finished, cut_short = finishing.join(30), stalled.join(30)
    exit_code = envoy.process.wait(timeout=DRAIN_SECONDS + 5)
    exited = time.monotonic() - sigterm
    kubectl_out, kubectl_err = kubectl.communicate(timeout=10)
    python_end = python_watch.join(10)
    figures = {"drain_seconds": DRAIN_SECONDS, "refused_new_connections_after_s": round(refused_after, 2),
               "burst_of_50_answered_after_s": round(burst_done, 2),
               "upload_completed_after_s": round(finishing.ended - sigterm, 2),
               "unfinished_upload_answered_after_s": round(stalled.ended - sigterm, 2),
               "envoy_exited_after_s": round(exited, 2), "exit_code": exit_code,
               "kubectl_watch": f"exit {kubectl.returncode}, stderr {kubectl_err.strip()!r}",
               "python_client_watch": repr(python_end)[:200],
               "python_client_watch_ended_after_s": round(python_watch.ended - sigterm, 2)}
    record_figures("shutdown", envoy.settings.build, "sigterm", figures)

    # Envoy stopped accepting at once, and stopped itself once the drain was over, not before.
    assert refused_after < 1, figures
    assert DRAIN_SECONDS - 0.5 < exited < DRAIN_SECONDS + 2 and exit_code == 0, figures
    # Every request in flight got its answer: the burst, each closing its connection.
    assert [answer and answer.status for answer in burst] == [200] * BURST, figures
    assert all(answer.headers.get("connection") == "close" for answer in burst), figures
    # The upload whose body arrived during the drain was created; the one that never finished got the
    # request_timeout's Timeout Status, both before Envoy stopped.
    assert finished.status == 201 and finished.headers["connection"] == "close", figures
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    assert kube.admin("GET", f"{configmaps}/sent-during-the-drain-{build}").status == 200
    assert cut_short.status == 408 and cut_short.status_object()["reason"] == "Timeout", figures
    assert kube.admin("GET", f"{configmaps}/never-finished-{build}").status == 404
    # The watches lasted until Envoy stopped. client-go (kubectl) reads the end of the stream as the end of
    # the watch, not as an error (it would re-watch); the Python client, stricter about the missing last chunk,
    # raises (README, "Shutdown").
    assert kubectl.returncode == 0 and "error" not in kubectl_err.lower(), figures
    assert python_watch.ended - sigterm > DRAIN_SECONDS - 0.5, figures


def test_the_drain_outlasts_request_timeout_and_fits_the_default_grace_period():
    settings = shipped_settings()
    assert DRAIN_SECONDS > settings.request_timeout_ms / 1000
    pod = example_pod()
    assert pod["spec"]["terminationGracePeriodSeconds"] >= DRAIN_SECONDS + 2
    sidecar = sidecar_container()
    assert sidecar["command"][:3] == ["/bin/sh", "-c", ENTRYPOINT]
    assert sidecar["command"][4:] == [settings.drain_file, str(DRAIN_SECONDS), ENVOY_PATH]
    monitors = bootstrap(settings)["overload_manager"]["resource_monitors"]
    assert {"name": DRAIN_MONITOR, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.resource_monitors.injected_resource.v3.InjectedResourceConfig",
        "filename": settings.drain_file}} in monitors
    # Only the sidecar mounts the directory the drain file is in: the app cannot drain the sidecar.
    assert pathlib.PurePath(settings.drain_file).parent == pathlib.PurePath(ADMIN_DIR)
