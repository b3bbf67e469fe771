"""The app's Unix socket, like `kubectl proxy --unix-socket`: the same listener as the TCP port (one podward, one
policy, one token), reached by curl and the Python client (a watch and a write) against the real API server,
with the same answers as the TCP port byte for byte; the socket alone, with no TCP port; and the file mode that
lets only Envoy's user and the pod's fsGroup connect."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile

import kubernetes.client
import pytest
import urllib3
from kubernetes import watch

from podward.bootstrap import bootstrap
from podward.constants import APP_SOCKET, APP_SOCKET_MODE, READY_PATH
from podward.settings import shipped_settings

from podward.local.waiting import wait_for
from test_attacks import listening_ports, parse_answers
from test_real_watch import Ticker

EXEC = "/api/v1/namespaces/{namespace}/pods/curl-with-ambassador/exec?command=id"


def raw(envoy, data: bytes, over: str) -> bytes:
    """Sends one request (which must close the connection) over the TCP port or the socket; the whole answer."""
    if over == "tcp":
        connection = socket.create_connection(("127.0.0.1", envoy.settings.listen_port), timeout=10)
    else:
        connection = socket.socket(socket.AF_UNIX)
        connection.settimeout(10)
        connection.connect(envoy.settings.app_socket)
    with connection:
        connection.sendall(data)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


def curl(envoy, path: str, *args: str, user: int | None = None, groups: list | None = None
         ) -> subprocess.CompletedProcess:
    """curl --unix-socket, as an app container would run it (Host: localhost); as `user` if given."""
    identity = {"user": user, "group": user, "extra_groups": groups or []} if user is not None else {}
    return subprocess.run(["curl", "-sS", "--unix-socket", envoy.settings.app_socket, *args, f"http://localhost{path}"],
                          capture_output=True, text=True, timeout=30, **identity)


def python_client_over_socket(envoy) -> kubernetes.client.ApiClient:
    """The Python kubernetes client, its http://localhost server reached through the sidecar's socket."""
    socket_path = envoy.settings.app_socket

    class UnixSocketConnection(urllib3.connection.HTTPConnection):
        def _new_conn(self) -> socket.socket:
            connection = socket.socket(socket.AF_UNIX)
            connection.settimeout(self.timeout if isinstance(self.timeout, (int, float)) else None)
            connection.connect(socket_path)
            return connection

    class UnixSocketPool(urllib3.HTTPConnectionPool):
        ConnectionCls = UnixSocketConnection

    configuration = kubernetes.client.Configuration()
    configuration.host = "http://localhost"
    api_client = kubernetes.client.ApiClient(configuration)
    api_client.rest_client.pool_manager.pool_classes_by_scheme = {"http": UnixSocketPool}
    return api_client


def test_the_socket_and_the_port_are_one_listener():
    [listener] = [l for l in bootstrap(shipped_settings())["static_resources"]["listeners"]
                  if l["name"] == "podward"]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 8001}
    assert listener["additional_addresses"] == [{"address": {"pipe": {"path": APP_SOCKET, "mode": 0o660}}}]


@pytest.mark.envtest
def test_curl_over_the_socket_lists_pods(real_podward, real_pod):
    listed = curl(real_podward, f"/api/v1/namespaces/{real_pod.namespace}/pods")
    assert listed.returncode == 0, listed.stderr
    assert [p["metadata"]["name"] for p in json.loads(listed.stdout)["items"]] == ["curl-with-ambassador"]


@pytest.mark.envtest
def test_the_python_client_watches_and_writes_over_the_socket(real_podward, real_pod, kube):
    namespace = real_pod.namespace
    with Ticker(kube, namespace, "socket-ticker", 0.2), python_client_over_socket(real_podward) as api_client:
        api = kubernetes.client.CoreV1Api(api_client)
        events = [event["type"] for event in watch.Watch().stream(
            api.list_namespaced_config_map, namespace, field_selector="metadata.name=socket-ticker",
            timeout_seconds=2)]
        created = api.create_namespaced_config_map(namespace, kubernetes.client.V1ConfigMap(
            metadata=kubernetes.client.V1ObjectMeta(name="written-over-the-socket"), data={"via": "unix"}))
    assert events[0] == "ADDED" and events.count("MODIFIED") >= 5
    assert created.metadata.uid
    # The API server stored it, as the pod's service account (the audit log names who wrote it).
    stored = kube.admin_ok("GET", f"/api/v1/namespaces/{namespace}/configmaps/written-over-the-socket")
    assert stored["data"] == {"via": "unix"}
    [event] = [e for e in kube.audit_events() if e["verb"] == "create" and e.get("objectRef", {}).get(
        "name") == "written-over-the-socket" and e["objectRef"]["namespace"] == namespace]
    assert event["user"]["username"] == f"system:serviceaccount:{namespace}:app"


@pytest.mark.envtest
def test_the_socket_answers_as_the_port_does(real_podward, real_pod):
    """The same podward, policy, Host check and Envoy options: every answer is the same Status on both."""
    namespace = real_pod.namespace

    def request(method: str, path: str, host: bytes = b"localhost") -> bytes:
        return f"{method} {path} HTTP/1.1\r\nConnection: close\r\n".encode() + b"Host: " + host + b"\r\n\r\n"

    cases = {
        "list": (request("GET", f"/api/v1/namespaces/{namespace}/pods?limit=1"), 200, None),
        "exec (podward's policy)": (request("POST", EXEC.format(namespace=namespace)), 403, "Forbidden"),
        "a foreign Host": (request("GET", "/api", host=b"evil.example"), 403, "Forbidden"),
        "an escaped slash (Envoy's)": (request("GET", "/api/v1/namespaces%2Fx/pods"), 400, "BadRequest"),
        "secrets (the API server's RBAC)": (request("GET", f"/api/v1/namespaces/{namespace}/secrets"), 403,
                                            "Forbidden"),
        "HTTP/1.0 (Envoy's)": (b"GET /api HTTP/1.0\r\nHost: localhost\r\n\r\n", 426, "BadRequest"),
    }
    for name, (data, code, reason) in cases.items():
        [over_tcp] = parse_answers(raw(real_podward, data, "tcp"))
        [over_socket] = parse_answers(raw(real_podward, data, "unix"))
        assert over_socket.status == over_tcp.status == code, name
        if reason:
            tcp_status, socket_status = json.loads(over_tcp.body), json.loads(over_socket.body)
            assert socket_status == tcp_status and socket_status["reason"] == reason, name
        else:
            assert json.loads(over_socket.body)["kind"] == json.loads(over_tcp.body)["kind"] == "PodList", name
    # Both ways in are logged alike: each request twice in the access log (Envoy flushes it every second).
    expected = [code for _, code, _ in cases.values()] * 2
    wait_for(lambda: sorted(json.loads(line)["code"] for line in real_podward.log().splitlines()
                            if line.startswith("{")) == sorted(expected), what="both ways in logged alike")


def test_the_socket_alone(pod, start_envoy, apiserver):
    """No TCP port at all, as `kubectl proxy --unix-socket`: only containers that mount the socket get in."""
    envoy = start_envoy(pod, listen_port=None)
    assert listening_ports(envoy.process.pid) == {envoy.settings.metrics_port}
    listed = curl(envoy, "/api/v1/namespaces/default/pods", "-w", "%{http_code}", "-o", "/dev/null")
    assert listed.stdout == "200"
    [received] = apiserver.requests
    assert received.token == pod.token
    denied = curl(envoy, "/api/v1/namespaces/default/pods/demo-0/exec", "-X", "POST")
    assert json.loads(denied.stdout)["reason"] == "Forbidden"
    # The startup probe reaches podward over the socket when there is no port.
    probe = subprocess.run(["curl", "-s", f"http://127.0.0.1:{envoy.settings.metrics_port}{READY_PATH}"],
                           capture_output=True, text=True, timeout=30)
    assert json.loads(probe.stdout)["status"] == "Success"


@pytest.fixture
def fs_group_dir():
    """A directory as the kubelet makes an emptyDir for a pod with an fsGroup: group-owned by it, setgid, so a
    socket created there belongs to the group. In /tmp, so that other users can reach it."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="pw-socket-"))
    root.chmod(0o755)
    group = 4242
    directory = root / "podward"
    directory.mkdir()
    os.chown(directory, -1, group)
    directory.chmod(0o2777)
    yield directory, group
    shutil.rmtree(root, ignore_errors=True)


def test_the_socket_mode_admits_the_pod_s_fs_group_only(pod, start_envoy, fs_group_dir):
    """Runs clients as another user, so the suite runs as root (as ./build.sh does, for apt-get)."""
    directory, group = fs_group_dir
    envoy = start_envoy(pod, app_socket=str(directory / "api.sock"))
    info = os.stat(envoy.settings.app_socket)
    assert (oct(info.st_mode & 0o777), info.st_gid) == (oct(APP_SOCKET_MODE), group)
    nobody = 65534
    # In the pod's group (as every container of a pod with an fsGroup is): served.
    member = curl(envoy, "/api", "-w", "%{http_code}", "-o", "/dev/null", user=nobody, groups=[group])
    assert member.stdout == "200", member.stderr
    # Another user without the group: the kernel refuses the connection. (Debian's python3: the .venv's lies
    # under root's home, which that user cannot reach.)
    stranger = subprocess.run(["/usr/bin/python3", "-c", "import socket, sys\ntry:\n"
                               "    socket.socket(socket.AF_UNIX).connect(sys.argv[1])\n"
                               "except PermissionError:\n    print('refused')", envoy.settings.app_socket],
                              capture_output=True, text=True, timeout=30, user=nobody, group=nobody, extra_groups=[])
    assert stranger.stdout == "refused\n", stranger.stderr
