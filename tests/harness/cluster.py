"""A real cluster for the end-to-end tests, taken from $KUBECONFIG as Kubernetes e2e suites take theirs: the
one-node cluster of ../shared/node (`eval "$(tests/node/up)"`), a kind cluster or a team's own.

The tests talk to the API server only, with kubectl 1.37: `kubectl exec` runs the app's side in the app
container, and what must be seen from outside the pod (its IP, the sidecar's process and cgroup) is seen from
NodeTools, a privileged pod on the node. The cluster needs the images the pods run (tests/node/images.py
builds them; a cluster that can pull has them anyway).
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import secrets
import shlex
import subprocess

from podward.local.waiting import wait_for

KUBECONFIG_VARIABLE = "KUBECONFIG"
HOW_TO_GET_ONE = ('eval "$(tests/node/up)" for the one-node cluster of ../shared/node (tests/node/down stops '
                  'it), or export KUBECONFIG for a cluster of your own')
# What the tests create is named so, and removed afterwards.
NAMESPACE_PREFIX = "podward-e2e-"
VENV_BIN = pathlib.Path(__file__).resolve().parents[2] / ".venv" / "bin"


def kubeconfig() -> str | None:
    return os.environ.get(KUBECONFIG_VARIABLE) or None


def cluster_problem() -> str | None:
    """Why the e2e tests cannot run here, or None: no $KUBECONFIG, or its API server is not ready."""
    config = kubeconfig()
    if not config:
        return f"${KUBECONFIG_VARIABLE} is not set"
    try:
        ready = subprocess.run([kubectl_binary(), "--kubeconfig", config, "get", "--raw", "/readyz"],
                               capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return f"the API server of {config} did not answer within 20 s"
    if ready.returncode != 0:
        return f"the API server of {config} is not ready: {ready.stderr.strip()[:300]}"
    return None


def kubectl_binary() -> str:
    """kubectl 1.37 from the .venv (./build.sh sets $KUBECTL)."""
    return os.environ.get("KUBECTL") or str(VENV_BIN / "kubectl")


def timestamp(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time from the API server or a log line."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Cluster:
    """kubectl against $KUBECONFIG, as the cluster admin; `home` keeps kubectl's cache and the per-namespace
    kubeconfigs out of the user's."""

    def __init__(self, config: str, home: pathlib.Path):
        self.config, self.home = config, home

    def env(self, config: str | None = None) -> dict:
        """What a user's shell has: the .venv's kubectl first on PATH, the cluster in KUBECONFIG."""
        return {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                "KUBECONFIG": config or self.config, "HOME": str(self.home)}

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 120,
                check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([kubectl_binary(), *args], input=stdin, capture_output=True, text=True,
                                timeout=timeout, env=self.env())
        if check:
            assert result.returncode == 0, f"kubectl {shlex.join(args)}: {result.stderr.strip()}"
        return result

    def shell(self, command: str, config: str | None = None, cwd: pathlib.Path | str | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess:
        """One command line as a user types it (bash), with `config` as their KUBECONFIG."""
        return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=timeout,
                              env=self.env(config), cwd=cwd)

    def get(self, *args: str, namespace: str | None = None) -> dict:
        where = ["-n", namespace] if namespace else []
        return json.loads(self.kubectl("get", *where, *args, "-o", "json").stdout)

    def apply(self, document: dict, namespace: str | None = None) -> None:
        where = ["-n", namespace] if namespace else []
        self.kubectl("apply", "--server-side", *where, "-f", "-", stdin=json.dumps(document))

    def namespace(self, purpose: str, labels: dict | None = None) -> str:
        """A new namespace of the tests' own."""
        name = f"{NAMESPACE_PREFIX}{purpose}-{secrets.token_hex(2)}"
        self.apply({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": labels or {}}})
        return name

    def namespace_kubeconfig(self, namespace: str) -> str:
        """A copy of the kubeconfig whose context's namespace is `namespace`: where commands without `-n` act."""
        path = self.home / f"kubeconfig-{namespace}"
        flat = self.kubectl("config", "view", "--raw", "--flatten", "--minify").stdout
        path.write_text(flat)
        subprocess.run([kubectl_binary(), "--kubeconfig", str(path), "config", "set-context", "--current",
                        "--namespace", namespace], check=True, capture_output=True, env=self.env())
        return str(path)

    def delete_namespaces(self) -> None:
        """Every namespace the tests made, without waiting for them to go."""
        names = [item["metadata"]["name"] for item in self.get("namespaces")["items"]
                 if item["metadata"]["name"].startswith(NAMESPACE_PREFIX)]
        if names:
            self.kubectl("delete", "namespace", "--wait=false", *names, check=False)

    def pods(self, namespace: str, selector: str | None = None) -> list:
        return self.get("pods", *(["-l", selector] if selector else []), namespace=namespace)["items"]

    def exec(self, namespace: str, pod: str, container: str, *command: str,
             timeout: float = 60) -> subprocess.CompletedProcess:
        return self.kubectl("exec", "-n", namespace, pod, "-c", container, "--", *command, timeout=timeout,
                            check=False)

    def kubelet_config(self, node: str) -> dict:
        """The kubelet's running configuration (configz), through the API server's node proxy."""
        return json.loads(self.kubectl("get", "--raw", f"/api/v1/nodes/{node}/proxy/configz").stdout)["kubeletconfig"]


def container_status(pod: dict, name: str) -> dict:
    statuses = pod["status"].get("initContainerStatuses", []) + pod["status"].get("containerStatuses", [])
    return next((status for status in statuses if status["name"] == name), {})


def pod_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


class NodeTools:
    """A privileged pod in the host's PID namespace on the node, with the node's cgroup tree mounted: it sees
    the sidecar's process and cgroup as the kubelet does, and reaches pod IPs as anything on the cluster
    network does. Its namespace admits privileged pods."""

    NAME = "node-tools"

    def __init__(self, cluster: Cluster, image: str, node: str):
        self.cluster = cluster
        self.namespace = cluster.namespace("tools", {"pod-security.kubernetes.io/enforce": "privileged"})
        cluster.apply({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": self.NAME},
            "spec": {"nodeName": node, "hostPID": True, "automountServiceAccountToken": False,
                     "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "tools", "image": image, "command": ["sleep", "infinity"],
                                     "securityContext": {"privileged": True, "runAsUser": 0},
                                     "volumeMounts": [{"name": "cgroup", "mountPath": "/host/cgroup",
                                                       "readOnly": True}]}],
                     "volumes": [{"name": "cgroup", "hostPath": {"path": "/sys/fs/cgroup"}}]}},
            self.namespace)

    def wait_ready(self) -> None:
        wait_for(lambda: pod_ready(self.cluster.get("pod", self.NAME, namespace=self.namespace)), 120,
                 "the node-tools pod Ready")

    def sh(self, script: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.cluster.exec(self.namespace, self.NAME, "tools", "sh", "-c", script, timeout=timeout)

    def pid(self, container_id: str) -> int:
        """The host PID of a container's main process (its first process in the container's cgroup)."""
        runtime_id = container_id.split("://", 1)[1]
        found = self.sh(f"for f in /proc/[0-9]*/cgroup; do grep -q {runtime_id} $f 2>/dev/null && "
                        "{ d=${f%/cgroup}; echo ${d#/proc/} $(cut -d' ' -f22 $d/stat); }; done")
        # (pid, start time in clock ticks): the container's first process started first.
        processes = sorted((int(start), int(pid)) for pid, start in (line.split() for line in found.stdout.split("\n")
                                                                     if line.strip()))
        assert processes, f"no process of container {runtime_id} on the node: {found.stderr}"
        return processes[0][1]

    def kill(self, container_id: str) -> None:
        """SIGKILL to the container's process, from outside its PID namespace: a crash, as the kubelet sees one."""
        pid = self.pid(container_id)
        killed = self.sh(f"kill -KILL {pid}")
        assert killed.returncode == 0, killed.stderr

    def memory(self, container_id: str) -> dict:
        """The container's memory in bytes: its process's resident set (/proc/PID/status) and its memory
        cgroup's own accounting (memory.stat: cgroup v1's `rss`/`mapped_file`, v2's `anon`/`file_mapped`)."""
        pid = self.pid(container_id)
        script = (f"grep -E '^(VmRSS|RssAnon|RssFile|RssShmem):' /proc/{pid}/status; "
                  f"p=$(grep -E '(^0::|:memory:)' /proc/{pid}/cgroup | head -1 | cut -d: -f3); "
                  "if [ -f /host/cgroup/memory$p/memory.stat ]; "
                  "then echo cgroup v1; cat /host/cgroup/memory$p/memory.stat; "
                  "else echo cgroup v2; cat /host/cgroup$p/memory.stat; fi")
        output = self.sh(script).stdout.splitlines()
        process = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in output if line.startswith(("Vm", "Rss"))}
        version = next(line.split()[1] for line in output if line.startswith("cgroup "))
        stat = {line.split()[0]: int(line.split()[1]) for line in output[output.index(f"cgroup {version}") + 1:]}
        anon, mapped = ("rss", "mapped_file") if version == "v1" else ("anon", "file_mapped")
        return {"process_rss": process["VmRSS"], "process_anon": process["RssAnon"],
                "process_file": process["RssFile"], "cgroup": version, "cgroup_anon": stat[anon],
                "cgroup_mapped_file": stat[mapped], "cgroup_rss": stat[anon] + stat[mapped]}

    def http(self, url: str, *curl_args: str) -> tuple:
        """(HTTP status or 0 when no connection, body) of a request from the cluster network."""
        result = self.sh(f"curl -s -m 5 -o /tmp/body -w '%{{http_code}}' {' '.join(map(shlex.quote, curl_args))} "
                         f"{shlex.quote(url)}; echo; cat /tmp/body 2>/dev/null; rm -f /tmp/body")
        code, _, body = result.stdout.partition("\n")
        return int(code or 0), body
