"""What an operator sees: Prometheus metrics from /stats/prometheus and the
JSON access log, moving as the requests and rotations that were made."""

from __future__ import annotations

import json
import re
import threading
import time

from podward.local.waiting import wait_for
from conftest import request


def metric(envoy, series: str) -> float:
    text = envoy.prometheus()
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match, f"{series} missing; podward series:\n" + "\n".join(
        line for line in text.splitlines() if line.startswith("podward"))
    return float(match.group(1))


def test_refresh_counters_move_with_rotations_and_failures(podward, pod, apiserver):
    request(podward, "GET", "/version")
    wait_for(lambda: metric(podward, "podward_token_refreshes_total{}") == 1)
    apiserver.accept(pod.issue_token())
    wait_for(lambda: metric(podward, "podward_token_refreshes_total{}") == 2)
    pod.write_service_account(None)
    wait_for(lambda: metric(podward, "podward_token_refresh_failures_total{}") >= 1)
    pod.write_podinfo({"app": "changed"}, {})
    wait_for(lambda: metric(podward, 'podward_file_refreshes_total{file="/podinfo/labels"}') == 2)
    # The wasm build fetched it through the file listener; the native build read it from disk.
    cause = {"wasm": "file source answered HTTP 404",
             "native": f"{pod.service_account_dir.path}/token does not exist"}[podward.settings.build]
    assert f"could not use /serviceaccount/token: {cause}; keeping the last good content" in podward.log()
    # The last good token is still in use.
    assert request(podward, "GET", "/api/v1/namespaces/default/pods").status == 200


def held_requests(envoy, paths: list[tuple[str, str]]) -> tuple[list, list[threading.Thread]]:
    """Sends each request from a thread of its own, and returns once Envoy holds them all."""
    responses = []
    threads = [threading.Thread(target=lambda m=method, p=path: responses.append(request(envoy, m, p)))
               for method, path in paths]
    for thread in threads:
        thread.start()
    wait_for(lambda: envoy.stats()["http.podward.downstream_rq_active"] == len(paths))
    return responses, threads


def test_requests_answered_after_waiting_for_the_token_are_each_counted_once(pod, start_envoy, apiserver):
    """Requests held before the token exists are woken when it arrives; those refused are answered from
    inside the wake-up, and Envoy ends their streams inside that reply. Each request is counted once, the
    same in both builds (the native build once lost the refused ones)."""
    pod.write_service_account(None)
    envoy = start_envoy(pod, {"startup_wait_ms": 10_000})
    exec_path = "/api/v1/namespaces/default/pods/demo-0/exec"
    responses, threads = held_requests(envoy, [("GET", "/api/v1/namespaces/default/pods")] * 3
                                       + [("POST", exec_path)] * 3)
    assert responses == [], "held until the token exists"
    apiserver.accept(pod.issue_token())
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(response.status for response in responses) == [200] * 3 + [403] * 3
    series = {
        'podward_requests_total{verb="list",group="core",resource="pods",code="2xx"}': 3,
        'podward_requests_total{verb="create",group="core",resource="pods/exec",code="4xx"}': 3,
        'podward_local_replies_total{reason="policy_denied"}': 3,
        'podward_local_replies_total{reason="no_token"}': 0,
    }
    envoy.settled_prometheus(lambda text: all(f"{name} {count}" in text for name, count in series.items()))
    for name, count in series.items():
        assert metric(envoy, name) == count, name


def test_requests_given_up_get_the_status_they_are_counted_under(pod, start_envoy, apiserver):
    """Requests held for a token that never comes are given up with a Status saying why, from inside the
    wake-up; each is counted as no_token once, and none reaches the API server."""
    pod.write_service_account(None)
    envoy = start_envoy(pod, {"startup_wait_ms": 1000})
    responses, threads = held_requests(envoy, [("GET", "/api/v1/namespaces/default/pods")] * 3)
    for thread in threads:
        thread.join(timeout=10)
    assert [response.status for response in responses] == [503] * 3
    for response in responses:
        assert "podward has no service-account token to send" in json.loads(response.body)["message"]
    name = 'podward_local_replies_total{reason="no_token"}'
    envoy.settled_prometheus(lambda text: f"{name} 3" in text)
    assert metric(envoy, name) == 3
    assert apiserver.requests == []


def test_a_token_past_its_renewal_point_is_flagged(pod, start_envoy, apiserver):
    # Issued 50 minutes ago with a 1 h lifetime: past the kubelet's 80 % mark.
    apiserver.accept(pod.issue_token(lifetime_seconds=3600, now=time.time() - 3000))
    envoy = start_envoy(pod)
    assert request(envoy, "GET", "/version").status == 200
    wait_for(lambda: metric(envoy, "podward_token_stale_total{}") == 1)
    assert "the token is past its renewal point" in envoy.log()
    assert "the kubelet has not replaced it" in envoy.log()


def test_the_access_log_carries_podwards_reading_of_each_request(pod, start_envoy):
    podward = start_envoy(pod, {"access_record": "all"})
    request(podward, "GET", "/api/v1/namespaces/default/pods/demo-1")
    request(podward, "POST", "/api/v1/namespaces/default/pods/demo-1/attach")
    podward.stop()
    records = [json.loads(line) for line in podward.log().splitlines() if line.startswith("{")]
    by_path = {record["path"]: record for record in records}
    allowed = by_path["/api/v1/namespaces/default/pods/demo-1"]
    assert allowed["code"] == 200 and allowed["pod"] == "default/curl-with-ambassador"
    assert json.loads(allowed["podward"]) == {
        "decision": "forward", "rule": "kubectl-proxy/default", "verb": "get", "group": "",
        "resource": "pods", "subresource": "", "namespace": "default", "name": "demo-1"}
    denied = by_path["/api/v1/namespaces/default/pods/demo-1/attach"]
    assert denied["code"] == 403
    assert json.loads(denied["podward"])["decision"] == "policy_denied"
    assert json.loads(denied["podward"])["rule"] == "kubectl-proxy/no-exec-or-attach"


def test_by_default_only_refusals_carry_podwards_reading(podward):
    request(podward, "GET", "/api/v1/namespaces/default/pods/demo-1")
    request(podward, "POST", "/api/v1/namespaces/default/pods/demo-1/attach")
    podward.stop()
    records = {record["path"]: record for record in
               (json.loads(line) for line in podward.log().splitlines() if line.startswith("{"))}
    # Envoy prints an absent filter state as null: the API server's audit log has the forwarded request.
    assert records["/api/v1/namespaces/default/pods/demo-1"]["podward"] is None
    assert json.loads(records["/api/v1/namespaces/default/pods/demo-1/attach"]["podward"])["decision"] == \
        "policy_denied"
