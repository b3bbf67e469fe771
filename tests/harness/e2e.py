"""README's "Deploy", end to end: each way of deploying podward (a path), run for a build with README's own
commands on the cluster of $KUBECONFIG, and what the app in the pod then does.

The commands are read from README.md and envoy/README.md (harness.readme) and run as written, in a shell with
the .venv's kubectl first on PATH, with two substitutions a reader makes too: the test's namespace for
README's `team-a`, and the native build's ConfigMap (or kustomize component) for the wasm build's. Lines that
run ./build.sh are not run again: ./build.sh test has just built everything.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import shlex
import subprocess
import time

from podward import manifests
from podward.constants import APP_SOCKET, PODWARD_READY_PATH, POLICY_CONFIGMAP, REPO
from podward.manifests import MODULE_CONFIGMAP_FILES
from podward.pod import SIDECAR, TOKEN_EXPIRATION_SECONDS

from harness import readme
from harness.cluster import Cluster, NodeTools, container_status, kubectl_binary, pod_ready
from podward.local.waiting import wait_for


APP_IMAGE = "curlimages/curl:8.11.1"
BUILDS = ("wasm", "native")
README_NAMESPACE = "team-a"
CONFIGMAP_FILES = {build: f"dist/{MODULE_CONFIGMAP_FILES[build]}" for build in BUILDS}
COMPONENT_DIRS = {build: f"dist/{directory}" for build, directory in manifests.COMPONENTS.items()}
OVERLAY_DIRS = {build: f"dist/{directory}" for build, directory in manifests.OVERLAY_DIRS.items()}
ENVOY_README = REPO / "envoy" / "README.md"
# How long a pod may take from its creation to Ready on a loaded 2-CPU node.
READY_TIMEOUT_S = 180

INJECT = "### 1. Inject"
COMPONENT = "### 2. The kustomize component"
HAND_WRITTEN = "### 3. A hand-written pod"
LIVE_POLICY = "### The policy, live"
OVERLAY = "## Adopting it in an afternoon"


def for_build(command: str, build: str, namespace: str | None) -> str:
    """A README command as a reader runs it for `build` in `namespace`."""
    if namespace:
        command = re.sub(rf"\b{README_NAMESPACE}\b", namespace, command)
    command = command.replace(CONFIGMAP_FILES["wasm"], CONFIGMAP_FILES[build])
    for directories in (COMPONENT_DIRS, OVERLAY_DIRS):
        command = re.sub(rf"{re.escape(directories['wasm'])}(?![-\w])", directories[build], command)
    return command


def block(heading: str, index: int, expect: str, source: pathlib.Path = readme.README) -> list:
    """The commands of one README block, checked to be the one meant (`expect` is in it)."""
    blocks = readme.blocks(heading, source=source)
    assert len(blocks) > index and expect in blocks[index], f"README {heading!r} block {index} lacks {expect!r}"
    return [line for line in readme.commands(blocks[index]) if not line.startswith("./build.sh")]


def run(cluster: Cluster, commands: list, build: str, namespace: str | None, config: str | None = None,
        cwd: pathlib.Path = REPO) -> list:
    """Each command, as a user runs it; their outputs."""
    outputs = []
    for command in commands:
        command = for_build(command, build, namespace)
        done = cluster.shell(command, config, cwd)
        assert done.returncode == 0, f"{command}: {done.stderr}"
        outputs.append(done.stdout)
    return outputs


@dataclasses.dataclass
class Deployed:
    """One path for one build: where its pod is and what it runs as."""
    path: str
    build: str
    namespace: str
    # How to find the pod: its name, or its workload's label selector.
    pod_name: str | None = None
    selector: str | None = None
    service_account: str = "default"
    policy_configmap: str = POLICY_CONFIGMAP
    # When README's commands that create the pod began (epoch seconds).
    created: float = 0.0
    # The workload to scale down instead of deleting the pod: "deployment/NAME".
    workload: str | None = None
    # The app's container: `kubectl run` and `kubectl create deployment` name it after the image.
    app_container: str = "main"

    @property
    def id(self) -> str:
        return f"{self.path}-{self.build}"

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def pod(self, cluster: Cluster) -> dict:
        """The pod podward serves: the named one, or the workload's pod with the sidecar that is not going."""
        if self.pod_name:
            return cluster.get("pod", self.pod_name, namespace=self.namespace)
        pods = [pod for pod in cluster.pods(self.namespace, self.selector)
                if "deletionTimestamp" not in pod["metadata"]
                and SIDECAR in [c["name"] for c in pod["spec"].get("initContainers", [])]]
        assert len(pods) == 1, f"{self.id}: {len(pods)} pods with the sidecar"
        return pods[0]

    def ready_pod(self, cluster: Cluster) -> dict:
        def ready():
            try:
                pod = self.pod(cluster)
            except AssertionError:
                return None
            return pod if pod_ready(pod) else None
        return wait_for(ready, READY_TIMEOUT_S, f"{self.id}: the pod Ready", interval=0.5)


def grant_pod_reading(cluster: Cluster, namespace: str, service_account: str = "default") -> None:
    """What the app's service account may do in the tests: get, list and watch the pods of its namespace."""
    cluster.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                   "metadata": {"name": "e2e-pod-reader", "namespace": namespace},
                   "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]})
    cluster.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "e2e-pod-reader", "namespace": namespace},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "e2e-pod-reader"},
                   "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]})


# --- Once per cluster ----------------------------------------------------------------------------------------

class Injection:
    """README's injection, installed; `enable(build)` makes a namespace of the tests' own take it."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        run(cluster, block(INJECT, 0, "deploy/inject/injection.yaml"), "wasm", None)
        self.probe_namespace = self.enable("probe", "wasm")
        wait_for(lambda: self.dry_run_token_expiration() is not None, 60, "the MutatingAdmissionPolicy in force")

    def enable(self, purpose: str, build: str, labels: dict | None = None) -> str:
        namespace = self.cluster.namespace(purpose, labels)
        run(self.cluster, block(INJECT, 1, "podward.io/injection=enabled"), build, namespace)
        return namespace

    def dry_run_token_expiration(self) -> int | None:
        """The sidecar token's expirationSeconds in a pod the policy would inject now; None if it would not."""
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "probe", "labels": {manifests.INJECT_LABEL: "true"}},
               "spec": {"containers": [{"name": "main", "image": APP_IMAGE}]}}
        stored = json.loads(self.cluster.kubectl("create", "--dry-run=server", "-n", self.probe_namespace, "-o", "json",
                                                 "-f", "-", stdin=json.dumps(pod)).stdout)
        return next((source["serviceAccountToken"]["expirationSeconds"] for volume in stored["spec"]["volumes"]
                     if volume["name"] == "service-account" for source in volume["projected"]["sources"]
                     if "serviceAccountToken" in source), None)

    def set_token_expiration(self, seconds: int) -> None:
        """README's parameter change; returns once the policy applies it to new pods."""
        [command] = block(INJECT, 4, "tokenExpirationSeconds")
        run(self.cluster, [command.replace('"600"', f'"{seconds}"')], "wasm", None)
        wait_for(lambda: self.dry_run_token_expiration() == seconds, 60, f"tokenExpirationSeconds {seconds}")


def install_injection(cluster: Cluster) -> Injection:
    return Injection(cluster)


def node_tools(cluster: Cluster):
    """NodeTools for a pod's node, one per node, made when first asked for."""
    by_node: dict = {}

    def tools_for(pod: dict) -> NodeTools:
        node = pod["spec"]["nodeName"]
        if node not in by_node:
            by_node[node] = NodeTools(cluster, APP_IMAGE, node)
            by_node[node].wait_ready()
        return by_node[node]
    return tools_for


# --- The app's side ------------------------------------------------------------------------------------------

SELF_REVIEW = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
SELF_REVIEW_PATH = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


def self_review_curl(over_socket: bool = False, status_only: bool = False) -> str:
    """A shell command for the app: who the API server says the app is, through podward (TCP or the socket).
    Prints the body, then the HTTP status on a line of its own; or the status alone."""
    where = (f"--unix-socket {APP_SOCKET} http://localhost" if over_socket else "http://localhost:8001")
    output = "-o /dev/null -w '%{http_code}'" if status_only else "-w '\\n%{http_code}'"
    return (f"curl -s -m 10 {output} -X POST -H 'Content-Type: application/json' "
            f"-d {shlex.quote(SELF_REVIEW)} {where}{SELF_REVIEW_PATH}")


def pods_curl(namespace: str) -> str:
    """A shell command for the app: the HTTP status of listing its namespace's pods through podward."""
    return f"curl -s -m 10 -o /dev/null -w '%{{http_code}}' http://localhost:8001/api/v1/namespaces/{namespace}/pods"


def app_exec(cluster: Cluster, deployed: Deployed, script: str, pod: dict | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
    """A shell script in the app container."""
    name = (pod or deployed.pod(cluster))["metadata"]["name"]
    return cluster.exec(deployed.namespace, name, deployed.app_container, "sh", "-c", script, timeout=timeout)


def app_process(cluster: Cluster, deployed: Deployed, script: str, pod: dict) -> subprocess.Popen:
    """A shell script in the app container, running while the test goes on; its output as text."""
    return subprocess.Popen([kubectl_binary(), "exec", "-n", deployed.namespace, pod["metadata"]["name"], "-c",
                             deployed.app_container, "--", "sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.env())


def status_and_body(output: str) -> tuple:
    body, _, status = output.rstrip("\n").rpartition("\n")
    return int(status or 0), body


def until_status(request: str, status: int, limit_s: float, interval: str = "0.2") -> str:
    """A shell loop for the app: `request` (a command printing an HTTP status) every `interval` seconds until it
    prints `status`; prints how many tries did not."""
    return (f"n=0; end=$(( $(date +%s) + {int(limit_s)} )); "
            f"until [ \"$({request})\" = {status} ]; do "
            f"n=$((n+1)); [ $(date +%s) -lt $end ] || {{ echo timeout; exit 1; }}; sleep {interval}; done; echo $n")


def sidecar_log(cluster: Cluster, deployed: Deployed, pod: dict, previous: bool = False) -> list:
    """(time, line) of the sidecar's log, the container runtime's own timestamps."""
    args = ["logs", "-n", deployed.namespace, pod["metadata"]["name"], "-c", SIDECAR, "--timestamps"]
    text = cluster.kubectl(*args, *(["--previous"] if previous else [])).stdout
    return [(stamp, line) for stamp, _, line in (entry.partition(" ") for entry in text.splitlines())]


def first_ready(log: list) -> str | None:
    """When podward first answered the startup probe 200: the start time its access log line records (Envoy
    writes access logs in batches, so the line's own timestamp is later)."""
    for _, line in log:
        if line.startswith("{") and f'"path":"{PODWARD_READY_PATH}"' in line and '"code":200' in line:
            return json.loads(line)["time"]
    return None


def logged_ready(cluster: Cluster, deployed: Deployed, pod: dict) -> tuple:
    """The sidecar's log and when podward first answered the startup probe 200, once Envoy has written that
    line (it flushes its access log every 10 s)."""
    def found():
        log = sidecar_log(cluster, deployed, pod)
        ready = first_ready(log)
        return (log, ready) if ready else None
    return wait_for(found, 30, f"{deployed.id}: podward's first 200 to the startup probe in its log", 1)


def sidecar_id(pod: dict) -> str:
    return container_status(pod, SIDECAR)["containerID"]


def now() -> float:
    return time.time()


# --- The paths -----------------------------------------------------------------------------------------------

RESTRICTED = manifests.POD_SECURITY_LABELS


def deploy_inject_pod(cluster: Cluster, build: str, injection: Injection, workdir: pathlib.Path) -> Deployed:
    """README's injection: the namespace enabled, then `kubectl run` of a labelled pod."""
    namespace = injection.enable(f"inject-pod-{build}", build)
    deployed = Deployed("inject-pod", build, namespace, pod_name="curl", app_container="curl", created=now())
    run(cluster, block(INJECT, 2, "kubectl -n team-a run curl"), build, namespace)
    return deployed


def deploy_inject_deployment(cluster: Cluster, build: str, injection: Injection, workdir: pathlib.Path) -> Deployed:
    """README's injection through a Deployment: created, then labelled; the rollout's pod has the sidecar."""
    namespace = injection.enable(f"inject-deploy-{build}", build)
    deployed = Deployed("inject-deployment", build, namespace, selector="app=web", workload="deployment/web",
                        app_container="curl", created=now())
    run(cluster, block(INJECT, 3, "create deployment web"), build, namespace)
    return deployed


def deploy_component(cluster: Cluster, build: str, injection: Injection, workdir: pathlib.Path) -> Deployed:
    """README's kustomize component: a team's kustomization and workload beside the checkout, applied."""
    namespace = cluster.namespace(f"component-{build}", RESTRICTED)
    kustomization, deployment = readme.blocks(COMPONENT, language="yaml")
    team = workdir / f"component-{build}" / "team"
    team.mkdir(parents=True)
    (team.parent / "podward").symlink_to(REPO)
    (team / "kustomization.yaml").write_text(for_build(kustomization, build, namespace))
    (team / "deployment.yaml").write_text(deployment)
    deployed = Deployed("component", build, namespace, selector="app=web", workload="deployment/web", created=now())
    run(cluster, block(COMPONENT, 0, "apply --server-side -k ."), build, namespace, cwd=team)
    return deployed


def deploy_overlay(cluster: Cluster, build: str, injection: Injection, workdir: pathlib.Path) -> Deployed:
    """envoy/README.md's example overlay (example-native for the native build), as is: its own namespace
    (team-a, team-b), its prefix, its read-only policy."""
    namespace = manifests.EXAMPLE_NAMESPACES[build]
    if cluster.kubectl("get", "namespace", namespace, check=False).returncode == 0:
        cluster.kubectl("delete", "namespace", namespace, "--wait=true", timeout=300)
    prefix = manifests.example_prefix(build)
    deployed = Deployed("overlay", build, namespace, selector=f"app={manifests.APP}",
                        service_account=f"{prefix}{manifests.APP}",
                        policy_configmap=f"{prefix}{POLICY_CONFIGMAP}",
                        workload=f"deployment/{prefix}{manifests.APP}", created=now())
    commands = block(OVERLAY, 0, "apply --server-side -k dist/kustomize/overlays/example", source=ENVOY_README)
    run(cluster, [line for line in commands if " exec " not in line], build, namespace)
    return deployed


def deploy_pod(cluster: Cluster, build: str, injection: Injection, workdir: pathlib.Path) -> Deployed:
    """README's hand-written pod, applied in the namespace of the user's kubeconfig."""
    namespace = cluster.namespace(f"pod-{build}", RESTRICTED)
    deployed = Deployed("pod", build, namespace, pod_name="curl-with-ambassador", created=now())
    commands = block(HAND_WRITTEN, 0, "-f deploy/pod.yaml")
    run(cluster, [line for line in commands if " exec " not in line], build, None,
        config=cluster.namespace_kubeconfig(namespace))
    return deployed


PATHS = {"inject-pod": deploy_inject_pod, "inject-deployment": deploy_inject_deployment,
         "component": deploy_component, "overlay": deploy_overlay, "pod": deploy_pod}
CASES = [(path, build) for path in PATHS for build in BUILDS]


def exec_commands(path: str) -> list:
    """README's `kubectl exec` line that shows a path's pod serving."""
    if path == "overlay":
        return [line for line in block(OVERLAY, 0, " exec ", source=ENVOY_README) if " exec " in line]
    if path == "pod":
        return [line for line in block(HAND_WRITTEN, 0, " exec ") if " exec " in line]
    return []


# --- The kubelet's own token rotation --------------------------------------------------------------------------

ROTATION_TOKEN_SECONDS = 600
# One request a second through podward, for as long as the pod runs: the time, the HTTP status and the JTI of
# the token the API server saw (a SelfSubjectReview answers with it in user.extra).
ROTATION_LOOP = (f"while true; do out=$({self_review_curl()}); "
                 "jti=$(echo \"$out\" | grep -o 'JTI=[0-9a-f-]*' | head -1); "
                 "echo \"$(date +%s) $(echo \"$out\" | tail -n 1) $jti\"; sleep 1; done")


@dataclasses.dataclass
class RotationPod:
    build: str
    namespace: str
    name: str
    created: float


def start_token_rotation(cluster: Cluster, injection: Injection) -> list:
    """One pod per build whose projected token lives ROTATION_TOKEN_SECONDS (README's parameter change), its app
    looping requests through podward; the parameter is put back once the pods exist."""
    injection.set_token_expiration(ROTATION_TOKEN_SECONDS)
    pods = []
    try:
        for build in BUILDS:
            namespace = injection.enable(f"rotation-{build}", build)
            app = {"name": "main", "image": APP_IMAGE, "command": ["sh", "-c", ROTATION_LOOP]}
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "loop", "labels": {manifests.INJECT_LABEL: "true"}},
                   "spec": {"terminationGracePeriodSeconds": 1, "containers": [app]}}
            created = now()
            cluster.apply(pod, namespace)
            pods.append(RotationPod(build, namespace, "loop", created))
    finally:
        injection.set_token_expiration(TOKEN_EXPIRATION_SECONDS)
    return pods
