"""README's "Rolling out a policy", end to end in real pods on a real cluster ($KUBECONFIG), for both builds: README's
Deployment `web` injected with the sidecar (README's injection), its app's traffic through podward, then every
command of the section as written (in a directory of the test's own with `dist` beside it, with the test's namespace
for `team-a`): the sidecar's log taken with `kubectl logs`, a policy learnt from it, reviewed, applied in dry-run
(what it would deny is forwarded, the sidecar's log and its metrics on the pod IP name the rule), watched, and
enforced by deleting one line. The real kubelet projects each policy into the pod (its sync period applies).

Where tests/node/up gave the API server an audit log ($PODWARD_E2E_AUDIT_LOG), the policy learnt from it for the
pod's service account is the one learnt from the sidecar's log. Figures go to /tmp/podward-figures/policy-rollout.json."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from harness import e2e, readme
from podward.local.waiting import wait_for
from podward.constants import METRICS_PATH, METRICS_PORT, POLICY_FILE, REPO
from podward.pod import SIDECAR
from harness.figures import record_figures


pytestmark = pytest.mark.node

ROLLOUT = "## Rolling out a policy"
TOOL = REPO / "dist" / "podward-policy"
# A ConfigMap update reaches a running pod within the kubelet's sync period plus its cache's delay.
POLICY_LIMIT_S = 150
# Envoy writes its access log every 10 s.
LOG_LIMIT_S = 60


def block(index: int, expect: str) -> list:
    blocks = readme.blocks(ROLLOUT)
    assert expect in blocks[index], f"README {ROLLOUT!r} block {index} lacks {expect!r}"
    return readme.commands(blocks[index])


@pytest.fixture(scope="module")
def webs(cluster, injection) -> dict:
    """README's injected Deployment `web`, one namespace per build, each pod Ready; its service account may read
    the namespace's pods."""
    deployed = {}
    for build in e2e.BUILDS:
        namespace = injection.enable(f"rollout-{build}", build)
        deployed[build] = e2e.Deployed("rollout", build, namespace, selector="app=web", workload="deployment/web",
                                       app_container="curl", created=e2e.now())
        e2e.run(cluster, e2e.block(e2e.INJECT, 3, "create deployment web"), build, namespace)
        e2e.grant_pod_reading(cluster, namespace)
    for each in deployed.values():
        each.ready_pod(cluster)
        # The Deployment's first pod (before the label: no sidecar) outlives the rollout by its grace period;
        # `kubectl logs deployment/web`, README's command, would pick it, the pod Ready longest.
        wait_for(lambda: only_injected_pods(cluster, each), e2e.READY_TIMEOUT_S,
                 f"{each.id}: the pod from before the label gone", 1)
    return deployed


def only_injected_pods(cluster, deployed) -> bool:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", deployed.namespace, "-l", deployed.selector,
                                      "-o", "json").stdout)["items"]
    return bool(pods) and all(any(c["name"] == SIDECAR for c in pod["spec"].get("initContainers", []))
                              for pod in pods)


def traffic(namespace: str, pod: str) -> str:
    """The app's usual traffic, through podward: each request's HTTP status, one a line."""
    status = "curl -s -m 10 -o /dev/null -w '%{http_code}\\n'"
    api = "http://localhost:8001"
    return "; ".join([
        f"kubectl --server {api} -n {namespace} get pods -o name >/dev/null; echo $?",
        f"{status} {api}/api/v1/namespaces/{namespace}/pods/{pod}",
        e2e.self_review_curl(status_only=True) + "; echo",
        f"{status} {api}/version",
        f"{status} -X POST {api}/api/v1/namespaces/{namespace}/pods/{pod}/exec",
    ])


WATCH = "curl -s -m 10 -o /dev/null -w '%{{http_code}}' 'http://localhost:8001/api/v1/namespaces/{}/pods?watch=1&timeoutSeconds=1'"


def sidecar_log(cluster, deployed) -> str:
    return cluster.kubectl("logs", "-n", deployed.namespace, deployed.workload, "-c", SIDECAR).stdout


def policies_taken(cluster, deployed) -> int:
    return sidecar_log(cluster, deployed).count(f"podward: {POLICY_FILE} changed")


def in_team_dir(cluster, deployed, workdir, line: str):
    """A README command, as the team runs it in its directory."""
    return cluster.shell(e2e.for_build(line, deployed.build, deployed.namespace), cwd=workdir)


@pytest.mark.parametrize("build", e2e.BUILDS)
def test_learn_review_dry_run_then_enforce_in_a_real_pod(cluster, node_tools, webs, tmp_path, build):
    deployed = webs[build]
    namespace, pod = deployed.namespace, deployed.ready_pod(cluster)
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    workdir = tmp_path / "team"
    workdir.mkdir()
    (workdir / "dist").symlink_to(REPO / "dist")

    usual = e2e.app_exec(cluster, deployed, traffic(namespace, name), pod).stdout.split()
    assert usual == ["0", "200", "201", "200", "403"], usual
    wait_for(lambda: f"/pods/{name}/exec" in sidecar_log(cluster, deployed), LOG_LIMIT_S,
             f"{deployed.id}: the app's requests in the sidecar's access log", 1)

    # 1. Learn from the sidecar's log; 2. review.
    for line in block(0, "learn access.log"):
        done = in_team_dir(cluster, deployed, workdir, line)
        assert done.returncode == 0, (line, done.stderr)
    policy_text = (workdir / "policy.json").read_text()
    policy = json.loads(policy_text)
    assert policy["dryRun"] is True and policy["default_action"] == "deny"
    assert "exec" not in policy_text and "$self" in policy_text
    lint, replay, explain = block(2, "replay policy.json access.log")
    for line, code, output in [(lint, 0, "0 warnings"), (replay, 0, ", 0 would be denied"),
                               (explain, 1, "DENY  create pods/exec")]:
        done = in_team_dir(cluster, deployed, workdir, line)
        assert (done.returncode, output in done.stdout) == (code, True), (line, done.stdout, done.stderr)

    audit_log = os.environ.get("PODWARD_E2E_AUDIT_LOG")
    if audit_log:
        shutil.copy(audit_log, workdir / "audit.log")
        learnt = cluster.shell(f"dist/podward-policy learn --service-account {namespace}:default audit.log",
                               cwd=workdir)
        assert learnt.returncode == 0, learnt.stderr
        assert json.loads(learnt.stdout)["rules"] == policy["rules"], "the audit log tells the same traffic"

    # 3. Applied in dry-run: the kubectl-proxy preset is enforced, what the policy would deny is forwarded.
    taken = policies_taken(cluster, deployed)
    [apply] = block(3, "create configmap podward-policy")
    assert in_team_dir(cluster, deployed, workdir, apply).returncode == 0
    wait_for(lambda: policies_taken(cluster, deployed) > taken, POLICY_LIMIT_S,
             f"{deployed.id}: the dry-run policy in the pod", 0.2)
    watch = WATCH.format(namespace)
    assert e2e.app_exec(cluster, deployed, watch, pod).stdout == "200", "forwarded in dry-run"
    assert e2e.app_exec(cluster, deployed, traffic(namespace, name), pod).stdout.split() == usual
    dry_run_denied = 'podward_policy_dry_run_denied_total{rule="rules/default"} 1'
    wait_for(lambda: dry_run_denied in node_tools(pod).http(f"http://{ip}:{METRICS_PORT}{METRICS_PATH}")[1],
             30, f"{deployed.id}: the dry-run denial counted", 1)
    wait_for(lambda: '\\"dry_run_rule\\":\\"rules/default\\"' in sidecar_log(cluster, deployed), LOG_LIMIT_S,
             f"{deployed.id}: the dry-run denial in the access log", 1)

    # 4. Watched: replaying the sidecar's log names the request the policy would deny.
    for line in block(4, "replay policy.json dry-run.log"):
        done = in_team_dir(cluster, deployed, workdir, line)
    assert done.returncode == 1 and "rules/default would deny 1:" in done.stdout, (done.stdout, done.stderr)
    assert f"watch pods in namespace {namespace}" in done.stdout, done.stdout

    # 5. Enforced: one line deleted, applied; the watch is refused by the policy, the usual traffic served.
    taken = policies_taken(cluster, deployed)
    for line in block(5, "sed -i"):
        done = in_team_dir(cluster, deployed, workdir, line)
        assert done.returncode == 0, (line, done.stderr)
    assert '"dryRun"' not in (workdir / "policy.json").read_text()
    wait_for(lambda: policies_taken(cluster, deployed) > taken, POLICY_LIMIT_S,
             f"{deployed.id}: the enforced policy in the pod", 0.2)
    assert e2e.app_exec(cluster, deployed, watch, pod).stdout == "403"
    refused = json.loads(e2e.app_exec(cluster, deployed, watch.replace("-o /dev/null -w '%{http_code}'", ""),
                                      pod).stdout)
    assert 'podward policy rule "rules/default"' in refused["message"], refused
    assert e2e.app_exec(cluster, deployed, traffic(namespace, name), pod).stdout.split() == usual
    record_figures("policy-rollout", build, "real node", {
        "rules_learnt": len(policy["rules"]), "policy_bytes": len(policy_text),
        "learnt_from_audit_log": bool(audit_log)})
