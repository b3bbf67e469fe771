"""Test kit that stands in for Kubernetes: PKI, service-account tokens, kubelet volume layout,
Downward API formatting and a kube-apiserver look-alike."""
