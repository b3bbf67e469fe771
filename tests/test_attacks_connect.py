"""The attack catalogue: exec, attach and port-forward read around a deny of `create`.

kube-apiserver 1.35+ authorizes a GET of pods/exec, pods/attach or pods/portforward, which is how a WebSocket upgrade
starts (kubectl 1.30+ tries one first), as `create` as well as `get`, as it authorizes their SPDY POST
(`AuthorizePodWebsocketUpgradeCreatePermission`, on by default; on 1.36.2 a GET needs both verbs with or without an
`Upgrade` header, which `test_the_api_server_and_podward_agree_on_a_websocket_exec` shows). On main (issue 20,
finding 4) podward read that GET as `get` alone: with a deny of `create` on pods/exec and `default_action: allow`,
`kubectl exec` ran end to end through podward. podward now decides such a GET as `get` and as `create`: denied if
either is denied, allowed only if both are.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess

import pytest

from conftest import grant
from harness.pod import ClusterPod
from podward.local.remotecommand import (PORT_FORWARD_SPDY, PORT_FORWARD_TUNNEL, SPDY_UPGRADE, STREAM_PROTOCOL_HEADER,

                                   V5_CHANNEL)
from test_attacks import exchange, http1, upstream

SESSIONS = {"exec": "?command=true&stdout=true", "attach": "?stdout=true", "portforward": "?ports=8080"}
SESSION_RESOURCES = [f"pods/{subresource}" for subresource in SESSIONS]


def rule(name: str, action: str, verbs: list) -> dict:
    return {"name": name, "action": action, "verbs": verbs, "apiGroups": [""], "resources": SESSION_RESOURCES}


# Every rule shape on the session subresources, as a deny under default allow and an allow under default deny
# (which also allows reading pods, so that only the session is at stake).
READ_PODS = {"name": "read-pods", "action": "allow", "verbs": ["get", "list"], "apiGroups": [""],
             "resources": ["pods"]}
SHAPES = {
    "deny-create": {"default_action": "allow", "rules": [rule("no-sessions", "deny", ["create"])]},
    "deny-get": {"default_action": "allow", "rules": [rule("no-sessions", "deny", ["get"])]},
    "deny-any": {"default_action": "allow", "rules": [rule("no-sessions", "deny", ["*"])]},
    "allow-get": {"default_action": "deny", "rules": [rule("sessions", "allow", ["get"]), READ_PODS]},
    "allow-create": {"default_action": "deny", "rules": [rule("sessions", "allow", ["create"]), READ_PODS]},
    "allow-get-and-create": {"default_action": "deny", "rules": [rule("sessions", "allow", ["get", "create"]),
                                                                 READ_PODS]},
    "allow-any": {"default_action": "deny", "rules": [rule("sessions", "allow", ["*"]), READ_PODS]},
}
# Whether each shape lets through a session's GET (a WebSocket upgrade, or any GET: both `get` and `create`) and its
# POST (a SPDY upgrade: `create`).
LETS_THROUGH = {
    "deny-create": {"GET": False, "POST": False},
    "deny-get": {"GET": False, "POST": True},
    "deny-any": {"GET": False, "POST": False},
    "allow-get": {"GET": False, "POST": False},
    "allow-create": {"GET": False, "POST": True},
    "allow-get-and-create": {"GET": True, "POST": True},
    "allow-any": {"GET": True, "POST": True},
}


def websocket(subresource: str) -> dict:
    protocol = PORT_FORWARD_TUNNEL if subresource == "portforward" else V5_CHANNEL
    return {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(), "Sec-WebSocket-Protocol": protocol}


def spdy(subresource: str) -> dict:
    protocol = PORT_FORWARD_SPDY if subresource == "portforward" else "v4.channel.k8s.io"
    return {"Connection": "Upgrade", "Upgrade": SPDY_UPGRADE, STREAM_PROTOCOL_HEADER: protocol}


# How clients open a session: kubectl's WebSocket GET, a SPDY upgrade by GET (the API server takes either method),
# SPDY's usual POST, and a GET without an upgrade.
TRANSPORTS = {
    "websocket": ("GET", websocket),
    "spdy-get": ("GET", spdy),
    "spdy-post": ("POST", spdy),
    "plain-get": ("GET", lambda subresource: {}),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_a_session_is_decided_as_get_and_as_create(pod, start_envoy, apiserver, shape):
    envoy = start_envoy(pod, {"policy": SHAPES[shape]})
    wrong = []
    for subresource, query in SESSIONS.items():
        for transport, (method, headers) in TRANSPORTS.items():
            apiserver.clear_requests()
            path = f"/api/v1/namespaces/default/pods/demo-0/{subresource}{query}"
            [answer] = exchange(envoy.settings.listen_port, http1(method, path, headers(subresource)))
            refused_by_podward = answer.status == 403 and b"podward policy rule" in answer.body
            forwarded = upstream(apiserver) == [(method, path)]
            if LETS_THROUGH[shape][method]:
                ok = forwarded and not refused_by_podward
                ok = ok and all(r.token == pod.token for r in apiserver.requests)
            else:
                ok = refused_by_podward and upstream(apiserver) == []
                message = answer.status_object()["message"]
                verbs = "get and create" if method == "GET" else "create"
                ok = ok and f'to {verbs} resource "pods/{subresource}"' in message
            if not ok:
                wrong.append((subresource, transport, answer.status, answer.body[:200]))
    assert wrong == []


def kubectl(envoy, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    home = envoy.workdir / "kubectl-home"
    home.mkdir(exist_ok=True)
    return subprocess.run([os.environ["KUBECTL"], "--server", envoy.url, "--namespace", "default", *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HOME": str(home), **(env or {})})


def test_kubectl_exec_over_websocket_is_refused_by_a_deny_of_create(pod, start_envoy, apiserver):
    # On main: kubectl 1.37's WebSocket exec (a GET) went through, read as `get`.
    policy = {"default_action": "allow", "rules": [
        {"name": "no-exec", "action": "deny", "verbs": ["create"], "apiGroups": [""], "resources": ["pods/exec"]}]}
    envoy = start_envoy(pod, {"policy": policy, "access_record": "all"})
    refused = kubectl(envoy, "exec", "demo-0", "--", "true")
    assert refused.returncode == 1
    assert 'pods "demo-0" is forbidden: podward policy rule "rules/no-exec"' in refused.stderr
    assert [r.path for r in apiserver.requests if "/exec" in r.path] == [] and apiserver.sessions == []
    # kubectl tried the WebSocket first, then SPDY: podward counted and recorded both as the create they are.
    envoy.stop()
    records = [json.loads(line) for line in envoy.log().splitlines() if line.startswith("{")]
    tries = {r["method"]: json.loads(r["podward"]) for r in records if "/exec" in r["path"]}
    assert set(tries) == {"GET", "POST"}, records
    assert {(r["decision"], r["rule"], r["verb"], r.get("verbs")) for r in tries.values()} == {
        ("policy_denied", "rules/no-exec", "create", "get,create"), ("policy_denied", "rules/no-exec", "create", None)}


def test_kubectl_exec_falls_back_to_spdy_where_only_create_is_allowed(pod, start_envoy, apiserver):
    # The RBAC of a cluster before 1.35 (create on pods/exec, no get): the WebSocket GET is refused, and kubectl
    # runs the command over SPDY, whose POST is a create alone.
    policy = {"default_action": "allow", "rules": [
        {"name": "no-exec-get", "action": "deny", "verbs": ["get"], "apiGroups": [""], "resources": ["pods/exec"]}]}
    envoy = start_envoy(pod, {"policy": policy})
    ran = kubectl(envoy, "exec", "demo-0", "--", "echo", "over spdy")
    assert (ran.returncode, ran.stdout) == (0, "over spdy\n"), ran.stderr
    assert [(s.kind, s.transport) for s in apiserver.sessions] == [("exec", "spdy")]
    assert [r.method for r in apiserver.requests if "/exec" in r.path] == ["POST"]
    # The refused WebSocket try is counted under its 403, the upgrade that ran under its 101 Switching Protocols.
    text = envoy.settled_prometheus(lambda text: all(f'resource="pods/exec",code="{code}"}} 1' in text
                                                     for code in ("4xx", "1xx")))
    exec_series = {line.split("{")[1].split("}")[0] for line in text.splitlines()
                   if line.startswith("podward_requests_total{") and 'resource="pods/exec"' in line
                   and not line.endswith(" 0")}
    assert exec_series == {'verb="create",group="core",resource="pods/exec",code="4xx"',
                           'verb="create",group="core",resource="pods/exec",code="1xx"'}, exec_series


@pytest.mark.envtest
@pytest.mark.parametrize("verbs", [["get"], ["create"], ["get", "create"]], ids="+".join)
def test_the_api_server_and_podward_agree_on_a_websocket_exec(kube, namespace, tmp_path, start_real_envoy, verbs):
    """A service account granted `verbs` on pods/exec by RBAC, and a podward policy allowing the same verbs: both
    refuse a WebSocket exec unless it is allowed both, and podward refuses it before the API server sees it."""
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": namespace}})
    grant(kube, namespace, "app", [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": verbs}])
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default",
                                                                             "namespace": namespace}})
    pod_object = kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "target", "namespace": namespace},
                              "spec": {"nodeName": "node-1", "containers": [{"name": "main", "image": "x"}]}})
    me = ClusterPod(tmp_path / "pod", kube, {**pod_object, "spec": {**pod_object["spec"],
                                                                    "serviceAccountName": "app"}})
    token = me.issue_token(service_account="app")
    path = f"/api/v1/namespaces/{namespace}/pods/target/exec?command=true&stdout=true"
    direct = kube.request("GET", path, token=token, headers=websocket("exec"))
    both = set(verbs) == {"get", "create"}
    assert (direct.status == 403) == (not both), direct.body

    policy = {"default_action": "deny", "rules": [
        {"name": "exec", "action": "allow", "verbs": verbs, "apiGroups": [""], "resources": ["pods/exec"]}]}
    envoy = start_real_envoy(me, {"policy": policy})
    [through] = exchange(envoy.settings.listen_port, http1("GET", path, websocket("exec")))
    by_podward = through.status == 403 and b"podward policy rule" in through.body
    assert by_podward == (not both), through.body[:300]
    # Allowed both, it reaches the API server, which takes it (and fails only for want of a kubelet).
    assert both <= (through.status == direct.status != 403)
