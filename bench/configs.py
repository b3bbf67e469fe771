"""The configurations the benchmark compares, and the testbed that starts and checks them.

Every Envoy configuration is `bootstrap()` as shipped, with the app listener's HTTP filters replaced by
the configuration's own list; adding a configuration is one `Configuration` entry and, for Envoy, one function
that returns its filters. A configuration that needs a build artefact which is absent is reported as not
measured, not skipped silently.

  wrk ──HTTP/1.1──▶ proxy under test ──TLS──▶ nginx (stand-in API server)
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import time
from typing import Callable

from processes import PROXY_CPUS, Service, http_get, pinned
from tools import REPO, build_minimal_filter, kubectl_path
from upstream import IDENTITY_HEADERS, PROBE_PATH, Nginx

from podward.bootstrap import bootstrap, podward_filter
from podward.constants import API_SERVER_NAME
from podward.documents import to_yaml
from podward.local.envoy_process import (ENVOY_BINARY, WASM, UnixHTTPConnection, accepts, free_port,
                                         http_get as envoy_http_get, local_settings)
from podward.local.jwt import make_token
from podward.local.kubelet import LocalPod
from podward.local.pki import make_pki
from podward.settings import Settings

# F's module (issue 14): `./build.sh` puts it here once the native build exists.
NATIVE_MODULE = REPO / "dist" / "libpodward.so"
TOKENS = 8


def typed(type_name: str, **fields) -> dict:
    return {"@type": f"type.googleapis.com/{type_name}", **fields}


@dataclasses.dataclass(frozen=True)
class Configuration:
    key: str
    label: str
    # The app listener's HTTP filters (before the router); None keeps bootstrap()'s, i.e. podward.
    filters: Callable[["Testbed", Settings], list] | None = None
    kubectl: bool = False             # `kubectl proxy` instead of Envoy
    # The API server's protocol, pinned: HTTP/1.1 unless h2 (the shipped config negotiates h2 by ALPN since
    # issue 19; the figures stay comparable with earlier runs, and E is podward over h2).
    upstream_http2: bool = False
    client_sends_token: bool = False  # the proxy adds no credentials: wrk sends the token itself
    sends_identity: bool = False      # the identity headers must reach the upstream, equal to podward's
    needs: pathlib.Path | None = None  # a build artefact this configuration cannot run without
    build: str = "wasm"               # podward's build when the filters are render.py's own
    startup: bool = False             # part of the start-up measurement
    refuses: bool = False             # answers REFUSED_PATH itself (a policy), instead of forwarding it
    # A change to the whole bootstrap (bench/breakdown.py's variants), after the filters are in place.
    adjust: Callable[[dict], None] | None = None

    @property
    def podward(self) -> bool:
        """podward's own filter (either build), rather than a baseline's."""
        return self.filters is None and not self.kubectl

    def missing(self) -> str | None:
        """Why the configuration cannot be measured on this machine, or None."""
        if self.needs and not self.needs.exists():
            return f"{self.needs.relative_to(REPO)} is not built"
        return None


def no_filters(testbed: "Testbed", settings: Settings) -> list:
    return []


def native_injector(testbed: "Testbed", settings: Settings) -> list:
    """Envoy's credential_injector (SDS secret from the token file) and header_mutation with podward's values."""
    sds = testbed.work / "token-sds.yaml"
    secret = typed("envoy.extensions.transport_sockets.tls.v3.Secret", name="token",
                   generic_secret={"secret": {"filename": str(testbed.sa_dir / "token")}})
    sds.write_text(to_yaml({"resources": [secret]}))
    generic = typed(
        "envoy.extensions.http.injected_credentials.generic.v3.Generic",
        credential={"name": "token", "sds_config": {"path_config_source": {
            "path": str(sds), "watched_directory": {"path": str(testbed.sa_dir)}}}},
        header="Authorization",
        header_value_prefix="Bearer ",
    )
    injector = {"name": "envoy.filters.http.credential_injector", "typed_config": typed(
        "envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
        overwrite=True,
        credential={"name": "envoy.http.injected_credentials.generic", "typed_config": generic},
    )}
    # Values are substitution-format strings: a literal % is written %%.
    mutations = [{"append": {"header": {"key": name, "value": testbed.identity[name].replace("%", "%%")},
                             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}} for name in IDENTITY_HEADERS]
    mutation = {"name": "envoy.filters.http.header_mutation", "typed_config": typed(
        "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        mutations={"request_mutations": mutations})}
    return [injector, mutation]


def minimal_wasm(testbed: "Testbed", settings: Settings) -> list:
    """podward's own wasm filter block (same VM settings), pointed at the minimal module and its fixed headers."""
    wasm_filter = podward_filter(dataclasses.replace(settings, wasm_path=str(testbed.minimal_wasm)))
    plugin = wasm_filter["typed_config"]["config"]
    plugin.update(name="minimal", root_id="minimal")
    plugin["vm_config"]["vm_id"] = "minimal"
    lines = [f"authorization: Bearer {testbed.token}"] + [f"{n}: {testbed.identity[n]}" for n in IDENTITY_HEADERS]
    plugin["configuration"]["value"] = "\n".join(lines)
    return [wasm_filter]


CONFIGURATIONS = [
    Configuration("A", "A Envoy, no filter", filters=no_filters, client_sends_token=True, startup=True),
    Configuration("B", "B Envoy credential_injector + header_mutation", filters=native_injector,
                  sends_identity=True),
    Configuration("C", "C podward (wasm), HTTP/1.1 upstream", sends_identity=True, startup=True, refuses=True),
    Configuration("C0", "C0 minimal header-setting wasm", filters=minimal_wasm, sends_identity=True, startup=True),
    Configuration("D1", "D kubectl proxy, HTTP/1.1 upstream", kubectl=True, refuses=True),
    Configuration("D2", "D kubectl proxy, h2 upstream", kubectl=True, upstream_http2=True, startup=True,
                  refuses=True),
    Configuration("E", "E podward (wasm), h2 upstream", upstream_http2=True, sends_identity=True, refuses=True),
    Configuration("F", "F podward native (dynamic module), HTTP/1.1 upstream", build="native", sends_identity=True,
                  needs=NATIVE_MODULE, startup=True, refuses=True),
]
BY_KEY = {config.key: config for config in CONFIGURATIONS}


def admin_get(settings: Settings, path: str) -> tuple[int, str]:
    """The one place that knows where Envoy's admin interface listens: a Unix socket, as in the sidecar."""
    try:
        status, body = envoy_http_get(UnixHTTPConnection(settings.admin_socket, timeout=1), path)
    except OSError:
        return 0, ""
    return status, body.decode(errors="replace")


class Testbed:
    """The pod's volumes, the tokens, the stand-in API server and the modules every configuration runs with."""

    def __init__(self, work: pathlib.Path):
        self.work = work
        self.pki = make_pki(str(work / "pki"))
        self.pod = LocalPod(work / "pod", self.pki)
        self.tokens = [make_token(self.pod.namespace, self.pod.service_account, self.pod.name)
                       for _ in range(TOKENS)]
        self.token_index = 0
        self.pod.write_service_account(self.tokens[0])
        self.sa_dir = pathlib.Path(self.pod.service_account_dir.path)
        self.ca_file = str(self.sa_dir / "ca.crt")
        self.nginx = Nginx(work, self.pki, self.tokens).start()
        self.kubectl = kubectl_path()
        self.minimal_wasm_built, self.minimal_wasm = build_minimal_filter(work)
        # Private copies: a rebuild of dist/ during the run must not change what is measured.
        self.podward_wasm = work / "podward.wasm"
        shutil.copy(WASM, self.podward_wasm)
        self.native_module = work / NATIVE_MODULE.name
        if NATIVE_MODULE.exists():
            shutil.copy(NATIVE_MODULE, self.native_module)
        self.identity: dict[str, str] = {}  # what podward sends, learnt by `learn_identity`

    @property
    def token(self) -> str:
        """The token the kubelet last wrote; its number in nginx's map is token_index + 1."""
        return self.tokens[self.token_index]

    def rotate(self) -> int:
        self.token_index = (self.token_index + 1) % len(self.tokens)
        self.pod.write_service_account(self.token)  # kubelet-style atomic ..data swap
        return self.token_index + 1

    def client_headers(self, config: Configuration) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if config.client_sends_token else {}

    def settings(self, **overrides) -> Settings:
        """render.py's settings for this testbed; the upstream protocol pinned to HTTP/1.1 unless overridden
        (Configuration.upstream_http2)."""
        overrides.setdefault("upstream_protocol", "http1")
        settings = local_settings(self.pod, self.nginx.port, self.ca_file, **overrides)
        return dataclasses.replace(settings, wasm_path=str(self.podward_wasm), native_path=str(self.native_module))

    @staticmethod
    def app_manager(bootstrap: dict) -> dict:
        listener = next(x for x in bootstrap["static_resources"]["listeners"] if x["name"] == "podward")
        return listener["filter_chains"][0]["filters"][0]["typed_config"]

    def envoy_config(self, config: Configuration, settings: Settings) -> dict:
        if config.filters is not None:
            # A baseline's filters replace podward, and the route's identity headers go with it.
            settings = dataclasses.replace(settings, route_adds_env_headers=False)
        config_document = bootstrap(settings)
        if config.filters is not None:
            manager = self.app_manager(config_document)
            router = manager["http_filters"][-1]
            assert router["name"] == "envoy.filters.http.router"
            manager["http_filters"] = [*config.filters(self, settings), router]
        if config.adjust:
            config.adjust(config_document)
        return config_document

    def envoy_service(self, label: str, bootstrap: dict, settings: Settings, concurrency: int,
                      hot_restart: bool = False, wrapper: tuple = ()) -> Service:
        """`wrapper`: a command that runs Envoy (valgrind for the instruction counts)."""
        path = self.work / f"envoy-{label}-c{concurrency}.yaml"
        path.write_text(to_yaml(bootstrap))
        flags = ["--use-dynamic-base-id"] if hot_restart else ["--disable-hot-restart"]
        argv = pinned(PROXY_CPUS[concurrency], [*wrapper, str(ENVOY_BINARY), "-c", str(path), "--concurrency",
                                                str(concurrency), *flags, "--log-level", "info"])
        # The pod's Downward API environment only; the access log (stdout) goes to /dev/null.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.pod.env}

        def ready(service: Service) -> bool:
            return service.admin("/ready")[0] == 200 and accepts(settings.listen_port)
        service = Service(label, argv, env, self.work / f"envoy-{label}-c{concurrency}.log",
                          f"http://127.0.0.1:{settings.listen_port}", ready)
        service.admin = lambda path: admin_get(settings, path)
        return service

    def kubectl_service(self, config: Configuration, concurrency: int, wrapper: tuple = ()) -> Service:
        port = free_port()
        kubeconfig = self.work / "kubeconfig.yaml"
        kubeconfig.write_text(to_yaml({
            "apiVersion": "v1", "kind": "Config", "current-context": "bench",
            "clusters": [{"name": "bench", "cluster": {
                "server": f"https://127.0.0.1:{self.nginx.port}", "certificate-authority": self.ca_file,
                "tls-server-name": API_SERVER_NAME}}],
            "users": [{"name": "pod", "user": {"tokenFile": str(self.sa_dir / "token")}}],
            "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "pod"}}],
        }))
        home = self.work / "kubectl-home"
        home.mkdir(exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
        if not config.upstream_http2:
            env["DISABLE_HTTP2"] = "1"  # client-go's switch for HTTP/1.1 only
        if wrapper:
            # Go preempts goroutines with signals (SIGURG), which callgrind's signal tracking trips over
            # (threads.c: vgCallgrind_post_signal assertion); without them the scheduler preempts at calls.
            env["GODEBUG"] = "asyncpreemptoff=1"
        argv = pinned(PROXY_CPUS[concurrency], [*wrapper, self.kubectl, "--kubeconfig", str(kubeconfig), "proxy",
                                                "--address", "127.0.0.1", "--port", str(port)])
        return Service(config.key, argv, env, self.work / f"kubectl-{config.key}-c{concurrency}.log",
                       f"http://127.0.0.1:{port}", ready=lambda s: http_get(s.url + PROBE_PATH, timeout=1)[0] == 200)

    def service(self, config: Configuration, concurrency: int, wrapper: tuple = (),
                plugin_config: dict | None = None) -> Service:
        """The configuration's proxy, not yet started; `plugin_config` replaces podward's configuration."""
        if config.kubectl:
            return self.kubectl_service(config, concurrency, wrapper)
        settings = self.settings(upstream_protocol="h2" if config.upstream_http2 else "http1", build=config.build,
                                 **({"plugin_config": plugin_config} if plugin_config is not None else {}))
        return self.envoy_service(config.key, self.envoy_config(config, settings), settings, concurrency,
                                  wrapper=wrapper)

    def start(self, config: Configuration, concurrency: int) -> Service:
        service = self.service(config, concurrency).start()
        self.check(config, service)
        return service

    def probe(self, service: Service, headers: dict) -> dict:
        """What reached the upstream through `service`, from nginx's echo location."""
        deadline = time.monotonic() + 10
        while True:
            status, body = http_get(service.url + PROBE_PATH, headers)
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if status != 200:
            raise RuntimeError(f"{service.name}: probe answered {status}: {body[:300]}\n{service.log_tail()}")
        return dict(line.split("=", 1) for line in body.splitlines() if "=" in line)

    def learn_identity(self) -> None:
        """The 13 identity headers podward sends, which B and C0 then send verbatim."""
        settings = self.settings()
        service = self.envoy_service("identity", bootstrap(settings), settings, 1).start()
        try:
            seen = self.probe(service, {})
        finally:
            service.stop()
        missing = [name for name in IDENTITY_HEADERS if not seen.get(name)]
        if missing:
            raise RuntimeError(f"podward did not send {missing}")
        self.identity = {name: seen[name] for name in IDENTITY_HEADERS}

    def check(self, config: Configuration, service: Service) -> None:
        """Refuses to measure a configuration that does not do the job it stands for."""
        seen = self.probe(service, self.client_headers(config))
        problems = []
        if seen.get("token") != str(self.token_index + 1):
            problems.append(f"token #{seen.get('token')} reached nginx, expected #{self.token_index + 1}")
        protocol = "HTTP/2.0" if config.upstream_http2 else "HTTP/1.1"
        if seen.get("protocol") != protocol:
            problems.append(f"upstream protocol {seen.get('protocol')}, expected {protocol}")
        if config.sends_identity:
            wrong = [n for n in IDENTITY_HEADERS if seen.get(n) != self.identity[n]]
            if wrong:
                problems.append(f"identity headers differ from podward's: {wrong}")
        if problems:
            raise RuntimeError(f"{config.label} is not what it claims: {'; '.join(problems)}")
