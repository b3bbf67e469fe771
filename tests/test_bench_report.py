"""BENCHMARKS.md and its charts come from bench/results.json and nothing else (issue 13).

The committed report and charts must be exactly what bench/report.py renders from the committed data, so that
no number or claim in them can drift from a measurement; and the targets must be judged from the data alone:
per round, and never 'met' for something that was not measured. Nothing here measures or starts a process.
"""

from __future__ import annotations

import copy
import json
import pathlib

# bench/, on the tests' path (pyproject.toml's pytest settings).
import report
from figures import MAIN_CELL, NOT_MEASURED, Results
from targets import TARGETS, judge

COMMITTED = json.loads(report.FULL.results.read_text())


def render_into(directory: pathlib.Path, data: dict) -> report.Layout:
    """The committed layout (report at the root, charts under bench/charts, the README), moved into
    `directory`."""
    (directory / "README.md").write_text(report.FULL.readme.read_text())
    layout = report.Layout(report.FULL.results, directory / "BENCHMARKS.md", directory / "bench" / "charts",
                           directory / "README.md")
    report.render(data, layout)
    return layout


def test_committed_report_and_charts_are_what_the_renderer_makes(tmp_path):
    layout = render_into(tmp_path, COMMITTED)
    assert layout.report.read_text() == report.FULL.report.read_text(), \
        "BENCHMARKS.md differs from bench/results.json: run `python bench/report.py` and commit both"
    assert layout.readme.read_text() == report.FULL.readme.read_text(), \
        "README.md's figures differ from bench/results.json: run `python bench/report.py` and commit both"
    rendered = sorted(path.name for path in layout.charts.iterdir())
    assert rendered == sorted(path.name for path in report.FULL.charts.iterdir())
    for name in rendered:
        assert (layout.charts / name).read_bytes() == (report.FULL.charts / name).read_bytes(), \
            f"bench/charts/{name} differs from bench/results.json: run `python bench/report.py` and commit both"


def run_row(config: str, round_index: int, **fields) -> dict:
    concurrency, connections = MAIN_CELL
    return {"config": config, "round": round_index, "concurrency": concurrency, "connections": connections,
            "rps": 20000.0, "cpu_us_per_request": 50.0, "anon_idle_kb": 20480, "anon_load_kb": 24576, **fields}


def results_with(runs: list[dict], absent: dict | None = None, **extra) -> Results:
    keys = sorted({row["config"] for row in runs} | set(absent or {}))
    configs = [{"key": key, "label": key, "measured": key not in (absent or {}),
                **({"why": absent[key]} if key in (absent or {}) else {})} for key in keys]
    return Results({"configs": configs, "runs": runs, "machine": {"modules": {}}, **extra})


def target(what: str):
    return next(t for t in TARGETS if t.what.startswith(what))


def anon_idle_verdict(differences_mib: list[float]) -> str:
    runs = [row for i, diff in enumerate(differences_mib)
            for row in (run_row("C0", i), run_row("C", i, anon_idle_kb=20480 + diff * 1024))]
    return judge(target("anonymous memory idle, C − C0"), results_with(runs)).outcome


def test_a_paired_target_is_met_only_when_every_round_meets_it():
    assert anon_idle_verdict([2.0, 2.5, 1.0]) == "met"
    assert anon_idle_verdict([2.0, 2.5, 4.0]) == "met (median)"
    assert anon_idle_verdict([4.0, 3.5, 1.0]) == "missed"


def test_a_throughput_target_is_a_ratio_of_adjacent_runs():
    # Round 1 ran slower overall (a busy machine): its ratio still counts, its absolute numbers do not.
    runs = [run_row("B", 0, rps=20000.0), run_row("C", 0, rps=17500.0),
            run_row("B", 1, rps=10000.0), run_row("C", 1, rps=9000.0),
            run_row("B", 2, rps=20000.0), run_row("C", 2, rps=16000.0)]
    verdict = judge(target("throughput, C / B"), results_with(runs))
    assert verdict.values == [0.875, 0.9, 0.8]
    assert verdict.outcome == "met (median)"


def test_a_configuration_that_was_not_built_is_not_measured_never_met():
    runs = [run_row("A", 0), run_row("B", 0)]
    results = results_with(runs, absent={"F": "dist/libpodward.so is not built"})
    for issue_14_target in (t for t in TARGETS if t.issue == 14):
        verdict = judge(issue_14_target, results)
        assert verdict.outcome == NOT_MEASURED
        assert "dist/libpodward.so is not built" in verdict.note


def test_the_flood_is_held_against_the_limit_the_manifests_ship():
    shipped = {"source": "envoy/render.py example_pod()",
               "resources": {"requests": {"memory": "100Mi"}, "limits": {"memory": "160Mi"}}}

    def verdict(peak_mib: float, sidecar: dict | None) -> str:
        flood = {"peak_rss_kb": peak_mib * 1024}
        return judge(target("peak RSS under the flood"),
                     results_with([run_row("C", 0)], flood=flood, shipped_sidecar=sidecar)).outcome
    assert verdict(150.0, shipped) == "met"
    assert verdict(170.0, shipped) == "missed"
    assert verdict(150.0, None) == NOT_MEASURED


def test_the_report_says_not_measured_for_an_absent_configuration():
    data = copy.deepcopy(COMMITTED)
    for config in data["configs"]:
        if config["key"] == "C0":
            config.update(measured=False, why="withheld by this test")
    data["runs"] = [row for row in data["runs"] if row["config"] != "C0"]
    text = report.render_markdown(Results(data), report.FULL)
    assert "C0 minimal header-setting wasm (not measured: withheld by this test)" in text
    c_minus_c0 = next(line for line in text.splitlines() if "anonymous memory idle, C − C0" in line)
    assert "| not measured | C0: withheld by this test |" in c_minus_c0


def instruction_row(config: str, repeat: int, workload: str, per_unit: float) -> dict:
    return {"config": config, "repeat": repeat, "workload": workload, "count": 400, "instructions": 0,
            "seconds": 1.0, "background_per_s": 0.0, "per_unit": per_unit}


def test_instruction_targets_pair_launches_of_the_same_repeat():
    rows = [instruction_row("C0", 0, "forwarded", 300_000), instruction_row("C", 0, "forwarded", 324_000),
            instruction_row("C0", 1, "forwarded", 280_000), instruction_row("C", 1, "forwarded", 300_000),
            instruction_row("C", 0, "refused", 330_000), instruction_row("C", 1, "refused", 290_000)]
    results = results_with([run_row("C", 0), run_row("C0", 0)], instructions={"rows": rows, "failures": {}})
    verdict = judge(target("instructions per forwarded request, C / C0"), results)
    assert verdict.values == [1.08, 300_000 / 280_000] and verdict.outcome == "met"
    refused = judge(target("instructions per refused request (C)"), results)
    assert refused.values == [1.1, 290_000 / 280_000] and refused.outcome == "missed"


def test_instruction_targets_are_not_measured_without_counts_or_for_a_proxy_valgrind_could_not_run():
    runs = [run_row("A", 0), run_row("F", 0), run_row("B", 0)]
    assert judge(target("instructions per forwarded request, F / A"), results_with(runs)).note == \
        "F: not in this run's data"
    counted = {"tool": "valgrind-3.19.0", "rows": [instruction_row("A", 0, "forwarded", 1.0)],
               "failures": {"F": "AssertionError: x"}}
    verdict = judge(target("instructions per forwarded request, F / A"), results_with(runs, instructions=counted))
    assert verdict.outcome == NOT_MEASURED and "did not run under valgrind" in verdict.note
    plan = {"instruction_repeats": 1, "instruction_warmup": 1, "instruction_requests": 1, "instruction_events": 1,
            "instruction_idle_s": 1}
    text = "\n".join(report.instructions_section(results_with(runs, instructions=counted, plan=plan)))
    assert "F (not measured: did not run under valgrind (AssertionError: x))" in text
