"""The benchmark's phases, in the order bench.py runs them; each returns plain rows for results.json."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

from configs import BY_KEY, CONFIGURATIONS, Configuration, Testbed
from instructions import instruction_counts
from measure import (MemorySampler, Quiet, Slowloris, made_up_resources_script, measure, parse_wrk,
                     seconds_to_first_200, settle_and_read_memory, wrk, wrk_argv)
from processes import http_get, log, pinned
from tools import REPO
from upstream import MADE_UP_PREFIX, PODS_PATH, ROTATION_PATH

from podward.bootstrap import bootstrap


@dataclasses.dataclass(frozen=True)
class Plan:
    rounds: int
    duration: int            # seconds of each measured wrk run
    warmup: int              # seconds of wrk before each measured run
    idle_settle: float       # seconds between start-up and the idle memory reading
    after_settle: float      # seconds between the end of a load and the 'after' memory reading
    connections: tuple
    concurrencies: tuple
    rotation_seconds: int
    memory_repeats: int
    memory_load: int
    startup_repeats: int     # starts of each configuration timed to its first 200
    flood_slowloris: int     # connections holding an unfinished request head
    flood_connections: int   # concurrent requests
    flood_seconds: int       # seconds of each flood stage
    quiet_budget_s: float    # total seconds the run may wait for other processes to calm down
    instruction_repeats: int  # launches of each configuration under callgrind
    instruction_warmup: int   # requests before counting (a quarter as many refusals and watch events)
    instruction_requests: int  # counted requests, forwarded and refused
    instruction_events: int   # counted watch events
    instruction_idle_s: float  # seconds of the idle count


QUICK_PLAN = Plan(rounds=1, duration=3, warmup=1, idle_settle=1.0, after_settle=2.0, connections=(16, 64),
                  concurrencies=(1, 2), rotation_seconds=6, memory_repeats=1, memory_load=3, startup_repeats=10,
                  flood_slowloris=2000, flood_connections=1000, flood_seconds=3, quiet_budget_s=30,
                  instruction_repeats=1, instruction_warmup=40, instruction_requests=200, instruction_events=100,
                  instruction_idle_s=3.0)
FULL_PLAN = Plan(rounds=int(os.environ.get("BENCH_ROUNDS", "3")), duration=10, warmup=2, idle_settle=3.0,
                 after_settle=5.0, connections=(16, 64), concurrencies=(1, 2), rotation_seconds=12, memory_repeats=2,
                 memory_load=8, startup_repeats=10, flood_slowloris=2000, flood_connections=1000, flood_seconds=10,
                 quiet_budget_s=240, instruction_repeats=2, instruction_warmup=100, instruction_requests=1000,
                 instruction_events=400, instruction_idle_s=10.0)


@dataclasses.dataclass
class Run:
    testbed: Testbed
    plan: Plan
    quiet: Quiet

    def measure(self, config: Configuration, service, connections: int, seconds: float, warmup: float,
                path: str = PODS_PATH) -> dict:
        return measure(service, self.testbed.nginx.worker_pid, service.url + path,
                       self.testbed.client_headers(config), connections, seconds, warmup, self.quiet)


def measurable() -> list[Configuration]:
    return [config for config in CONFIGURATIONS if config.missing() is None]


def microbench(quick: bool, quiet: Quiet) -> dict:
    log("microbenchmark: benches/request_path.rs (compiling, then pinned to CPU 1)")
    subprocess.run(["cargo", "bench", "--quiet", "--bench", "request_path", "--no-run"], cwd=REPO, check=True)
    quiet.wait()
    args = pinned("1", ["cargo", "bench", "--quiet", "--bench", "request_path"])
    if quick:
        args += ["--", "--quick"]
    out = subprocess.run(args, cwd=REPO, check=True, capture_output=True, text=True, timeout=600).stdout
    print(out, end="")
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return {"cases": json.loads(line[len("RESULT "):]), "text": out}


def upstream_reference(run: Run) -> list[dict]:
    """wrk straight to nginx over TLS: the upstream's capacity on CPU 0 alone."""
    rows = []
    for connections in run.plan.connections:
        result, wrk_cpu = wrk(f"{run.testbed.nginx.service.url}{PODS_PATH}", connections, run.plan.duration,
                              {"Authorization": f"Bearer {run.testbed.token}"})
        result.pop("wrk_output")
        rows.append({"connections": connections, **result, "wrk_cores": wrk_cpu / run.plan.duration})
        log(f"nginx direct (TLS), {connections} conns: {result['rps']:.0f} req/s")
    return rows


def main_runs(run: Run) -> list[dict]:
    """Every measurable configuration, started fresh, idle memory, then loaded at each connection count."""
    plan, configs = run.plan, measurable()
    rows = []
    total = plan.rounds * len(plan.concurrencies) * len(configs)
    step = 0
    for round_index in range(plan.rounds):
        for concurrency in plan.concurrencies:
            for config in configs:
                step += 1
                log(f"round {round_index + 1}/{plan.rounds}, concurrency {concurrency}: {config.label} "
                    f"({step}/{total})")
                service = run.testbed.start(config, concurrency)
                try:
                    idle = settle_and_read_memory(service, plan.idle_settle)
                    for connections in plan.connections:
                        result = run.measure(config, service, connections, plan.duration, plan.warmup)
                        output = result.pop("wrk_output")
                        if result["non_2xx"] or result["socket_errors"]:
                            log(f"  WARNING: {result['non_2xx']} non-2xx, {result['socket_errors']} socket errors\n"
                                f"{output}")
                        rows.append({"round": round_index, "concurrency": concurrency, "connections": connections,
                                     "config": config.key, "rss_idle_kb": idle["rss_kb"],
                                     "pss_idle_kb": idle["pss_kb"], "anon_idle_kb": idle["anon_kb"],
                                     "file_idle_kb": idle["file_kb"], **result})
                        log(f"  {connections:>3} conns: {result['rps']:>9.0f} req/s  p50 {result['p50_ms']:.2f} ms"
                            f"  p99 {result['p99_ms']:.2f} ms  {result['cpu_us_per_request']:.1f} µs CPU/req"
                            f"  anon {idle['anon_kb'] / 1024:.1f}→{result['anon_load_kb'] / 1024:.1f} MiB"
                            f"  (nginx {result['nginx_cores']:.2f}, wrk {result['wrk_cores']:.2f}, "
                            f"others {result['other_cores']:.2f} cores)")
                finally:
                    service.stop()
    return rows


def instructions(run: Run, keep_dumps, keys: list[str] | None = None) -> dict:
    """Instructions per forwarded request, refused request and watch event, and per idle second, under
    callgrind (instructions.py); `keep_dumps`: where the forwarded requests' callgrind files are kept; `keys`:
    only these configurations."""
    configs = [config for config in measurable() if keys is None or config.key in keys]
    return instruction_counts(run.testbed, configs, run.plan, keep_dumps)


CONNECTIONS_TEST = "tests/test_real_connections.py"


def api_connections(work: pathlib.Path) -> dict:
    """The connections each sidecar holds to the real API server under watches and requests, podward (both
    builds, and its HTTP/1.1 variant) against kubectl proxy: the test that asserts the target, run for its
    figures. Needs $KUBEBUILDER_ASSETS (../shared/envtest)."""
    if not os.environ.get("KUBEBUILDER_ASSETS"):
        return {"why": "$KUBEBUILDER_ASSETS is not set (the real API server, ../shared/envtest/install)"}
    log(f"API server connections: {CONNECTIONS_TEST} against the real API server")
    figures = work / "figures"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", CONNECTIONS_TEST],
                          cwd=REPO, capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PYTHONPATH": str(REPO / "tests"), "PODWARD_FIGURES": str(figures),
                               "PODWARD_REQUIRE_ENVTEST": "1"})
    recorded = figures / "connections.json"
    builds = json.loads(recorded.read_text()) if recorded.exists() else {}
    result = {"test": CONNECTIONS_TEST, "passed": done.returncode == 0,
              "builds": {build: sections["api_server_connections"] for build, sections in builds.items()}}
    if done.returncode != 0:
        result["output"] = done.stdout[-3000:]
        log(f"  the test failed:\n{done.stdout[-3000:]}")
    for build, figures_of in result["builds"].items():
        log(f"  {build}: podward {figures_of['podward']['connections']}, its HTTP/1.1 variant "
            f"{figures_of['podward_http1']['connections']}, kubectl proxy {figures_of['kubectl_proxy']['connections']}")
    return result


def startup_runs(run: Run) -> list[dict]:
    """Seconds from launching each proxy to its first 200 on a token-checked path; configurations interleaved."""
    configs = [config for config in measurable() if config.startup]
    rows = []
    for repeat in range(run.plan.startup_repeats):
        run.quiet.wait()
        for config in configs:
            service = run.testbed.service(config, 1)
            try:
                seconds = seconds_to_first_200(service, service.url + PODS_PATH, run.testbed.client_headers(config))
            finally:
                service.stop()
            rows.append({"config": config.key, "repeat": repeat, "seconds": seconds})
        log(f"start-up {repeat + 1}/{run.plan.startup_repeats}: " + ", ".join(
            f"{row['config']} {row['seconds']:.3f} s" for row in rows[-len(configs):]))
    return rows


def flood(run: Run) -> dict:
    """The trust-boundary flood (issue 10) against podward as shipped: slow request heads held open, then
    concurrent requests, then thousands of made-up resources; peak memory per stage, and whether it still
    serves afterwards."""
    plan, testbed, config = run.plan, run.testbed, BY_KEY["C"]
    script = testbed.work / "made-up.lua"
    script.write_text(made_up_resources_script(MADE_UP_PREFIX))
    log(f"flood: {plan.flood_slowloris} slow heads, {plan.flood_connections} concurrent requests, made-up resources")
    service = testbed.start(config, 1)
    port = int(service.url.rsplit(":", 1)[1])
    stages = []
    slow = None
    try:
        idle = settle_and_read_memory(service, plan.idle_settle)

        def stage(name: str, action) -> None:
            sampler = MemorySampler(service.pid)
            sampler.start()
            detail = action()
            stages.append({"stage": name, **{f"{k[:-3]}_peak_kb": v for k, v in sampler.stop().items()}, **detail})
            log(f"  {name}: peak RSS {stages[-1]['rss_peak_kb'] / 1024:.1f} MiB, "
                f"anon {stages[-1]['anon_peak_kb'] / 1024:.1f} MiB; {detail}")

        def slow_heads() -> dict:
            nonlocal slow
            slow = Slowloris(port, plan.flood_slowloris)
            time.sleep(plan.flood_seconds)
            return {"connections": len(slow.sockets), "refused": slow.refused}

        def load(path: str, connections: int, script_path: str | None) -> dict:
            result, _ = wrk(service.url + path, connections, plan.flood_seconds, {}, script_path)
            return {key: result[key] for key in ("requests", "rps", "non_2xx", "socket_errors")}

        stage("slow request heads", slow_heads)
        stage("concurrent requests", lambda: load(PODS_PATH, plan.flood_connections, None))
        stage("made-up resources", lambda: load("/", 64, str(script)))
        closed = slow.closed_by_peer()
        slow.close()
        after = settle_and_read_memory(service, plan.after_settle)
        serves_after = http_get(service.url + PODS_PATH)[0] == 200
    finally:
        if slow:
            slow.close()
        service.stop()
    return {"config": config.key, "idle": idle, "stages": stages, "after": after,
            "slow_heads_closed_by_sidecar": closed, "serves_after": serves_after,
            "peak_rss_kb": max(s["rss_peak_kb"] for s in stages),
            "peak_anon_kb": max(s["anon_peak_kb"] for s in stages)}


def rotation_runs(run: Run) -> list[dict]:
    """Requests/s in the second before and after a kubelet-style token swap, under load."""
    plan, testbed = run.plan, run.testbed
    rows = []
    connections = max(plan.connections)
    rotate_at = [plan.rotation_seconds / 3, 2 * plan.rotation_seconds / 3]
    for config in [c for c in measurable() if c.key in ("C", "B", "E", "F")]:
        log(f"token rotation under load: {config.label}")
        service = testbed.start(config, 1)
        try:
            wrk(service.url + ROTATION_PATH, connections, plan.warmup, {})
            run.quiet.wait()
            started_wall = time.time()
            load = subprocess.Popen(wrk_argv(service.url + ROTATION_PATH, connections, plan.rotation_seconds, {}),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            swaps = []
            try:
                for offset in rotate_at:
                    time.sleep(max(0.0, started_wall + offset - time.time()))
                    old = testbed.token_index + 1
                    new = testbed.rotate()
                    swaps.append((time.time(), old, new))
                out, _ = load.communicate(timeout=plan.rotation_seconds + 60)
            finally:
                if load.poll() is None:
                    load.kill()
            ended_wall = time.time()
            time.sleep(2)  # nginx flushes its access log every second
            # The next configuration starts with the current token.
        finally:
            service.stop()
        log_rows = [row for row in testbed.nginx.rotation_log() if started_wall <= row[0] <= ended_wall]
        wrk_result = parse_wrk(out)
        for swapped_at, old, new in swaps:
            before = sum(1 for t, _, _ in log_rows if swapped_at - 1 <= t < swapped_at)
            after = sum(1 for t, _, _ in log_rows if swapped_at <= t < swapped_at + 1)
            first_new = min((t for t, _, token in log_rows if token == new and t >= swapped_at), default=None)
            last_old = max((t for t, _, token in log_rows if token == old), default=None)
            window = [s for t, s, _ in log_rows if swapped_at - 1 <= t < swapped_at + 1]

            def slowest_100ms(start):  # the worst 100 ms slice of a second, as req/s
                bins = [0] * 10
                for t, _, _ in log_rows:
                    if start <= t < start + 1:
                        bins[int((t - start) * 10)] += 1
                return min(bins) * 10
            rows.append({
                "config": config.key, "connections": connections, "rps_before": before, "rps_after": after,
                "ratio": after / before if before else None,
                "new_token_after_s": (first_new - swapped_at) if first_new else None,
                "old_token_until_s": (last_old - swapped_at) if last_old else None,
                "non_200_in_window": sum(1 for s in window if s != 200),
                "slowest_100ms_before": slowest_100ms(swapped_at - 1),
                "slowest_100ms_after": slowest_100ms(swapped_at),
                "run_rps": wrk_result["rps"], "run_non_2xx": wrk_result["non_2xx"],
            })
            log(f"  swap: {before} req/s before, {after} after; new token seen after "
                f"{rows[-1]['new_token_after_s']}")
    return rows


def tcmalloc_stats(service) -> dict:
    """Envoy's allocator as it sees itself (admin /memory): bytes allocated vs. held."""
    status, body = service.admin("/memory")
    if status != 200:
        return {}
    return {key: int(value) for key, value in json.loads(body).items() if str(value).isdigit()}


def memory_variants(run: Run) -> list[dict]:
    """Envoy and VM settings that might cut the sidecar's memory, each checked to still work."""
    testbed, plan = run.testbed, run.plan
    podward, minimal, no_filter = BY_KEY["C"], BY_KEY["C0"], BY_KEY["A"]

    def shipped(settings):
        return bootstrap(settings)

    def keep_memory(settings):
        config = bootstrap(settings)
        del config["memory_allocator_manager"]
        return config

    def stats_rejected(settings):
        config = bootstrap(settings)
        config["stats_config"] = {"stats_matcher": {"reject_all": True}}
        return config

    def no_access_log(settings):
        config = bootstrap(settings)
        testbed.app_manager(config).pop("access_log")
        return config

    def minimal_keep_memory(settings):
        config = testbed.envoy_config(minimal, settings)
        del config["memory_allocator_manager"]
        return config

    variants = [
        # (key, label, bootstrap, what it must still do, options, concurrency)
        ("shipped", "C, --concurrency 1 --disable-hot-restart", shipped, podward, {}, 1),
        ("hot-restart", "C with hot restart (no --disable-hot-restart)", shipped, podward, {"hot_restart": True}, 1),
        ("concurrency-2", "C at --concurrency 2 (one more worker VM)", shipped, podward, {}, 2),
        ("keep-memory", "C without memory_allocator_manager (tcmalloc keeps what Envoy freed)", keep_memory,
         podward, {}, 1),
        ("stats-rejected", "C + stats_matcher reject_all (bound only: loses every stat)", stats_rejected, podward,
         {}, 1),
        ("no-access-log", "C without the JSON access log", no_access_log, podward, {}, 1),
        ("C0", "C0 minimal wasm filter (reference)", lambda s: testbed.envoy_config(minimal, s), minimal, {}, 1),
        ("C0-keep-memory", "C0 without memory_allocator_manager", minimal_keep_memory, minimal, {}, 1),
        ("A", "A no filter, no VM (reference)", lambda s: testbed.envoy_config(no_filter, s), no_filter, {}, 1),
    ]
    connections = max(plan.connections)
    rows = []
    for repeat in range(plan.memory_repeats):
        for key, label, make, stands_for, options, concurrency in variants:
            log(f"memory ({repeat + 1}/{plan.memory_repeats}): {label}")
            settings = testbed.settings()
            service = testbed.envoy_service(f"mem-{key}", make(settings), settings, concurrency, **options).start()
            try:
                testbed.check(stands_for, service)
                idle = settle_and_read_memory(service, plan.idle_settle)
                allocator = tcmalloc_stats(service)
                result = run.measure(stands_for, service, connections, plan.memory_load, 1)
                result.pop("wrk_output")
                after = settle_and_read_memory(service, plan.after_settle)
            finally:
                service.stop()
            rows.append({"variant": key, "label": label, "repeat": repeat, "concurrency": concurrency,
                         "rss_idle_kb": idle["rss_kb"], "pss_idle_kb": idle["pss_kb"],
                         "anon_idle_kb": idle["anon_kb"], "file_idle_kb": idle["file_kb"],
                         "rss_after_kb": after["rss_kb"], "pss_after_kb": after["pss_kb"],
                         "anon_after_kb": after["anon_kb"],
                         "tcmalloc_allocated_kb": allocator.get("allocated", 0) / 1024,
                         "tcmalloc_heap_kb": allocator.get("heap_size", 0) / 1024,
                         "works": result["non_2xx"] == 0 and result["socket_errors"] == 0, **result})
            log(f"  anon idle {idle['anon_kb'] / 1024:.1f} MiB (tcmalloc {allocator.get('allocated', 0) / 2**20:.1f} "
                f"allocated of {allocator.get('heap_size', 0) / 2**20:.1f}), RSS load "
                f"{result['rss_load_kb'] / 1024:.1f} MiB, after {after['rss_kb'] / 1024:.1f} MiB; "
                f"{result['rps']:.0f} req/s, {result['cpu_us_per_request']:.1f} µs/req")
    return rows
