"""The API through podward, judged by the real API server: answers byte for byte as a direct request gets them
(JSON, protobuf, aggregated discovery and its ETag), every patch type and server-side apply with the server's own
merge rules and conflicts, a 20 MB list and a paged one, the real clients, the h2 upstream variant, and how the
API server reads each request (requestinfo.go, through the audit log) next to podward's and the stand-in's
reading of it."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
import urllib.parse

import kubernetes.client
import pytest

from podward.local.apiserver import request_attributes

from conftest import assert_status, request
from harness.envtest import ADMIN_USER
from harness.figures import record_figures
from harness.flood import PeakRss, rss_bytes
from podward.local.waiting import wait_for

pytestmark = pytest.mark.envtest


def python_client(envoy) -> kubernetes.client.ApiClient:
    """The Python kubernetes client with the sidecar as its server and no credentials of its own."""
    configuration = kubernetes.client.Configuration()
    configuration.host = envoy.url
    return kubernetes.client.ApiClient(configuration)


def kubectl(envoy, namespace: str, home, *args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([os.environ["KUBECTL"], "--server", envoy.url, "--namespace", namespace, *args],
                          input=stdin, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HOME": str(home)})


def without_resource_version(document: dict) -> dict:
    """A list's resourceVersion is the store's latest, which moves with any write in the cluster."""
    document.get("metadata", {}).pop("resourceVersion", None)
    return document


# --- Answers as a direct request gets them -------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/apis/batch", "/apis/batch/v1", "/api/v1/namespaces/{namespace}/pods"])
def test_ambassador_requests_answer_as_the_api_server_does(real_podward, real_pod, kube, path):
    """The ambassador example's requests (Kubernetes in Action, ch. 8), through podward and straight."""
    path = path.format(namespace=real_pod.namespace)
    proxied = request(real_podward, "GET", path)
    direct = kube.request("GET", path, token=real_pod.token)
    assert (proxied.status, proxied.headers["content-type"]) == (direct.status, direct.headers["content-type"])
    assert without_resource_version(proxied.json()) == without_resource_version(direct.json())
    if path == "/":
        # RBAC's discovery roles do not grant `/` to service accounts (the stand-in serves it to anyone).
        status = assert_status(proxied, 403, "Forbidden")
        user = f"system:serviceaccount:{real_pod.namespace}:app"
        assert status["message"] == f'forbidden: User "{user}" cannot get path "/"'
    else:
        assert proxied.status == 200 and proxied.headers["content-type"] == "application/json"


AGGREGATED_DISCOVERY = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


@pytest.mark.parametrize("path", ["/api", "/apis"])
def test_aggregated_discovery_and_its_etag_pass_through(real_podward, real_pod, kube, path):
    accept = {"Accept": f"{AGGREGATED_DISCOVERY},application/json"}
    proxied = request(real_podward, "GET", path, headers=accept)
    direct = kube.request("GET", path, token=real_pod.token, headers=accept)
    assert proxied.status == direct.status == 200
    assert proxied.headers["content-type"] == direct.headers["content-type"] == AGGREGATED_DISCOVERY
    assert proxied.body == direct.body and proxied.headers["etag"] == direct.headers["etag"]
    groups = {item["metadata"].get("name", "") for item in proxied.json()["items"]}
    assert groups >= ({""} if path == "/api" else {"apps", "batch", "rbac.authorization.k8s.io"})
    # What kubectl's discovery cache relies on: an unchanged document is a 304 with no body.
    unchanged = request(real_podward, "GET", path, headers={**accept, "If-None-Match": proxied.headers["etag"]})
    assert (unchanged.status, unchanged.body) == (304, b"")


def test_kubectl_discovers_the_api_through_podward(real_podward, real_pod, tmp_path):
    result = kubectl(real_podward, real_pod.namespace, tmp_path, "api-resources", "-o", "name")
    assert result.returncode == 0, result.stderr
    assert {"pods", "configmaps", "deployments.apps", "tokenreviews.authentication.k8s.io",
            "mutatingadmissionpolicies.admissionregistration.k8s.io"} <= set(result.stdout.split())


PROTOBUF = "application/vnd.kubernetes.protobuf"


@pytest.mark.parametrize("path", ["/api/v1/namespaces/{namespace}/pods/curl-with-ambassador",
                                  "/api/v1/namespaces/{namespace}/pods"], ids=["object", "list"])
def test_protobuf_bodies_are_byte_identical_to_a_direct_request(real_podward, real_pod, kube, path):
    path = path.format(namespace=real_pod.namespace)
    proxied = request(real_podward, "GET", path, headers={"Accept": PROTOBUF})
    direct = kube.request("GET", path, token=real_pod.token, headers={"Accept": PROTOBUF})
    assert proxied.status == direct.status == 200
    assert proxied.headers["content-type"] == direct.headers["content-type"] == PROTOBUF
    assert proxied.body.startswith(b"k8s\x00") and proxied.body == direct.body


def test_a_protobuf_update_reaches_the_api_server_as_sent(real_podward, real_pod, kube):
    """The object read as protobuf, one value changed in place (same length, so the encoding stays valid), and
    written back as protobuf: the API server decodes exactly those bytes."""
    path = f"/api/v1/namespaces/{real_pod.namespace}/configmaps/encoded"
    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "data": {"colour": "amber"},
                 "metadata": {"name": "encoded", "namespace": real_pod.namespace}})
    read = request(real_podward, "GET", path, headers={"Accept": PROTOBUF})
    assert read.status == 200 and read.body.count(b"amber") == 1
    written = request(real_podward, "PUT", path, body=read.body.replace(b"amber", b"green"),
                      headers={"Content-Type": PROTOBUF, "Accept": "application/json"})
    assert written.status == 200, written.body
    assert kube.admin_ok("GET", path)["data"] == {"colour": "green"}


# --- Writes, with the API server's own merge rules ----------------------------------------------------------

def deployment(name: str, containers: list) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": c, "image": f"{c}:1"} for c in containers]}}}}


def images(found) -> dict:
    return {c.name: c.image for c in found.spec.template.spec.containers}


def test_every_patch_type_and_server_side_apply(real_podward, real_pod):
    namespace, name = real_pod.namespace, "web"
    with python_client(real_podward) as api_client:
        apps = kubernetes.client.AppsV1Api(api_client)
        apps.create_namespaced_deployment(namespace, deployment(name, ["app", "log"]))
        # Strategic merge: containers merge by name, so `log` stays.
        patched = apps.patch_namespaced_deployment(name, namespace, {"spec": {"template": {"spec": {
            "containers": [{"name": "app", "image": "app:2"}]}}}})
        assert images(patched) == {"app": "app:2", "log": "log:1"}
        # JSON merge patch: a list is replaced whole.
        patched = apps.patch_namespaced_deployment(name, namespace, {"spec": {"template": {"spec": {
            "containers": [{"name": "app", "image": "app:3"}]}}}}, _content_type="application/merge-patch+json")
        assert images(patched) == {"app": "app:3"}
        # JSON patch, and the API server's 422 when a `test` operation fails.
        patched = apps.patch_namespaced_deployment(name, namespace, [
            {"op": "test", "path": "/spec/replicas", "value": 1},
            {"op": "replace", "path": "/spec/replicas", "value": 2}])
        assert patched.spec.replicas == 2
        with pytest.raises(kubernetes.client.ApiException) as failed:
            apps.patch_namespaced_deployment(name, namespace, [{"op": "test", "path": "/spec/replicas", "value": 1}])
        assert failed.value.status == 422 and json.loads(failed.value.body)["reason"] == "Invalid"
        # Server-side apply: a second manager taking a field gets the API server's 409 Conflict, unless forced.
        applied = apps.patch_namespaced_deployment(name, namespace, {**deployment(name, ["app"]), "spec": {
            **deployment(name, ["app"])["spec"], "replicas": 3}}, field_manager="team-a", force=True,
            _content_type="application/apply-patch+yaml")
        assert applied.spec.replicas == 3
        with pytest.raises(kubernetes.client.ApiException) as conflict:
            apps.patch_namespaced_deployment(name, namespace, {"apiVersion": "apps/v1", "kind": "Deployment",
                                                               "metadata": {"name": name}, "spec": {"replicas": 5}},
                                             field_manager="team-b", _content_type="application/apply-patch+yaml")
        status = json.loads(conflict.value.body)
        assert (conflict.value.status, status["reason"]) == (409, "Conflict")
        assert status["message"] == 'Apply failed with 1 conflict: conflict with "team-a": .spec.replicas'
        forced = apps.patch_namespaced_deployment(name, namespace, {"apiVersion": "apps/v1", "kind": "Deployment",
                                                                    "metadata": {"name": name},
                                                                    "spec": {"replicas": 5}},
                                                  field_manager="team-b", force=True,
                                                  _content_type="application/apply-patch+yaml")
        assert forced.spec.replicas == 5
        assert {"team-a", "team-b"} <= {entry.manager for entry in forced.metadata.managed_fields}


def test_kubectl_applies_and_deletes_through_podward(real_podward, real_pod, kube, tmp_path):
    namespace = real_pod.namespace
    manifest = 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: "1"\n'
    outputs = []
    for args, text in [(("apply", "-f", "-"), manifest), (("apply", "-f", "-"), manifest.replace('"1"', '"2"')),
                       (("apply", "--server-side", "-f", "-"), manifest.replace('"1"', '"3"')),
                       (("delete", "configmap", "applied"), None)]:
        result = kubectl(real_podward, namespace, tmp_path, *args, stdin=text)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout.strip())
    deleted = f'configmap "applied" deleted from {namespace} namespace'
    assert outputs == ["configmap/applied created", "configmap/applied configured",
                       "configmap/applied serverside-applied", deleted]
    assert kube.admin("GET", f"/api/v1/namespaces/{namespace}/configmaps/applied").status == 404


# --- Lists ---------------------------------------------------------------------------------------------------

BULK_ITEMS = 200
BULK_VALUE_BYTES = 100_000
MAX_RSS_GROWTH = 8 * 1024 * 1024


@pytest.fixture
def bulk_configmaps(kube, real_pod) -> str:
    """~20 MB of ConfigMaps in the pod's namespace, written by the admin."""
    for i in range(BULK_ITEMS):
        kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": f"bulk-{i:04d}", "namespace": real_pod.namespace},
                     "data": {"value": os.urandom(BULK_VALUE_BYTES // 2).hex()}})
    return f"/api/v1/namespaces/{real_pod.namespace}/configmaps"


def test_a_20_mb_list_streams_through_with_bounded_envoy_memory(real_podward, bulk_configmaps):
    # Warm up first, so the baseline already has the upstream connection and TLS session.
    assert request(real_podward, "GET", "/version").status == 200
    paused_before = real_podward.stats()["cluster.kubernetes.upstream_flow_control_paused_reading_total"]
    pid = real_podward.process.pid
    before = rss_bytes(pid)
    sampler = PeakRss(pid)
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", real_podward.settings.listen_port, timeout=60)
    try:
        connection.request("GET", bulk_configmaps)
        response = connection.getresponse()
        body = bytearray()
        while chunk := response.read(64 * 1024):
            body += chunk
            time.sleep(0.005)  # a slow consumer: Envoy must hold the API server back, not buffer for us
    finally:
        connection.close()
        peak = sampler.stop()
    seconds = time.monotonic() - started

    assert response.status == 200
    listed = json.loads(body)
    assert listed["kind"] == "ConfigMapList" and len(listed["items"]) == BULK_ITEMS
    assert listed["items"][-1]["metadata"]["name"] == f"bulk-{BULK_ITEMS - 1:04d}"
    mib = 1024 * 1024
    figures = {"body_mib": round(len(body) / mib, 1), "rss_before_mib": round(before / mib, 1),
               "rss_peak_mib": round(peak / mib, 1), "growth_mib": round((peak - before) / mib, 2),
               "transfer_s": round(seconds, 2), "rss_samples": sampler.samples}
    record_figures("traffic", real_podward.settings.build, "large_list_real_apiserver", figures)
    assert len(body) > 20 * 1000 * 1000 and sampler.samples > 100
    assert peak - before < MAX_RSS_GROWTH, figures
    # Growth stayed low because Envoy stopped reading from the API server while the app lagged.
    assert real_podward.stats()["cluster.kubernetes.upstream_flow_control_paused_reading_total"] > paused_before


def test_a_paged_list_follows_the_api_servers_continue_tokens(real_podward, bulk_configmaps):
    names, token, pages = [], "", 0
    while True:
        query = urllib.parse.urlencode({"limit": 60, **({"continue": token} if token else {})})
        page = request(real_podward, "GET", f"{bulk_configmaps}?{query}", timeout=30).json()
        names += [item["metadata"]["name"] for item in page["items"]]
        pages += 1
        token = page["metadata"].get("continue")
        if not token:
            break
    assert pages == 4 and names == [f"bulk-{i:04d}" for i in range(BULK_ITEMS)]


# --- Real clients ----------------------------------------------------------------------------------------------

def test_the_python_client_lists_pods_with_no_credentials(real_podward, real_pod):
    with python_client(real_podward) as api_client:
        pods = kubernetes.client.CoreV1Api(api_client).list_namespaced_pod(real_pod.namespace)
    assert [(p.metadata.name, p.status.phase) for p in pods.items] == [(real_pod.name, "Pending")]


def test_kubectl_gets_pods_through_the_sidecar(real_podward, real_pod, tmp_path):
    result = kubectl(real_podward, real_pod.namespace, tmp_path, "get", "pods")
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert row.split()[:4] == [real_pod.name, "0/1", "Pending", "0"]  # no kubelet runs it


@pytest.mark.parametrize("path", ["/api/v1/namespaces/{namespace}/pods/curl-with-ambassador/EXEC",
                                  "/API/v1/namespaces/{namespace}/pods/curl-with-ambassador/exec"])
def test_a_case_trick_reaches_nothing_the_api_server_would_run(real_pod, start_real_envoy, kube, path):
    """podward forwards these (they are not exec), so only the API server's own routing stands between them and
    a shell: with a service account that RBAC lets do anything, they are its 404s, not exec."""
    kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                 "metadata": {"name": f"{real_pod.namespace}-cluster-admin"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                 "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": real_pod.namespace}]})
    envoy = start_real_envoy(real_pod)
    response = request(envoy, "POST", path.format(namespace=real_pod.namespace))
    if path.startswith("/API/"):
        # Outside the APIs the API server's mux answers, in plain text.
        assert (response.status, response.body) == (404, b"404 page not found\n")
    else:
        assert_status(response, 404, "NotFound")


# --- HTTP/2 only, without the ALPN choice ----------------------------------------------------------------------

def test_the_h2_upstream_variant_serves_lists_watches_and_writes(real_pod, start_real_envoy, kube):
    envoy = start_real_envoy(real_pod, upstream_protocol="h2")
    namespace = real_pod.namespace
    pods = request(envoy, "GET", f"/api/v1/namespaces/{namespace}/pods")
    assert pods.status == 200 and [p["metadata"]["name"] for p in pods.json()["items"]] == [real_pod.name]
    created = request(envoy, "POST", f"/api/v1/namespaces/{namespace}/configmaps",
                      body=b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"over-h2"}}',
                      headers={"Content-Type": "application/json"})
    assert created.status == 201
    started = time.monotonic()
    watched = request(envoy, "GET", f"/api/v1/namespaces/{namespace}/configmaps?watch=1&timeoutSeconds=2")
    assert watched.status == 200 and 1.5 < time.monotonic() - started < 5
    assert [json.loads(line)["object"]["metadata"]["name"] for line in watched.body.splitlines()] == ["over-h2"]
    stats = envoy.stats()
    # One h2 connection carried all three, and the API server negotiated h2 with Envoy.
    assert stats["cluster.kubernetes.upstream_cx_http2_total"] == 1
    assert stats["cluster.kubernetes.upstream_rq_total"] == 3


# --- How a request is read: requestinfo.go, podward, the stand-in --------------------------------------------

# Requests whose reading is easy to get wrong (issue 11: empty segments, watch=false spelt otherwise, names
# from field selectors, proxy subresources, OPTIONS), each answered quickly: watches end after a second.
READINGS = [
    ("GET", "/api/v1/namespaces/{ns}/pods"),
    ("GET", "/api/v1/namespaces/{ns}/pods/curl-with-ambassador"),
    ("HEAD", "/api/v1/namespaces/{ns}/pods/curl-with-ambassador"),
    ("OPTIONS", "/api/v1/namespaces/{ns}/pods/curl-with-ambassador"),
    ("DELETE", "/api/v1/namespaces/{ns}/configmaps"),
    ("GET", "/api/v1/namespaces/{ns}/pods?watch=1&timeoutSeconds=1"),
    ("GET", "/api/v1/namespaces/{ns}/pods?watch=false"),
    ("GET", "/api/v1/namespaces/{ns}/pods?watch=False"),
    ("GET", "/api/v1/namespaces/{ns}/pods?watch=0"),
    ("GET", "/api/v1/namespaces/{ns}/pods?watch=&timeoutSeconds=1"),
    ("GET", "/api/v1/watch/namespaces/{ns}/pods?timeoutSeconds=1"),
    ("GET", "/api/v1/watch/namespaces/{ns}/pods?timeoutSeconds=1&fieldSelector=metadata.name%3Dx"),
    ("GET", "/api/v1/namespaces/{ns}/pods?watch=TRUE&timeoutSeconds=1"),
    ("GET", "/api/v1/namespaces/{ns}//pods"),
    ("GET", "/api/v1/namespaces/{ns}/pods/"),
    ("GET", "/api/v1//namespaces/{ns}/pods"),
    ("GET", "/api/v1/namespaces/{ns}/pods?fieldSelector=metadata.name%3Dcurl-with-ambassador"),
    ("GET", "/api/v1/namespaces/{ns}/pods?fieldSelector=metadata.name%3D%3Dcurl-with-ambassador"),
    ("GET", "/api/v1/namespaces/{ns}/pods?fieldSelector=status.phase%3DPending,metadata.name%3Dcurl-with-ambassador"),
    ("GET", "/api/v1/namespaces/{ns}/pods?fieldSelector=metadata.name%21%3Dcurl-with-ambassador"),
    ("GET", "/api/v1/namespaces/{ns}/pods?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dx"),
    ("GET", "/api/v1/namespaces/{ns}/pods/curl-with-ambassador/proxy/some/path"),
    ("GET", "/api/v1/proxy/namespaces/{ns}/pods/curl-with-ambassador/some/path"),
    ("GET", "/api/v1/nodes/node-1/proxy/metrics"),
    ("GET", "/api/v1/namespaces/{ns}"),
    ("PUT", "/api/v1/namespaces/{ns}/finalize"),
    ("GET", "/api/v1/namespaces/{ns}/status"),
    ("GET", "/apis/apps/v1/namespaces/{ns}/deployments/web/scale"),
    ("GET", "/apis/apps/v1/deployments"),
    ("GET", "/apis/apps"),
    ("GET", "/api"),
    ("GET", "/version"),
    ("HEAD", "/healthz"),
    ("OPTIONS", "/version"),
]


def api_server_reading(event: dict) -> dict:
    """What the audit log says the API server made of a request."""
    ref = event.get("objectRef", {})
    return {"verb": event["verb"], "group": ref.get("apiGroup", ""), "resource": ref.get("resource", ""),
            "subresource": ref.get("subresource", ""), "namespace": ref.get("namespace", ""),
            "name": ref.get("name", "")}


def send_probes(send, kube, namespace: str, reaching: int = len(READINGS)) -> dict:
    """Sends each of READINGS with a User-Agent naming it; returns the API server's reading of each, by index,
    once `reaching` of them have reached it."""
    since = time.time()
    for index, (method, path) in enumerate(READINGS):
        send(index, method, path.format(ns=namespace))
    readings = {}

    def every_reading_audited() -> bool:
        for event in kube.audit_events(since):
            agent = event.get("userAgent", "").split(" ")[0]
            if agent.startswith("probe-"):
                readings[int(agent.removeprefix("probe-"))] = api_server_reading(event)
        return len(readings) >= reaching

    wait_for(every_reading_audited, 10, f"the API server's audit events of {reaching} readings")
    return readings


def test_the_stand_in_reads_requests_as_the_api_server_does(kube, real_pod):
    def send(index, method, path):
        kube.admin(method, path, headers={"User-Agent": f"probe-{index}"})

    readings = send_probes(send, kube, real_pod.namespace)
    assert len(readings) == len(READINGS)
    differences = []
    for index, (method, path) in enumerate(READINGS):
        url = urllib.parse.urlsplit(path.format(ns=real_pod.namespace))
        attrs = request_attributes(ADMIN_USER, method, url.path, urllib.parse.parse_qs(url.query,
                                                                                          keep_blank_values=True))
        ours = {"verb": attrs.verb, "group": attrs.api_group, "resource": attrs.resource if attrs.is_resource else "",
                "subresource": attrs.subresource, "namespace": attrs.namespace, "name": attrs.name}
        if ours != readings[index]:
            differences.append((method, path, ours, readings[index]))
    assert differences == [], "\n".join(map(str, differences))


def test_podward_reads_requests_as_the_api_server_does(kube, real_pod, start_real_envoy):
    # A policy that allows whatever it can read, so that every reading reaches the API server to compare with
    # (the default preset refuses the node proxy among the probes).
    envoy = start_real_envoy(real_pod, {"policy": {"default_action": "allow"}, "access_record": "all"})

    def send(index, method, path):
        request(envoy, method, path, headers={"User-Agent": f"probe-{index}"})

    # All but the one podward answers itself (below).
    readings = send_probes(send, kube, real_pod.namespace, reaching=len(READINGS) - 1)
    envoy.stop()
    # A method the API server has no verb for is the one request podward answers itself (400): it cannot say
    # what a policy rule would allow.
    assert [READINGS[i] for i in range(len(READINGS)) if i not in readings] == [
        ("OPTIONS", "/api/v1/namespaces/{ns}/pods/curl-with-ambassador")]
    podward = {}
    for line in envoy.log().splitlines():
        if line.startswith("{") and (record := json.loads(line))["user_agent"].startswith("probe-"):
            podward[int(record["user_agent"].split(" ")[0].removeprefix("probe-"))] = json.loads(record["podward"])
    differences = []
    for index, (method, path) in enumerate(READINGS):
        if index not in readings:
            continue  # podward refused it itself: nothing reached the API server to compare with
        ours = {key: podward[index][key] for key in ("verb", "group", "resource", "subresource", "namespace", "name")}
        if ours != readings[index]:
            differences.append((method, path, ours, readings[index]))
    assert differences == [], "\n".join(map(str, differences))
