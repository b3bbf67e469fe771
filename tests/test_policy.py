"""Policy and hardening through real Envoy: podward lends the pod's identity
only as far as the policy allows (path tricks: test_attacks.py)."""

from __future__ import annotations

import os
import re
import subprocess

import kubernetes.client
import pytest

from conftest import assert_status, request

EXEC_PATH = "/api/v1/namespaces/default/pods/demo-0/exec"
# Path tricks against the deny rules are in test_attacks.py's catalogue.


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("subresource", ["exec", "attach"])
def test_kubectl_proxy_preset_denies_exec_and_attach(podward, apiserver, method, subresource):
    path = f"/api/v1/namespaces/default/pods/demo-0/{subresource}?command=sh&stdin=true"
    status = assert_status(request(podward, method, path), 403, "Forbidden")
    assert status["message"].startswith('pods "demo-0" is forbidden: podward policy rule '
                                        '"kubectl-proxy/no-exec-or-attach"')
    assert status["details"] == {"name": "demo-0", "kind": "pods"}
    assert apiserver.requests == []


def test_only_local_hosts_are_accepted(podward, apiserver):
    for host in ("localhost:8001", "127.0.0.1", "[::1]:8001"):
        assert request(podward, "GET", "/version", headers={"Host": host}).status == 200
    apiserver.clear_requests()
    for host in ("evil.example", "localhost.evil.example:8001", "127.0.0.1.nip.io"):
        status = assert_status(request(podward, "GET", "/version", headers={"Host": host}), 403, "Forbidden")
        assert "not accepted" in status["message"]
    assert apiserver.requests == []


def test_read_only_preset(pod, start_envoy, apiserver):
    envoy = start_envoy(pod, {"policy": {"preset": "read-only"}})
    assert request(envoy, "GET", "/api/v1/namespaces/default/pods").status == 200
    assert request(envoy, "GET", "/apis").status == 200
    apiserver.clear_requests()
    status = assert_status(request(envoy, "DELETE", "/api/v1/namespaces/default/pods/demo-0"), 403, "Forbidden")
    assert '"read-only/default"' in status["message"]
    assert_status(request(envoy, "POST", "/api/v1/namespaces/default/pods/demo-0/portforward"), 403, "Forbidden")
    assert apiserver.requests == []


def test_own_namespace_preset_uses_the_pods_namespace(pod, start_envoy, apiserver):
    envoy = start_envoy(pod, {"policy": {"preset": "own-namespace"}})
    assert request(envoy, "GET", "/api/v1/namespaces/default/pods").status == 200
    assert request(envoy, "GET", "/api/v1/nodes").status == 200
    apiserver.clear_requests()
    for method, path in [("GET", "/api/v1/namespaces/kube-system/pods"), ("GET", "/api/v1/pods"),
                         ("DELETE", "/api/v1/namespaces/default"), ("DELETE", "/api/v1/nodes/node-1")]:
        assert_status(request(envoy, method, path), 403, "Forbidden")
    assert apiserver.requests == []


def test_custom_rules_before_a_preset(pod, start_envoy, apiserver):
    policy = {"preset": "read-only", "rules": [
        {"name": "own-configmaps", "action": "allow", "verbs": ["create", "update", "patch", "delete"],
         "apiGroups": [""], "resources": ["configmaps"], "namespaces": ["$self"]},
        {"name": "no-secrets", "action": "deny", "verbs": ["*"], "apiGroups": [""], "resources": ["secrets"]},
    ]}
    envoy = start_envoy(pod, {"policy": policy})
    # One name per build: the stand-in keeps what each run created.
    name = f"made-by-app-{envoy.settings.build}"
    body = f'{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"a":"1"}}}}'.encode()
    created = request(envoy, "POST", "/api/v1/namespaces/default/configmaps", body=body,
                      headers={"Content-Type": "application/json"})
    assert created.status == 201
    status = assert_status(request(envoy, "GET", "/api/v1/namespaces/default/secrets"), 403, "Forbidden")
    assert '"rules/no-secrets"' in status["message"]
    assert_status(request(envoy, "POST", "/api/v1/namespaces/kube-system/configmaps", body=body), 403, "Forbidden")


def test_kubectl_prints_the_denial(pod, start_envoy):
    envoy = start_envoy(pod, {"policy": {"preset": "read-only"}})
    result = subprocess.run([os.environ["KUBECTL"], "--server", envoy.url, "delete", "pod", "demo-0", "--wait=false"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert 'Error from server (Forbidden): pods "demo-0" is forbidden: podward policy rule "read-only/default"' \
        in result.stderr, result.stderr


def test_the_python_client_sees_a_forbidden_status(pod, start_envoy):
    envoy = start_envoy(pod, {"policy": {"preset": "read-only"}})
    configuration = kubernetes.client.Configuration()
    configuration.host = envoy.url
    api = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))
    assert [p.metadata.name for p in api.list_namespaced_pod("default").items] == ["demo-0", "demo-1", "demo-2"]
    with pytest.raises(kubernetes.client.ApiException) as denied:
        api.delete_namespaced_pod("demo-1", "default")
    assert denied.value.status == 403
    assert "read-only/default" in denied.value.body


def test_denials_and_requests_are_counted_and_logged(podward, apiserver):
    request(podward, "GET", "/api/v1/namespaces/default/pods")
    request(podward, "GET", "/api/v1/namespaces/default/pods/demo-0")
    request(podward, "POST", EXEC_PATH)
    request(podward, "GET", "/version", headers={"Host": "evil.example"})
    # Each request is counted when its stream ends, which can come after the next request's local reply:
    # wait for every series asserted below, not only the last reply's.
    counted = ['podward_requests_total{verb="list",', 'podward_requests_total{verb="get",',
               'podward_requests_total{verb="create",', 'podward_policy_denied_total{',
               'reason="policy_denied"}', 'reason="host_not_accepted"}']
    metrics = podward.settled_prometheus(lambda text: all(series in text for series in counted))

    def value(series: str) -> float:
        match = re.search(rf"^{re.escape(series)} (\S+)$", metrics, re.MULTILINE)
        assert match, f"{series} missing from:\n" + "\n".join(l for l in metrics.splitlines() if "podward" in l)
        return float(match.group(1))

    assert value('podward_requests_total{verb="list",group="core",resource="pods",code="2xx"}') == 1
    assert value('podward_requests_total{verb="get",group="core",resource="pods",code="2xx"}') == 1
    assert value('podward_requests_total{verb="create",group="core",resource="pods/exec",code="4xx"}') == 1
    assert value('podward_policy_denied_total{rule="kubectl-proxy/no-exec-or-attach"}') == 1
    assert value('podward_local_replies_total{reason="policy_denied"}') == 1
    assert value('podward_local_replies_total{reason="host_not_accepted"}') == 1
