"""`podward-policy explain`, which runs the sidecar's own request path, decides as the sidecar did over the whole
attack catalogue (test_attacks.py).

Every attack of the catalogue is sent again through a real sidecar, under several policies (the default, the
catalogue's deny rules, the same in dry-run, a whole policy in dry-run), for both builds. For every request podward
judged (its access record: with `access_record: "all"`, or the refusals and dry-run denials otherwise), the
request as the access log shows it (method, path, `Host`) is handed to `dist/podward-policy explain`,
whose record must be the sidecar's, field for field: the decision, the rule, the reading of the request, the
dry-run rule. The stand-in API server only answers.

The core's policy decision tables run through the same command in tools/policy/tests/decision_tables.rs."""

from __future__ import annotations

import json
import subprocess

import pytest

import test_attacks as attacks
from podward.constants import REPO
from harness.flood import MADE_UP_PREFIX
from harness.h2c import h2c_requests

TOOL = REPO / "dist" / "podward-policy"
EXEC = attacks.EXEC

POLICIES = {
    "default": {"access_record": "all"},
    "top-secret": {"policy": attacks.DENY_TOP_SECRET["policy"], "access_record": "all"},
    "kube-system": {"policy": attacks.DENY_KUBE_SYSTEM["policy"], "access_record": "all"},
    # The same deny rules in dry-run, recorded although access_record is "refusals".
    "dry-run-rules": {"policy": {"preset": "kubectl-proxy", "rules": [
        {**rule, "dryRun": True} for rule in attacks.DENY_TOP_SECRET["policy"]["rules"]
        + attacks.DENY_KUBE_SYSTEM["policy"]["rules"]]}},
    "dry-run-policy": {"access_record": "all", "policy": {"dryRun": True, "default_action": "deny", "rules": [
        {"name": "read-own-pods", "action": "allow", "verbs": ["get", "list"], "apiGroups": [""],
         "resources": ["pods"], "namespaces": ["$self"]},
        {"name": "discovery", "action": "allow", "verbs": ["get"], "nonResourceURLs": ["/api", "/apis", "/version"]}]}},
}


def parametrized(test) -> list:
    """The values a catalogue test is parametrized with, as tuples."""
    [mark] = [mark for mark in test.pytestmark if mark.name == "parametrize"]
    values = [value.values if hasattr(value, "marks") else value for value in mark.args[1]]  # pytest.param
    return [tuple(value) if isinstance(value, tuple) else (value,) for value in values]


def catalogue() -> list:
    """Every attack of test_attacks.py that sends requests on the app's port: (raw bytes, answers expected)."""
    sent = [(attacks.http1("POST", path), 1) for path in attacks.PATH_TRICKS]
    sent += [(data, 1) for data, _, _ in attacks.ENVOY_REFUSALS.values()]
    sent += [(data, len(codes)) for _, data, codes, _ in parametrized(attacks.test_smuggling)]
    sent += [(data, 1) for _, data, _ in parametrized(attacks.test_host_trick)]
    sent += [(attacks.http1(method, path, headers), 1)
             for method, path, headers in parametrized(attacks.test_exec_equivalent_is_denied_by_default)]
    sent += [(attacks.http1(method, path), 1) for _, method, path, _ in parametrized(attacks.test_list_around_a_deny_rule)]
    sent += [(b"GET /api HTTP/1.1\r\nHost: localhost\r\n" + header + b": " + value + b"\r\n\r\n", 1)
             for header, value in attacks.RAW_VALUES.values()]
    sent += [(attacks.http1(method, endpoint), 1)
             for endpoint in attacks.ADMIN_ENDPOINTS + attacks.MORE_HARM for method in ("GET", "POST")]
    for test in (attacks.test_impersonation_is_stripped, attacks.test_the_api_server_only_ever_sees_the_pods_service_account,
                 attacks.test_retry_and_timeout_headers_are_not_obeyed):
        sent += [(attacks.http1("GET", "/api/v1/namespaces/default/secrets", headers), 1)
                 for (headers,) in parametrized(test)]
    sent += [(attacks.http1("GET", "/api", {"X-Envoy-Original-Path": "/x", "X-Pod-Name": "kube-apiserver"}), 1),
             (attacks.http1("POST", EXEC, {"X-Envoy-Original-Path": "/healthz"}), 1)]
    sent += [(attacks.http1("GET", f"{MADE_UP_PREFIX}{n}"), 1) for n in range(3)]
    return sent


_explained: dict = {}


def explain(policy: dict, method: str, path: str, authority: str) -> dict:
    """`podward-policy explain` of one request, as JSON; the same question is asked once for both builds."""
    key = (json.dumps(policy, sort_keys=True), method, path, authority)
    if key not in _explained:
        command = [str(TOOL), "explain", "-", method, path, "--host", authority,
                   "--pod-namespace", "default", "-o", "json"]
        done = subprocess.run(command, input=json.dumps(policy), capture_output=True, text=True, timeout=30)
        assert done.returncode in (0, 1), done.stderr
        answer = json.loads(done.stdout)
        assert done.returncode == (0 if answer["decision"] == "allow" else 1)
        _explained[key] = answer
    return _explained[key]


def logged(value) -> str | None:
    """An access log field: Envoy writes a missing header as null or "-"."""
    return None if value in (None, "-", "") else value


def judged_lines(envoy) -> list:
    """(access log line, podward's record) for every request podward judged."""
    lines = []
    for line in envoy.log().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if logged(entry.get("podward")):
                lines.append((entry, json.loads(entry["podward"])))
    return lines


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_explain_decides_the_attack_catalogue_as_the_sidecar_did(pod, start_envoy, apiserver, name):
    plugin_config = POLICIES[name]
    policy = plugin_config.get("policy", {"preset": "kubectl-proxy"})
    envoy = start_envoy(pod, plugin_config)
    for data, answers in catalogue():
        # Its answers, or two seconds' silence (a watch the stand-in holds open), end an attack.
        attacks.exchange(envoy.settings.listen_port, data, answers, timeout=2)
    assert h2c_requests(envoy.settings.listen_port, [("GET", "/api"), ("POST", EXEC)])[1] == 403
    envoy.stop()
    assert envoy.process.returncode == 0, "the catalogue stopped the sidecar"

    judged = judged_lines(envoy)
    differences, decisions = [], set()
    for entry, record in judged:
        path = logged(entry["path"]) or "-"
        answer = explain(policy, entry["method"], path, entry["authority"] or "")
        decisions.add(record["decision"] + (" dry_run" if "dry_run" in record else ""))
        if answer["record"] != record:
            differences.append((entry["method"], path, entry["authority"], record, answer["record"]))
        # What the sidecar did with it agrees too: forwarded (reached the stand-in) or answered itself.
        refused = record["decision"] != "forward"
        assert (answer["decision"] == "deny") == refused, (entry, answer)
    assert differences == [], "\n".join(map(str, differences))
    expected = {"default": {"forward", "policy_denied", "unclassifiable", "host_not_accepted"},
                "top-secret": {"forward", "policy_denied"}, "kube-system": {"forward", "policy_denied"},
                "dry-run-rules": {"forward dry_run", "policy_denied"},
                "dry-run-policy": {"forward", "forward dry_run", "policy_denied"}}[name]
    assert expected <= decisions, decisions
    assert len(judged) >= (20 if name == "dry-run-rules" else 100), len(judged)
