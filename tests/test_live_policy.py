"""The policy as its own file, live: `kubectl apply` of the policy ConfigMap changes what podward allows within
seconds, without a restart, and a bad policy is refused while the last good one stays in force, logged with the
field at fault and counted.

The API server is the real one and the apply is kubectl's. No kubelet runs here, so a stand-in projects the
ConfigMap into the sidecar's policy volume as soon as the API server's watch reports the change
(harness.kubelet.ConfigMapVolume); a real kubelet adds its sync period (1 min by default) plus its cache's delay
on top. The times from the apply to enforcement are written to /tmp/podward-figures/policy.json."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from podward.constants import DEFAULT_POLICY, POLICY_CONFIGMAP, POLICY_KEY, SHIPPED_PLUGIN_CONFIG
from podward.pod import policy_configmap

from conftest import assert_status, request
from harness.figures import record_figures
from harness.kubelet import ConfigMapVolume
from podward.local.waiting import wait_for
from test_observability import metric

pytestmark = pytest.mark.envtest

# The fetch interval (refresh_interval_ms, 1 s) plus room for a loaded machine.
ENFORCED_WITHIN_S = 5


def policy_configmap_yaml(namespace: str, policy: dict | str) -> str:
    """The policy ConfigMap as a team writes it (policy_configmap), or with a raw `policy.json`."""
    configmap = policy_configmap(policy if isinstance(policy, dict) else None)
    if isinstance(policy, str):
        configmap["data"][POLICY_KEY] = policy
    configmap["metadata"]["namespace"] = namespace
    return json.dumps(configmap)


@pytest.fixture
def apply_policy(kube, tmp_path):
    """`kubectl apply --server-side -f -` of the namespace's policy ConfigMap, as the cluster admin (README's
    command); returns when kubectl did."""
    kubeconfig = kube.admin_kubeconfig(tmp_path / "kubeconfig")

    def apply(namespace: str, policy: dict | str) -> float:
        started = time.monotonic()
        result = subprocess.run([os.environ["KUBECTL"], "--kubeconfig", str(kubeconfig), "apply", "--server-side",
                                 "-f", "-"],
                                input=policy_configmap_yaml(namespace, policy), capture_output=True, text=True,
                                timeout=60, env={**os.environ, "HOME": str(tmp_path)})
        assert result.returncode == 0, result.stderr
        return started
    return apply


@pytest.fixture
def live_podward(real_pod, start_real_envoy, apply_policy):
    """The shipped configuration (the policy from its file) with the namespace's policy ConfigMap kept current in
    the sidecar's volume; the first policy is the shipped default."""
    apply_policy(real_pod.namespace, DEFAULT_POLICY)
    with ConfigMapVolume(real_pod.kube, real_pod.namespace, POLICY_CONFIGMAP, real_pod.policy_dir) as volume:
        wait_for(lambda: volume.written)
        envoy = start_real_envoy(real_pod, SHIPPED_PLUGIN_CONFIG)
        yield envoy, volume


def create_configmap(envoy, namespace: str, prefix: str):
    """A write through podward: a new ConfigMap named by the API server (generateName)."""
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": prefix}}).encode()
    return request(envoy, "POST", f"/api/v1/namespaces/{namespace}/configmaps", {"Content-Type": "application/json"},
                   body)


def until_refused(envoy, namespace: str, since: float) -> float:
    """Seconds from `since` until a write gets podward's read-only refusal, trying every 50 ms."""

    def refused() -> bool:
        answer = create_configmap(envoy, namespace, "attempt-")
        if answer.status == 403:
            assert "read-only/default" in assert_status(answer, 403, "Forbidden")["message"]
            return True
        assert answer.status == 201, answer.body
        return False

    wait_for(refused, ENFORCED_WITHIN_S - (time.monotonic() - since), "the read-only policy enforced")
    return time.monotonic() - since


def test_kubectl_apply_of_a_new_policy_is_enforced_within_seconds(live_podward, real_pod, apply_policy,
                                                                 podward_build):
    envoy, volume = live_podward
    namespace = real_pod.namespace
    process = envoy.process.pid
    seconds, projected = [], []
    for _ in range(3):
        assert create_configmap(envoy, namespace, "before-").status == 201
        applied_at = apply_policy(namespace, {"preset": "read-only"})
        seconds.append(until_refused(envoy, namespace, applied_at))
        projected.append(volume.written[-1][0] - applied_at)
        # Back to the default, for the next run: writes are allowed again, by the same process.
        apply_policy(namespace, DEFAULT_POLICY)
        wait_for(lambda: create_configmap(envoy, namespace, "after-").status == 201)
    assert envoy.process.pid == process and envoy.process.poll() is None
    wait_for(lambda: metric(envoy, "podward_policy_reloads_total{}") >= 7)  # the first, then two per run
    figures = {"apply_to_enforced_s": [round(s, 3) for s in seconds],
               "apply_to_volume_written_s": [round(s, 3) for s in projected]}
    record_figures("policy", podward_build, "apply", figures)
    assert max(seconds) < ENFORCED_WITHIN_S


def test_a_bad_policy_is_refused_and_the_last_good_one_stays(live_podward, real_pod, apply_policy):
    envoy, volume = live_podward
    namespace = real_pod.namespace
    apply_policy(namespace, {"preset": "read-only"})
    until_refused(envoy, namespace, time.monotonic())
    failures_before = metric(envoy, "podward_policy_reload_failures_total{}")
    # Valid JSON that the API server stores as any ConfigMap, but no policy: an unknown verb.
    bad = {"preset": "kubectl-proxy",
           "rules": [{"name": "fetch-all", "action": "allow", "verbs": ["fetch"], "nonResourceURLs": ["*"]}]}
    applied = len(volume.written)
    apply_policy(namespace, bad)
    wait_for(lambda: len(volume.written) > applied)
    wait_for(lambda: metric(envoy, "podward_policy_reload_failures_total{}") > failures_before)
    wait_for(lambda: "unknown verb" in envoy.log())
    [line] = [line for line in envoy.podward_log() if "could not use /policy/policy.json" in line]
    assert 'field `policy.rules[0].verbs`: unknown verb "fetch"' in line
    assert "the last good policy stays in force" in line
    # Still read-only, never none: reads served, writes refused.
    assert request(envoy, "GET", f"/api/v1/namespaces/{namespace}/configmaps").status == 200
    assert "read-only/default" in assert_status(create_configmap(envoy, namespace, "while-bad-"), 403,
                                                "Forbidden")["message"]
    # Not JSON at all: refused the same way.
    apply_policy(namespace, "{not json")
    wait_for(lambda: metric(envoy, "podward_policy_reload_failures_total{}") > failures_before + 1)
    assert create_configmap(envoy, namespace, "while-not-json-").status == 403
    # A good policy again is taken at once.
    applied_at = apply_policy(namespace, DEFAULT_POLICY)
    wait_for(lambda: create_configmap(envoy, namespace, "fixed-").status == 201,
             timeout=ENFORCED_WITHIN_S)
    assert time.monotonic() - applied_at < ENFORCED_WITHIN_S
    assert real_pod.token not in envoy.log()
