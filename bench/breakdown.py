#!/usr/bin/env python3
"""Where podward's instructions per request go (issue 19), measured, for the work on the request path.

    PYTHONPATH=tests .venv/bin/python bench/breakdown.py   # ~8 min: bench/out/breakdown.md (not committed)
    PYTHONPATH=tests .venv/bin/python bench/breakdown.py --render   # that file again from the last run

Envoy's binary is stripped and V8's compiled wasm is anonymous to valgrind, so a callgrind profile names few of
podward's costs. Two ways in, both from counts under callgrind (instructions.py):

  * by object: each forwarded-request profile split into Envoy's binary (Envoy, V8's runtime, the proxy-wasm
    host calls), code V8 generated (the wasm modules, their trampolines), libc and the rest
    (callgrind_annotate); the dynamic-module callbacks and hooks, which the binary and libpodward.so export,
    by name;
  * by difference: variants that each add or remove one thing podward does: podward without its identity
    headers or User-Agent, with an access record on every request, without Envoy's local-reply mappers (the
    refused request's Status rewriting); C0 plus one of podward's host calls (the `probes` build of the minimal
    filter: the whole header map read into the VM, the response-code property or the `:status` header at
    stream end, a counter, an access record).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
import re
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]

import phases  # noqa: E402
from configs import BY_KEY, Configuration, Testbed, minimal_wasm  # noqa: E402
from instructions import count_configuration  # noqa: E402
from processes import log, stop_all  # noqa: E402
from tools import build_minimal_filter, ensure_tools  # noqa: E402


OUT = REPO / "bench" / "out" / "breakdown.md"
ROWS = REPO / "bench" / "out" / "breakdown.json"  # the counts, with where their callgrind files are
PROBES = ("read-headers", "response-code", "status", "counter", "record")


def probing(names: tuple) -> Configuration:
    """C0 with the probes build and `#probe` lines for `names`."""
    def filters(testbed, settings):
        wasm_filter, = minimal_wasm(testbed, settings)
        config = wasm_filter["typed_config"]["config"]
        config["vm_config"]["code"]["local"]["filename"] = str(testbed.probes_wasm)
        config["configuration"]["value"] += "".join(f"\n#probe {name}" for name in names)
        return [wasm_filter]
    return dataclasses.replace(BY_KEY["C0"], key="C0+" + "+".join(names), label=f"C0 + {', '.join(names)}",
                               filters=filters)


def without_local_replies(bootstrap: dict) -> None:
    listener = next(x for x in bootstrap["static_resources"]["listeners"] if x["name"] == "podward")
    listener["filter_chains"][0]["filters"][0]["typed_config"].pop("local_reply_config")


def podward_variant(key: str, **changes) -> Configuration:
    """podward under another name (each launch's callgrind files are kept by name); its identity headers are
    not checked, since some variants leave them out."""
    return dataclasses.replace(BY_KEY["C"], key=key, sends_identity=False, **changes)


# (configuration, podward's configuration, what it shows)
VARIANTS = [
    (BY_KEY["A"], None, "Envoy alone"),
    (BY_KEY["C0"], None, "the V8 floor: a minimal filter setting the same 14 headers"),
    (BY_KEY["C"], None, "podward"),
    (podward_variant("C-identity"), {"identity_headers": []}, "podward without its 13 identity headers"),
    (podward_variant("C-user-agent"), {"user_agent": False}, "podward without setting User-Agent"),
    (podward_variant("C+record"), {"access_record": "all"}, "podward with an access record on every request"),
    (podward_variant("C-local-replies", adjust=without_local_replies), None,
     "podward without local_reply_config (Envoy's Status rewriting of local replies)"),
    *((probing((name,)), None, f"C0 + {name}") for name in PROBES),
    (probing(PROBES), None, "C0 + every probe"),
    (BY_KEY["B"], None, "credential_injector + header_mutation"),
    (BY_KEY["F"], None, "podward native"),
]


# valgrind loads the main executable low (0x108000); what V8 generates lives in anonymous mappings far above.
GENERATED_CODE_FROM = 0x10000000
ENVOY = "Envoy binary (Envoy, V8 runtime, host calls)"
GENERATED = "V8-generated code (the wasm module, trampolines)"


def by_object(dump: str) -> dict:
    """Instructions of a callgrind file by object: Envoy's binary, code V8 generated, libc, the rest. Code with
    no object is Envoy's below GENERATED_CODE_FROM (valgrind does not map all of the stripped binary to its
    file) and V8's above."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", dump],
                         capture_output=True, text=True, check=True).stdout
    totals: dict = collections.Counter()
    for line in out.splitlines():
        match = re.match(r"^\s*([\d,]+) \([^)]*\)\s+\S*?:(\S+) \[(.*)\]$", line)
        if not match:
            continue
        function, where = match.group(2), match.group(3)
        if where == "???":
            name = GENERATED if function.startswith("0x") and int(function, 16) >= GENERATED_CODE_FROM else ENVOY
        else:
            name = (ENVOY if where.endswith("/envoy") else "libpodward.so" if "libpodward" in where else
                    "libc" if "libc" in where else pathlib.Path(where).name)
        totals[name] += int(match.group(1).replace(",", ""))
    return dict(totals)


def named_functions(dump: str, pattern: str, requests: int) -> list[tuple[str, float, float]]:
    """(function, inclusive instructions per request, calls per request) of the exported functions matching
    `pattern` (the dynamic-module ABI)."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", dump],
                         capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        match = re.match(r"^\s*([\d,]+) \([^)]*\)\s+\S*?:?(" + pattern + r"\w*)", line)
        if match:
            rows.append((match.group(2), int(match.group(1).replace(",", "")) / requests))
    calls = calls_per_function(dump)
    return [(name, inclusive, calls.get(name, 0) / requests) for name, inclusive in rows]


def calls_per_function(dump: str) -> dict:
    """How often each named function was called in the profile (callgrind's `calls=` lines)."""
    names, calls = {}, collections.Counter()
    current = None
    for line in pathlib.Path(dump).read_text(errors="replace").splitlines():
        match = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
        if match and match.group(2):
            names[match.group(1)] = match.group(2)
        if line.startswith("cfn="):
            current = names.get(match.group(1))
        elif line.startswith("calls=") and current:
            calls[current] += int(line.split("=")[1].split()[0])
    return calls


def call_graph(dump: str) -> tuple[collections.Counter, collections.Counter]:
    """(calls, inclusive instructions) per (caller, callee) of a callgrind file."""
    names, calls, cost = {}, collections.Counter(), collections.Counter()
    caller = callee = pending = None
    for line in pathlib.Path(dump).read_text(errors="replace").splitlines():
        match = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
        if match:
            if match.group(3):
                names[match.group(2)] = match.group(3).split("'")[0]
            if match.group(1) == "fn":
                caller = names.get(match.group(2))
            else:
                callee = names.get(match.group(2))
            continue
        if line.startswith("calls="):
            pending = int(line.split("=")[1].split()[0])
        elif pending is not None and line[:1].isdigit() or (pending is not None and line[:1] in "+-*"):
            calls[(caller, callee)] += pending
            cost[(caller, callee)] += int(line.split()[1])
            pending = None
    return calls, cost


def generated(function: str | None) -> bool:
    return bool(function) and function.startswith("0x") and int(function, 16) >= GENERATED_CODE_FROM


def host_calls(dump: str, requests: int) -> dict:
    """Each proxy-wasm host function the module called: {address: (calls, inclusive instructions)} per request.
    Every call from V8's code into Envoy goes through one entry (the most called from generated code); its
    callees, three levels down, are the host functions themselves."""
    calls, cost = call_graph(dump)
    entries = collections.Counter()
    for (caller, callee), count in calls.items():
        if generated(caller) and not generated(callee):
            entries[callee] += count
    if not entries:
        return {}
    entry = entries.most_common(1)[0][0]

    def callees(of: str) -> list:
        return [(callee, calls[(caller, callee)], cost[(caller, callee)]) for caller, callee in calls if caller == of]
    found = {}
    # A host function sits under two wrappers, each called as often as it is.
    for first, calls_first, _ in callees(entry):
        for second, calls_second, _ in callees(first):
            for third, count, instructions in callees(second):
                if count == calls_second == calls_first and instructions / requests >= 500:
                    found[third] = (count / requests, instructions / requests)
    return found


def host_call_section(base: dict) -> list[str]:
    """C's and C0's host functions, named by the probe variant each first appears in."""
    def of(key: str) -> dict:
        row = base.get(key, {}).get("forwarded", {})
        return host_calls(row["dump"], row["count"]) if row.get("dump") else {}
    c0 = of("C0")
    names = {address: "proxy_replace_header_map_value (C0's header sets)" for address in c0}
    for probe in PROBES:
        for address in set(of("C0+" + probe)) - set(c0):
            names[address] = {"read-headers": "proxy_get_header_map_pairs (the whole request map)",
                              "response-code": "proxy_get_property (response.code)",
                              "status": "proxy_get_header_map_value (:status, in the log phase)",
                              "counter": "proxy_increment_metric",
                              "record": "proxy_set_property (the access record)"}[probe]
    rows = []
    for key in ("C0", "C"):
        for address, (count, instructions) in sorted(of(key).items(), key=lambda item: -item[1][1]):
            rows.append(f"| {key} | {names.get(address, address)} | {count:.2f} | {instructions / 1000:.2f} | "
                        f"{instructions / count / 1000:.2f} |")
    return ["## Host calls from the VM (Envoy's side, inclusive)", "",
            "Every call from V8's code into Envoy goes through one entry; its callees are the host functions, "
            "named here by the C0 probe in which each first appears (podward's own calls to the same function "
            "have the same address); one no probe makes is left as its address. Calls under 0.5k a request are "
            "left out.", "",
            "| | host function | calls per request | k per request | k per call |", "|---|---|---:|---:|---:|",
            *rows, ""]


def main() -> None:
    ensure_tools()
    work = pathlib.Path(tempfile.mkdtemp(prefix="podward-breakdown-"))
    plan = dataclasses.replace(phases.FULL_PLAN, instruction_requests=600, instruction_events=1,
                               instruction_idle_s=5.0)
    testbed = Testbed(work)
    testbed.probes_wasm = build_minimal_filter(work, "probes")[1]
    testbed.learn_identity()
    rows = []
    try:
        for config, plugin_config, what in VARIANTS:
            key = config.key
            log(f"breakdown: {key} {plugin_config or ''}")
            counted = count_configuration(testbed, config, plan, 0, work / "callgrind", plugin_config)
            got = {row["workload"]: row for row in counted}
            rows.append((key, what, got))
            log("  " + ", ".join(f"{w} {r['per_unit'] / 1000:.1f}k" for w, r in got.items() if "per_unit" in r))
    finally:
        stop_all()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    ROWS.write_text(json.dumps({"plan": dataclasses.asdict(plan), "rows": rows}, indent=1))
    OUT.write_text(render(rows, plan))
    print(OUT.read_text())


def render_again() -> None:
    """`--render`: breakdown.md again from the last run's counts and callgrind files."""
    saved = json.loads(ROWS.read_text())
    OUT.write_text(render(saved["rows"], phases.Plan(**saved["plan"])))
    print(OUT.read_text())


def render(rows: list, plan) -> str:
    base = {key: got for key, _, got in rows}

    def k(value: float) -> str:
        return f"{value / 1000:.1f}"
    c, c0 = base["C"]["forwarded"]["per_unit"], base["C0"]["forwarded"]["per_unit"]
    lines = ["# Where podward's instructions go (bench/breakdown.py)", "",
             f"Instructions per request under callgrind, {plan.instruction_requests} requests per count, "
             "timer work taken off; HTTP/1.1 upstream; podward's refresh out of the window.", "",
             "| variant | what it shows | forwarded k | Δ vs its base k | refused k |", "|---|---|---:|---:|---:|"]
    for key, what, got in rows:
        forwarded = got["forwarded"]["per_unit"]
        reference = c0 if key.startswith("C0+") else c if key.startswith(("C-", "C+")) else None
        delta = "" if reference is None else f"{(forwarded - reference) / 1000:+.1f}"
        refused = k(got["refused"]["per_unit"]) if "refused" in got else ""
        lines.append(f"| {key} | {what} | {k(forwarded)} | {delta} | {refused} |")
    lines += ["", f"C − C0: {k(c - c0)}k per forwarded request.", ""]
    for key in ("A", "C0", "C", "F"):
        dump = base[key]["forwarded"].get("dump")
        if not dump:
            continue
        split = by_object(dump)
        requests = base[key]["forwarded"]["count"]
        lines += [f"## {key}: by object (k per request, timer work included)", "",
                  "| object | k |", "|---|---:|",
                  *(f"| {name} | {value / requests / 1000:.1f} |" for name, value in
                    sorted(split.items(), key=lambda item: -item[1])), ""]
    lines += host_call_section(base)
    f_dump = base["F"]["forwarded"].get("dump")
    if f_dump:
        lines += ["## F: the dynamic-module hooks and callbacks (inclusive k per request, calls per request)", "",
                  "| function | k | calls |", "|---|---:|---:|",
                  *(f"| {name} | {inclusive / 1000:.2f} | {calls:.1f} |" for name, inclusive, calls in
                    named_functions(f_dump, r"envoy_dynamic_module_", base["F"]["forwarded"]["count"])), ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    render_again() if "--render" in sys.argv[1:] else main()
