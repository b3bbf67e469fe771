"""Every way README's "Deploy" puts podward next to an app, end to end on a real cluster ($KUBECONFIG), for both
builds: applied with README's own commands (harness.e2e), then each pod is checked for what podward promises in
a pod. One pod per path and build serves every test, in this order: the startup probe held the app; the app
reaches the API over TCP and over the socket as its own uid and the pod's identity; it holds no token; metrics
are scraped over the pod IP and nothing of Envoy's admin is reachable there; the sidecar's memory; a policy
change applied with kubectl is enforced live; a killed sidecar is restarted and the app served again; on
deletion the app stops before the sidecar, so its requests in flight finish.

Figures (per build and path) go to /tmp/podward-figures/e2e.json, for README's "Measured"."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import threading

import pytest
import yaml

from podward.constants import (APP_SOCKET, MEMORY_LIMIT_MIB, METRICS_PATH, METRICS_PORT, POLICY_CONFIGMAP,
                               POLICY_KEY, READY_PATH, REPO, SERVICE_ACCOUNT_DIR)
from podward.manifests import POLICY_CONFIGMAP_FILE
from podward.pod import ENVOY_UID, SIDECAR

from harness import e2e
from harness.cluster import container_status, kubectl_binary, timestamp
from podward.local.waiting import wait_for
from harness.e2e import CASES, PATHS
from harness.figures import record_figures


pytestmark = pytest.mark.node

CASE_IDS = [f"{path}-{build}" for path, build in CASES]
# Envoy's admin endpoints, each of which must be out of reach on the pod IP, whatever port.
ADMIN_PATHS = [("GET", "/config_dump"), ("GET", "/server_info"), ("GET", "/clusters"), ("GET", "/stats"),
               ("GET", "/certs"), ("GET", "/runtime"), ("GET", "/memory"), ("POST", "/logging?level=debug"),
               ("POST", "/quitquitquit"), ("POST", "/drain_listeners"), ("POST", "/runtime_modify?x=1")]
# The longest a ConfigMap update may take to reach a pod: the kubelet's default sync (1 min) plus its cache.
POLICY_LIMIT_S = 150
# The app's in-flight request at deletion: a watch the API server ends after this long.
WATCH_S = 5


def topic(section: str, deployed: e2e.Deployed, figures: dict) -> None:
    record_figures("e2e", deployed.build, f"{deployed.path}: {section}", figures)


@pytest.fixture(scope="module")
def deployments(cluster, injection, tmp_path_factory) -> dict:
    """Every path for every build, deployed with README's commands, each pod Ready. The apps' service accounts
    may read their namespace's pods (the tests' in-flight request is a watch of them)."""
    workdir = tmp_path_factory.mktemp("deploy")
    deployed = {case: PATHS[case[0]](cluster, case[1], injection, workdir) for case in CASES}
    try:
        for each in deployed.values():
            e2e.grant_pod_reading(cluster, each.namespace, each.service_account)
        for each in deployed.values():
            each.ready_pod(cluster)
        yield deployed
    finally:
        # The overlays' namespaces are their own (team-a, team-b), not ones of the tests' prefixed ones.
        cluster.kubectl("delete", "namespace", *e2e.manifests.EXAMPLE_NAMESPACES.values(), "--wait=false",
                        check=False)


@pytest.fixture(params=CASES, ids=CASE_IDS)
def deployed(request, deployments) -> e2e.Deployed:
    return deployments[request.param]


def test_the_startup_probe_held_the_app_until_podward_was_ready(cluster, deployed):
    pod = deployed.ready_pod(cluster)
    sidecar, app = container_status(pod, SIDECAR), container_status(pod, deployed.app_container)
    assert sidecar["started"] and sidecar["restartCount"] == 0
    log, ready = e2e.logged_ready(cluster, deployed, pod)
    # The kubelet started the app after the probe passed (its startedAt has whole seconds).
    app_started = timestamp(app["state"]["running"]["startedAt"])
    assert int(timestamp(ready)) <= app_started, f"the app started at {app_started}, podward was ready at {ready}"
    topic("startup", deployed, {"sidecar_start_to_ready_s": round(timestamp(ready) - timestamp(log[0][0]), 3),
                                "created_to_ready_pod_s": round(timestamp(ready) - deployed.created, 3)})


def test_the_app_reaches_the_api_over_tcp_and_the_socket_as_itself(cluster, deployed):
    pod = deployed.ready_pod(cluster)
    uid = e2e.app_exec(cluster, deployed, "id -u", pod)
    assert uid.returncode == 0 and int(uid.stdout) not in (0, ENVOY_UID), uid.stdout
    # kubectl in the app, through the sidecar's port: the service account's RBAC lets it list its pods.
    listed = e2e.app_exec(cluster, deployed, f"kubectl --server http://localhost:8001 -n {deployed.namespace} "
                                             "get pods -o name", pod)
    assert f"pod/{pod['metadata']['name']}" in listed.stdout.split(), listed.stderr
    # curl through the socket: who the API server says the app is.
    status, body = e2e.status_and_body(e2e.app_exec(cluster, deployed, e2e.self_review_curl(over_socket=True),
                                                    pod).stdout)
    if deployed.path == "overlay":  # its read-only policy refuses the review (a create) itself
        assert (status, json.loads(body)["reason"]) == (403, "Forbidden") and "read-only" in body
        over_socket = e2e.app_exec(cluster, deployed, e2e.pods_curl(deployed.namespace).replace(
            "http://localhost:8001", f"--unix-socket {APP_SOCKET} http://localhost"), pod)
        assert over_socket.stdout == "200"
    else:
        user = json.loads(body)["status"]["userInfo"]
        assert status == 201 and user["username"] == deployed.username
        assert user["extra"]["authentication.kubernetes.io/pod-name"] == [pod["metadata"]["name"]]
    # README's own command for this path, where it has one.
    for command in e2e.exec_commands(deployed.path):
        command = e2e.for_build(command, deployed.build, deployed.namespace)
        done = cluster.shell(command, cluster.namespace_kubeconfig(deployed.namespace), REPO)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        if answer["kind"] == "Status":  # another namespace's pods: the API server's RBAC names who asked
            assert answer["code"] == 403 and deployed.username in answer["message"], answer
        else:
            assert answer["kind"] == "PodList" and pod["metadata"]["name"] in [
                item["metadata"]["name"] for item in answer["items"]]


def test_the_app_holds_no_token(cluster, deployed):
    pod = deployed.ready_pod(cluster)
    app_spec = next(c for c in pod["spec"]["containers"] if c["name"] == deployed.app_container)
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert not [m for m in app_spec.get("volumeMounts", []) if "serviceaccount" in m["mountPath"]
                or m["name"] == "service-account"]
    mounts = e2e.app_exec(cluster, deployed, "cat /proc/self/mountinfo; ls /var/run/secrets 2>&1; env", pod)
    assert "serviceaccount" not in mounts.stdout and "No such file or directory" in mounts.stdout
    # The sidecar's own token is there, and is not the app's.
    sidecar_mounts = [m["mountPath"] for m in pod["spec"]["initContainers"][0]["volumeMounts"]]
    assert SERVICE_ACCOUNT_DIR in sidecar_mounts


def listening_ports(cluster, deployed, pod) -> dict:
    """{port: [addresses]} of the TCP sockets listening in the pod's network namespace (the app binds none)."""
    table = e2e.app_exec(cluster, deployed, "cat /proc/net/tcp /proc/net/tcp6", pod).stdout
    ports: dict = {}
    for line in table.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A":  # LISTEN
            address, port = fields[1].split(":")
            ports.setdefault(int(port, 16), []).append(address)
    return ports


def test_metrics_are_scraped_over_the_pod_ip_and_admin_is_out_of_reach(cluster, node_tools, deployed):
    pod = deployed.ready_pod(cluster)
    tools, ip = node_tools(pod), pod["status"]["podIP"]
    status, metrics = tools.http(f"http://{ip}:{METRICS_PORT}{METRICS_PATH}")
    assert status == 200 and "podward_requests_total" in metrics
    ports = listening_ports(cluster, deployed, pod)
    # The app's port on loopback only; the metrics port on every address.
    assert ports == {8001: ["0100007F"], METRICS_PORT: ["00000000"]}, ports
    assert tools.http(f"http://{ip}:8001/version")[0] == 0, "the app's port answered on the pod IP"
    for method, path in ADMIN_PATHS:
        status, body = tools.http(f"http://{ip}:{METRICS_PORT}{path}", "-X", method)
        assert status == 404 and json.loads(body)["kind"] == "Status", (method, path, status, body[:200])
    assert tools.http(f"http://{ip}:{METRICS_PORT}{READY_PATH}")[0] == 200


def test_the_sidecar_memory_from_its_cgroup(cluster, node_tools, deployed):
    pod = deployed.ready_pod(cluster)
    memory = node_tools(pod).memory(e2e.sidecar_id(pod))
    limit = MEMORY_LIMIT_MIB * 1024 * 1024
    assert 0 < memory["cgroup_anon"] < limit and 0 < memory["process_rss"] < limit, memory
    mib = {key: round(value / 1048576, 1) for key, value in memory.items() if isinstance(value, int)}
    topic("memory (MiB)", deployed, {**mib, "cgroup": memory["cgroup"]})


@pytest.fixture(scope="module")
def live_policy(cluster, deployments, tmp_path_factory) -> dict:
    """README's policy command in every path's namespace at once, twice: the other preset, then the first one
    again; for each, the seconds from the start of `kubectl apply` to the app's first answer under it."""
    workdir = tmp_path_factory.mktemp("policy")
    [command] = e2e.block(e2e.LIVE_POLICY, 0, "create configmap podward-policy")
    presets = {201: {"preset": "kubectl-proxy"}, 403: {"preset": "read-only"}}

    def flip_twice(deployed: e2e.Deployed) -> list:
        pod = deployed.pod(cluster)
        status = int(e2e.app_exec(cluster, deployed, e2e.self_review_curl(status_only=True), pod).stdout)
        delays = []
        for number, wanted in enumerate((403 if status == 201 else 201, status)):
            directory = workdir / deployed.id / str(number)
            directory.mkdir(parents=True)
            (directory / POLICY_KEY).write_text(json.dumps(presets[wanted]))
            line = e2e.for_build(command, deployed.build, deployed.namespace).replace(
                f"configmap {POLICY_CONFIGMAP} ", f"configmap {deployed.policy_configmap} ")
            waiter = e2e.app_process(cluster, deployed, e2e.until_status(
                e2e.self_review_curl(status_only=True), wanted, POLICY_LIMIT_S), pod)
            started = e2e.now()
            applied = cluster.shell(line, cwd=directory)
            assert applied.returncode == 0, applied.stderr
            out, err = waiter.communicate(timeout=POLICY_LIMIT_S + 30)
            assert waiter.returncode == 0, f"{deployed.id}: {out} {err}"
            delays.append(round(e2e.now() - started, 2))
        return delays

    sync = cluster.kubelet_config(deployments[CASES[0]].pod(cluster)["spec"]["nodeName"])["syncFrequency"]
    with concurrent.futures.ThreadPoolExecutor(len(deployments)) as pool:
        futures = {case: pool.submit(flip_twice, each) for case, each in deployments.items()}
        return {"sync_frequency": sync, **{case: future.result() for case, future in futures.items()}}


def test_a_policy_change_is_enforced_live(live_policy, deployed):
    delays = live_policy[(deployed.path, deployed.build)]
    assert len(delays) == 2 and max(delays) < POLICY_LIMIT_S
    topic(f"live policy, kubelet syncFrequency {live_policy['sync_frequency']}", deployed,
          {"apply_to_enforced_s": delays})


def test_a_killed_sidecar_is_restarted_and_the_app_served_again(cluster, node_tools, deployed):
    pod = deployed.ready_pod(cluster)
    before = {name: container_status(pod, name)["restartCount"] for name in (SIDECAR, deployed.app_container)}
    request = e2e.pods_curl(deployed.namespace)
    # The app asks until it is served, then until a request fails, then until one succeeds again.
    loop = e2e.app_process(cluster, deployed, " && ".join(e2e.until_status(request, status, 60, "0.05")
                                                          for status in (200, "000", 200)), pod)
    assert loop.stdout.readline().strip() == "0", "the app was not served before the kill"
    killed = e2e.now()
    node_tools(pod).kill(e2e.sidecar_id(pod))
    out, err = loop.communicate(timeout=150)
    recovered = e2e.now()
    assert loop.returncode == 0, f"{out} {err}"
    after = deployed.ready_pod(cluster)
    sidecar = container_status(after, SIDECAR)
    assert sidecar["restartCount"] == before[SIDECAR] + 1
    assert sidecar["lastState"]["terminated"]["exitCode"] == 137  # SIGKILL
    assert container_status(after, deployed.app_container)["restartCount"] == before[deployed.app_container]
    topic("sidecar killed", deployed, {"kill_to_app_served_s": round(recovered - killed, 2)})


class PodWatch:
    """`kubectl get pod --watch`: every state of the pod the API server stored, until it is deleted."""

    def __init__(self, cluster, namespace: str, name: str):
        self.process = subprocess.Popen(
            [kubectl_binary(), "get", "pod", name, "-n", namespace, "--watch", "--output-watch-events", "-o", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cluster.env())
        self.text = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.text += line

    def events(self) -> list:
        decoder, events, position = json.JSONDecoder(), [], 0
        text = self.text
        while text[position:].strip():
            try:
                event, position = decoder.raw_decode(text, position)
            except json.JSONDecodeError:  # the rest is still being written
                break
            events.append(event)
            position += len(text[position:]) - len(text[position:].lstrip())
        return events

    def started(self, timeout: float) -> None:
        """Until the pod's state at the start (the watch's first event) is in: later states are then all seen."""
        wait_for(self.events, timeout, "the pod watch's first event", 0.1)

    def until_deleted(self, timeout: float) -> list:
        events = wait_for(lambda: (events := self.events()) and events[-1]["type"] == "DELETED" and events,
                          timeout, "the pod's DELETED event", 0.2)
        self.process.terminate()
        self.process.wait(timeout=30)
        return events


@pytest.fixture(scope="module")
def deletions(cluster, deployments) -> dict:
    """Every path's pod deleted at once (a workload's by scaling it to 0), each while its app has a watch in
    flight through podward; what the app got and what the kubelet reported until the pod was gone."""

    def delete(deployed: e2e.Deployed) -> dict:
        pod = deployed.ready_pod(cluster)
        name = pod["metadata"]["name"]
        watch = PodWatch(cluster, deployed.namespace, name)
        watch.started(60)
        in_flight = e2e.app_process(
            cluster, deployed, f"curl -sN -m 60 'http://localhost:8001/api/v1/namespaces/{deployed.namespace}/pods"
                               f"?watch=1&timeoutSeconds={WATCH_S}&fieldSelector=metadata.name%3D{name}'; "
                               "echo \"curl exit $?\"", pod)
        first = in_flight.stdout.readline()  # the watch's ADDED event: the request is in flight
        deleted = e2e.now()
        if deployed.workload:
            cluster.kubectl("scale", "-n", deployed.namespace, deployed.workload, "--replicas=0")
        else:
            cluster.kubectl("delete", "pod", "-n", deployed.namespace, name, "--wait=false")
        rest, _ = in_flight.communicate(timeout=120)
        completed = e2e.now()
        events = watch.until_deleted(180)
        return {"first": first, "rest": rest, "in_flight_s": completed - deleted, "events": events}

    with concurrent.futures.ThreadPoolExecutor(len(deployments)) as pool:
        futures = {case: pool.submit(delete, each) for case, each in deployments.items()}
        return {case: future.result() for case, future in futures.items()}


def test_on_deletion_the_app_stops_before_the_sidecar(deletions, deployed):
    result = deletions[(deployed.path, deployed.build)]
    assert json.loads(result["first"])["type"] == "ADDED"
    # The watch went on after the deletion began (it saw the pod marked for deletion) and ended as the API
    # server ends a watch: complete, not cut.
    later = [json.loads(line) for line in result["rest"].splitlines() if line.startswith("{")]
    assert any(event["object"]["metadata"].get("deletionTimestamp") for event in later), result["rest"]
    assert result["rest"].rstrip().endswith("curl exit 0"), result["rest"]
    # The kubelet's last word on the pod: the app's container finished no later than the sidecar's.
    statuses = [event["object"] for event in result["events"]]
    last = statuses[-1]
    app = container_status(last, deployed.app_container)["state"]["terminated"]
    sidecar = container_status(last, SIDECAR)["state"]["terminated"]
    assert timestamp(app["finishedAt"]) <= timestamp(sidecar["finishedAt"]), (app, sidecar)
    # While the app was stopping, the sidecar still ran.
    assert any("terminated" not in container_status(s, SIDECAR).get("state", {})
               and s["metadata"].get("deletionTimestamp") for s in statuses)
    topic("deletion", deployed, {"in_flight_request_completed_after_delete_s": round(result["in_flight_s"], 2),
                                 "app_finished": app["finishedAt"], "sidecar_finished": sidecar["finishedAt"]})


FIRST_CALL = (f"n=0; until [ \"$({e2e.self_review_curl(status_only=True)})\" = 201 ]; do n=$((n+1)); sleep 0.01; "
              "done; echo \"first call answered after $n failed tries\"; exec sleep infinity")


@pytest.mark.parametrize("build", e2e.BUILDS)
def test_the_apps_first_call_succeeds_right_after_pod_creation(cluster, build):
    """README's pod, with an app that calls the API at once: the startup probe held it until podward was ready,
    so its very first call succeeds. Three pods one after the other, timed from `kubectl apply`."""
    namespace = cluster.namespace(f"first-call-{build}", e2e.RESTRICTED)
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", str(REPO / e2e.CONFIGMAP_FILES[build]),
                    "-f", str(REPO / "deploy" / POLICY_CONFIGMAP_FILE))
    pod = yaml.safe_load((REPO / "deploy" / "pod.yaml").read_text())
    next(c for c in pod["spec"]["containers"] if c["name"] == "main")["command"] = ["sh", "-c", FIRST_CALL]
    figures = []
    for number in range(3):
        pod["metadata"]["name"] = f"first-call-{number}"
        deployed = e2e.Deployed("first-call", build, namespace, pod_name=pod["metadata"]["name"], created=e2e.now())
        cluster.apply(pod, namespace)

        def answered():
            logs = cluster.kubectl("logs", "-n", namespace, pod["metadata"]["name"], "-c", "main", "--timestamps",
                                   check=False).stdout
            return next((line.split(" ", 1) for line in logs.splitlines() if "first call" in line), None)
        stamp, line = wait_for(answered, e2e.READY_TIMEOUT_S, f"{deployed.id}: the app's first call", 0.1)
        assert line == "first call answered after 0 failed tries"
        log, ready = e2e.logged_ready(cluster, deployed, deployed.ready_pod(cluster))
        figures.append({"created_to_first_call_s": round(timestamp(stamp) - deployed.created, 2),
                        "sidecar_start_to_ready_s": round(timestamp(ready) - timestamp(log[0][0]), 3)})
        cluster.kubectl("delete", "pod", "-n", namespace, pod["metadata"]["name"], "--wait=false")
    record_figures("e2e", build, "first call", {"runs": figures})
