"""What a panic in podward does, in each build (issue 10, issue 14).

The shipped builds never panic on purpose, so these tests load separately built ones (cargo feature
`crash-drill`, built by ./build.sh test into dist/test/, never shipped) that panic on a request carrying
`x-podward-crash-drill`.

  * wasm: the VM traps; Envoy's FAIL_RELOAD answers 503 and builds a new VM, which knows nothing of the
    requests the old one was holding for the token. Envoy's `request_timeout` (podward/bootstrap.py: startup_wait_ms
    + 1 s) answers those: no request waits longer than startup_wait_ms plus a second.
  * native: there is no VM to lose. Each hook contains a panic (catch_unwind); the request is answered 503,
    never forwarded, and Envoy goes on serving."""

from __future__ import annotations

import threading
import time

import pytest

from podward.constants import REPO

from conftest import assert_status, held_requests, request, served_again
from podward.local.waiting import wait_for

CRASH_DRILL = REPO / "dist" / "test" / "podward-crash-drill.wasm"
NATIVE_CRASH_DRILL = REPO / "dist" / "test" / "libpodward-crash-drill.so"
WAIT_MS = 2000
# What Envoy's timer and a loaded machine may add to the bound.
SLACK_S = 0.5


@pytest.mark.wasm_only
def test_a_vm_reload_during_a_burst_leaves_no_request_waiting(pod, start_envoy, apiserver):
    assert CRASH_DRILL.exists(), f"{CRASH_DRILL} is missing: ./build.sh test builds it"
    pod.write_service_account(None)  # every request waits for the token
    envoy = start_envoy(pod, {"startup_wait_ms": WAIT_MS}, wasm_path=str(CRASH_DRILL))
    answers = []

    def waiting_request():
        started = time.monotonic()
        response = request(envoy, "GET", "/api/v1/namespaces/default/pods", timeout=30)
        answers.append((response, time.monotonic() - started))

    burst = [threading.Thread(target=waiting_request) for _ in range(12)]
    for thread in burst:
        thread.start()
    # The whole burst waits for the token in the VM that is about to crash.
    wait_for(lambda: held_requests(envoy) == len(burst), what="podward holding the whole burst")
    crash = request(envoy, "GET", "/api", headers={"x-podward-crash-drill": "now"})
    assert_status(crash, 503, "ServiceUnavailable")
    for thread in burst:
        thread.join(timeout=30)

    # A panic in the module traps (no std: the panic handler is wasm's `unreachable`).
    assert "Uncaught RuntimeError: unreachable" in envoy.log(), "the VM did not trap: the test proved nothing"
    assert len(answers) == len(burst)
    bound = WAIT_MS / 1000 + 1 + SLACK_S
    print(f"\nheld requests answered after {min(s for _, s in answers):.2f}-{max(s for _, s in answers):.2f}s "
          f"(startup_wait_ms {WAIT_MS})")
    for response, seconds in answers:
        assert seconds < bound, f"a request waited {seconds:.2f}s, past startup_wait_ms + 1 s"
        assert response.status in (503, 504), response.body[:300]
        assert response.json()["kind"] == "Status"
    assert apiserver.requests == [], "nothing may be forwarded without the token"

    # The rebuilt VM serves once the token is there.
    apiserver.accept(pod.issue_token())
    served_again(envoy)
    assert apiserver.requests[-1].token == pod.token


@pytest.mark.native_only
def test_a_panic_in_the_native_module_is_answered_503_and_envoy_serves_on(pod, start_envoy, apiserver):
    assert NATIVE_CRASH_DRILL.exists(), f"{NATIVE_CRASH_DRILL} is missing: ./build.sh test builds it"
    envoy = start_envoy(pod, native_path=str(NATIVE_CRASH_DRILL))
    assert request(envoy, "GET", "/api/v1/namespaces/default/pods").status == 200
    apiserver.clear_requests()
    for _ in range(3):
        crash = request(envoy, "GET", "/api/v1/namespaces/default/pods", headers={"x-podward-crash-drill": "now"})
        assert "failed on this request" in assert_status(crash, 503, "ServiceUnavailable")["message"]
    assert apiserver.requests == [], "a request whose hook panicked must not be forwarded"
    assert "podward panicked" in envoy.log() and "crash drill" in envoy.log()
    assert envoy.process.poll() is None, "Envoy must survive"
    served = request(envoy, "GET", "/api/v1/namespaces/default/pods")
    assert served.status == 200 and apiserver.requests[-1].token == pod.token
