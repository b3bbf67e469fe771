"""A ConfigMap volume kept current from a real API server, as the kubelet keeps one."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time

from podward.local.kubelet import AtomicDir


class ConfigMapVolume:
    """Projects a ConfigMap of a real API server into an AtomicDir whenever it changes, as the kubelet updates a
    ConfigMap volume: it watches the ConfigMap and swaps `..data` on each change. The kubelet itself takes up to
    its sync period (1 min by default) plus its cache's delay; this stand-in writes as soon as the watch says,
    so a test sees what podward adds on top. `written` holds (time.monotonic(), data) of every projection."""

    def __init__(self, kube, namespace: str, name: str, volume: AtomicDir):
        self.kube, self.namespace, self.name, self.volume = kube, namespace, name, volume
        self.written: list = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._sync, name=f"configmap-volume-{name}", daemon=True)
        self.connection: http.client.HTTPSConnection | None = None

    def _sync(self):
        context = ssl.create_default_context(cafile=self.kube.pki.ca_cert)
        path = (f"/api/v1/namespaces/{self.namespace}/configmaps?watch=1&fieldSelector=metadata.name%3D{self.name}"
                "&timeoutSeconds=600")
        self.connection = http.client.HTTPSConnection("127.0.0.1", self.kube.port, context=context)
        self.connection.request("GET", path, headers={"Authorization": f"Bearer {self.kube.admin_token}"})
        response = self.connection.getresponse()
        while not self.stopped.is_set():
            try:
                line = response.readline()
            except (OSError, ValueError):  # the connection closed by stop()
                return
            if not line:
                return
            event = json.loads(line)
            if event["type"] in ("ADDED", "MODIFIED"):
                data = event["object"].get("data", {})
                if self.volume.write(data):
                    self.written.append((time.monotonic(), data))

    def __enter__(self) -> "ConfigMapVolume":
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        if self.connection and self.connection.sock:
            self.connection.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=10)
