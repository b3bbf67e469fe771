"""A pod of the real API server (envtest.py), its files laid out as the kubelet lays them out."""

from __future__ import annotations

import pathlib

from podward.local.kubelet import LocalPod


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
