"""An Envoy image without /bin/sh (distroless): the sidecar runs Envoy alone, without the drain entrypoint, and
its bootstrap, rendered with `--no-drain`, has no drain file to read, so that Envoy logs nothing about one."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from podward.bootstrap import DRAIN_MONITOR, bootstrap
from podward.constants import REPO, SHIPPED_PLUGIN_CONFIG
from podward.pod import ENVOY_PATH, sidecar_command, sidecar_container
from podward.settings import Settings, shipped_settings

from conftest import request
from podward.local.waiting import wait_for

# What Envoy's overload manager logs at each refresh (0.25 s) when the drain file it reads is missing.
MISSING_DRAIN_FILE = f"Failed to update resource {DRAIN_MONITOR}"


def render_py(*args: str) -> dict:
    result = subprocess.run([sys.executable, str(REPO / "envoy" / "render.py"), *args], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def drain_parts(config: dict) -> list:
    """Whatever of the bootstrap reads or acts on the drain file."""
    overload = config["overload_manager"]
    monitors = [m for m in overload["resource_monitors"] if m["name"] == DRAIN_MONITOR]
    triggers = [t for action in overload["actions"] for t in action["triggers"] if t["name"] == DRAIN_MONITOR]
    return monitors + triggers


@pytest.mark.parametrize("build", ["wasm", "native"])
def test_config_and_configmap_render_without_the_drain(build):
    no_drain = Settings(build=build, plugin_config=SHIPPED_PLUGIN_CONFIG, drain=False)
    config = render_py("config", "--build", build, "--no-drain")
    assert config == bootstrap(no_drain) and not drain_parts(config)
    configmap = render_py("configmap", "--build", build, "--no-drain")
    assert yaml.safe_load(configmap["data"]["envoy.yaml"]) == config
    # Without the flag, the shipped sidecar's: it drains.
    assert drain_parts(render_py("config", "--build", build)) and drain_parts(bootstrap(shipped_settings(build)))


def test_the_sidecar_without_a_shell_runs_envoy_itself():
    assert sidecar_command(drain=False) == [ENVOY_PATH]
    assert sidecar_container(command=sidecar_command(drain=False))["command"] == [ENVOY_PATH]
    assert sidecar_container()["command"][:2] == ["/bin/sh", "-c"]


def test_envoy_alone_with_the_no_drain_bootstrap_logs_nothing_about_a_drain_file(pod, start_envoy):
    """Envoy started as a shell-less container starts it, with the bootstrap `--no-drain` renders. Beside it, the
    draining bootstrap run the same way (no entrypoint to write the file) logs the missing file at each refresh:
    once it has done so twice, as many refreshes have passed for the first Envoy too."""
    shell_less = start_envoy(pod, drain=False)
    without_entrypoint = start_envoy(pod, drain=True)
    assert request(shell_less, "GET", "/api/v1/namespaces/default/pods").status == 200
    wait_for(lambda: without_entrypoint.log().count(MISSING_DRAIN_FILE) >= 2, timeout=10)
    assert MISSING_DRAIN_FILE not in shell_less.log()
    assert "draining" not in shell_less.log()
