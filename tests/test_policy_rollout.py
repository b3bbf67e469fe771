"""README's "Rolling out a policy" against the real API server, for both builds: a pod's traffic through podward on
the default preset; a policy learnt from the API server's audit log and from the sidecar's access log (the same
policy); reviewed with README's commands (lint, replay: no request denied, explain: exec denied); applied live in
dry-run, where what it would deny reaches the API server (its audit log shows it) while the access record and
the counter name the rule; then enforced by deleting the `dryRun` line, after which the same request is refused.

README's commands are run as written, in a directory of the test's own with `dist` beside them, with the test's
namespace for `team-a`. The policy ConfigMap is applied as test_live_policy.py applies it, and projected into the
sidecar's volume by harness.kubelet.ConfigMapVolume (no kubelet runs here; test_e2e_rollout.py has a real one).
Figures (the learnt policy's size, what was replayed) go to /tmp/podward-figures/policy-rollout.json."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import assert_status, cluster_pod, request
from harness import readme
from podward.constants import DEFAULT_POLICY, POLICY_CONFIGMAP, REPO, SHIPPED_PLUGIN_CONFIG
from harness.figures import record_figures
from harness.kubelet import ConfigMapVolume
from harness.pod import ClusterPod
from test_live_policy import apply_policy  # noqa: F401  (the fixture)
from test_observability import metric, wait_for

pytestmark = pytest.mark.envtest

ROLLOUT = "## Rolling out a policy"
README_NAMESPACE = "team-a"
TOOL = REPO / "dist" / "podward-policy"
# What the policy file must say before and after step 5.
DRY_RUN_LINE = '"dryRun": true'


def block(index: int, expect: str) -> list:
    blocks = readme.blocks(ROLLOUT)
    assert expect in blocks[index], f"README {ROLLOUT!r} block {index} lacks {expect!r}"
    return readme.commands(blocks[index])


def run(line: str, namespace: str, workdir) -> subprocess.CompletedProcess:
    """A README command as a reader in `namespace` runs it, in `workdir`."""
    command = re.sub(rf"\b{README_NAMESPACE}\b", namespace, line)
    return subprocess.run(command, shell=True, cwd=workdir, capture_output=True, text=True, timeout=60)


@pytest.fixture
def web_pod(tmp_path, kube, namespace) -> ClusterPod:
    """README's `web`: ServiceAccount `web` (APP_RULES: pods, configmaps, services, deployments in its namespace)
    and its pod `web-0`, with a token bound to it."""
    return cluster_pod(tmp_path, kube, namespace, "web", "web-0")


@pytest.fixture
def workdir(tmp_path):
    """Where a team runs README's commands: `dist` is the build's."""
    directory = tmp_path / "team"
    directory.mkdir()
    (directory / "dist").symlink_to(REPO / "dist")
    return directory


def kubectl(envoy, home, *args) -> subprocess.CompletedProcess:
    """kubectl in the app, through the sidecar."""
    return subprocess.run([os.environ["KUBECTL"], "--server", envoy.url, *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "HOME": str(home)})


def app_traffic(envoy, namespace: str, home) -> dict:
    """The app's usual traffic: kubectl and plain HTTP through podward; what each got."""
    got = {
        "kubectl get pods": kubectl(envoy, home, "-n", namespace, "get", "pods", "-o", "name").returncode,
        "kubectl create configmap": kubectl(envoy, home, "-n", namespace, "create", "configmap", "settings",
                                            "--from-literal=a=1").returncode,
        "kubectl get configmap": kubectl(envoy, home, "-n", namespace, "get", "configmap", "settings",
                                         "-o", "json").returncode,
        "kubectl patch configmap": kubectl(envoy, home, "-n", namespace, "patch", "configmap", "settings",
                                           "-p", '{"data": {"a": "2"}}').returncode,
    }
    for method, path, body in [
        ("GET", f"/api/v1/namespaces/{namespace}/pods?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dweb-0",
         None),
        ("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
         b'{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}'),
        ("GET", "/version", None),
        ("GET", f"/api/v1/namespaces/{namespace}/secrets", None),  # RBAC refuses it; podward forwards it
        ("POST", f"/api/v1/namespaces/{namespace}/pods/web-0/exec?command=sh", None),  # podward refuses it
    ]:
        got[f"{method} {path}"] = request(envoy, method, path, {"Content-Type": "application/json"}, body).status
    return got


def access_log(envoy) -> str:
    """The sidecar's log as `kubectl logs -c podward` prints it: Envoy's lines and the JSON access log."""
    return envoy.log()


def reloaded(envoy, before: float) -> bool:
    return metric(envoy, "podward_policy_reloads_total{}") > before


def test_learn_review_dry_run_then_enforce(web_pod, kube, start_real_envoy, apply_policy, workdir, tmp_path,
                                           podward_build):
    namespace = web_pod.namespace
    apply_policy(namespace, DEFAULT_POLICY)
    with ConfigMapVolume(kube, namespace, POLICY_CONFIGMAP, web_pod.policy_dir) as volume:
        wait_for(lambda: volume.written)
        # The access log is flushed every 100 ms, not Envoy's 10 s, so that the test waits less for it.
        envoy = start_real_envoy(web_pod, SHIPPED_PLUGIN_CONFIG,
                                 extra_args=("--file-flush-interval-msec", "100"))
        home = tmp_path / "home"
        home.mkdir()
        first = app_traffic(envoy, namespace, home)
        assert first["kubectl get pods"] == 0 and first["kubectl patch configmap"] == 0, first
        assert first[f"POST /api/v1/namespaces/{namespace}/pods/web-0/exec?command=sh"] == 403
        assert first[f"GET /api/v1/namespaces/{namespace}/secrets"] == 403  # the API server's own
        wait_for(lambda: '"method":"PATCH"' in access_log(envoy) and "/secrets" in access_log(envoy), timeout=10)

        # 1. Learn, from the API server's audit log (README's second block), and from the access log.
        (workdir / "access.log").write_text(access_log(envoy))
        shutil.copy(kube.audit_log, workdir / "audit.log")
        [learn_from_audit] = block(1, "--service-account team-a:web audit.log")
        learnt = run(learn_from_audit, namespace, workdir)
        assert learnt.returncode == 0, learnt.stderr
        from_audit = (workdir / "policy.json").read_text()
        _, learn_from_access = block(0, "learn access.log > policy.json")
        learnt = run(learn_from_access, namespace, workdir)
        assert learnt.returncode == 0, learnt.stderr
        policy_text = (workdir / "policy.json").read_text()
        assert policy_text == from_audit, "the audit log and the access log tell the same traffic"
        assert DRY_RUN_LINE in policy_text and '"$self"' in policy_text
        assert "exec" not in policy_text and "secrets" in policy_text
        assert "not learnt: 1 requests podward refused when they were made (e.g. POST " in learnt.stderr, \
            learnt.stderr
        rules = json.loads(policy_text)["rules"]

        # 2. Review: lint clean, the traffic replayed with nothing denied, exec denied.
        lint, replay, explain = block(2, "replay policy.json access.log")
        for line, code, output in [(lint, 0, "0 warnings"), (replay, 0, ", 0 would be denied"),
                                   (explain, 1, "DENY  create pods/exec")]:
            done = run(line, namespace, workdir)
            assert (done.returncode, output in done.stdout) == (code, True), (line, done.stdout, done.stderr)
        replayed = json.loads(subprocess.run([str(TOOL), "replay", "policy.json", "audit.log", "--service-account",
                                              f"{namespace}:web", "-o", "json"], cwd=workdir, capture_output=True,
                                             text=True, timeout=60).stdout)
        assert (replayed["denied"], replayed["disagreements"], replayed["unclassifiable"]) == (0, [], [])
        # Everything the traffic did not use is denied, once enforced (in dry-run, kubectl-proxy decides).
        for method, path in [("DELETE", f"/api/v1/namespaces/{namespace}/configmaps/settings"),
                             ("GET", f"/api/v1/namespaces/{namespace}/configmaps"),
                             ("GET", f"/api/v1/namespaces/{namespace}/configmaps/other"),
                             ("POST", f"/api/v1/namespaces/{namespace}/pods"),
                             ("GET", f"/api/v1/namespaces/{namespace}/pods/web-0/log"),
                             ("POST", f"/api/v1/namespaces/{namespace}/pods/web-0/attach"),
                             ("GET", f"/api/v1/namespaces/{namespace}/pods/web-0/portforward"),
                             ("GET", "/api/v1/namespaces/kube-system/pods"),
                             ("GET", "/api/v1/nodes"), ("GET", "/healthz")]:
            done = subprocess.run([str(TOOL), "explain", "policy.json", method, path, "--pod-namespace", namespace,
                                   "-o", "json"], cwd=workdir, capture_output=True, text=True, timeout=60)
            answer = json.loads(done.stdout)
            assert answer["candidate"] == {"decision": "deny", "rule": "rules/default"}, (method, path, answer)

        # 3. In dry-run: the kubectl-proxy preset is enforced; what the policy would deny is forwarded, recorded.
        reloads = metric(envoy, "podward_policy_reloads_total{}")
        apply_policy(namespace, policy_text)
        wait_for(lambda: reloaded(envoy, reloads))
        dry_run_denied = 'podward_policy_dry_run_denied_total{rule="rules/default"}'
        assert metric(envoy, dry_run_denied) == 0, "declared at zero when the policy is taken"
        again = app_traffic(envoy, namespace, home)
        assert {k: v for k, v in again.items() if k != "kubectl create configmap"} == \
            {k: v for k, v in first.items() if k != "kubectl create configmap"}
        kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "scratch-1", "namespace": namespace}})
        since = time.time() - 1  # the audit log's times have microseconds; the clocks are one
        scratch = f"/api/v1/namespaces/{namespace}/configmaps/scratch-1"
        assert request(envoy, "DELETE", scratch).status == 200
        assert kube.admin("GET", scratch).status == 404, "it reached the API server"
        deleted = [event for event in kube.audit_events(since) if event["verb"] == "delete"
                   and event["user"]["username"] == f"system:serviceaccount:{namespace}:web"]
        assert [event["objectRef"]["name"] for event in deleted] == ["scratch-1"]
        envoy.settled_prometheus(lambda text: f"{dry_run_denied} 1" in text)
        assert metric(envoy, dry_run_denied) == 1, "the traffic learnt is not counted, the delete is"
        wait_for(lambda: "scratch-1" in access_log(envoy))
        [record] = [json.loads(entry["podward"]) for entry in map(json.loads, filter(
            lambda line: line.startswith("{") and "scratch-1" in line, access_log(envoy).splitlines()))]
        assert (record["decision"], record["rule"], record["dry_run"], record["dry_run_rule"], record["verb"]) == \
            ("forward", "kubectl-proxy/default", "deny", "rules/default", "delete")

        # 5. Enforced: README's edit deletes the line; the same request is refused and never reaches the API server.
        edit = block(5, "sed -i")[0]
        assert run(edit, namespace, workdir).returncode == 0
        enforced = (workdir / "policy.json").read_text()
        assert DRY_RUN_LINE not in enforced and json.loads(enforced)["rules"] == rules
        reloads = metric(envoy, "podward_policy_reloads_total{}")
        apply_policy(namespace, enforced)
        wait_for(lambda: reloaded(envoy, reloads))
        kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "scratch-2", "namespace": namespace}})
        refused = request(envoy, "DELETE", f"/api/v1/namespaces/{namespace}/configmaps/scratch-2")
        assert 'podward policy rule "rules/default"' in assert_status(refused, 403, "Forbidden")["message"]
        assert kube.admin("GET", f"/api/v1/namespaces/{namespace}/configmaps/scratch-2").status == 200
        after = app_traffic(envoy, namespace, home)
        assert {k: v for k, v in after.items() if k != "kubectl create configmap"} == \
            {k: v for k, v in first.items() if k != "kubectl create configmap"}, "the learnt traffic still works"
        envoy.settled_prometheus(lambda text: 'podward_policy_denied_total{rule="rules/default"} 1' in text)
        assert metric(envoy, 'podward_policy_denied_total{rule="rules/default"}') == 1
    record_figures("policy-rollout", podward_build, "envtest", {
        "rules_learnt": len(rules), "requests_replayed": replayed["replayed"],
        "refused_when_recorded": replayed["refused_when_recorded"], "would_be_denied": replayed["denied"],
        "policy_bytes": len(policy_text)})
