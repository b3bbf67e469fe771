"""A stand-in kube-apiserver: enough of the real one's wire behaviour for clients and proxies not to tell.

Covers bearer-token authentication, RBAC-style denials, discovery, an in-memory object store with
list/get/create/update/patch/delete, Table output for kubectl, chunked watches, pod logs, and exec/attach/
port-forward over WebSocket or SPDY/3.1 (remotecommand.py). Every request is recorded so tests can see
exactly what reached "the cluster"; upgraded connections are also kept as `sessions`.

    server = StandInApiServer(certfile=pki.server_cert, keyfile=pki.server_key, token_file=path)
    server.start(); ...; server.stop()
"""

import argparse
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
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from queue import Empty, Queue

import yaml

from podward.local.jwt import DEFAULT_AUDIENCE, claims_of
from podward.local.remotecommand import (PORT_FORWARD_SPDY, PORT_FORWARD_TUNNEL, SPDY_UPGRADE, STREAM_PROTOCOL_HEADER, V4_CHANNEL,
                            V5_CHANNEL, ExecOptions, SpdyConnection, StreamSession, TunnelledStream, WebSocket, negotiate,
                            offered_protocols,
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
SENT_AT_ANNOTATION = "standin/sent-at"
TICK_ANNOTATION = "standin/tick"
JSON = "application/json"
WATCH_HISTORY = 5000         # events kept for watches that resume from a resourceVersion
POLL_INTERVAL = 0.2          # how often idle streams check for a vanished client or a stopping server
LOG_FOLLOW_INTERVAL = 0.2

# --- API resources and discovery -------------------------------------------------------------------

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


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


STATUS_VERBS = ("get", "patch", "update")
RESOURCE_TYPES = [
    ResourceType("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    ResourceType("", "v1", "events", "Event", short_names=("ev",)),
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",),
                 verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
                 subresources=(("finalize", "Namespace", ("update",)), ("status", "Namespace", STATUS_VERBS))),
    ResourceType("", "v1", "nodes", "Node", namespaced=False, short_names=("no",),
                 subresources=(("proxy", "NodeProxyOptions", ("create", "delete", "get", "patch", "update")),
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
                 subresources=(("proxy", "ServiceProxyOptions", ("create", "delete", "get", "patch", "update")),
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
    """Which objects of one resource a list or watch is about."""
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


# --- Patches ---------------------------------------------------------------------------------------

def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target, patch):
    """Merge patch plus the parts of strategic merge kubectl relies on: lists of named items (containers,
    env, volumes...) merge by `name`, and `$patch`/`$setElementOrder`/`$retainKeys` directives are honoured
    or dropped. Without Go struct tags this is an approximation of the real thing."""
    if isinstance(patch, list):
        return [strategic_merge_patch(None, item) for item in patch]
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return strategic_merge_patch(None, {k: v for k, v in patch.items() if k != "$patch"})
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [x for x in result.get(name) or [] if x not in value]
        elif value is None:
            result.pop(key, None)
        elif value and _is_named_list(value) and _is_named_list(result.get(key) or []):
            result[key] = _merge_named_lists(result.get(key) or [], value)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _is_named_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(i, dict) and "name" in i for i in value)


def _merge_named_lists(current: list, patch: list) -> list:
    merged = {item["name"]: item for item in current}
    for item in patch:
        if item.get("$patch") == "delete":
            merged.pop(item["name"], None)
        else:
            merged[item["name"]] = strategic_merge_patch(merged.get(item["name"]), item)
    return list(merged.values())


def json_patch(document, operations):
    """RFC 6902 JSON patch. Raises ValueError with a message like the API server's on failure."""
    if not isinstance(operations, list):
        raise ValueError("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(document)
    for op in operations:
        kind, path = op.get("op"), op.get("path")
        if path is None:
            raise ValueError(f"missing path in operation {op}")
        if kind == "add":
            doc = _pointer_set(doc, path, copy.deepcopy(op["value"]), insert=True)
        elif kind == "remove":
            doc, _ = _pointer_remove(doc, path)
        elif kind == "replace":
            _pointer_get(doc, path)
            doc = _pointer_set(doc, path, copy.deepcopy(op["value"]), insert=False)
        elif kind == "move":
            doc, value = _pointer_remove(doc, op["from"])
            doc = _pointer_set(doc, path, value, insert=True)
        elif kind == "copy":
            doc = _pointer_set(doc, path, copy.deepcopy(_pointer_get(doc, op["from"])), insert=True)
        elif kind == "test":
            if _pointer_get(doc, path) != op.get("value"):
                raise ValueError(f"testing value {path} failed: test failed")
        else:
            raise ValueError(f"Unexpected kind: {kind}")
    return doc


def _pointer_tokens(path: str) -> list:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer must start with /: {path}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _pointer_get(doc, path):
    value = doc
    for token in _pointer_tokens(path):
        value = _child(value, token, path)
    return value


def _child(container, token, path):
    try:
        if isinstance(container, list):
            return container[int(token)]
        return container[token]
    except (KeyError, IndexError, ValueError, TypeError):
        raise ValueError(f"doc is missing path: {path}") from None


def _pointer_set(doc, path, value, insert: bool):
    tokens = _pointer_tokens(path)
    if not tokens:
        return value
    parent = _pointer_get(doc, "/" + "/".join(t.replace("~", "~0").replace("/", "~1") for t in tokens[:-1]))
    last = tokens[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if index > len(parent) or index < 0:
            raise ValueError(f"add operation does not apply: doc is missing path: {path}")
        if insert:
            parent.insert(index, value)
        else:
            parent[index] = value
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise ValueError(f"doc is missing path: {path}")
    return doc


def _pointer_remove(doc, path):
    tokens = _pointer_tokens(path)
    parent = _pointer_get(doc, "/" + "/".join(t.replace("~", "~0").replace("/", "~1") for t in tokens[:-1]))
    value = _child(parent, tokens[-1], path)
    if isinstance(parent, list):
        del parent[int(tokens[-1])]
    else:
        del parent[tokens[-1]]
    return doc, value


# --- Tables for kubectl ----------------------------------------------------------------------------

_NAME_COLUMN = {"name": "Name", "type": "string", "format": "name",
                "description": "Name must be unique within a namespace. Is required when creating resources, "
                "although some resources may allow a client to request the generation of an appropriate name "
                "automatically. Name is primarily intended for creation idempotence and configuration definition. "
                "Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/"
                "names#names", "priority": 0}


def _column(name, description, type_="string", priority=0):
    return {"name": name, "type": type_, "format": "", "description": description, "priority": priority}


_AGE_COLUMN = _column("Age", "CreationTimestamp is a timestamp representing the server time when this object "
                      "was created. It is not guaranteed to be set in happens-before order across separate "
                      "operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.")


def _pod_cells(pod, age):
    statuses = pod.get("status", {}).get("containerStatuses") or []
    containers = pod.get("spec", {}).get("containers") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(s.get("restartCount", 0) for s in statuses)
    phase = "Terminating" if pod["metadata"].get("deletionTimestamp") else pod.get("status", {}).get("phase", "")
    return [pod["metadata"]["name"], f"{ready}/{len(containers)}", phase, str(restarts), age,
            pod.get("status", {}).get("podIP") or "<none>", pod.get("spec", {}).get("nodeName") or "<none>",
            "<none>", "<none>"]


TABLE_COLUMNS = {
    "pods": ([_NAME_COLUMN,
              _column("Ready", "The aggregate readiness state of this pod for accepting traffic."),
              _column("Status", "The aggregate status of the containers in this pod."),
              _column("Restarts", "The number of times the containers in this pod have been restarted and "
                      "when the last container in this pod has restarted."),
              _AGE_COLUMN,
              _column("IP", "IP address allocated to the pod. Routable at least within the cluster. Empty if "
                      "not yet allocated.", priority=1),
              _column("Node", "NodeName indicates in which node this pod is scheduled.", priority=1),
              _column("Nominated Node", "nominatedNodeName is set only when this pod preempts other pods on "
                      "the node.", priority=1),
              _column("Readiness Gates", "If specified, all readiness gates will be evaluated for pod "
                      "readiness.", priority=1)],
             _pod_cells),
    "configmaps": ([_NAME_COLUMN, _column("Data", "Data contains the configuration data.", "integer"),
                    _AGE_COLUMN],
                   lambda cm, age: [cm["metadata"]["name"],
                                    len(cm.get("data") or {}) + len(cm.get("binaryData") or {}), age]),
    "services": ([_NAME_COLUMN, _column("Type", "type determines how the Service is exposed."),
                  _column("Cluster-IP", "clusterIP is the IP address of the service."),
                  _column("External-IP", "externalIPs is a list of IP addresses for which nodes in the cluster "
                          "will also accept traffic for this service."),
                  _column("Port(s)", "The list of ports that are exposed by this service."), _AGE_COLUMN],
                 lambda svc, age: [svc["metadata"]["name"], svc.get("spec", {}).get("type", "ClusterIP"),
                                   svc.get("spec", {}).get("clusterIP", "<none>"), "<none>",
                                   ",".join(f"{p['port']}/{p.get('protocol', 'TCP')}"
                                            for p in svc.get("spec", {}).get("ports", [])) or "<none>", age]),
    "namespaces": ([_NAME_COLUMN, _column("Status", "The status of the namespace"), _AGE_COLUMN],
                   lambda ns, age: [ns["metadata"]["name"], ns.get("status", {}).get("phase", "Active"), age]),
}
_GENERIC_COLUMNS = ([_NAME_COLUMN, _AGE_COLUMN], lambda obj, age: [obj["metadata"]["name"], age])


def wants_table(accept: str) -> bool:
    return any("as=Table" in part for part in accept.split(","))


def to_table(rtype: ResourceType, objects: list, resource_version: str, include_object: str) -> dict:
    columns, cells_of = TABLE_COLUMNS.get(rtype.name, _GENERIC_COLUMNS)
    rows = []
    for obj in objects:
        row = {"cells": cells_of(obj, human_duration(_age_seconds(obj)))}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj["metadata"]}
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": columns, "rows": rows}


def _age_seconds(obj) -> float:
    created = obj["metadata"].get("creationTimestamp")
    if not created:
        return 0
    then = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    return (datetime.datetime.now(datetime.timezone.utc) - then).total_seconds()


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration, which kubectl uses for AGE."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    years, days = hours // 24 // 365, hours // 24 % 365
    if hours < 24 * 365 * 8 and days:
        return f"{years}y{days}d"
    return f"{years}y"


# --- The object store ------------------------------------------------------------------------------

def _now_timestamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _generated_name(prefix: str) -> str:
    return prefix + "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))


class Subscription:
    """One watch: events for a selection, delivered through a queue."""

    def __init__(self, selection: Selection, name: str):
        self.selection, self.name = selection, name
        self.events: Queue = Queue()

    def wants(self, rtype: ResourceType, obj: dict) -> bool:
        return (rtype == self.selection.rtype and self.selection.includes(obj)
                and (not self.name or obj["metadata"]["name"] == self.name))


class ObjectStore:
    """Objects by (resource, namespace, name). Stored dicts are never mutated, only replaced, so readers
    can serialise them without holding the lock."""

    def __init__(self):
        self.lock = threading.RLock()
        self.objects: dict[str, dict] = {r.name: {} for r in RESOURCE_TYPES}
        self.resource_version = 1000
        self.history: deque = deque(maxlen=WATCH_HISTORY)  # (rv, type, rtype, obj)
        self.subscriptions: set[Subscription] = set()

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
            return obj if dry_run else self._commit(rtype, "ADDED", obj)

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
            return self._commit(rtype, "MODIFIED", obj)

    def delete(self, rtype: ResourceType, namespace: str, name: str, dry_run=False) -> dict:
        with self.lock:
            obj = self.get(rtype, namespace, name)
            if dry_run:
                return obj
            gone = copy.deepcopy(obj)
            gone["metadata"].update(deletionTimestamp=_now_timestamp(), deletionGracePeriodSeconds=0)
            del self.objects[rtype.name][(namespace, name)]
            self._record(rtype, "DELETED", self._bump(gone))
            if rtype.name == "namespaces":  # a namespace takes its contents with it
                for other in RESOURCE_TYPES:
                    if other.namespaced:
                        for (ns, other_name) in [k for k in self.objects[other.name] if k[0] == name]:
                            self.delete(other, ns, other_name)
            return gone

    def subscribe(self, selection: Selection, name: str, since: str) -> tuple[Subscription, list]:
        """Start a watch. Returns the subscription and the events to send first: synthetic ADDED events
        for the current state, or (with a resourceVersion) the history since then."""
        subscription = Subscription(selection, name)
        with self.lock:
            if since in ("", "0"):
                items, _ = self.list(selection)
                initial = [("ADDED", o) for o in items if not name or o["metadata"]["name"] == name]
            else:
                initial = self._history_since(int(since) if since.isdigit() else 0, subscription)
            self.subscriptions.add(subscription)
        return subscription, initial

    def unsubscribe(self, subscription: Subscription):
        with self.lock:
            self.subscriptions.discard(subscription)

    def _history_since(self, since: int, subscription: Subscription) -> list:
        oldest = self.history[0][0] if self.history else self.resource_version + 1
        if since < oldest - 1 and len(self.history) == self.history.maxlen:
            raise ApiError(410, "Expired", f"too old resource version: {since} ({oldest - 1})")
        return [(kind, obj) for rv, kind, rtype, obj in self.history
                if rv > since and subscription.wants(rtype, obj)]

    def _commit(self, rtype, event_type, obj) -> dict:
        obj = self._bump(obj)
        meta = obj["metadata"]
        self.objects[rtype.name][(meta.get("namespace", ""), meta["name"])] = obj
        self._record(rtype, event_type, obj)
        return obj

    def _bump(self, obj) -> dict:
        self.resource_version += 1
        obj["metadata"]["resourceVersion"] = str(self.resource_version)
        return obj

    def _record(self, rtype, event_type, obj):
        self.history.append((self.resource_version, event_type, rtype, obj))
        for subscription in self.subscriptions:
            if subscription.wants(rtype, obj):
                subscription.events.put((event_type, obj))


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
        if wants_table(self.headers.get("Accept", "")):
            self._send_json(200, to_table(rtype, items, rv, self._include_object()))
        else:
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

    def _verb_patch(self, api, rtype, namespace, attrs, body):
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type == "application/apply-patch+yaml":
            self._server_side_apply(api, rtype, namespace, attrs.name, body)
            return
        patchers = {"application/json-patch+json": json_patch, "application/merge-patch+json": merge_patch,
                    "application/strategic-merge-patch+json": strategic_merge_patch}
        if content_type not in patchers:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                           "accepted media types include: application/json-patch+json, application/merge-patch"
                           "+json, application/apply-patch+yaml, application/strategic-merge-patch+json")
        try:
            patch = json.loads(body or b"null")
        except ValueError as e:
            raise bad_request(f"error decoding patch: {e}") from None
        with api.store.lock:
            current = api.store.get(rtype, namespace, attrs.name)
            try:
                patched = patchers[content_type](current, patch)
            except (ValueError, KeyError, TypeError) as e:
                raise ApiError(422, "Invalid", str(e)) from None
            if not isinstance(patched, dict):
                raise bad_request("the patch did not produce an object")
            obj = api.store.update(rtype, namespace, attrs.name, patched, self._dry_run())
        self._send_object(200, rtype, obj)

    def _server_side_apply(self, api, rtype, namespace, name, body):
        if not self.query.get("fieldManager", [""])[0]:
            raise ApiError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required '
                           "value: is required for apply patch", {"group": "meta.k8s.io", "kind": "PatchOptions"})
        try:
            applied = yaml.safe_load(body)
        except yaml.YAMLError as e:
            raise bad_request(f"error decoding YAML: {e}") from None
        if not isinstance(applied, dict):
            raise bad_request("the apply patch must be an object")
        with api.store.lock:
            try:
                current = api.store.get(rtype, namespace, name)
            except ApiError:
                applied.setdefault("metadata", {}).setdefault("name", name)
                self._send_object(201, rtype, api.store.create(rtype, namespace, applied, self._dry_run()))
                return
            merged = strategic_merge_patch(current, applied)
            obj = api.store.update(rtype, namespace, name, merged, self._dry_run())
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

    def _verb_watch(self, api, rtype, namespace, attrs, body):
        selection = self._selection(rtype, namespace)
        since = self.query.get("resourceVersion", [""])[0]
        try:
            subscription, initial = api.store.subscribe(selection, attrs.name, since)
        except ApiError as expired:  # reported inside the stream, like the real server
            subscription, initial = None, [("ERROR", expired.status())]
        timeout = self.query.get("timeoutSeconds", [""])[0]
        deadline = time.monotonic() + int(timeout) if timeout.isdigit() and int(timeout) > 0 else None
        table = wants_table(self.headers.get("Accept", ""))
        self._start_chunked(JSON)
        try:
            for event in initial:
                self._send_watch_event(rtype, event, table)
            while subscription and self._keep_streaming(api, deadline):
                try:
                    event = subscription.events.get(timeout=POLL_INTERVAL)
                except Empty:
                    continue
                self._send_watch_event(rtype, event, table)
            if not self.close_connection:
                self._end_chunked()
        finally:
            if subscription:
                api.store.unsubscribe(subscription)

    def _send_watch_event(self, rtype, event, table):
        event_type, obj = event
        if event_type != "ERROR":
            obj = _stamped(obj)
            if table:
                obj = to_table(rtype, [obj], obj["metadata"]["resourceVersion"], self._include_object())
        self._write_chunk(json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n")

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
            if not self._keep_streaming(api, None, wait=LOG_FOLLOW_INTERVAL):
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

    def _include_object(self) -> str:
        return self.query.get("includeObject", ["Metadata"])[0]

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
        if wants_table(self.headers.get("Accept", "")):
            obj = to_table(rtype, [obj], obj["metadata"].get("resourceVersion", ""), self._include_object())
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

    def _keep_streaming(self, api, deadline, wait: float = 0.0) -> bool:
        """False once the stream should end: timeout reached, server stopping, or client gone (for a
        watch the client never sends anything more, so a readable socket means it hung up)."""
        if deadline is not None and time.monotonic() >= deadline:
            return False
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


def _stamped(obj: dict) -> dict:
    """A copy of obj carrying the moment it is sent, for latency measurements."""
    annotations = {**(obj["metadata"].get("annotations") or {}), SENT_AT_ANNOTATION: repr(time.time())}
    return {**obj, "metadata": {**obj["metadata"], "annotations": annotations}}


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
        self._tickers: list = []
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
        for stop_ticker in list(self._tickers):
            stop_ticker()
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

    def put_object(self, obj: dict) -> dict:
        """Create or replace an object, emitting ADDED or MODIFIED to watchers."""
        rtype = RESOURCES_BY_KIND[(obj["apiVersion"], obj["kind"])]
        namespace = obj["metadata"].get("namespace", "default") if rtype.namespaced else ""
        with self.store.lock:
            if self.get_object(rtype.name, namespace, obj["metadata"]["name"]) is None:
                return self.store.create(rtype, namespace, obj)
            fresh = copy.deepcopy(obj)
            fresh["metadata"].pop("resourceVersion", None)
            return self.store.update(rtype, namespace, obj["metadata"]["name"], fresh)

    def touch(self, resource: str, namespace: str, name: str) -> dict:
        """Modify an object (bump annotation standin/tick) so watchers get a MODIFIED event now."""
        rtype = resource_type(resource)
        with self.store.lock:
            obj = copy.deepcopy(self.store.get(rtype, namespace, name))
            annotations = obj["metadata"].setdefault("annotations", {})
            annotations[TICK_ANNOTATION] = str(int(annotations.get(TICK_ANNOTATION, "0")) + 1)
            return self.store.update(rtype, namespace, name, obj)

    def start_ticker(self, interval: float, namespace: str = "default", name: str = "ticker",
                     resource: str = "configmaps"):
        """Touch an object (created if missing) every `interval` seconds. Watch events carry the send time
        in annotation standin/sent-at. Returns a function that stops the ticker."""
        if self.get_object(resource, namespace, name) is None:
            self.seed([{"apiVersion": resource_type(resource).group_version, "kind": resource_type(resource).kind,
                        "metadata": {"name": name, "namespace": namespace}}])
        stopped = threading.Event()

        def tick():
            while not stopped.wait(interval):
                self.touch(resource, namespace, name)

        threading.Thread(target=tick, name=f"ticker-{name}", daemon=True).start()

        def stop():
            stopped.set()
            if stop in self._tickers:
                self._tickers.remove(stop)

        self._tickers.append(stop)
        return stop

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


def _main():
    parser = argparse.ArgumentParser(description="Stand-in kube-apiserver for tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6443)
    parser.add_argument("--cert", help="serving certificate (PEM); plain HTTP without it")
    parser.add_argument("--key", help="serving key (PEM)")
    parser.add_argument("--token-file", help="accept tokens found in this file (re-read per request)")
    parser.add_argument("--token", action="append", default=[], help="accept this token (repeatable)")
    args = parser.parse_args()
    server = StandInApiServer(args.host, args.port, args.cert, args.key, token_file=args.token_file)
    for token in args.token:
        server.accept(token)
    server.start()
    print(f"stand-in kube-apiserver listening on {server.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    _main()
