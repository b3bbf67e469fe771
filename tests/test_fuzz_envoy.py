"""Random requests through real Envoy and podward, over raw sockets: random header names and values, random
paths and queries. Whatever the bytes, Envoy never logs a panic, and every answer is either a Kubernetes Status
(the sidecar's or the API server's) or the API server's answer to a request forwarded with the pod's token;
nothing reaches exec or attach.

CI runs each fuzzer for a few seconds; PODWARD_FUZZ_SECONDS runs them longer and PODWARD_FUZZ_SEED replays a
run. The counts are printed (pytest -s) and written to /tmp/podward-figures/fuzz.json.
"""

from __future__ import annotations

import collections
import json
import os
import random
import socket
import time

from harness.figures import record_figures
from test_attacks import INTERACTIVE, parse_answers

SECONDS = float(os.environ.get("PODWARD_FUZZ_SECONDS", "8"))
SEED = int(os.environ.get("PODWARD_FUZZ_SEED", str(time.time_ns() % 2 ** 32)))
# Headers that frame the request (covered one by one in test_attacks.py): fuzzing them makes Envoy wait for a
# body that never comes.
FRAMING = {b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"expect", b"te", b"keep-alive",
           b"http2-settings", b"proxy-connection"}
INTERESTING_NAMES = [b"User-Agent", b"Accept", b"Authorization", b"Impersonate-User", b"Impersonate-Group",
                     b"Impersonate-Extra-Scopes", b"X-Pod-Name", b"X-Pod-Uid", b"X-Pod-Labels", b"X-Pod-Annotations",
                     b"X-Envoy-Original-Path", b"X-Envoy-Retry-On", b"X-Envoy-Upstream-Rq-Timeout-Ms",
                     b"X-Forwarded-For", b"X-Request-Id", b"Host", b"Cookie", b"Accept-Encoding", b"Content-Type"]
TOKEN_CHARS = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
SEGMENTS = ["api", "apis", "v1", "namespaces", "default", "kube-system", "pods", "demo-0", "exec", "attach",
            "portforward", "log", "proxy", "nodes", "configmaps", "watch", "..", ".", "", "%2e%2e", "%2e", "%2f",
            "%2F", "%5c", "%00", "%65xec", "EXEC", "exec;x=y", "\\", "%c0%af", "%e9", "%ff", "a" * 300, "~", "*",
            "%25", "%252e", ":", "@", "$self"]
QUERY_KEYS = ["watch", "fieldSelector", "labelSelector", "command", "stdin", "container", "follow", "x", "%00", ""]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "get"]


def random_bytes(rng: random.Random, alphabet: bytes, low: int, high: int) -> bytes:
    return bytes(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def header_value(rng: random.Random, high_bytes: bool) -> bytes:
    printable = bytes(range(0x20, 0x7f)) + b"\t"
    alphabet = printable + (bytes(range(0x80, 0x100)) if high_bytes else b"")
    value = random_bytes(rng, alphabet, 0, 60)
    if rng.random() < 0.05:  # a byte Envoy must refuse
        at = rng.randint(0, len(value))
        value = value[:at] + rng.choice([b"\x00", b"\x01", b"\x7f", b"\x1b"]) + value[at:]
    return value


def header_name(rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return rng.choice(INTERESTING_NAMES)
    name = random_bytes(rng, TOKEN_CHARS, 1, 30)
    if rng.random() < 0.03:  # not a token: Envoy must refuse
        name += rng.choice([b" ", b"\xe9", b"(", b"\x00"])
    return name


def fuzzed_headers(rng: random.Random, high_bytes: bool) -> list:
    headers = []
    for _ in range(rng.randint(1, 6)):
        name = header_name(rng)
        if name.lower() not in FRAMING:
            headers.append((name, header_value(rng, high_bytes)))
    return headers


def fuzzed_target(rng: random.Random) -> bytes:
    segments = [rng.choice(SEGMENTS) if rng.random() < 0.85 else
                random_bytes(rng, bytes(range(0x21, 0x7f)) + bytes(range(0x80, 0x100)), 1, 12).decode("latin-1")
                for _ in range(rng.randint(1, 9))]
    path = "/" + rng.choice(["/", "//"]).join(segments)
    if rng.random() < 0.5:
        pairs = [f"{rng.choice(QUERY_KEYS)}={rng.choice(SEGMENTS + ['1', 'true', 'metadata.name%3Ddemo-0'])}"
                 for _ in range(rng.randint(1, 4))]
        path += "?" + "&".join(pairs)
    if rng.random() < 0.05:
        path += "#" + rng.choice(SEGMENTS)
    return path.encode("latin-1")


def request_bytes(method: str, target: bytes, fuzz_id: int, headers: list) -> bytes:
    lines = [method.encode() + b" " + target + b" HTTP/1.1"]
    if not any(name.lower() == b"host" for name, _ in headers):
        lines.append(b"Host: localhost")
    lines.append(b"X-Fuzz-Id: %d" % fuzz_id)
    lines += [name + b": " + value for name, value in headers]
    if method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: 0")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def send(port: int, data: bytes):
    """The one answer to one request on a fresh connection, or None if Envoy closed without one."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as connection:
        connection.sendall(data)
        while not parse_answers(received):
            try:
                chunk = connection.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    answers = parse_answers(received)
    return answers[0] if answers else None


def is_status(answer) -> bool:
    try:
        body = json.loads(answer.body)
    except ValueError:
        return False
    return answer.headers.get("content-type") == "application/json" and body.get("kind") == "Status"


class Verdicts:
    """Counts, and the first input that broke a promise."""

    def __init__(self):
        self.inputs, self.codes, self.forwarded, self.violations = 0, collections.Counter(), 0, []

    def check(self, data: bytes, answer, forwarded: dict, fuzz_id: int, token: str):
        self.inputs += 1
        if answer is None:
            self.violations.append((data, "no answer"))
            return
        self.codes[answer.status] += 1
        if answer.status == 503 and b"podward failed on this request" in answer.body:
            self.violations.append((data, "the filter crashed"))
        received = forwarded.get(str(fuzz_id))
        if received is not None:
            self.forwarded += 1
            if received.token != token:
                self.violations.append((data, "forwarded without the pod's token"))
        # What the API server answered is passed on as it is; what the sidecar answered itself is a Status.
        if received is None and not is_status(answer):
            self.violations.append((data, f"answer {answer.status} is not a Status: {answer.body[:200]!r}"))

    def figures(self) -> dict:
        return {"seed": SEED, "seconds": SECONDS, "inputs": self.inputs, "forwarded_with_token": self.forwarded,
                "answers": {str(code): count for code, count in sorted(self.codes.items())}}


def fuzz(envoy, apiserver, pod, make_request, section: str, stop_at_first: bool) -> Verdicts:
    rng, verdicts = random.Random(SEED), Verdicts()
    deadline = time.monotonic() + SECONDS
    fuzz_id = 0
    while time.monotonic() < deadline and not (stop_at_first and verdicts.violations):
        fuzz_id += 1
        data = make_request(rng, fuzz_id)
        answer = send(envoy.settings.listen_port, data)
        forwarded = {r.header("x-fuzz-id"): r for r in apiserver.requests[-3:]}
        verdicts.check(data, answer, forwarded, fuzz_id, pod.token)
    figures = verdicts.figures()
    figures["violations"] = len(verdicts.violations)
    record_figures("fuzz", envoy.settings.build, section, figures)
    assert [r.path for r in apiserver.requests if INTERACTIVE.search(r.path)] == []
    assert all(r.token == pod.token for r in apiserver.requests)
    assert "panicked at" not in envoy.log(), "the filter panicked"
    assert verdicts.violations == [], verdicts.violations[:5]
    return verdicts


def test_fuzzed_paths_and_queries(podward, apiserver, pod):
    def make_request(rng: random.Random, fuzz_id: int) -> bytes:
        return request_bytes(rng.choice(METHODS), fuzzed_target(rng), fuzz_id, [])

    verdicts = fuzz(podward, apiserver, pod, make_request, "paths", stop_at_first=False)
    assert verdicts.inputs > 100


def test_fuzzed_ascii_headers(podward, apiserver, pod):
    def make_request(rng: random.Random, fuzz_id: int) -> bytes:
        return request_bytes("GET", b"/api", fuzz_id, fuzzed_headers(rng, high_bytes=False))

    verdicts = fuzz(podward, apiserver, pod, make_request, "ascii_headers", stop_at_first=False)
    assert verdicts.inputs > 100 and verdicts.forwarded > verdicts.inputs / 2


def test_fuzzed_headers_with_any_byte(podward, apiserver, pod):
    def make_request(rng: random.Random, fuzz_id: int) -> bytes:
        return request_bytes("GET", b"/api", fuzz_id, fuzzed_headers(rng, high_bytes=True))

    verdicts = fuzz(podward, apiserver, pod, make_request, "any_byte_headers", stop_at_first=True)
    assert verdicts.inputs > 100 and verdicts.forwarded > verdicts.inputs / 2
