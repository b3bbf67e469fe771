"""The API server's side of the bill (issue 19): the TCP connections a sidecar holds to the real kube-apiserver
with fifty watches open and requests flowing, podward against `kubectl proxy` side by side. podward speaks
HTTP/2 to the API server (ALPN) as client-go does, so every watch and request shares one connection; before
issue 19 each watch held a TLS connection of its own, which the HTTP/1.1 variant still shows. The figures,
and the API server's memory per connection measured on the way, go to the benchmark (bench/phases.py
`api_connections` runs this file and puts them in results.json)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from podward.local.envoy_process import free_port

from harness.connections import PeakSampler, Watches, live_go_memory, request_load
from harness.figures import record_figures
from podward.local.waiting import wait_for
from test_real_watch import configmap_watches
from test_traffic import stop_process

pytestmark = pytest.mark.envtest

WATCHES = 50
CLIENTS, REQUESTS_EACH = 8, 25
# An exec, attach or port-forward in progress holds an HTTP/1.1 connection of its own, in client-go too.
UPGRADE_ALLOWANCE = 1


def connections_under_load(kube, pid: int, port: int, namespace: str) -> dict:
    """Opens the watches through the proxy on `port`, waits until the API server serves every one, then runs
    the requests: the most connections `pid` held to the API server, and the API server's memory for them.

    A request goes first, as an app's first call does, so that the proxy has its connection: a client-go
    that starts many requests at once before it has one dials a connection for each (kubectl proxy was seen
    holding 1 or 42 that way, run to run)."""
    assert request_load("127.0.0.1", port, f"/api/v1/namespaces/{namespace}/configmaps", 1, 1) == 1
    watches_before = configmap_watches(kube)
    memory_before = live_go_memory(kube)
    sampler = PeakSampler(pid, kube.port)
    sampler.start()
    watches = Watches("127.0.0.1", port, f"/api/v1/namespaces/{namespace}/configmaps?watch=1", WATCHES)
    try:
        wait_for(lambda: configmap_watches(kube) - watches_before == WATCHES,
                 what="the API server to serve the watches")
        memory_watching = live_go_memory(kube)
        answered = request_load("127.0.0.1", port, f"/api/v1/namespaces/{namespace}/configmaps", CLIENTS,
                                REQUESTS_EACH)
        peak = sampler.stop()
    finally:
        sampler.done.set()
        watches.close()
    wait_for(lambda: configmap_watches(kube) == watches_before, 15, "the API server to see the watches end")
    assert answered == CLIENTS * REQUESTS_EACH
    return {"connections": peak, "watches": WATCHES, "requests": answered, "concurrent_clients": CLIENTS,
            "apiserver_go_memory_delta_bytes": memory_watching - memory_before}


def kubectl_proxy(kube, pod, tmp_path) -> tuple[subprocess.Popen, int]:
    """`kubectl proxy` with the pod's token file, as the ambassador pattern runs it, on a free port."""
    kubeconfig = tmp_path / "kubeconfig.json"
    kubeconfig.write_text(
        '{"apiVersion": "v1", "kind": "Config", "current-context": "pod",'
        f'"clusters": [{{"name": "envtest", "cluster": {{"server": "{kube.url}", '
        f'"certificate-authority": "{kube.pki.ca_cert}", "tls-server-name": "kubernetes.default.svc"}}}}],'
        f'"users": [{{"name": "pod", "user": {{"tokenFile": "{pod.service_account_dir.path}/token"}}}}],'
        '"contexts": [{"name": "pod", "context": {"cluster": "envtest", "user": "pod"}}]}')
    port = free_port()
    process = subprocess.Popen([os.environ["KUBECTL"], "--kubeconfig", str(kubeconfig), "proxy", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(tmp_path)})
    serving = process.stdout.readline().decode()
    if not re.match(r"Starting to serve on 127\.0\.0\.1:\d+", serving):
        stop_process(process)
        raise AssertionError(f"kubectl proxy did not start: {serving}")
    return process, port


def test_podward_holds_no_more_api_server_connections_than_kubectl_proxy(real_podward, real_pod, start_real_envoy,
                                                                         kube, tmp_path):
    namespace = real_pod.namespace
    podward = connections_under_load(kube, real_podward.process.pid, real_podward.settings.listen_port, namespace)
    http1 = start_real_envoy(real_pod, upstream_protocol="http1")
    before = connections_under_load(kube, http1.process.pid, http1.settings.listen_port, namespace)
    http1.stop()
    process, port = kubectl_proxy(kube, real_pod, tmp_path)
    try:
        kubectl = connections_under_load(kube, process.pid, port, namespace)
    finally:
        stop_process(process)
    extra_connections = before["connections"] - podward["connections"]
    figures = {
        "podward": podward, "podward_http1": before, "kubectl_proxy": kubectl,
        # What a connection of its own per watch costs the API server beyond a stream on a shared connection:
        # its live heap and goroutine stacks after a collection.
        "apiserver_go_memory_per_connection_bytes": round(
            (before["apiserver_go_memory_delta_bytes"] - podward["apiserver_go_memory_delta_bytes"])
            / extra_connections) if extra_connections > 0 else None,
    }
    record_figures("connections", real_podward.settings.build, "api_server_connections", figures)
    # The HTTP/1.1 variant shows the count is real: a connection per watch.
    assert before["connections"] >= WATCHES
    assert podward["connections"] <= kubectl["connections"] + UPGRADE_ALLOWANCE, figures
