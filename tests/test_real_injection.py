"""Platform adoption on the real API server: the MutatingAdmissionPolicy (Kubernetes 1.36+) that injects podward
into the pods that ask for it, and the kustomize component that does the same for older clusters, each applied
as README's "Deploy" says, in namespaces that enforce the restricted Pod Security Standard.

No controllers run here: where a Deployment's pods are concerned, the test creates the ReplicaSet and its pod
as the Deployment and ReplicaSet controllers would (from the template, owned by it); admission treats them as
any pod. The before/after diff of an injected pod is written to /tmp/podward-figures/injection.diff."""

from __future__ import annotations

import copy
import difflib
import json
import os
import pathlib
import subprocess

import pytest
import yaml

from podward import manifests
from podward.constants import (CONFIGMAP_ENV, DEFAULT_POLICY, ENVOY_IMAGE, POLICY_CONFIGMAP, POLICY_CONFIGMAP_ENV,
                               POLICY_KEY, SERVICE_ACCOUNT_DIR)
from podward.manifests import MODULE_CONFIGMAP_FILES, POLICY_CONFIGMAP_FILE
from podward.pod import (ENVOY_PATH, SIDECAR, SIDECAR_FS_GROUP, app_socket_mount, restricted, sidecar_container,
                         sidecar_volumes)

from podward.local.waiting import wait_for
from test_manifests import (CONFIGMAP, DEPLOY_DIR, DIST, labelled, load_all, pod_template_spec, team_workloads,
                            with_component)
from test_real_manifests import applied


pytestmark = pytest.mark.envtest

INJECTION = DEPLOY_DIR / manifests.INJECT_DIR / "injection.yaml"
FIGURES = pathlib.Path("/tmp/podward-figures/injection.diff")
# The book's app, as a team would write it for a restricted namespace, before podward.
APP = {"name": "main", "image": "curlimages/curl:8.11.1", "command": ["sleep", "9999999"],
       "securityContext": restricted(run_as_user=100)}


def app_pod(name: str, inject: bool = True, **spec) -> dict:
    labels = {"app": name, **({manifests.INJECT_LABEL: "true"} if inject else {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [copy.deepcopy(APP)], **spec}}


@pytest.fixture(scope="module")
def injection(kube, tmp_path_factory):
    """README's first step, once: the policy, its binding and its parameters, as kubectl applies them; returns
    once the API server applies the policy (it loads new policies within a second or two)."""
    home = tmp_path_factory.mktemp("injection")
    config = kube.admin_kubeconfig(home / "kubeconfig")

    def run(*args, stdin=None):
        return subprocess.run([os.environ["KUBECTL"], "--kubeconfig", str(config), *args], input=stdin,
                              capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(home)})

    lines = applied(run("apply", "--server-side", "-f", str(INJECTION)))
    assert lines == ["namespace/podward-system serverside-applied",
                     "configmap/podward-injection serverside-applied",
                     "mutatingadmissionpolicy.admissionregistration.k8s.io/podward-injection serverside-applied",
                     "mutatingadmissionpolicybinding.admissionregistration.k8s.io/podward-injection serverside-applied"]
    probe = "injection-probe"
    kube.create({"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": probe, "labels": {manifests.NAMESPACE_LABEL: "enabled"}}})
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": probe}})
    wait_for(lambda: initial_containers(dry_run_create(kube, probe, app_pod("probe"))), 30,
             "the MutatingAdmissionPolicy in force", interval=0.2)
    return run


def dry_run_create(kube, namespace: str, pod: dict) -> dict:
    return kube.admin_ok("POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", pod)


def initial_containers(pod: dict) -> list:
    return [c["name"] for c in pod["spec"].get("initContainers", [])]


@pytest.fixture
def team_namespace(kube, restricted_namespace, injection):
    """README's second step, for one team: the namespace enabled for injection, with its two ConfigMaps."""
    kube.admin_ok("PATCH", f"/api/v1/namespaces/{restricted_namespace}",
                  {"metadata": {"labels": {manifests.NAMESPACE_LABEL: "enabled"}}},
                  {"Content-Type": "application/merge-patch+json"})
    lines = applied(injection("apply", "--server-side", "-n", restricted_namespace, "-f", str(CONFIGMAP),
                              "-f", str(DEPLOY_DIR / POLICY_CONFIGMAP_FILE)))
    assert lines == ["configmap/podward serverside-applied", "configmap/podward-policy serverside-applied"]
    return restricted_namespace


def create(kube, namespace: str, obj: dict) -> dict:
    return kube.create({**obj, "metadata": {**obj["metadata"], "namespace": namespace}})


def contains(actual, expected, where: str = "") -> None:
    """`actual` (as the API server stored it, with its defaults) holds everything `expected` says."""
    if isinstance(expected, dict):
        for key, value in expected.items():
            assert key in actual, f"{where}.{key} missing"
            contains(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{where}: {actual} != {expected}"
        for index, (got, want) in enumerate(zip(actual, expected)):
            contains(got, want, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def assert_injected(pod: dict, app_container: str = "main") -> None:
    """The pod as stored: the sidecar first, the shipped volumes, and no token for any app container."""
    spec = pod["spec"]
    contains(spec["initContainers"][0], sidecar_container(app_container=app_container), "sidecar")
    assert initial_containers(pod).count(SIDECAR) == 1
    contains([v for v in spec["volumes"] if v["name"] in {w["name"] for w in sidecar_volumes()}],
             sidecar_volumes(), "volumes")
    assert spec["automountServiceAccountToken"] is False
    assert not [v for v in spec["volumes"] if v["name"].startswith(manifests.AUTOMOUNTED_TOKEN_PREFIX)]
    for container in spec["containers"]:
        mounts = container.get("volumeMounts", [])
        assert not [m for m in mounts if m["mountPath"] == SERVICE_ACCOUNT_DIR], container["name"]
        assert app_socket_mount() in mounts, container["name"]


def test_a_labelled_pod_is_stored_with_the_sidecar(kube, team_namespace):
    stored = create(kube, team_namespace, app_pod("injected"))
    assert_injected(stored)
    assert stored["spec"]["securityContext"]["fsGroup"] == SIDECAR_FS_GROUP
    # Before and after, for README: the same pod where nothing injects.
    before = dry_run_create(kube, team_namespace, app_pod("not-injected", inject=False))
    write_diff(before, stored)


def write_diff(before: dict, after: dict) -> None:
    def text(pod: dict) -> list:
        spec = copy.deepcopy(pod["spec"])
        # Names the API server makes up differ between the two; they are not the injection's.
        for volume in spec.get("volumes", []):
            if volume["name"].startswith(manifests.AUTOMOUNTED_TOKEN_PREFIX):
                volume["name"] = manifests.AUTOMOUNTED_TOKEN_PREFIX + "xxxxx"
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                if mount["name"].startswith(manifests.AUTOMOUNTED_TOKEN_PREFIX):
                    mount["name"] = manifests.AUTOMOUNTED_TOKEN_PREFIX + "xxxxx"
        return yaml.safe_dump({"spec": spec}, sort_keys=False, width=120).splitlines(keepends=True)

    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    FIGURES.write_text("".join(difflib.unified_diff(text(before), text(after), "before", "after", n=2)))


def test_an_unlabelled_pod_is_untouched(kube, team_namespace):
    stored = create(kube, team_namespace, app_pod("plain", inject=False))
    assert initial_containers(stored) == []
    # The ServiceAccount admission's token is there, as in any pod: nothing ran.
    assert [v for v in stored["spec"]["volumes"] if v["name"].startswith(manifests.AUTOMOUNTED_TOKEN_PREFIX)]


def test_a_pod_that_already_has_the_sidecar_gets_no_second(kube, team_namespace):
    first = create(kube, team_namespace, app_pod("first"))
    copied = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "copied", "labels": first["metadata"]["labels"]},
              "spec": first["spec"]}
    again = create(kube, team_namespace, copied)
    assert initial_containers(again) == [SIDECAR]
    assert again["spec"] == first["spec"]


def test_the_pod_s_own_init_containers_and_volumes_stay_after_the_sidecar(kube, team_namespace):
    setup = {"name": "setup", "image": "busybox:1.37", "securityContext": restricted(run_as_user=1000),
             "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]}
    pod = app_pod("with-more", initContainers=[setup], volumes=[{"name": "cache", "emptyDir": {}}],
                  securityContext={"fsGroup": 2000})
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "cache", "mountPath": "/cache"}]
    stored = create(kube, team_namespace, pod)
    assert_injected(stored)
    assert initial_containers(stored) == [SIDECAR, "setup"]
    assert stored["spec"]["initContainers"][1]["volumeMounts"] == setup["volumeMounts"]
    assert {"name": "cache", "mountPath": "/cache"} in stored["spec"]["containers"][0]["volumeMounts"]
    # The pod's own fsGroup stays: the socket belongs to whichever group the pod has.
    assert stored["spec"]["securityContext"]["fsGroup"] == 2000


def test_the_result_passes_restricted_pod_security(kube, team_namespace):
    """The namespace enforces `restricted`, and the app pod sets no pod-level security context: the sidecar
    passes on its own. A pod that is not restricted itself is still refused, sidecar or not."""
    assert_injected(create(kube, team_namespace, app_pod("restricted")))
    loose = app_pod("loose")
    del loose["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"]
    answer = kube.admin("POST", f"/api/v1/namespaces/{team_namespace}/pods", loose)
    assert answer.status == 403 and 'violates PodSecurity "restricted:latest"' in answer.json()["message"]
    assert 'container "main" must set securityContext.allowPrivilegeEscalation=false' in answer.json()["message"]
    assert SIDECAR not in answer.json()["message"]


def test_a_deployment_s_pods_get_it_too(kube, team_namespace):
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web", manifests.INJECT_LABEL: "true"}},
                     "spec": {"containers": [copy.deepcopy(APP)]}}}}
    stored = create(kube, team_namespace, deployment)
    # The Deployment is not changed: the pods are, as they are created, so a rollout never fights injection.
    assert "initContainers" not in stored["spec"]["template"]["spec"]
    # What the Deployment controller, then the ReplicaSet controller, would create.
    template = stored["spec"]["template"]
    replica_set = create(kube, team_namespace, {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-5d8f7", "labels": template["metadata"]["labels"], "ownerReferences": [
            owner(stored)]},
        "spec": {"replicas": 1, "selector": stored["spec"]["selector"], "template": template}})
    pod = create(kube, team_namespace, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-5d8f7-", "labels": template["metadata"]["labels"],
                     "ownerReferences": [owner(replica_set)]},
        "spec": template["spec"]})
    assert_injected(pod)


def owner(obj: dict) -> dict:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def test_the_binding_is_limited_to_the_enabled_namespaces(kube, restricted_namespace, injection):
    stored = create(kube, restricted_namespace, app_pod("elsewhere"))
    assert initial_containers(stored) == []


def test_the_parameters_choose_the_image_and_configmaps(kube, team_namespace, injection):
    """The platform team's settings, changed in place; pods created afterwards follow them."""
    params = f"/api/v1/namespaces/{manifests.INJECTION_NAMESPACE}/configmaps/{manifests.INJECTION}"
    # A distroless image: no shell, so no drain entrypoint (README, "The sidecar image").
    changed = {"image": "registry.example/envoy-distroless:v1.40.0", "configMap": "podward-native",
               "policyConfigMap": "team-policy", "tokenExpirationSeconds": "1800", "drain": "false"}
    kube.admin_ok("PATCH", params, {"data": changed}, {"Content-Type": "application/merge-patch+json"})
    try:
        pod = wait_for(lambda: (created := dry_run_create(kube, team_namespace, app_pod("params")))["spec"][
            "initContainers"][0]["image"] == changed["image"] and created, 30, "the new parameters used", 0.2)
        assert pod["spec"]["initContainers"][0]["command"] == [ENVOY_PATH]
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["podward"]["configMap"]["name"] == "podward-native"
        assert volumes[POLICY_CONFIGMAP]["configMap"]["name"] == "team-policy"
        # podward is told the names the pod mounts, so that its presets protect those.
        env = {e["name"]: e.get("value") for e in pod["spec"]["initContainers"][0]["env"]}
        assert (env[CONFIGMAP_ENV], env[POLICY_CONFIGMAP_ENV]) == ("podward-native", "team-policy")
        [token] = [s["serviceAccountToken"] for s in volumes["service-account"]["projected"]["sources"]
                   if "serviceAccountToken" in s]
        assert token["expirationSeconds"] == 1800
    finally:
        kube.admin_ok("PATCH", params, {"data": manifests.INJECTION_PARAMS},
                      {"Content-Type": "application/merge-patch+json"})
    wait_for(lambda: dry_run_create(kube, team_namespace, app_pod("params"))["spec"]["initContainers"][0]["image"]
             == ENVOY_IMAGE, 30, "the parameters back", 0.2)


def test_missing_parameters_refuse_the_pod_rather_than_create_it_without_podward(kube, team_namespace):
    params = f"/api/v1/namespaces/{manifests.INJECTION_NAMESPACE}/configmaps/{manifests.INJECTION}"
    kube.admin_ok("DELETE", params)
    try:
        answer = wait_for(lambda: (refused := kube.admin("POST", f"/api/v1/namespaces/{team_namespace}/pods?dryRun=All",
                                                         app_pod("no-params"))).status != 201 and refused, 30,
                          "pods refused without the parameters", 0.2)
        assert answer.status == 403 and manifests.INJECTION in answer.json()["message"]
        # Pods that did not ask for podward are not held up.
        assert kube.admin("POST", f"/api/v1/namespaces/{team_namespace}/pods?dryRun=All",
                          app_pod("unaffected", inject=False)).status == 201
    finally:
        [params_object] = [d for d in load_all(INJECTION.read_text()) if d["kind"] == "ConfigMap"]
        kube.create(params_object)
    wait_for(lambda: initial_containers(dry_run_create(kube, team_namespace, app_pod("params-back"))), 30,
             "the injection back with its parameters", 0.2)


# --- The kustomize component, for clusters older than 1.36 -----------------------------------------------------

def test_the_component_applies_and_its_pod_templates_are_admitted(kubectl, kube, restricted_namespace,
                                                                  tmp_path):
    resources = with_component(tmp_path / "team", team_workloads())
    lines = applied(kubectl("apply", "--server-side", "-n", restricted_namespace, "-f", "-",
                            stdin=yaml.safe_dump_all(resources)))
    assert len(lines) == len(resources)
    for name in ("web", "db", "unlabelled"):
        spec = pod_template_spec(resources, name)
        pod = kube.admin_ok("POST", f"/api/v1/namespaces/{restricted_namespace}/pods?dryRun=All",
                            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"from-{name}"}, "spec": spec})
        if name == "unlabelled":
            assert initial_containers(pod) == []
            continue
        # Admitted in a restricted namespace, the sidecar first, and no token for the app.
        assert initial_containers(pod)[0] == SIDECAR
        assert not [v for v in pod["spec"]["volumes"] if v["name"].startswith(manifests.AUTOMOUNTED_TOKEN_PREFIX)]
        assert [m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]] == ["cache"]
    stored = kube.admin_ok("GET", f"/apis/apps/v1/namespaces/{restricted_namespace}/deployments/web")
    assert initial_containers(stored["spec"]["template"]) == [SIDECAR, "setup"]
    configmap = kube.admin_ok("GET", f"/api/v1/namespaces/{restricted_namespace}/configmaps/{POLICY_CONFIGMAP}")
    assert json.loads(configmap["data"][POLICY_KEY]) == DEFAULT_POLICY


def test_the_component_again_changes_nothing(kubectl, restricted_namespace, tmp_path):
    first = with_component(tmp_path / "once", team_workloads())
    applied(kubectl("apply", "--server-side", "-n", restricted_namespace, "-f", "-", stdin=yaml.safe_dump_all(first)))
    again = with_component(tmp_path / "twice", [labelled(r) for r in first if r["metadata"]["name"] == "web"])
    result = kubectl("diff", "--server-side", "-n", restricted_namespace, "-f", "-",
                     stdin=yaml.safe_dump_all([r for r in again if r["kind"] == "Deployment"]))
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr


def test_dist_holds_what_the_component_needs():
    for build, directory in manifests.COMPONENTS.items():
        assert (DIST / directory / MODULE_CONFIGMAP_FILES[build]).exists()
