"""The README's figures, rendered from a results file like BENCHMARKS.md: the tables of "Which build" and
"Compared with the alternatives" sit between markers that report.py fills and tests/test_bench_report.py checks.

    <!-- bench:NAME: rendered by bench/report.py from bench/results.json; edit there -->
    ...
    <!-- /bench:NAME -->
"""

from __future__ import annotations

import pathlib
import re

from figures import MAIN_CELL, NOT_MEASURED, Results, med, mib


def begin_marker(name: str) -> str:
    return f"<!-- bench:{name}: rendered by bench/report.py from bench/results.json; edit there -->"


def end_marker(name: str) -> str:
    return f"<!-- /bench:{name} -->"


def ratio(results: Results, a: str, b: str, field: str) -> float | None:
    x, y = results.median(a, field), results.median(b, field)
    return None if x is None or not y else x / y


def instruction_ratio(results: Results, a: str, b: str) -> float | None:
    x, y = med(results.instructions(a)), med(results.instructions(b))
    return None if x is None or not y else x / y


def times(value: float | None) -> str:
    return NOT_MEASURED if value is None else f"{value:.2f}×"


def mib_text(kb: float | None, signed: bool = False) -> str:
    if kb is None:
        return NOT_MEASURED
    # A difference that rounds to nothing reads +0.0, whichever side of zero it fell.
    value = round(mib(kb), 1) + 0.0
    return f"{value:+.1f} MiB" if signed else f"{value:.1f} MiB"


def difference_kb(results: Results, a: str, b: str, field: str) -> float | None:
    x, y = results.median(a, field), results.median(b, field)
    return None if x is None or y is None else x - y


def seconds(results: Results, key: str) -> str:
    value = med(results.startup(key))
    return NOT_MEASURED if value is None else f"{value:.2f} s"


def kilobytes(results: Results, name: str) -> str:
    size = results.module_bytes(name)
    return NOT_MEASURED if size is None else f"{size / 1000:.0f} KB"


def configmap_kb(results: Results, build: str) -> str | None:
    size = (results.data["machine"].get("configmaps") or {}).get(build)
    return None if size is None else f"{size / 1000:.0f} KB"


def connections(results: Results, key: str) -> str:
    """Connections to the real API server under 50 watches and requests, per build where they differ."""
    measured = (results.data.get("api_connections") or {}).get("builds") or {}
    if not measured:
        return NOT_MEASURED
    if key == "kubectl_proxy":
        return str(next(iter(measured.values()))[key]["connections"])
    return ", ".join(f"{figures[key]['connections']} ({build})" for build, figures in sorted(measured.items()))


def which_build(results: Results) -> list[str]:
    anon = "anon_idle_kb"
    wasm_configmap, native_configmap = configmap_kb(results, "wasm"), configmap_kb(results, "native")
    return [
        "| | `podward.wasm` | `libpodward.so` |",
        "|---|---|---|",
        "| runs in | Envoy's V8, sandboxed | Envoy's process, native code |",
        "| needs | any Envoy with V8; Istio `WasmPlugin` | Envoy 1.39 or 1.40 (dynamic-module ABI v0.2.0; 1.38 refuses "
        "it at start) and a glibc image |",
        f"| anonymous memory over Envoy without a filter, idle (under load) | "
        f"{mib_text(difference_kb(results, 'C', 'A', anon), True)} "
        f"({mib_text(difference_kb(results, 'C', 'A', 'anon_load_kb'), True)}), one V8 VM per worker | "
        f"{mib_text(difference_kb(results, 'F', 'A', anon), True)} "
        f"({mib_text(difference_kb(results, 'F', 'A', 'anon_load_kb'), True)}) |",
        f"| instructions per request, relative to Envoy without a filter | {times(instruction_ratio(results, 'C', 'A'))}"
        f" | {times(instruction_ratio(results, 'F', 'A'))} |",
        f"| throughput, and CPU time per request (wall-clock, noisy), relative to Envoy without a filter | "
        f"{times(ratio(results, 'C', 'A', 'rps'))}, {times(ratio(results, 'C', 'A', 'cpu_us_per_request'))} | "
        f"{times(ratio(results, 'F', 'A', 'rps'))}, {times(ratio(results, 'F', 'A', 'cpu_us_per_request'))} |",
        f"| start-up to the first answer with the token (Envoy alone: {seconds(results, 'A')}) | "
        f"{seconds(results, 'C')} | {seconds(results, 'F')} |",
        "| reads the files | through Envoy (the file listener) | itself, one thread |",
        "| a crash | the VM is rebuilt | the request gets 503, Envoy serves on |",
        f"| size | {kilobytes(results, 'podward_wasm')} | {kilobytes(results, 'libpodward_so')} |",
        f"| into the pod | `binaryData` of the `podward` ConfigMap ({wasm_configmap or 'size ' + NOT_MEASURED}) | "
        "the same (" + (f"{native_configmap} of the 1 MiB a ConfigMap may hold" if native_configmap else
                        f"size {NOT_MEASURED}; a ConfigMap may hold 1 MiB") + "); Envoy `dlopen`s it from the "
        "volume, so where a node mounts volumes `noexec`, put it in the image instead |",
        "",
        f"Figures from the same run of [BENCHMARKS.md](BENCHMARKS.md) (Envoy `--concurrency {MAIN_CELL[0]}`, "
        f"{MAIN_CELL[1]} connections, medians of {results.data['plan']['rounds']} rounds; instructions counted "
        "under callgrind, one request at a time). CPU time per request on that shared 2-CPU machine moves by 10 % "
        "and more between runs, so the comparisons are judged on instructions, which repeat within about 1 %.",
    ]


def alternatives(results: Results) -> list[str]:
    def pair(wasm: str, native: str) -> str:
        return f"{wasm} (wasm), {native} (native)"
    rps, cpu = "rps", "cpu_us_per_request"
    a_rps, a_cpu = results.median("A", rps), results.median("A", cpu)
    a_instructions = med(results.instructions("A"))
    baseline = (f"Envoy without a filter did {a_rps:,.0f} req/s at {a_cpu:.0f} µs of CPU each"
                if a_rps and a_cpu else "Envoy without a filter was not measured")
    if a_instructions:
        baseline += f" and {a_instructions / 1000:.0f}k instructions per request"
    return [
        "| | podward | `kubectl proxy` | Envoy `credential_injector` |",
        "|---|---|---|---|",
        "| token rotation | re-read every second | re-read (client-go, at most every minute) | SDS file watch |",
        "| TLS to the API server | Envoy, `ca.crt` + SAN | client-go | Envoy |",
        "| policy | RBAC-like, by request meaning | path/method regexes | none |",
        "| identity headers, audit `User-Agent` | yes | no | static `header_mutation` only |",
        "| expired token | 503 with the cause | 401 from the API server | 401 from the API server |",
        "| metrics, access log | per verb/resource/rule | none | Envoy's |",
        f"| instructions per request, relative to Envoy without a filter | "
        f"{pair(times(instruction_ratio(results, 'C', 'A')), times(instruction_ratio(results, 'F', 'A')))} | "
        f"{times(instruction_ratio(results, 'D1', 'A'))} (HTTP/1.1 upstream), "
        f"{times(instruction_ratio(results, 'D2', 'A'))} (h2) | {times(instruction_ratio(results, 'B', 'A'))} |",
        f"| throughput, relative to Envoy without a filter | "
        f"{pair(times(ratio(results, 'C', 'A', rps)), times(ratio(results, 'F', 'A', rps)))} | "
        f"{times(ratio(results, 'D1', 'A', rps))} (HTTP/1.1 upstream), {times(ratio(results, 'D2', 'A', rps))} (h2) | "
        f"{times(ratio(results, 'B', 'A', rps))} |",
        f"| proxy CPU time per request (wall-clock, noisy), relative to Envoy without a filter | "
        f"{pair(times(ratio(results, 'C', 'A', cpu)), times(ratio(results, 'F', 'A', cpu)))} | "
        f"{times(ratio(results, 'D1', 'A', cpu))} (h1), {times(ratio(results, 'D2', 'A', cpu))} (h2) | "
        f"{times(ratio(results, 'B', 'A', cpu))} |",
        f"| anonymous memory, idle | "
        f"{pair(mib_text(results.median('C', 'anon_idle_kb')), mib_text(results.median('F', 'anon_idle_kb')))} | "
        f"{mib_text(results.median('D1', 'anon_idle_kb'))} | {mib_text(results.median('B', 'anon_idle_kb'))} |",
        f"| RSS idle (file-backed pages, mostly the binary, shared on a node) | "
        f"{pair(mib_text(results.median('C', 'rss_idle_kb')), mib_text(results.median('F', 'rss_idle_kb')))} | "
        f"{mib_text(results.median('D1', 'rss_idle_kb'))} | {mib_text(results.median('B', 'rss_idle_kb'))} |",
        f"| start-up to the first answer | {pair(seconds(results, 'C'), seconds(results, 'F'))} | "
        f"{seconds(results, 'D2')} | — |",
        f"| connections to the API server, 50 watches and requests | {connections(results, 'podward')} | "
        f"{connections(results, 'kubectl_proxy')} | — |",
        "",
        f"Figures from [BENCHMARKS.md](BENCHMARKS.md): one run, 2 CPUs, nginx as the API server, Envoy "
        f"`--concurrency {MAIN_CELL[0]}`, {MAIN_CELL[1]} connections, HTTP/1.1 upstream unless noted (connections: "
        f"the real kube-apiserver); {baseline} on that machine; compare the ratios, not those figures, with another "
        f"machine. The wasm build costs {mib_text(difference_kb(results, 'C', 'A', 'anon_idle_kb'))} of anonymous "
        f"memory over Envoy alone, most of it V8 (the minimal wasm filter costs "
        f"{mib_text(difference_kb(results, 'C0', 'A', 'anon_idle_kb'))}); the native build "
        f"{mib_text(difference_kb(results, 'F', 'A', 'anon_idle_kb'), True)}, next to nothing.",
    ]


BLOCKS = {"which-build": which_build, "alternatives": alternatives}


def render_into(text: str, results: Results) -> str:
    """`text` (the README) with every block replaced by what the results render; a missing marker is an error."""
    for name, render in BLOCKS.items():
        pattern = re.compile(re.escape(begin_marker(name)) + r"\n.*?" + re.escape(end_marker(name)), re.DOTALL)
        if not pattern.search(text):
            raise ValueError(f"README.md has no {begin_marker(name)} … {end_marker(name)} block")
        block = "\n".join([begin_marker(name), *render(results), end_marker(name)])
        text = pattern.sub(lambda _: block, text, count=1)
    return text


def render(results: Results, readme: pathlib.Path) -> pathlib.Path:
    readme.write_text(render_into(readme.read_text(), results))
    return readme
