"""The sidecar's fixed facts: its image, where each of its files is mounted, the names and ports it answers on,
how long it holds a request, its memory. What podward's Rust core, build.sh and this package share comes from
constants.json, their one source (the core's unit tests hold its copies to the same file)."""

from __future__ import annotations

import json
import pathlib

# The checkout this package is installed from (editable, by ./build.sh): constants.json and the built modules.
REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = json.loads((REPO / "constants.json").read_text())
# What ./build.sh builds.
BUILT_MODULES = {"wasm": REPO / "dist" / "podward.wasm", "native": REPO / "dist" / "libpodward.so"}

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
# Prometheus scrapes this port from outside the pod; it serves GET METRICS_PATH
# (proxied to admin) and nothing else, so it may listen on every address.
METRICS_PORT = 9102
METRICS_PATH = "/stats/prometheus"
# The kubelet's startup probe: GET READY_PATH on the metrics port reaches podward's own readiness answer
# (src/filter.rs READINESS_PATH) on the app listener, the only listener that runs podward. podward's filter
# is never put on the metrics port, which the cluster network reaches: every other path there would be
# forwarded with the token.
READY_PATH = "/ready"
PODWARD_READY_PATH = SHARED["readiness_path"]

# The app's Unix socket, like `kubectl proxy --unix-socket`: in an emptyDir that the sidecar and the app
# containers that may borrow the pod's identity mount (read-only: a client cannot replace the socket with
# its own). 0660: Envoy (the owner) and the pod's fsGroup may connect. The kubelet makes a fsGroup emptyDir
# setgid, so the socket belongs to that group, and gives every container of the pod the group; a process
# that dropped it, or runs in a container without the mount, cannot connect. 0666 would let any uid in
# a mounting container in; the default (umask, 0755) would let only Envoy's uid connect.
SOCKET_DIR = "/var/run/podward"
APP_SOCKET = f"{SOCKET_DIR}/api.sock"
APP_SOCKET_MODE = 0o660

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
# The identity headers podward sends from those variables by default (src/config.rs DEFAULT_ENV_HEADERS), and
# the plugin configuration's field that has Envoy's route add them instead (src/config.rs ROUTE_ADDS_ENV_HEADERS).
ENV_HEADERS = SHARED["env_headers"]
ROUTE_ADDS_ENV_HEADERS = "route_adds_env_headers"

# Tag keys podward folds into its metric names (src/metrics.rs TAG_KEYS); each
# gets a regex that lifts `key=.=value;.;` out of the name into a tag.
METRIC_TAG_KEYS = SHARED["metric_tag_keys"]

# The default `startup_wait_ms` (src/config.rs): how long podward holds a
# request that arrived before the first token.
STARTUP_WAIT_MS = SHARED["startup_wait_ms"]
# Envoy answers a Timeout Status to a request not fully received (408) or
# still held by a filter (504) this long after podward would have answered it
# itself, so no request waits without bound even if the filter loses track of
# it (a VM reload).
REQUEST_TIMEOUT_MARGIN_MS = 1000

# The sidecar's drain switch (pod.ENTRYPOINT), a file beside the admin socket.
DRAIN_FILE_NAME = "draining"
# Envoy's workers, as its --concurrency argument: one, as a sidecar serves one app and each worker adds a V8 VM.
CONCURRENCY = "1"

# The sidecar's memory (RSS), wasm build: ~93 MiB idle and 130 MiB at the peak
# of the benchmark's flood at every limit (BENCHMARKS.md); the native
# build is lower. The limit leaves room for worse; Envoy's own heap gets what the rest leaves of it as its
# overload budget (bootstrap.HEAP_BUDGET_BYTES).
MEMORY_REQUEST_MIB = 112
MEMORY_LIMIT_MIB = 192
