"""The kubelet's own token rotation, once per build, on a real cluster ($KUBECONFIG): a pod injected with a
600 s projected token (README's tokenExpirationSeconds parameter) whose app sends a request through podward
every second. The kubelet renews the token at 80 % of its life (~480 s); the pods start with the session
(conftest: token_rotation_pods) and this test runs last, so the wait overlaps the rest of the suite.

It shows, from the API server's own answers to the app (a SelfSubjectReview names the token's JTI) and from
its audit log ($PODWARD_E2E_AUDIT_LOG, which tests/node/up provides), that the token podward sends changed
while not one request failed."""

from __future__ import annotations

import json
import os

import pytest

from harness import e2e
from harness.cluster import pod_ready
from podward.local.waiting import wait_for
from harness.envtest import credential_id, received_at
from harness.figures import record_figures

pytestmark = [pytest.mark.node, pytest.mark.last]

AUDIT_LOG_VARIABLE = "PODWARD_E2E_AUDIT_LOG"
# The kubelet renews at 80 % of 600 s; its pod sync and the first token's issue add seconds.
RENEWAL_BOUND_S = 600


def loop_lines(cluster, pod: e2e.RotationPod) -> list:
    """(epoch second, HTTP status, JTI) of each request the app sent."""
    logs = cluster.kubectl("logs", "-n", pod.namespace, pod.name, "-c", "main").stdout
    return [(int(line.split()[0]), line.split()[1], (line.split() + [""])[2].removeprefix("JTI="))
            for line in logs.splitlines() if line.strip()]


def audit_events(path: str, username: str) -> list:
    with open(path) as log:
        events = [json.loads(line) for line in log]
    return sorted((event for event in events if event["user"]["username"] == username
                   and event["stage"] == "ResponseComplete"), key=received_at)


@pytest.mark.parametrize("build", e2e.BUILDS)
def test_the_kubelet_rotates_the_token_under_a_request_loop(cluster, token_rotation_pods, build):
    [pod] = [p for p in token_rotation_pods if p.build == build]

    def ready():
        found = cluster.get("pod", pod.name, namespace=pod.namespace)
        return found if pod_ready(found) else None
    stored = wait_for(ready, e2e.READY_TIMEOUT_S, f"{build}: the rotation pod Ready")
    [token] = [source["serviceAccountToken"] for volume in stored["spec"]["volumes"]
               if volume["name"] == "service-account"
               for source in volume["projected"]["sources"] if "serviceAccountToken" in source]
    assert token["expirationSeconds"] == e2e.ROTATION_TOKEN_SECONDS

    def rotated():
        lines = loop_lines(cluster, pod)
        return lines if len({jti for _, _, jti in lines if jti}) >= 2 else None
    remaining = pod.created + RENEWAL_BOUND_S + 60 - e2e.now()
    lines = wait_for(rotated, max(remaining, 30), f"{build}: the token's JTI changing in the app's answers",
                     interval=5)

    failed = [line for line in lines if line[1] != "201"]
    assert not failed, f"requests failed across the rotation: {failed[:5]}"
    jtis = list(dict.fromkeys(jti for _, _, jti in lines))
    first_new = next(second for second, _, jti in lines if jti == jtis[1])
    assert all(jti == jtis[0] for second, _, jti in lines if second < first_new)  # one switch, not a flap
    switch_after_s = first_new - pod.created
    assert switch_after_s < RENEWAL_BOUND_S + 60

    audit_log = os.environ.get(AUDIT_LOG_VARIABLE)
    if not audit_log:
        assert os.environ.get("PODWARD_REQUIRE_NODE") != "1", f"PODWARD_REQUIRE_NODE=1 needs ${AUDIT_LOG_VARIABLE}"
    else:
        events = audit_events(audit_log, f"system:serviceaccount:{pod.namespace}:default")
        assert [credential_id(event) for event in events if received_at(event) < first_new - 1][-1] == jtis[0]
        assert jtis[1] in {credential_id(event) for event in events}
        assert all(event["responseStatus"]["code"] == 201 for event in events), "the API server refused a request"
    record_figures("e2e", build, "token rotation", {
        "token_expiration_s": e2e.ROTATION_TOKEN_SECONDS, "renewed_after_s": round(switch_after_s),
        "requests": len(lines), "failed": len(failed), "tokens_seen": len(jtis),
        "audit_log": bool(audit_log)})
