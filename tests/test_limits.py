"""What the app cannot make the sidecar hold: a request no one answers, slow or huge headers, bodies, too many
connections, endless made-up resources. Envoy's own limits, checked against real Envoy.

`request_timeout` is the backstop for a request a filter holds (podward waits for the first token, and a VM
reload can lose track of a waiting request): Envoy answers it 408 once the request has not gone upstream in
time. Envoy disarms the timer when the request has gone upstream or a response has started, so it must not
cut watches, `logs -f` or upgraded streams; the tests below check both with a short timeout set by `adjust`.

The flood's figures are printed (pytest -s) and written to /tmp/podward-figures/limits.json.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import threading
import time

import pytest
import websocket
from kubernetes import client
from kubernetes.stream import portforward

from podward.bootstrap import REQUEST_HEADERS_TIMEOUT, bootstrap
from podward.constants import MEMORY_LIMIT_MIB, REQUEST_TIMEOUT_MARGIN_MS, STARTUP_WAIT_MS
from podward.local.remotecommand import V5_CHANNEL
from podward.settings import Settings

from conftest import assert_status, request, served_again
from harness.flood import MADE_UP_PREFIX, PeakRss, flood, memory_kib
from harness.figures import record_figures
from podward.local.waiting import wait_for
from test_observability import metric
from test_real_watch import TICK_ANNOTATION, Ticker

OWN_NAMESPACE = {"policy": {"preset": "own-namespace"}}
# The backstop, shortened for these tests so that streams can outlive it several times over quickly.
SHORT_REQUEST_TIMEOUT_S = 1.0
OUTLIVE_S = 3.5
MIB = 1024 * 1024


def app_manager(bootstrap: dict, listener: str = "podward") -> dict:
    [found] = [l for l in bootstrap["static_resources"]["listeners"] if l["name"] == listener]
    return found["filter_chains"][0]["filters"][0]["typed_config"]


def short_request_timeout(bootstrap: dict):
    app_manager(bootstrap)["request_timeout"] = f"{SHORT_REQUEST_TIMEOUT_S}s"


def timed(envoy, method: str, path: str, **kwargs) -> tuple:
    started = time.monotonic()
    response = request(envoy, method, path, **kwargs)
    return response, time.monotonic() - started


# --- request_timeout: derived from startup_wait_ms, never the first answer --------------------------

@pytest.mark.parametrize("plugin_config, expected", [({}, "6s"), ({"startup_wait_ms": 1500}, "2.5s")])
def test_request_timeout_is_podwards_wait_plus_a_second(plugin_config, expected):
    config = bootstrap(Settings(plugin_config=plugin_config))
    assert app_manager(config)["request_timeout"] == expected
    assert STARTUP_WAIT_MS + REQUEST_TIMEOUT_MARGIN_MS == 6000


def test_podward_gives_up_on_a_token_before_envoys_backstop_fires(pod, start_envoy, apiserver):
    # The shipped relation, with podward's default wait (the default is src/config.rs's, so this also
    # checks that STARTUP_WAIT_MS still matches it): podward's own 503 comes first.
    pod.write_service_account(None)
    envoy = start_envoy(pod)
    response, seconds = timed(envoy, "GET", "/api/v1/namespaces/default/pods")
    assert "no service-account token" in assert_status(response, 503, "ServiceUnavailable")["message"]
    assert STARTUP_WAIT_MS / 1000 - 0.5 < seconds < STARTUP_WAIT_MS / 1000 + 0.9
    assert apiserver.requests == []


def test_a_request_the_filter_never_releases_gets_a_504_status_at_request_timeout(pod, start_envoy, apiserver):
    # podward would hold it for 30 s; Envoy answers first, and the request never reaches the API server.
    pod.write_service_account(None)
    envoy = start_envoy(pod, {"startup_wait_ms": 30000}, adjust=short_request_timeout)
    response, seconds = timed(envoy, "GET", "/api/v1/namespaces/default/pods")
    # 504, not 408: the whole request had arrived; Envoy's 408 is for one still arriving (below).
    status = assert_status(response, 504, "Timeout")
    assert "request_overall_timeout" in status["message"] and status["details"] == {"retryAfterSeconds": 1}
    assert SHORT_REQUEST_TIMEOUT_S - 0.1 < seconds < SHORT_REQUEST_TIMEOUT_S + 1
    assert apiserver.requests == []
    apiserver.accept(pod.issue_token())
    served_again(envoy)
    assert apiserver.requests[-1].token == pod.token


def test_a_body_sent_while_the_request_waits_for_the_token_arrives_whole(pod, start_envoy, apiserver):
    # A normal-sized write (256 KiB, eight times the connection buffer) from an app that starts before
    # the kubelet has written the token: Envoy holds the body back with flow control, not a 413.
    pod.write_service_account(None)
    envoy = start_envoy(pod)
    data = "x" * (256 * 1024)
    # One name per build: the stand-in keeps what each run created.
    name = f"big-while-waiting-{envoy.settings.build}"
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                       "data": {"blob": data}}).encode()
    threading.Timer(1.0, lambda: apiserver.accept(pod.issue_token())).start()
    response, seconds = timed(envoy, "POST", "/api/v1/namespaces/default/configmaps", body=body,
                              headers={"Content-Type": "application/json"})
    assert response.status == 201, response.body[:300]
    assert 1.0 < seconds < STARTUP_WAIT_MS / 1000
    [received] = [r for r in apiserver.requests if r.method == "POST"]
    assert received.body == body and received.token == pod.token


def test_a_body_trickled_past_request_timeout_gets_a_408_status(pod, start_envoy, apiserver):
    # The price of the backstop: a body that takes longer than request_timeout to send is cut.
    envoy = start_envoy(pod, adjust=short_request_timeout)
    with socket.create_connection(("127.0.0.1", envoy.settings.listen_port), timeout=10) as connection:
        connection.sendall(b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: localhost\r\n"
                           b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                           b'{"metadata": {"name": "trickled"')
        # The rest never comes: the answer is Envoy's, once request_timeout has passed.
        connection.settimeout(SHORT_REQUEST_TIMEOUT_S + 5)
        answer = connection.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    status = json.loads(body)
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 408, "Timeout")
    # podward forwarded the headers at once; the API server saw a request that never completed.
    assert [r.status for r in apiserver.requests if r.method == "POST"] in ([], [400])
    assert apiserver.get_object("configmaps", "default", "trickled") is None


# --- ...and it leaves long streams alone ---------------------------------------------------------------

@pytest.mark.envtest
def test_request_timeout_does_not_cut_a_watch(real_pod, start_real_envoy, kube):
    envoy = start_real_envoy(real_pod, adjust=short_request_timeout)
    namespace = real_pod.namespace
    with Ticker(kube, namespace, "long-watch", 0.2):
        connection = http.client.HTTPConnection("127.0.0.1", envoy.settings.listen_port, timeout=5)
        connection.request("GET", f"/api/v1/namespaces/{namespace}/configmaps?watch=1"
                                  "&fieldSelector=metadata.name%3Dlong-watch")
        response = connection.getresponse()
        ticks, started = [], time.monotonic()
        while time.monotonic() - started < OUTLIVE_S:  # deliberate: the watch must outlive request_timeout
            event = json.loads(response.readline())
            ticks.append(event["object"]["metadata"].get("annotations", {}).get(TICK_ANNOTATION))
        connection.close()
    assert response.status == 200 and len(ticks) >= OUTLIVE_S / 0.2 - 3


@pytest.mark.envtest
def test_request_timeout_does_not_cut_a_watch_over_h2c(real_pod, start_real_envoy, kube):
    envoy = start_real_envoy(real_pod, adjust=short_request_timeout)
    namespace = real_pod.namespace
    with Ticker(kube, namespace, "long-h2c-watch", 0.2):
        curl = subprocess.run(["curl", "-sSN", "--http2-prior-knowledge", "--max-time", str(OUTLIVE_S),
                               f"{envoy.url}/api/v1/namespaces/{namespace}/configmaps?watch=1&"
                               "fieldSelector=metadata.name%3Dlong-h2c-watch"], capture_output=True, timeout=30)
    # curl's exit code 28: our own --max-time ended it, not the sidecar.
    assert curl.returncode == 28, curl.stderr
    events = [json.loads(line) for line in curl.stdout.splitlines()]
    assert len(events) >= OUTLIVE_S / 0.2 - 3


def test_request_timeout_does_not_cut_logs_follow(pod, start_envoy, apiserver):
    envoy = start_envoy(pod, adjust=short_request_timeout)
    connection = http.client.HTTPConnection("127.0.0.1", envoy.settings.listen_port, timeout=5)
    connection.request("GET", "/api/v1/namespaces/default/pods/demo-1/log?follow=true")
    response = connection.getresponse()
    lines, started = [], time.monotonic()
    while time.monotonic() - started < OUTLIVE_S:
        lines.append(response.readline().decode())
    connection.close()
    # Five lines of history, then one every 0.2 s.
    assert lines[:len(lines)] == [f"demo-1: log line {i}\n" for i in range(1, len(lines) + 1)]
    assert len(lines) >= 5 + OUTLIVE_S / 0.2 - 3


def test_request_timeout_does_not_cut_a_websocket_exec(pod, start_envoy, apiserver):
    envoy = start_envoy(pod, OWN_NAMESPACE, adjust=short_request_timeout)
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{envoy.settings.listen_port}/api/v1/namespaces/default/pods/demo-0/exec"
        "?command=cat&stdin=true&stdout=true", subprotocols=[V5_CHANNEL], timeout=10)
    echoed = []
    for line in (b"before\n", b"after the timeout\n"):
        ws.send_binary(b"\x00" + line)
        echoed.append(ws.recv_data()[1])
        time.sleep(OUTLIVE_S / 2)  # deliberate: the stream must outlive request_timeout, which would cut it
    ws.close()
    assert echoed == [b"\x01before\n", b"\x01after the timeout\n"]


def test_request_timeout_does_not_cut_a_spdy_exec(pod, start_envoy, apiserver, tmp_path):
    envoy = start_envoy(pod, OWN_NAMESPACE, adjust=short_request_timeout)
    home = tmp_path / "home"
    home.mkdir()
    kubectl = subprocess.Popen([os.environ["KUBECTL"], "--server", envoy.url, "exec", "-i", "demo-0", "--", "cat"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "HOME": str(home)})
    try:
        echoed = []
        for line in (b"before\n", b"after the timeout\n"):
            kubectl.stdin.write(line)
            kubectl.stdin.flush()
            echoed.append(kubectl.stdout.readline())
            time.sleep(OUTLIVE_S / 2)  # deliberate: the stream must outlive request_timeout, which would cut it
        kubectl.stdin.close()
        assert kubectl.wait(timeout=10) == 0, kubectl.stderr.read()
    finally:
        kubectl.kill()
    assert echoed == [b"before\n", b"after the timeout\n"]


def test_request_timeout_does_not_cut_a_websocket_port_forward(pod, start_envoy, apiserver):
    envoy = start_envoy(pod, adjust=short_request_timeout)
    configuration = client.Configuration()
    configuration.host = envoy.url
    with client.ApiClient(configuration) as api_client:
        forward = portforward(client.CoreV1Api(api_client).connect_get_namespaced_pod_portforward, "demo-0",
                              "default", ports="8080")
        remote = forward.socket(8080)
        remote.setblocking(True)
        received = []
        for message in (b"before\n", b"after the timeout\n"):
            remote.sendall(message)
            received.append(remote.recv(1024))
            time.sleep(OUTLIVE_S / 2)  # deliberate: the stream must outlive request_timeout, which would cut it
        remote.close()
    assert received == [b"before\n", b"after the timeout\n"]


# --- Headers, bodies, connections ----------------------------------------------------------------------

def test_headers_trickled_in_are_cut_with_a_408_status(podward, apiserver):
    with socket.create_connection(("127.0.0.1", podward.settings.listen_port), timeout=15) as connection:
        connection.sendall(b"GET /api HTTP/1.1\r\nHost: localhost\r\n")
        started = time.monotonic()
        answer = b""
        for line in range(20):
            connection.sendall(f"X-Slow-{line}: a\r\n".encode())
            connection.settimeout(1)
            try:
                answer = connection.recv(65536)
                break
            except socket.timeout:
                continue
        seconds = time.monotonic() - started
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert json.loads(body)["reason"] == "Timeout"
    assert seconds < float(REQUEST_HEADERS_TIMEOUT.rstrip("s")) + 1.5
    assert apiserver.requests == []


def test_overload_refuses_new_requests_with_a_503_status(pod, start_envoy, apiserver):
    def one_byte_heap(bootstrap: dict):
        bootstrap["overload_manager"]["resource_monitors"][0]["typed_config"]["max_heap_size_bytes"] = 1

    envoy = start_envoy(pod, adjust=one_byte_heap)

    def refused():
        response = request(envoy, "GET", "/api/v1/namespaces/default/pods")
        return response if response.status != 200 else None

    status = assert_status(wait_for(refused, what="the overload manager acting"), 503, "ServiceUnavailable")
    assert "overloaded" in status["message"] and status["details"] == {"retryAfterSeconds": 1}
    apiserver.clear_requests()
    assert request(envoy, "GET", "/api/v1/namespaces/default/pods").status == 503
    assert apiserver.requests == []


def test_connections_beyond_the_limit_are_closed_but_metrics_and_token_refresh_go_on(pod, start_envoy, apiserver):
    limit = 20

    def few_connections(bootstrap: dict):
        [monitor] = [m for m in bootstrap["overload_manager"]["resource_monitors"]
                     if m["name"] == "envoy.resource_monitors.global_downstream_max_connections"]
        monitor["typed_config"]["max_active_downstream_connections"] = limit

    envoy = start_envoy(pod, adjust=few_connections)
    # Served once, so that podward reads the pod's files from now on (the wasm build starts at the first request).
    assert request(envoy, "GET", "/api/v1/namespaces/default/pods").status == 200
    active = f"listener.127.0.0.1_{envoy.settings.listen_port}.downstream_cx_active"
    held = []
    try:
        # Up to the limit exactly; a slot may be held a moment longer by the harness's readiness probe.
        def at_the_limit() -> bool:
            if envoy.stats()[active] == limit:
                return True
            assert len(held) < 3 * limit
            held.append(socket.create_connection(("127.0.0.1", envoy.settings.listen_port)))
            return False

        wait_for(at_the_limit, what=f"{limit} connections held")
        closed_unanswered = 0
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", envoy.settings.listen_port), timeout=5) as extra:
                try:
                    extra.sendall(b"GET /api HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    closed_unanswered += extra.recv(100) == b""
                except ConnectionResetError:
                    closed_unanswered += 1
        assert closed_unanswered == 5
        # Prometheus (and the kubelet) still get through, and podward still sees a rotated token.
        assert "envoy_" in envoy.prometheus()
        refreshes = metric(envoy, "podward_token_refreshes_total{}")
        rotated = pod.issue_token()
        apiserver.accept(rotated)
        wait_for(lambda: metric(envoy, "podward_token_refreshes_total{}") > refreshes,
                 what="podward reading the rotated token while every connection is taken")
    finally:
        for connection in held:
            connection.close()
    served_again(envoy)
    assert apiserver.requests[-1].token == rotated
    overflow = f"listener.127.0.0.1_{envoy.settings.listen_port}.downstream_global_cx_overflow"
    assert envoy.stats()[overflow] >= 5


# --- A flood -------------------------------------------------------------------------------------------

FLOOD_SECONDS = float(os.environ.get("PODWARD_FLOOD_SECONDS", "20"))
SLOWLORIS = 300
ASKERS = 700
# What the flood may take of the shipped limit at most: the rest is room for worse.
MAX_SHARE_OF_LIMIT = 0.8


def test_a_flood_stays_well_under_the_memory_limit_and_the_sidecar_serves_afterwards(podward, pod, apiserver):
    assert request(podward, "GET", "/api/v1/namespaces/default/pods").status == 200
    pid = podward.process.pid
    idle = memory_kib(pid)
    sampler = PeakRss(pid, interval=0.05)
    try:
        result = flood(podward.settings.listen_port, FLOOD_SECONDS, slowloris=SLOWLORIS, askers=ASKERS)
    finally:
        peak = sampler.stop()
    after = memory_kib(pid)
    limit = MEMORY_LIMIT_MIB * MIB
    figures = {"seconds": FLOOD_SECONDS, "slowloris": SLOWLORIS, "askers": ASKERS,
               "made_up_resources_asked": result.resources_asked, "answers": dict(result.statuses),
               "slowloris_connections": result.slowloris_connections, "slowloris_cut": result.slowloris_cut,
               "connections_refused": result.connections_refused, "stalled": result.stalled,
               "rss_idle_mib": round(idle["VmRSS"] / 1024, 1), "rss_peak_mib": round(peak / MIB, 1),
               "rss_after_mib": round(after["VmRSS"] / 1024, 1), "anon_idle_mib": round(idle["RssAnon"] / 1024, 1),
               "anon_after_mib": round(after["RssAnon"] / 1024, 1), "limit_mib": MEMORY_LIMIT_MIB,
               "rss_samples": sampler.samples}
    record_figures("limits", podward.settings.build, "flood", figures)

    assert result.resources_asked > 2000 and result.slowloris_cut > 0, figures
    assert result.stalled == 0, "every connection was answered or closed, none left hanging"
    assert peak < MAX_SHARE_OF_LIMIT * limit, figures
    # Still serving: the app through the sidecar, with the token, and Prometheus.
    apiserver.clear_requests()
    served_again(podward)
    assert apiserver.requests[-1].token == pod.token
    assert "podward_requests_total" in podward.prometheus()
    assert not [r for r in apiserver.requests if MADE_UP_PREFIX in r.path and r.token is None]
