#!/usr/bin/env python3
"""podward's benchmark: `./build.sh bench` (which builds podward and fetches kubectl first).

    ./build.sh bench                 # the full run: bench/results.json, then BENCHMARKS.md and bench/charts/
    BENCH_QUICK=1 ./build.sh bench   # one short round (~5 min) to check the pipeline: bench/out/ only
    BENCH_ONLY=instructions,connections ./build.sh bench   # those phases alone: bench/out/only.json

The parts: tools.py (what is installed and built), processes.py (placement, starting and stopping),
upstream.py (nginx as the API server), configs.py (the configurations compared), measure.py (how numbers are
taken), phases.py (what is run), report.py (results.json → BENCHMARKS.md and charts, nothing else).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import pathlib
import platform
import resource
import shutil
import signal
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

import phases  # noqa: E402
import report  # noqa: E402
from configs import CONFIGURATIONS, NATIVE_MODULE, Testbed  # noqa: E402
from measure import Quiet  # noqa: E402
from processes import LOAD_CPUS, NICE, PROXY_CPUS, log, stop_all  # noqa: E402
from tools import cargo_output, command_output, ensure_tools  # noqa: E402
from upstream import MADE_UP_PREFIX, PODS_PATH, pod_list_json  # noqa: E402

from podward.local.envoy_process import ENVOY_BINARY, WASM
from podward.manifests import MODULE_CONFIGMAP_FILES
from podward.pod import example_pod

QUICK = os.environ.get("BENCH_QUICK") == "1"
ONLY = os.environ.get("BENCH_ONLY")
# BENCH_ONLY=instructions BENCH_CONFIGS=C0,C,F: only those configurations are counted.
CONFIGS = [key for key in os.environ.get("BENCH_CONFIGS", "").split(",") if key] or None
SCHEMA = 3
# The forwarded requests' callgrind files of the last run, for callgrind_annotate (not committed).
CALLGRIND_DUMPS = REPO / "bench" / "out" / "callgrind"
ONLY_RESULTS = REPO / "bench" / "out" / "only.json"
ALONE = {"instructions", "connections"}


def file_size(path: pathlib.Path) -> int | None:
    return path.stat().st_size if path.exists() else None


def describe_machine(testbed: Testbed) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "?")
    mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    os_name = next((line.split("=", 1)[1].strip().strip('"') for line in open("/etc/os-release")
                    if line.startswith("PRETTY_NAME")), "?")
    kubectl = command_output([testbed.kubectl, "version", "--client"])
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} CPUs", "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "os": f"{os_name}, Linux {platform.release()}",
        "envoy": command_output([str(ENVOY_BINARY), "--version"]).split("version:")[-1].strip(),
        "envoy_binary_bytes": ENVOY_BINARY.stat().st_size,
        "nginx": command_output(["nginx", "-v"]).replace("nginx version: ", ""),
        "wrk": command_output(["dpkg-query", "-W", "-f", "${Version}", "wrk"]),
        "kubectl": kubectl.splitlines()[0] if kubectl else "?",
        "rustc": command_output(["rustc", "--version"]),
        "modules": {
            "podward_wasm": file_size(testbed.podward_wasm),
            "podward_wasm_sha256": hashlib.sha256(testbed.podward_wasm.read_bytes()).hexdigest(),
            "podward_wasm_cargo": file_size(cargo_output(REPO / "target", "podward_wasm.wasm")),
            "minimal_wasm": file_size(testbed.minimal_wasm),
            "minimal_wasm_cargo": file_size(testbed.minimal_wasm_built),
            "libpodward_so": file_size(NATIVE_MODULE),
        },
        # The ConfigMap `podward` of each build, as ./build.sh wrote it (README, "Which build").
        "configmaps": {build: file_size(REPO / "dist" / configmap)
                       for build, configmap in MODULE_CONFIGMAP_FILES.items()},
        "podlist_bytes": len(pod_list_json()),
        "git": command_output(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
        "load_average_at_start": os.getloadavg(),
    }


def shipped_sidecar() -> dict:
    """The sidecar's resources as the manifests ship them, to hold the measured memory against."""
    pod = example_pod()
    sidecar = next(c for c in pod["spec"]["initContainers"] if c["name"] == "podward")
    return {"source": "podward/pod.py example_pod()", "resources": sidecar["resources"]}


def configurations() -> list[dict]:
    return [{"key": c.key, "label": c.label, "startup": c.startup, "podward": c.podward,
             "measured": c.missing() is None,
             **({"why": c.missing()} if c.missing() else {})} for c in CONFIGURATIONS]


def phases_alone(work: pathlib.Path, plan: phases.Plan, names: list[str]) -> None:
    """BENCH_ONLY=instructions,connections: those phases alone, a few minutes each, for work on the request
    path; bench/out/only.json, never the committed results."""
    data = {"plan": dataclasses.asdict(plan), "configs": configurations(),
            "machine": {"git": command_output(["git", "-C", str(REPO), "describe", "--always", "--dirty"])}}
    if "instructions" in names:
        testbed = Testbed(work)
        testbed.learn_identity()
        run = phases.Run(testbed, plan, Quiet(plan.quiet_budget_s))
        data["instructions"] = phases.instructions(run, CALLGRIND_DUMPS, CONFIGS)
    if "connections" in names:
        data["api_connections"] = phases.api_connections(work)
    ONLY_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    ONLY_RESULTS.write_text(json.dumps(data, indent=1, default=str) + "\n")
    results = report.Results(data)
    print("\n".join([*report.instructions_section(results), *report.connections_section(results)]))
    log(f"wrote {ONLY_RESULTS.relative_to(REPO)}; callgrind files in {CALLGRIND_DUMPS.relative_to(REPO)}")


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    started = time.monotonic()
    plan = phases.QUICK_PLAN if QUICK else phases.FULL_PLAN
    layout = report.QUICK if QUICK else report.FULL
    ensure_tools()
    if not WASM.exists():
        sys.exit(f"{WASM} is missing: run ./build.sh bench")
    # The flood holds thousands of connections open; wrk and Envoy inherit the limit.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = pathlib.Path(tempfile.mkdtemp(prefix="podward-bench-"))
    log(f"work directory {work}; plan {plan}")
    if ONLY:
        names = ONLY.split(",")
        if not set(names) <= ALONE:
            sys.exit(f"BENCH_ONLY={ONLY}: only {', '.join(sorted(ALONE))} can run alone")
        try:
            phases_alone(work, plan, names)
        finally:
            stop_all()
            if os.environ.get("BENCH_KEEP") != "1":
                shutil.rmtree(work, ignore_errors=True)
        return
    quiet = Quiet(plan.quiet_budget_s)
    data: dict = {
        "schema": SCHEMA, "quick": QUICK, "plan": dataclasses.asdict(plan),
        "placement": {"load_cpus": LOAD_CPUS, "proxy_cpus": {str(k): v for k, v in PROXY_CPUS.items()},
                      "nice": NICE, "quiet_cores": Quiet.QUIET_CORES, "quiet_budget_s": plan.quiet_budget_s},
        "paths": {"pods": PODS_PATH, "made_up": MADE_UP_PREFIX},
        "configs": configurations(), "shipped_sidecar": shipped_sidecar(),
    }
    try:
        data["microbench"] = phases.microbench(QUICK, quiet)
        testbed = Testbed(work)
        data["machine"] = describe_machine(testbed)
        testbed.learn_identity()
        data["identity_headers"] = testbed.identity
        run = phases.Run(testbed, plan, quiet)
        data["upstream_reference"] = phases.upstream_reference(run)
        data["runs"] = phases.main_runs(run)
        data["instructions"] = phases.instructions(run, CALLGRIND_DUMPS, CONFIGS)
        data["startup"] = phases.startup_runs(run)
        data["flood"] = phases.flood(run)
        data["rotation"] = phases.rotation_runs(run)
        data["memory"] = phases.memory_variants(run)
        data["api_connections"] = phases.api_connections(work)
        data["elapsed_s"] = time.monotonic() - started
        data["quiet_wait_s"] = quiet.waited_s
        layout.results.parent.mkdir(parents=True, exist_ok=True)
        layout.results.write_text(json.dumps(data, indent=1, default=str) + "\n")
        for path in report.render(data, layout):
            log(f"wrote {path.relative_to(REPO)}")
        log(f"done in {data['elapsed_s'] / 60:.1f} min")
    finally:
        stop_all()
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
