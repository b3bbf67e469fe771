"""The core promise, against real Envoy and real TLS: the app speaks plain HTTP
to 127.0.0.1, podward adds the current token and the pod's identity, Envoy
verifies the API server, and nothing is ever forwarded without credentials."""

from __future__ import annotations

import threading
import time
import urllib.parse

import pytest


from conftest import assert_status, held_requests, request
from podward.local.waiting import wait_for
from test_observability import metric

def test_token_and_downward_headers_arrive_upstream(podward, pod, apiserver):
    response = request(podward, "GET", "/api/v1/namespaces/default/pods", headers={"User-Agent": "app/1.0"})
    assert response.status == 200
    received = apiserver.requests[-1]
    assert received.header("authorization") == f"Bearer {pod.token}"
    expected = {
        "x-pod-name": "curl-with-ambassador",
        "x-pod-namespace": "default",
        "x-pod-uid": pod.env["POD_UID"],
        "x-pod-ip": "10.244.0.7",
        "x-pod-host-ip": "192.168.49.2",
        "x-pod-node-name": "node-1",
        "x-pod-service-account": "default",
        "x-pod-cpu-request": "100",
        "x-pod-cpu-limit": "500",
        "x-pod-memory-request": "33554432",
        "x-pod-memory-limit": "67108864",
        # Baggage-style maps, percent-encoded where a header needs it.
        "x-pod-labels": "app=curl-with-ambassador,tier=front-end",
        "x-pod-annotations": "example.com/note=line%20one%0Aline%20two,owner=team-a",
    }
    assert {name: received.header(name) for name in expected} == expected
    assert received.header("user-agent").startswith("app/1.0 podward/")
    assert received.header("user-agent").endswith("(pod default/curl-with-ambassador)")


def test_encoded_headers_decode_to_the_original_values(podward, pod, apiserver):
    annotations = {"note": "multi\nline \"quoted\" \u00e9t\u00e9 100%", "tab": "a\tb"}
    pod.write_podinfo({"app": "x"}, annotations)

    def sent_the_new_annotations():
        request(podward, "GET", "/version")
        header = apiserver.requests[-1].header("x-pod-annotations")
        return header if header.startswith("note=") else None

    header = wait_for(sent_the_new_annotations, 3, "the new annotations in the headers")
    decoded = {}
    for entry in header.split(","):
        key, value = entry.split("=", 1)
        decoded[urllib.parse.unquote(key)] = urllib.parse.unquote(value)
    assert decoded == annotations


def test_a_labels_update_shows_up_in_the_headers(podward, pod, apiserver):
    pod.write_podinfo({"app": "curl-with-ambassador", "version": "v2"}, {})
    changed_at = time.monotonic()

    def sent_the_new_labels():
        request(podward, "GET", "/version")
        return apiserver.requests[-1].header("x-pod-labels") == "app=curl-with-ambassador,version=v2"

    wait_for(sent_the_new_labels, 3, "the new labels in the headers")
    # An empty map is not sent, and the app cannot send its own.
    assert apiserver.requests[-1].header("x-pod-annotations") is None
    assert time.monotonic() - changed_at < 2.5


@pytest.mark.parametrize("token_file", [None, "", "  \n"], ids=["missing", "empty", "blank"])
def test_no_token_means_503_status_and_the_api_server_is_never_contacted(pod, start_envoy, apiserver, token_file):
    pod.write_service_account(token_file)
    envoy = start_envoy(pod, {"startup_wait_ms": 500})
    apiserver.clear_requests()
    status = assert_status(request(envoy, "GET", "/api/v1/namespaces/default/pods"), 503, "ServiceUnavailable")
    assert "no service-account token" in status["message"]
    missing = {"wasm": "HTTP 404", "native": "does not exist"}[envoy.settings.build]
    expected_cause = missing if token_file is None else "the token file is empty"
    assert expected_cause in status["message"]
    assert status["details"]["retryAfterSeconds"] == 1
    assert apiserver.requests == []


def test_requests_before_the_first_token_wait_for_it(pod, start_envoy, apiserver):
    pod.write_service_account(None)
    envoy = start_envoy(pod, {"startup_wait_ms": 5000})
    apiserver.clear_requests()
    results = []
    waiter = threading.Thread(target=lambda: results.append(request(envoy, "GET", "/api/v1/namespaces/default/pods")))
    waiter.start()
    # The request waited: Envoy has it, the API server has seen nothing, and the app no answer.
    wait_for(lambda: held_requests(envoy) == 1, what="podward holding the request")
    assert apiserver.requests == [] and not results
    apiserver.accept(pod.issue_token())
    waiter.join(timeout=10)
    assert results and results[0].status == 200
    assert [r.token for r in apiserver.requests] == [pod.token]


def test_an_expired_token_is_refused_with_the_cause(pod, start_envoy, apiserver):
    expired = pod.issue_token(lifetime_seconds=3600, now=time.time() - 7200)
    apiserver.accept(expired)
    envoy = start_envoy(pod)
    apiserver.clear_requests()
    status = assert_status(request(envoy, "GET", "/api/v1/namespaces/default/pods"), 503, "ServiceUnavailable")
    assert "token expired" in status["message"]
    assert apiserver.requests == []


def test_a_wrong_ca_gives_a_503_status_and_no_response_from_the_impostor(pod, start_envoy, pki, apiserver):
    envoy = start_envoy(pod, ca_file=pki.wrong_ca)
    status = assert_status(request(envoy, "GET", "/api/v1/namespaces/default/pods"), 503, "ServiceUnavailable")
    assert status["message"].startswith("podward could not reach the API server")
    assert "UF" in status["message"]
    stats = envoy.stats()
    assert stats["cluster.kubernetes.ssl.fail_verify_error"] >= 1


def test_the_token_never_reaches_the_log_even_at_debug(pod, start_envoy, apiserver, podward_build):
    component = {"wasm": "wasm", "native": "dynamic_modules"}[podward_build]
    envoy = start_envoy(pod, extra_args=("--component-log-level", f"{component}:trace"))
    first = pod.token
    request(envoy, "GET", "/api/v1/namespaces/default/pods")
    second = pod.issue_token()
    apiserver.accept(second)
    wait_for(lambda: request(envoy, "GET", "/api/v1/namespaces/default/pods").status == 200
             and apiserver.requests[-1].token == second, what="podward sending the rotated token")
    pod.write_service_account("not a valid token")
    wait_for(lambda: metric(envoy, "podward_token_refresh_failures_total{}"), what="podward refusing the bad token")
    request(envoy, "POST", "/api/v1/namespaces/default/pods/x/exec")
    envoy.stop()
    log = envoy.log()
    assert any("changed" in line for line in envoy.podward_log()), log[-3000:]
    for secret in (first, second, "not a valid token"):
        for piece in (secret, secret.split(".")[-1]):
            assert piece not in log


def test_an_unreachable_api_server_gives_a_503_status(pod, tmp_path, pki, podward_build):
    from podward.local.envoy_process import Envoy, free_port, local_settings

    settings = local_settings(pod, free_port(), pki.ca_cert, build=podward_build)
    envoy = Envoy(settings, tmp_path / "down", env=pod.env).start()
    try:
        status = assert_status(request(envoy, "GET", "/api/v1/namespaces/default/pods"), 503, "ServiceUnavailable")
        assert "podward could not reach the API server" in status["message"]
    finally:
        envoy.stop()


def test_a_missing_downward_file_leaves_its_header_out_and_nothing_else(pod, start_envoy, apiserver):
    pod.podinfo_dir.write({"labels": 'app="only-labels"'})
    envoy = start_envoy(pod)
    assert request(envoy, "GET", "/api/v1/namespaces/default/pods").status == 200
    received = apiserver.requests[-1]
    assert received.token == pod.token
    assert received.header("x-pod-labels") == "app=only-labels"
    assert received.header("x-pod-annotations") is None
    assert "header x-pod-annotations not sent: file /podinfo/annotations could not be read" in envoy.log()
