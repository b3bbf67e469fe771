"""Tokens shaped like the projected, bound service-account tokens the kubelet puts in a pod, with the claims
kube-apiserver 1.36 gives them (seen on the real one, test_real_auth.py).

The signature is random bytes: a proxy reads the claims without verifying them, and the stand-in
API server accepts tokens by value, so nothing here needs a real key.
"""

import base64
import json
import os
import time
import uuid

# kubeadm's and kind's issuer; a token asks for no audience gets the issuer as its audience.
ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_AUDIENCE = ISSUER
# What projected volumes ask for by default. The API server extends such tokens to a year
# (--service-account-extend-token-expiration, on by default) and says in `warnafter` when the kubelet
# should have replaced them; other lifetimes are issued as asked, without `warnafter`.
KUBELET_DEFAULT_SECONDS = 3607
EXTENDED_SECONDS = 365 * 24 * 3600
# Kubernetes' kid is a hash of the signing key; one fixed fake "key" per test run is enough.
KEY_ID = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


def make_token(namespace: str, service_account: str, pod: str, pod_uid: str | None = None,
               node: str = "node-1", lifetime_seconds: int = KUBELET_DEFAULT_SECONDS, now: float | None = None,
               audience: str = DEFAULT_AUDIENCE) -> str:
    iat = int(time.time() if now is None else now)
    extended = lifetime_seconds == KUBELET_DEFAULT_SECONDS
    kubernetes_io = {
        "namespace": namespace,
        "node": {"name": node, "uid": str(uuid.uuid4())},
        "pod": {"name": pod, "uid": pod_uid or str(uuid.uuid4())},
        "serviceaccount": {"name": service_account, "uid": str(uuid.uuid4())},
    }
    if extended:
        kubernetes_io["warnafter"] = iat + lifetime_seconds
    claims = {
        "aud": [audience],
        "exp": iat + (EXTENDED_SECONDS if extended else lifetime_seconds),
        "iat": iat,
        "iss": ISSUER,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": kubernetes_io,
        "nbf": iat,
        "sub": f"system:serviceaccount:{namespace}:{service_account}",
    }
    header = {"alg": "RS256", "kid": KEY_ID}
    return ".".join([_b64(_compact_json(header)), _b64(_compact_json(claims)), _b64(os.urandom(256))])


def claims_of(token: str) -> dict:
    """The payload of a JWT, not verified. Raises ValueError if the token is not JWT-shaped."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"undecodable JWT payload: {e}") from None
    if not isinstance(claims, dict):
        raise ValueError("JWT payload is not an object")
    return claims


def _compact_json(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
