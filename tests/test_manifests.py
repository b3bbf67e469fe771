"""What a platform team applies: every shipped Envoy config loads in the real
Envoy, every committed file is what the generators produce now, every
Kubernetes manifest passes the Kubernetes (or CRD) schema offline, and the
module in the ConfigMaps is byte for byte the one that was built."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from podward import manifests
from podward.bootstrap import bootstrap
from podward.constants import (ADMIN_DIR, BUILT_MODULES, ENV_HEADERS, ENV_KEYS, METRIC_TAG_KEYS, PODINFO_DIR,
                               PODWARD_DIR, POLICY_CONFIGMAP, POLICY_DIR, POLICY_KEY, REPO, ROUTE_ADDS_ENV_HEADERS,
                               SERVICE_ACCOUNT_DIR, SOCKET_DIR)
from podward.deployables import CONFIGMAP_LIMIT, SIDECAR_FILES, deploy_files
from podward.documents import to_yaml
from podward.local.envoy_process import ENVOY_BINARY, WASM
from podward.manifests import MODULE_CONFIGMAP_FILES, POLICY_CONFIGMAP_FILE
from podward.pod import SIDECAR, app_socket_mount, example_pod, restricted, sidecar_container, sidecar_volumes
from podward.settings import Settings, shipped_settings

DEPLOY_DIR = REPO / "deploy"
DIST = REPO / "dist"
CONFIGMAP = DIST / MODULE_CONFIGMAP_FILES["wasm"]
KUSTOMIZE = DIST / "kustomize"
# The oldest release with native sidecars on by default, and the newest schema shipped.
KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]
# Kubernetes' limit on a ConfigMap's keys and values together (ValidateConfigMap).
CONFIGMAP_PAYLOAD_LIMIT = 1024 * 1024


def load_all(text: str) -> list:
    return [document for document in yaml.safe_load_all(text) if document]


def kustomize(directory: pathlib.Path) -> list:
    kubectl = os.environ.get("KUBECTL")
    if not kubectl:
        pytest.fail("KUBECTL is not set: run the tests with ./build.sh test")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    # No deprecation warnings either: the tree is written in current kustomize.
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return load_all(result.stdout)


@pytest.fixture(scope="module")
def base_resources() -> list:
    return kustomize(KUSTOMIZE / "base")


@pytest.fixture(scope="module")
def overlays() -> dict:
    """Each build's example overlay, built."""
    return {build: kustomize(DIST / directory) for build, directory in manifests.OVERLAY_DIRS.items()}


@pytest.fixture(scope="module")
def overlay_resources(overlays) -> list:
    return overlays["wasm"]


def only(resources: list, kind: str) -> dict:
    [resource] = [r for r in resources if r["kind"] == kind]
    return resource


def module_digest() -> str:
    return hashlib.sha256(WASM.read_bytes()).hexdigest()


# --- Drift: committed files are what the generators produce now -------------

@pytest.mark.parametrize("relative", sorted(deploy_files(WASM.read_bytes())))
def test_committed_file_is_what_the_generators_produce(relative):
    assert (DEPLOY_DIR / relative).read_text() == deploy_files(WASM.read_bytes())[relative], \
        f"deploy/{relative} is stale: run ./build.sh"


def test_deploy_holds_only_generated_files():
    """Nothing in deploy/ is written by hand, and nothing the generators no longer write stays."""
    committed = {str(path.relative_to(DEPLOY_DIR)) for path in DEPLOY_DIR.rglob("*") if path.is_file()}
    assert committed == set(deploy_files(WASM.read_bytes()))


COMMITTED_KUSTOMIZATIONS = sorted(str(path.parent.relative_to(DEPLOY_DIR))
                                  for path in DEPLOY_DIR.rglob("kustomization.yaml"))


@pytest.mark.parametrize("directory", COMMITTED_KUSTOMIZATIONS)
def test_every_committed_kustomization_renders_as_it_stands(directory):
    """`kubectl kustomize deploy/…` on a fresh checkout, nothing built: the committed tree names no built file
    (the module's ConfigMap is dist/'s), and no file outside a kustomization's directory."""
    resources = kustomize(DEPLOY_DIR / directory)
    assert resources
    names = {(r["kind"], r["metadata"]["name"]) for r in resources}
    assert not any(kind == "ConfigMap" and name.endswith(manifests.CONFIGMAP_NAME) for kind, name in names)


def test_built_kustomize_tree_is_the_committed_one_plus_the_configmaps():
    """dist/kustomize is deploy/kustomize with each build's ConfigMap `podward` in its overlay and component."""
    committed = {path.relative_to(DEPLOY_DIR): path for path in (DEPLOY_DIR / "kustomize").rglob("*") if path.is_file()}
    built = {path.relative_to(DIST): path for path in KUSTOMIZE.rglob("*") if path.is_file()}
    module_configmaps = {}  # directory -> the ConfigMap file it adds
    for build, directory in [*manifests.OVERLAY_DIRS.items(), *manifests.COMPONENTS.items()]:
        configmap_file = MODULE_CONFIGMAP_FILES[build]
        assert (DIST / directory / configmap_file).read_bytes() == (DIST / configmap_file).read_bytes()
        module_configmaps[pathlib.Path(directory)] = configmap_file
    assert set(built) == set(committed) | {directory / name for directory, name in module_configmaps.items()}
    for relative, path in committed.items():
        committed_text, built_text = path.read_text(), built[relative].read_text()
        if relative.parent not in module_configmaps or relative.name != "kustomization.yaml":
            assert built_text == committed_text, relative
            continue
        # The same kustomization, with the ConfigMap among its resources.
        committed_kustomization, built_kustomization = yaml.safe_load(committed_text), yaml.safe_load(built_text)
        added = set(built_kustomization.pop("resources")) - set(committed_kustomization.pop("resources"))
        assert added == {module_configmaps[relative.parent]}
        assert built_kustomization == committed_kustomization


def test_every_metric_tag_key_of_the_module_has_an_extraction_regex():
    """The module folds tags into metric names; Envoy lifts out only those the bootstrap knows (src/metrics.rs)."""
    source = (REPO / "src" / "metrics.rs").read_text()
    [listed] = re.findall(r"pub const TAG_KEYS: &\[&str\] = &\[(.*?)\];", source, re.DOTALL)
    assert re.findall(r'"(\w+)"', listed) == METRIC_TAG_KEYS


# --- Envoy: every shipped bootstrap loads in the real binary ------------------

def shipped_bootstraps() -> dict:
    """Every envoy.yaml a pod can be given, by where it is shipped."""
    shipped = {}
    for build, sidecar in SIDECAR_FILES.items():
        configmap_file = MODULE_CONFIGMAP_FILES[build]
        shipped[f"deploy/{sidecar}"] = (DEPLOY_DIR / sidecar).read_text()
        shipped[f"dist/{configmap_file}"] = load_all((DIST / configmap_file).read_text())[0]["data"]["envoy.yaml"]
    return {
        **shipped,
        # Not shipped as a bootstrap, but the WasmPlugin's pluginConfig must be
        # one the filter accepts: validate mode runs the plugin's on_configure.
        "istio/wasmplugin.yaml pluginConfig": to_yaml(bootstrap(
            Settings(plugin_config=manifests.wasm_plugin(WASM.read_bytes())["spec"]["pluginConfig"],
                     route_adds_env_headers=False))),
    }


def in_pod_paths(root: pathlib.Path, ca_file: str) -> dict:
    """The in-cluster directories, recreated under root with the files Envoy loads at start."""
    directories = {
        SERVICE_ACCOUNT_DIR: root / "serviceaccount",
        PODINFO_DIR: root / "podinfo",
        PODWARD_DIR: root / "podward",
        POLICY_DIR: root / "policy",
        ADMIN_DIR: root / "admin",
        SOCKET_DIR: root / "socket",
    }
    for directory in directories.values():
        directory.mkdir(parents=True)
    shutil.copy(ca_file, directories[SERVICE_ACCOUNT_DIR] / "ca.crt")
    for module in BUILT_MODULES.values():
        shutil.copy(module, directories[PODWARD_DIR] / module.name)
    return directories


@pytest.mark.parametrize("shipped", sorted(shipped_bootstraps()))
def test_shipped_envoy_config_passes_envoy_validate(shipped, tmp_path, pki):
    # `--mode validate` opens the CA file and loads the module (and runs the
    # plugin's on_configure, or the dynamic module's config hook), so the pod's
    # absolute paths, which exist only in a pod, are rewritten to a copy of
    # that layout: the test PKI's CA and the built modules. Nothing else in the
    # config changes. Envoy runs with the Downward API variables the manifest has the kubelet set.
    config = shipped_bootstraps()[shipped]
    # Longest first: /var/run/podward-admin before /var/run/podward.
    for in_pod, local in sorted(in_pod_paths(tmp_path / "pod", pki.ca_cert).items(), key=lambda p: -len(p[0])):
        assert in_pod in config
        config = config.replace(in_pod, str(local))
    path = tmp_path / "envoy.yaml"
    path.write_text(config)
    result = subprocess.run([str(ENVOY_BINARY), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                 **{variable: "1" for variable in ENV_HEADERS.values()}})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert f"configuration '{path}' OK" in result.stdout + result.stderr


# --- The kustomize component on a team's own workloads --------------------------------------------------------

def labelled(workload: dict) -> dict:
    """The workload, asking for the sidecar as a team would: the label on the workload itself."""
    return {**workload, "metadata": {**workload["metadata"], "labels": {
        **workload["metadata"].get("labels", {}), manifests.INJECT_LABEL: "true"}}}


def team_workloads() -> list:
    """A team's own workloads before podward: a Deployment whose app container is not called `main`, with an
    init container and volumes of its own, a labelled StatefulSet, and one that does not ask for the sidecar."""
    app_security = restricted(run_as_user=1000)

    def template(app: str, **spec) -> dict:
        return {"metadata": {"labels": {"app": app}}, "spec": {
            "containers": [{"name": "web", "image": "nginx:1.27", "securityContext": app_security,
                            "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]}],
            "volumes": [{"name": "cache", "emptyDir": {}}], **spec}}

    def workload(kind: str, name: str, **spec) -> dict:
        return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name},
                "spec": {"selector": {"matchLabels": {"app": name}}, "template": template(name, **spec)}}

    setup = {"name": "setup", "image": "busybox:1.37", "securityContext": app_security}
    return [labelled(workload("Deployment", "web", initContainers=[setup])),
            labelled({**workload("StatefulSet", "db"), "spec": {**workload("StatefulSet", "db")["spec"],
                                                                "serviceName": "db"}}),
            workload("Deployment", "unlabelled")]


def with_component(directory: pathlib.Path, workloads: list, build: str = "wasm") -> list:
    """`kubectl kustomize` of a team's kustomization: its workloads, and the built podward component."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "workloads.yaml").write_text(yaml.safe_dump_all(workloads))
    component = os.path.relpath(DIST / manifests.COMPONENTS[build], directory)
    (directory / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["workloads.yaml"], "components": [component]}))
    return kustomize(directory)


def pod_template_spec(resources: list, name: str) -> dict:
    [workload] = [r for r in resources if r["metadata"]["name"] == name and "template" in r.get("spec", {})]
    return workload["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def component_resources(tmp_path_factory) -> list:
    return with_component(tmp_path_factory.mktemp("team"), team_workloads())


def test_the_component_adds_the_sidecar_to_the_labelled_workloads_only(component_resources):
    web = pod_template_spec(component_resources, "web")
    # The same sidecar as the example pod's, its resource variables pointing at the team's app container.
    assert web["initContainers"][0] == sidecar_container(app_container="web")
    assert [c["name"] for c in web["initContainers"]] == [SIDECAR, "setup"]
    assert web["automountServiceAccountToken"] is False
    assert [v["name"] for v in web["volumes"]] == [v["name"] for v in sidecar_volumes()] + ["cache"]
    # The app keeps its own mounts; it gets no token.
    assert web["containers"][0]["volumeMounts"] == [{"name": "cache", "mountPath": "/cache"}]
    db = pod_template_spec(component_resources, "db")
    assert [c["name"] for c in db["initContainers"]] == [SIDECAR]
    assert pod_template_spec(component_resources, "unlabelled") == team_workloads()[2]["spec"]["template"]["spec"]
    configmaps = {r["metadata"]["name"] for r in component_resources if r["kind"] == "ConfigMap"}
    assert configmaps == {manifests.CONFIGMAP_NAME, POLICY_CONFIGMAP}


def test_the_component_on_a_workload_that_has_the_sidecar_keeps_one(tmp_path, component_resources):
    again = [labelled(r) for r in component_resources if r["metadata"]["name"] == "web"]
    twice = pod_template_spec(with_component(tmp_path, again), "web")
    assert twice == pod_template_spec(component_resources, "web")


def test_the_native_component_differs_in_the_module_only(tmp_path, component_resources):
    native = with_component(tmp_path, team_workloads(), build="native")
    assert pod_template_spec(native, "web") == pod_template_spec(component_resources, "web")
    [configmap] = [r for r in native if r["metadata"]["name"] == manifests.CONFIGMAP_NAME]
    assert set(configmap["binaryData"]) == {"libpodward.so"}


# --- Kubernetes: schemas, offline ---------------------------------------------

def kubernetes_manifests(base: list, overlay: list, component: list) -> list:
    shipped = {
        "deploy/pod.yaml": load_all((DEPLOY_DIR / "pod.yaml").read_text()),
        "deploy/podward-policy.yaml": load_all((DEPLOY_DIR / POLICY_CONFIGMAP_FILE).read_text()),
        "dist/podward-configmap.yaml": load_all(CONFIGMAP.read_text()),
        "kubectl kustomize base": base,
        "kubectl kustomize overlays/example": overlay,
        "a team's workloads with components/podward": component,
    }
    return [(f"{where}: {r['kind']}/{r['metadata']['name']}", r) for where, docs in shipped.items() for r in docs]


def assert_schema(name: str, resource: dict, version: str) -> None:
    # kubernetes-validate ships the schemas; strict: unknown fields are errors.
    try:
        kubernetes_validate.validate(resource, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{name} against {version}: {'.'.join(map(str, error.path))}: {error.message}")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_pass_the_openapi_schema(version, base_resources, overlay_resources,
                                                      component_resources):
    for name, resource in kubernetes_manifests(base_resources, overlay_resources, component_resources):
        assert_schema(name, resource, version)


def test_the_injection_passes_the_1_37_schema():
    """MutatingAdmissionPolicy is admissionregistration.k8s.io/v1 from 1.36; the 1.29 schema has no such kind."""
    for resource in load_all((DEPLOY_DIR / manifests.INJECT_DIR / "injection.yaml").read_text()):
        assert_schema(f"{resource['kind']}/{resource['metadata']['name']}", resource, KUBERNETES_VERSIONS[-1])


@pytest.mark.parametrize("build", BUILT_MODULES)
def test_overlay_puts_everything_in_a_restricted_namespace_and_keeps_references(overlays, build):
    overlay_resources, namespace_name = overlays[build], manifests.EXAMPLE_NAMESPACES[build]
    namespace = only(overlay_resources, "Namespace")
    assert namespace["metadata"] == {"name": namespace_name, "labels": manifests.POD_SECURITY_LABELS}
    namespaced = [r for r in overlay_resources if r["kind"] != "Namespace"]
    assert {r["metadata"]["namespace"] for r in namespaced} == {namespace_name}
    names = {r["kind"]: r["metadata"]["name"] for r in namespaced if r["kind"] != "ConfigMap"}
    configmaps = {r["metadata"]["name"] for r in namespaced if r["kind"] == "ConfigMap"}
    assert all(name.startswith(manifests.example_prefix(build)) for name in [*names.values(), *configmaps])
    spec = only(overlay_resources, "Deployment")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == names["ServiceAccount"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert {volumes[name]["configMap"]["name"] for name in ("podward", POLICY_CONFIGMAP)} == configmaps
    binding = only(overlay_resources, "RoleBinding")
    assert binding["roleRef"]["name"] == names["Role"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": names["ServiceAccount"],
                                    "namespace": namespace_name}]
    # The cluster's CA ConfigMap is not ours: the prefix must not touch it.
    ca_source = volumes["service-account"]["projected"]["sources"][1]
    assert ca_source["configMap"]["name"] == "kube-root-ca.crt"


@pytest.mark.parametrize("build", BUILT_MODULES)
def test_overlay_sets_the_token_expiry_and_the_read_only_policy(overlays, build):
    overlay_resources, prefix = overlays[build], manifests.example_prefix(build)
    spec = only(overlay_resources, "Deployment")["spec"]["template"]["spec"]
    [sources] = [v["projected"]["sources"] for v in spec["volumes"] if v["name"] == "service-account"]
    [token] = [s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s]
    assert token == {"path": "token", **manifests.EXAMPLE_TOKEN}
    configmaps = {c["metadata"]["name"]: c for c in overlay_resources if c["kind"] == "ConfigMap"}
    policy = configmaps[prefix + POLICY_CONFIGMAP]["data"][POLICY_KEY]
    assert json.loads(policy) == manifests.EXAMPLE_POLICY
    # The bootstrap is the build's shipped one: it reads the policy from its file.
    envoy_yaml = configmaps[prefix + manifests.CONFIGMAP_NAME]["data"]["envoy.yaml"]
    assert envoy_yaml == to_yaml(bootstrap(shipped_settings(build)))
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[POLICY_CONFIGMAP]["configMap"]["name"] == prefix + POLICY_CONFIGMAP


def test_only_the_sidecar_holds_the_token_and_downward_api_is_the_example_pod_s(base_resources):
    spec = only(base_resources, "Deployment")["spec"]["template"]["spec"]
    pod_spec = example_pod()["spec"]
    assert spec["automountServiceAccountToken"] is False
    [sidecar] = spec["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["env"] == pod_spec["initContainers"][0]["env"]
    assert {m["mountPath"] for m in sidecar["volumeMounts"]} >= {SERVICE_ACCOUNT_DIR, PODINFO_DIR,
                                                                  POLICY_DIR}
    # The app containers mount the socket's directory only, read-only.
    assert all(container["volumeMounts"] == [app_socket_mount()] for container in spec["containers"])
    assert spec["volumes"] == pod_spec["volumes"]


def test_example_role_is_read_only_on_pods(base_resources):
    role = only(base_resources, "Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]


# --- The module in every ConfigMap is the one built ----------------------------

def configmap_payload_bytes(configmap: dict) -> int:
    data = sum(len(k) + len(v.encode()) for k, v in configmap.get("data", {}).items())
    binary = sum(len(k) + len(base64.b64decode(v)) for k, v in configmap.get("binaryData", {}).items())
    return data + binary


@pytest.mark.parametrize("build, source", [("wasm", "dist/podward-configmap.yaml"),
                                           ("native", "dist/podward-native-configmap.yaml"),
                                           ("wasm", "kubectl kustomize overlays/example"),
                                           ("native", "kubectl kustomize overlays/example-native")])
def test_configmap_module_round_trips_and_fits(build, source, overlays):
    if source.startswith("dist/"):
        path = REPO / source
        [configmap] = load_all(path.read_text())
        assert len(path.read_bytes()) <= CONFIGMAP_LIMIT
    else:
        [configmap] = [r for r in overlays[build]
                       if r["metadata"]["name"] == manifests.example_prefix(build) + manifests.CONFIGMAP_NAME]
    module_name = BUILT_MODULES[build].name
    module = base64.b64decode(configmap["binaryData"][module_name])
    assert hashlib.sha256(module).digest() == hashlib.sha256(BUILT_MODULES[build].read_bytes()).digest()
    assert configmap_payload_bytes(configmap) <= CONFIGMAP_PAYLOAD_LIMIT


# --- Istio WasmPlugin -----------------------------------------------------------

def shipped_wasm_plugin() -> dict:
    [plugin] = load_all((DEPLOY_DIR / manifests.WASMPLUGIN_FILE).read_text())
    return plugin


# No registry package ships Istio's CRD schema for Python (cloudcoil-models-istio
# has 1.24's as pydantic models, and a pytest plugin that breaks this suite), so
# the shape is checked against the WasmPlugin API (istio/api
# extensions/v1alpha1/wasm.proto) by hand.
WASM_PLUGIN_SPEC_FIELDS = {"selector", "targetRef", "targetRefs", "url", "sha256", "imagePullPolicy",
                           "imagePullSecret", "verificationKey", "pluginConfig", "pluginName", "phase",
                           "priority", "failStrategy", "vmConfig", "match", "type"}


def test_wasm_plugin_has_the_shape_of_istio_s_api():
    plugin = shipped_wasm_plugin()
    assert (plugin["apiVersion"], plugin["kind"]) == ("extensions.istio.io/v1alpha1", "WasmPlugin")
    assert set(plugin) == {"apiVersion", "kind", "metadata", "spec"}
    spec = plugin["spec"]
    assert set(spec) <= WASM_PLUGIN_SPEC_FIELDS
    assert spec["phase"] in {"AUTHN", "AUTHZ", "STATS"}
    assert spec["failStrategy"] in {"FAIL_CLOSE", "FAIL_RELOAD"}  # FAIL_OPEN would leak requests past policy
    assert re.fullmatch(r"[a-f0-9]{64}", spec["sha256"])
    assert spec["url"].split("://")[0] in {"file", "oci", "http", "https"}
    assert 1 <= len(spec["pluginName"]) <= 256
    assert all(set(env) == {"name", "valueFrom"} and env["valueFrom"] == "HOST" for env in spec["vmConfig"]["env"])
    assert all(set(match) <= {"mode", "ports"} for match in spec["match"])


def test_wasm_plugin_names_the_built_module_and_the_sidecar_s_environment():
    spec = shipped_wasm_plugin()["spec"]
    assert spec["sha256"] == module_digest()
    assert spec["url"] == f"file://{Settings().wasm_path}"
    assert [e["name"] for e in spec["vmConfig"]["env"]] == ENV_KEYS
    # Istio's routes add no identity header: the module adds them all, from the variables it is handed.
    assert ROUTE_ADDS_ENV_HEADERS not in spec["pluginConfig"]
    assert set(ENV_HEADERS.values()) <= set(ENV_KEYS)
    # Outbound only, on the API host's port only: nothing else gets the token.
    assert spec["match"] == [{"mode": "CLIENT", "ports": [{"number": manifests.ISTIO_API_PORT}]}]
    assert spec["pluginConfig"]["accept_hosts"] == [manifests.ISTIO_API_HOST]
