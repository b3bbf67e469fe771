"""Every shipped Kubernetes manifest applied to the real API server with kubectl, server-side, in namespaces
that enforce the restricted Pod Security Standard: the example pod and its ConfigMap, the kustomize base, and the
example overlay as a platform team would apply it, then used through podward with a token the API server issues
for the overlay's service account. (The Istio WasmPlugin needs Istio's CRD, which nothing here ships.)"""

from __future__ import annotations

import base64
import copy
import json
import os
import pathlib
import subprocess

import pytest
import yaml

from podward import manifests
from podward.constants import BUILT_MODULES, POLICY_CONFIGMAP, REPO, SHIPPED_PLUGIN_CONFIG
from podward.manifests import MODULE_CONFIGMAP_FILES, POLICY_CONFIGMAP_FILE

from conftest import assert_status, request
from harness import readme
from harness.pod import ClusterPod
from test_manifests import CONFIGMAP, DEPLOY_DIR, KUSTOMIZE, kustomize, only


pytestmark = pytest.mark.envtest


def applied(result: subprocess.CompletedProcess) -> list:
    """The lines kubectl printed for a server-side apply that must have gone through without a warning."""
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return result.stdout.splitlines()


def test_the_example_pod_and_its_configmap_are_admitted(kubectl, kube, restricted_namespace):
    # README's "Deploy", by hand: the two ConfigMaps and the pod.
    lines = applied(kubectl("apply", "--server-side", "-n", restricted_namespace, "-f", str(CONFIGMAP),
                            "-f", str(DEPLOY_DIR / POLICY_CONFIGMAP_FILE), "-f", str(DEPLOY_DIR / "pod.yaml")))
    assert lines == ["configmap/podward serverside-applied", "configmap/podward-policy serverside-applied",
                     "pod/curl-with-ambassador serverside-applied"]
    pod = kube.admin_ok("GET", f"/api/v1/namespaces/{restricted_namespace}/pods/curl-with-ambassador")
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["podward"]
    # The module arrives whole: the ConfigMap's binaryData is what was built.
    configmap = kube.admin_ok("GET", f"/api/v1/namespaces/{restricted_namespace}/configmaps/podward")
    assert configmap["binaryData"] == yaml.safe_load(CONFIGMAP.read_text())["binaryData"]


@pytest.mark.parametrize("loosen", ["no seccomp profile", "privilege escalation", "root"])
def test_restricted_admission_refuses_a_loosened_copy(kubectl, restricted_namespace, loosen):
    """The label is enforced here, so the admitted example pod proves something."""
    pod = yaml.safe_load((DEPLOY_DIR / "pod.yaml").read_text())
    sidecar = pod["spec"]["initContainers"][0]["securityContext"]
    if loosen == "no seccomp profile":
        del pod["spec"]["securityContext"]["seccompProfile"]
        for container in pod["spec"]["initContainers"] + pod["spec"]["containers"]:
            del container["securityContext"]["seccompProfile"]
    elif loosen == "privilege escalation":
        del sidecar["allowPrivilegeEscalation"]
    else:
        del pod["spec"]["securityContext"]["runAsNonRoot"]
        del sidecar["runAsNonRoot"]
    result = kubectl("apply", "--server-side", "--dry-run=server", "-n", restricted_namespace, "-f", "-",
                     stdin=json.dumps(pod))
    assert result.returncode == 1
    assert 'is forbidden: violates PodSecurity "restricted:latest"' in result.stderr


def test_the_kustomize_base_applies_and_its_pod_template_is_admitted(kubectl, kube, restricted_namespace):
    base = kustomize(KUSTOMIZE / "base")
    lines = applied(kubectl("apply", "--server-side", "-n", restricted_namespace, "-f", "-",
                            stdin=yaml.safe_dump_all(base)))
    assert sorted(lines) == sorted(f"{r['kind'].lower()}{'.apps' if r['kind'] == 'Deployment' else ''}"
                                   f"{'.rbac.authorization.k8s.io' if 'Role' in r['kind'] else ''}/"
                                   f"{r['metadata']['name']} serverside-applied" for r in base)
    # A Deployment is only warned about; the pods its ReplicaSet would create are what admission refuses.
    assert_template_admitted(kubectl, only(base, "Deployment"), restricted_namespace)


def assert_template_admitted(kubectl, deployment: dict, namespace: str) -> None:
    template = deployment["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "from-template", **template["metadata"]},
           "spec": copy.deepcopy(template["spec"])}
    assert applied(kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", stdin=json.dumps(pod))) == [
        "pod/from-template created (server dry run)"]


def volume_configmap(spec: dict, volume: str) -> str:
    """The name of the ConfigMap a pod spec's volume mounts."""
    [name] = [v["configMap"]["name"] for v in spec["volumes"] if v["name"] == volume]
    return name


def test_the_example_overlay_applies_as_is_and_serves_through_podward(kubectl, kube, tmp_path, start_real_envoy):
    """`kubectl apply -k`, then the sidecar's view: a token as the overlay's projected volume asks for it (its
    expiry, the API server's own audience) for the overlay's service account, and the overlay's policy file."""
    overlay = KUSTOMIZE / "overlays" / "example"
    lines = applied(kubectl("apply", "--server-side", "-k", str(overlay)))
    assert lines[0] == f"namespace/{manifests.EXAMPLE_NAMESPACE} serverside-applied" and len(lines) == 7
    namespace = kube.admin_ok("GET", f"/api/v1/namespaces/{manifests.EXAMPLE_NAMESPACE}")
    assert namespace["metadata"]["labels"].items() >= manifests.POD_SECURITY_LABELS.items()
    resources = kustomize(overlay)
    deployment = only(resources, "Deployment")
    assert_template_admitted(kubectl, deployment, manifests.EXAMPLE_NAMESPACE)

    spec = deployment["spec"]["template"]["spec"]
    [token_source] = [s["serviceAccountToken"] for v in spec["volumes"] if v["name"] == "service-account"
                      for s in v["projected"]["sources"] if "serviceAccountToken" in s]
    pods_path = f"/api/v1/namespaces/{manifests.EXAMPLE_NAMESPACE}/pods"
    # The overlay's namespace is fixed: a pod left by a run for the other build goes first.
    kube.admin("DELETE", f"{pods_path}/overlay-pod?gracePeriodSeconds=0")
    pod_object = kube.create({"apiVersion": "v1", "kind": "Pod",
                              "metadata": {"name": "overlay-pod", "namespace": manifests.EXAMPLE_NAMESPACE,
                                           **deployment["spec"]["template"]["metadata"]},
                              "spec": {**spec, "nodeName": "node-1"}})
    pod = ClusterPod(tmp_path / "pod", kube, pod_object)
    pod.issue_token(lifetime_seconds=token_source["expirationSeconds"], audiences=token_source.get("audience"))
    # The overlay's policy ConfigMap as the kubelet projects it, read by the shipped plugin configuration.
    [policy] = [r for r in resources if r["metadata"]["name"] == volume_configmap(spec, POLICY_CONFIGMAP)]
    pod.write_policy(policy["data"])
    envoy = start_real_envoy(pod, SHIPPED_PLUGIN_CONFIG)
    listed = request(envoy, "GET", pods_path)
    assert listed.status == 200 and [p["metadata"]["name"] for p in listed.json()["items"]] == ["overlay-pod"]
    # The read-only preset refuses a delete itself; RBAC (the Role reads pods only) refuses secrets.
    assert "read-only/default" in assert_status(request(envoy, "DELETE", f"{pods_path}/overlay-pod"), 403,
                                                "Forbidden")["message"]
    assert "cannot list resource" in assert_status(
        request(envoy, "GET", f"/api/v1/namespaces/{manifests.EXAMPLE_NAMESPACE}/secrets"), 403, "Forbidden")["message"]



# The build's ConfigMap file where README's commands name the wasm build's.
BUILD_CONFIGMAPS = {build: f"dist/{MODULE_CONFIGMAP_FILES[build]}" for build in BUILT_MODULES}


def readme_configmap_commands() -> list:
    """Every command in README's "Deploy" that applies the podward ConfigMap."""
    return [line for block in readme.blocks("## Deploy") for line in readme.commands(block)
            if BUILD_CONFIGMAPS["wasm"] in line]


@pytest.mark.parametrize("build", BUILT_MODULES)
def test_the_readme_applies_each_build_configmap(kube, kubectl, restricted_namespace, tmp_path, build):
    """README's own commands, for either build's ConfigMap: client-side `kubectl apply` refused the native one
    (its last-applied annotation would exceed 256 KiB), so the README applies server-side."""
    commands = readme_configmap_commands()
    assert len(commands) == 2  # injection's, and the hand-written pod's
    config = kube.admin_kubeconfig(tmp_path / "kubeconfig")
    kubectl("config", "set-context", "--current", "--namespace", restricted_namespace, "--kubeconfig", str(config))
    env = {**os.environ, "KUBECONFIG": str(config), "HOME": str(tmp_path),
           "PATH": f"{pathlib.Path(os.environ['KUBECTL']).parent}:{os.environ['PATH']}"}
    module = REPO / "dist" / BUILT_MODULES[build].name
    for command in commands:
        command = command.replace("team-a", restricted_namespace).replace(BUILD_CONFIGMAPS["wasm"],
                                                                         BUILD_CONFIGMAPS[build])
        done = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{command}: {done.stderr}"
        configmap = kube.admin_ok("GET", f"/api/v1/namespaces/{restricted_namespace}/configmaps/podward")
        assert base64.b64decode(configmap["binaryData"][module.name]) == module.read_bytes()
