"""What a platform team applies, built from the pod pieces (pod.py) and the Envoy bootstrap: the documents of
the deploy/ tree but the sidecar's own files (deployables.py writes them all).

  * ``inject/injection.yaml``: a MutatingAdmissionPolicy (Kubernetes 1.36+) that adds the sidecar to every
    pod labelled ``podward.io/inject: "true"`` in a namespace labelled ``podward.io/injection: enabled``, its
    binding, and the parameters (a ConfigMap in ``podward-system``);
  * ``kustomize/components/podward`` (and ``-native``): the same sidecar for older clusters, added by
    kustomize to the labelled workloads of a kustomization;
  * ``kustomize/base``: the example workload as a Deployment, its RBAC and the policy ConfigMap;
  * ``kustomize/overlays/example`` (and ``example-native``): a namespace that enforces the restricted Pod
    Security Standard (``team-a``; ``team-b`` for the native build), a name prefix, the token's expiry, and the
    ``read-only`` policy in the policy ConfigMap;
  * ``istio/wasmplugin.yaml``: podward in an Istio sidecar (see README.md);
  * ``rbac/podward-app.yaml``: a ClusterRole of what an app behind podward may be granted in its namespace.

The build's podward ConfigMap (envoy.yaml and the module) is built, not committed: the committed kustomizations
leave it out, so that each renders as it stands, and their copies in dist/kustomize add it (kustomize_files).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from podward.constants import CONCURRENCY, CONFIGMAP, ENV_KEYS, ENVOY_IMAGE, POLICY_CONFIGMAP
from podward.pod import (SIDECAR, SIDECAR_FS_GROUP, TOKEN_EXPIRATION_SECONDS, app_socket_mount, configmap,
                         example_pod, policy_configmap, sidecar_command, sidecar_container, sidecar_volumes)
from podward.settings import Settings

APP = example_pod()["metadata"]["name"]
CONFIGMAP_NAME = CONFIGMAP  # deployables.module_configmap's, mounted by pod.example_pod()
# The built ConfigMap `podward` of each build (dist/), and the policy's ConfigMap, as the kustomizations name them.
MODULE_CONFIGMAP_FILES = {"wasm": "podward-configmap.yaml", "native": "podward-native-configmap.yaml"}
POLICY_CONFIGMAP_FILE = "podward-policy.yaml"
KUSTOMIZE_DIR = "kustomize"
BASE_DIR = f"{KUSTOMIZE_DIR}/base"
# Each build's example overlay: the base in a namespace of its own, with that build's ConfigMap.
OVERLAY_DIRS = {"wasm": f"{KUSTOMIZE_DIR}/overlays/example", "native": f"{KUSTOMIZE_DIR}/overlays/example-native"}
WASMPLUGIN_FILE = "istio/wasmplugin.yaml"
# Current kustomize (v5, in kubectl 1.37): `resources` and `patches`. No file may lie outside a
# kustomization's own directory, hence the policy ConfigMap is written next to the base and each component.
KUSTOMIZATION = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}

EXAMPLE_NAMESPACES = {"wasm": "team-a", "native": "team-b"}
EXAMPLE_NAMESPACE = EXAMPLE_NAMESPACES["wasm"]
EXAMPLE_PREFIX = "team-a-"


def example_prefix(build: str) -> str:
    """The example overlay's name prefix: its namespace's name."""
    return f"{EXAMPLE_NAMESPACES[build]}-"


EXAMPLE_POLICY = {"preset": "read-only"}
# The API server refuses less than 600 s. No audience: the token then gets the
# API server's own (--api-audiences, else its issuer), which differs between
# kubeadm, EKS and GKE; a fixed one would get 401 wherever it is not that.
EXAMPLE_TOKEN = {"expirationSeconds": 1800}
# What platform teams require of a namespace before a sidecar goes in.
POD_SECURITY_LABELS = {"pod-security.kubernetes.io/enforce": "restricted",
                       "pod-security.kubernetes.io/enforce-version": "latest"}

# In an Istio sidecar the app cannot use 127.0.0.1:8001 (loopback is not
# captured); it calls this mesh host, defined by a ServiceEntry (README.md).
ISTIO_API_HOST = "kube-apiserver.podward.internal"
ISTIO_API_PORT = 8001

def deployment() -> dict:
    """example_pod(), unchanged, as the template of a one-replica Deployment."""
    pod = example_pod()
    labels = pod["metadata"]["labels"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": pod["metadata"]["annotations"]},
                "spec": {"serviceAccountName": APP, **pod["spec"]},
            },
        },
    }


def rbac() -> list:
    """A read-only app: its service account may get, list and watch pods in its namespace."""
    service_account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": APP}}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{APP}-pod-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        # kustomize's `namespace:` rewrites this namespace too.
        "subjects": [{"kind": "ServiceAccount", "name": APP, "namespace": "default"}],
    }
    return [service_account, role, binding]


# --- What an app behind podward may be granted ----------------------------------------------------------------

APP_ROLE = "podward-app"
APP_ROLE_FILE = "rbac/podward-app.yaml"
READ = ["get", "list", "watch"]
WRITE = ["create", "update", "patch", "delete", "deletecollection"]


def app_role() -> dict:
    """A ClusterRole to bind in a namespace (a RoleBinding, as `edit` is bound) to the service account whose
    identity podward lends: the objects an app commonly reads and writes, and none of what would take it past
    podward's policy or hand it a token. podward cannot see request bodies, so RBAC must withhold: pods and
    pod templates (a pod without the injection label runs with the service account's own token), exec,
    attach, port-forward and debug containers, Secrets (a service-account-token Secret is a long-lived token),
    TokenRequest, impersonation, RBAC itself, certificate signing requests and the node proxy. Writes to
    ConfigMaps are granted: podward's presets refuse those to the sidecar's own (README, "Security model")."""
    rules = [
        {"apiGroups": [""], "resources": ["pods", "pods/log", "pods/status", "services", "endpoints",
                                          "configmaps", "events", "persistentvolumeclaims", "serviceaccounts",
                                          "replicationcontrollers", "limitranges", "resourcequotas"],
         "verbs": READ},
        {"apiGroups": ["apps"], "resources": ["deployments", "replicasets", "statefulsets", "daemonsets"],
         "verbs": READ},
        {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": READ},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": READ},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "networkpolicies"], "verbs": READ},
        {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": READ},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": READ},
        # Writes that start no pod and carry no credential.
        {"apiGroups": [""], "resources": ["configmaps", "services"], "verbs": WRITE},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": READ + WRITE},
        # Scaling starts pods from the template a workload has, which the team wrote.
        {"apiGroups": ["apps"], "resources": ["deployments/scale", "statefulsets/scale", "replicasets/scale"],
         "verbs": ["get", "update", "patch"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
         "verbs": ["create"]},
    ]
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": APP_ROLE, "labels": {"app.kubernetes.io/name": "podward"}}, "rules": rules}


def base_kustomization() -> dict:
    """The app with its sidecar; the overlay brings the podward ConfigMap, and so picks the build."""
    return {**KUSTOMIZATION, "resources": [POLICY_CONFIGMAP_FILE, "rbac.yaml", "deployment.yaml"],
            "configurations": [NAMES_FILE]}


NAMES_FILE = "podward-names.yaml"


def configmap_names() -> dict:
    """kustomize's name references: the sidecar's PODWARD_CONFIGMAP and PODWARD_POLICY_CONFIGMAP values name
    ConfigMaps, so that a name prefix or suffix, or a generator's hash, reaches them as it reaches the
    volumes, and podward protects the ConfigMaps the pod really mounts."""
    return {"nameReference": [{"kind": "ConfigMap", "version": "v1", "fieldSpecs": [
        {"path": "spec/template/spec/initContainers/env/value", "kind": kind}
        for kind in WORKLOAD_KINDS.split("|")]}]}


def token_source_path(workload: dict) -> str:
    """JSON pointer to the sidecar's projected serviceAccountToken source."""
    volumes = workload["spec"]["template"]["spec"]["volumes"]
    volume = next(i for i, v in enumerate(volumes) if v["name"] == "service-account")
    sources = volumes[volume]["projected"]["sources"]
    source = next(i for i, s in enumerate(sources) if "serviceAccountToken" in s)
    return f"/spec/template/spec/volumes/{volume}/projected/sources/{source}/serviceAccountToken"


def token_patch() -> list:
    """JSON 6902 operations: `add` replaces a field that exists and creates one that doesn't."""
    path = token_source_path(deployment())
    return [{"op": "add", "path": f"{path}/{field}", "value": value} for field, value in EXAMPLE_TOKEN.items()]


def policy_patch() -> dict:
    """The policy ConfigMap with the read-only preset; envoy.yaml stays the shipped one."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": POLICY_CONFIGMAP},
            "data": policy_configmap(EXAMPLE_POLICY)["data"]}


def namespace(build: str = "wasm") -> dict:
    """The example's namespace, admitting only pods that meet the restricted Pod Security Standard."""
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": EXAMPLE_NAMESPACES[build], "labels": POD_SECURITY_LABELS}}


def overlay_kustomization(build: str = "wasm", with_module: bool = True) -> dict:
    """`with_module`: with the build's ConfigMap `podward` (dist/); the committed overlay, without it, renders
    as it stands and mounts a `podward` applied on its own (`kubectl apply -f dist/podward-configmap.yaml`)."""
    module = [MODULE_CONFIGMAP_FILES[build]] if with_module else []
    return {
        **KUSTOMIZATION,
        "resources": ["../../base", "namespace.yaml", *module],
        "namespace": EXAMPLE_NAMESPACES[build],
        "namePrefix": example_prefix(build),
        "patches": [
            {"path": "podward-policy.yaml"},
            {"path": "token.yaml",
             "target": {"group": "apps", "version": "v1", "kind": "Deployment", "name": APP}},
        ],
    }


# --- Injection: a MutatingAdmissionPolicy (Kubernetes 1.36+), no webhook server ------------------------------

INJECT_DIR = "inject"
INJECT_LABEL = "podward.io/inject"  # on a pod (or a workload's pod template): "true" asks for the sidecar
NAMESPACE_LABEL = "podward.io/injection"  # on a namespace: "enabled" lets the binding inject there
INJECTION = "podward-injection"  # the policy's, the binding's and the parameters' name
INJECTION_NAMESPACE = "podward-system"
# The kube-api-access-<random> volume the ServiceAccount admission plugin adds, and its mounts.
AUTOMOUNTED_TOKEN_PREFIX = "kube-api-access-"
# The parameters a platform team sets once per cluster. Each opted-in namespace holds the ConfigMaps they name:
# `configMap` (envoy.yaml and the module: the wasm build's or the native one's decides the build) and
# `policyConfigMap` (the policy, which the namespace's team owns and changes live).
INJECTION_PARAMS = {
    "image": ENVOY_IMAGE,
    # "false" for an image without /bin/sh: Envoy runs without the drain entrypoint (pod.sidecar_command), and
    # the configMap's bootstrap must then be one without a drain file (`render.py configmap --no-drain`).
    "drain": "true",
    "configMap": CONFIGMAP_NAME,
    "policyConfigMap": POLICY_CONFIGMAP,
    "concurrency": CONCURRENCY,
    "tokenExpirationSeconds": str(TOKEN_EXPIRATION_SECONDS),
}


class Cel(str):
    """A CEL expression where the sidecar's manifest has a value (pod.sidecar_container's arguments)."""


@dataclasses.dataclass
class CelChoice:
    """`condition ? when_true : when_false` in CEL, where the manifest has a value; each side a manifest value."""
    condition: str
    when_true: object
    when_false: object


# Fields whose values are maps with keys of the user's choosing, not objects with fields.
MAP_FIELDS = ("resources.requests", "resources.limits")


def to_cel(value, type_name: str, indent: int = 0) -> str:
    """A manifest value as a CEL literal of the MutatingAdmissionPolicy's typed objects (`Object.spec.…{}`):
    objects are constructed by their field path, lists element by element; one field or item a line where a
    line would be long, so that the policy reads like the manifest it builds."""
    if isinstance(value, Cel):
        return str(value)
    if isinstance(value, CelChoice):
        return (f"{value.condition} ? {to_cel(value.when_true, type_name, indent)} : "
                f"{to_cel(value.when_false, type_name, indent)}")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return json.dumps(value)
    inner = indent + 2
    if isinstance(value, list):
        opening, closing = "[", "]"
        items = [to_cel(item, type_name, inner) for item in value]
    elif type_name.endswith(MAP_FIELDS):
        opening, closing = "{", "}"
        items = [f"{json.dumps(k)}: {to_cel(v, type_name, inner)}" for k, v in value.items()]
    else:
        opening, closing = type_name + "{", "}"
        items = [f"{k}: {to_cel(v, f'{type_name}.{k}', inner)}" for k, v in value.items()]
    flat = opening + ", ".join(items) + closing
    if len(flat) + indent <= CEL_LINE and "\n" not in flat:
        return flat
    return opening + "\n" + ",\n".join(" " * inner + item for item in items) + "\n" + " " * indent + closing


# Where a CEL literal goes on several lines.
CEL_LINE = 100


def _patch(op: str, path: str, value: str) -> str:
    """One JSON patch operation in CEL; `path` and `value` are CEL expressions."""
    return f"JSONPatch{{op: {json.dumps(op)}, path: {path}, value: {value}}}"


def _path(pointer: str) -> str:
    return json.dumps(pointer)


def _each_container(kind: str, patch) -> str:
    """One JSON patch per container of `kind`: `patch(path, container)` with CEL for the container's JSON
    pointer and for the container itself."""
    containers = f"object.spec.{kind}"
    body = patch(f'"/spec/{kind}/" + string(i)', f"{containers}[i]")
    return f"(has({containers}) ? lists.range(size({containers})).map(i,\n  {body}) : [])"


def injection_mutations() -> list:
    """The pod changes, as JSON patches built in CEL. JSONPatch rather than ApplyConfiguration, which refuses
    to touch atomic lists (a projected volume's sources, capabilities.drop). A patch `value` that is a list
    literal of constructed objects made kube-apiserver 1.36.2 panic, so each list is added empty, then
    appended to item by item."""
    params = {key: Cel(f"string(params.data[{json.dumps(key)}])") for key in INJECTION_PARAMS}
    command = CelChoice(f'{params["drain"]} == "false"', sidecar_command(drain=False), sidecar_command())
    sidecar = sidecar_container(app_container=Cel("object.spec.containers[0].name"), image=params["image"],
                                concurrency=params["concurrency"], command=command,
                                configmap=params["configMap"], policy_configmap=params["policyConfigMap"])
    volumes = sidecar_volumes(
        configmap=params["configMap"], policy_configmap=params["policyConfigMap"],
        token_expiration_seconds=Cel('int(params.data["tokenExpirationSeconds"])'))
    not_automounted = f"!v.name.startsWith({json.dumps(AUTOMOUNTED_TOKEN_PREFIX)})"

    def mounts_without_token(path: str, container: str) -> str:
        # `add` replaces what is there: the container's mounts but the automounted token's, or none yet.
        kept = f"has({container}.volumeMounts) ? {container}.volumeMounts.filter(v, {not_automounted}) : []"
        return _patch("add", f'{path} + "/volumeMounts"', kept)

    kept_volumes = f"has(object.spec.volumes) ? object.spec.volumes.filter(v, {not_automounted}) : []"
    # Each mutation's result is stored as a typed Pod before the next one runs, which drops an empty list:
    # a list is made and appended to within one mutation.
    volumes_mutation = "\n+ ".join([
        # ServiceAccount admission ran before this policy and runs again after it: with automount off it
        # leaves the pod alone the second time, so the volume and mounts it added the first time go for good.
        f'[{_patch("add", _path("/spec/automountServiceAccountToken"), "false")}]',
        f'[{_patch("add", _path("/spec/volumes"), kept_volumes)}]',
        "[\n" + ",\n".join(_patch("add", _path("/spec/volumes/-"), to_cel(volume, "Object.spec.volumes"))
                             for volume in volumes) + "\n]",
    ])
    socket_mount = to_cel(app_socket_mount(), "Object.spec.containers.volumeMounts")
    mounts_mutation = "\n+ ".join([
        _each_container("containers", mounts_without_token),
        # Every app container may use the socket, as it may use the TCP port.
        _each_container("containers", lambda path, _: _patch("add", f'{path} + "/volumeMounts/-"', socket_mount)),
        _each_container("initContainers", mounts_without_token),
    ])
    sidecar_mutation = "\n+ ".join([
        f'(has(object.spec.initContainers) ? [] : [{_patch("add", _path("/spec/initContainers"), "[]")}])',
        # First, so that it starts before the pod's own init containers, which may call the API too.
        f'[{_patch("add", _path("/spec/initContainers/0"), to_cel(sidecar, "Object.spec.initContainers"))}]',
    ])
    # The app's socket belongs to the pod's fsGroup, which every container gets; any fsGroup will do.
    pod_security_context = to_cel({"fsGroup": SIDECAR_FS_GROUP}, "Object.spec.securityContext")
    fs_group = "\n: ".join([
        f'!has(object.spec.securityContext) ? [{_patch("add", _path("/spec/securityContext"), pod_security_context)}]',
        "has(object.spec.securityContext.fsGroup) ? []",
        f'[{_patch("add", _path("/spec/securityContext/fsGroup"), str(SIDECAR_FS_GROUP))}]',
    ])
    return [{"patchType": "JSONPatch", "jsonPatch": {"expression": expression}}
            for expression in (volumes_mutation, mounts_mutation, sidecar_mutation, fs_group)]


def injection_policy() -> dict:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": INJECTION, "labels": {"app.kubernetes.io/name": "podward"}},
        "spec": {
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "matchConstraints": {
                "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                   "resources": ["pods"]}],
                # Opt-in by the pod: injection takes the app's own token away, which an app that calls the
                # API server itself would miss.
                "objectSelector": {"matchLabels": {INJECT_LABEL: "true"}},
            },
            "matchConditions": [{"name": "not-yet-injected", "expression":
                                 f'!has(object.spec.initContainers) || '
                                 f'!object.spec.initContainers.exists(c, c.name == "{SIDECAR}")'}],
            # No pod that asked for the sidecar starts without it, with the app's own token instead.
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "mutations": injection_mutations(),
        },
    }


def injection_binding() -> dict:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": INJECTION, "labels": {"app.kubernetes.io/name": "podward"}},
        "spec": {
            "policyName": INJECTION,
            "paramRef": {"name": INJECTION, "namespace": INJECTION_NAMESPACE, "parameterNotFoundAction": "Deny"},
            # The namespaces a platform team enables; pods elsewhere are left alone, labelled or not.
            "matchResources": {"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: "enabled"}}},
        },
    }


def injection_documents() -> list:
    """What a platform team applies once per cluster: the parameters' namespace, the parameters, the policy and
    its binding."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": INJECTION_NAMESPACE}},
        {**configmap(INJECTION, data=INJECTION_PARAMS),
         "metadata": {"name": INJECTION, "namespace": INJECTION_NAMESPACE,
                      "labels": {"app.kubernetes.io/name": "podward"}}},
        injection_policy(),
        injection_binding(),
    ]


# --- The same sidecar as a kustomize component, for clusters older than 1.36 ---------------------------------

COMPONENTS = {"wasm": f"{KUSTOMIZE_DIR}/components/podward", "native": f"{KUSTOMIZE_DIR}/components/podward-native"}
# Kinds whose pod template is spec.template.
WORKLOAD_KINDS = "Deployment|StatefulSet|DaemonSet|ReplicaSet|Job"


def component_patch() -> dict:
    """A strategic-merge patch of a workload's pod template: lists merge by name, so a workload that already
    has the sidecar keeps one. The app containers keep their own names and mounts; they get no token."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "any-labelled-workload"},
        "spec": {"template": {"spec": {
            "automountServiceAccountToken": False,
            "initContainers": [sidecar_container()],
            "volumes": sidecar_volumes(),
        }}},
    }


def component_app_container_patch() -> list:
    """JSON 6902 operations that point the sidecar's resource env vars at the workload's first container, as
    the injection does: the strategic merge puts the sidecar first among the init containers (`test` fails
    the build, rather than patch another container, if it is not)."""
    template = "/spec/template/spec"
    env = sidecar_container()["env"]
    return [{"op": "test", "path": f"{template}/initContainers/0/name", "value": SIDECAR}] + [
        {"op": "copy", "from": f"{template}/containers/0/name",
         "path": f"{template}/initContainers/0/env/{index}/valueFrom/resourceFieldRef/containerName"}
        for index, variable in enumerate(env) if "resourceFieldRef" in variable.get("valueFrom", {})]


def component_kustomization(build: str, with_module: bool = True) -> dict:
    """`with_module`: as overlay_kustomization."""
    # The workloads of the kustomization that carry the label; kustomize reads `kind` as a regex.
    target = {"kind": WORKLOAD_KINDS, "labelSelector": f"{INJECT_LABEL}=true"}
    module = [MODULE_CONFIGMAP_FILES[build]] if with_module else []
    return {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component",
        "resources": [*module, POLICY_CONFIGMAP_FILE],
        "configurations": [NAMES_FILE],
        "patches": [{"path": "sidecar.yaml", "target": target}, {"path": "app-container.yaml", "target": target}],
    }


def istio_plugin_config() -> dict:
    """podward's configuration inside istio-proxy: only requests for the API host get the token."""
    return {"accept_hosts": [ISTIO_API_HOST], "policy": EXAMPLE_POLICY}


def wasm_plugin(module: bytes) -> dict:
    spec = {
        "selector": {"matchLabels": {"app": APP}},
        # The podward ConfigMap, mounted into istio-proxy (README.md). Istio
        # checks sha256 only for modules it downloads (oci://, https://).
        "url": f"file://{Settings().wasm_path}",
        "sha256": hashlib.sha256(module).hexdigest(),
        "pluginName": "podward",
        # Before Istio's own filters, so a refused request goes no further.
        "phase": "AUTHN",
        # As in bootstrap.podward_filter. Istio's CRD has FAIL_RELOAD in current
        # releases, not in 1.24's: there, use FAIL_CLOSE (never FAIL_OPEN).
        "failStrategy": "FAIL_RELOAD",
        # Outbound requests on the API host's port only; there, accept_hosts
        # refuses any other host, so the token goes nowhere else.
        "match": [{"mode": "CLIENT", "ports": [{"number": ISTIO_API_PORT}]}],
        "vmConfig": {"env": [{"name": key, "valueFrom": "HOST"} for key in ENV_KEYS]},
        "pluginConfig": istio_plugin_config(),
    }
    return {
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {"name": "podward", "labels": {"app.kubernetes.io/name": "podward"}},
        "spec": spec,
    }


def kustomize_files(with_module: bool) -> dict:
    """The kustomize tree, as documents by path: committed without the built ConfigMaps, in dist/ with them
    (overlay_kustomization)."""
    return {
        f"{BASE_DIR}/kustomization.yaml": [base_kustomization()],
        f"{BASE_DIR}/deployment.yaml": [deployment()],
        f"{BASE_DIR}/rbac.yaml": rbac(),
        f"{BASE_DIR}/{POLICY_CONFIGMAP_FILE}": [policy_configmap()],
        f"{BASE_DIR}/{NAMES_FILE}": [configmap_names()],
        **{f"{directory}/{name}": documents for build, directory in OVERLAY_DIRS.items() for name, documents in (
            ("kustomization.yaml", [overlay_kustomization(build, with_module)]),
            ("namespace.yaml", [namespace(build)]),
            (POLICY_CONFIGMAP_FILE, [policy_patch()]),
            ("token.yaml", [token_patch()]))},
        **{f"{directory}/{name}": documents for build, directory in COMPONENTS.items() for name, documents in (
            ("kustomization.yaml", [component_kustomization(build, with_module)]),
            ("sidecar.yaml", [component_patch()]),
            ("app-container.yaml", [component_app_container_patch()]),
            (POLICY_CONFIGMAP_FILE, [policy_configmap()]),
            (NAMES_FILE, [configmap_names()]))},
    }


def manifest_files(module: bytes) -> dict:
    """Every committed manifest, as documents by path under deploy/."""
    return {
        **kustomize_files(with_module=False),
        f"{INJECT_DIR}/injection.yaml": injection_documents(),
        WASMPLUGIN_FILE: [wasm_plugin(module)],
        APP_ROLE_FILE: [app_role()],
    }
