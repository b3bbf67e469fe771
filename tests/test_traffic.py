"""Real API traffic through podward (issue #4) where the stand-in must play the API server: bodies as they
arrive upstream, byte for byte, `logs -f`, exec/attach/port-forward upgrades over WebSocket and SPDY (no
kubelet answers a real API server here), and the app speaking HTTP/1.1 or h2c. Watches, the 20 MB list and
the real clients' reads run against the real API server (test_real_watch.py, test_real_api.py).

Clients are real where it matters: kubectl 1.37 (WebSocket, or SPDY, for exec, attach and port-forward), the
Python kubernetes client (WebSocket for exec, attach and port-forward), curl for h2c, raw sockets. Figures
(latency, memory) are printed (pytest -s) and written to /tmp/podward-figures/traffic.json.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import queue
import random
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse

import pytest
import websocket  # websocket-client, which the kubernetes client depends on
from kubernetes import client
from kubernetes.stream import portforward, stream

from podward.bootstrap import API_CLUSTER, UPGRADE_CLUSTER
from podward.local.remotecommand import PORT_FORWARD_SPDY, PORT_FORWARD_TUNNEL, SPDY_UPGRADE, V4_CHANNEL, V5_CHANNEL

from conftest import assert_status, request
from harness.figures import record_figures
from podward.local.waiting import wait_for

OWN_NAMESPACE = {"policy": {"preset": "own-namespace"}}


# --- Helpers ---------------------------------------------------------------------------------------------

def in_flight(envoy) -> tuple:
    """Requests in flight from the app and towards the API server (either cluster), and upgraded connections."""
    stats = envoy.stats()
    upstream = sum(stats[f"cluster.{name}.upstream_rq_active"] for name in (API_CLUSTER, UPGRADE_CLUSTER))
    return (stats["http.podward.downstream_rq_active"], upstream, stats["http.podward.downstream_cx_upgrades_active"])


def wait_for_envoy_to_drop_every_stream(envoy):
    wait_for(lambda: in_flight(envoy) == (0, 0, 0), what="Envoy's active request and upgrade gauges to fall to 0")


def upstream(apiserver, method: str, path_fragment: str):
    """The one request the stand-in received with this method and path fragment."""
    matches = [r for r in apiserver.requests if r.method == method and path_fragment in r.path]
    assert len(matches) == 1, [(r.method, r.path) for r in apiserver.requests]
    return matches[0]


def the_session(apiserver, kind: str):
    sessions = [s for s in apiserver.sessions if s.kind == kind]
    assert len(sessions) == 1, apiserver.sessions
    return sessions[0]


class LineReader:
    """Lines from a child's stdout with a deadline each, so a stuck client fails the test instead of hanging it."""

    def __init__(self, process: subprocess.Popen):
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(process.stdout,), daemon=True).start()

    def _pump(self, pipe):
        for line in pipe:
            self.lines.put(line)
        self.lines.put(None)

    def next(self, timeout: float = 10) -> bytes | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout}s") from None


class Kubectl:
    """kubectl pointed at the sidecar with --server, as an app container would use it."""

    def __init__(self, binary: str, home: pathlib.Path):
        self.binary, self.env = binary, {**os.environ, "HOME": str(home)}

    def command(self, envoy, *args) -> list:
        return [self.binary, "--server", envoy.url, "--namespace", "default", *args]

    def run(self, envoy, *args, stdin: bytes = b"", timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(envoy, *args), input=stdin, capture_output=True, timeout=timeout,
                              env=self.env)

    def start(self, envoy, *args) -> subprocess.Popen:
        return subprocess.Popen(self.command(envoy, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=self.env)


@pytest.fixture
def kubectl(tmp_path):
    binary = os.environ.get("KUBECTL") or shutil.which("kubectl")
    assert binary and os.access(binary, os.X_OK), "kubectl is needed: set KUBECTL (./build.sh test does)"
    home = tmp_path / "home"
    home.mkdir()
    return Kubectl(binary, home)


@pytest.fixture
def interactive(pod, start_envoy):
    """podward with a policy that allows exec and attach in the pod's own namespace."""
    return start_envoy(pod, OWN_NAMESPACE)


def python_client(envoy) -> client.ApiClient:
    """The Python kubernetes client with the sidecar as its server and no credentials of its own."""
    configuration = client.Configuration()
    configuration.host = envoy.url
    return client.ApiClient(configuration)


def stop_process(process: subprocess.Popen):
    process.terminate()
    process.wait(timeout=10)


# --- Request bodies --------------------------------------------------------------------------------------

class RecordingPoolManager:
    """Stands in front of the Python client's urllib3 pool manager and keeps each request body exactly as
    the client hands it to the wire, with its content type."""

    def __init__(self, pool):
        self.pool, self.sent = pool, []

    def request(self, method, url, **kwargs):
        body = kwargs.get("body")
        if body is not None:
            self.sent.append((method, urllib.parse.urlsplit(url).path, kwargs["headers"].get("Content-Type"),
                              body.encode() if isinstance(body, str) else body))
        return self.pool.request(method, url, **kwargs)

    def __getattr__(self, name):
        return getattr(self.pool, name)


def received_writes(apiserver) -> list:
    return [(r.method, r.path_only, r.header("content-type"), r.body) for r in apiserver.requests
            if r.method in ("POST", "PUT", "PATCH", "DELETE")]


def test_python_client_writes_reach_the_api_server_byte_for_byte(podward, apiserver):
    name = "bodies"
    big = random.Random(7).randbytes(150_000).hex()  # 300 KB: many Envoy buffer slices
    with python_client(podward) as api_client:
        recorder = RecordingPoolManager(api_client.rest_client.pool_manager)
        api_client.rest_client.pool_manager = recorder
        api = client.CoreV1Api(api_client)
        api.create_namespaced_config_map("default", {"metadata": {"name": name},
                                                     "data": {"big": big, "t": "h\u00e9 \u2713"}})
        api.replace_namespaced_config_map(name, "default", {"metadata": {"name": name}, "data": {"a": "replaced"}})
        # Every patch type: what each does is the real server's to show (test_real_api.py); the stand-in records
        # each as it arrived and declines it.
        patches = [([{"op": "add", "path": "/data/b", "value": "json-patched"}], {}),
                   ({"data": {"c": "merged"}}, {"_content_type": "application/merge-patch+json"}),
                   ({"data": {"d": "strategic"}}, {}),
                   ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"e": "applied"}},
                    {"field_manager": "traffic-test", "_content_type": "application/apply-patch+yaml"})]
        for patch, options in patches:
            with pytest.raises(client.ApiException) as declined:
                api.patch_namespaced_config_map(name, "default", patch, **options)
            assert declined.value.status == 405
        api.delete_namespaced_config_map(name, "default", body=client.V1DeleteOptions(grace_period_seconds=0))

    # The client names no type for create, update and delete (the API server then reads JSON); nothing on
    # the way may add one.
    content_types = [content_type for _, _, content_type, _ in recorder.sent]
    assert content_types == [None, None, "application/json-patch+json", "application/merge-patch+json",
                             "application/strategic-merge-patch+json", "application/apply-patch+yaml", None]
    assert received_writes(apiserver) == recorder.sent


# kubectl 1.37 logs at -v=10 in klog's structured form: `"Request Body" body="<Go-quoted>"` on one line, or
# `body=<` then the body's lines, each indented by a tab, then ` >`; then `"Request" curlCommand=<` and the curl line.
KUBECTL_QUOTED_BODY = re.compile(r'"Request Body" body=(".*")$')
KUBECTL_CURL = re.compile(r"curl -v -X(\w+) .*-H \"Content-Type: ([^\"]+)\".* '(http://[^']+)'$")


def kubectl_writes(stderr: bytes) -> list:
    """(method, path, content type, body) of each request with a body that kubectl logged sending at -v=10: the
    body comes just before the request's curl line."""
    writes, body = [], None
    lines = iter(stderr.decode().splitlines())
    for line in lines:
        if line.endswith('"Request Body" body=<'):
            body = "\n".join(part[1:] for part in iter(lines.__next__, " >")).encode()
        elif match := KUBECTL_QUOTED_BODY.search(line):
            body = json.loads(match.group(1)).encode()  # Go's quoting of these JSON bodies is JSON's
        elif (match := KUBECTL_CURL.search(line)) and body:
            writes.append((match.group(1), urllib.parse.urlsplit(match.group(3)).path, match.group(2), body))
            body = None
    return writes


def test_kubectl_writes_reach_the_api_server_as_kubectl_sent_them(podward, apiserver, kubectl):
    manifest = ('apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: "1"\n'
                '  note: "h\u00e9llo\\nworld"\n')
    # Server-side apply, a patch, is recorded and declined by the stand-in (what it does is test_real_api.py's).
    steps = [("apply", "-f", "-"), ("replace", "-f", "-"), ("apply", "--server-side", "-f", "-"),
             ("delete", "configmap", "applied")]
    inputs = [manifest, manifest.replace('"1"', '"2"'), manifest.replace('"1"', '"3"'), ""]
    outputs, logged = [], []
    for args, text in zip(steps, inputs):
        result = kubectl.run(podward, "-v=10", *args, stdin=text.encode())
        outputs.append((result.returncode, result.stdout.decode().strip()))
        logged += kubectl_writes(result.stderr)

    assert outputs == [(0, "configmap/applied created"), (0, "configmap/applied replaced"), (1, ""),
                       (0, 'configmap "applied" deleted from default namespace')]
    assert [(method, content_type) for method, _, content_type, _ in logged] == [
        ("POST", "application/json"), ("PUT", "application/json"), ("PATCH", "application/apply-patch+yaml"),
        ("DELETE", "application/json")]
    received = received_writes(apiserver)
    assert [r[:3] for r in received] == [w[:3] for w in logged]
    for (_, _, _, sent), (_, _, _, arrived) in zip(logged, received):
        # klog ends each line with one newline, so a body's own final newline cannot be told from it.
        assert arrived in (sent, sent + b"\n")


BODY_WITH_ODD_BYTES = ('{"data":{"note":"h\u00e9llo \u2713\\n","spaces":"  kept  "},\n'
                       '  "metadata" : {"annotations":{"x":"\\u00e9"}}}\n').encode()


@pytest.mark.parametrize("framing", [["--http1.1"], ["--http1.1", "-H", "Transfer-Encoding: chunked"],
                                     ["--http2-prior-knowledge"]], ids=["http1-length", "http1-chunked", "h2c"])
def test_a_patch_body_arrives_byte_for_byte_however_the_app_frames_it(podward, apiserver, tmp_path, framing):
    body_file = tmp_path / "body.json"
    body_file.write_bytes(BODY_WITH_ODD_BYTES)
    result = subprocess.run(["curl", "-sS", *framing, "-X", "PATCH", "-H", "Content-Type: application/merge-patch+json",
                             "--data-binary", f"@{body_file}",
                             f"{podward.url}/api/v1/namespaces/default/configmaps/framed"],
                            capture_output=True, timeout=30)
    # The stand-in's own answer (it applies no patch: test_real_api.py's), so the body did reach it.
    assert result.returncode == 0 and json.loads(result.stdout)["reason"] == "MethodNotAllowed", result.stderr
    received = upstream(apiserver, "PATCH", "/configmaps/framed")
    assert (received.body, received.header("content-type")) == (BODY_WITH_ODD_BYTES, "application/merge-patch+json")


# --- kubectl reading and streaming ---------------------------------------------------------------------

def test_kubectl_logs_follow_streams_until_kubectl_stops(podward, apiserver, kubectl):
    follower = kubectl.start(podward, "logs", "-f", "demo-1")
    try:
        lines = LineReader(follower)
        received = [lines.next().decode().rstrip("\n") for _ in range(8)]
    finally:
        stop_process(follower)
    # Five lines of history, then lines the stand-in writes every 0.2 s while following.
    assert received == [f"demo-1: log line {i}" for i in range(1, 9)]
    assert upstream(apiserver, "GET", "/pods/demo-1/log").query["follow"] == ["true"]
    wait_for_envoy_to_drop_every_stream(podward)


# --- exec, attach and port-forward -----------------------------------------------------------------------

EXEC_PATH = "/api/v1/namespaces/default/pods/demo-0/exec"


def assert_upgrade_carried_credentials(apiserver, pod, subresource: str, upgrade: str):
    """podward put the token on the upgrade request and Envoy forwarded the upgrade itself."""
    received = upstream(apiserver, "GET" if upgrade == "websocket" else "POST", f"/demo-0/{subresource}")
    assert received.status == 101
    assert received.token == pod.token and received.header("upgrade").lower() == upgrade.lower()


# kubectl 1.37 speaks WebSocket (v5.channel.k8s.io) for exec and attach; KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false
# makes it speak SPDY/3.1 as older kubectl and many client-go programs still do. podward must carry both.
KUBECTL_TRANSPORTS = {"websocket": ({}, V5_CHANNEL, "websocket"),
                      "spdy": ({"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}, V4_CHANNEL, SPDY_UPGRADE)}


@pytest.mark.parametrize("transport", KUBECTL_TRANSPORTS)
def test_kubectl_exec_streams_stdin_stdout_and_exit_codes(interactive, pod, apiserver, kubectl, transport,
                                                          podward_build):
    env, protocol, upgrade = KUBECTL_TRANSPORTS[transport]
    kubectl.env.update(env)
    data = random.Random(11).randbytes(1024 * 1024)
    started = time.monotonic()
    echoed = kubectl.run(interactive, "exec", "-i", "demo-0", "--", "cat", stdin=data)
    seconds = time.monotonic() - started
    assert (echoed.returncode, echoed.stderr) == (0, b"")
    assert echoed.stdout == data  # a mebibyte of binary both ways, intact
    session = the_session(apiserver, "exec")
    assert (session.transport, session.protocol, session.exit_code) == (transport, protocol, 0)
    assert bytes(session.stdin) == data
    assert_upgrade_carried_credentials(apiserver, pod, "exec", upgrade)
    record_figures("traffic", podward_build, f"kubectl_exec_{transport}",
                   {"stdin_mib": 1, "round_trip_s": round(seconds, 2)})

    failed = kubectl.run(interactive, "exec", "demo-0", "--", "false")
    assert failed.returncode == 1 and b"command terminated with exit code 1" in failed.stderr
    assert interactive.stats()["http.podward.downstream_cx_upgrades_total"] == 2
    wait_for_envoy_to_drop_every_stream(interactive)


@pytest.mark.parametrize("transport", KUBECTL_TRANSPORTS)
def test_kubectl_attach(interactive, pod, apiserver, kubectl, transport):
    env, _, upgrade = KUBECTL_TRANSPORTS[transport]
    kubectl.env.update(env)
    attached = kubectl.run(interactive, "attach", "-i", "demo-0", stdin=b"to the main process\n")
    assert attached.returncode == 0, attached.stderr
    assert attached.stdout == b"to the main process\n"
    assert the_session(apiserver, "attach").transport == transport
    assert_upgrade_carried_credentials(apiserver, pod, "attach", upgrade)


def echo_through(port: int, message: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(message)
        received = b""
        while len(received) < len(message) and (data := connection.recv(65536)):
            received += data
        return received


# kubectl 1.37 port-forwards over SPDY tunnelled in a WebSocket; KUBECTL_PORT_FORWARD_WEBSOCKETS=false makes it
# upgrade to SPDY/3.1 itself, as older kubectl does.
PORT_FORWARD_TRANSPORTS = {"websocket": ({}, PORT_FORWARD_TUNNEL, "websocket"),
                           "spdy": ({"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}, PORT_FORWARD_SPDY, "SPDY/3.1")}


@pytest.mark.parametrize("transport", PORT_FORWARD_TRANSPORTS)
def test_kubectl_port_forward_is_allowed_by_the_default_policy(podward, pod, apiserver, kubectl, transport):
    env, protocol, upgrade = PORT_FORWARD_TRANSPORTS[transport]
    kubectl.env.update(env)
    forwarder = kubectl.start(podward, "port-forward", "pod/demo-0", ":8080")
    try:
        first_line = LineReader(forwarder).next().decode()
        local_port = int(re.search(r"127\.0\.0\.1:(\d+) -> 8080", first_line).group(1))
        # Three local connections: three pairs of SPDY streams on the one upgraded connection.
        replies = [echo_through(local_port, f"connection {i}\n".encode()) for i in range(3)]
    finally:
        stop_process(forwarder)
    assert replies == [f"connection {i}\n".encode() for i in range(3)]
    session = the_session(apiserver, "portforward")
    assert (session.transport, session.protocol) == (transport, protocol)
    assert session.forwarded == {8080: b"connection 0\nconnection 1\nconnection 2\n"}
    assert_upgrade_carried_credentials(apiserver, pod, "portforward", upgrade)
    wait_for(session.ended.is_set, what="the stand-in to see the port-forward end")
    wait_for_envoy_to_drop_every_stream(podward)


def channel_messages(ws: websocket.WebSocket) -> list:
    """(channel, data) of each message until the server closes the WebSocket."""
    messages = []
    while True:
        opcode, data = ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return messages
        messages.append((data[0], data[1:]))


def open_websocket(envoy, path: str, protocol: str) -> websocket.WebSocket:
    return websocket.create_connection(f"ws://127.0.0.1:{envoy.settings.listen_port}{path}",
                                       subprotocols=[protocol], timeout=10)


def test_websocket_exec_v5_echoes_stdin_and_ends_with_success(interactive, pod, apiserver):
    with python_client(interactive) as api_client:
        session = stream(client.CoreV1Api(api_client).connect_get_namespaced_pod_exec, "demo-0", "default",
                         command=["cat"], stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
        try:
            assert session.subprotocol == V5_CHANNEL
            session.write_stdin("first line\n")
            assert session.readline_stdout(timeout=5) == "first line"
            session.write_stdin("second line\n")
            assert session.readline_stdout(timeout=5) == "second line"
            session.close_channel(0)  # v5: stdin is closed, so cat ends
            session.run_forever(timeout=5)
            assert session.returncode == 0  # decoded from the Success status on channel 3
        finally:
            session.close()
    seen = the_session(apiserver, "exec")
    assert (seen.transport, seen.protocol, bytes(seen.stdin)) == ("websocket", V5_CHANNEL, b"first line\nsecond line\n")
    assert_upgrade_carried_credentials(apiserver, pod, "exec", "websocket")
    wait_for(seen.ended.is_set, what="the stand-in to see the exec end")
    wait_for_envoy_to_drop_every_stream(interactive)


def test_websocket_exec_v4_reports_output_and_exit_status_on_their_channels(interactive, apiserver):
    ws = open_websocket(interactive, f"{EXEC_PATH}?command=echo&command=hello&stdout=true&stderr=true", V4_CHANNEL)
    assert ws.subprotocol == V4_CHANNEL
    assert channel_messages(ws) == [(1, b"hello\n"), (3, b'{"metadata":{},"status":"Success"}')]
    ws.close()

    ws = open_websocket(interactive, f"{EXEC_PATH}?command=false&stdout=true&stderr=true", V4_CHANNEL)
    (channel, status), = channel_messages(ws)
    ws.close()
    status = json.loads(status)
    assert (channel, status["status"], status["reason"]) == (3, "Failure", "NonZeroExitCode")
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "1"}]
    wait_for_envoy_to_drop_every_stream(interactive)


def test_closing_a_websocket_mid_command_ends_it_upstream(interactive, apiserver):
    ws = open_websocket(interactive, f"{EXEC_PATH}?command=cat&stdin=true&stdout=true&tty=true", V4_CHANNEL)
    ws.send_binary(b"\x04" + json.dumps({"Width": 120, "Height": 40}).encode())
    ws.send_binary(b"\x00typed\n")
    assert ws.recv_data() == (websocket.ABNF.OPCODE_BINARY, b"\x01typed\n")
    assert in_flight(interactive) == (1, 1, 1)
    # The upgrade went over the HTTP/1.1 cluster, which kube-apiserver requires for it.
    assert interactive.stats()[f"cluster.{UPGRADE_CLUSTER}.upstream_rq_active"] == 1
    ws.close()
    seen = the_session(apiserver, "exec")
    wait_for(seen.ended.is_set, what="the stand-in to see the exec end")
    assert seen.resizes == [{"Width": 120, "Height": 40}] and seen.exit_code is None  # killed, not exited
    wait_for_envoy_to_drop_every_stream(interactive)


def test_websocket_attach_joins_the_main_process(interactive, pod, apiserver):
    with python_client(interactive) as api_client:
        session = stream(client.CoreV1Api(api_client).connect_get_namespaced_pod_attach, "demo-0", "default",
                         stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
        try:
            session.write_stdin("hello, main process\n")
            assert session.readline_stdout(timeout=5) == "hello, main process"
        finally:
            session.close()
    assert the_session(apiserver, "attach").transport == "websocket"
    assert_upgrade_carried_credentials(apiserver, pod, "attach", "websocket")


def test_websocket_port_forward_with_the_python_client(podward, pod, apiserver):
    with python_client(podward) as api_client:
        forward = portforward(client.CoreV1Api(api_client).connect_get_namespaced_pod_portforward, "demo-0",
                              "default", ports="8080")
        remote = forward.socket(8080)
        remote.setblocking(True)
        remote.sendall(b"over a websocket\n")
        received = b""
        while len(received) < 17 and (data := remote.recv(1024)):
            received += data
        remote.close()
    assert received == b"over a websocket\n"
    seen = the_session(apiserver, "portforward")
    assert (seen.transport, seen.protocol, seen.forwarded) == ("websocket", V4_CHANNEL, {8080: b"over a websocket\n"})
    assert_upgrade_carried_credentials(apiserver, pod, "portforward", "websocket")
    wait_for(seen.ended.is_set, what="the stand-in to see the port-forward end")


def upgrade_headers(upgrade: str) -> tuple:
    """Method and headers of an exec/attach upgrade as WebSocket or SPDY clients send it."""
    if upgrade == "websocket":
        return "GET", {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                       "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
                       "Sec-WebSocket-Protocol": V5_CHANNEL}
    return "POST", {"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": V4_CHANNEL}


@pytest.mark.parametrize("upgrade", ["websocket", "SPDY/3.1"])
@pytest.mark.parametrize("subresource", ["exec", "attach"])
def test_the_default_policy_refuses_exec_and_attach_before_the_api_server(podward, apiserver, subresource, upgrade):
    method, headers = upgrade_headers(upgrade)
    apiserver.clear_requests()
    response = request(podward, method, f"/api/v1/namespaces/default/pods/demo-0/{subresource}?stdin=true&stdout=true",
                       headers=headers)
    status = assert_status(response, 403, "Forbidden")
    assert 'podward policy rule "kubectl-proxy/no-exec-or-attach"' in status["message"]
    assert status["details"] == {"name": "demo-0", "kind": "pods"}
    assert apiserver.requests == []


def test_kubectl_exec_shows_the_default_policys_refusal(podward, apiserver, kubectl):
    refused = kubectl.run(podward, "exec", "demo-0", "--", "true")
    assert refused.returncode == 1
    # kubectl 1.37 reports a refused upgrade this way, whoever refused it; the Status message follows.
    assert refused.stderr.decode().startswith('error: unable to upgrade connection: pods "demo-0" is forbidden: '
                                              'podward policy rule "kubectl-proxy/no-exec-or-attach"')
    assert not [r for r in apiserver.requests if "/exec" in r.path] and apiserver.sessions == []


def test_own_namespace_refuses_exec_into_another_namespace(interactive, apiserver):
    apiserver.seed([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "elsewhere", "namespace": "kube-system"}}])
    method, headers = upgrade_headers("websocket")
    apiserver.clear_requests()
    response = request(interactive, method, "/api/v1/namespaces/kube-system/pods/elsewhere/exec?command=cat&stdin=true",
                       headers=headers)
    assert 'podward policy rule "own-namespace/default"' in assert_status(response, 403, "Forbidden")["message"]
    assert apiserver.requests == []


# --- HTTP versions ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, version", [("--http1.1", "1.1"), ("--http2-prior-knowledge", "2")],
                         ids=["http1.1", "h2c"])
def test_the_app_may_speak_http1_or_h2c(podward, pod, apiserver, flag, version):
    result = subprocess.run(["curl", "-sS", flag, "-w", "%{stderr}%{http_version}",
                             f"{podward.url}/api/v1/namespaces/default/pods"], capture_output=True, timeout=30)
    assert (result.returncode, result.stderr.decode()) == (0, version)
    assert [p["metadata"]["name"] for p in json.loads(result.stdout)["items"]] == ["demo-0", "demo-1", "demo-2"]
    assert upstream(apiserver, "GET", "/pods").token == pod.token
    counter = "downstream_rq_http2_total" if version == "2" else "downstream_rq_http1_total"
    assert podward.stats()[f"http.podward.{counter}"] == 1
