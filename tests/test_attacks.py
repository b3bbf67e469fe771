"""The app as an attacker: a catalogue of what code in the pod can send the sidecar, each attack checked for
what reached the API server (the stand-in records every request) and what the app got back.

The sidecar's promises under attack:
  * nothing reaches the API server that the policy forbids, and nothing reaches it without the pod's token;
  * every answer the sidecar makes itself is a Kubernetes Status;
  * nothing the app can reach changes the sidecar or reads more than metrics;
  * the app cannot claim another identity, crash the filter, or make Envoy obey its x-envoy-* headers.

"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import socket
import subprocess
import time

import pytest

from podward.bootstrap import (API_CLUSTER, API_CONNECT_TIMEOUT, HTTP2_LIMITS, MAX_API_CONNECTIONS,
                               MAX_DOWNSTREAM_CONNECTIONS, UPGRADE_CLUSTER)
from podward.constants import ENV_HEADERS, METRICS_PATH, READY_PATH
from podward.local.envoy_process import Envoy, local_settings
from podward.local.kubelet import LocalPod

from conftest import assert_status, request, served_again
from harness.flood import MADE_UP_PREFIX
from harness.h2c import h2c_requests
from podward.local.waiting import wait_for

EXEC = "/api/v1/namespaces/default/pods/demo-0/exec"
# What the API server would route to an interactive session in a container (its routes are case-sensitive).
INTERACTIVE = re.compile(r"^/api/v1/namespaces/[^/]+/pods/[^/]+/(exec|attach)(/|\?|$)")


# --- Talking to the sidecar as raw bytes ---------------------------------------------------------------

@dataclasses.dataclass
class Answer:
    status: int
    headers: dict
    body: bytes

    def status_object(self) -> dict:
        assert self.headers.get("content-type") == "application/json", (self.status, self.headers, self.body[:200])
        status = json.loads(self.body)
        assert (status["kind"], status["apiVersion"], status["status"]) == ("Status", "v1", "Failure"), status
        assert status["code"] == self.status and status["message"], status
        return status


def parse_answers(data: bytes) -> list:
    """The complete HTTP/1.1 responses, in order, in what the sidecar wrote on one connection so far."""
    answers = []
    while (parsed := _first_answer(data)) is not None:
        answer, data = parsed
        answers.append(answer)
        if answer.status == 101:  # the rest belongs to the upgraded protocol
            break
    return answers


def _first_answer(data: bytes) -> tuple | None:
    if b"\r\n\r\n" not in data:
        return None
    head, rest = data.split(b"\r\n\r\n", 1)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict((name.strip().lower(), value.strip()) for name, value in (line.split(":", 1) for line in lines))
    status = int(status_line.split()[1])
    if "content-length" in headers:
        size = int(headers["content-length"])
        if len(rest) < size:
            return None
        return Answer(status, headers, rest[:size]), rest[size:]
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while b"\r\n" in rest:
            size_line, after = rest.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if len(after) < size + 2:
                return None
            body, rest = body + after[:size], after[size + 2:]
            if size == 0:
                return Answer(status, headers, body), rest
        return None
    return Answer(status, headers, b""), rest


def exchange(port: int, data: bytes, answers: int = 1, timeout: float = 15) -> list:
    """Sends raw bytes to the sidecar and reads until `answers` responses came or the connection closed."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(data)
        deadline = time.monotonic() + timeout
        while len(parse_answers(received)) < answers and time.monotonic() < deadline:
            try:
                chunk = connection.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            received += chunk
    return parse_answers(received)


def http1(method: str, path: str, headers: dict | None = None, body: bytes = b"", host: bytes = b"localhost") -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + host]
    for name, value in (headers or {}).items():
        lines.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()))
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


# --- What reached the API server --------------------------------------------------------------------------

def upstream(apiserver) -> list:
    return [(r.method, r.path) for r in apiserver.requests]


def upstream_settled(envoy, apiserver) -> bool:
    """Everything Envoy sent the stand-in is recorded: Envoy has no request upstream, and the stand-in holds no
    more connections than Envoy keeps (it records what came on a connection once Envoy has closed it)."""
    stats = envoy.stats()
    clusters = (API_CLUSTER, UPGRADE_CLUSTER)
    in_flight = sum(stats[f"cluster.{cluster}.upstream_rq_active"] for cluster in clusters)
    kept = sum(stats[f"cluster.{cluster}.upstream_cx_active"] for cluster in clusters)
    return in_flight == 0 and apiserver.open_connections <= kept


def assert_every_upstream_request_carried_the_token(apiserver, pod):
    assert all(r.token == pod.token for r in apiserver.requests), [(r.path, r.token) for r in apiserver.requests]


def assert_never_interactive(apiserver):
    assert [r.path for r in apiserver.requests if INTERACTIVE.search(r.path)] == []


def assert_no_panic(envoy: Envoy):
    assert "panicked at" not in envoy.log() and "wasm_fail_stream" not in envoy.log()


# --- The default sidecar, shared by the attacks that cannot break it ------------------------------------

@pytest.fixture(scope="module")
def target(tmp_path_factory, pki, apiserver, podward_build):
    """One sidecar with the shipped configuration for every attack that leaves it as it was."""
    root = tmp_path_factory.mktemp("target")
    pod = LocalPod(root / "pod", pki)
    apiserver.accept(pod.issue_token())
    settings = local_settings(pod, apiserver.port, pki.ca_cert, build=podward_build)
    envoy = Envoy(settings, root / "envoy", env=pod.env).start()
    yield envoy, pod
    envoy.stop()


@pytest.fixture
def sidecar(target, apiserver):
    envoy, pod = target
    apiserver.clear_requests()
    yield envoy, pod
    assert envoy.process.poll() is None, "the attack stopped the sidecar"


# === 1. Path tricks: nothing reaches exec or attach ==============================================================

PATH_TRICKS = [
    f"{EXEC}/",
    "/api/v1/namespaces/default/pods/x/../demo-0/exec",
    "/api/v1/namespaces/default/pods/demo-0/./exec",
    "/api/v1/namespaces/default/pods/demo-0/%2e%2e/demo-0/exec",
    "/api/v1/namespaces/default/pods/demo-0/%65xec",
    "/api//v1/namespaces/default/pods/demo-0//exec",
    f"/{EXEC}",
    "/api/v1/namespaces/default/pods/demo-0%2Fexec",
    "/api/v1/namespaces/default/pods/demo-0%2fexec",
    "/api/v1/namespaces/default/pods/demo-0/EXEC",
    "/API/v1/namespaces/default/pods/demo-0/exec",
    f"{EXEC}?x=/../../version",
    f"{EXEC};x=y",
    f"{EXEC}%00",
    f"{EXEC}%3Fcommand=sh",
    f"{EXEC}\\",
    "/api/v1/watch/namespaces/default/pods/demo-0/exec",
    f"{EXEC}?watch=1&fieldSelector=metadata.name%3Ddemo-0",
    "/api/v1/namespaces/default/pods/" + "a" * 9000 + "/exec",
    "/api/v1/namespaces/default/pods/demo-0/attach/",
    "/api/v1/namespaces/default/pods/demo-0/%61ttach",
    f"{EXEC}#fragment",
    "/api/v1/namespaces/default/pods/demo-0/exec/..;/exec",
]


@pytest.mark.parametrize("path", PATH_TRICKS, ids=lambda path: path[:60])
def test_path_trick(sidecar, apiserver, path):
    envoy, _ = sidecar
    [answer] = exchange(envoy.settings.listen_port, http1("POST", path))
    assert answer.status in (400, 403, 404), (answer.status, answer.body[:300])
    answer.status_object()
    assert_never_interactive(apiserver)


# === 2. Envoy's own refusals: each one a Status, nothing forwarded ===============================================

ENVOY_REFUSALS = {
    "escaped-slash": (b"GET /api/v1/namespaces/default/pods%2Fx HTTP/1.1\r\nHost: localhost\r\n\r\n",
                      400, "BadRequest"),
    "escaped-nul": (b"GET /api/v1/namespaces%00/default HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "BadRequest"),
    "fragment": (b"GET /api/v1#frag HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "BadRequest"),
    "missing-host": (b"GET /api HTTP/1.1\r\n\r\n", 400, "BadRequest"),
    "options-asterisk": (b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n", 404, "NotFound"),
    "unknown-upgrade": (b"GET /api HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n",
                        403, "Forbidden"),
    "http-1.0": (b"GET /api HTTP/1.0\r\nHost: localhost\r\n\r\n", 426, "BadRequest"),
    "http-0.9": (b"GET /api\r\n\r\n", 426, "BadRequest"),
    "headers-too-large": (b"GET /api HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n",
                          431, "RequestEntityTooLarge"),
    "too-many-headers": (b"GET /api HTTP/1.1\r\nHost: localhost\r\n"
                         + b"".join(b"X-%d: v\r\n" % i for i in range(150)) + b"\r\n", 431, "RequestEntityTooLarge"),
    "bad-request-line": (b"GET\r\n\r\n", 400, "BadRequest"),
    "tls-to-plain-port": (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40, 400, "BadRequest"),
    "bad-method-token": (b"G@T /api HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "BadRequest"),
    "space-in-header-name": (b"GET /api HTTP/1.1\r\nHost: localhost\r\nX A: b\r\n\r\n", 400, "BadRequest"),
    "control-byte-in-value": (b"GET /api HTTP/1.1\r\nHost: localhost\r\nX-A: a\x01b\r\n\r\n", 400, "BadRequest"),
    "nul-in-host": (b"GET /api HTTP/1.1\r\nHost: localhost\x00evil\r\n\r\n", 400, "BadRequest"),
    "del-in-value": (b"GET /api HTTP/1.1\r\nHost: localhost\r\nX-A: a\x7fb\r\n\r\n", 400, "BadRequest"),
    "raw-high-byte-in-path": (b"GET /api/v1/namespaces/d\xe9fault/pods HTTP/1.1\r\nHost: localhost\r\n\r\n",
                              400, "BadRequest"),
    "raw-high-byte-in-header-name": (b"GET /api HTTP/1.1\r\nHost: localhost\r\nX-\xe9: a\r\n\r\n", 400, "BadRequest"),
    "gzip-transfer-encoding": (b"POST /api HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                               b"0\r\n\r\n", 501, "BadRequest"),
}


@pytest.mark.parametrize("name", sorted(ENVOY_REFUSALS))
def test_envoy_refusal_is_a_status(sidecar, apiserver, name):
    envoy, _ = sidecar
    data, code, reason = ENVOY_REFUSALS[name]
    [answer] = exchange(envoy.settings.listen_port, data)
    assert answer.status == code
    status = answer.status_object()
    assert status["reason"] == reason
    assert status["message"].startswith("the podward sidecar refused this request")
    assert upstream(apiserver) == []


def test_a_broken_http2_preface_is_closed_with_a_goaway_and_nothing_forwarded(sidecar, apiserver):
    # The one refusal that cannot be a Status: HTTP/2 has no response before a valid preface.
    envoy, _ = sidecar
    with socket.create_connection(("127.0.0.1", envoy.settings.listen_port), timeout=5) as connection:
        connection.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x09\x00\x00\x00\x00\x00")
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    goaway = b"\x07"  # frame type 7 in some frame's header
    assert goaway in received and b"HTTP/1.1" not in received
    assert upstream(apiserver) == []


@pytest.fixture(scope="module")
def trapping_module(tmp_path_factory) -> str:
    """A proxy-wasm module that traps on every request, as a panicking podward would (tests/harness/trap.wat)."""
    built = tmp_path_factory.mktemp("trap") / "trap.wasm"
    source = pathlib.Path(__file__).parent / "harness" / "trap.wat"
    # binaryen's assembler; ./build.sh installs binaryen for wasm-opt.
    subprocess.run(["wasm-as", str(source), "-o", str(built)], check=True, capture_output=True, timeout=60)
    return str(built)


@pytest.mark.wasm_only
def test_a_crashing_filter_answers_a_503_status_and_forwards_nothing(pod, tmp_path, pki, apiserver, trapping_module):
    settings = dataclasses.replace(local_settings(pod, apiserver.port, pki.ca_cert), wasm_path=trapping_module)
    envoy = Envoy(settings, tmp_path / "trapping", env=pod.env).start()

    def refused_until_a_rebuilt_vm_traps_too() -> bool:
        """One request: a 503 Status whether the VM traps, was trapped (FAIL_RELOAD's back-off), or was
        rebuilt and trapped again; done once a rebuilt VM has answered one."""
        status = assert_status(request(envoy, "GET", "/api/v1/namespaces/default/pods"), 503, "ServiceUnavailable")
        assert "podward failed on this request" in status["message"]
        assert status["details"] == {"retryAfterSeconds": 1}
        return envoy.stats()["wasm.podward.vm_reload_success"] >= 1

    try:
        wait_for(refused_until_a_rebuilt_vm_traps_too, 15, "Envoy rebuilding the trapped VM")
        assert apiserver.requests == []
    finally:
        envoy.stop()
    assert apiserver.requests == []


# === 3. Request smuggling: Envoy parses every request, podward judges every request ===============================

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
# `reached` for a request whose body Envoy finds broken after forwarding its headers.
CUT_SHORT = "at most the headers of the request, and the API server could not read it"


@pytest.mark.parametrize("name, data, codes, reached", [
    ("content-length-and-chunked",
     b"POST /api HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     [400], []),
    ("chunked-then-content-length",
     b"POST /api HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
     [400], []),
    ("two-different-content-lengths",
     b"POST /api HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", [400], []),
    ("two-equal-content-lengths",
     b"POST /api HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}", [400], []),
    ("content-length-list", b"POST /api HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2, 2\r\n\r\n{}", [400], []),
    ("space-before-colon",
     b"POST /api HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", [400], []),
    ("vertical-tab-transfer-encoding",
     b"POST /api HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n", [400], []),
    ("chunked-identity", b"POST /api HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
                         b"0\r\n\r\n", [501], []),
    # Envoy may already have sent the headers on: the API server then sees a request cut short, never a whole one.
    ("chunk-size-overflow", b"POST /api HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"fffffffffffffffff1\r\nabc\r\n0\r\n\r\n", [400], CUT_SHORT),
    ("pipelined-exec-after-a-get",
     http1("GET", "/api") + http1("POST", EXEC), [200, 403], [("GET", "/api")]),
    ("exec-after-a-chunked-body",
     b"POST " + CONFIGMAPS.encode() + b" HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n" + http1("POST", EXEC),
     [422, 403], [("POST", CONFIGMAPS)]),
    ("exec-inside-a-content-length-body",
     http1("POST", CONFIGMAPS, {"Content-Type": "application/json"}, body=http1("POST", EXEC)),
     [400], [("POST", CONFIGMAPS)]),
    ("obsolete-line-folding", b"GET /api HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n b\r\n\r\n", [200],
     [("GET", "/api")]),
    ("bare-line-feeds", b"GET /api HTTP/1.1\nHost: localhost\n\n", [200], [("GET", "/api")]),
    ("bare-carriage-return-in-value", b"GET /api HTTP/1.1\r\nHost: localhost\r\nX-A: a\rb\r\n\r\n", [200],
     [("GET", "/api")]),
    ("h2c-upgrade-ignored", b"GET /api HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
     [200], [("GET", "/api")]),
    ("h2c-upgrade-to-exec", b"POST " + EXEC.encode() + b" HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
                            b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                            b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", [403], []),
    ("websocket-upgrade-to-exec", http1("GET", EXEC + "?command=sh&stdin=true", {
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "v5.channel.k8s.io"}), [403], []),
    ("spdy-upgrade-to-attach", http1("POST", "/api/v1/namespaces/default/pods/demo-0/attach?stdin=true", {
        "Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": "v4.channel.k8s.io"}), [403], []),
    ("absolute-uri-to-exec", b"POST http://localhost" + EXEC.encode() + b" HTTP/1.1\r\nHost: localhost\r\n"
                             b"Content-Length: 0\r\n\r\n", [403], []),
    ("connect-method", b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n", [400], []),
    ("method-override-header", http1("GET", "/api/v1/namespaces/default/pods/demo-0",
                                     {"X-HTTP-Method-Override": "DELETE"}),
     [200], [("GET", "/api/v1/namespaces/default/pods/demo-0")]),
])
def test_smuggling(sidecar, apiserver, name, data, codes, reached):
    envoy, pod = sidecar
    answers = exchange(envoy.settings.listen_port, data, answers=len(codes))
    assert [a.status for a in answers] == codes, [(a.status, a.body[:200]) for a in answers]
    for answer in answers:
        if answer.status >= 400:  # the sidecar's or the API server's: a Status either way
            answer.status_object()
    if reached == CUT_SHORT:
        # The API server records such a request only once it gives up reading it.
        wait_for(lambda: upstream_settled(envoy, apiserver), what="the stand-in to let go of every connection "
                 "Envoy closed")
        assert all(r.status is None or r.status >= 400 for r in apiserver.requests), upstream(apiserver)
        assert len(apiserver.requests) <= 1
    else:
        assert upstream(apiserver) == reached
    assert_every_upstream_request_carried_the_token(apiserver, pod)
    assert_never_interactive(apiserver)


def test_smuggling_an_exec_stream_next_to_a_get_over_h2c(sidecar, apiserver):
    envoy, pod = sidecar
    assert h2c_requests(envoy.settings.listen_port, [("GET", "/api"), ("POST", EXEC)]) == [200, 403]
    assert upstream(apiserver) == [("GET", "/api")]
    assert_every_upstream_request_carried_the_token(apiserver, pod)


# === 4. Raw bytes in header values: no byte sequence crashes the filter ============================================

RAW_VALUES = {
    "latin-1-user-agent": (b"User-Agent", b"caf\xe9"),
    "lone-0xff": (b"X-J", b"\xff"),
    "overlong-utf-8-slash": (b"X-J", b"\xc0\xaf"),
    "utf-16-surrogate-in-utf-8": (b"X-J", b"\xed\xa0\x80"),
    "truncated-utf-8": (b"Accept", b"application/json\xe2\x82"),
    "high-bytes-in-impersonation": (b"Impersonate-User", b"\xfe\xff"),
    "high-bytes-in-identity-header": (b"X-Pod-Name", b"\x80\x81\x82"),
}


@pytest.mark.parametrize("name", sorted(RAW_VALUES))
def test_raw_bytes_in_a_header_value_are_forwarded_with_the_token_not_a_crash(podward, pod, apiserver, name):
    header, value = RAW_VALUES[name]
    [answer] = exchange(podward.settings.listen_port, b"GET /api HTTP/1.1\r\nHost: localhost\r\n" + header + b": "
                        + value + b"\r\n\r\n")
    assert answer.status == 200, answer.body[:300]
    assert upstream(apiserver) == [("GET", "/api")]
    assert_every_upstream_request_carried_the_token(apiserver, pod)
    received = apiserver.requests[0]
    assert received.header("impersonate-user") is None
    assert received.header("x-pod-name") == "curl-with-ambassador"
    assert_no_panic(podward)


def test_raw_bytes_in_the_host_header_are_refused_not_a_crash(podward, apiserver):
    [answer] = exchange(podward.settings.listen_port, b"GET /api HTTP/1.1\r\nHost: loc\xe9lhost\r\n\r\n")
    # Envoy refuses such an authority before podward sees it (http.invalid_authority), as a Status.
    assert answer.status == 400 and "invalid_authority" in answer.status_object()["message"]
    assert upstream(apiserver) == []
    assert_no_panic(podward)


# === 5. Host: only local names, so a browser in the pod cannot be rebound ==========================================

@pytest.mark.parametrize("name, data, code", [
    ("foreign-host", http1("GET", "/api", host=b"evil.example"), 403),
    ("suffix-host", http1("GET", "/api", host=b"localhost.evil.example:8001"), 403),
    ("two-host-headers", b"GET /api HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n", 403),
    ("absolute-uri-names-another-host", b"GET http://evil.example/api HTTP/1.1\r\nHost: localhost\r\n\r\n", 403),
    ("absolute-https-uri-to-the-api-server", b"GET https://kubernetes.default.svc/api HTTP/1.1\r\nHost: localhost"
                                             b"\r\n\r\n", 403),
    ("connect-to-the-api-server", b"CONNECT kubernetes.default.svc:443 HTTP/1.1\r\n"
                                  b"Host: kubernetes.default.svc:443\r\n\r\n", 403),
])
def test_host_trick(sidecar, apiserver, name, data, code):
    envoy, _ = sidecar
    [answer] = exchange(envoy.settings.listen_port, data)
    assert answer.status == code
    assert "not accepted by podward" in answer.status_object()["message"]
    assert upstream(apiserver) == []


# === 6. Identity: the app cannot claim another one ==================================================================

def test_spoofed_identity_headers_are_overwritten(sidecar, apiserver):
    envoy, pod = sidecar
    spoofed = {"X-Pod-Name": "kube-apiserver", "X-Pod-Namespace": "kube-system", "X-Pod-Uid": "forged",
               "X-Pod-Service-Account": "admin", "X-Pod-Labels": "app=forged", "X-Pod-Annotations": "owner=forged"}
    [answer] = exchange(envoy.settings.listen_port, http1("GET", "/api", spoofed))
    assert answer.status == 200
    received = apiserver.requests[-1]
    assert received.header_values("x-pod-name") == ["curl-with-ambassador"]
    assert received.header_values("x-pod-namespace") == ["default"]
    assert received.header_values("x-pod-uid") == [pod.env["POD_UID"]]
    assert received.header_values("x-pod-service-account") == ["default"]
    assert "forged" not in received.header("x-pod-labels") + received.header("x-pod-annotations")


@pytest.mark.parametrize("headers", [
    {"Impersonate-User": "system:admin"},
    {"impersonate-group": "system:masters"},
    {"Impersonate-Uid": "0"},
    {"Impersonate-Extra-Scopes": "all"},
], ids=lambda headers: next(iter(headers)))
def test_impersonation_is_stripped(sidecar, apiserver, headers):
    envoy, pod = sidecar
    [answer] = exchange(envoy.settings.listen_port, http1("GET", "/api", headers))
    assert answer.status == 200
    received = apiserver.requests[-1]
    assert [name for name, _ in received.headers if name.lower().startswith("impersonate-")] == []
    assert received.user == "system:serviceaccount:default:default"


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer stolen-token"},
    {"Authorization": "Basic YWRtaW46YWRtaW4="},
    {"X-Remote-User": "system:admin", "X-Remote-Group": "system:masters"},
], ids=["bearer", "basic", "front-proxy-headers"])
def test_the_api_server_only_ever_sees_the_pods_service_account(sidecar, apiserver, headers):
    envoy, pod = sidecar
    [answer] = exchange(envoy.settings.listen_port, http1("GET", "/api/v1/namespaces/default/pods", headers))
    assert answer.status == 200
    assert apiserver.requests[-1].token == pod.token
    assert apiserver.requests[-1].user == "system:serviceaccount:default:default"


def test_an_identity_header_whose_file_is_missing_cannot_be_spoofed(pod, start_envoy, apiserver):
    pod.podinfo_dir.write({"labels": 'app="only-labels"'})  # no annotations file
    envoy = start_envoy(pod)
    [answer] = exchange(envoy.settings.listen_port, http1("GET", "/api", {"X-Pod-Annotations": "owner=forged"}))
    assert answer.status == 200
    assert apiserver.requests[-1].header("x-pod-annotations") is None


def test_an_identity_header_whose_variable_is_missing_cannot_be_spoofed(pod, tmp_path, pki, apiserver,
                                                                        podward_build):
    """Where podward adds the environment's headers itself, it leaves out the one it has no value for."""
    env = {name: value for name, value in pod.env.items() if name != "POD_UID"}
    settings = local_settings(pod, apiserver.port, pki.ca_cert, build=podward_build, route_adds_env_headers=False)
    envoy = Envoy(settings, tmp_path / "no-uid", env=env).start()
    try:
        [answer] = exchange(envoy.settings.listen_port, http1("GET", "/api", {"X-Pod-Uid": "forged"}))
    finally:
        envoy.stop()
    assert answer.status == 200
    assert apiserver.requests[-1].header("x-pod-uid") is None


def test_a_route_that_would_send_a_missing_variable_stops_envoy_and_names_it(pod, tmp_path, pki, apiserver,
                                                                             podward_build):
    """Envoy's route would send `-` for the variable it cannot read, so podward refuses to start that way."""
    env = {name: value for name, value in pod.env.items() if name != "POD_UID"}
    settings = local_settings(pod, apiserver.port, pki.ca_cert, build=podward_build, route_adds_env_headers=True)
    envoy = Envoy(settings, tmp_path / "no-uid", env=env)
    assert envoy.run_to_exit() != 0
    errors = [line for line in envoy.log().splitlines() if "invalid podward config" in line]
    assert errors, envoy.log()[-3000:]
    assert "field `route_adds_env_headers`" in errors[0] and "POD_UID is not set" in errors[0]


@pytest.mark.parametrize("node_name, sent", [("node one/\u00fc", ["node%20one/%C3%BC"]), ("", [])],
                         ids=["needs-encoding", "empty"])
def test_the_route_and_podward_send_the_same_identity_headers_once(pod, tmp_path, pki, apiserver, podward_build,
                                                                   node_name, sent):
    """Whichever adds the environment's headers, Envoy's route or podward, the API server gets the same bytes
    once, and never the app's: a value that needs encoding podward sends encoded, an empty one nobody."""
    env = {**pod.env, "NODE_NAME": node_name}
    spoofed = {"X-Pod-Node-Name": "forged", "X-Pod-Name": "forged"}
    received = {}
    for route in (True, False):
        settings = local_settings(pod, apiserver.port, pki.ca_cert, build=podward_build,
                                  route_adds_env_headers=route)
        envoy = Envoy(settings, tmp_path / f"route-{route}", env=env).start()
        try:
            [answer] = exchange(envoy.settings.listen_port, http1("GET", "/api", spoofed))
        finally:
            envoy.stop()
        assert answer.status == 200
        forwarded = apiserver.requests[-1]
        received[route] = {name: forwarded.header_values(name) for name in ENV_HEADERS}
    assert received[True] == received[False]
    assert received[True]["x-pod-name"] == [pod.env["POD_NAME"]]
    assert received[True]["x-pod-node-name"] == sent


# === 7. x-envoy-*: the app's control headers are not obeyed ========================================================

def test_x_envoy_original_path_does_not_disguise_the_access_log(pod, start_envoy, apiserver):
    envoy = start_envoy(pod)
    [answer] = exchange(envoy.settings.listen_port, http1("POST", EXEC, {"X-Envoy-Original-Path": "/healthz"}))
    assert answer.status == 403
    envoy.stop()
    [record] = [json.loads(line) for line in envoy.log().splitlines() if line.startswith("{")]
    assert record["path"] == EXEC and record["code"] == 403


@pytest.mark.parametrize("extra", [{}, {"X-Forwarded-For": "10.0.0.1"}, {"X-Forwarded-For": "127.0.0.1"}],
                         ids=["plain", "claims-a-private-peer", "claims-loopback"])
def test_retry_and_timeout_headers_are_not_obeyed(sidecar, apiserver, extra):
    envoy, pod = sidecar
    apiserver.forbid(resource="secrets")
    try:
        headers = {"X-Envoy-Retry-On": "retriable-status-codes,5xx", "X-Envoy-Retriable-Status-Codes": "403",
                   "X-Envoy-Max-Retries": "5", "X-Envoy-Upstream-Rq-Timeout-Ms": "1",
                   "X-Envoy-Upstream-Rq-Per-Try-Timeout-Ms": "1", **extra}
        [answer] = exchange(envoy.settings.listen_port, http1("GET", "/api/v1/namespaces/default/secrets", headers))
    finally:
        apiserver.allow_all()
    # The API server's own 403, once: no retries, no 504 from a 1 ms timeout.
    assert answer.status == 403 and answer.status_object()["reason"] == "Forbidden"
    assert upstream(apiserver) == [("GET", "/api/v1/namespaces/default/secrets")]


def test_envoy_adds_no_x_envoy_headers_of_its_own(sidecar, apiserver):
    envoy, _ = sidecar
    [answer] = exchange(envoy.settings.listen_port, http1("GET", "/api"))
    assert [name for name in answer.headers if name.startswith("x-envoy")] == []
    assert [name for name, _ in apiserver.requests[-1].headers if name.lower().startswith("x-envoy")] == []


def test_the_apps_x_envoy_headers_do_not_reach_the_api_server(sidecar, apiserver):
    envoy, _ = sidecar
    headers = {"X-Envoy-Original-Path": "/x", "X-Envoy-Decorator-Operation": "op",
               "X-Envoy-Downstream-Service-Cluster": "c", "X-Envoy-Internal": "true"}
    [answer] = exchange(envoy.settings.listen_port, http1("GET", "/api", headers))
    assert answer.status == 200
    assert [name for name, _ in apiserver.requests[-1].headers if name.lower().startswith("x-envoy")] == []


# === 8. Deny rules cannot be read around with list and watch =======================================================

DENY_TOP_SECRET = {"policy": {"preset": "kubectl-proxy", "rules": [
    {"name": "no-top-secret", "action": "deny", "verbs": ["*"], "apiGroups": [""], "resources": ["configmaps"],
     "resourceNames": ["top-secret"]}]}}
DENY_KUBE_SYSTEM = {"policy": {"preset": "kubectl-proxy", "rules": [
    {"name": "no-kube-system", "action": "deny", "verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
     "namespaces": ["kube-system"]}]}}


@pytest.mark.parametrize("config, method, path, allowed", [
    (DENY_TOP_SECRET, "GET", f"{CONFIGMAPS}/top-secret", False),
    (DENY_TOP_SECRET, "GET", f"{CONFIGMAPS}?fieldSelector=metadata.name%3Dtop-secret", False),
    (DENY_TOP_SECRET, "GET", f"{CONFIGMAPS}?fieldSelector=metadata.name%3Dsomething-else", True),
    (DENY_TOP_SECRET, "GET", CONFIGMAPS, False),
    (DENY_TOP_SECRET, "GET", f"{CONFIGMAPS}?watch=1", False),
    (DENY_TOP_SECRET, "GET", "/api/v1/watch/namespaces/default/configmaps", False),
    (DENY_TOP_SECRET, "GET", "/api/v1/configmaps", False),
    (DENY_TOP_SECRET, "GET", f"{CONFIGMAPS}?labelSelector=app%3Dx", False),
    (DENY_TOP_SECRET, "DELETE", CONFIGMAPS, False),
    (DENY_KUBE_SYSTEM, "GET", "/api/v1/namespaces/kube-system/pods", False),
    (DENY_KUBE_SYSTEM, "GET", "/api/v1/namespaces/default/pods", True),
    (DENY_KUBE_SYSTEM, "GET", "/api/v1/pods", False),
    (DENY_KUBE_SYSTEM, "GET", "/api/v1/watch/configmaps", False),
    (DENY_KUBE_SYSTEM, "GET", "/apis/apps/v1/deployments", False),
], ids=lambda value: value if isinstance(value, str) else None)
def test_list_around_a_deny_rule(pod, start_envoy, apiserver, config, method, path, allowed):
    envoy = start_envoy(pod, config)
    [answer] = exchange(envoy.settings.listen_port, http1(method, path))
    if allowed:
        assert answer.status == 200 and upstream(apiserver) == [(method, path)]
    else:
        assert answer.status == 403 and "forbidden: podward policy rule" in answer.status_object()["message"]
        assert upstream(apiserver) == []


# === 9. Exec-equivalents under the default preset ==================================================================

@pytest.mark.parametrize("method, path, headers", [
    ("GET", "/api/v1/namespaces/default/pods/demo-0/attach?stdin=true", {}),
    ("POST", f"{EXEC}?command=sh", {}),
    pytest.param("PATCH", "/api/v1/namespaces/default/pods/demo-0/ephemeralcontainers",
                 {"Content-Type": "application/strategic-merge-patch+json"}),
    pytest.param("GET", "/api/v1/nodes/node-1/proxy/exec/default/demo-0/main?command=sh", {}),
    pytest.param("POST", "/api/v1/nodes/node-1/proxy/run/default/demo-0/main?cmd=id", {}),
], ids=["attach", "exec", "ephemeral-containers", "node-proxy-exec", "node-proxy-run"])
def test_exec_equivalent_is_denied_by_default(sidecar, apiserver, method, path, headers):
    envoy, _ = sidecar
    [answer] = exchange(envoy.settings.listen_port, http1(method, path, headers))
    assert answer.status == 403 and "podward policy rule" in answer.status_object()["message"]
    assert upstream(apiserver) == []


# === 10. Configs that would fail open or closed are refused at load, naming the field ==============================

@pytest.mark.parametrize("plugin_config, field", [
    # Mistakes that would otherwise be read as something else.
    ({"refresh_interval_ms": "1s"}, "refresh_interval_ms"),
    ({"token": {"paht": "/x"}}, "token"),
    ({"identity_headers": [{"header": "Bad Header", "env": "POD_NAME"}]}, "identity_headers[0].header"),
    ({"policy": {"preset": "no-such-preset"}}, "policy.preset"),
    # Configs that would fail open or closed.
    ({"policy": {"rules": [{"name": "r", "action": "allow", "verbs": ["get"], "apiGroups": [""],
                            "resources": ["pods"], "namespaces": ["$Self"]}]}}, "policy.rules[0].namespaces"),
    ({"policy": {"rules": [{"name": "r", "action": "deny", "verbs": ["*"], "apiGroups": [""],
                            "resources": ["pods/exec/x"]}]}}, "policy.rules[0].resources"),
    ({"accept_hosts": ["localhost:8001"]}, "accept_hosts[0]"),
    ({"token": {"expiry_skew_seconds": 2 ** 64 - 1}}, "token.expiry_skew_seconds"),
    ({"policy": {"rules": [{"name": "r", "action": "allow", "verbs": ["fetch"], "apiGroups": [""],
                            "resources": ["pods"]}]}}, "policy.rules[0].verbs"),
    ({"policy": {"default_action": "maybe"}}, "policy.default_action"),
], ids=["duration-as-text", "misspelt-field", "bad-header-name", "unknown-preset", "dollar-Self",
        "resource-with-two-slashes", "host-with-port", "huge-expiry-skew", "unknown-verb", "unknown-default-action"])
def test_a_bad_config_stops_envoy_and_names_the_field(pod, tmp_path, apiserver, pki, plugin_config, field,
                                                      podward_build):
    settings = local_settings(pod, apiserver.port, pki.ca_cert, plugin_config, build=podward_build)
    envoy = Envoy(settings, tmp_path / "bad", env=pod.env)
    assert envoy.run_to_exit() != 0
    errors = [line for line in envoy.log().splitlines() if "invalid podward config" in line]
    assert errors, envoy.log()[-3000:]
    assert f"field `{field}`" in errors[0]


# === 11. Admin: nothing the app reaches changes the sidecar or reads more than metrics ============================

# Every endpoint Envoy 1.40's admin lists in /help (test_the_admin_endpoint_list_is_complete keeps this honest),
# with arguments that would do harm.
ADMIN_ENDPOINTS = [
    "/", "/allocprofiler?enable=y", "/certs", "/clusters", "/config_dump", "/contention", "/cpuprofiler?enable=y",
    "/drain_listeners", "/healthcheck/fail", "/healthcheck/ok", "/heap_dump", "/heapprofiler?enable=y", "/help",
    "/hot_restart_version", "/init_dump", "/listeners", "/logging?level=debug", "/memory", "/memory/tcmalloc",
    "/peak_heap_dump", "/quitquitquit", "/ready", "/reopen_logs", "/reset_counters", "/runtime",
    "/runtime_modify?envoy.reloadable_features.fixed_heap_use_allocated=false", "/server_info", "/stats",
    "/stats/prometheus", "/stats/recentlookups", "/stats/recentlookups/clear", "/stats/recentlookups/disable",
    "/stats/recentlookups/enable",
]
MORE_HARM = ["/logging?router=debug", "/logging?paths=http:trace", "/drain_listeners?graceful", "/stats?format=json"]


def listening_ports(pid: int) -> set:
    """Every TCP port the process listens on, from its socket inodes and /proc/<pid>/net/tcp{,6}."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_the_admin_endpoint_list_is_complete(target):
    envoy, _ = target
    status, body = envoy.admin("/help")
    listed = set(re.findall(r"^  (/\S*?)(?: \(POST\))?:", body.decode(), re.MULTILINE))
    assert status == 200 and listed == {endpoint.split("?")[0] for endpoint in ADMIN_ENDPOINTS}


def test_the_sidecar_binds_the_app_port_and_the_metrics_port_only(target):
    envoy, _ = target
    assert listening_ports(envoy.process.pid) == {envoy.settings.listen_port, envoy.settings.metrics_port}


def try_admin_everywhere(envoy: Envoy) -> list:
    """Every admin endpoint, GET and POST, on every TCP port the sidecar listens on: (port, method, path, answer)."""
    tried = []
    for port in sorted(listening_ports(envoy.process.pid)):
        for path in ADMIN_ENDPOINTS + MORE_HARM:
            for method in ("GET", "POST"):
                [answer] = exchange(port, http1(method, path))
                tried.append((port, method, path, answer))
    return tried


@pytest.mark.parametrize("endpoint", ADMIN_ENDPOINTS + MORE_HARM)
def test_admin_endpoint_from_the_app(sidecar, apiserver, endpoint):
    envoy, pod = sidecar
    assert listening_ports(envoy.process.pid) == {envoy.settings.listen_port, envoy.settings.metrics_port}
    for method in ("GET", "POST"):
        apiserver.clear_requests()
        # The app's port: a non-resource URL for the API server, with the pod's token, never admin.
        [answer] = exchange(envoy.settings.listen_port, http1(method, endpoint))
        [received] = apiserver.requests
        assert (received.method, received.path, received.token) == (method, endpoint, pod.token)
        assert answer.status == received.status
        # The metrics port: GET /stats/prometheus, GET /ready (podward's own readiness Status, never admin's),
        # else a 404 Status; nothing reaches the API server.
        apiserver.clear_requests()
        [answer] = exchange(envoy.settings.metrics_port, http1(method, endpoint))
        if (method, endpoint) == ("GET", METRICS_PATH):
            assert answer.status == 200 and b"# TYPE envoy_" in answer.body
        elif (method, endpoint) == ("GET", READY_PATH):
            assert answer.status == 200 and json.loads(answer.body)["status"] == "Success"
        else:
            assert answer.status == 404 and answer.status_object()["reason"] == "NotFound"
        assert apiserver.requests == []


def test_after_every_admin_attempt_the_sidecar_is_unchanged_and_no_log_line_carries_the_token(
        pod, start_envoy, apiserver):
    envoy = start_envoy(pod)
    assert request(envoy, "GET", "/api/v1/namespaces/default/pods").status == 200
    before = envoy.stats()
    levels_before = envoy.admin("/logging")
    tried = try_admin_everywhere(envoy)
    assert len(tried) == 2 * 2 * len(ADMIN_ENDPOINTS + MORE_HARM)
    # Requests after the attempts, with a fresh token: would be logged if any debug level had been set.
    apiserver.accept(pod.issue_token())
    wait_for(lambda: request(envoy, "GET", "/api/v1/namespaces/default/pods").status == 200
             and apiserver.requests[-1].token == pod.token, what="podward sending the fresh token")
    for _ in range(3):
        assert request(envoy, "GET", "/api/v1/namespaces/default/pods").status == 200
    assert envoy.admin("/logging") == levels_before
    after = envoy.stats()
    assert after["http.podward.downstream_rq_completed"] > before["http.podward.downstream_rq_completed"]
    assert after["server.state"] == 0  # LIVE: not draining, not failing health checks
    assert json.loads(envoy.admin("/server_info")[1])["state"] == "LIVE"
    assert envoy.admin("/runtime")[1].count(b"fixed_heap_use_allocated") == 1
    assert json.loads(envoy.admin("/runtime")[1])["entries"][
        "envoy.reloadable_features.fixed_heap_use_allocated"]["final_value"] == "true"
    envoy.stop()
    log = envoy.log()
    assert envoy.podward_log(), "podward logged nothing: the test would prove nothing"
    for token in (pod.token,):
        assert token not in log and token.split(".")[-1] not in log
    assert "'authorization'" not in log.lower()


# === 12. Floods: the sidecar stays up and bounded (the full flood is tests/test_limits.py) ===========================

def test_a_thousand_connections_at_once_then_the_sidecar_still_serves(sidecar, apiserver):
    envoy, pod = sidecar
    opened = []
    try:
        for _ in range(MAX_DOWNSTREAM_CONNECTIONS + 200):
            opened.append(socket.create_connection(("127.0.0.1", envoy.settings.listen_port), timeout=5))
    finally:
        for connection in opened:
            connection.close()
    served_again(envoy)
    assert apiserver.requests[-1].token == pod.token
    overflow = f"listener.127.0.0.1_{envoy.settings.listen_port}.downstream_global_cx_overflow"
    assert envoy.stats()[overflow] >= 200


def test_made_up_resources_do_not_grow_the_metrics_past_their_cap(sidecar, apiserver):
    envoy, pod = sidecar
    made_up = 1000
    for first in range(0, made_up, 100):
        batch = b"".join(http1("GET", f"{MADE_UP_PREFIX}{n}") for n in range(first, first + 100))
        assert [a.status for a in exchange(envoy.settings.listen_port, batch, answers=100, timeout=60)] == [404] * 100
    def requests_series(text: str) -> list:
        return re.findall(r'^podward_requests_total\{verb="(.*?)",group="(.*?)",resource="(.*?)",code=".*?"\} (\S+)$',
                          text, re.MULTILINE)

    def folded(series: list) -> float:
        return sum(float(count) for verb, group, resource, count in series if (group, resource) == ("other", "other"))

    series = requests_series(envoy.settled_prometheus(lambda text: folded(requests_series(text)) >= made_up - 200))
    # At most 200 named series (verb, group, resource); everything past them counts as `other`.
    assert len({(verb, group, resource) for verb, group, resource, _ in series if resource != "other"}) <= 200
    assert folded(series) >= made_up - 200
    assert len([r for r in apiserver.requests if r.path.startswith(MADE_UP_PREFIX)]) == made_up
    assert_every_upstream_request_carried_the_token(apiserver, pod)


def test_a_stream_flood_over_one_h2c_connection_is_capped_and_served(sidecar, apiserver):
    envoy, pod = sidecar
    cap = HTTP2_LIMITS["max_concurrent_streams"]
    answers = h2c_requests(envoy.settings.listen_port, [("GET", "/api/v1/namespaces/default/pods")] * 4 * cap)
    # The streams past the cap are refused at once (the client sent them before reading the SETTINGS).
    assert answers == [200] * cap + ["reset REFUSED_STREAM"] * 3 * cap
    assert len(apiserver.requests) == cap
    assert_every_upstream_request_carried_the_token(apiserver, pod)
    assert request(envoy, "GET", "/api/v1/namespaces/default/pods").status == 200


# === 13. Every wait is bounded: the app holding every connection to the API server ================================

# A stream the API server keeps open, each holding one of the sidecar's requests to it: a followed log (the
# stand-in's kubelet side; watches are the real server's).
FOLLOWED_LOG = "/api/v1/namespaces/default/pods/demo-0/log?follow=true"


def hold_streams(port: int, count: int) -> list:
    """`count` followed logs through the sidecar, each holding one of its requests to the API server."""
    streams = []
    try:
        for _ in range(count):
            stream = socket.create_connection(("127.0.0.1", port), timeout=10)
            streams.append(stream)
            stream.sendall(http1("GET", FOLLOWED_LOG))
            assert stream.recv(100).startswith(b"HTTP/1.1 200 "), "a followed log was not served"
    except BaseException:
        for stream in streams:
            stream.close()
        raise
    return streams


def test_a_request_past_the_api_pool_gets_a_503_status_with_retry_after_at_once(pod, start_envoy, apiserver):
    # On main the pool's queue held it until a watch ended: no answer for 45 s, or half an hour.
    envoy = start_envoy(pod)
    streams = hold_streams(envoy.settings.listen_port, MAX_API_CONNECTIONS)
    try:
        apiserver.clear_requests()
        for method, path, body in [("GET", "/api/v1/namespaces/default/pods", None),
                                   ("POST", CONFIGMAPS, b'{"metadata": {"name": "past-the-pool"}}'),
                                   ("GET", FOLLOWED_LOG, None)]:
            started = time.monotonic()
            response = request(envoy, method, path, body=body, timeout=2 * float(API_CONNECT_TIMEOUT[:-1]))
            seconds = time.monotonic() - started
            status = assert_status(response, 503, "ServiceUnavailable")
            assert response.headers["retry-after"] == "1" and status["details"] == {"retryAfterSeconds": 1}
            assert f"{MAX_API_CONNECTIONS} at once" in status["message"]
            # At once: the pool opens a spare connection for it, rather than queue it behind the streams.
            assert seconds < 2, seconds
        # Nothing of them was forwarded, so retrying is safe: client-go does so by itself on Retry-After.
        assert apiserver.requests == [] and apiserver.get_object("configmaps", "default", "past-the-pool") is None
        home = pathlib.Path(envoy.workdir) / "kubectl-home"
        home.mkdir(exist_ok=True)
        kubectl = subprocess.Popen([os.environ["KUBECTL"], "--server", envoy.url, "get", "pods", "-o", "name"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "HOME": str(home)})
        # kubectl's first try is refused (the stand-in saw nothing yet); then one stream ends and a retry is served.

        def refused_or_done() -> str | None:
            if kubectl.poll() is not None:
                return "kubectl ended"
            if [r for r in apiserver.requests if r.path.startswith("/api/v1/namespaces/default/pods")]:
                return "served"
            return "refused" if envoy.stats().get("cluster.kubernetes.upstream_rq_active_overflow", 0) >= 4 else None

        if wait_for(refused_or_done, what="kubectl's first try refused at the pool") == "refused":
            streams.pop().close()
        out, err = kubectl.communicate(timeout=30)
    finally:
        for stream in streams:
            stream.close()
    assert kubectl.returncode == 0, err
    assert "pod/demo-0" in out
    served_again(envoy)
    # kubectl asked again, after the second its Retry-After named, for what it had been refused.
    envoy.stop()
    records = [json.loads(line) for line in envoy.log().splitlines() if line.startswith("{")]
    refused = {r["path"] for r in records if r["code"] == 503 and "kubectl" in r["user_agent"]}
    assert refused and refused <= {r["path"] for r in records if r["code"] == 200 and "kubectl" in r["user_agent"]}
