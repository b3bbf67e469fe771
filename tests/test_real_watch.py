"""Watches through podward against the real API server (etcd 3.6 and the watch cache): fifty for a minute, the
server ending them at `timeoutSeconds`, watch-list's initial events and bookmark, and the Python client, kubectl
and curl over h2c watching. The objects are changed by the admin every few hundred milliseconds, each change
stamped with the time it was sent, so that each event's delay through podward can be measured."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import re
import ssl
import statistics
import subprocess
import threading
import time

import pytest
from kubernetes import client, watch


from harness.figures import record_figures
from podward.local.waiting import wait_for
from test_traffic import LineReader, in_flight, python_client, stop_process, wait_for_envoy_to_drop_every_stream

pytestmark = pytest.mark.envtest

# The stand-in stamps an event as it sends it; here the stamp is taken before the admin's PATCH leaves, so the
# delay also holds the API server's write through etcd and its watch cache: a wider bound than the stand-in's.
MAX_EVENT_DELAY_S = 0.25


# What each change of a Ticker carries: its number, and when it was sent.
TICK_ANNOTATION = "podward.test/tick"
SENT_AT_ANNOTATION = "podward.test/sent-at"


class Ticker:
    """Changes ConfigMap `name` every `interval` seconds, as the admin, over one kept-alive connection; each
    change carries its number and send time in annotations."""

    def __init__(self, kube, namespace: str, name: str, interval: float):
        self.kube, self.namespace, self.name, self.interval = kube, namespace, name, interval
        kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}})
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._tick, name=f"ticker-{name}", daemon=True)

    def _tick(self):
        context = ssl.create_default_context(cafile=self.kube.pki.ca_cert)
        connection = http.client.HTTPSConnection("127.0.0.1", self.kube.port, context=context, timeout=10)
        path = f"/api/v1/namespaces/{self.namespace}/configmaps/{self.name}"
        tick = 0
        while not self.stopped.wait(self.interval):
            tick += 1
            patch = {"metadata": {"annotations": {TICK_ANNOTATION: str(tick), SENT_AT_ANNOTATION: repr(time.time())}}}
            connection.request("PATCH", path, body=json.dumps(patch), headers={
                "Authorization": f"Bearer {self.kube.admin_token}", "Content-Type": "application/merge-patch+json"})
            response = connection.getresponse()
            response.read()
            assert response.status == 200
        connection.close()

    def __enter__(self) -> "Ticker":
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()


def event_delay_s(event: dict) -> float:
    """How long ago the ticker sent the change behind this event (its SENT_AT stamp)."""
    return time.time() - float(event["object"]["metadata"]["annotations"][SENT_AT_ANNOTATION])


def latency_figures(delays_s: list) -> dict:
    cuts = statistics.quantiles(delays_s, n=100, method="inclusive")
    return {"samples": len(delays_s), "p50_ms": round(cuts[49] * 1000, 2), "p99_ms": round(cuts[98] * 1000, 2),
            "max_ms": round(max(delays_s) * 1000, 2)}


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


def configmap_watches(kube) -> int:
    """The API server's count of open ConfigMap watches, its own informers' included: tests compare counts."""
    metrics = kube.admin("GET", "/metrics").body.decode()
    return sum(int(value) for value in re.findall(
        r'^apiserver_longrunning_requests\{[^}]*resource="configmaps"[^}]*verb="WATCH"[^}]*\} (\d+)$', metrics,
        re.MULTILINE))


def watch_path(namespace: str, name: str, extra: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps?watch=1&fieldSelector=metadata.name%3D{name}{extra}"


WATCHES = 50
WATCH_SECONDS = 61
TICK_SECONDS = 0.5


def test_fifty_watches_get_every_event_promptly_for_a_minute_then_close_cleanly(real_podward, real_pod, kube):
    """More than a minute: longer than Envoy's default route timeout (15 s) and stream idle timeout in tests."""
    port, path = real_podward.settings.listen_port, watch_path(real_pod.namespace, "traffic-ticker")
    watches_before = configmap_watches(kube)

    async def hold_watches():
        watches = await asyncio.gather(*(Http1Watch.open(port, path) for _ in range(WATCHES)))
        opened = time.monotonic()
        # All open at once, end to end: in Envoy on both sides and at the API server.
        gauges = await asyncio.to_thread(in_flight, real_podward)
        at_api_server = await asyncio.to_thread(configmap_watches, kube)
        per_watch = await asyncio.gather(*(ticks_until(w, opened + WATCH_SECONDS) for w in watches))
        held = time.monotonic() - opened
        for w in watches:
            w.close()
        return gauges, at_api_server, per_watch, held

    with Ticker(kube, real_pod.namespace, "traffic-ticker", TICK_SECONDS):
        gauges, at_api_server, per_watch, held = asyncio.run(hold_watches())

    assert gauges == (WATCHES, WATCHES, 0) and at_api_server - watches_before == WATCHES
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
    record_figures("traffic", real_podward.settings.build, "watches_http1_real_apiserver", figures)
    assert max(delays) < MAX_EVENT_DELAY_S, figures

    # The app hung up: Envoy lets go of both sides and the API server sees every watch end.
    wait_for_envoy_to_drop_every_stream(real_podward)
    wait_for(lambda: configmap_watches(kube) == watches_before, what="the API server to see the watches end")


def test_watches_the_server_ends_get_the_terminating_chunk_and_stay_usable(real_podward, real_pod, kube):
    port, path = real_podward.settings.listen_port, watch_path(real_pod.namespace, "ending", "&timeoutSeconds=2")

    async def until_the_server_ends_them():
        watches = [await Http1Watch.open(port, path) for _ in range(3)]
        started = time.monotonic()
        for w in watches:
            while await asyncio.wait_for(w.next_event(), 10) is not None:
                pass
        ended_after = time.monotonic() - started
        statuses = [await w.reuse_for("/version") for w in watches]
        for w in watches:
            w.close()
        return ended_after, statuses

    with Ticker(kube, real_pod.namespace, "ending", 0.2):
        ended_after, statuses = asyncio.run(until_the_server_ends_them())
    assert 1.5 < ended_after < 5
    assert statuses == [200, 200, 200]  # the responses ended as HTTP says, not by a dropped connection
    wait_for_envoy_to_drop_every_stream(real_podward)


def test_watch_list_sends_the_initial_events_then_a_bookmark_then_changes(real_podward, real_pod, kube):
    """What client-go's reflector does since 1.32: `sendInitialEvents`, ended by the bookmark that marks the end
    of the initial state, then the live events, until `timeoutSeconds`."""
    namespace = real_pod.namespace
    for name in ("a", "b", "c"):
        kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}})
    connection = http.client.HTTPConnection("127.0.0.1", real_podward.settings.listen_port, timeout=10)
    connection.request("GET", f"/api/v1/namespaces/{namespace}/configmaps?watch=1&sendInitialEvents=true"
                              "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=3")
    response = connection.getresponse()
    assert response.status == 200
    events = [json.loads(response.readline()) for _ in range(4)]
    kube.admin_ok("PATCH", f"/api/v1/namespaces/{namespace}/configmaps/b", {"data": {"changed": "yes"}},
                  {"Content-Type": "application/merge-patch+json"})
    events += [json.loads(line) for line in iter(response.readline, b"")]  # until the server ends the watch
    connection.close()
    kinds = [(event["type"], event["object"]["metadata"].get("name")) for event in events]
    assert kinds[:5] == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c"), ("BOOKMARK", None), ("MODIFIED", "b")]
    # The server may send a last bookmark before it ends the watch, so that the client resumes from there.
    assert set(kinds[5:]) <= {("BOOKMARK", None)}
    bookmark = events[3]["object"]["metadata"]
    assert bookmark["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(bookmark["resourceVersion"]) >= max(int(e["object"]["metadata"]["resourceVersion"]) for e in events[:3])


def test_the_python_client_lists_and_watches_through_podward(real_podward, real_pod, kube):
    namespace = real_pod.namespace
    with Ticker(kube, namespace, "python-ticker", 0.2), python_client(real_podward) as api_client:
        api = client.CoreV1Api(api_client)
        assert [cm.metadata.name for cm in api.list_namespaced_config_map(namespace).items] == ["python-ticker"]
        events = [(event["type"], event["object"].metadata.annotations or {}) for event in watch.Watch().stream(
            api.list_namespaced_config_map, namespace, field_selector="metadata.name=python-ticker", timeout_seconds=2)]
    # The generator ended by itself: the server's timeoutSeconds closed the stream through Envoy.
    assert events[0][0] == "ADDED"
    ticks = [int(annotations[TICK_ANNOTATION]) for kind, annotations in events if kind == "MODIFIED"]
    assert len(ticks) >= 5 and ticks == list(range(ticks[0], ticks[0] + len(ticks)))


def test_kubectl_get_and_a_brief_get_watch(real_podward, real_pod, kube, tmp_path):
    import os

    kubectl = [os.environ["KUBECTL"], "--server", real_podward.url, "--namespace", real_pod.namespace]
    env = {**os.environ, "HOME": str(tmp_path)}
    with Ticker(kube, real_pod.namespace, "kubectl-ticker", 0.2):
        listed = subprocess.run([*kubectl, "get", "configmaps"], capture_output=True, text=True, timeout=60, env=env)
        watcher = subprocess.Popen([*kubectl, "get", "configmap", "kubectl-ticker", "--watch", "--output-watch-events"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            lines = LineReader(watcher)
            rows = [lines.next().decode().split() for _ in range(5)]
        finally:
            stop_process(watcher)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[:2] for line in listed.stdout.splitlines()] == [["NAME", "DATA"], ["kubectl-ticker", "0"]]
    assert rows[0][:2] == ["EVENT", "NAME"] and rows[1][:2] == ["ADDED", "kubectl-ticker"]
    assert [row[:2] for row in rows[2:]] == [["MODIFIED", "kubectl-ticker"]] * 3
    wait_for_envoy_to_drop_every_stream(real_podward)


def test_a_watch_over_h2c_streams_promptly_and_ends_with_the_server(real_podward, real_pod, kube):
    with Ticker(kube, real_pod.namespace, "h2c-ticker", 0.2):
        curl = subprocess.Popen(["curl", "-sSN", "--http2-prior-knowledge", "-w", "%{stderr}%{http_version}",
                                 real_podward.url + watch_path(real_pod.namespace, "h2c-ticker", "&timeoutSeconds=4")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(curl.kill)
            lines, events = LineReader(curl), []
            while (line := lines.next()) is not None:  # None: the server ended the stream
                event = json.loads(line)
                events.append((event["type"], event_delay_s(event) if event["type"] == "MODIFIED" else None))
            curl.wait(timeout=10)
    assert (curl.returncode, curl.stderr.read()) == (0, b"2")
    delays = [delay for kind, delay in events if kind == "MODIFIED"]
    assert events[0][0] == "ADDED" and len(delays) >= 12
    figures = latency_figures(delays)
    record_figures("traffic", real_podward.settings.build, "watch_h2c_real_apiserver", figures)
    assert max(delays) < MAX_EVENT_DELAY_S, figures
    assert real_podward.stats()["http.podward.downstream_rq_http2_total"] == 1
    wait_for_envoy_to_drop_every_stream(real_podward)
