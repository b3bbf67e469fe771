"""What differs between one podward sidecar and another: the build, the paths it reads, the API server, the
listeners. The shipped sidecar's are the defaults (shipped_settings); a local run or a team's own environment
changes some."""

from __future__ import annotations

import dataclasses
import json
import pathlib

from podward.constants import (ADMIN_SOCKET, API_SERVER_NAME, APP_SOCKET, DRAIN_FILE_NAME, ENV_HEADERS,
                               METRICS_PORT, PODINFO_DIR, PODWARD_DIR, POLICY_DIR, REQUEST_TIMEOUT_MARGIN_MS,
                               ROUTE_ADDS_ENV_HEADERS, SERVICE_ACCOUNT_DIR, SHIPPED_PLUGIN_CONFIG, STARTUP_WAIT_MS)

# The API server's protocol for requests other than upgrades (Settings.upstream_protocol).
UPSTREAM_PROTOCOLS = ("auto", "http1", "h2")


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
    # The sidecar's entrypoint (pod.ENTRYPOINT) drains Envoy on SIGTERM through a file beside the admin socket;
    # a local run has no such entrypoint.
    drain: bool = False
    # Requests other than upgrades: "auto", HTTP/2 where the API server offers it by ALPN, else HTTP/1.1;
    # "http1", one connection per request in flight (before issue 19); "h2", HTTP/2 only.
    upstream_protocol: str = "auto"
    # Envoy's route adds the identity headers podward reads from environment variables (route_env_headers),
    # and podward does not. Only where the sidecar's environment sets every variable (the manifests' Downward
    # API), as Envoy sends `-` for an unset one; podward refuses its configuration then, naming the field.
    # None: each build's cheaper way, the route for wasm (whose host calls cost more than Envoy's own adds),
    # podward for native.
    route_adds_env_headers: bool | None = None

    def __post_init__(self):
        if self.listen_port is None and self.app_socket is None:
            raise ValueError("the app needs a way in: a TCP port, a Unix socket or both")
        if self.upstream_protocol not in UPSTREAM_PROTOCOLS:
            raise ValueError(f"upstream_protocol {self.upstream_protocol!r}: one of {', '.join(UPSTREAM_PROTOCOLS)}")
        if self.route_adds_env_headers is None:
            self.route_adds_env_headers = self.build == "wasm"
        if ROUTE_ADDS_ENV_HEADERS in self.plugin_config:
            raise ValueError(f"{ROUTE_ADDS_ENV_HEADERS} is the bootstrap's to set, with the route's headers "
                             "(the wasm build's), not the plugin configuration's")

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
        if self.route_adds_env_headers:
            config[ROUTE_ADDS_ENV_HEADERS] = True
        return json.dumps(config, sort_keys=True)

    @property
    def route_env_headers(self) -> dict:
        """{header: environment variable} that Envoy's route adds (route_adds_env_headers): podward's `env`
        identity headers, the configured ones or else the defaults."""
        if not self.route_adds_env_headers:
            return {}
        configured = self.plugin_config.get("identity_headers")
        if configured is None:
            return dict(ENV_HEADERS)
        return {item["header"].lower(): item["env"] for item in configured if "env" in item}

    @property
    def request_timeout_ms(self) -> int:
        """podward's own give-up time plus a margin: Envoy's timeout is the backstop, never the first answer."""
        return self.plugin_config.get("startup_wait_ms", STARTUP_WAIT_MS) + REQUEST_TIMEOUT_MARGIN_MS


def shipped_settings(build: str = "wasm") -> Settings:
    """The in-cluster sidecar as every shipped manifest runs it."""
    return Settings(build=build, plugin_config=SHIPPED_PLUGIN_CONFIG, drain=True)
