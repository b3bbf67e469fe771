"""A real kube-apiserver and etcd for tests, found through $KUBEBUILDER_ASSETS as controller-runtime's envtest
finds them.

The stand-in (apiserver.py) is a model of the API server; where a test's truth is the API server's own
behaviour (authentication of real TokenRequest tokens, RBAC, discovery, watches, patches, admission, audit),
it runs against this one instead. What it starts:

  * etcd on a free port, in its own data directory;
  * kube-apiserver on a free port, serving TLS with a certificate for kubernetes.default.svc (and 127.0.0.1)
    signed by the test CA (pki.py), so Envoy verifies it exactly as in a pod; service-account signing keys;
    RBAC; an admin identity (a static token in system:masters) for set-up; an audit log (Metadata level) that
    tests read to see who the API server thought was calling, with which User-Agent and which token (JTI).

Both run in their own process group and are killed at stop(), at interpreter exit, and on SIGTERM, so a
failing or interrupted test run leaves nothing behind. Nothing runs a kubelet or controllers: pods stay
Pending, namespaces are never finalised, ServiceAccounts and their tokens are created by the tests.
"""

from __future__ import annotations

import atexit
import datetime
import http.client
import json
import os
import pathlib
import secrets
import signal
import ssl
import subprocess
import threading
import time
import uuid

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from podward.local.envoy_process import free_port
from podward.local.pki import Pki, make_pki
from podward.local.waiting import wait_for


ASSETS_VARIABLE = "KUBEBUILDER_ASSETS"
BINARIES = ("kube-apiserver", "etcd")
# What a developer without the assets is told to do; `setup-envtest` is controller-runtime's fetcher.
HOW_TO_GET_THEM = ("export KUBEBUILDER_ASSETS=$(setup-envtest use 1.36 -p path), "
                   "or $(../shared/envtest/install .cache/envtest) where ../shared is present")
# kubeadm's and kind's issuer. Projected tokens get it as their audience unless the pod asks for another.
ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "envtest-admin"
# Every request, at Metadata level: the user, the verb and objectRef as the API server read them, userAgent,
# and the token's JTI (user.extra), never a body.
AUDIT_POLICY = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
                "rules": [{"level": "Metadata"}]}
START_TIMEOUT_S = 60


def assets_dir() -> pathlib.Path | None:
    """The directory holding kube-apiserver and etcd, or None when $KUBEBUILDER_ASSETS does not name one."""
    value = os.environ.get(ASSETS_VARIABLE)
    if not value:
        return None
    directory = pathlib.Path(value)
    if all(os.access(directory / binary, os.X_OK) for binary in BINARIES):
        return directory
    return None


class ApiServerFailed(RuntimeError):
    pass


class Response:
    """An HTTP answer, read whole: from the API server here, from the sidecar in conftest.request."""

    def __init__(self, status: int, headers, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


class KubeApiServer:
    """etcd + kube-apiserver, started once per test session. `admin_*` methods act as cluster-admin."""

    def __init__(self, assets: pathlib.Path, workdir: pathlib.Path):
        """`workdir` holds the PKI, etcd's data, both servers' logs and the audit log."""
        self.assets, self.workdir = assets, workdir
        self.pki: Pki = make_pki(str(self.workdir / "pki"))
        self.admin_token = secrets.token_urlsafe(32)
        self.audit_log = self.workdir / "audit.log"
        self.etcd_port, self.port = free_port(), free_port()
        self.processes: list[subprocess.Popen] = []
        self.startup_seconds: float | None = None
        self._context = ssl.create_default_context(cafile=self.pki.ca_cert)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # --- Lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> "KubeApiServer":
        atexit.register(self.stop)
        # atexit does not run when the test run is terminated; stop first, then let SIGTERM do what it did.
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGTERM)

            def stop_then_terminate(signum, frame):
                self.stop()
                signal.signal(signal.SIGTERM, previous)
                os.kill(os.getpid(), signal.SIGTERM)

            signal.signal(signal.SIGTERM, stop_then_terminate)
        started = time.monotonic()
        self._spawn("etcd", [
            "--data-dir", str(self.workdir / "etcd"), "--name", "envtest",
            "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--unsafe-no-fsync", "--log-level", "warn"])
        self._spawn("kube-apiserver", self._apiserver_args())
        try:
            self._wait_until_ready(started + START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _apiserver_args(self) -> list:
        service_account_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_file, public_file = self.workdir / "sa.key", self.workdir / "sa.pub"
        key_file.write_bytes(service_account_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        public_file.write_bytes(service_account_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.admin_token},{ADMIN_USER},{uuid.uuid4()},"system:masters"\n')
        policy = self.workdir / "audit-policy.json"
        policy.write_text(json.dumps(AUDIT_POLICY))
        return [
            "--etcd-servers", f"http://127.0.0.1:{self.etcd_port}",
            "--bind-address", "127.0.0.1", "--secure-port", str(self.port), "--advertise-address", "127.0.0.1",
            "--tls-cert-file", self.pki.server_cert, "--tls-private-key-file", self.pki.server_key,
            "--service-account-issuer", ISSUER,
            "--service-account-key-file", str(public_file), "--service-account-signing-key-file", str(key_file),
            "--service-cluster-ip-range", "10.0.0.0/24",
            "--authorization-mode", "RBAC", "--token-auth-file", str(tokens),
            "--audit-policy-file", str(policy), "--audit-log-path", str(self.audit_log),
            "--audit-log-format", "json", "--audit-log-mode", "blocking",
        ]

    def _spawn(self, binary: str, args: list) -> None:
        log = open(self.workdir / f"{binary}.log", "wb")
        # Its own process group, so that stop() takes anything it started with it.
        self.processes.append(subprocess.Popen([str(self.assets / binary), *args], stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))

    def _wait_until_ready(self, deadline: float) -> None:
        try:
            wait_for(self._ready, deadline - time.monotonic(), "kube-apiserver ready", interval=0.1)
        except AssertionError:
            raise ApiServerFailed(f"kube-apiserver not ready within {START_TIMEOUT_S}s:\n{self.logs()}") from None

    def _ready(self) -> bool:
        for process in self.processes:
            if process.poll() is not None:
                raise ApiServerFailed(f"{process.args[0]} exited with {process.returncode}:\n{self.logs()}")
        try:
            return self.admin("GET", "/readyz").status == 200
        except OSError:
            return False

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-tail:]}"
                         for path in sorted(self.workdir.glob("*.log")) if path != self.audit_log)

    def stop(self) -> None:
        # The API server first, so it does not log etcd's disappearance; then etcd.
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        self.processes.clear()
        atexit.unregister(self.stop)

    # --- Requests ----------------------------------------------------------------------------------------

    def request(self, method: str, path: str, token: str | None = None, body=None, headers: dict | None = None,
                timeout: float = 30) -> Response:
        """One HTTPS request straight to the API server (no podward), with `token` if given."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self._context, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=all_headers)
            response = connection.getresponse()
            return Response(response.status, response.headers, response.read())
        finally:
            connection.close()

    def admin(self, method: str, path: str, body=None, headers: dict | None = None) -> Response:
        return self.request(method, path, token=self.admin_token, body=body, headers=headers)

    def admin_ok(self, method: str, path: str, body=None, headers: dict | None = None) -> dict:
        """An admin request that must succeed; its JSON answer."""
        response = self.admin(method, path, body, headers)
        if response.status >= 300:
            raise ApiServerFailed(f"{method} {path}: {response.status} {response.body[:2000]!r}")
        return response.json()

    def create(self, obj: dict) -> dict:
        return self.admin_ok("POST", collection_path(obj), obj)

    def token_request(self, namespace: str, service_account: str, expiration_seconds: int = 3607,
                      audiences: list | None = None, pod: dict | None = None) -> str:
        """A token from the TokenRequest API, as the kubelet asks for a projected volume's (bound to `pod`)."""
        spec: dict = {"expirationSeconds": expiration_seconds}
        if audiences is not None:
            spec["audiences"] = audiences
        if pod is not None:
            spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": pod["metadata"]["name"],
                                      "uid": pod["metadata"]["uid"]}
        answer = self.admin_ok("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
                               {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        return answer["status"]["token"]

    def admin_kubeconfig(self, path: pathlib.Path) -> pathlib.Path:
        """A kubeconfig for kubectl as the admin, straight to the API server."""
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "envtest",
            "clusters": [{"name": "envtest", "cluster": {"server": self.url, "certificate-authority": self.pki.ca_cert,
                                                         "tls-server-name": "kubernetes.default.svc"}}],
            "users": [{"name": ADMIN_USER, "user": {"token": self.admin_token}}],
            "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": ADMIN_USER}}],
        }))
        return path

    # --- The audit log -----------------------------------------------------------------------------------

    def audit_events(self, since: float = 0.0) -> list:
        """One event per request received at or after the epoch time `since`, in the order received: its last
        stage, ResponseComplete, or ResponseStarted for a request refused before authentication (401)."""
        by_id: dict = {}
        with open(self.audit_log) as log:
            for line in log:
                event = json.loads(line)
                if received_at(event) >= since:
                    by_id[event["auditID"]] = event
        return sorted(by_id.values(), key=received_at)


def collection_path(obj: dict) -> str:
    """The URL path of the collection an object belongs to, from its apiVersion, kind and namespace."""
    api_version, kind = obj["apiVersion"], obj["kind"]
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    namespace = obj.get("metadata", {}).get("namespace")
    resource = PLURALS[kind]
    return f"{prefix}/namespaces/{namespace}/{resource}" if namespace else f"{prefix}/{resource}"


PLURALS = {"Namespace": "namespaces", "ServiceAccount": "serviceaccounts", "Pod": "pods", "Node": "nodes",
           "ConfigMap": "configmaps", "Secret": "secrets", "Role": "roles", "RoleBinding": "rolebindings",
           "ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings", "Deployment": "deployments",
           "ReplicaSet": "replicasets"}


def received_at(event: dict) -> float:
    """When the API server received the request of an audit event, in seconds since the epoch."""
    return datetime.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()


def credential_id(event: dict) -> str | None:
    """The JTI of the service-account token that authenticated a request, from its audit event."""
    values = event.get("user", {}).get("extra", {}).get("authentication.kubernetes.io/credential-id", [])
    return values[0].removeprefix("JTI=") if values else None

