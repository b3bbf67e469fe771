"""What the kubelet gives a pod's sidecar, laid out on local disk as the kubelet lays it out: the projected
`serviceaccount/` (token, ca.crt, namespace), the Downward API's `podinfo/` (labels, annotations) and the policy
ConfigMap's volume, each an atomically swapped directory, and the Downward API environment variables."""

from __future__ import annotations

import os
import pathlib
import random
import shutil
import time

from podward.local.jwt import make_token
from podward.local.pki import Pki

DATA_DIR = "..data"
NEW_DATA_DIR = "..data_tmp"


class AtomicDir:
    """A volume directory maintained like the kubelet's AtomicWriter (pkg/volume/util/atomic_writer.go).

    Layout after write({"token": ..., "ca.crt": ...}):
        ..2024_05_01_10_00_00.123456789/token   (the real files, dir mode 0755)
        ..data -> ..2024_05_01_10_00_00.123456789
        token  -> ..data/token
        ca.crt -> ..data/ca.crt
    Readers holding the old ..data target see complete old files; readers resolving paths after the
    rename see complete new files; nobody ever sees a half-written file.
    """

    def __init__(self, path: str, file_mode: int = 0o644):
        self.path = path
        self.file_mode = file_mode
        os.makedirs(path, exist_ok=True)

    def write(self, files: dict) -> bool:
        """Project `files` (relative path -> bytes|str). Paths absent from `files` disappear.

        Returns False (and touches nothing) when the content is already on disk, like the kubelet.
        """
        payload = {os.path.normpath(name): _as_bytes(content) for name, content in files.items()}
        for name in payload:
            _validate_path(name)
        paths_to_remove = self._visible_paths() - {name.split("/")[0] for name in payload}
        if not paths_to_remove and not self._payload_differs(payload):
            return False

        new_ts_dir = self._new_timestamp_dir()
        for name, content in payload.items():
            full = os.path.join(new_ts_dir, name)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(content)
            os.chmod(full, self.file_mode)

        old_ts_dir = self.current_timestamp_dir()
        tmp_link = os.path.join(self.path, NEW_DATA_DIR)
        os.symlink(os.path.basename(new_ts_dir), tmp_link)
        os.rename(tmp_link, os.path.join(self.path, DATA_DIR))  # the atomic swap

        for top in {name.split("/")[0] for name in payload}:
            visible = os.path.join(self.path, top)
            if not os.path.islink(visible):
                os.symlink(os.path.join(DATA_DIR, top), visible)
        for top in paths_to_remove:
            os.remove(os.path.join(self.path, top))
        if old_ts_dir:
            shutil.rmtree(os.path.join(self.path, old_ts_dir))
        return True

    def current_timestamp_dir(self) -> str | None:
        """Name of the directory ..data points to, or None before the first write."""
        try:
            return os.readlink(os.path.join(self.path, DATA_DIR))
        except FileNotFoundError:
            return None

    def timestamp_dirs(self) -> list[str]:
        return sorted(n for n in os.listdir(self.path) if n.startswith("..") and n not in (DATA_DIR, NEW_DATA_DIR))

    def read(self, name: str) -> bytes:
        with open(os.path.join(self.path, name), "rb") as f:
            return f.read()

    def remove(self):
        """Tear the volume down, as when the pod is deleted."""
        shutil.rmtree(self.path, ignore_errors=True)

    def _visible_paths(self) -> set[str]:
        if not os.path.isdir(self.path):
            return set()
        return {n for n in os.listdir(self.path) if not n.startswith("..")}

    def _payload_differs(self, payload: dict) -> bool:
        for name, content in payload.items():
            try:
                with open(os.path.join(self.path, name), "rb") as f:
                    if f.read() != content:
                        return True
            except FileNotFoundError:
                return True
        return False

    def _new_timestamp_dir(self) -> str:
        # Go's os.MkdirTemp(dir, "..2006_01_02_15_04_05.") appends a random decimal number.
        prefix = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
        while True:
            candidate = os.path.join(self.path, prefix + str(random.getrandbits(32)))
            try:
                os.mkdir(candidate)
            except FileExistsError:
                continue
            os.chmod(candidate, 0o755)
            return candidate


def _validate_path(name: str):
    if not name or os.path.isabs(name) or ".." in name.split("/") or name.startswith(".."):
        raise ValueError(f"invalid path for an atomic writer: {name!r}")


def _as_bytes(content) -> bytes:
    return content.encode() if isinstance(content, str) else bytes(content)


# --- Downward API file contents (pkg/fieldpath/fieldpath.go) ---------------------------------------

_SHORT_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def format_map(d: dict) -> str:
    """A labels/annotations file as the kubelet writes it: `key="value"` lines, keys sorted, no final newline."""
    return "\n".join(f"{key}={go_quote(d[key])}" for key in sorted(d))


def go_quote(value) -> str:
    """Go's strconv.Quote of a string (str, or bytes that may hold invalid UTF-8)."""
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    # surrogateescape turns each byte Go would reject (utf8.RuneError, width 1) into U+DC80+byte.
    text = raw.decode("utf-8", "surrogateescape")
    out = ['"']
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch.isprintable():  # same rule as Go's unicode.IsPrint: L, M, N, P, S and ASCII space
            out.append(ch)
        elif ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


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
