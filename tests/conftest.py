"""Fixtures for the integration tests: a PKI, the stand-in API server, a local
pod's volumes, and real Envoy processes running the built podward.wasm."""

from __future__ import annotations

import http.client
import json
import pathlib
import time

import pytest

from harness.apiserver import StandInApiServer
from harness.envoy import WASM, Envoy, local_settings
from harness.pki import make_pki
from harness.pod import LocalPod


def pytest_sessionstart(session):
    if not WASM.exists():
        raise pytest.UsageError(f"{WASM} is missing: run ./build.sh first (./build.sh test does)")


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="session")
def apiserver(pki):
    with StandInApiServer(certfile=pki.server_cert, keyfile=pki.server_key) as server:
        yield server


@pytest.fixture
def pod(tmp_path, pki, apiserver):
    """A pod whose current token the API server accepts."""
    pod = LocalPod(tmp_path / "pod", pki)
    apiserver.accept(pod.issue_token())
    apiserver.clear_requests()
    return pod


@pytest.fixture
def start_envoy(tmp_path, pki, apiserver):
    """Starts Envoy with podward for a pod; every Envoy started is stopped afterwards."""
    started = []

    def start(pod: LocalPod, plugin_config: dict | None = None, ca_file: str | None = None,
              concurrency: int = 1, extra_args: tuple = (), adjust=None, **settings) -> Envoy:
        envoy = Envoy(local_settings(pod, apiserver.port, ca_file or pki.ca_cert, plugin_config, **settings),
                      tmp_path / "envoy", env=pod.env, concurrency=concurrency, extra_args=extra_args,
                      adjust=adjust)
        started.append(envoy)
        return envoy.start()

    yield start
    for envoy in started:
        envoy.stop()


@pytest.fixture
def podward(pod, start_envoy):
    """Envoy with podward and the default configuration, in front of the stand-in."""
    return start_envoy(pod)


class Response:
    def __init__(self, status: int, headers, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def request(envoy: Envoy, method: str, path: str, headers: dict | None = None, body: bytes | None = None,
            timeout: float = 10) -> Response:
    """One plain-HTTP request to the sidecar, as the app would send it."""
    connection = http.client.HTTPConnection("127.0.0.1", envoy.settings.listen_port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Response(response.status, response.headers, response.read())
    finally:
        connection.close()


def served_again(envoy: Envoy, path: str = "/api/v1/namespaces/default/pods", timeout: float = 10) -> Response:
    """The first 200 after a flood: until Envoy has seen the flood's connections close, a new one may still
    be refused at the connection limit."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = request(envoy, "GET", path)
            if response.status == 200:
                return response
        except ConnectionResetError:
            pass
        assert time.monotonic() < deadline, f"the sidecar did not serve {path} again within {timeout}s"
        time.sleep(0.1)


def assert_status(response: Response, code: int, reason: str) -> dict:
    """The reply is a Kubernetes Status object, as kubectl and client-go expect."""
    assert response.status == code, response.body
    assert response.headers["content-type"] == "application/json"
    status = response.json()
    assert (status["kind"], status["apiVersion"], status["status"]) == ("Status", "v1", "Failure")
    assert (status["code"], status["reason"]) == (code, reason)
    assert status["message"]
    return status
