"""A stand-in kube-apiserver, for what a real one cannot serve here: what needs a kubelet (exec, attach and
port-forward over WebSocket or SPDY/3.1, remotecommand.py; pod logs, followed) and a record of every request as
it arrived, bodies and headers included, which a real server does not show; plus faults a real server will not
make (tokens accepted, revoked or expired at will, denials, a wrong certificate). Objects live in a small store
with create, get, list, update and delete, enough for clients to write and read back; patches, watches and
Table output are the real API server's (tests/harness/envtest.py), which the tests use for them.

    server = StandInApiServer(certfile=pki.server_cert, keyfile=pki.server_key, token_file=path)
    server.start(); ...; server.stop()
"""

import copy
import dataclasses
import datetime
import json
import random
import select
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

from podward.local.jwt import DEFAULT_AUDIENCE, claims_of
from podward.local.remotecommand import (PORT_FORWARD_SPDY, PORT_FORWARD_TUNNEL, SPDY_UPGRADE,
                                         STREAM_PROTOCOL_HEADER, V4_CHANNEL, V5_CHANNEL, ExecOptions, SpdyConnection,
                                         StreamSession, TunnelledStream, WebSocket, negotiate, offered_protocols,
                                         serve_spdy_exec, serve_spdy_portforward, serve_websocket_exec,
                                         serve_websocket_portforward, websocket_accept)

VERSION_INFO = {
    "major": "1", "minor": "30", "gitVersion": "v1.30.0",
    "gitCommit": "7c48c2bd72b9bf5c44d21d7338cc7bea77d0ad2a", "gitTreeState": "clean",
    "buildDate": "2024-04-17T17:27:03Z", "goVersion": "go1.22.2", "compiler": "gc", "platform": "linux/amd64",
}
# An OpenAPI document without definitions: kubectl (apply, validation) insists on fetching one and then
# skips validation for kinds it does not describe.
OPENAPI_V2 = {"swagger": "2.0", "info": {"title": "Kubernetes", "version": VERSION_INFO["gitVersion"]},
              "paths": {}, "definitions": {}}
OPENAPI_V2_PROTOBUF_TYPE = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
JSON = "application/json"
# How often a followed log gets a line, and a follower is checked for having gone.
LOG_FOLLOW_INTERVAL = 0.2

# --- API resources and discovery -------------------------------------------------------------------

# No patch and no watch: those are the real API server's to show (module docstring).
ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "update"]


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    name: str                 # plural, as in the URL
    kind: str
    namespaced: bool = True
    short_names: tuple = ()
    verbs: tuple = tuple(ALL_VERBS)
    categories: tuple = ()
    subresources: tuple = ()  # (name, kind, verbs)

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """GroupResource.String(), as used in error messages: `pods`, `deployments.apps`."""
        return f"{self.name}.{self.group}" if self.group else self.name

    def verbs_for(self, subresource: str) -> tuple | None:
        """The verbs allowed on the resource or one of its subresources; None if there is no such thing."""
        if not subresource:
            return self.verbs
        return next((verbs for name, _, verbs in self.subresources if name == subresource), None)

    def discovery_entries(self) -> list:
        entry = {"name": self.name, "singularName": self.kind.lower(), "namespaced": self.namespaced,
                 "kind": self.kind, "verbs": list(self.verbs)}
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        entries = [entry]
        for sub, kind, verbs in self.subresources:
            sub_entry = {"name": f"{self.name}/{sub}", "singularName": "", "namespaced": self.namespaced,
                         "kind": kind, "verbs": list(verbs)}
            if sub == "scale":
                sub_entry.update(group="autoscaling", version="v1")
            entries.append(sub_entry)
        return entries


STATUS_VERBS = ("get", "update")
RESOURCE_TYPES = [
    ResourceType("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    ResourceType("", "v1", "events", "Event", short_names=("ev",)),
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",),
                 verbs=("create", "delete", "get", "list", "update"),
                 subresources=(("finalize", "Namespace", ("update",)), ("status", "Namespace", STATUS_VERBS))),
    ResourceType("", "v1", "nodes", "Node", namespaced=False, short_names=("no",),
                 subresources=(("proxy", "NodeProxyOptions", ("create", "delete", "get", "update")),
                               ("status", "Node", STATUS_VERBS))),
    ResourceType("", "v1", "pods", "Pod", short_names=("po",), categories=("all",),
                 subresources=(("attach", "PodAttachOptions", ("create", "get")),
                               ("exec", "PodExecOptions", ("create", "get")),
                               ("log", "Pod", ("get",)),
                               ("portforward", "PodPortForwardOptions", ("create", "get")),
                               ("status", "Pod", STATUS_VERBS))),
    ResourceType("", "v1", "secrets", "Secret"),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",),
                 subresources=(("token", "TokenRequest", ("create",)),)),
    ResourceType("", "v1", "services", "Service", short_names=("svc",), categories=("all",),
                 subresources=(("proxy", "ServiceProxyOptions", ("create", "delete", "get", "update")),
                               ("status", "Service", STATUS_VERBS))),
    ResourceType("apps", "v1", "deployments", "Deployment", short_names=("deploy",), categories=("all",),
                 subresources=(("scale", "Scale", STATUS_VERBS), ("status", "Deployment", STATUS_VERBS))),
    ResourceType("batch", "v1", "cronjobs", "CronJob", short_names=("cj",), categories=("all",),
                 subresources=(("status", "CronJob", STATUS_VERBS),)),
    ResourceType("batch", "v1", "jobs", "Job", categories=("all",),
                 subresources=(("status", "Job", STATUS_VERBS),)),
]
RESOURCES_BY_PATH = {(r.group, r.version, r.name): r for r in RESOURCE_TYPES}
RESOURCES_BY_KIND = {(r.group_version, r.kind): r for r in RESOURCE_TYPES}
GROUPS = {"apps": ["v1"], "batch": ["v1"]}
HEALTH_CHECKS = ["ping", "log", "etcd"]


def resource_type(name: str) -> ResourceType:
    """Look a resource up by plural name (`pods`, `deployments`), as test helpers do."""
    for r in RESOURCE_TYPES:
        if r.name == name:
            return r
    raise KeyError(name)


def _api_resource_list(group_version: str) -> dict:
    resources = [e for r in RESOURCE_TYPES if r.group_version == group_version for e in r.discovery_entries()]
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}


def _api_group(name: str) -> dict:
    versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in GROUPS[name]]
    return {"name": name, "versions": versions, "preferredVersion": versions[0]}


def _root_paths() -> list:
    paths = ["/api", "/api/v1", "/apis", "/apis/", "/healthz", "/livez", "/openapi/v2", "/readyz", "/version"]
    for group, versions in GROUPS.items():
        paths += [f"/apis/{group}"] + [f"/apis/{group}/{v}" for v in versions]
    for check in HEALTH_CHECKS:
        paths += [f"/healthz/{check}", f"/livez/{check}", f"/readyz/{check}"]
    return sorted(paths)


def _discovery_document(path: str, server_address: str) -> dict | None:
    """The JSON document the real server serves at a discovery path, or None."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return {"paths": _root_paths()}
    if parts == ["version"]:
        return VERSION_INFO
    if parts == ["openapi", "v2"]:
        return OPENAPI_V2
    if parts == ["api"]:
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}
    if parts == ["api", "v1"]:
        return _api_resource_list("v1")
    if parts == ["apis"]:
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_api_group(g) for g in GROUPS]}
    if parts[0] == "apis" and parts[1] in GROUPS:
        if len(parts) == 2:
            return {"kind": "APIGroup", "apiVersion": "v1", **_api_group(parts[1])}
        if len(parts) == 3 and parts[2] in GROUPS[parts[1]]:
            return _api_resource_list(f"{parts[1]}/{parts[2]}")
    return None


def _openapi_v2_protobuf() -> bytes:
    """OPENAPI_V2 as a gnostic openapi.v2.Document message, encoded by hand (all fields are strings or
    messages, so it is just tag, length, bytes)."""
    def tagged(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload  # every payload here is < 128 bytes
    info = tagged(1, OPENAPI_V2["info"]["title"].encode()) + tagged(2, OPENAPI_V2["info"]["version"].encode())
    return tagged(1, b"2.0") + tagged(2, info) + tagged(8, b"") + tagged(9, b"")


# --- Errors as the API server reports them ---------------------------------------------------------

class ApiError(Exception):
    """A failure that becomes a `Status` object, like apimachinery's StatusError."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason}
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(rtype: ResourceType | None, name: str = "") -> dict:
    details = {}
    if name:
        details["name"] = name
    if rtype and rtype.group:
        details["group"] = rtype.group
    if rtype:
        details["kind"] = rtype.name
    return details


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rtype.qualified} "{name}" not found', _details(rtype, name))


def already_exists(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rtype.qualified} "{name}" already exists', _details(rtype, name))


def conflict(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rtype.qualified} "{name}": the object '
                    "has been modified; please apply your changes to the latest version and try again",
                    _details(rtype, name))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(rtype: ResourceType, name: str, cause: str) -> ApiError:
    return ApiError(422, "Invalid", f'{rtype.kind} "{name}" is invalid: {cause}', _details(rtype, name))


def method_not_allowed(rtype: ResourceType, verb: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", f'{verb} is not supported on resources of kind "{rtype.name}"',
                    _details(rtype))


# --- Reading a request like requestinfo.go ---------------------------------------------------------

@dataclass
class RequestAttributes:
    """What the authorizer sees (k8s.io/apiserver/pkg/authorization/authorizer.Attributes)."""
    user: str
    verb: str
    path: str
    is_resource: bool = False
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


_VERB_BY_METHOD = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch",
                   "DELETE": "delete"}


def request_attributes(user: str, method: str, path: str, query: dict) -> RequestAttributes:
    """requestinfo.go's GetRequestInfo, step by step; test_real_api.py checks it against a real API server."""
    attrs = RequestAttributes(user=user, verb=method.lower(), path=path)
    trimmed = path.strip("/")
    parts = trimmed.split("/") if trimmed else []  # empty inner segments are kept, as splitPath keeps them
    if len(parts) < 3 or parts[0] not in ("api", "apis") or (parts[0] == "apis" and len(parts) < 4):
        return attrs
    if parts[0] == "api":
        attrs.api_version, rest = parts[1], parts[2:]
    else:
        attrs.api_group, attrs.api_version, rest = parts[1], parts[2], parts[3:]
    attrs.is_resource = True
    if rest[0] in ("watch", "proxy") and len(rest) > 1:  # deprecated /api/v1/watch/... and /proxy/... forms
        attrs.verb, rest = rest[0], rest[1:]
    else:
        attrs.verb = _VERB_BY_METHOD.get(method, "")  # OPTIONS and the like: no verb at all
    if rest[0] == "namespaces" and len(rest) > 1:
        attrs.namespace = rest[1]
        if len(rest) > 2 and rest[2] not in ("status", "finalize"):
            rest = rest[2:]
    attrs.resource = rest[0]
    attrs.name = rest[1] if len(rest) > 1 else ""
    # The proxy verb takes no subresource: what follows the name is the proxied path.
    attrs.subresource = rest[2] if len(rest) > 2 and attrs.verb != "proxy" else ""
    if not attrs.name and attrs.verb == "get":
        # ListOptions' bool conversion: only "0" and "false" in any case are false; an empty value is true.
        watch = query.get("watch")
        attrs.verb = "watch" if watch and watch[0] != "0" and watch[0].lower() != "false" else "list"
        for key, op, value in _parse_selector(query.get("fieldSelector", [""])[0]):
            if key == "metadata.name" and op == "=" and value and "/" not in value and "%" not in value \
                    and value not in (".", ".."):
                attrs.name = value
    if not attrs.name and attrs.verb == "delete":
        attrs.verb = "deletecollection"
    return attrs


def forbidden(attrs: RequestAttributes) -> ApiError:
    """The authorization filter's message, word for word (endpoints/handlers/responsewriters/errors.go)."""
    if not attrs.is_resource:
        return ApiError(403, "Forbidden",
                        f'forbidden: User "{attrs.user}" cannot {attrs.verb} path "{attrs.path}"', {})
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    scope = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    reason = (f'User "{attrs.user}" cannot {attrs.verb} resource "{resource}" in API group '
              f'"{attrs.api_group}" {scope}')
    qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
    subject = f'{qualified} "{attrs.name}"' if attrs.name else qualified
    details = {}
    if attrs.name:
        details["name"] = attrs.name
    if attrs.api_group:
        details["group"] = attrs.api_group
    details["kind"] = attrs.resource
    return ApiError(403, "Forbidden", f"{subject} is forbidden: {reason}", details)


# --- Selectors (equality-based only) ---------------------------------------------------------------

def _parse_selector(text: str) -> list:
    """`a=b,c!=d,e,!f` -> [(key, op, value)] with op one of =, !=, exists, !exists."""
    terms = []
    for raw in filter(None, (t.strip() for t in text.split(","))):
        if "!=" in raw:
            key, value = raw.split("!=", 1)
            terms.append((key.strip(), "!=", value.strip()))
        elif "=" in raw:
            key, value = raw.split("==", 1) if "==" in raw else raw.split("=", 1)
            terms.append((key.strip(), "=", value.strip()))
        elif raw.startswith("!"):
            terms.append((raw[1:].strip(), "!exists", ""))
        elif " " in raw or "(" in raw:
            raise bad_request(f"unable to parse requirement: set-based selectors are not supported: {raw}")
        else:
            terms.append((raw, "exists", ""))
    return terms


def _field_value(obj: dict, dotted: str):
    value = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def _matches(terms: list, lookup) -> bool:
    for key, op, value in terms:
        actual = lookup(key)
        if op == "=" and actual != value or op == "!=" and actual == value:
            return False
        if op == "exists" and actual is None or op == "!exists" and actual is not None:
            return False
    return True


@dataclass
class Selection:
    """Which objects of one resource a list is about."""
    rtype: ResourceType
    namespace: str = ""
    labels: list = field(default_factory=list)
    fields: list = field(default_factory=list)

    def includes(self, obj: dict) -> bool:
        meta = obj.get("metadata", {})
        if self.namespace and meta.get("namespace", "") != self.namespace:
            return False
        object_labels = meta.get("labels") or {}
        return (_matches(self.labels, object_labels.get)
                and _matches(self.fields, lambda key: _field_value(obj, key)))


# --- The object store ------------------------------------------------------------------------------

def _now_timestamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _generated_name(prefix: str) -> str:
    return prefix + "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))


class ObjectStore:
    """Objects by (resource, namespace, name). Stored dicts are never mutated, only replaced, so readers
    can serialise them without holding the lock."""

    def __init__(self):
        self.lock = threading.RLock()
        self.objects: dict[str, dict] = {r.name: {} for r in RESOURCE_TYPES}
        self.resource_version = 1000

    def list(self, selection: Selection) -> tuple[list, str]:
        with self.lock:
            items = [o for o in self.objects[selection.rtype.name].values() if selection.includes(o)]
            return sorted(items, key=_sort_key), str(self.resource_version)

    def get(self, rtype: ResourceType, namespace: str, name: str) -> dict:
        with self.lock:
            obj = self.objects[rtype.name].get((namespace, name))
        if obj is None:
            raise not_found(rtype, name)
        return obj

    def create(self, rtype: ResourceType, namespace: str, obj: dict, dry_run=False) -> dict:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = _generated_name(meta["generateName"])
        if not meta.get("name"):
            raise invalid(rtype, "", "metadata.name: Required value: name or generateName is required")
        if rtype.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise bad_request("the namespace of the provided object does not match the namespace sent "
                                  "on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        obj["apiVersion"], obj["kind"] = rtype.group_version, rtype.kind
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now_timestamp())
        meta.pop("resourceVersion", None)
        _apply_defaults(rtype, obj)
        with self.lock:
            if rtype.namespaced and ("", namespace) not in self.objects["namespaces"]:
                raise not_found(resource_type("namespaces"), namespace)
            if (namespace if rtype.namespaced else "", meta["name"]) in self.objects[rtype.name]:
                raise already_exists(rtype, meta["name"])
            return obj if dry_run else self._commit(rtype, obj)

    def update(self, rtype: ResourceType, namespace: str, name: str, obj: dict, dry_run=False) -> dict:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL "
                              f"({name})")
        with self.lock:
            current = self.get(rtype, namespace, name)
            if meta.get("resourceVersion") not in (None, "", current["metadata"]["resourceVersion"]):
                raise conflict(rtype, name)
            for kept in ("name", "namespace", "uid", "creationTimestamp"):
                if kept in current["metadata"]:
                    meta[kept] = current["metadata"][kept]
            obj["apiVersion"], obj["kind"] = rtype.group_version, rtype.kind
            if dry_run:
                return obj
            if _without_rv(obj) == _without_rv(current):
                return current  # a no-op write keeps the resourceVersion, as in etcd3 storage
            return self._commit(rtype, obj)

    def delete(self, rtype: ResourceType, namespace: str, name: str, dry_run=False) -> dict:
        with self.lock:
            obj = self.get(rtype, namespace, name)
            if dry_run:
                return obj
            gone = copy.deepcopy(obj)
            gone["metadata"].update(deletionTimestamp=_now_timestamp(), deletionGracePeriodSeconds=0)
            del self.objects[rtype.name][(namespace, name)]
            self._bump(gone)
            if rtype.name == "namespaces":  # a namespace takes its contents with it
                for other in RESOURCE_TYPES:
                    if other.namespaced:
                        for (ns, other_name) in [k for k in self.objects[other.name] if k[0] == name]:
                            self.delete(other, ns, other_name)
            return gone

    def _commit(self, rtype, obj) -> dict:
        obj = self._bump(obj)
        meta = obj["metadata"]
        self.objects[rtype.name][(meta.get("namespace", ""), meta["name"])] = obj
        return obj

    def _bump(self, obj) -> dict:
        self.resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self.resource_version)
        return obj

def _sort_key(obj):
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def _without_rv(obj) -> dict:
    return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}}


def _apply_defaults(rtype: ResourceType, obj: dict):
    """Make new objects look settled, e.g. pods Running and ready, so `kubectl get` output is realistic."""
    if rtype.name == "namespaces":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj.setdefault("status", {"phase": "Active"})
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    elif rtype.name == "pods":
        spec = obj.setdefault("spec", {})
        spec.setdefault("containers", [{"name": "app", "image": "nginx"}])
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("nodeName", "node-1")
        spec.setdefault("restartPolicy", "Always")
        status = obj.setdefault("status", {})
        status.setdefault("phase", "Running")
        status.setdefault("hostIP", "10.0.0.1")
        status.setdefault("podIP", f"10.244.0.{random.randint(2, 250)}")
        status.setdefault("containerStatuses", [
            {"name": c["name"], "image": c.get("image", ""), "imageID": f"{c.get('image', '')}@sha256:{'0' * 64}",
             "containerID": f"containerd://{uuid.uuid4().hex}{uuid.uuid4().hex}", "ready": True, "restartCount": 0,
             "started": True, "state": {"running": {"startedAt": obj["metadata"]["creationTimestamp"]}}}
            for c in spec["containers"]])


# --- Authentication --------------------------------------------------------------------------------

class TokenRegistry:
    """Which bearer tokens are valid. JWT-shaped tokens are valid until their `exp`, and only for this server's
    audience; the token file is re-read on every request, and each token seen there stays valid until it
    expires, as after a kubelet rotation in a real cluster. Signatures are not checked: tokens are accepted by
    value."""

    def __init__(self, token_file: str | None):
        self.token_file = token_file
        self.lock = threading.Lock()
        self.users: dict[str, str] = {}
        self.revoked: set[str] = set()

    def accept(self, token: str, user: str | None = None):
        with self.lock:
            self.revoked.discard(token)
            self.users[token] = user or _subject(token) or "test-user"

    def revoke(self, token: str):
        with self.lock:
            self.users.pop(token, None)
            self.revoked.add(token)

    def authenticate(self, token: str) -> str | None:
        """The user name for a token, or None if the token is not (or no longer) valid."""
        self._learn_from_file()
        with self.lock:
            user = self.users.get(token)
        if user is None or _expired(token) or not _for_this_server(token):
            return None
        return user

    def _learn_from_file(self):
        if not self.token_file:
            return
        try:
            with open(self.token_file) as f:
                token = f.read().strip()
        except OSError:
            return
        with self.lock:
            if token and token not in self.users and token not in self.revoked:
                self.users[token] = _subject(token) or "test-user"


def _subject(token: str) -> str | None:
    try:
        return claims_of(token).get("sub")
    except ValueError:
        return None


def _for_this_server(token: str) -> bool:
    """A JWT whose audience is not the API server's gets 401, as from a real one (test_real_auth.py)."""
    try:
        audience = claims_of(token).get("aud")
    except ValueError:
        return True  # opaque tokens carry no audience
    return DEFAULT_AUDIENCE in (audience if isinstance(audience, list) else [audience])


def _expired(token: str) -> bool:
    try:
        exp = claims_of(token).get("exp")
    except ValueError:
        return False  # opaque tokens never expire
    return isinstance(exp, (int, float)) and exp <= time.time()


# --- Request records -------------------------------------------------------------------------------

@dataclass
class RecordedRequest:
    method: str
    path: str                     # including the query string, as sent
    headers: list                 # [(name, value)] in the order received
    body: bytes
    token: str | None             # the bearer token presented, valid or not
    user: str | None = None       # who it authenticated as
    status: int | None = None     # the response code
    received_at: float = field(default_factory=time.time)

    def header(self, name: str, default=None):
        values = self.header_values(name)
        return values[0] if values else default

    def header_values(self, name: str) -> list:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def query(self) -> dict:
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query, keep_blank_values=True)

    @property
    def path_only(self) -> str:
        return urllib.parse.urlsplit(self.path).path


# --- HTTP ------------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_HttpServer"

    def do_GET(self):
        self._serve()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def log_message(self, format, *args):
        pass  # keep test output clean; server.requests is the log

    def _serve(self):
        api: StandInApiServer = self.server.api
        url = urllib.parse.urlsplit(self.path)
        self.query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        body = self._read_body()
        token = _bearer_token(self.headers.get("Authorization", ""))
        self.record = RecordedRequest(self.command, self.path, list(self.headers.items()), body, token)
        api._record(self.record)
        try:
            attrs = self._authenticate_and_authorize(api, token, url.path)
            self._route(api, attrs, body)
        except ApiError as error:
            self._send_json(error.code, error.status())
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            self.close_connection = True
        except Exception as error:  # a bug in the stand-in: say so the way the real server would
            if self.record.status is not None:
                raise
            self._send_json(500, ApiError(500, "InternalError", f"Internal error occurred: {error!r}").status())

    def _authenticate_and_authorize(self, api, token, path) -> RequestAttributes:
        user = api.tokens.authenticate(token) if token else None
        if user is None and not (token is None and api.anonymous_auth):
            raise unauthorized()
        user = user or "system:anonymous"
        self.record.user = user
        attrs = request_attributes(user, self.command, path, self.query)
        impersonated = self.headers.get("Impersonate-User")
        if impersonated is not None or self.headers.get("Impersonate-Group") is not None:
            if not api.allow_impersonation:
                # 1.36's constrained impersonation asks for `impersonate-on:user-info:<verb>` on the request's
                # own resource, and words the refusal that way.
                raise forbidden(dataclasses.replace(attrs, verb=f"impersonate-on:user-info:{attrs.verb}"))
            user = impersonated or user
            self.record.user = attrs.user = user
        if not api.is_allowed(attrs):
            raise forbidden(attrs)
        return attrs

    def _route(self, api, attrs: RequestAttributes, body: bytes):
        if not attrs.is_resource:
            self._serve_non_resource(api, attrs.path)
            return
        if attrs.api_group and attrs.api_version not in GROUPS.get(attrs.api_group, []):
            self._send_page_not_found()  # no API group/version serves it: the server's mux answers
            return
        rtype = RESOURCES_BY_PATH.get((attrs.api_group, attrs.api_version, attrs.resource))
        verbs = rtype and rtype.verbs_for(attrs.subresource)
        if verbs is None:
            raise path_not_found()
        if attrs.verb not in verbs:
            raise method_not_allowed(rtype, attrs.verb)
        namespace = attrs.namespace if rtype.namespaced else ""
        if attrs.subresource == "log":
            self._serve_log(api, rtype, namespace, attrs.name)
        elif attrs.subresource in ("exec", "attach", "portforward"):
            self._serve_upgrade(api, rtype, namespace, attrs)
        elif attrs.subresource in ("proxy", "token", "scale", "finalize"):
            raise bad_request(f"the stand-in does not implement {rtype.name}/{attrs.subresource}")
        else:
            handler = getattr(self, f"_verb_{attrs.verb}", None)
            if handler is None:
                raise method_not_allowed(rtype, attrs.verb)
            handler(api, rtype, namespace, attrs, body)

    # Resource verbs

    def _verb_list(self, api, rtype, namespace, attrs, body):
        items, rv = api.store.list(self._selection(rtype, namespace))
        self._send_json(200, {"kind": f"{rtype.kind}List", "apiVersion": rtype.group_version,
                              "metadata": {"resourceVersion": rv}, "items": items})

    def _verb_get(self, api, rtype, namespace, attrs, body):
        self._send_object(200, rtype, api.store.get(rtype, namespace, attrs.name))

    def _verb_create(self, api, rtype, namespace, attrs, body):
        if attrs.name:
            raise method_not_allowed(rtype, "create")
        if rtype.namespaced and not attrs.namespace:
            raise path_not_found()
        obj = api.store.create(rtype, namespace, self._parse_object(body), self._dry_run())
        self._send_object(201, rtype, obj)

    def _verb_update(self, api, rtype, namespace, attrs, body):
        obj = api.store.update(rtype, namespace, attrs.name, self._parse_object(body), self._dry_run())
        self._send_object(200, rtype, obj)

    def _verb_delete(self, api, rtype, namespace, attrs, body):
        gone = api.store.delete(rtype, namespace, attrs.name, self._dry_run())
        if rtype.name in ("pods", "namespaces"):  # their registries return the object, others a Status
            self._send_object(200, rtype, gone)
            return
        details = {"name": attrs.name, **({"group": rtype.group} if rtype.group else {}), "kind": rtype.name,
                   "uid": gone["metadata"]["uid"]}
        self._send_json(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                              "details": details})

    def _verb_deletecollection(self, api, rtype, namespace, attrs, body):
        with api.store.lock:
            items, _ = api.store.list(self._selection(rtype, namespace))
            gone = [api.store.delete(rtype, o["metadata"].get("namespace", ""), o["metadata"]["name"],
                                     self._dry_run()) for o in items]
            rv = str(api.store.resource_version)
        self._send_json(200, {"kind": f"{rtype.kind}List", "apiVersion": rtype.group_version,
                              "metadata": {"resourceVersion": rv}, "items": gone})

    def _check_container(self, pod: dict):
        """The `container` query parameter names one of the pod's containers, or the pod has just one."""
        name = pod["metadata"]["name"]
        containers = [c["name"] for c in pod.get("spec", {}).get("containers", [])]
        container = self.query.get("container", [""])[0]
        if not container and len(containers) > 1:
            raise bad_request(f"a container name must be specified for pod {name}, choose one of: "
                              f"[{' '.join(containers)}]")
        if container and container not in containers:
            raise bad_request(f"container {container} is not valid for pod {name}")

    def _serve_log(self, api, rtype, namespace, name):
        self._check_container(api.store.get(rtype, namespace, name))
        lines = api.pod_log(name).splitlines(keepends=True)
        tail = self.query.get("tailLines", [""])[0]
        if tail.isdigit():
            lines = lines[len(lines) - int(tail):] if int(tail) else []
        limit = self.query.get("limitBytes", [""])[0]
        budget = int(limit) if limit.isdigit() else None
        if self.query.get("follow", [""])[0] not in ("true", "1"):
            text = "".join(lines).encode()
            self._send(200, text[:budget] if budget is not None else text, "text/plain")
            return
        self._start_chunked("text/plain")
        sequence = len(lines)
        while budget is None or budget > 0:
            chunk = "".join(lines).encode()
            if budget is not None:
                chunk, budget = chunk[:budget], budget - len(chunk[:budget])
            if chunk:
                self._write_chunk(chunk)
            if not self._keep_streaming(api, LOG_FOLLOW_INTERVAL):
                break
            sequence += 1
            lines = [f"{name}: log line {sequence}\n"]
        if not self.close_connection:
            self._end_chunked()

    def _serve_upgrade(self, api, rtype, namespace, attrs):
        """exec, attach, portforward: the API server hands the upgraded connection to the kubelet's
        stream server; here remotecommand.py plays the kubelet and the container."""
        pod = api.store.get(rtype, namespace, attrs.name)
        kind = attrs.subresource
        if kind != "portforward":
            self._check_container(pod)
        upgrade = self.headers.get("Upgrade", "").lower()
        if "upgrade" not in self.headers.get("Connection", "").lower() or upgrade not in ("websocket", "spdy/3.1"):
            raise bad_request("Upgrade request required")
        if upgrade == "websocket":
            self._upgrade_to_websocket(api, kind)
        else:
            self._upgrade_to_spdy(api, kind)

    def _upgrade_to_websocket(self, api, kind):
        key = self.headers.get("Sec-WebSocket-Key", "")
        if self.headers.get("Sec-WebSocket-Version") != "13" or not key:
            raise bad_request("websocket: not a valid version 13 handshake")
        offered = offered_protocols(self.headers.get_all("Sec-WebSocket-Protocol") or [])
        protocol = negotiate(offered, [V4_CHANNEL, PORT_FORWARD_TUNNEL] if kind == "portforward"
                             else [V5_CHANNEL, V4_CHANNEL])
        if offered and protocol is None:
            raise bad_request(f"requested protocol(s) are not supported: {offered}")
        headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", websocket_accept(key))]
        if protocol:
            headers.append(("Sec-WebSocket-Protocol", protocol))
        session = self._switch_protocols(api, kind, "websocket", protocol or "", headers)
        ws = WebSocket(self.rfile, self.wfile)
        try:
            if protocol == PORT_FORWARD_TUNNEL:
                tunnel = TunnelledStream(ws)
                serve_spdy_portforward(SpdyConnection(tunnel, tunnel), session)
            elif kind == "portforward":
                ports = [int(p) for v in self.query.get("ports", []) for p in v.split(",") if p]
                serve_websocket_portforward(ws, session, ports)
            else:
                serve_websocket_exec(ws, session, ExecOptions.from_query(self.query, kind))
        finally:
            session.ended.set()

    def _upgrade_to_spdy(self, api, kind):
        supported = [PORT_FORWARD_SPDY] if kind == "portforward" else [V4_CHANNEL]
        offered = offered_protocols(self.headers.get_all(STREAM_PROTOCOL_HEADER) or [])
        protocol = negotiate(offered, supported)
        if protocol is None:  # httpstream.Handshake answers in plain text
            message = (f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
                       f"server accepts {supported}\n")
            self._send(403, message.encode(), "text/plain; charset=utf-8",
                       [("X-Accepted-Stream-Protocol-Versions", p) for p in supported])
            return
        headers = [("Connection", "Upgrade"), ("Upgrade", SPDY_UPGRADE), (STREAM_PROTOCOL_HEADER, protocol)]
        session = self._switch_protocols(api, kind, "spdy", protocol, headers)
        spdy = SpdyConnection(self.rfile, self.wfile)
        try:
            if kind == "portforward":
                serve_spdy_portforward(spdy, session)
            else:
                serve_spdy_exec(spdy, session, ExecOptions.from_query(self.query, kind))
        finally:
            session.ended.set()

    def _switch_protocols(self, api, kind, transport, protocol, headers) -> StreamSession:
        self.record.status = 101
        self.close_connection = True
        self.send_response_only(101)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        command = self.query.get("command", []) if kind == "exec" else []
        session = StreamSession(kind, transport, protocol, command)
        api._add_session(session)
        return session

    # Non-resource endpoints

    def _serve_non_resource(self, api, path):
        if self.command not in ("GET", "HEAD"):
            raise path_not_found()
        first = path.strip("/").split("/")[0]
        if first in ("healthz", "livez", "readyz"):
            self._serve_health(first, path)
            return
        if path.rstrip("/") == "/openapi/v2" and OPENAPI_V2_PROTOBUF_TYPE in self.headers.get("Accept", ""):
            # The real handler labels it application/octet-stream: Go's mime parser rejects the "@".
            self._send(200, _openapi_v2_protobuf(), "application/octet-stream")
            return
        document = _discovery_document(path, f"{api.host}:{api.port}")
        if document is None:
            self._send_page_not_found()
            return
        self._send_json(200, document)

    def _send_page_not_found(self):
        """A path no API serves gets Go's plain-text 404 from the API server's mux, not a Status."""
        self._send(404, b"404 page not found\n", "text/plain; charset=utf-8", [("X-Content-Type-Options", "nosniff")])

    def _serve_health(self, endpoint, path):
        check = path.strip("/").split("/")[1:]
        if check and check[0] not in HEALTH_CHECKS:
            raise path_not_found()
        if "verbose" in self.query and not check:
            text = "".join(f"[+]{c} ok\n" for c in HEALTH_CHECKS) + f"{endpoint} check passed\n"
        else:
            text = "ok"
        self._send(200, text.encode(), "text/plain; charset=utf-8", [("X-Content-Type-Options", "nosniff")])

    # Request helpers

    def _selection(self, rtype, namespace) -> Selection:
        return Selection(rtype, namespace, _parse_selector(self.query.get("labelSelector", [""])[0]),
                         _parse_selector(self.query.get("fieldSelector", [""])[0]))

    def _dry_run(self) -> bool:
        return "All" in self.query.get("dryRun", [])

    def _parse_object(self, body: bytes) -> dict:
        content_type = self.headers.get("Content-Type", JSON)
        try:
            obj = yaml.safe_load(body) if "yaml" in content_type else json.loads(body)
        except (ValueError, yaml.YAMLError) as e:
            raise bad_request(f"error decoding request body: {e}") from None
        if not isinstance(obj, dict):
            raise bad_request("the request body must be an object")
        return obj

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # Response helpers

    def _send_object(self, code, rtype, obj):
        self._send_json(code, obj)

    def _send_json(self, code, document):
        self._send(code, json.dumps(document, separators=(",", ":")).encode(), JSON)

    def _send(self, code, body: bytes, content_type, extra_headers=()):
        self.record.status = code
        self._status_line(code, content_type, extra_headers)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _status_line(self, code, content_type, extra_headers):
        # No Server header: the real API server (Go net/http) does not send one.
        self.send_response_only(code)
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", content_type)
        for name, value in extra_headers:
            self.send_header(name, value)
        self.send_header("Date", self.date_time_string())

    def _start_chunked(self, content_type):
        self.record.status = 200
        self._status_line(200, content_type, [])
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _write_chunk(self, data: bytes):
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        except OSError:
            self.close_connection = True
            raise BrokenPipeError("client went away") from None

    def _end_chunked(self):
        self.wfile.write(b"0\r\n\r\n")

    def _keep_streaming(self, api, wait: float) -> bool:
        """False once the stream should end: server stopping, or client gone (a follower never sends anything
        more, so a readable socket means it hung up). Waits up to `wait` seconds for that."""
        if api.stopping.is_set():
            self.close_connection = True
            return False
        readable, _, _ = select.select([self.connection], [], [], wait)
        if readable:
            self.close_connection = True
            return False
        return True


def _bearer_token(header: str) -> str | None:
    scheme, _, value = header.strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address, api: "StandInApiServer", ssl_context: ssl.SSLContext | None):
        self.api, self.ssl_context = api, ssl_context
        self.open_sockets: set = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, _Handler)

    def finish_request(self, request, client_address):
        # Go servers disable Nagle; without this, a response written as headers + body stalls ~40 ms on
        # the client's delayed ACK.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The TLS handshake happens here, in the connection's own thread, so a slow client cannot stall
        # the accept loop.
        if self.ssl_context:
            try:
                request.settimeout(10)
                request = self.ssl_context.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (ssl.SSLError, OSError):
                return
        with self.sockets_lock:
            self.open_sockets.add(request)
        try:
            super().finish_request(request, client_address)
        except (ConnectionError, ssl.SSLError, TimeoutError):
            pass
        finally:
            with self.sockets_lock:
                self.open_sockets.discard(request)
            try:
                request.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        pass  # disconnects mid-request are normal here

    def close_open_connections(self):
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# --- The server ------------------------------------------------------------------------------------

class StandInApiServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, certfile: str | None = None,
                 keyfile: str | None = None, token_file: str | None = None, anonymous_auth: bool = False,
                 allow_impersonation: bool = False, seed_defaults: bool = True):
        """certfile/keyfile: serve TLS (plain HTTP without them). anonymous_auth: requests without a token
        act as system:anonymous (allowed only health and version endpoints) instead of getting 401."""
        self.host = host
        self.tokens = TokenRegistry(token_file)
        self.store = ObjectStore()
        self.anonymous_auth = anonymous_auth
        self.allow_impersonation = allow_impersonation
        self.stopping = threading.Event()
        self._denials: list = []
        self._requests: list[RecordedRequest] = []
        self._requests_lock = threading.Lock()
        self._sessions: list[StreamSession] = []
        context = None
        if certfile:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(certfile, keyfile)
            context.set_alpn_protocols(["http/1.1"])
        self._http = _HttpServer((host, port), self, context)
        self.port = self._http.server_address[1]
        self._thread = None
        if seed_defaults:
            self._seed_defaults()

    @property
    def url(self) -> str:
        scheme = "https" if self._http.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def open_connections(self) -> int:
        """Connections the stand-in holds (TLS done), idle or in use; one is let go only once what came on it
        is recorded."""
        with self._http.sockets_lock:
            return len(self._http.open_sockets)

    def start(self) -> "StandInApiServer":
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"standin-apiserver-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.stopping.set()
        if self._thread:
            self._http.shutdown()
        self._http.close_open_connections()
        self._http.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # Authentication and authorization

    def accept(self, token: str, user: str | None = None):
        """Make `token` valid (as `user`, by default the JWT's `sub`) until revoked or, for a JWT, expired."""
        self.tokens.accept(token, user)

    def revoke(self, token: str):
        self.tokens.revoke(token)

    def forbid(self, verb: str | None = None, resource: str | None = None, namespace: str | None = None,
               name: str | None = None, predicate=None):
        """Deny matching requests with 403. Either a predicate over RequestAttributes, or any of
        verb/resource (may be `pods/log`)/namespace/name, None meaning any."""
        if predicate is None:
            def predicate(a: RequestAttributes):
                full = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
                return ((verb is None or a.verb == verb) and (resource is None or full == resource)
                        and (namespace is None or a.namespace == namespace) and (name is None or a.name == name))
        self._denials.append(predicate)

    def allow_all(self):
        self._denials.clear()

    def is_allowed(self, attrs: RequestAttributes) -> bool:
        if attrs.user == "system:anonymous":  # like system:public-info-viewer
            return not attrs.is_resource and attrs.path.strip("/").split("/")[0] in (
                "healthz", "livez", "readyz", "version")
        return not any(denied(attrs) for denied in self._denials)

    # Recorded requests

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._requests_lock:
            return list(self._requests)

    def clear_requests(self):
        """Forget recorded requests and upgraded sessions."""
        with self._requests_lock:
            self._requests.clear()
            self._sessions.clear()

    def _record(self, record: RecordedRequest):
        with self._requests_lock:
            self._requests.append(record)

    # Upgraded connections (exec, attach, port-forward)

    @property
    def sessions(self) -> list[StreamSession]:
        with self._requests_lock:
            return list(self._sessions)

    def _add_session(self, session: StreamSession):
        with self._requests_lock:
            self._sessions.append(session)

    # Objects

    def seed(self, objects) -> list:
        """Store objects (dicts with apiVersion and kind) as if created, replacing any of the same name (the
        stand-in lives for the session, and a test may run once per build); missing namespaces are created."""
        created = []
        for obj in objects:
            rtype = RESOURCES_BY_KIND[(obj["apiVersion"], obj["kind"])]
            namespace = obj.get("metadata", {}).get("namespace", "default") if rtype.namespaced else ""
            if namespace and not self.get_object("namespaces", "", namespace):
                self.store.create(resource_type("namespaces"), "", {"metadata": {"name": namespace}})
            if self.get_object(rtype.name, namespace, obj["metadata"]["name"]):
                self.store.delete(rtype, namespace, obj["metadata"]["name"])
            created.append(self.store.create(rtype, namespace, obj))
        return created

    def get_object(self, resource: str, namespace: str, name: str) -> dict | None:
        try:
            return self.store.get(resource_type(resource), namespace, name)
        except ApiError:
            return None

    @staticmethod
    def pod_log(pod: str) -> str:
        """Every pod's log: five numbered lines naming it."""
        return "".join(f"{pod}: log line {i}\n" for i in range(1, 6))

    def _seed_defaults(self):
        namespaces = ["default", "kube-system", "kube-public", "kube-node-lease"]
        self.seed([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces])
        self.seed([
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1", "labels": {
                "kubernetes.io/hostname": "node-1", "kubernetes.io/os": "linux"}}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "namespace": "default",
                                                                 "labels": {"component": "apiserver"}},
             "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1",
                      "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}},
        ])
        self.seed([{"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": f"demo-{i}", "namespace": "default", "labels": {"app": "demo"}},
                    "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}} for i in range(3)])


