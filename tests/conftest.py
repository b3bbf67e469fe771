"""Fixtures for the integration tests: a PKI, the stand-in API server, a real kube-apiserver (envtest), a
local pod's volumes, and real Envoy processes running podward.

Every test that starts Envoy runs once per build: podward.wasm (the proxy-wasm filter) and libpodward.so (the
Envoy dynamic module), as the `podward_build` parameter. Tests marked `wasm_only` or `native_only` are about
one build alone (V8 and its VM reloads; the native module's panic containment) and run for it only.

Tests marked `envtest` need $KUBEBUILDER_ASSETS. Without it they are deselected, not skipped, and the run ends
with one line saying so; with PODWARD_REQUIRE_ENVTEST=1 (CI) a missing asset, or a run in which no real-server
test passed, fails the session. Tests marked `node` run end to end on the cluster of $KUBECONFIG (harness.cluster)
and are handled the same way, with PODWARD_REQUIRE_NODE=1."""

from __future__ import annotations

import http.client
import itertools
import os
import pathlib
import secrets
import subprocess

import pytest

from podward import manifests
from podward.bootstrap import API_CLUSTER, UPGRADE_CLUSTER
from podward.local.apiserver import StandInApiServer
from podward.local.envoy_process import Envoy, NATIVE, WASM, local_settings
from podward.local.kubelet import DEFAULT_ANNOTATIONS, DEFAULT_LABELS, LocalPod
from podward.local.pki import make_pki

from harness import e2e
from harness.cluster import HOW_TO_GET_ONE, KUBECONFIG_VARIABLE, Cluster, cluster_problem
from harness.envtest import ASSETS_VARIABLE, HOW_TO_GET_THEM, KubeApiServer, Response, assets_dir
from harness.pod import ClusterPod
from podward.local.waiting import wait_for


REQUIRE_ENVTEST = os.environ.get("PODWARD_REQUIRE_ENVTEST") == "1"
REQUIRE_NODE = os.environ.get("PODWARD_REQUIRE_NODE") == "1"


class _Envtest:
    """What the session learnt about the real-server tests, for the closing lines."""
    node_ids: set = set()
    not_run = 0
    passed = 0
    startup_seconds: float | None = None


class _Node:
    """What the session learnt about the end-to-end tests on a real cluster, for the closing lines."""
    node_ids: set = set()
    not_run = 0
    passed = 0
    problem: str | None = None
    # The token-rotation test runs last and its pods start first, so that the kubelet's renewal (8 minutes
    # into a 10-minute token) happens while the rest of the suite runs.
    rotation_selected = False


BUILDS = ("wasm", "native")


def pytest_configure(config):
    config.addinivalue_line("markers", "envtest: runs against a real kube-apiserver and etcd ($KUBEBUILDER_ASSETS)")
    config.addinivalue_line("markers", "wasm_only: about the wasm build alone; not run for the native build")
    config.addinivalue_line("markers", "native_only: about the native build alone; not run for the wasm build")
    config.addinivalue_line("markers", "node: runs end to end on a real cluster ($KUBECONFIG)")
    config.addinivalue_line("markers", "last: runs after every other test (it waits for what the session started)")


def pytest_sessionstart(session):
    for module in (WASM, NATIVE):
        if not module.exists():
            raise pytest.UsageError(f"{module} is missing: run ./build.sh first (./build.sh test does)")
    if REQUIRE_ENVTEST and assets_dir() is None:
        raise pytest.UsageError(f"PODWARD_REQUIRE_ENVTEST=1 but ${ASSETS_VARIABLE} names no directory with "
                                f"kube-apiserver and etcd: {HOW_TO_GET_THEM}")
    if REQUIRE_NODE and not os.environ.get(KUBECONFIG_VARIABLE):
        raise pytest.UsageError(f"PODWARD_REQUIRE_NODE=1 but ${KUBECONFIG_VARIABLE} is not set: {HOW_TO_GET_ONE}")


def _instance_for_the_other_build(item) -> bool:
    """A wasm_only test's native instance, or a native_only test's wasm instance."""
    build = getattr(item, "callspec", None) and item.callspec.params.get("podward_build")
    return ((build == "native" and item.get_closest_marker("wasm_only") is not None)
            or (build == "wasm" and item.get_closest_marker("native_only") is not None))


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected what they will
def pytest_collection_modifyitems(config, items):
    other_build = [item for item in items if _instance_for_the_other_build(item)]
    if other_build:
        items[:] = [item for item in items if item not in other_build]
        config.hook.pytest_deselected(items=other_build)
    real = [item for item in items if item.get_closest_marker("envtest")]
    _Envtest.node_ids = {item.nodeid for item in real}
    if real and assets_dir() is None:
        items[:] = [item for item in items if not item.get_closest_marker("envtest")]
        config.hook.pytest_deselected(items=real)
        _Envtest.not_run = len(real)
    on_node = [item for item in items if item.get_closest_marker("node")]
    _Node.node_ids = {item.nodeid for item in on_node}
    _Node.problem = cluster_problem() if on_node else None
    if _Node.problem:
        if REQUIRE_NODE:
            raise pytest.UsageError(f"PODWARD_REQUIRE_NODE=1 but {_Node.problem}: {HOW_TO_GET_ONE}")
        items[:] = [item for item in items if not item.get_closest_marker("node")]
        config.hook.pytest_deselected(items=on_node)
        _Node.not_run = len(on_node)
    last = [item for item in items if item.get_closest_marker("last")]
    items[:] = [item for item in items if not item.get_closest_marker("last")] + last
    _Node.rotation_selected = any(item.get_closest_marker("node") for item in last)


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed and report.nodeid in _Envtest.node_ids:
        _Envtest.passed += 1
    if report.when == "call" and report.passed and report.nodeid in _Node.node_ids:
        _Node.passed += 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _Envtest.not_run:
        terminalreporter.write_line(f"REAL API SERVER TESTS NOT RUN: {_Envtest.not_run} tests need "
                                    f"${ASSETS_VARIABLE} (kube-apiserver, etcd): {HOW_TO_GET_THEM}",
                                    red=True, bold=True)
    if _Envtest.startup_seconds is not None:
        terminalreporter.write_line(f"real kube-apiserver + etcd ready in {_Envtest.startup_seconds:.1f} s; "
                                    f"real-server tests passed: {_Envtest.passed}")
    if _Node.not_run:
        terminalreporter.write_line(f"REAL NODE (END-TO-END) TESTS NOT RUN: {_Node.not_run} tests need a cluster "
                                    f"({_Node.problem}): {HOW_TO_GET_ONE}", red=True, bold=True)
    elif _Node.node_ids:
        terminalreporter.write_line(f"end-to-end tests on ${KUBECONFIG_VARIABLE}'s cluster passed: {_Node.passed}")


def pytest_sessionfinish(session, exitstatus):
    if REQUIRE_ENVTEST and exitstatus == 0 and _Envtest.passed == 0:
        print("\nPODWARD_REQUIRE_ENVTEST=1, but no real-server test passed")
        session.exitstatus = 1
    if REQUIRE_NODE and exitstatus == 0 and _Node.passed == 0:
        print("\nPODWARD_REQUIRE_NODE=1, but no end-to-end test passed")
        session.exitstatus = 1


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="session")
def apiserver(pki):
    with StandInApiServer(certfile=pki.server_cert, keyfile=pki.server_key) as server:
        yield server


@pytest.fixture
def pod(tmp_path, pki, apiserver):
    """A pod whose current token the API server accepts."""
    pod = LocalPod(tmp_path / "pod", pki)
    apiserver.accept(pod.issue_token())
    apiserver.clear_requests()
    return pod


@pytest.fixture(scope="session", params=BUILDS)
def podward_build(request) -> str:
    """Which build of podward the test's Envoy runs."""
    return request.param


def _envoy_starter(workdir: pathlib.Path, api_port: int, default_ca: str, build: str):
    """Yields a function that starts Envoy with podward for a pod, in front of the API server at `api_port`;
    every Envoy it started is stopped afterwards."""
    started = []

    def start(pod: LocalPod, plugin_config: dict | None = None, ca_file: str | None = None,
              concurrency: int = 1, extra_args: tuple = (), adjust=None, wait: bool = True,
              entrypoint: bool = False, **settings) -> Envoy:
        """`wait=False`: return as soon as the process runs, as the kubelet starts a container.
        `entrypoint`: under the sidecar's entrypoint, which drains Envoy on SIGTERM (settings `drain=True`)."""
        settings.setdefault("build", build)
        envoy = Envoy(local_settings(pod, api_port, ca_file or default_ca, plugin_config, **settings),
                      workdir, env=pod.env, concurrency=concurrency, extra_args=extra_args, adjust=adjust,
                      entrypoint=entrypoint)
        started.append(envoy)
        return envoy.start() if wait else envoy.launch()

    yield start
    for envoy in started:
        envoy.stop()


@pytest.fixture
def start_envoy(tmp_path, pki, apiserver, podward_build):
    """Starts Envoy with podward in front of the stand-in; every Envoy started is stopped afterwards."""
    yield from _envoy_starter(tmp_path / "envoy", apiserver.port, pki.ca_cert, podward_build)


@pytest.fixture
def podward(pod, start_envoy):
    """Envoy with podward and the default configuration, in front of the stand-in."""
    return start_envoy(pod)


# --- The real API server (envtest) ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def kube(tmp_path_factory):
    """etcd + kube-apiserver from $KUBEBUILDER_ASSETS, once per session; stopped even when tests fail. Its
    logs and audit log stay in pytest's temporary directory."""
    server = KubeApiServer(assets_dir(), tmp_path_factory.mktemp("envtest")).start()
    _Envtest.startup_seconds = server.startup_seconds
    try:
        # The node every test pod is bound to, so that their tokens carry node claims as in a cluster.
        server.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE_NAME}})
        yield server
    finally:
        server.stop()


NODE_NAME = "node-1"
# What the pod's service account may do in its own namespace; secrets and everything else are left to RBAC's
# default deny, so that tests see the API server's own 403.
APP_RULES = [{"apiGroups": [""], "resources": ["pods", "configmaps", "services"], "verbs": ["*"]},
             {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["*"]}]
_namespace_numbers = itertools.count(1)


@pytest.fixture
def namespace(kube) -> str:
    """A namespace of the test's own, so that tests share the API server without seeing each other's objects.
    Nothing finalises namespaces here, so they are left behind with the session's etcd."""
    name = f"t{next(_namespace_numbers):03d}-{secrets.token_hex(3)}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def grant(kube, namespace: str, service_account: str, rules: list, name: str | None = None) -> None:
    """A Role with `rules`, bound to the service account."""
    name = name or f"{service_account}-rules"
    kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                 "metadata": {"name": name, "namespace": namespace}, "rules": rules})
    kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": name, "namespace": namespace},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                 "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]})


@pytest.fixture
def real_pod(tmp_path, kube, namespace) -> ClusterPod:
    """The example pod in its own namespace of the real API server: ServiceAccount `app` with APP_RULES, the
    Pod object (Pending: no kubelet), and a TokenRequest token bound to it, laid out kubelet-style."""
    return cluster_pod(tmp_path, kube, namespace, "app", "curl-with-ambassador")


def cluster_pod(tmp_path, kube, namespace: str, service_account: str, name: str) -> ClusterPod:
    """A pod of the real API server, as real_pod makes it, with its own service account and pod name."""
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": service_account, "namespace": namespace}})
    grant(kube, namespace, service_account, APP_RULES)
    pod_object = kube.create({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": DEFAULT_LABELS,
                     "annotations": DEFAULT_ANNOTATIONS},
        "spec": {"serviceAccountName": service_account, "nodeName": NODE_NAME, "automountServiceAccountToken": False,
                 "containers": [{"name": "main", "image": "curlimages/curl:8.11.1"}]},
    })
    pod = ClusterPod(tmp_path / "pod", kube, pod_object)
    pod.issue_token()
    return pod


@pytest.fixture
def start_real_envoy(tmp_path, kube, podward_build):
    """Starts Envoy with podward in front of the real API server; every Envoy started is stopped afterwards."""
    yield from _envoy_starter(tmp_path / "envoy", kube.port, kube.pki.ca_cert, podward_build)


@pytest.fixture
def real_podward(real_pod, start_real_envoy):
    """Envoy with podward and the default configuration, in front of the real API server."""
    return start_real_envoy(real_pod)


@pytest.fixture
def kubectl(kube, tmp_path):
    """kubectl 1.37 as the cluster admin, straight to the API server."""
    config = kube.admin_kubeconfig(tmp_path / "kubeconfig")

    def run(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([os.environ["KUBECTL"], "--kubeconfig", str(config), *args], input=stdin,
                              capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)})
    return run


@pytest.fixture
def restricted_namespace(kube, namespace) -> str:
    """The test's namespace, labelled to enforce the restricted Pod Security Standard, with the `default`
    ServiceAccount that a controller would have created (the API server refuses pods without theirs)."""
    kube.admin_ok("PATCH", f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": manifests.POD_SECURITY_LABELS}},
                  {"Content-Type": "application/merge-patch+json"})
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": namespace}})
    return namespace


def request(envoy: Envoy, method: str, path: str, headers: dict | None = None, body: bytes | None = None,
            timeout: float = 10) -> Response:
    """One plain-HTTP request to the sidecar, as the app would send it."""
    connection = http.client.HTTPConnection("127.0.0.1", envoy.settings.listen_port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Response(response.status, response.headers, response.read())
    finally:
        connection.close()


def held_requests(envoy: Envoy) -> int:
    """The app's requests in Envoy that are neither answered nor forwarded: those podward holds (for the token)."""
    stats = envoy.stats()
    forwarded = sum(stats[f"cluster.{cluster}.upstream_rq_active"] for cluster in (API_CLUSTER, UPGRADE_CLUSTER))
    return stats["http.podward.downstream_rq_active"] - forwarded


def served_again(envoy: Envoy, path: str = "/api/v1/namespaces/default/pods", timeout: float = 10) -> Response:
    """The first 200 after a flood: until Envoy has seen the flood's connections close, a new one may still
    be refused at the connection limit."""

    def served():
        try:
            response = request(envoy, "GET", path)
        except ConnectionResetError:
            return None
        return response if response.status == 200 else None

    return wait_for(served, timeout, f"the sidecar serving {path} again")


def assert_status(response: Response, code: int, reason: str) -> dict:
    """The reply is a Kubernetes Status object, as kubectl and client-go expect."""
    assert response.status == code, response.body
    assert response.headers["content-type"] == "application/json"
    status = response.json()
    assert (status["kind"], status["apiVersion"], status["status"]) == ("Status", "v1", "Failure")
    assert (status["code"], status["reason"]) == (code, reason)
    assert status["message"]
    return status


# --- A real cluster ($KUBECONFIG): the end-to-end tests ------------------------------------------------------

@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """The cluster of $KUBECONFIG, as its admin; every namespace the tests made is deleted afterwards."""
    real = Cluster(os.environ[KUBECONFIG_VARIABLE], tmp_path_factory.mktemp("cluster"))
    yield real
    real.delete_namespaces()


@pytest.fixture(scope="session")
def node_tools(cluster):
    """A privileged pod on the node: the sidecar's process and cgroup, and the cluster network (harness.cluster)."""
    return e2e.node_tools(cluster)


@pytest.fixture(scope="session")
def injection(cluster):
    """README's injection, once per cluster: the MutatingAdmissionPolicy, in force."""
    return e2e.install_injection(cluster)


@pytest.fixture(scope="session")
def token_rotation_pods(cluster, injection):
    """Pods whose projected token lives 600 s, with a request loop through podward, one per build."""
    return e2e.start_token_rotation(cluster, injection)


@pytest.fixture(scope="session", autouse=True)
def _started_with_the_session(request):
    """What the `last` node test checks starts before any other test, so that it runs alongside them."""
    if _Node.rotation_selected:
        request.getfixturevalue("token_rotation_pods")
