"""The stand-in API server: nginx with TLS (the test PKI), h2 offered, a bearer-token check and a PodList file.

What reached it is visible through the echo location (PROBE_PATH) and, for the rotation phase, an access log
of (time, status, token number) lines.
"""

from __future__ import annotations

import json
import os
import pathlib
import queue
import socket
import string
import threading

from processes import LOAD_CPUS, Service, pinned

from podward.local.envoy_process import accepts, free_port

BENCH = pathlib.Path(__file__).resolve().parent
# The 13 identity headers podward sends; B and C0 send the same values, and the echo location shows them.
IDENTITY_HEADERS = [
    "x-pod-name", "x-pod-namespace", "x-pod-uid", "x-pod-ip", "x-pod-host-ip", "x-pod-node-name",
    "x-pod-service-account", "x-pod-cpu-request", "x-pod-cpu-limit", "x-pod-memory-request",
    "x-pod-memory-limit", "x-pod-labels", "x-pod-annotations",
]
PODS_PATH = "/api/v1/namespaces/default/pods"
ROTATION_PATH = "/api/v1/namespaces/rotation/pods"
PROBE_PATH = "/api/v1/namespaces/default/configmaps/probe"
# A watch nginx proxies, unbuffered, to WatchEvents: one event per `send()`.
WATCH_PATH = "/api/v1/namespaces/default/pods?watch=1"
# A request the podward configurations and kubectl proxy refuse themselves (exec is denied by podward's
# kubectl-proxy preset and by kubectl proxy's default --reject-paths); the others forward it (nginx: 404).
REFUSED_PATH = "/api/v1/namespaces/default/pods/web-0/exec?command=date&stdout=true"
# A group nginx does not serve (404 Status): the flood asks for thousands of made-up resources in it.
MADE_UP_PREFIX = "/apis/made.up/v1/thing"


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


def watch_event_json(resource_version: int) -> bytes:
    """One MODIFIED event of the PodList's first pod (~1.3 KB), as a watch sends it: one JSON line."""
    pod = json.loads(pod_list_json())["items"][0]
    pod["metadata"]["resourceVersion"] = str(resource_version)
    return json.dumps({"type": "MODIFIED", "object": pod}, separators=(",", ":")).encode() + b"\n"


class WatchEvents:
    """A plain HTTP/1.1 server behind nginx's watch location: it answers a watch with a chunked stream and
    writes one event to the latest watch each time `send()` is called, so that a proxy's cost per watch event
    can be counted one event at a time. A newer watch ends the older ones."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.latest: queue.Queue | None = None
        self.resource_version = 50000
        threading.Thread(target=self._accept, name="watch-events", daemon=True).start()

    def send(self) -> None:
        self.resource_version += 1
        with self.lock:
            if self.latest:
                self.latest.put(watch_event_json(self.resource_version))

    def end_watch(self) -> None:
        """Ends the latest watch (the server's side of timeoutSeconds)."""
        with self.lock:
            if self.latest:
                self.latest.put(None)
                self.latest = None

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        events: queue.Queue = queue.Queue()
        with connection:
            head = b""
            while b"\r\n\r\n" not in head:
                data = connection.recv(4096)
                if not data:
                    return
                head += data
            with self.lock:
                if self.latest:
                    self.latest.put(None)
                self.latest = events
            try:
                # The head and a first event at once: over h2, nginx holds the head until data follows.
                first = watch_event_json(self.resource_version)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(first), first))
                while (event := events.get()) is not None:
                    connection.sendall(b"%x\r\n%s\r\n" % (len(event), event))
                connection.sendall(b"0\r\n\r\n")
            except OSError:
                pass


def status_json(code: int, reason: str, message: str) -> str:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "code": code}, separators=(",", ":"))


class Nginx:
    """One nginx master and one worker on CPU 0; every token the run will write is in its map."""

    def __init__(self, work: pathlib.Path, pki, tokens: list[str]):
        self.work, self.port = work / "nginx", free_port()
        self.watch_events = WatchEvents()
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
            events_port=self.watch_events.port,
            unauthorized=status_json(401, "Unauthorized", "Unauthorized"),
            not_found=status_json(404, "NotFound", "the server could not find the requested resource"),
            echo_headers=echo,
        ))
        self.service: Service | None = None

    def start(self) -> "Nginx":
        argv = pinned(LOAD_CPUS, ["nginx", "-p", str(self.work), "-c", str(self.conf),
                                  "-e", str(self.work / "nginx-error.log")])
        self.service = Service("nginx", argv, {"PATH": os.environ["PATH"]}, self.work / "nginx-stderr.log",
                               f"https://127.0.0.1:{self.port}", ready=lambda s: accepts(self.port))
        self.service.start()
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
