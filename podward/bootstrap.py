"""The Envoy bootstrap of a podward sidecar, as one function of its Settings: the app's listener with podward
on it, the metrics and readiness port, the wasm build's file listener, the API server's clusters, the bounds on
everything the app or the cluster network can make Envoy hold, and the Kubernetes Status of every answer Envoy
makes itself."""

from __future__ import annotations

import copy
import ipaddress
import urllib.parse

from podward.constants import (ADMIN_SOCKET_MODE, APP_SOCKET_MODE, ENV_KEYS, FILES_LISTENER, MEMORY_LIMIT_MIB,
                               METRIC_TAG_KEYS, METRICS_PATH, PODWARD_READY_PATH, READY_PATH)
from podward.settings import Settings

ADMIN_CLUSTER = "envoy_admin"
READY_CLUSTER = "podward_ready"
# Within the startup probe's timeoutSeconds (1 s): Envoy answers before the kubelet gives up.
READY_TIMEOUT = "0.9s"
# The overload manager's resource that the entrypoint's drain file feeds (Settings.drain).
DRAIN_MONITOR = "podward.draining"
METRICS_LISTENER = "podward_metrics"
# A watch may stay quiet for long; kube-apiserver ends watches after 30-60 min
# (--min-request-timeout 1800 s, randomised up to double), so idle streams are
# only cut after that.
STREAM_IDLE_TIMEOUT = "3700s"

# A client sends its headers at once; a slow trickle is a slowloris.
REQUEST_HEADERS_TIMEOUT = "5s"

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
# Of the sidecar's memory limit, what is not Envoy's heap (the binary's file pages ~50 MiB, the V8 VMs ~25 MiB,
# allocator caches and headroom) is set aside; Envoy's own heap gets the rest as its overload budget (see
# _overload_manager).
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


def _connection_manager(stat_prefix: str, routes: list, http_filters: list, headers_to_add: list = (),
                        **extra) -> dict:
    virtual_host = {"name": stat_prefix, "domains": ["*"], "routes": routes}
    if headers_to_add:
        virtual_host["request_headers_to_add"] = list(headers_to_add)
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": _typed(
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            stat_prefix=stat_prefix,
            route_config={"virtual_hosts": [virtual_host]},
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


def env_headers_to_add(settings: Settings) -> list:
    """The identity headers Envoy adds to every forwarded request from its environment, the same variables
    the filter would read (route_adds_env_headers). Only if absent: a value that needs encoding podward adds
    itself, encoded, so that both ways send the same bytes. An empty value is not sent, as podward sends none."""
    return [{"header": {"key": header, "value": f"%ENVIRONMENT({variable})%"}, "append_action": "ADD_IF_ABSENT"}
            for header, variable in settings.route_env_headers.items()]


def _app_listener(settings: Settings) -> dict:
    manager = _connection_manager(
        "podward",
        api_routes(),
        [podward_filter(settings)],
        headers_to_add=env_headers_to_add(settings),
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
