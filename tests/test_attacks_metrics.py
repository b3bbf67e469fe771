"""The attack catalogue, continued: the metrics port (9102). Unlike the app's port it listens on every address,
so anything on the cluster network can reach it, as can the app. Neither may make the sidecar hold memory past
its limit, starve the app, or choose what admin computes.

Each flood runs in a process of its own (`python -m harness.flood`): from this network namespace, where the app
is, or from another one joined by a veth pair, which stands in for the cluster network (harness/netns.py, needs
root). Meanwhile the test asks for `/ready` and a scrape on the metrics port and for pods on the app's port, and
samples Envoy's RSS. Peak RSS per attack, origin and build, and what the probes got, go to
/tmp/podward-figures/metrics-port.json.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from podward.bootstrap import SCRAPE_QUERY
from podward.constants import MEMORY_LIMIT_MIB, METRICS_PATH, READY_PATH, REPO

from harness.figures import record_figures
from harness.flood import METRICS_ATTACK_SIZES, PeakRss, memory_kib, outcome
from harness.netns import NetworkNamespace
from podward.local.waiting import wait_for
from test_attacks import exchange, http1

FLOOD_SECONDS = float(os.environ.get("PODWARD_METRICS_FLOOD_SECONDS", "6"))
MIB = 1024 * 1024
# What a flood of the metrics port may add to the sidecar's RSS, and what it may reach at most: well under
# the manifests' limit (on main, each of these floods added 115 to 180 MiB).
MAX_GROWTH_MIB = 24
MAX_SHARE_OF_LIMIT = 0.8
# After the flood, everything is served again within this long.
RECOVERY_SECONDS = 10
PROBE_INTERVAL = 0.2

ATTACKS = {
    **{name: {name: count} for name, count in METRICS_ATTACK_SIZES.items()},
    "mix": METRICS_ATTACK_SIZES,
}


@pytest.fixture(scope="module")
def cluster_network():
    """Another network namespace: the cluster network, from where only the pod's own address reaches it."""
    with NetworkNamespace() as namespace:
        yield namespace


def where(origin: str, network: NetworkNamespace) -> tuple:
    """(address of the metrics port, command prefix) from the app's side or from the cluster network."""
    return ("127.0.0.1", []) if origin == "app" else (network.host_address, network.run_prefix)


def from_(origin: str, network: NetworkNamespace, port: int, *arguments: str) -> subprocess.Popen:
    """`python -m harness.flood` from that origin, against the metrics port."""
    host, prefix = where(origin, network)
    return subprocess.Popen([*prefix, sys.executable, "-m", "harness.flood", host, str(port), *arguments],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO / "tests")})


def finished(process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate(timeout=FLOOD_SECONDS + 60)
    assert process.returncode == 0, stderr[-2000:]
    return json.loads(stdout)


class AppProber:
    """Asks for pods on the app's port every PROBE_INTERVAL, in a thread, until stopped."""

    def __init__(self, envoy):
        self.port = envoy.settings.listen_port
        self.outcomes = collections.Counter()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._probe, daemon=True)
        self.thread.start()

    def _probe(self):
        while not self.stopped.wait(PROBE_INTERVAL):
            self.outcomes[outcome("127.0.0.1", self.port, APP_REQUEST)] += 1

    def stop(self) -> dict:
        self.stopped.set()
        self.thread.join()
        return dict(self.outcomes)


APP_REQUEST = "/api/v1/namespaces/default/pods"
METRICS_PATHS = [READY_PATH, METRICS_PATH]


def seconds_to_recover(envoy, timeout: float = RECOVERY_SECONDS) -> float:
    """From now until /ready, a scrape and the app's request all get a 200 again."""
    started = time.monotonic()
    pending = [(envoy.settings.metrics_port, path) for path in METRICS_PATHS] + [(envoy.settings.listen_port,
                                                                                  APP_REQUEST)]

    def all_served() -> bool:
        pending[:] = [(port, path) for port, path in pending if outcome("127.0.0.1", port, path) != "200"]
        return not pending

    wait_for(all_served, timeout, "/ready, a scrape and the app's request served again", interval=0.1)
    return time.monotonic() - started


@pytest.mark.parametrize("origin", ["app", "cluster-network"])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_flood_of_the_metrics_port_stays_bounded_and_the_sidecar_serves_on(
        cluster_network, pod, start_envoy, apiserver, attack, origin):
    envoy = start_envoy(pod)
    port = envoy.settings.metrics_port
    other = {"app": "cluster-network", "cluster-network": "app"}[origin]
    assert outcome("127.0.0.1", envoy.settings.listen_port, APP_REQUEST) == "200"
    pid = envoy.process.pid
    idle = memory_kib(pid)["VmRSS"] * 1024
    sampler = PeakRss(pid)
    app = AppProber(envoy)
    try:
        attackers = from_(origin, cluster_network, port, str(FLOOD_SECONDS),
                          *(f"{name}={count}" for name, count in ATTACKS[attack].items()))
        # The attackers' side asks for /ready and a scrape too, and so does the other side: the kubelet and
        # Prometheus when the app attacks, the app when the cluster network does.
        beside = from_(origin, cluster_network, port, str(FLOOD_SECONDS), "--probe", *METRICS_PATHS)
        across = from_(other, cluster_network, port, str(FLOOD_SECONDS), "--probe", *METRICS_PATHS)
        seen, probes_beside, probes_across = finished(attackers), finished(beside), finished(across)
    finally:
        probes_app = app.stop()
        peak = sampler.stop()
    recovery = seconds_to_recover(envoy)
    figures = {"rss_idle_mib": round(idle / MIB, 1), "rss_peak_mib": round(peak / MIB, 1),
               "limit_mib": MEMORY_LIMIT_MIB, "seconds": FLOOD_SECONDS, "app_requests": probes_app,
               f"metrics_port_from_the_{origin}": probes_beside, f"metrics_port_from_the_{other}": probes_across,
               "recovery_seconds": round(recovery, 2), "attackers": seen}
    record_figures("metrics-port", envoy.settings.build, f"{attack} from the {origin}", figures)

    assert all(result["opened"] > 0 for result in seen.values()), seen
    assert peak - idle < MAX_GROWTH_MIB * MIB, figures
    assert peak < MAX_SHARE_OF_LIMIT * MEMORY_LIMIT_MIB * MIB, figures
    # The app's own requests are served throughout, and so is the other side of the metrics port.
    assert set(probes_app) == {"200"}, figures
    assert all(set(counts) == {"200"} for counts in probes_across.values()), figures
    # The attackers' side is served, refused with a Status or, past its connection limit, closed before a byte is
    # read; never left hanging.
    assert all(set(counts) <= {"200", "Status 503", "closed"} for counts in probes_beside.values()), figures
    assert envoy.process.poll() is None


# --- What a scrape may ask: nothing but the fixed query ------------------------------------------------------

def scrape_names(body: bytes) -> set:
    return {line.split()[2] for line in body.decode().splitlines() if line.startswith("# TYPE ")}


@pytest.fixture(scope="module")
def metrics_target(tmp_path_factory, pki, apiserver, podward_build):
    from podward.local.envoy_process import Envoy
    from podward.local.envoy_process import local_settings
    from podward.local.kubelet import LocalPod
    root = tmp_path_factory.mktemp("metrics-target")
    pod = LocalPod(root / "pod", pki)
    apiserver.accept(pod.issue_token())
    envoy = Envoy(local_settings(pod, apiserver.port, pki.ca_cert, build=podward_build), root / "envoy",
                  env=pod.env).start()
    yield envoy
    envoy.stop()


def test_a_scrape_is_the_fixed_query_whatever_the_scraper_accepts(metrics_target):
    port = metrics_target.settings.metrics_port
    [plain] = exchange(port, http1("GET", METRICS_PATH))
    [protobuf] = exchange(port, http1("GET", METRICS_PATH, {
        "Accept": "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"}))
    # Admin's answer to the fixed query, asked afterwards: the stats used by then, those scrapes' own included.
    status, fixed = metrics_target.admin(f"{METRICS_PATH}?{SCRAPE_QUERY}")
    for answer in (plain, protobuf):
        assert answer.status == 200 and answer.headers["content-type"].startswith("text/plain")
        assert scrape_names(answer.body) <= scrape_names(fixed)
    # podward's metrics and Envoy's essentials: far smaller than every stat, which admin answers unasked.
    status, everything = metrics_target.admin(METRICS_PATH)
    assert len(plain.body) < len(everything) / 3
    # podward's metrics, zero or not, once its filter has started (the wasm build's, at the first request).
    exchange(metrics_target.settings.listen_port, http1("GET", "/api"))
    settled = scrape_names(metrics_target.settled_prometheus(
        lambda text: "podward_requests_total" in text and "podward_token_expiry_seconds" in text).encode())
    assert {"podward_token_expiry_seconds", "podward_requests_total", "podward_token_refresh_failures_total",
            "podward_token_stale_total", "podward_file_refresh_failures_total"} <= settled
    assert ESSENTIALS <= settled
    assert not {name for name in settled if "admin" in name or "podward_files" in name or "ready" in name}


# Envoy's own metrics a scrape carries: health, memory and overload; the app's connections and requests; the API
# server's; and the connections each listener refused.
ESSENTIALS = {"envoy_server_live", "envoy_server_state", "envoy_server_uptime", "envoy_server_memory_allocated",
              "envoy_overload_envoy_overload_actions_stop_accepting_requests_active",
              "envoy_http_downstream_rq_xx", "envoy_http_downstream_cx_active",
              "envoy_cluster_upstream_rq_active", "envoy_cluster_upstream_rq_active_overflow",
              "envoy_cluster_upstream_cx_connect_fail", "envoy_cluster_ssl_fail_verify_san",
              "envoy_listener_downstream_global_cx_overflow", "envoy_connection_limit_limited_connections"}


# Query strings that reached admin on main: each chose what admin computed, or got its usage text.
SCRAPE_QUERIES = ["?filter=[", "?filter=.*", "?histogram_buckets=detailed", "?format=protobuf", "?hidden=showonly",
                  "?usedonly", "?text_readouts", "?", "?safe", "/", "?" + "a" * 2000]


@pytest.mark.parametrize("query", SCRAPE_QUERIES, ids=lambda query: query[:20])
def test_a_scrape_with_a_query_string_gets_a_404_status(metrics_target, query):
    [answer] = exchange(metrics_target.settings.metrics_port, http1("GET", METRICS_PATH + query))
    status = answer.status_object()
    assert (answer.status, status["reason"]) == (404, "NotFound")
    assert "serves only" in status["message"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"])
def test_other_methods_on_the_metrics_port_get_a_404_status(metrics_target, method):
    for path in (METRICS_PATH, READY_PATH):
        [answer] = exchange(metrics_target.settings.metrics_port, http1(method, path))
        assert answer.status == 404 and answer.status_object()["reason"] == "NotFound"


@pytest.mark.parametrize("name, data, code", [
    ("headers-over-the-metrics-limit", http1("GET", METRICS_PATH, {"X-Big": "a" * 5000}), 431),
    ("too-many-headers", http1("GET", METRICS_PATH, {f"X-{i}": "v" for i in range(40)}), 431),
    ("http-1.0", b"GET /stats/prometheus HTTP/1.0\r\n\r\n", 426),
    ("h2c-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
])
def test_what_the_metrics_port_refuses_is_a_status(metrics_target, name, data, code):
    [answer] = exchange(metrics_target.settings.metrics_port, data)
    assert answer.status == code and answer.status_object()["code"] == code


def test_a_prometheus_scrape_and_a_kubelet_probe_are_served(metrics_target):
    # What Prometheus 3 and the kubelet send, headers and all, fits the metrics port's small limits.
    port = metrics_target.settings.metrics_port
    [scrape] = exchange(port, http1("GET", METRICS_PATH, {
        "User-Agent": "Prometheus/3.5.0", "Accept-Encoding": "gzip", "X-Prometheus-Scrape-Timeout-Seconds": "10",
        "Accept": "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.5,"
                  "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=underscores;"
                  "q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"}, host=b"10.88.0.7:9102"))
    assert scrape.status == 200 and b"# TYPE envoy_server_live" in scrape.body
    [probe] = exchange(port, http1("GET", READY_PATH, {"User-Agent": "kube-probe/1.36", "Accept": "*/*",
                                                             "Connection": "close"}, host=b"10.88.0.7:9102"))
    assert probe.status == 200 and json.loads(probe.body)["status"] == "Success"
