"""Who the real API server thinks is calling: real TokenRequest tokens (bound to the pod, extended or not, for a
second service account, for a foreign audience), rotation under load, RBAC's own answers next to podward's,
impersonation, and the audit log naming the service account, the token and the pod."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import time

import pytest

from podward.local.jwt import claims_of

from conftest import assert_status, grant, request
from harness.envtest import credential_id, received_at
from podward.local.waiting import wait_for
from test_observability import metric

pytestmark = pytest.mark.envtest


def sa_user(namespace: str, service_account: str = "app") -> str:
    return f"system:serviceaccount:{namespace}:{service_account}"


def audit_events_for(kube, since: float, path: str, count: int = 1, timeout: float = 5) -> list:
    """The audit events of requests to `path` (query included) received since `since`: at least `count`,
    waited for, since the API server writes an event just after it answers."""
    return wait_for(lambda: (events := [e for e in kube.audit_events(since) if e["requestURI"] == path])
                    and len(events) >= count and events, timeout, f"{count} audit events for {path}")


def test_the_audit_log_names_the_service_account_the_token_and_the_pod(real_podward, real_pod, kube):
    path = f"/api/v1/namespaces/{real_pod.namespace}/pods"
    since = time.time()
    assert request(real_podward, "GET", path, headers={"User-Agent": "app/1.0"}).status == 200
    [event] = audit_events_for(kube, since, path)
    assert event["user"]["username"] == sa_user(real_pod.namespace)
    assert credential_id(event) == claims_of(real_pod.token)["jti"]
    extra = event["user"]["extra"]
    assert extra["authentication.kubernetes.io/pod-name"] == [real_pod.name]
    assert extra["authentication.kubernetes.io/pod-uid"] == [real_pod.env["POD_UID"]]
    assert event["userAgent"].startswith("app/1.0 podward/")
    assert event["userAgent"].endswith(f"(pod {real_pod.namespace}/{real_pod.name})")
    assert (event["verb"], event["objectRef"]["resource"], event["responseStatus"]["code"]) == ("list", "pods", 200)
    assert "impersonatedUser" not in event


def test_rotation_under_steady_load_fails_nothing_and_lands_within_the_bound(real_podward, real_pod, kube):
    """A new TokenRequest token, written kubelet-style in the middle of a request loop; the audit log says
    which token (JTI) authenticated each request."""
    path = f"/api/v1/namespaces/{real_pod.namespace}/configmaps"
    old_jti = claims_of(real_pod.token)["jti"]
    connection = http.client.HTTPConnection("127.0.0.1", real_podward.settings.listen_port, timeout=10)
    failures, sent, rotated_at, new_jti = [], 0, None, None
    since = time.time()
    start = time.monotonic()
    while time.monotonic() - start < 5:
        if rotated_at is None and time.monotonic() - start > 1.5:
            new_jti = claims_of(real_pod.issue_token())["jti"]
            rotated_at = time.time()
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        sent += 1
        if response.status != 200:
            failures.append(response.status)
    connection.close()
    assert sent > 100 and failures == []
    events = audit_events_for(kube, since, path, count=sent)
    assert {credential_id(e) for e in events} == {old_jti, new_jti}
    first_new = min(received_at(e) for e in events if credential_id(e) == new_jti)
    assert first_new - rotated_at < 2.0, "the new token must be in use within the 2 s bound"
    late_old = [e["requestReceivedTimestamp"] for e in events
                if credential_id(e) == old_jti and received_at(e) > rotated_at + 2.0]
    assert late_old == [], "no request may carry the old token after the bound"


def test_a_token_for_another_service_account_changes_what_rbac_allows(real_podward, real_pod, kube):
    namespace = real_pod.namespace
    path = f"/api/v1/namespaces/{namespace}/secrets"
    denied = assert_status(request(real_podward, "GET", path), 403, "Forbidden")
    # The API server's own words, passed through untouched.
    assert denied["message"] == (f'secrets is forbidden: User "{sa_user(namespace)}" cannot list resource '
                                 f'"secrets" in API group "" in the namespace "{namespace}"')
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader", "namespace": namespace}})
    grant(kube, namespace, "reader", [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}])
    rotated_at = time.monotonic()
    real_pod.issue_token(service_account="reader")
    wait_for(lambda: request(real_podward, "GET", path).status == 200, timeout=3)
    assert time.monotonic() - rotated_at < 2.5
    since = time.time()
    assert request(real_podward, "GET", path).json()["kind"] == "SecretList"
    [event] = audit_events_for(kube, since, path)
    assert event["user"]["username"] == sa_user(namespace, "reader")


def test_a_token_for_a_foreign_audience_gets_the_api_servers_401(real_pod, start_real_envoy, kube):
    """podward reads claims without verifying them; the API server verifies, and its 401 reaches the app."""
    real_pod.issue_token(audiences=["https://oidc.eks.example/id/0123"])
    envoy = start_real_envoy(real_pod)
    since = time.time()
    path = f"/api/v1/namespaces/{real_pod.namespace}/pods"
    assert_status(request(envoy, "GET", path), 401, "Unauthorized")
    [event] = audit_events_for(kube, since, path)
    assert (event["user"], event["responseStatus"]["code"]) == ({}, 401)


def test_a_non_extended_tokens_expiry_gauge_follows_its_exp(real_pod, start_real_envoy):
    real_pod.issue_token(lifetime_seconds=1800)
    envoy = start_real_envoy(real_pod)
    request(envoy, "GET", "/version")
    claims = claims_of(real_pod.token)
    assert claims["exp"] - claims["iat"] == 1800 and "warnafter" not in claims["kubernetes.io"]
    wait_for(lambda: metric(envoy, "podward_token_expiry_seconds{}") > 0)
    assert abs(metric(envoy, "podward_token_expiry_seconds{}") - (claims["exp"] - time.time())) <= 3


def test_an_extended_tokens_expiry_gauge_follows_warnafter(real_podward, real_pod):
    """A projected volume's default 3607 s token is extended by the API server to a year; `warnafter` is the
    hour at which the kubelet should have replaced it, and what an operator must alert on."""
    claims = claims_of(real_pod.token)
    warn_after = claims["kubernetes.io"]["warnafter"]
    assert warn_after - claims["iat"] == 3607 and claims["exp"] - claims["iat"] == 365 * 24 * 3600
    request(real_podward, "GET", "/version")
    wait_for(lambda: metric(real_podward, "podward_token_expiry_seconds{}") > 0)
    assert abs(metric(real_podward, "podward_token_expiry_seconds{}") - (warn_after - time.time())) <= 3


def test_the_apps_own_token_is_replaced_by_default(real_podward, real_pod, kube):
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": "other", "namespace": real_pod.namespace}})
    other_token = kube.token_request(real_pod.namespace, "other")
    path = f"/api/v1/namespaces/{real_pod.namespace}/pods"
    since = time.time()
    assert request(real_podward, "GET", path, headers={"Authorization": f"Bearer {other_token}"}).status == 200
    [event] = audit_events_for(kube, since, path)
    assert event["user"]["username"] == sa_user(real_pod.namespace)


def test_the_apps_own_token_can_be_preserved(real_pod, start_real_envoy, kube):
    envoy = start_real_envoy(real_pod, {"token": {"client_authorization": "preserve"}})
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": "other", "namespace": real_pod.namespace}})
    grant(kube, real_pod.namespace, "other", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}])
    other_token = kube.token_request(real_pod.namespace, "other")
    path = f"/api/v1/namespaces/{real_pod.namespace}/pods"
    since = time.time()
    assert request(envoy, "GET", path, headers={"Authorization": f"Bearer {other_token}"}).status == 200
    assert_status(request(envoy, "GET", path, headers={"Authorization": "Bearer app-supplied"}), 401, "Unauthorized")
    assert request(envoy, "GET", path).status == 200
    users = [e["user"].get("username") for e in audit_events_for(kube, since, path, count=3)]
    assert users == [sa_user(real_pod.namespace, "other"), None, sa_user(real_pod.namespace)]


IMPERSONATE_ADMIN = {"Impersonate-User": "envtest-admin", "Impersonate-Group": "system:masters"}


def test_impersonation_headers_are_stripped(real_podward, real_pod, kube):
    namespace = real_pod.namespace
    since = time.time()
    # As the admin, this would list secrets; stripped, the service account gets RBAC's 403.
    path = f"/api/v1/namespaces/{namespace}/secrets"
    assert_status(request(real_podward, "GET", path, headers=IMPERSONATE_ADMIN), 403, "Forbidden")
    [event] = audit_events_for(kube, since, path)
    assert event["user"]["username"] == sa_user(namespace) and "impersonatedUser" not in event


def test_allowed_impersonation_meets_the_api_servers_rbac(real_pod, start_real_envoy):
    envoy = start_real_envoy(real_pod, {"allow_impersonation": True})
    denied = assert_status(request(envoy, "GET", f"/api/v1/namespaces/{real_pod.namespace}/secrets",
                                   headers=IMPERSONATE_ADMIN), 403, "Forbidden")
    # 1.36's constrained impersonation: the check names the request being impersonated, not `users`.
    assert denied["message"] == (f'secrets is forbidden: User "{sa_user(real_pod.namespace)}" cannot '
                                 f'impersonate-on:user-info:list resource "secrets" in API group "" in the namespace '
                                 f'"{real_pod.namespace}"')


def test_podwards_denial_has_the_shape_of_the_api_servers(real_pod, start_real_envoy, kube):
    """read-only lets a delete of a secret through to RBAC; podward itself refuses a delete of a pod. Both
    answers must read alike to kubectl and client-go."""
    envoy = start_real_envoy(real_pod, {"policy": {"preset": "read-only",
                                                   "rules": [{"name": "let-rbac-judge", "action": "allow",
                                                              "verbs": ["delete"], "apiGroups": [""],
                                                              "resources": ["secrets"]}]}})
    namespace = real_pod.namespace
    direct = kube.request("DELETE", f"/api/v1/namespaces/{namespace}/secrets/s", token=real_pod.token)
    from_rbac = request(envoy, "DELETE", f"/api/v1/namespaces/{namespace}/secrets/s")
    assert (from_rbac.status, from_rbac.body) == (direct.status, direct.body) and direct.status == 403
    rbac = assert_status(from_rbac, 403, "Forbidden")
    podward = assert_status(request(envoy, "DELETE", f"/api/v1/namespaces/{namespace}/pods/p"), 403, "Forbidden")
    assert list(podward) == list(rbac)
    assert list(podward["details"]) == list(rbac["details"]) == ["name", "kind"]
    assert rbac["message"].startswith('secrets "s" is forbidden: User ')
    assert podward["message"].startswith('pods "p" is forbidden: podward policy rule "read-only/default"')
    assert re.search(f'to delete resource "pods" in API group "" in the namespace "{namespace}"$', podward["message"])
    assert re.search(f'cannot delete resource "secrets" in API group "" in the namespace "{namespace}"$',
                     rbac["message"])


def test_kubectl_prints_the_api_servers_refusal(real_podward, real_pod, tmp_path):
    result = subprocess.run([os.environ["KUBECTL"], "--server", real_podward.url, "-n", real_pod.namespace,
                             "get", "secrets"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "HOME": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f'Error from server (Forbidden): secrets is forbidden: User "{sa_user(real_pod.namespace)}" cannot list '
        f'resource "secrets" in API group "" in the namespace "{real_pod.namespace}"')
