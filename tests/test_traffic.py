"""Real API traffic through podward (issue #4): many long watches, a 20 MB list, every kind of write,
exec/attach/port-forward upgrades over WebSocket and SPDY, and the app speaking HTTP/1.1 or h2c.

Clients are real where it matters: kubectl 1.20 (SPDY for exec and port-forward), the Python kubernetes
client (WebSocket for exec, attach and port-forward), curl for h2c, raw sockets for watches. Figures
(latency, memory) are printed (pytest -s) and written to /tmp/podward-figures/traffic.json.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import os
import pathlib
import queue
import random
import re
import shutil
import socket
import statistics
import subprocess
import threading
import time
import urllib.parse

import pytest
import websocket  # websocket-client, which the kubernetes client depends on
from kubernetes import client, watch
from kubernetes.stream import portforward, stream

from conftest import assert_status, request
from harness.apiserver import SENT_AT_ANNOTATION, TICK_ANNOTATION
from harness.flood import PeakRss, rss_bytes
from harness.remotecommand import PORT_FORWARD_SPDY, V4_CHANNEL, V5_CHANNEL

FIGURES = pathlib.Path("/tmp/podward-figures/traffic.json")
OWN_NAMESPACE = {"policy": {"preset": "own-namespace"}}
MAX_EVENT_DELAY_S = 0.1


# --- Helpers ---------------------------------------------------------------------------------------------

def wait_until(condition, what: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return value


def in_flight(envoy) -> tuple:
    """Requests in flight from the app and towards the API server, and upgraded connections."""
    stats = envoy.stats()
    return (stats["http.podward.downstream_rq_active"], stats["cluster.kubernetes.upstream_rq_active"],
            stats["http.podward.downstream_cx_upgrades_active"])


def wait_for_envoy_to_drop_every_stream(envoy):
    wait_until(lambda: in_flight(envoy) == (0, 0, 0), "Envoy's active request and upgrade gauges to fall to 0")


def watchers_of(apiserver, name: str) -> int:
    with apiserver.store.lock:
        return sum(1 for subscription in apiserver.store.subscriptions if subscription.name == name)


def event_delay_s(event: dict) -> float:
    """How long ago the stand-in wrote this event (its SENT_AT stamp)."""
    return time.time() - float(event["object"]["metadata"]["annotations"][SENT_AT_ANNOTATION])


def latency_figures(delays_s: list) -> dict:
    cuts = statistics.quantiles(delays_s, n=100, method="inclusive")
    return {"samples": len(delays_s), "p50_ms": round(cuts[49] * 1000, 2), "p99_ms": round(cuts[98] * 1000, 2),
            "max_ms": round(max(delays_s) * 1000, 2)}


def record_figures(section: str, figures: dict):
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    recorded = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    recorded[section] = figures
    FIGURES.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    print(f"\n[{section}] {json.dumps(figures)}")


def upstream(apiserver, method: str, path_fragment: str):
    """The one request the stand-in received with this method and path fragment."""
    matches = [r for r in apiserver.requests if r.method == method and path_fragment in r.path]
    assert len(matches) == 1, [(r.method, r.path) for r in apiserver.requests]
    return matches[0]


def the_session(apiserver, kind: str):
    sessions = [s for s in apiserver.sessions if s.kind == kind]
    assert len(sessions) == 1, apiserver.sessions
    return sessions[0]


@contextlib.contextmanager
def ticking(apiserver, name: str, interval: float):
    """The stand-in modifies ConfigMap `name` every `interval` seconds, stamping each event it sends."""
    stop = apiserver.start_ticker(interval, name=name)
    try:
        yield
    finally:
        stop()


class LineReader:
    """Lines from a child's stdout with a deadline each, so a stuck client fails the test instead of hanging it."""

    def __init__(self, process: subprocess.Popen):
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(process.stdout,), daemon=True).start()

    def _pump(self, pipe):
        for line in pipe:
            self.lines.put(line)
        self.lines.put(None)

    def next(self, timeout: float = 10) -> bytes | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout}s") from None


class Kubectl:
    """kubectl pointed at the sidecar with --server, as an app container would use it."""

    def __init__(self, binary: str, home: pathlib.Path):
        self.binary, self.env = binary, {**os.environ, "HOME": str(home)}

    def command(self, envoy, *args) -> list:
        return [self.binary, "--server", envoy.url, "--namespace", "default", *args]

    def run(self, envoy, *args, stdin: bytes = b"", timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(envoy, *args), input=stdin, capture_output=True, timeout=timeout,
                              env=self.env)

    def start(self, envoy, *args) -> subprocess.Popen:
        return subprocess.Popen(self.command(envoy, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=self.env)


@pytest.fixture
def kubectl(tmp_path):
    binary = os.environ.get("KUBECTL") or shutil.which("kubectl")
    assert binary and os.access(binary, os.X_OK), "kubectl is needed: set KUBECTL (./build.sh test does)"
    home = tmp_path / "home"
    home.mkdir()
    return Kubectl(binary, home)


@pytest.fixture
def interactive(pod, start_envoy):
    """podward with a policy that allows exec and attach in the pod's own namespace."""
    return start_envoy(pod, OWN_NAMESPACE)


def python_client(envoy) -> client.ApiClient:
    """The Python kubernetes client with the sidecar as its server and no credentials of its own."""
    configuration = client.Configuration()
    configuration.host = envoy.url
    return client.ApiClient(configuration)


def stop_process(process: subprocess.Popen):
    process.terminate()
    process.wait(timeout=10)


# --- Watches ---------------------------------------------------------------------------------------------

class Http1Watch:
    """A watch on its own HTTP/1.1 connection, read as a plain app would: the chunked body decoded by hand,
    so the terminating chunk is seen for what it is."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.body = b""

    @classmethod
    async def open(cls, port: int, path: str) -> "Http1Watch":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        watch_ = cls(reader, writer)
        await watch_.send("GET", path)
        status, headers = await watch_.read_head()
        assert status == 200 and headers.get("transfer-encoding") == "chunked", (status, headers)
        return watch_

    async def send(self, method: str, path: str):
        self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n".encode())
        await self.writer.drain()

    async def read_head(self) -> tuple:
        status_line, *lines = (await self.reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        headers = dict((k.strip().lower(), v.strip()) for k, v in (line.split(":", 1) for line in lines if line))
        return int(status_line.split()[1]), headers

    async def next_event(self) -> dict | None:
        """The next event, or None at the terminating chunk."""
        while b"\n" not in self.body:
            size = int((await self.reader.readline()).split(b";")[0], 16)
            if size == 0:
                assert await self.reader.readline() == b"\r\n" and self.body == b""
                return None
            self.body += (await self.reader.readexactly(size + 2))[:-2]
        line, self.body = self.body.split(b"\n", 1)
        return json.loads(line)

    async def reuse_for(self, path: str) -> int:
        """After a response that ended cleanly, the same connection serves the next request."""
        await self.send("GET", path)
        status, headers = await self.read_head()
        await self.reader.readexactly(int(headers["content-length"]))
        return status

    def close(self):
        self.writer.close()


async def ticks_until(watch_: Http1Watch, until: float) -> list:
    """(tick number, delay) of each MODIFIED event until the monotonic deadline."""
    received = []
    while (remaining := until - time.monotonic()) > 0:
        try:
            event = await asyncio.wait_for(watch_.next_event(), remaining)
        except asyncio.TimeoutError:
            break
        assert event is not None, "the watch ended early"
        if event["type"] == "MODIFIED":
            received.append((int(event["object"]["metadata"]["annotations"][TICK_ANNOTATION]), event_delay_s(event)))
    return received


def ticker_watch_path(name: str, extra: str = "") -> str:
    return f"/api/v1/namespaces/default/configmaps?watch=1&fieldSelector=metadata.name%3D{name}{extra}"


WATCHES = 50
WATCH_SECONDS = 61
TICK_SECONDS = 0.5


def test_fifty_watches_get_every_event_promptly_for_a_minute_then_close_cleanly(podward, apiserver):
    ticker = "traffic-ticker"
    port = podward.settings.listen_port

    async def hold_watches():
        watches = await asyncio.gather(*(Http1Watch.open(port, ticker_watch_path(ticker)) for _ in range(WATCHES)))
        opened = time.monotonic()
        # All open at once, end to end: in Envoy on both sides and at the API server.
        gauges = await asyncio.to_thread(in_flight, podward)
        subscribed = watchers_of(apiserver, ticker)
        per_watch = await asyncio.gather(*(ticks_until(w, opened + WATCH_SECONDS) for w in watches))
        held = time.monotonic() - opened
        for w in watches:
            w.close()
        return gauges, subscribed, per_watch, held

    with ticking(apiserver, ticker, TICK_SECONDS):
        gauges, subscribed, per_watch, held = asyncio.run(hold_watches())

    assert gauges == (WATCHES, WATCHES, 0) and subscribed == WATCHES
    ticks = [[tick for tick, _ in received] for received in per_watch]
    for each in ticks:
        # 10 % slack: the ticker's period stretches a little under load.
        assert len(each) >= 0.9 * WATCH_SECONDS / TICK_SECONDS, f"a watch got only {len(each)} events"
        assert each == list(range(each[0], each[0] + len(each))), "a watch missed or reordered events"
    # All watches saw the same events, give or take one at either end of the minute.
    assert max(each[0] for each in ticks) - min(each[0] for each in ticks) <= 1
    assert max(each[-1] for each in ticks) - min(each[-1] for each in ticks) <= 1
    delays = [delay for received in per_watch for _, delay in received]
    figures = {"watches": WATCHES, "held_s": round(held, 1), "tick_s": TICK_SECONDS, **latency_figures(delays)}
    record_figures("watches_http1", figures)
    assert max(delays) < MAX_EVENT_DELAY_S, figures

    # The app hung up: Envoy lets go of both sides and the API server sees every watch end.
    wait_for_envoy_to_drop_every_stream(podward)
    wait_until(lambda: watchers_of(apiserver, ticker) == 0, "the stand-in to see the watches end")


def test_watches_the_server_ends_get_the_terminating_chunk_and_stay_usable(podward, apiserver):
    ticker = "ending-ticker"
    port = podward.settings.listen_port

    async def until_the_server_ends_them():
        watches = [await Http1Watch.open(port, ticker_watch_path(ticker, "&timeoutSeconds=2")) for _ in range(3)]
        started = time.monotonic()
        for w in watches:
            while await asyncio.wait_for(w.next_event(), 10) is not None:
                pass
        ended_after = time.monotonic() - started
        statuses = [await w.reuse_for("/version") for w in watches]
        for w in watches:
            w.close()
        return ended_after, statuses

    with ticking(apiserver, ticker, 0.2):
        ended_after, statuses = asyncio.run(until_the_server_ends_them())
    assert 1.5 < ended_after < 5
    assert statuses == [200, 200, 200]  # the responses ended as HTTP says, not by a dropped connection
    wait_for_envoy_to_drop_every_stream(podward)
    wait_until(lambda: watchers_of(apiserver, ticker) == 0, "the stand-in to end the watches")


def test_the_python_client_lists_and_watches_through_podward(podward, apiserver):
    ticker = "python-ticker"
    with ticking(apiserver, ticker, 0.2), python_client(podward) as api_client:
        api = client.CoreV1Api(api_client)
        assert ticker in [cm.metadata.name for cm in api.list_namespaced_config_map("default").items]
        events = [(event["type"], event["object"].metadata.annotations or {}) for event in watch.Watch().stream(
            api.list_namespaced_config_map, "default", field_selector=f"metadata.name={ticker}", timeout_seconds=2)]
    # The generator ended by itself: the server's timeoutSeconds closed the stream through Envoy.
    assert events[0][0] == "ADDED"
    ticks = [int(annotations[TICK_ANNOTATION]) for kind, annotations in events if kind == "MODIFIED"]
    assert len(ticks) >= 5 and ticks == list(range(ticks[0], ticks[0] + len(ticks)))
    assert upstream(apiserver, "GET", "watch=true").header("authorization").startswith("Bearer ")


# --- A large list ----------------------------------------------------------------------------------------

BULK_NAMESPACE = "bulk"
BULK_ITEMS = 2000
BULK_VALUE_BYTES = 10_000
MAX_RSS_GROWTH = 8 * 1024 * 1024


@pytest.fixture
def bulk_configmaps(apiserver):
    """~20 MB of ConfigMaps in their own namespace."""
    rng = random.Random(4)
    apiserver.seed([{"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": f"bulk-{i:04d}", "namespace": BULK_NAMESPACE},
                     "data": {"value": rng.randbytes(BULK_VALUE_BYTES // 2).hex()}} for i in range(BULK_ITEMS)])
    yield
    apiserver.delete_object("namespaces", "", BULK_NAMESPACE)  # takes its ConfigMaps with it


def test_a_20_mb_list_streams_through_with_bounded_envoy_memory(podward, apiserver, bulk_configmaps):
    # Warm up first, so the baseline already has the upstream connection and TLS session.
    assert request(podward, "GET", "/api/v1/namespaces/default/configmaps").status == 200
    paused_before = podward.stats()["cluster.kubernetes.upstream_flow_control_paused_reading_total"]
    pid = podward.process.pid
    before = rss_bytes(pid)
    sampler = PeakRss(pid)
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", podward.settings.listen_port, timeout=30)
    try:
        connection.request("GET", f"/api/v1/namespaces/{BULK_NAMESPACE}/configmaps")
        response = connection.getresponse()
        body = bytearray()
        while chunk := response.read(64 * 1024):
            body += chunk
            time.sleep(0.005)  # a slow consumer: Envoy must hold the API server back, not buffer for us
    finally:
        connection.close()
        peak = sampler.stop()
    seconds = time.monotonic() - started

    assert response.status == 200 and len(body) == int(response.getheader("content-length"))
    listed = json.loads(body)
    assert listed["kind"] == "ConfigMapList" and len(listed["items"]) == BULK_ITEMS
    assert listed["items"][-1]["metadata"]["name"] == f"bulk-{BULK_ITEMS - 1:04d}"
    mib = 1024 * 1024
    figures = {"body_mib": round(len(body) / mib, 1), "rss_before_mib": round(before / mib, 1),
               "rss_peak_mib": round(peak / mib, 1), "growth_mib": round((peak - before) / mib, 2),
               "transfer_s": round(seconds, 2), "rss_samples": sampler.samples}
    record_figures("large_list", figures)
    assert sampler.samples > 100, "the sampler must have watched the whole transfer"
    assert peak - before < MAX_RSS_GROWTH, figures
    # Growth stayed low because Envoy stopped reading from the API server while the app lagged.
    assert podward.stats()["cluster.kubernetes.upstream_flow_control_paused_reading_total"] > paused_before


# --- Request bodies --------------------------------------------------------------------------------------

class RecordingPoolManager:
    """Stands in front of the Python client's urllib3 pool manager and keeps each request body exactly as
    the client hands it to the wire, with its content type."""

    def __init__(self, pool):
        self.pool, self.sent = pool, []

    def request(self, method, url, **kwargs):
        body = kwargs.get("body")
        if body is not None:
            self.sent.append((method, urllib.parse.urlsplit(url).path, kwargs["headers"].get("Content-Type"),
                              body.encode() if isinstance(body, str) else body))
        return self.pool.request(method, url, **kwargs)

    def __getattr__(self, name):
        return getattr(self.pool, name)


def received_writes(apiserver) -> list:
    return [(r.method, r.path_only, r.header("content-type"), r.body) for r in apiserver.requests
            if r.method in ("POST", "PUT", "PATCH", "DELETE")]


def test_python_client_writes_reach_the_api_server_byte_for_byte(podward, apiserver):
    name = "bodies"
    big = random.Random(7).randbytes(150_000).hex()  # 300 KB: many Envoy buffer slices
    with python_client(podward) as api_client:
        recorder = RecordingPoolManager(api_client.rest_client.pool_manager)
        api_client.rest_client.pool_manager = recorder
        api = client.CoreV1Api(api_client)
        api.create_namespaced_config_map("default", {"metadata": {"name": name},
                                                     "data": {"big": big, "t": "h\u00e9 \u2713"}})
        api.replace_namespaced_config_map(name, "default", {"metadata": {"name": name}, "data": {"a": "replaced"}})
        api.patch_namespaced_config_map(name, "default", [{"op": "add", "path": "/data/b", "value": "json-patched"}])
        api.patch_namespaced_config_map(name, "default", {"data": {"c": "merged"}},
                                        _content_type="application/merge-patch+json")
        api.patch_namespaced_config_map(name, "default", {"data": {"d": "strategic"}})
        applied = api.patch_namespaced_config_map(
            name, "default", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                              "data": {"e": "applied"}},
            field_manager="traffic-test", _content_type="application/apply-patch+yaml")
        api.delete_namespaced_config_map(name, "default", body=client.V1DeleteOptions(grace_period_seconds=0))

    # The client names no type for create, update and delete (the API server then reads JSON); nothing on
    # the way may add one.
    content_types = [content_type for _, _, content_type, _ in recorder.sent]
    assert content_types == [None, None, "application/json-patch+json", "application/merge-patch+json",
                             "application/strategic-merge-patch+json", "application/apply-patch+yaml", None]
    assert received_writes(apiserver) == recorder.sent
    assert applied.data == {"a": "replaced", "b": "json-patched", "c": "merged", "d": "strategic", "e": "applied"}


KUBECTL_BODY = re.compile(r"Request Body: (.*)$")
KUBECTL_CURL = re.compile(r"curl -k -v -X(\w+) .*-H \"Content-Type: ([^\"]+)\".* '(http://[^']+)'$")


def kubectl_writes(stderr: bytes) -> list:
    """(method, path, content type, body) of each request kubectl logged sending at -v=10: the body line
    comes just before the request's curl line."""
    writes, body = [], None
    for line in stderr.decode().splitlines():
        if match := KUBECTL_BODY.search(line):
            body = match.group(1).encode()
        elif (match := KUBECTL_CURL.search(line)) and body is not None:
            writes.append((match.group(1), urllib.parse.urlsplit(match.group(3)).path, match.group(2), body))
            body = None
    return writes


def test_kubectl_writes_reach_the_api_server_as_kubectl_sent_them(podward, apiserver, kubectl):
    manifest = ('apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: "1"\n'
                '  note: "h\u00e9llo\\nworld"\n')
    steps = [("apply", "-f", "-"), ("apply", "-f", "-"), ("apply", "--server-side", "-f", "-"),
             ("delete", "configmap", "applied")]
    inputs = [manifest, manifest.replace('"1"', '"2"'), manifest.replace('"1"', '"3"'), ""]
    outputs, logged = [], []
    for args, text in zip(steps, inputs):
        result = kubectl.run(podward, "-v=10", *args, stdin=text.encode())
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        outputs.append(result.stdout.decode().strip())
        logged += kubectl_writes(result.stderr)

    assert outputs == ["configmap/applied created", "configmap/applied configured",
                       "configmap/applied serverside-applied", 'configmap "applied" deleted']
    assert [(method, content_type) for method, _, content_type, _ in logged] == [
        ("POST", "application/json"), ("PATCH", "application/strategic-merge-patch+json"),
        ("PATCH", "application/apply-patch+yaml"), ("DELETE", "application/json")]
    received = received_writes(apiserver)
    assert [r[:3] for r in received] == [w[:3] for w in logged]
    for (_, _, _, sent), (_, _, _, arrived) in zip(logged, received):
        # klog ends each line with one newline, so a body's own final newline cannot be told from it.
        assert arrived in (sent, sent + b"\n")


BODY_WITH_ODD_BYTES = ('{"data":{"note":"h\u00e9llo \u2713\\n","spaces":"  kept  "},\n'
                       '  "metadata" : {"annotations":{"x":"\\u00e9"}}}\n').encode()


@pytest.mark.parametrize("framing", [["--http1.1"], ["--http1.1", "-H", "Transfer-Encoding: chunked"],
                                     ["--http2-prior-knowledge"]], ids=["http1-length", "http1-chunked", "h2c"])
def test_a_patch_body_arrives_byte_for_byte_however_the_app_frames_it(podward, apiserver, tmp_path, framing):
    apiserver.put_object({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "framed", "namespace": "default"}})
    body_file = tmp_path / "body.json"
    body_file.write_bytes(BODY_WITH_ODD_BYTES)
    result = subprocess.run(["curl", "-sS", *framing, "-X", "PATCH", "-H", "Content-Type: application/merge-patch+json",
                             "--data-binary", f"@{body_file}",
                             f"{podward.url}/api/v1/namespaces/default/configmaps/framed"],
                            capture_output=True, timeout=30)
    assert result.returncode == 0 and json.loads(result.stdout)["data"]["spaces"] == "  kept  ", result.stderr
    received = upstream(apiserver, "PATCH", "/configmaps/framed")
    assert (received.body, received.header("content-type")) == (BODY_WITH_ODD_BYTES, "application/merge-patch+json")


# --- kubectl reading and streaming ---------------------------------------------------------------------

def test_kubectl_get_and_a_brief_get_watch(podward, apiserver, kubectl):
    ticker = "kubectl-ticker"
    with ticking(apiserver, ticker, 0.2):
        listed = kubectl.run(podward, "get", "configmaps")
        watcher = kubectl.start(podward, "get", "configmap", ticker, "--watch", "--output-watch-events")
        try:
            lines = LineReader(watcher)
            rows = [lines.next().decode().split() for _ in range(5)]
        finally:
            stop_process(watcher)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.decode().splitlines()[0].split() == ["NAME", "DATA", "AGE"]
    assert ticker in listed.stdout.decode()
    assert rows[0][:2] == ["EVENT", "NAME"] and rows[1][:2] == ["ADDED", ticker]
    assert [row[:2] for row in rows[2:]] == [["MODIFIED", ticker]] * 3
    wait_for_envoy_to_drop_every_stream(podward)
    wait_until(lambda: watchers_of(apiserver, ticker) == 0, "the stand-in to see the watch end")


def test_kubectl_logs_follow_streams_until_kubectl_stops(podward, apiserver, kubectl):
    follower = kubectl.start(podward, "logs", "-f", "demo-1")
    try:
        lines = LineReader(follower)
        received = [lines.next().decode().rstrip("\n") for _ in range(8)]
    finally:
        stop_process(follower)
    # Five lines of history, then lines the stand-in writes every 0.2 s while following.
    assert received == [f"demo-1: log line {i}" for i in range(1, 9)]
    assert upstream(apiserver, "GET", "/pods/demo-1/log").query["follow"] == ["true"]
    wait_for_envoy_to_drop_every_stream(podward)


# --- exec, attach and port-forward -----------------------------------------------------------------------

EXEC_PATH = "/api/v1/namespaces/default/pods/demo-0/exec"


def assert_upgrade_carried_credentials(apiserver, pod, subresource: str, upgrade: str):
    """podward put the token on the upgrade request and Envoy forwarded the upgrade itself."""
    received = upstream(apiserver, "GET" if upgrade == "websocket" else "POST", f"/demo-0/{subresource}")
    assert received.status == 101
    assert received.token == pod.token and received.header("upgrade").lower() == upgrade.lower()


def test_kubectl_exec_over_spdy_streams_stdin_stdout_and_exit_codes(interactive, pod, apiserver, kubectl):
    data = random.Random(11).randbytes(1024 * 1024)
    started = time.monotonic()
    echoed = kubectl.run(interactive, "exec", "-i", "demo-0", "--", "cat", stdin=data)
    seconds = time.monotonic() - started
    assert (echoed.returncode, echoed.stderr) == (0, b"")
    assert echoed.stdout == data  # a mebibyte of binary both ways, intact
    session = the_session(apiserver, "exec")
    assert (session.transport, session.protocol, session.exit_code) == ("spdy", V4_CHANNEL, 0)
    assert bytes(session.stdin) == data
    assert_upgrade_carried_credentials(apiserver, pod, "exec", "SPDY/3.1")
    record_figures("kubectl_exec_spdy", {"stdin_mib": 1, "round_trip_s": round(seconds, 2)})

    failed = kubectl.run(interactive, "exec", "demo-0", "--", "false")
    assert failed.returncode == 1 and b"command terminated with exit code 1" in failed.stderr
    assert interactive.stats()["http.podward.downstream_cx_upgrades_total"] == 2
    wait_for_envoy_to_drop_every_stream(interactive)


def test_kubectl_attach_over_spdy(interactive, pod, apiserver, kubectl):
    attached = kubectl.run(interactive, "attach", "-i", "demo-0", stdin=b"to the main process\n")
    assert attached.returncode == 0, attached.stderr
    assert attached.stdout == b"to the main process\n"
    assert the_session(apiserver, "attach").transport == "spdy"
    assert_upgrade_carried_credentials(apiserver, pod, "attach", "SPDY/3.1")


def echo_through(port: int, message: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(message)
        received = b""
        while len(received) < len(message) and (data := connection.recv(65536)):
            received += data
        return received


def test_kubectl_port_forward_over_spdy_is_allowed_by_the_default_policy(podward, pod, apiserver, kubectl):
    forwarder = kubectl.start(podward, "port-forward", "pod/demo-0", ":8080")
    try:
        first_line = LineReader(forwarder).next().decode()
        local_port = int(re.search(r"127\.0\.0\.1:(\d+) -> 8080", first_line).group(1))
        # Three local connections: three pairs of SPDY streams on the one upgraded connection.
        replies = [echo_through(local_port, f"connection {i}\n".encode()) for i in range(3)]
    finally:
        stop_process(forwarder)
    assert replies == [f"connection {i}\n".encode() for i in range(3)]
    session = the_session(apiserver, "portforward")
    assert (session.transport, session.protocol) == ("spdy", PORT_FORWARD_SPDY)
    assert session.forwarded == {8080: b"connection 0\nconnection 1\nconnection 2\n"}
    assert_upgrade_carried_credentials(apiserver, pod, "portforward", "SPDY/3.1")
    wait_until(session.ended.is_set, "the stand-in to see the port-forward end")
    wait_for_envoy_to_drop_every_stream(podward)


def channel_messages(ws: websocket.WebSocket) -> list:
    """(channel, data) of each message until the server closes the WebSocket."""
    messages = []
    while True:
        opcode, data = ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return messages
        messages.append((data[0], data[1:]))


def open_websocket(envoy, path: str, protocol: str) -> websocket.WebSocket:
    return websocket.create_connection(f"ws://127.0.0.1:{envoy.settings.listen_port}{path}",
                                       subprotocols=[protocol], timeout=10)


def test_websocket_exec_v5_echoes_stdin_and_ends_with_success(interactive, pod, apiserver):
    with python_client(interactive) as api_client:
        session = stream(client.CoreV1Api(api_client).connect_get_namespaced_pod_exec, "demo-0", "default",
                         command=["cat"], stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
        try:
            assert session.subprotocol == V5_CHANNEL
            session.write_stdin("first line\n")
            assert session.readline_stdout(timeout=5) == "first line"
            session.write_stdin("second line\n")
            assert session.readline_stdout(timeout=5) == "second line"
            session.close_channel(0)  # v5: stdin is closed, so cat ends
            session.run_forever(timeout=5)
            assert session.returncode == 0  # decoded from the Success status on channel 3
        finally:
            session.close()
    seen = the_session(apiserver, "exec")
    assert (seen.transport, seen.protocol, bytes(seen.stdin)) == ("websocket", V5_CHANNEL, b"first line\nsecond line\n")
    assert_upgrade_carried_credentials(apiserver, pod, "exec", "websocket")
    wait_until(seen.ended.is_set, "the stand-in to see the exec end")
    wait_for_envoy_to_drop_every_stream(interactive)


def test_websocket_exec_v4_reports_output_and_exit_status_on_their_channels(interactive, apiserver):
    ws = open_websocket(interactive, f"{EXEC_PATH}?command=echo&command=hello&stdout=true&stderr=true", V4_CHANNEL)
    assert ws.subprotocol == V4_CHANNEL
    assert channel_messages(ws) == [(1, b"hello\n"), (3, b'{"metadata":{},"status":"Success"}')]
    ws.close()

    ws = open_websocket(interactive, f"{EXEC_PATH}?command=false&stdout=true&stderr=true", V4_CHANNEL)
    (channel, status), = channel_messages(ws)
    ws.close()
    status = json.loads(status)
    assert (channel, status["status"], status["reason"]) == (3, "Failure", "NonZeroExitCode")
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "1"}]
    wait_for_envoy_to_drop_every_stream(interactive)


def test_closing_a_websocket_mid_command_ends_it_upstream(interactive, apiserver):
    ws = open_websocket(interactive, f"{EXEC_PATH}?command=cat&stdin=true&stdout=true&tty=true", V4_CHANNEL)
    ws.send_binary(b"\x04" + json.dumps({"Width": 120, "Height": 40}).encode())
    ws.send_binary(b"\x00typed\n")
    assert ws.recv_data() == (websocket.ABNF.OPCODE_BINARY, b"\x01typed\n")
    assert in_flight(interactive) == (1, 1, 1)
    ws.close()
    seen = the_session(apiserver, "exec")
    wait_until(seen.ended.is_set, "the stand-in to see the exec end")
    assert seen.resizes == [{"Width": 120, "Height": 40}] and seen.exit_code is None  # killed, not exited
    wait_for_envoy_to_drop_every_stream(interactive)


def test_websocket_attach_joins_the_main_process(interactive, pod, apiserver):
    with python_client(interactive) as api_client:
        session = stream(client.CoreV1Api(api_client).connect_get_namespaced_pod_attach, "demo-0", "default",
                         stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
        try:
            session.write_stdin("hello, main process\n")
            assert session.readline_stdout(timeout=5) == "hello, main process"
        finally:
            session.close()
    assert the_session(apiserver, "attach").transport == "websocket"
    assert_upgrade_carried_credentials(apiserver, pod, "attach", "websocket")


def test_websocket_port_forward_with_the_python_client(podward, pod, apiserver):
    with python_client(podward) as api_client:
        forward = portforward(client.CoreV1Api(api_client).connect_get_namespaced_pod_portforward, "demo-0",
                              "default", ports="8080")
        remote = forward.socket(8080)
        remote.setblocking(True)
        remote.sendall(b"over a websocket\n")
        received = b""
        while len(received) < 17 and (data := remote.recv(1024)):
            received += data
        remote.close()
    assert received == b"over a websocket\n"
    seen = the_session(apiserver, "portforward")
    assert (seen.transport, seen.protocol, seen.forwarded) == ("websocket", V4_CHANNEL, {8080: b"over a websocket\n"})
    assert_upgrade_carried_credentials(apiserver, pod, "portforward", "websocket")
    wait_until(seen.ended.is_set, "the stand-in to see the port-forward end")


def upgrade_headers(upgrade: str) -> tuple:
    """Method and headers of an exec/attach upgrade as WebSocket or SPDY clients send it."""
    if upgrade == "websocket":
        return "GET", {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                       "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
                       "Sec-WebSocket-Protocol": V5_CHANNEL}
    return "POST", {"Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": V4_CHANNEL}


@pytest.mark.parametrize("upgrade", ["websocket", "SPDY/3.1"])
@pytest.mark.parametrize("subresource", ["exec", "attach"])
def test_the_default_policy_refuses_exec_and_attach_before_the_api_server(podward, apiserver, subresource, upgrade):
    method, headers = upgrade_headers(upgrade)
    apiserver.clear_requests()
    response = request(podward, method, f"/api/v1/namespaces/default/pods/demo-0/{subresource}?stdin=true&stdout=true",
                       headers=headers)
    status = assert_status(response, 403, "Forbidden")
    assert 'podward policy rule "kubectl-proxy/no-exec-or-attach"' in status["message"]
    assert status["details"] == {"name": "demo-0", "kind": "pods"}
    assert apiserver.requests == []


def test_kubectl_exec_shows_the_default_policys_refusal(podward, apiserver, kubectl):
    refused = kubectl.run(podward, "exec", "demo-0", "--", "true")
    assert refused.returncode == 1
    assert refused.stderr.decode().startswith('Error from server (Forbidden): pods "demo-0" is forbidden: '
                                              'podward policy rule "kubectl-proxy/no-exec-or-attach"')
    assert not [r for r in apiserver.requests if "/exec" in r.path] and apiserver.sessions == []


def test_own_namespace_refuses_exec_into_another_namespace(interactive, apiserver):
    apiserver.seed([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "elsewhere", "namespace": "kube-system"}}])
    method, headers = upgrade_headers("websocket")
    apiserver.clear_requests()
    response = request(interactive, method, "/api/v1/namespaces/kube-system/pods/elsewhere/exec?command=cat&stdin=true",
                       headers=headers)
    assert 'podward policy rule "own-namespace/default"' in assert_status(response, 403, "Forbidden")["message"]
    assert apiserver.requests == []


# --- HTTP versions ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, version", [("--http1.1", "1.1"), ("--http2-prior-knowledge", "2")],
                         ids=["http1.1", "h2c"])
def test_the_app_may_speak_http1_or_h2c(podward, pod, apiserver, flag, version):
    result = subprocess.run(["curl", "-sS", flag, "-w", "%{stderr}%{http_version}",
                             f"{podward.url}/api/v1/namespaces/default/pods"], capture_output=True, timeout=30)
    assert (result.returncode, result.stderr.decode()) == (0, version)
    assert [p["metadata"]["name"] for p in json.loads(result.stdout)["items"]] == ["demo-0", "demo-1", "demo-2"]
    assert upstream(apiserver, "GET", "/pods").token == pod.token
    counter = "downstream_rq_http2_total" if version == "2" else "downstream_rq_http1_total"
    assert podward.stats()[f"http.podward.{counter}"] == 1


def test_a_watch_over_h2c_streams_promptly_and_ends_with_the_server(podward, apiserver):
    ticker = "h2c-ticker"
    with ticking(apiserver, ticker, 0.2):
        curl = subprocess.Popen(["curl", "-sSN", "--http2-prior-knowledge", "-w", "%{stderr}%{http_version}",
                                 podward.url + ticker_watch_path(ticker, "&timeoutSeconds=4")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            lines, events = LineReader(curl), []
            while (line := lines.next()) is not None:  # None: the server ended the stream
                event = json.loads(line)
                events.append((event["type"], event_delay_s(event) if event["type"] == "MODIFIED" else None))
            curl.wait(timeout=10)
        finally:
            curl.kill()
    assert (curl.returncode, curl.stderr.read()) == (0, b"2")
    delays = [delay for kind, delay in events if kind == "MODIFIED"]
    assert events[0][0] == "ADDED" and len(delays) >= 12
    figures = latency_figures(delays)
    record_figures("watch_h2c", figures)
    assert max(delays) < MAX_EVENT_DELAY_S, figures
    assert podward.stats()["http.podward.downstream_rq_http2_total"] == 1
    wait_for_envoy_to_drop_every_stream(podward)
