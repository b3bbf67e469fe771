"""The attack catalogue, as a crowd: 2,000 requests held at once while the sidecar starts (before it has its
token) and released together, into the API server, into refusals, or given up at `startup_wait_ms`.

Each request gets its own answer, the wasm VM is never rebuilt, the engine counts every request, and a
legitimate client is served meanwhile. On main (issue 20, finding 3) the wasm build answered every held request
from one VM callback; Envoy carries out a callback's replies after it returns, each stream's end
(`proxy_on_log`) running the next reply from inside it, so the VM calls nested one per request and V8's stack
overflowed at ~290: `proxy_on_log failed: Uncaught RangeError: Maximum call stack size exceeded`, the VM was
rebuilt, and the rest got `503`. The engine now wakes them a batch per tick (`engine::WAKE_BATCH`).
"""

from __future__ import annotations

import collections
import re
import threading
import time

import pytest

from conftest import request, served_again
from harness.crowd import Crowd
from podward.bootstrap import MAX_API_CONNECTIONS
from podward.constants import STARTUP_WAIT_MS
from podward.local.waiting import wait_for
from harness.figures import record_figures
from podward.local.kubelet import LocalPod

CROWD = 2000
PODS = "/api/v1/namespaces/default/pods"
EXEC = "/api/v1/namespaces/default/pods/demo-0/exec"
# What each kind of request sends, and the answer it must get.
KINDS = {
    "forwarded": ("GET", PODS),
    "denied": ("POST", EXEC),
    "foreign-host": ("GET", PODS, "evil.example"),
    "given-up": ("GET", PODS),
}
MIXES = {
    "forwarded": ["forwarded"],
    "denied": ["denied"],
    "given-up": ["given-up"],
    "mixed": ["forwarded", "denied", "foreign-host"],
}
VM_CRASH = ("Maximum call stack size exceeded", "proxy_on_log failed", "wasm_fail_stream", "panicked at")


def vm_lifecycle(envoy) -> dict:
    """Envoy's counts of V8 VMs made, and of FAIL_RELOAD's reloads (and their backoffs) of podward's VM."""
    return {name: value for name, value in envoy.stats().items()
            if name == "wasm.envoy.wasm.runtime.v8.created" or name.startswith("wasm.podward.vm_reload")}

POOL_FULL = f"{MAX_API_CONNECTIONS} at once"


def is_status(answer, code: int, reason: str, message: str) -> bool:
    status = answer.status_object()
    return (answer.status == code and status is not None and (status["code"], status["reason"]) == (code, reason)
            and message in status["message"])


def pool_full(answer) -> bool:
    """Envoy's answer past the API connection pool: nothing forwarded, retry after a second (as client-go does)."""
    return is_status(answer, 503, "ServiceUnavailable", POOL_FULL) and answer.headers.get("retry-after") == "1"


def rightly_answered(kind: str, answer) -> bool:
    if kind == "forwarded":
        return answer.status == 200 or pool_full(answer)
    if kind == "denied":
        return is_status(answer, 403, "Forbidden", "forbidden: podward policy rule")
    if kind == "foreign-host":
        return is_status(answer, 403, "Forbidden", "evil.example")
    return (is_status(answer, 503, "ServiceUnavailable", "podward has no service-account token to send")
            and answer.headers.get("retry-after") == "1")


def counted(text: str, name: str, **labels) -> float:
    """The sum of a podward metric's series that carry `labels`."""
    total = 0.0
    for series, value in re.findall(rf"^{name}\{{(.*?)\}} (\S+)$", text, re.MULTILINE):
        found = dict(re.findall(r'(\w+)="(.*?)"', series))
        if all(found.get(key) == value_ for key, value_ in labels.items()):
            total += float(value)
    return total


class LegitimateClient(threading.Thread):
    """The app's own requests, one after another, for as long as the crowd is being answered."""

    def __init__(self, envoy):
        super().__init__(daemon=True)
        self.envoy, self.answers, self.stop = envoy, [], threading.Event()

    def run(self):
        while not self.stop.is_set() or not self.answers:
            self.answers.append(request(self.envoy, "GET", PODS, timeout=15))

    def finish(self) -> list:
        self.stop.set()
        self.join(timeout=30)
        return self.answers


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_a_crowd_held_at_start_is_answered_without_restarting_the_vm(start_envoy, apiserver, pki, tmp_path,
                                                                     podward_build, mix):
    pod = LocalPod(tmp_path / "pod", pki)
    pod.write_service_account(None)  # the sidecar starts before the kubelet has written the token
    apiserver.clear_requests()
    envoy = start_envoy(pod)
    vms = vm_lifecycle(envoy)
    kinds = [MIXES[mix][n % len(MIXES[mix])] for n in range(CROWD)]
    started = time.monotonic()
    crowd = Crowd(envoy.settings.listen_port, [KINDS[kind] for kind in kinds])
    wait_for(lambda: envoy.stats()["http.podward.downstream_rq_active"] >= CROWD, 30, "the crowd held")
    held_s = time.monotonic() - started
    legitimate = None
    if mix != "given-up":
        apiserver.accept(pod.issue_token())
        legitimate = LegitimateClient(envoy)
        legitimate.start()
    answers = crowd.answers(timeout=STARTUP_WAIT_MS / 1000 + 20)
    answered_s = time.monotonic() - started
    legitimate_answers = legitimate.finish() if legitimate else []

    wrong = [(kind, answer.status, answer.body[:200]) for kind, answer in zip(kinds, answers)
             if not rightly_answered(kind, answer)]
    assert wrong == [], collections.Counter(wrong).most_common(5)
    # The legitimate client, released with the crowd, is served; only the API pool may turn it away.
    assert legitimate_answers or mix == "given-up"
    assert all(a.status == 200 or (mix != "denied" and pool_full_response(a)) for a in legitimate_answers), \
        collections.Counter((a.status, a.body[:150]) for a in legitimate_answers)

    # Those the pool turned away were not forwarded; asked again, as client-go asks, they are served. A hundred
    # at a time, which the pool holds: an app retrying thousands at once would be turned away again.
    refused = sum(1 for kind, answer in zip(kinds, answers) if kind == "forwarded" and answer.status != 200)
    for first in range(0, refused, 100):
        again = Crowd(envoy.settings.listen_port, [KINDS["forwarded"]] * min(100, refused - first)).answers(timeout=20)
        unexpected = [(a.status, a.body[:200]) for a in again if a.status != 200]
        assert unexpected == [], collections.Counter(unexpected).most_common(3)
    if mix == "given-up":
        apiserver.accept(pod.issue_token())
        served_again(envoy)
    # What reached the API server: one request per 200, each with the pod's token; no exec.
    served = [r for r in apiserver.requests if r.path == PODS]
    assert all(r.token == pod.token for r in apiserver.requests)
    assert [r.path for r in apiserver.requests if r.path != PODS] == []

    # The engine counted every request of the crowd.
    expected = collections.Counter(kinds)
    text = envoy.settled_prometheus(
        lambda text: counted(text, "podward_requests_total", verb="list", code="2xx") >= len(served))
    assert counted(text, "podward_requests_total", verb="list", resource="pods", code="2xx") == len(served)
    assert counted(text, "podward_local_replies_total", reason="policy_denied") == expected["denied"]
    assert counted(text, "podward_local_replies_total", reason="host_not_accepted") == expected["foreign-host"]
    assert counted(text, "podward_local_replies_total", reason="no_token") == expected["given-up"]
    assert counted(text, "podward_requests_total", verb="create", resource="pods/exec", code="4xx") == \
        expected["denied"]
    # No VM was reloaded (Envoy reloads a failed one at a later request: the retries and the legitimate
    # client's have come since).
    log = envoy.log()
    assert [line for line in log.splitlines() if any(sign in line for sign in VM_CRASH)] == []
    assert vm_lifecycle(envoy) == vms, "the wasm VM was reloaded"
    assert envoy.process.poll() is None
    record_figures("crowd", podward_build, mix, {
        "held": CROWD, "held_in_s": round(held_s, 2), "answered_in_s": round(answered_s, 2),
        "answers": dict(collections.Counter(str(a.status) for a in answers)),
        "legitimate_client": dict(collections.Counter(str(a.status) for a in legitimate_answers)),
        "refused_at_the_pool_and_asked_again": refused})


def pool_full_response(response) -> bool:
    """pool_full, for an http.client answer."""
    body = response.json() if response.headers.get("content-type") == "application/json" else {}
    return (response.status == 503 and POOL_FULL in body.get("message", "")
            and response.headers.get("retry-after") == "1")
