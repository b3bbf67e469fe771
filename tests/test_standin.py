"""Tests of the Kubernetes stand-in kit itself (no Envoy involved)."""

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from podward.local.apiserver import StandInApiServer
from podward.local.jwt import claims_of, make_token
from podward.local.kubelet import AtomicDir, format_map, go_quote
from podward.local.pki import make_pki


SA_USER = "system:serviceaccount:default:default"


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture
def token():
    return make_token("default", "default", "app-0")


@pytest.fixture
def server(pki, token):
    with StandInApiServer(certfile=pki.server_cert, keyfile=pki.server_key) as s:
        s.accept(token)
        yield s


def tls_context(cafile):
    return ssl.create_default_context(cafile=cafile)


def call(server, pki, method, path, token=None, body=None, headers=None):
    """One HTTPS request; returns (status, headers, body bytes)."""
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=tls_context(pki.ca_cert), timeout=10)
    all_headers = dict(headers or {})
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        all_headers.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=body, headers=all_headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, response.headers, data


class ChunkedStream:
    """Reads an HTTP/1.1 chunked response chunk by chunk from a raw TLS socket, to check the framing."""

    def __init__(self, server, pki, path, token):
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        self.sock = tls_context(pki.ca_cert).wrap_socket(raw, server_hostname="localhost")
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
                          "Accept: application/json\r\n\r\n".encode())
        self.buffer = b""
        head = self._read_until(b"\r\n\r\n")
        self.status_line, *header_lines = head.decode().split("\r\n")
        self.headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}

    def _read_until(self, marker):
        while marker not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("stream closed")
            self.buffer += data
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    def _read_exact(self, n):
        while len(self.buffer) < n:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("stream closed")
            self.buffer += data
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def next_chunk(self) -> bytes:
        size = int(self._read_until(b"\r\n"), 16)
        data = self._read_exact(size)
        assert self._read_exact(2) == b"\r\n"
        return data

    def close(self):
        self.sock.close()


# --- Downward API formatting -------------------------------------------------------------------------

@pytest.mark.parametrize("value, quoted", [
    ('say "hi"', r'"say \"hi\""'),
    ("back\\slash", r'"back\\slash"'),
    ("two\nlines", r'"two\nlines"'),
    ("tab\there", r'"tab\there"'),
    ("cr\r bell\a bs\b ff\f vt\v", r'"cr\r bell\a bs\b ff\f vt\v"'),
    ("nul\x00 esc\x1b del\x7f", r'"nul\x00 esc\x1b del\x7f"'),
    ("héllo wörld ✓ 日本 😀", '"héllo wörld ✓ 日本 😀"'),
    ("nbsp\u00a0 zwsp\u200b bom\ufeff", r'"nbsp\u00a0 zwsp\u200b bom\ufeff"'),
    ("\U0001d173 private\ue000", r'"\U0001d173 private\ue000"'),
    (b"bad \xff\xfe utf8 \xe2\x82", r'"bad \xff\xfe utf8 \xe2\x82"'),
    (b"ok \xe2\x9c\x93 then \xc3", r'"ok ✓ then \xc3"'),
    ("", '""'),
])
def test_go_quote_matches_strconv_quote(value, quoted):
    assert go_quote(value) == quoted


def test_format_map_sorts_keys_and_has_no_trailing_newline():
    text = format_map({"b": "2", "a": "x\ny", "app.kubernetes.io/name": 'q"'})
    assert text == 'a="x\\ny"\napp.kubernetes.io/name="q\\""\nb="2"'
    assert format_map({}) == ""


# --- Kubelet volume layout ---------------------------------------------------------------------------

def test_atomic_dir_swaps_data_link_and_removes_old_dir(tmp_path):
    volume = AtomicDir(str(tmp_path / "sa"))
    assert volume.write({"token": "one", "namespace": "default", "ca.crt": b"CA"})
    first = volume.current_timestamp_dir()
    assert first.startswith("..") and os.path.isdir(tmp_path / "sa" / first)
    assert os.readlink(tmp_path / "sa" / "token") == "..data/token"
    assert os.readlink(tmp_path / "sa" / "..data") == first
    assert oct(os.stat(tmp_path / "sa" / first).st_mode & 0o777) == "0o755"

    assert not volume.write({"token": "one", "namespace": "default", "ca.crt": b"CA"})  # unchanged: no-op
    assert volume.write({"token": "two", "namespace": "default", "ca.crt": b"CA"})
    second = volume.current_timestamp_dir()
    assert second != first
    assert volume.timestamp_dirs() == [second]
    assert not os.path.exists(tmp_path / "sa" / "..data_tmp")
    assert (tmp_path / "sa" / "token").read_text() == "two"

    assert volume.write({"namespace": "default", "ca.crt": b"CA"})  # token disappears
    assert not os.path.lexists(tmp_path / "sa" / "token")
    assert sorted(os.listdir(tmp_path / "sa")) == sorted(["..data", volume.current_timestamp_dir(),
                                                          "ca.crt", "namespace"])


def test_atomic_dir_timestamp_dir_name_format(tmp_path):
    volume = AtomicDir(str(tmp_path))
    volume.write({"labels": format_map({"a": "b"})})
    name = volume.current_timestamp_dir()
    stamp, digits = name[2:].rsplit(".", 1)
    time.strptime(stamp, "%Y_%m_%d_%H_%M_%S")
    assert digits.isdigit()


# --- Tokens ------------------------------------------------------------------------------------------

def test_token_claims_look_like_kubernetes():
    now = 1_700_000_000
    token = make_token("team-a", "builder", "build-7", pod_uid="pod-uid-1", node="n1", now=now)
    claims = claims_of(token)
    assert claims["iss"] == "https://kubernetes.default.svc.cluster.local"
    assert claims["sub"] == "system:serviceaccount:team-a:builder"
    assert claims["aud"] == [claims["iss"]]
    # The projected volume's default 3607 s, extended to a year as the real API server does.
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (now, now, now + 365 * 24 * 3600)
    assert claims["kubernetes.io"]["warnafter"] == now + 3607
    k8s = claims["kubernetes.io"]
    assert k8s["namespace"] == "team-a"
    assert k8s["pod"] == {"name": "build-7", "uid": "pod-uid-1"}
    assert k8s["serviceaccount"]["name"] == "builder"
    assert k8s["node"]["name"] == "n1"
    assert "=" not in token and token.count(".") == 2
    assert make_token("a", "b", "c") != make_token("a", "b", "c")
    plain = claims_of(make_token("team-a", "builder", "build-7", lifetime_seconds=1800, now=now))
    assert plain["exp"] == now + 1800 and "warnafter" not in plain["kubernetes.io"]


# --- The API server: authentication and authorization -----------------------------------------------

UNAUTHORIZED = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Unauthorized", "reason": "Unauthorized", "code": 401}


def test_missing_or_wrong_token_gets_401_status(server, pki):
    foreign = make_token("default", "default", "app-0", audience="https://oidc.eks.example/id/0123")
    server.accept(foreign)  # even a token it was told of: the audience is not the server's
    for token in (None, "not-a-valid-token", make_token("default", "default", "other"), foreign):
        status, headers, body = call(server, pki, "GET", "/api/v1/namespaces/default/pods", token=token)
        assert status == 401
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body) == UNAUTHORIZED
    assert [r.status for r in server.requests] == [401, 401, 401, 401]
    assert server.requests[1].token == "not-a-valid-token"


def test_right_token_lists_pods_and_is_recorded(server, pki, token):
    status, _, body = call(server, pki, "GET", "/api/v1/namespaces/default/pods?limit=500", token=token,
                           headers={"X-Probe": "1"})
    assert status == 200
    pods = json.loads(body)
    assert pods["kind"] == "PodList" and pods["metadata"]["resourceVersion"]
    assert len(pods["items"]) == 3
    record = server.requests[-1]
    assert (record.method, record.path, record.token, record.user) == (
        "GET", "/api/v1/namespaces/default/pods?limit=500", token, SA_USER)
    assert record.header("x-probe") == "1" and record.query["limit"] == ["500"]


def test_wrong_ca_fails_tls_verification(server, pki, token):
    with pytest.raises(ssl.SSLCertVerificationError):
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=tls_context(pki.wrong_ca))
        conn.request("GET", "/version")


def test_token_file_rotation_keeps_previous_token_valid(pki, tmp_path):
    volume = AtomicDir(str(tmp_path / "sa"))
    old, new = make_token("default", "default", "p"), make_token("default", "default", "p")
    volume.write({"token": old})
    with StandInApiServer(certfile=pki.server_cert, keyfile=pki.server_key,
                          token_file=str(tmp_path / "sa" / "token")) as server:
        assert call(server, pki, "GET", "/api", token=old)[0] == 200
        assert call(server, pki, "GET", "/api", token=new)[0] == 401
        volume.write({"token": new})
        assert call(server, pki, "GET", "/api", token=new)[0] == 200
        assert call(server, pki, "GET", "/api", token=old)[0] == 200
        server.revoke(old)
        assert call(server, pki, "GET", "/api", token=old)[0] == 401
        expired = make_token("default", "default", "p", lifetime_seconds=3600, now=time.time() - 7200)
        server.accept(expired)
        assert call(server, pki, "GET", "/api", token=expired)[0] == 401


def test_forbidden_status_uses_real_wording(server, pki, token):
    server.forbid(verb="delete", resource="pods")
    status, _, body = call(server, pki, "DELETE", "/api/v1/namespaces/default/pods/demo-0", token=token)
    assert status == 403
    assert json.loads(body) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'pods "demo-0" is forbidden: User "{SA_USER}" cannot delete resource "pods" in API group "" '
                   'in the namespace "default"',
        "reason": "Forbidden", "details": {"name": "demo-0", "kind": "pods"}, "code": 403}
    server.forbid(resource="jobs")
    status, _, body = call(server, pki, "GET", "/apis/batch/v1/jobs", token=token)
    assert json.loads(body)["message"] == (f'jobs.batch is forbidden: User "{SA_USER}" cannot list resource '
                                           '"jobs" in API group "batch" at the cluster scope')


def test_impersonation_is_refused_by_default(server, pki, token):
    status, _, body = call(server, pki, "GET", "/api/v1/pods", token=token, headers={"Impersonate-User": "admin"})
    assert status == 403
    # Worded as kube-apiserver 1.36 words it (constrained impersonation; test_real_auth.py sees the real one).
    assert json.loads(body)["message"] == (f'pods is forbidden: User "{SA_USER}" cannot impersonate-on:user-info:list '
                                           'resource "pods" in API group "" at the cluster scope')


# --- Discovery and non-resource paths ----------------------------------------------------------------

def test_discovery_documents(server, pki, token):
    status, _, body = call(server, pki, "GET", "/apis/batch/v1", token=token)
    batch = json.loads(body)
    assert status == 200 and batch["kind"] == "APIResourceList" and batch["groupVersion"] == "batch/v1"
    assert {r["name"] for r in batch["resources"]} >= {"jobs", "cronjobs"}
    core = {r["name"]: r for r in json.loads(call(server, pki, "GET", "/api/v1", token=token)[2])["resources"]}
    assert core["pods"]["shortNames"] == ["po"] and core["nodes"]["namespaced"] is False
    assert core["pods/log"]["kind"] == "Pod" and core["pods/exec"]["kind"] == "PodExecOptions"
    groups = json.loads(call(server, pki, "GET", "/apis", token=token)[2])
    assert [g["name"] for g in groups["groups"]] == ["apps", "batch"]
    assert json.loads(call(server, pki, "GET", "/version", token=token)[2])["major"] == "1"
    assert call(server, pki, "GET", "/healthz", token=token)[2] == b"ok"
    # As kube-apiserver 1.36 answers (test_real_api.py): plain text outside the APIs, a Status inside.
    assert call(server, pki, "GET", "/no/such/thing", token=token)[::2] == (404, b"404 page not found\n")
    assert call(server, pki, "GET", "/apis/nosuchgroup/v1/things", token=token)[::2] == (404, b"404 page not found\n")
    status, _, body = call(server, pki, "GET", "/api/v1/nosuchresource", token=token)
    assert status == 404 and json.loads(body)["message"] == "the server could not find the requested resource"


# --- Objects -----------------------------------------------------------------------------------------

def test_create_read_update_delete(server, pki, token):
    path = "/api/v1/namespaces/default/configmaps"
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "labels": {"tier": "a"}},
          "data": {"k": "v"}}
    status, _, body = call(server, pki, "POST", path, token=token, body=cm)
    created = json.loads(body)
    assert status == 201 and created["metadata"]["uid"] and created["metadata"]["namespace"] == "default"
    status, _, body = call(server, pki, "POST", path, token=token, body=cm)
    assert status == 409 and json.loads(body)["reason"] == "AlreadyExists"

    status, _, body = call(server, pki, "PUT", f"{path}/cfg", token=token, body={**cm, "data": {"k": "w"}})
    updated = json.loads(body)
    assert status == 200 and updated["data"] == {"k": "w"}
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])

    status, _, body = call(server, pki, "GET", f"{path}?labelSelector=tier%3Da", token=token)
    assert [i["metadata"]["name"] for i in json.loads(body)["items"]] == ["cfg"]
    status, _, body = call(server, pki, "GET", f"{path}?fieldSelector=metadata.name%3Dnope", token=token)
    assert json.loads(body)["items"] == []

    status, _, body = call(server, pki, "DELETE", f"{path}/cfg", token=token)
    assert status == 200 and json.loads(body)["status"] == "Success"
    status, _, body = call(server, pki, "GET", f"{path}/cfg", token=token)
    assert status == 404 and json.loads(body)["message"] == 'configmaps "cfg" not found'


@pytest.mark.parametrize("method, path, content_type", [
    ("PATCH", "/api/v1/namespaces/default/pods/demo-0", "application/merge-patch+json"),
    ("PATCH", "/api/v1/namespaces/default/pods/demo-0?fieldManager=t", "application/apply-patch+yaml"),
    ("GET", "/api/v1/namespaces/default/pods?watch=1", None),
])
def test_patches_and_watches_are_left_to_the_real_api_server(server, pki, token, method, path, content_type):
    """The stand-in says plainly that it does not do them (the tests use envtest for them), and still records
    what came."""
    server.clear_requests()
    status, _, body = call(server, pki, method, path, token=token, body="{}" if content_type else None,
                           headers={"Content-Type": content_type} if content_type else None)
    assert status == 405 and json.loads(body)["reason"] == "MethodNotAllowed"
    assert [(r.method, r.path) for r in server.requests] == [(method, path)]


def test_seed_many_objects(server, pki, token):
    blob = "x" * 100_000
    server.seed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"big-{i}", "namespace": "bulk"},
                 "data": {"blob": blob}} for i in range(50))
    status, _, body = call(server, pki, "GET", "/api/v1/namespaces/bulk/configmaps", token=token)
    assert status == 200 and len(json.loads(body)["items"]) == 50 and len(body) > 5_000_000


# --- Logs ------------------------------------------------------------------------------------------

def test_pod_log_and_follow(server, pki, token):
    status, headers, body = call(server, pki, "GET", "/api/v1/namespaces/default/pods/demo-0/log", token=token)
    assert status == 200 and headers["Content-Type"] == "text/plain" and body.startswith(b"demo-0: log line 1\n")
    stream = ChunkedStream(server, pki, "/api/v1/namespaces/default/pods/demo-0/log?follow=true", token)
    try:
        assert stream.next_chunk().count(b"\n") == 5
        assert stream.next_chunk() == b"demo-0: log line 6\n"
    finally:
        stream.close()


# --- Real clients ------------------------------------------------------------------------------------

def test_python_kubernetes_client_lists_pods(server, pki, token):
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = server.url
    configuration.ssl_ca_cert = pki.ca_cert
    configuration.api_key = {"authorization": token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    with client.ApiClient(configuration) as api_client:
        pods = client.CoreV1Api(api_client).list_namespaced_pod("default")
        assert [p.metadata.name for p in pods.items] == ["demo-0", "demo-1", "demo-2"]
        assert pods.items[0].status.phase == "Running"


@pytest.fixture
def kubectl(server, pki, token, tmp_path):
    binary = os.environ.get("KUBECTL") or shutil.which("kubectl")
    assert binary, "kubectl is needed: set KUBECTL (./build.sh test does)"
    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "standin",
        "clusters": [{"name": "standin", "cluster": {"server": server.url, "certificate-authority": pki.ca_cert}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "sa", "namespace": "default"}}],
    }))

    def run(*args, stdin=None):
        return subprocess.run([binary, "--kubeconfig", str(config), "--cache-dir", str(tmp_path / "cache"), *args],
                              input=stdin, capture_output=True, text=True, timeout=30,
                              env={**os.environ, "HOME": str(tmp_path)})
    return run


def test_kubectl_gets_pods_without_table_output(kubectl):
    """No Table from the stand-in (the real server's): kubectl prints names and ages, as it does for any server
    that sends a plain list."""
    result = kubectl("get", "pods")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "AGE"]
    assert [line.split()[0] for line in lines[1:]] == [f"demo-{i}" for i in range(3)]


def test_kubectl_creates_replaces_and_deletes(kubectl, server):
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: written\ndata:\n  a: \"1\"\n"
    result = kubectl("create", "-f", "-", stdin=manifest)
    assert (result.returncode, result.stdout.strip()) == (0, "configmap/written created"), result.stderr
    result = kubectl("replace", "-f", "-", stdin=manifest.replace('"1"', '"2"'))
    assert result.stdout.strip() == "configmap/written replaced", result.stderr
    assert server.get_object("configmaps", "default", "written")["data"] == {"a": "2"}
    result = kubectl("delete", "configmap", "written")
    assert result.stdout.strip() == 'configmap "written" deleted from default namespace', result.stderr
