"""Readiness that means something: the sidecar's startup probe (GET /ready on the metrics port) passes only once
podward holds a token, its policy and the pod's identity, so the app containers, which a native sidecar's startup
probe holds back, never make a first call that waits or fails. The probe reaches podward's own answer on the app
listener; nothing of it reaches the API server.

The time from the Envoy process's start to ready is measured for each build, polled every 10 ms and at the
kubelet's cadence (a probe at once, then every periodSeconds), and written to /tmp/podward-figures/readiness.json."""

from __future__ import annotations

import http.client
import json
import statistics
import time

import pytest

from podward.constants import (DEFAULT_POLICY, METRICS_PORT, PODWARD_READY_PATH, POLICY_KEY, READY_PATH,
                               SHIPPED_PLUGIN_CONFIG)
from podward.pod import sidecar_container

from conftest import assert_status, request
from harness.figures import record_figures
from podward.local.waiting import wait_for

RUNS = 5
KUBELET_RUNS = 3


def probe(envoy, path: str = READY_PATH, method: str = "GET", timeout: float = 1) -> tuple:
    """(status, parsed JSON body) of one request to the metrics port, as the kubelet's httpGet probe sends it."""
    connection = http.client.HTTPConnection("127.0.0.1", envoy.settings.metrics_port, timeout=timeout)
    try:
        connection.request(method, path, headers={"User-Agent": "kube-probe/1.36"})
        response = connection.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body else None
    finally:
        connection.close()


def first_ready(envoy, started: float, period: float, timeout: float = 20) -> tuple:
    """Seconds from `started` to the first 200, probing every `period`; and what the failed probes answered."""
    failures = []
    deadline = started + timeout
    next_probe = started
    while time.monotonic() < deadline:
        time.sleep(max(0.0, next_probe - time.monotonic()))  # deliberate: the kubelet's probe cadence
        next_probe += period
        try:
            status, body = probe(envoy)
        except OSError as error:
            failures.append(type(error).__name__)
            continue
        if status == 200:
            return time.monotonic() - started, failures
        failures.append(f"{status} {body['message'] if body else ''}")
    raise AssertionError(f"not ready within {timeout}s: {failures[-3:]}")


def test_the_sidecar_s_startup_probe_is_the_readiness_path():
    sidecar = sidecar_container()
    assert sidecar["startupProbe"]["httpGet"] == {"path": READY_PATH, "port": "metrics"}
    assert {"name": "metrics", "containerPort": METRICS_PORT} in sidecar["ports"]
    # Readiness never goes back once reached; a readinessProbe would only add load (sidecar_container).
    assert "readinessProbe" not in sidecar and "livenessProbe" not in sidecar


def test_not_ready_without_a_token_ready_once_it_arrives(pod, start_envoy, apiserver):
    pod.write_service_account(None)
    envoy = start_envoy(pod)
    status, body = probe(envoy)
    assert status == 503 and (body["kind"], body["reason"]) == ("Status", "ServiceUnavailable")
    assert "podward has no service-account token to send" in body["message"]
    pod.issue_token()
    seconds, _ = first_ready(envoy, time.monotonic(), period=0.05)
    status, body = probe(envoy)
    assert (status, body["status"], body["code"]) == (200, "Success", 200)
    assert "token" in body["message"] and seconds < 5
    assert apiserver.requests == []


def test_not_ready_without_its_policy_file(pod, start_envoy):
    """The shipped plugin configuration reads the policy from its file: no file, not ready, saying so."""
    envoy = start_envoy(pod, SHIPPED_PLUGIN_CONFIG)
    # The wasm build starts reading at the first probe; the token comes first.
    status, body = wait_for(lambda: (answer := probe(envoy))[1]["message"].find("no policy") >= 0 and answer,
                            what="the probe saying there is no policy")
    assert status == 503 and body["message"].startswith("podward has no policy to apply: /policy/policy.json: ")
    pod.write_policy({POLICY_KEY: json.dumps(DEFAULT_POLICY)})
    first_ready(envoy, time.monotonic(), period=0.05)


@pytest.mark.parametrize("method, path", [("GET", "/ready?x=1"), ("GET", "/ready/"), ("POST", READY_PATH),
                                          ("HEAD", READY_PATH), ("GET", PODWARD_READY_PATH),
                                          ("GET", "/api/v1/namespaces/default/pods")])
def test_only_get_of_exactly_ready_is_served_and_nothing_is_forwarded(podward, apiserver, method, path):
    """podward never runs on the metrics port: a path it would forward with the token is a 404 there."""
    first_ready(podward, time.monotonic(), period=0.05)
    status, body = probe(podward, path, method)
    assert status == 404
    if method != "HEAD":
        assert (body["kind"], body["reason"]) == ("Status", "NotFound")
    assert apiserver.requests == []
    # The app's own port still answers both, as podward does.
    assert request(podward, "GET", PODWARD_READY_PATH).json()["status"] == "Success"


def api_server_gone(bootstrap: dict) -> None:
    """Points the API server's cluster at a port nothing listens on."""
    [cluster] = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "kubernetes"]
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"][
        "port_value"] = 1


def test_a_probe_does_not_wait_for_the_api_server(pod, start_envoy, apiserver):
    """Readiness is podward's own state: an API server that is down does not fail the probe, while the app's
    requests get a 503 Status saying so."""
    envoy = start_envoy(pod, adjust=api_server_gone)
    seconds, _ = first_ready(envoy, time.monotonic(), period=0.05)
    assert seconds < 5
    assert_status(request(envoy, "GET", "/api"), 503, "ServiceUnavailable")


def test_time_from_start_to_ready(pod, start_envoy, podward_build):
    """From the Envoy process's start to the probe's first 200, as the shipped sidecar is configured (policy
    file, token, Downward API files present, as the kubelet mounts them before the container starts)."""
    pod.write_policy({POLICY_KEY: json.dumps(DEFAULT_POLICY)})

    def measure(period: float) -> tuple:
        started = time.monotonic()
        envoy = start_envoy(pod, SHIPPED_PLUGIN_CONFIG, wait=False)
        try:
            seconds, failures = first_ready(envoy, started, period)
            # Ready means served at once: the first request does not wait.
            first_request = time.monotonic()
            assert request(envoy, "GET", "/api/v1/namespaces/default/pods").status == 200
            return seconds, failures, time.monotonic() - first_request
        finally:
            envoy.stop()

    polled = [measure(0.01) for _ in range(RUNS)]
    kubelet = [measure(1.0) for _ in range(KUBELET_RUNS)]
    figures = {
        "polled_10ms_s": [round(seconds, 3) for seconds, _, _ in polled],
        "kubelet_period_1s_s": [round(seconds, 3) for seconds, _, _ in kubelet],
        "kubelet_failed_probes": [failures for _, failures, _ in kubelet],
        "first_request_after_ready_ms": [round(1000 * after, 1) for _, _, after in polled + kubelet],
    }
    figures["polled_median_s"] = round(statistics.median(figures["polled_10ms_s"]), 3)
    record_figures("readiness", podward_build, "start", figures)
    # Generous bounds for a shared 2-CPU machine; the figures are the point.
    assert figures["polled_median_s"] < 5 and max(figures["kubelet_period_1s_s"]) < 10
    assert max(figures["first_request_after_ready_ms"]) < 1000
