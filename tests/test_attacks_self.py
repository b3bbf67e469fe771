"""The attack catalogue: the app lifting its own policy, or minting a token, through the sidecar.

On main (issue 20, finding 5) the `kubectl-proxy` and `own-namespace` presets forwarded, with the pod's token,
writes to the sidecar's own ConfigMaps (`podward-policy`, the live policy; `podward`, the Envoy config and the
module the next start loads) and TokenRequests: whether they worked rested on the service account's RBAC alone.
Every preset now starts with two deny rules (`no-sidecar-configmap-writes`, for the ConfigMaps the pod really
mounts, named to podward by the manifests that mount them; `no-token-requests`, in any namespace). What podward
cannot see (a Secret's type, a new pod's labels, both in request bodies) rests on RBAC: README's "Security model"
says which, and `deploy/rbac/podward-app.yaml` is a ClusterRole that withholds it, applied here to the real API
server with README's own commands, each path tried through podward against it.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest
import yaml


from harness import readme
from podward import manifests
from podward.constants import CONFIGMAP, CONFIGMAP_ENV, POLICY_CONFIGMAP, POLICY_CONFIGMAP_ENV, POLICY_KEY, REPO
from podward.pod import SIDECAR
from podward.local.envoy_process import Envoy, local_settings
from harness.pod import ClusterPod
from test_attacks import exchange, http1, upstream
from test_manifests import DEPLOY_DIR, KUSTOMIZE, kustomize, labelled, only, team_workloads, with_component


PRESETS = ["kubectl-proxy", "read-only", "own-namespace"]
OWN_CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
APPLY = {"Content-Type": "application/apply-patch+yaml"}
MERGE = {"Content-Type": "application/merge-patch+json"}
OPEN_POLICY = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": POLICY_CONFIGMAP},
                          "data": {POLICY_KEY: '{"default_action": "allow"}'}}).encode()
# Every way to change the sidecar's ConfigMaps: replace, patch, apply, delete, and delete them with the rest.
CONFIGMAP_WRITES = [
    ("PUT", f"{OWN_CONFIGMAPS}/{POLICY_CONFIGMAP}", {"Content-Type": "application/json"}, OPEN_POLICY),
    ("PATCH", f"{OWN_CONFIGMAPS}/{POLICY_CONFIGMAP}", MERGE, b'{"data": {"policy.json": "{}"}}'),
    ("PATCH", f"{OWN_CONFIGMAPS}/{POLICY_CONFIGMAP}?fieldManager=kubectl&force=true", APPLY, OPEN_POLICY),
    ("DELETE", f"{OWN_CONFIGMAPS}/{POLICY_CONFIGMAP}", {}, b""),
    ("PATCH", f"{OWN_CONFIGMAPS}/{CONFIGMAP}", MERGE, b'{"binaryData": {"podward.wasm": ""}}'),
    ("DELETE", f"{OWN_CONFIGMAPS}/{CONFIGMAP}", {}, b""),
    ("DELETE", f"{OWN_CONFIGMAPS}?labelSelector=app.kubernetes.io%2Fname%3Dpodward", {}, b""),
]
TOKEN_REQUESTS = ["/api/v1/namespaces/default/serviceaccounts/default/token",
                  "/api/v1/namespaces/kube-system/serviceaccounts/admin/token"]
TOKEN_REQUEST = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                            "spec": {"expirationSeconds": 600}}).encode()


def refused_by(answer, rule: str) -> bool:
    return answer.status == 403 and f'podward policy rule "{rule}"' in answer.status_object()["message"]


@pytest.mark.parametrize("preset", PRESETS)
def test_no_preset_lets_the_app_change_the_sidecar_or_mint_a_token(pod, start_envoy, apiserver, preset):
    envoy = start_envoy(pod, {"policy": {"preset": preset}})
    refused = []
    for method, path, headers, body in CONFIGMAP_WRITES:
        [answer] = exchange(envoy.settings.listen_port, http1(method, path, headers, body))
        refused.append(refused_by(answer, f"{preset}/no-sidecar-configmap-writes"))
    for path in TOKEN_REQUESTS:
        [answer] = exchange(envoy.settings.listen_port, http1("POST", path, {"Content-Type": "application/json"},
                                                              TOKEN_REQUEST))
        refused.append(refused_by(answer, f"{preset}/no-token-requests"))
    assert refused == [True] * len(refused)
    assert upstream(apiserver) == []
    # Reading them is still what the preset allows.
    [read] = exchange(envoy.settings.listen_port, http1("GET", f"{OWN_CONFIGMAPS}/{POLICY_CONFIGMAP}"))
    assert read.status != 403 and upstream(apiserver) == [("GET", f"{OWN_CONFIGMAPS}/{POLICY_CONFIGMAP}")]


def kubectl_in_the_app(envoy, workdir: pathlib.Path):
    """A shell in the app container: kubectl's kubeconfig points at the sidecar, with no credentials."""
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "pod",
        "clusters": [{"name": "sidecar", "cluster": {"server": envoy.url}}],
        "users": [{"name": "app", "user": {}}],
        "contexts": [{"name": "pod", "context": {"cluster": "sidecar", "user": "app", "namespace": "default"}}]}))
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(workdir),
           "PATH": f"{pathlib.Path(os.environ['KUBECTL']).parent}:{os.environ['PATH']}"}

    def run(command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", command], cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=60)
    return run


def test_the_readmes_policy_command_run_by_the_app_is_refused(pod, start_envoy, apiserver, tmp_path):
    # What a team runs to change its policy, run by the app through its own sidecar.
    [command] = [line for block in readme.blocks("### The policy, live") for line in readme.commands(block)]
    envoy = start_envoy(pod)
    (tmp_path / "policy.json").write_text('{"default_action": "allow"}')
    done = kubectl_in_the_app(envoy, tmp_path)(command.replace("team-a", pod.namespace))
    assert done.returncode != 0
    assert 'podward policy rule "kubectl-proxy/no-sidecar-configmap-writes"' in done.stderr, done.stderr
    assert [(method, path) for method, path in upstream(apiserver) if "configmaps" in path] == []


def test_kubectl_create_token_through_the_sidecar_is_refused(pod, start_envoy, apiserver, tmp_path):
    envoy = start_envoy(pod, {"policy": {"preset": "own-namespace"}})
    done = kubectl_in_the_app(envoy, tmp_path)("kubectl create token default")
    assert done.returncode != 0
    assert 'podward policy rule "own-namespace/no-token-requests"' in done.stderr, done.stderr
    assert upstream(apiserver) == []


def envoy_with_env(tmp_path, pod, apiserver, pki, build: str, plugin_config: dict, env: dict) -> Envoy:
    settings = local_settings(pod, apiserver.port, pki.ca_cert, plugin_config, build=build)
    return Envoy(settings, tmp_path / "envoy", env={**pod.env, **env}).start()


def test_the_protected_configmaps_are_those_the_pod_mounts(pod, apiserver, pki, tmp_path, podward_build):
    # As the example overlay's name prefix names them, or an injection's parameters.
    mounted = {CONFIGMAP_ENV: "team-a-podward", POLICY_CONFIGMAP_ENV: "team-a-podward-policy"}
    envoy = envoy_with_env(tmp_path, pod, apiserver, pki, podward_build, {}, mounted)
    try:
        for name in mounted.values():
            [answer] = exchange(envoy.settings.listen_port, http1("PATCH", f"{OWN_CONFIGMAPS}/{name}", MERGE, b"{}"))
            assert refused_by(answer, "kubectl-proxy/no-sidecar-configmap-writes"), answer.body
        assert upstream(apiserver) == []
        # A ConfigMap of the shipped name that this pod does not mount is the app's like any other.
        [answer] = exchange(envoy.settings.listen_port,
                            http1("PATCH", f"{OWN_CONFIGMAPS}/{POLICY_CONFIGMAP}", MERGE, b"{}"))
        assert not refused_by(answer, "kubectl-proxy/no-sidecar-configmap-writes")
        assert upstream(apiserver) == [("PATCH", f"{OWN_CONFIGMAPS}/{POLICY_CONFIGMAP}")]
    finally:
        envoy.stop()


def test_with_a_preset_not_even_a_teams_own_allow_opens_the_sidecar(pod, start_envoy, apiserver):
    # README's example policy allows writing ConfigMaps in the pod's namespace; its preset's protection comes
    # first. A policy without a preset may let the app manage its policy, on purpose.
    manage = {"name": "manage-policy", "action": "allow", "verbs": ["update", "patch"], "apiGroups": [""],
              "resources": ["configmaps"], "resourceNames": ["$sidecar"], "namespaces": ["$self"]}
    path = f"{OWN_CONFIGMAPS}/{POLICY_CONFIGMAP}"
    for policy, refused in [({"preset": "kubectl-proxy", "rules": [manage]}, True),
                            ({"default_action": "deny", "rules": [manage]}, False)]:
        apiserver.clear_requests()
        envoy = start_envoy(pod, {"policy": policy})
        [answer] = exchange(envoy.settings.listen_port, http1("PATCH", path, MERGE, b"{}"))
        assert refused_by(answer, "kubectl-proxy/no-sidecar-configmap-writes") == refused, answer.body
        assert upstream(apiserver) == ([] if refused else [("PATCH", path)])


# --- The names reach podward from every manifest that mounts them ------------------------------------------------

def assert_names_what_it_mounts(spec: dict) -> None:
    [sidecar] = [c for c in spec["initContainers"] if c["name"] == SIDECAR]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert env[CONFIGMAP_ENV] == volumes["podward"]["configMap"]["name"]
    assert env[POLICY_CONFIGMAP_ENV] == volumes[POLICY_CONFIGMAP]["configMap"]["name"]


def test_every_manifest_names_to_podward_the_configmaps_it_mounts(tmp_path):
    assert_names_what_it_mounts(yaml.safe_load((DEPLOY_DIR / "pod.yaml").read_text())["spec"])
    overlay = kustomize(KUSTOMIZE / "overlays" / "example")
    spec = only(overlay, "Deployment")["spec"]["template"]["spec"]
    assert_names_what_it_mounts(spec)
    assert {e["value"] for e in spec["initContainers"][0]["env"] if "value" in e} == {
        f"{manifests.example_prefix('wasm')}{CONFIGMAP}",
        f"{manifests.example_prefix('wasm')}{POLICY_CONFIGMAP}"}
    # A team's kustomization with the component, and a name prefix and suffix of its own.
    team = tmp_path / "team"
    with_component(team, [labelled(w) for w in team_workloads()[:1]])
    kustomization = yaml.safe_load((team / "kustomization.yaml").read_text())
    (team / "kustomization.yaml").write_text(yaml.safe_dump({**kustomization, "namePrefix": "blue-",
                                                             "nameSuffix": "-v2"}))
    spec = only(kustomize(team), "Deployment")["spec"]["template"]["spec"]
    assert_names_what_it_mounts(spec)
    assert {e["value"] for e in spec["initContainers"][0]["env"] if "value" in e} == {
        f"blue-{CONFIGMAP}-v2", f"blue-{POLICY_CONFIGMAP}-v2"}


# --- What podward cannot see: the RBAC a platform withholds, on the real API server ------------------------------

RBAC_SECTION = "### What RBAC must withhold"


@pytest.fixture
def app_bound_by_the_readme(kube, kubectl, namespace, tmp_path):
    """README's commands: the ClusterRole applied, and bound to the namespace's `app` service account."""
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": namespace}})
    config = kube.admin_kubeconfig(tmp_path / "admin-kubeconfig")
    env = {**os.environ, "KUBECONFIG": str(config), "HOME": str(tmp_path),
           "PATH": f"{pathlib.Path(os.environ['KUBECTL']).parent}:{os.environ['PATH']}"}
    commands = [line for block in readme.blocks(RBAC_SECTION) for line in readme.commands(block)]
    assert len(commands) == 2
    for command in commands:
        done = subprocess.run(["bash", "-c", command.replace("team-a", namespace)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{command}: {done.stderr}"
    return namespace


# Each way past podward that podward cannot see, and RBAC with the ClusterRole refuses; and the work it leaves.
WITHHELD = [
    ("create", "pods", ""), ("update", "pods", ""), ("create", "deployments", "apps"), ("patch", "deployments", "apps"),
    ("create", "statefulsets", "apps"), ("create", "daemonsets", "apps"), ("create", "jobs", "batch"),
    ("create", "cronjobs", "batch"), ("create", "replicationcontrollers", ""), ("create", "secrets", ""),
    ("get", "secrets", ""), ("list", "secrets", ""), ("create", "serviceaccounts/token", ""),
    ("impersonate", "serviceaccounts", ""), ("create", "pods/exec", ""), ("create", "pods/attach", ""),
    ("create", "pods/portforward", ""), ("patch", "pods/ephemeralcontainers", ""),
    ("create", "rolebindings", "rbac.authorization.k8s.io"), ("bind", "roles", "rbac.authorization.k8s.io"),
    ("escalate", "roles", "rbac.authorization.k8s.io"),
    ("create", "certificatesigningrequests", "certificates.k8s.io"), ("get", "nodes/proxy", ""),
]
GRANTED = [("list", "pods", ""), ("get", "pods/log", ""), ("create", "configmaps", ""), ("patch", "configmaps", ""),
           ("list", "deployments", "apps"), ("patch", "deployments/scale", "apps"), ("create", "events", ""),
           ("update", "leases", "coordination.k8s.io")]


@pytest.mark.envtest
def test_the_readmes_role_withholds_every_way_past_podward(kube, app_bound_by_the_readme):
    namespace = app_bound_by_the_readme
    user = f"system:serviceaccount:{namespace}:app"

    def allowed(verb: str, resource: str, group: str) -> bool:
        resource, _, subresource = resource.partition("/")
        review = kube.admin_ok("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
                     "resourceAttributes": {"namespace": namespace, "verb": verb, "group": group,
                                            "resource": resource, "subresource": subresource}}})
        return review["status"].get("allowed", False)

    assert [w for w in WITHHELD if allowed(*w)] == []
    assert [g for g in GRANTED if not allowed(*g)] == []


@pytest.mark.envtest
def test_each_way_past_podward_is_refused_by_podward_or_by_rbac(kube, app_bound_by_the_readme, tmp_path,
                                                                start_real_envoy):
    """Through podward (the default preset) to the real API server, with the README's RBAC: what podward can see
    it refuses itself; what it cannot, the API server refuses; the app's own work goes through."""
    namespace = app_bound_by_the_readme
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default",
                                                                             "namespace": namespace}})
    target = kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": namespace},
                          "spec": {"serviceAccountName": "app", "nodeName": "node-1",
                                   "containers": [{"name": "main", "image": "x"}]}})
    for name in (CONFIGMAP, POLICY_CONFIGMAP):
        kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
                     "data": {"x": "y"}})
    me = ClusterPod(tmp_path / "pod", kube, target)
    me.issue_token()
    envoy = start_real_envoy(me)
    base = f"/api/v1/namespaces/{namespace}"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "uninjected"},
           "spec": {"serviceAccountName": "app", "containers": [{"name": "c", "image": "x"}]}}
    token_secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "app-token", "annotations": {"kubernetes.io/service-account.name": "app"}},
        "type": "kubernetes.io/service-account-token"}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "uninjected"},
                  "spec": {"selector": {"matchLabels": {"a": "b"}},
                           "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod["spec"]}}}
    json_body = {"Content-Type": "application/json"}
    attempts = {
        # podward sees these, and refuses them itself.
        "token request": ("POST", f"{base}/serviceaccounts/app/token", TOKEN_REQUEST, json_body, "podward"),
        "policy write": ("PATCH", f"{base}/configmaps/{POLICY_CONFIGMAP}", b'{"data": {}}', MERGE, "podward"),
        "module write": ("DELETE", f"{base}/configmaps/{CONFIGMAP}", b"", {}, "podward"),
        "exec": ("POST", f"{base}/pods/web/exec?command=cat&stdout=true", b"", {}, "podward"),
        "debug container": ("PATCH", f"{base}/pods/web/ephemeralcontainers", b"{}",
                            {"Content-Type": "application/strategic-merge-patch+json"}, "podward"),
        # podward cannot see what is in the body; RBAC refuses.
        "pod without the injection label": ("POST", f"{base}/pods", json.dumps(pod).encode(), json_body, "rbac"),
        "deployment of such pods": ("POST", f"/apis/apps/v1/namespaces/{namespace}/deployments",
                                    json.dumps(deployment).encode(), json_body, "rbac"),
        "service-account-token secret": ("POST", f"{base}/secrets", json.dumps(token_secret).encode(), json_body,
                                         "rbac"),
        "reading secrets": ("GET", f"{base}/secrets", b"", {}, "rbac"),
    }
    wrong = {}
    for name, (method, path, body, headers, refuser) in attempts.items():
        [answer] = exchange(envoy.settings.listen_port, http1(method, path, headers, body))
        message = answer.status_object()["message"] if answer.status == 403 else ""
        by_podward = "podward policy rule" in message
        by_rbac = 'User "system:serviceaccount:' in message and not by_podward
        if not (by_podward if refuser == "podward" else by_rbac):
            wrong[name] = (answer.status, answer.body[:200])
    assert wrong == {}
    # The app's own work goes through.
    [created] = exchange(envoy.settings.listen_port, http1(
        "POST", f"{base}/configmaps", json_body,
        json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-settings"}}).encode()))
    assert created.status == 201, created.body
    [listed] = exchange(envoy.settings.listen_port, http1("GET", f"{base}/pods"))
    assert listed.status == 200
