"""The one source of podward's Envoy configs and Kubernetes manifests.

Every variant is generated here and nowhere else:
  * ``sidecar``: the in-cluster bootstrap (envoy/sidecar.yaml, committed);
  * ``local``: the same bootstrap pointed at local paths and a stand-in API
    server, for ``./build.sh run`` and the tests;
  * the example pod (envoy/pod.yaml, committed) and, with a built module, the
    ConfigMaps that deliver the bootstrap and the .wasm (dist/).

Run ``python envoy/render.py --help``.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import pathlib
import sys

import yaml

ENVOY_IMAGE = "envoyproxy/envoy:v1.40.0"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
PODINFO_DIR = "/etc/podinfo"
PODWARD_DIR = "/etc/podward"
API_SERVER_NAME = "kubernetes.default.svc"
FILES_LISTENER = "podward_files"

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
ENV_KEYS = [*POD_FIELD_ENV, *RESOURCE_ENV]

# Tag keys podward folds into its metric names (src/metrics.rs TAG_KEYS); each
# gets a regex that lifts `key=.=value;.;` out of the name into a tag.
METRIC_TAG_KEYS = ["verb", "group", "resource", "code", "rule", "reason", "file"]

# A watch may stay quiet for long; kube-apiserver ends watches after 30-60 min
# (--min-request-timeout 1800 s, randomised up to double), so idle streams are
# only cut after that.
STREAM_IDLE_TIMEOUT = "3700s"


@dataclasses.dataclass
class Settings:
    """What differs between the in-cluster sidecar and a local run."""

    wasm_path: str = f"{PODWARD_DIR}/podward.wasm"
    service_account_dir: str = SERVICE_ACCOUNT_DIR
    podinfo_dir: str = PODINFO_DIR
    api_address: str = API_SERVER_NAME
    api_port: int = 443
    api_sni: str = API_SERVER_NAME
    ca_file: str = f"{SERVICE_ACCOUNT_DIR}/ca.crt"
    listen_address: str = "127.0.0.1"
    listen_port: int = 8001
    admin_port: int = 9901
    plugin_config: dict = dataclasses.field(default_factory=dict)
    upstream_http2: bool = False


def _typed(type_name: str, **fields) -> dict:
    return {"@type": f"type.googleapis.com/{type_name}", **fields}


def _router() -> dict:
    return {
        "name": "envoy.filters.http.router",
        "typed_config": _typed("envoy.extensions.filters.http.router.v3.Router"),
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


def podward_filter(settings: Settings) -> dict:
    """The wasm filter, as the sidecar listener and the mesh manifests use it."""
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
                "configuration": _typed(
                    "google.protobuf.StringValue",
                    value=json.dumps(settings.plugin_config, sort_keys=True),
                ),
            },
        ),
    }


def _app_listener(settings: Settings) -> dict:
    route = {
        "match": {"prefix": "/"},
        # No route timeout: watches and `logs -f` last as long as both ends want.
        "route": {"cluster": "kubernetes", "timeout": "0s"},
    }
    manager = _connection_manager(
        "podward",
        [route],
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
        access_log=[access_log()],
        local_reply_config=unreachable_api_server_reply(),
    )
    return {
        "name": "podward",
        "address": {"socket_address": {"address": settings.listen_address, "port_value": settings.listen_port}},
        "filter_chains": [{"filters": [manager]}],
    }


# Envoy's response flags for "the API server could not be reached": no healthy
# host, connection failure (TLS verification included), overflow, reset.
UPSTREAM_FAILURE_FLAGS = ["UH", "UF", "UO", "URX", "UC", "UR", "LR"]


def unreachable_api_server_reply() -> dict:
    """Envoy's own 503s, as a Kubernetes Status that kubectl prints well.

    Only replies carrying an upstream-failure flag are rewritten: podward's own
    replies are Status objects already.
    """
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "podward could not reach the API server: %LOCAL_REPLY_BODY% (Envoy response flags %RESPONSE_FLAGS%)",
        "reason": "ServiceUnavailable",
        "code": "%RESPONSE_CODE%",
    }
    return {"mappers": [{
        "filter": {"response_flag_filter": {"flags": UPSTREAM_FAILURE_FLAGS}},
        "body_format_override": {"json_format": status, "content_type": "application/json"},
    }]}


def access_log() -> dict:
    """One JSON line per request; podward's findings come from its filter state."""
    fields = {
        "time": "%START_TIME%",
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "code": "%RESPONSE_CODE%",
        "flags": "%RESPONSE_FLAGS%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "duration_ms": "%DURATION%",
        "bytes_sent": "%BYTES_SENT%",
        "user_agent": "%REQ(USER-AGENT)%",
        "pod": "%ENVIRONMENT(POD_NAMESPACE)%/%ENVIRONMENT(POD_NAME)%",
        # podward's reading of the request and its decision (JSON text).
        "podward": "%FILTER_STATE(wasm.podward:PLAIN)%",
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
            path_mappings=[
                {"request_path_prefix": "/serviceaccount", "file_path_prefix": settings.service_account_dir},
                {"request_path_prefix": "/podinfo", "file_path_prefix": settings.podinfo_dir},
            ],
        ),
    }
    not_found = {"match": {"prefix": "/"}, "direct_response": {"status": 404}}
    return {
        "name": FILES_LISTENER,
        "internal_listener": {},
        "filter_chains": [{"filters": [_connection_manager(FILES_LISTENER, [not_found], [file_server])]}],
    }


def _api_cluster(settings: Settings) -> dict:
    tls = _typed(
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        sni=settings.api_sni,
        common_tls_context={
            "alpn_protocols": ["h2"] if settings.upstream_http2 else ["http/1.1"],
            "validation_context": {
                "trusted_ca": {"filename": settings.ca_file},
                "match_typed_subject_alt_names": [
                    {"san_type": "DNS", "matcher": {"exact": settings.api_sni}}
                ],
            },
        },
    )
    protocol = {"http2_protocol_options": {}} if settings.upstream_http2 else {"http_protocol_options": {}}
    is_ip = settings.api_address.replace(".", "").isdigit()
    return {
        "name": "kubernetes",
        "type": "STATIC" if is_ip else "STRICT_DNS",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": "kubernetes",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": settings.api_address, "port_value": settings.api_port}}}}]}],
        },
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _typed(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                explicit_http_config=protocol,
            )
        },
    }


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


def bootstrap(settings: Settings) -> dict:
    return {
        # File-based config needs a node identity; it names nothing outside the pod.
        "node": {"id": "podward", "cluster": "podward"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": settings.admin_port}}},
        "stats_config": {"stats_tags": [
            {"tag_name": key, "regex": f"({key}=\\.=(.*?);\\.;)"} for key in METRIC_TAG_KEYS
        ]},
        "bootstrap_extensions": [{
            "name": "envoy.bootstrap.internal_listener",
            "typed_config": _typed("envoy.extensions.bootstrap.internal_listener.v3.InternalListener"),
        }],
        "static_resources": {
            "listeners": [_app_listener(settings), _files_listener(settings)],
            "clusters": [_api_cluster(settings), _files_cluster()],
        },
    }


def example_pod() -> dict:
    """The book's curl-with-ambassador pod, with Envoy and podward as a native sidecar."""

    def restricted(run_as_user: int) -> dict:
        """A container security context the restricted Pod Security Standard admits, with nothing to write."""
        return {"runAsNonRoot": True, "runAsUser": run_as_user, "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}

    env = [{"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}} for name, path in POD_FIELD_ENV.items()]
    env += [
        {"name": name, "valueFrom": {"resourceFieldRef": {"containerName": "main", "resource": resource, "divisor": divisor}}}
        for name, (resource, divisor) in RESOURCE_ENV.items()
    ]
    sidecar = {
        "name": "podward",
        "image": ENVOY_IMAGE,
        # A native sidecar: starts before `main`, runs as long as the pod.
        "restartPolicy": "Always",
        # One worker: a sidecar serves one app; each worker adds a V8 VM.
        # No hot restart: a sidecar is restarted by the kubelet, not in place.
        "args": ["-c", f"{PODWARD_DIR}/envoy.yaml", "--concurrency", "1", "--log-level", "info",
                 "--disable-hot-restart"],
        "env": env,
        "volumeMounts": [
            {"name": "podward", "mountPath": PODWARD_DIR, "readOnly": True},
            {"name": "service-account", "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True},
            {"name": "podinfo", "mountPath": PODINFO_DIR, "readOnly": True},
        ],
        "startupProbe": {"tcpSocket": {"port": 8001}, "periodSeconds": 1, "failureThreshold": 30},
        # Measured (BENCHMARKS.md): ~99 MB RSS idle, ~101 MB under load at concurrency 1.
        "resources": {"requests": {"cpu": "50m", "memory": "100Mi"}, "limits": {"memory": "160Mi"}},
        "securityContext": restricted(run_as_user=101),  # the envoy image's user
    }
    main = {
        "name": "main",
        "image": "curlimages/curl:8.11.1",
        "command": ["sleep", "9999999"],
        "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}},
        # The image's curl_user: named, not numbered, so the kubelet could not check runAsNonRoot without it.
        "securityContext": restricted(run_as_user=100),
    }
    volumes = [
        {"name": "podward", "configMap": {"name": "podward"}},
        {"name": "service-account", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ]}},
        {"name": "podinfo", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        ]}},
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "curl-with-ambassador", "labels": {"app": "curl-with-ambassador"}},
        "spec": {
            # Only the sidecar mounts a token (its own projected volume); the
            # app container gets none.
            "automountServiceAccountToken": False,
            # Envoy runs as uid 101; fsGroup makes the projected token readable to it. Non-root and the
            # runtime's seccomp profile for every container: the restricted Pod Security Standard.
            "securityContext": {"fsGroup": 101, "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [sidecar],
            "containers": [main],
            "volumes": volumes,
        },
    }


def configmap(name: str, data: dict | None = None, binary: dict | None = None) -> dict:
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "podward"}}}
    if data:
        manifest["data"] = data
    if binary:
        manifest["binaryData"] = {key: base64.b64encode(value).decode() for key, value in binary.items()}
    return manifest


def to_yaml(document: dict) -> str:
    return yaml.safe_dump(document, sort_keys=False, width=120)


HEADER = "# Generated by envoy/render.py; edit that file, then run ./build.sh.\n"

# ConfigMap objects are limited to 1 MiB in total (etcd's request limit).
CONFIGMAP_LIMIT = 1024 * 1024


def write_committed(envoy_dir: pathlib.Path) -> None:
    (envoy_dir / "sidecar.yaml").write_text(HEADER + to_yaml(bootstrap(Settings())))
    (envoy_dir / "pod.yaml").write_text(HEADER + to_yaml(example_pod()))


def write_dist(dist: pathlib.Path, wasm: pathlib.Path) -> None:
    module = wasm.read_bytes()
    config = configmap("podward", data={"envoy.yaml": to_yaml(bootstrap(Settings()))}, binary={"podward.wasm": module})
    text = HEADER + to_yaml(config)
    if len(text.encode()) > CONFIGMAP_LIMIT:
        sys.exit(f"the podward ConfigMap is {len(text.encode())} bytes, over the 1 MiB limit")
    (dist / "podward-configmap.yaml").write_text(text)
    digest = hashlib.sha256(module).hexdigest()
    print(f"podward ConfigMap: {len(text.encode())} bytes (limit {CONFIGMAP_LIMIT}); wasm sha256 {digest}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envoy-dir", type=pathlib.Path, default=pathlib.Path(__file__).parent)
    parser.add_argument("--dist", type=pathlib.Path, help="also write the ConfigMaps here")
    parser.add_argument("--wasm", type=pathlib.Path, help="the built module, for the ConfigMap")
    args = parser.parse_args()
    write_committed(args.envoy_dir)
    if args.dist:
        args.dist.mkdir(parents=True, exist_ok=True)
        write_dist(args.dist, args.wasm)


if __name__ == "__main__":
    main()
