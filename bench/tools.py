"""What the benchmark needs on the machine and builds for itself: wrk, nginx, kubectl, the C0 module.

`./build.sh bench` has already built podward.wasm and fetched kubectl; this installs the rest from Debian when
it is missing and builds the minimal filter (C0) the way build.sh builds podward.wasm.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

from processes import log

REPO = pathlib.Path(__file__).resolve().parents[1]
MINIMAL_CRATE = REPO / "bench" / "minimal-filter"
# The features rustc enables for wasm32-wasip1, all supported by Envoy's V8 (as in build.sh).
WASM_OPT = ["wasm-opt", "-Oz", "--enable-bulk-memory", "--enable-sign-ext", "--enable-mutable-globals",
            "--enable-nontrapping-float-to-int", "--enable-multivalue", "--enable-reference-types"]


# Debian package of each tool the bench runs: valgrind brings callgrind and callgrind_control.
PACKAGES = {"wrk": "wrk", "nginx": "nginx", "valgrind": "valgrind", "callgrind_control": "valgrind"}


def ensure_tools() -> None:
    missing = [tool for tool in PACKAGES if not shutil.which(tool)]
    if missing:
        packages = sorted({PACKAGES[tool] for tool in missing})
        log(f"installing {' '.join(packages)} from Debian")
        if subprocess.run(["apt-get", "install", "-y", "-qq", *packages]).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True)
    for tool in ("taskset", "wasm-opt"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run through ./build.sh bench")


def kubectl_path() -> str:
    """The kubectl that `kubectl proxy` (D) runs: $KUBECTL as build.sh exports it, else the one on PATH."""
    for candidate in (os.environ.get("KUBECTL"), shutil.which("kubectl")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    sys.exit("kubectl not found: run through ./build.sh bench, or set KUBECTL")


def cargo_output(crate_target: pathlib.Path, name: str) -> pathlib.Path:
    """Where cargo leaves a release wasm32-wasip1 module, before wasm-opt."""
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", crate_target))
    return target / "wasm32-wasip1" / "release" / name


def build_minimal_filter(work: pathlib.Path, feature: str | None = None) -> tuple[pathlib.Path, pathlib.Path]:
    """C0's module: (cargo's output, the wasm-opt'd copy in `work` that Envoy loads); with `feature`, a variant
    built apart (bench/breakdown.py's probes)."""
    log(f"building the minimal filter (C0{' with ' + feature if feature else ''})")
    target = MINIMAL_CRATE / "target" / feature if feature else MINIMAL_CRATE / "target"
    subprocess.run(["cargo", "build", "--quiet", "--manifest-path", str(MINIMAL_CRATE / "Cargo.toml"),
                    "--release", "--target", "wasm32-wasip1", "--target-dir", str(target),
                    *(["--features", feature] if feature else [])], check=True)
    built = target / "wasm32-wasip1" / "release" / "minimal_filter.wasm"
    optimised = work / f"minimal_filter{'-' + feature if feature else ''}.wasm"
    subprocess.run([*WASM_OPT, str(built), "-o", str(optimised)], check=True)
    return built, optimised


def command_output(argv: list) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (done.stdout + done.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
