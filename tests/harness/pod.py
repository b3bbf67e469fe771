"""A pod's view of the world, laid out on local disk as the kubelet lays it out.

The sidecar sees `serviceaccount/` (token, ca.crt, namespace) and `podinfo/`
(labels, annotations) as atomically swapped volumes, and Downward API
environment variables.
"""

from __future__ import annotations

import pathlib

from harness.jwt import make_token
from harness.kubelet import AtomicDir, format_map
from harness.pki import Pki

# Valid in a real API server: label values allow no spaces (annotations, which may, carry the odd bytes).
DEFAULT_LABELS = {"app": "curl-with-ambassador", "tier": "front-end"}
DEFAULT_ANNOTATIONS = {"example.com/note": "line one\nline two", "owner": "team-a"}


class LocalPod:
    def __init__(self, root: pathlib.Path, pki: Pki, namespace: str = "default",
                 name: str = "curl-with-ambassador", service_account: str = "default"):
        self.namespace, self.name, self.service_account = namespace, name, service_account
        self.pki = pki
        self.service_account_dir = AtomicDir(str(root / "serviceaccount"))
        self.podinfo_dir = AtomicDir(str(root / "podinfo"))
        # The policy ConfigMap's volume; empty unless a test projects one (write_policy).
        self.policy_dir = AtomicDir(str(root / "policy"))
        self.token: str | None = None
        self.write_podinfo(DEFAULT_LABELS, DEFAULT_ANNOTATIONS)

    def issue_token(self, lifetime_seconds: int = 3607, now: float | None = None) -> str:
        """Writes a fresh token the way the kubelet rotates it, and returns it."""
        self.token = make_token(self.namespace, self.service_account, self.name,
                                lifetime_seconds=lifetime_seconds, now=now)
        self.write_service_account(self.token)
        return self.token

    def write_service_account(self, token: str | None) -> None:
        """`token=None` leaves the token file out, as before the kubelet's first write."""
        files = {"ca.crt": pathlib.Path(self.pki.ca_cert).read_bytes(), "namespace": self.namespace}
        if token is not None:
            files["token"] = token
        self.service_account_dir.write(files)

    def write_policy(self, configmap_data: dict) -> bool:
        """Projects a policy ConfigMap's data as the kubelet updates a ConfigMap volume; False if unchanged."""
        return self.policy_dir.write(configmap_data)

    def write_podinfo(self, labels: dict, annotations: dict) -> None:
        self.podinfo_dir.write({"labels": format_map(labels), "annotations": format_map(annotations)})

    @property
    def env(self) -> dict:
        """The Downward API environment variables of the sidecar manifest."""
        return {
            "POD_NAME": self.name,
            "POD_NAMESPACE": self.namespace,
            "POD_UID": "0b9c7e3e-5f6a-4c1d-9e2f-3a4b5c6d7e8f",
            "POD_IP": "10.244.0.7",
            "HOST_IP": "192.168.49.2",
            "NODE_NAME": "node-1",
            "SERVICE_ACCOUNT": self.service_account,
            "CPU_REQUEST": "100",
            "CPU_LIMIT": "500",
            "MEMORY_REQUEST": "33554432",
            "MEMORY_LIMIT": "67108864",
        }


class ClusterPod(LocalPod):
    """A pod that exists in a real API server (envtest.py): its tokens come from the TokenRequest API, bound to
    its Pod object as the kubelet binds a projected volume's, and its Downward API values are the object's."""

    def __init__(self, root: pathlib.Path, kube, pod_object: dict):
        meta = pod_object["metadata"]
        super().__init__(root, kube.pki, namespace=meta["namespace"], name=meta["name"],
                         service_account=pod_object["spec"]["serviceAccountName"])
        self.kube, self.object = kube, pod_object
        self.write_podinfo(meta.get("labels", {}), meta.get("annotations", {}))

    def issue_token(self, lifetime_seconds: int = 3607, audiences: list | None = None,
                    service_account: str | None = None) -> str:
        """Writes a fresh TokenRequest token the way the kubelet rotates it, and returns it. `service_account`
        other than the pod's is what a misconfigured or compromised kubelet could write; tests use it to see
        the API server judge a different identity."""
        self.token = self.kube.token_request(self.namespace, service_account or self.service_account,
                                             lifetime_seconds, audiences, pod=None if service_account else self.object)
        self.write_service_account(self.token)
        return self.token

    @property
    def env(self) -> dict:
        return {**super().env, "POD_UID": self.object["metadata"]["uid"], "NODE_NAME": self.object["spec"]["nodeName"]}
