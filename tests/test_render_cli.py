"""envoy/render.py's command line, as a team runs it for its own environment: `--help` explains every flag,
`config` renders what the flags say, and `run` puts podward in front of a real kube-apiserver with a token
directory, a CA and a policy file that it re-reads live, for kubectl to use; SIGTERM stops it and leaves
nothing behind."""

from __future__ import annotations

import base64
import http.client
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import pytest
import yaml

from podward.bootstrap import bootstrap
from podward.constants import BUILT_MODULES, DEFAULT_POLICY, METRICS_PORT, READY_PATH, REPO
from podward.local.envoy_process import free_port, http_get
from podward.settings import Settings, shipped_settings

from conftest import grant
from harness import readme
from podward.local.waiting import wait_for

RENDER = REPO / "envoy" / "render.py"
# Every setting the issue asks a team to be able to set, by flag, and the subcommands that take it.
FLAGS = {
    "--api-server": ("config", "configmap", "run"), "--api-san": ("config", "configmap", "run"),
    "--listen-address": ("config", "configmap", "run"), "--listen-port": ("config", "configmap", "run"),
    "--metrics-port": ("config", "configmap", "run"), "--policy-file": ("config", "configmap", "run"),
    "--module": ("config", "configmap", "run"), "--build": ("config", "configmap", "run"),
    "--unix-socket": ("config", "configmap", "run"), "--no-tcp": ("config", "configmap", "run"),
    "--ca-file": ("config", "configmap", "run"), "--token-dir": ("config", "configmap", "run"),
    "--concurrency": ("run",),
}


def render_py(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RENDER), *args], capture_output=True, text=True, timeout=60, **kwargs)


@pytest.mark.parametrize("command", ["config", "configmap", "run"])
def test_help_explains_every_flag(command):
    result = render_py(command, "--help")
    assert result.returncode == 0, result.stderr
    helped = " ".join(result.stdout.split())
    for flag, commands in FLAGS.items():
        if command in commands:
            # The flag, then its explanation (a help text of some words).
            assert re.search(rf"{flag}(?: \S+)? [A-Za-z(][^-]{{15,}}", helped), f"{flag} is not explained"


def test_config_renders_what_the_flags_say(tmp_path):
    result = render_py("config", "--api-server", "https://10.96.0.1:6443", "--api-san", "api.team.example",
                       "--listen-address", "127.0.0.2", "--listen-port", "18001", "--metrics-port", "19102",
                       "--policy-file", "/etc/team/policy.json", "--no-unix-socket", "--build", "native",
                       "--module", "/opt/podward/libpodward.so", "--plugin-config", '{"accept_hosts": ["localhost"]}')
    assert result.returncode == 0, result.stderr
    expected = bootstrap(Settings(
        build="native", native_path="/opt/podward/libpodward.so", api_address="10.96.0.1", api_port=6443,
        api_sni="api.team.example", listen_address="127.0.0.2", listen_port=18001, app_socket=None,
        metrics_port=19102, policy_dir="/etc/team",
        plugin_config={"accept_hosts": ["localhost"], "policy_file": "/policy/policy.json"}, drain=True))
    assert yaml.safe_load(result.stdout) == expected
    [cluster] = [c for c in expected["static_resources"]["clusters"] if c["name"] == "kubernetes"]
    assert cluster["type"] == "STATIC"  # an IP: no DNS


def test_config_defaults_are_the_shipped_sidecar():
    result = render_py("config")
    assert yaml.safe_load(result.stdout) == bootstrap(shipped_settings())


@pytest.mark.parametrize("build", ["wasm", "native"])
def test_configmap_carries_that_bootstrap_and_the_built_module(build):
    """What a team applies as `podward` in its namespaces, for its own settings."""
    result = render_py("configmap", "--build", build, "--listen-port", "18001", "--preset", "read-only")
    assert result.returncode == 0, result.stderr
    configmap = yaml.safe_load(result.stdout)
    assert (configmap["kind"], configmap["metadata"]["name"]) == ("ConfigMap", "podward")
    # A bootstrap for the sidecar's container drains through its entrypoint.
    settings = Settings(build=build, listen_port=18001, plugin_config={"policy": {"preset": "read-only"}},
                               drain=True)
    assert yaml.safe_load(configmap["data"]["envoy.yaml"]) == bootstrap(settings)
    [(name, module)] = configmap["binaryData"].items()
    built = BUILT_MODULES[build]
    assert name == built.name and base64.b64decode(module) == built.read_bytes()


@pytest.mark.parametrize("args, message", [
    (("--no-tcp", "--no-unix-socket"), "no way in"),
    (("--api-server", "https://host/path"), "want HOST[:PORT]"),
    (("--policy-file", "/p.json", "--plugin-config", '{"policy": {"preset": "read-only"}}'), "has a `policy`"),
    (("--plugin-config", '{"route_adds_env_headers": true}'), "is the bootstrap's to set"),
])
def test_config_refuses_settings_that_cannot_work(args, message):
    result = render_py("config", *args)
    assert result.returncode != 0 and message in result.stderr


def kubectl(port: int, home: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([os.environ["KUBECTL"], "--server", f"http://127.0.0.1:{port}", *args],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(home)})


@pytest.mark.envtest
def test_run_in_front_of_a_real_api_server(real_pod, kube, tmp_path, podward_build):
    """What a person does to try podward against their own cluster: a token (here TokenRequest's, as `kubectl
    create token` gives), the cluster's CA and address, a policy file."""
    policy = tmp_path / "policy" / "policy.json"
    policy.parent.mkdir()
    policy.write_text(json.dumps({"preset": "read-only"}))
    port, metrics_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, str(RENDER), "run", "--build", podward_build, "--api-server", f"127.0.0.1:{kube.port}",
         "--token-dir", real_pod.service_account_dir.path, "--ca-file", kube.pki.ca_cert,
         "--podinfo-dir", real_pod.podinfo_dir.path, "--policy-file", str(policy),
         "--listen-port", str(port), "--metrics-port", str(metrics_port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **real_pod.env})
    try:
        banner = process.stderr.readline()
        run_dir = pathlib.Path(re.search(r"admin (\S+)/admin\.sock", banner).group(1))
        wait_for(lambda: metrics_ready(metrics_port), timeout=30)
        namespace = real_pod.namespace
        listed = kubectl(port, tmp_path, "-n", namespace, "get", "pods", "-o", "name")
        assert (listed.returncode, listed.stdout) == (0, "pod/curl-with-ambassador\n"), listed.stderr
        # The policy file's read-only preset: podward's own refusal, as kubectl prints it.
        denied = kubectl(port, tmp_path, "-n", namespace, "create", "configmap", "from-run")
        assert denied.returncode == 1 and "read-only/default" in denied.stderr
        # Edited in place, the policy is in force within seconds: no restart.
        policy.write_text(json.dumps(DEFAULT_POLICY))
        wait_for(lambda: kubectl(port, tmp_path, "-n", namespace, "create", "configmap", "from-run").returncode == 0)
        assert run_dir.is_dir()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()
    assert not run_dir.exists()
    assert real_pod.token not in process.stdout.read() + process.stderr.read()


def metrics_ready(port: int) -> bool:
    try:
        return http_get(http.client.HTTPConnection("127.0.0.1", port, timeout=5), READY_PATH)[0] == 200
    except OSError:
        return False


def test_run_says_what_is_missing(tmp_path):
    result = render_py("run", "--api-server", "127.0.0.1:6443", "--token-dir", str(tmp_path / "nowhere"))
    assert result.returncode != 0 and "the token directory" in result.stderr and "does not exist" in result.stderr


README_RUN = "### Your own environment"
README_FILES = (pathlib.Path("/tmp/sa"), pathlib.Path("/tmp/policy.json"))


@pytest.fixture
def readme_cluster(kube, tmp_path):
    """What the README's "Your own environment" assumes of a user's cluster: a kubeconfig (the admin's) and a
    `default` ServiceAccount in its namespace, allowed to list pods there. The README's files in /tmp go
    afterwards."""
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "default"}})
    grant(kube, "default", "default", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
          name="readme-run")
    yield kube.admin_kubeconfig(tmp_path / "kubeconfig")
    shutil.rmtree(README_FILES[0], ignore_errors=True)
    README_FILES[1].unlink(missing_ok=True)


@pytest.mark.envtest
def test_the_readme_run_in_front_of_your_own_cluster(readme_cluster, tmp_path):
    """README's "Your own environment", line by line as a user types it: no --podinfo-dir, so podward runs
    without the Downward API volume and leaves its headers out (it used to refuse to start)."""
    [block] = readme.blocks(README_RUN)
    *prepare, run, use = readme.commands(block)
    assert run.startswith("./build.sh run ") and "--podinfo-dir" not in run
    # A HOME of its own keeps kubectl's cache out of the user's; cargo and rustup keep theirs.
    env = {**os.environ, "KUBECONFIG": str(readme_cluster), "HOME": str(tmp_path),
           "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", os.path.expanduser("~/.rustup")),
           "CARGO_HOME": os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo")),
           "PATH": f"{pathlib.Path(os.environ['KUBECTL']).parent}:{os.environ['PATH']}"}
    for line in prepare:
        done = subprocess.run(["bash", "-c", line], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{line}: {done.stderr}"
    process = subprocess.Popen(["bash", "-c", f"exec {run}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for(lambda: process.poll() is not None or metrics_ready(METRICS_PORT), timeout=300)
        assert process.poll() is None, process.stdout.read()
        used = subprocess.run(["bash", "-c", use], env=env, capture_output=True, text=True,
                              timeout=60)
        # The token's own identity listed the pods (none: nothing runs them here).
        assert (used.returncode, used.stderr) == (0, "No resources found in default namespace.\n"), used.stderr
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
    assert "podward" in output and "invalid podward config" not in output, output[-3000:]
