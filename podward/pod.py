"""The pod pieces every shipped manifest is made of: the sidecar container (Envoy under its draining entrypoint),
its volumes, the app's way to its socket, the example pod, and the ConfigMaps they mount. manifests.py builds the
injection, the kustomize tree and the Istio plugin from these."""

from __future__ import annotations

import base64
import json

from podward.constants import (ADMIN_DIR, CONCURRENCY, CONFIGMAP, CONFIGMAP_ENV, DEFAULT_POLICY, DRAIN_FILE_NAME,
                               ENVOY_IMAGE, MEMORY_LIMIT_MIB, MEMORY_REQUEST_MIB, METRICS_PATH, METRICS_PORT,
                               POD_FIELD_ENV, PODINFO_DIR, PODWARD_DIR, POLICY_CONFIGMAP, POLICY_CONFIGMAP_ENV,
                               POLICY_DIR, POLICY_KEY, READY_PATH, REQUEST_TIMEOUT_MARGIN_MS, RESOURCE_ENV,
                               SERVICE_ACCOUNT_DIR, SOCKET_DIR, STARTUP_WAIT_MS)

# The de-facto scrape annotations (Prometheus' kubernetes-pods example job).
PROMETHEUS_ANNOTATIONS = {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT),
                          "prometheus.io/path": METRICS_PATH}
SOCKET_VOLUME = "podward-socket"

# Graceful shutdown. Envoy 1.40 exits at once on SIGTERM: its drain starts only from admin, a hot restart or
# an LDS change, none of which a signal reaches. So the sidecar's entrypoint is a short shell script that runs
# Envoy and, on SIGTERM, turns the drain file from 0 to 1. That file is an injected resource the overload
# manager reads: at 1, Envoy refuses new connections, and answers each request on a kept-alive connection
# with `Connection: close`, so connections end once their requests have. DRAIN_SECONDS
# later the script passes SIGTERM on, and Envoy exits. The drain outlasts request_timeout, so a request
# still arriving at SIGTERM gets its answer (or request_timeout's Timeout Status) before Envoy exits. A
# watch, `logs -f` or exec still open then is cut: Envoy cannot end a stream it proxies cleanly.
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

SIDECAR = "podward"
# The book's app container; the sidecar's resource env vars describe it.
APP_CONTAINER = "main"
# What projected volumes ask for by default; the API server may extend it (README, "How the token gets in").
TOKEN_EXPIRATION_SECONDS = 3607
ENVOY_UID = 101  # the envoy image's user


def restricted(run_as_user) -> dict:
    """A container security context the restricted Pod Security Standard admits, with nothing to write. The
    seccomp profile is the container's own, so the sidecar passes in a pod that sets none."""
    return {"runAsNonRoot": True, "runAsUser": run_as_user, "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


def sidecar_command(drain: bool = True) -> list:
    """The sidecar container's command: Envoy under ENTRYPOINT, which drains it on SIGTERM and needs /bin/sh; or,
    `drain=False`, Envoy alone, for an image without a shell (distroless), whose bootstrap then has no drain
    file to read either (Settings.drain, `render.py config --no-drain`)."""
    if not drain:
        return [ENVOY_PATH]
    return ["/bin/sh", "-c", ENTRYPOINT, SIDECAR, f"{ADMIN_DIR}/{DRAIN_FILE_NAME}", str(DRAIN_SECONDS), ENVOY_PATH]


def sidecar_container(app_container=APP_CONTAINER, image=ENVOY_IMAGE, concurrency=CONCURRENCY,
                      command: list | None = None, configmap=CONFIGMAP, policy_configmap=POLICY_CONFIGMAP) -> dict:
    """Envoy and podward as a native sidecar, as every shipped manifest adds it (the example pod, the kustomize
    component, the MutatingAdmissionPolicy). The arguments may be CEL expressions (manifests.Cel) there;
    `command` is sidecar_command()'s unless given; `configmap` and `policy_configmap` are the names
    sidecar_volumes mounts."""
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
        # The kubelet stops a native sidecar only after the app containers have exited, within the pod's
        # terminationGracePeriodSeconds (README, "Shutdown").
        "command": sidecar_command() if command is None else command,
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
