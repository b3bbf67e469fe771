"""The report's charts, drawn from a results file with matplotlib (bench/requirements.txt pins it).

The SVGs are committed and checked for drift, so they must be byte-for-byte reproducible: text is drawn as
paths with matplotlib's bundled font, ids come from a fixed salt, and no date is written.
"""

from __future__ import annotations

import pathlib

import matplotlib
from matplotlib import font_manager
from matplotlib.figure import Figure

from figures import MAIN_CELL, NOT_MEASURED, Results, med, mib

# Glyph outlines end up in the SVG: use matplotlib's own copy of the font, never a system copy of another
# version that the font manager might prefer on some machine.
BUNDLED_FONTS = pathlib.Path(matplotlib.get_data_path()) / "fonts" / "ttf"
font_manager.fontManager.ttflist = [font for font in font_manager.fontManager.ttflist
                                    if pathlib.Path(font.fname).parent == BUNDLED_FONTS]
matplotlib.rcParams.update({
    "svg.hashsalt": "podward-bench",
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
})
BAR_HEIGHT = 0.38
IDLE_COLOUR, LOAD_COLOUR = "#9ecae1", "#3182bd"


def legend_below(figure: Figure, axes) -> None:
    """One legend under the plots, where it cannot cover a bar."""
    handles, names = axes.get_legend_handles_labels()
    figure.legend(handles, names, loc="lower center", ncols=len(names), frameon=False)
    figure.tight_layout(rect=(0, 0.07, 1, 1))


def save(figure: Figure, path: pathlib.Path) -> None:
    figure.savefig(path, format="svg", metadata={"Date": None})


def grouped_barh(axes, labels: list[str], series: list[tuple[str, list, str]], value_format: str,
                 ranges: list[tuple[float, float] | None] | None = None) -> None:
    """Horizontal bars, one group per configuration (top to bottom), 'not measured' where values are missing.

    `ranges` (one series only) draws each bar's min–max as a line through it, its value written past the line.
    """
    rows = range(len(labels))
    ranges = ranges or [None] * len(labels)
    height = BAR_HEIGHT * 2 / len(series)
    offsets = [(i - (len(series) - 1) / 2) * height for i in range(len(series))]
    largest = max([v for _, values, _ in series for v in values if v is not None] +
                  [high for low_high in ranges if low_high for high in low_high[1:]], default=1.0)
    for row, low_high in zip(rows, ranges):
        if low_high:
            axes.plot(low_high, [row, row], color="#333333", linewidth=1)
    for row in rows:
        if all(values[row] is None for _, values, _ in series):
            axes.text(largest * 0.01, row, NOT_MEASURED, va="center", fontsize=7, color="#888888")
    for (name, values, colour), offset in zip(series, offsets):
        label = name  # on the first bar drawn only, so that the legend names each series once
        for row, value in zip(rows, values):
            y = row + offset
            if value is None:
                if any(other[row] is not None for _, other, _ in series):
                    axes.text(largest * 0.01, y, NOT_MEASURED, va="center", fontsize=6, color="#888888")
                continue
            axes.barh(y, value, height=height, color=colour, label=label)
            label = "_nolegend_"
            reach = max(value, ranges[row][1]) if ranges[row] else value
            axes.text(reach + largest * 0.01, y, value_format.format(value), va="center", fontsize=7)
    axes.set_yticks(list(rows), labels)
    axes.set_ylim(len(labels) - 0.5, -0.5)  # first configuration on top
    axes.set_xlim(0, largest * 1.18)


def configuration_labels(results: Results, keys: list[str]) -> list[str]:
    return [results.label(key) for key in keys]


def memory_chart(results: Results, path: pathlib.Path) -> None:
    """Anonymous (the sidecar's own) and file-backed (shareable) memory, idle and peak under load."""
    keys = [c["key"] for c in results.configs]
    figure = Figure(figsize=(10, 0.42 * len(keys) + 1.4))
    axes_anon, axes_file = figure.subplots(1, 2, sharey=True)
    for axes, kind, title in ((axes_anon, "anon", "anonymous (RssAnon), MiB"),
                              (axes_file, "file", "file-backed (RssFile), MiB")):
        series = [("idle", [mib(results.median(k, f"{kind}_idle_kb")) for k in keys], IDLE_COLOUR),
                  ("peak under load", [mib(results.median(k, f"{kind}_load_kb")) for k in keys], LOAD_COLOUR)]
        grouped_barh(axes, configuration_labels(results, keys), series, "{:.1f}")
        axes.set_title(title)
    figure.suptitle(f"Proxy memory, Envoy --concurrency {MAIN_CELL[0]}, {MAIN_CELL[1]} connections "
                    "(median over rounds)")
    legend_below(figure, axes_anon)
    save(figure, path)


def cpu_chart(results: Results, path: pathlib.Path) -> None:
    keys = [c["key"] for c in results.configs]
    figure = Figure(figsize=(10, 0.55 * len(keys) + 1.4))
    axes = figure.subplots()
    colours = ["#c6dbef", "#6baed6", "#fdd0a2", "#fd8d3c"]
    series = [(f"concurrency {concurrency}, {connections} conns",
               [results.median(k, "cpu_us_per_request", (concurrency, connections)) for k in keys], colour)
              for (concurrency, connections), colour in zip(results.cells(), colours)]
    grouped_barh(axes, configuration_labels(results, keys), series, "{:.1f}")
    axes.set_xlabel("proxy CPU µs per request (utime + stime ÷ requests), median over rounds")
    figure.suptitle("Proxy CPU per request")
    legend_below(figure, axes)
    save(figure, path)


def startup_chart(results: Results, path: pathlib.Path) -> None:
    keys = [c["key"] for c in results.configs if c.get("startup")]
    figure = Figure(figsize=(10, 0.42 * len(keys) + 1.4))
    axes = figure.subplots()
    medians = [med(results.startup(k)) for k in keys]
    ranges = [(min(s), max(s)) if s else None for s in (results.startup(k) for k in keys)]
    grouped_barh(axes, configuration_labels(results, keys), [("median", medians, LOAD_COLOUR)], "{:.3f} s", ranges)
    axes.set_xlabel("seconds from launching the proxy to its first 200 with the token upstream "
                    "(bar: median; line: min–max)")
    figure.suptitle("Start-up")
    figure.tight_layout()
    save(figure, path)


def instructions_chart(results: Results, path: pathlib.Path) -> None:
    """Instructions per forwarded request, refused request and watch event (callgrind), median of launches."""
    keys = [c["key"] for c in results.configs]
    figure = Figure(figsize=(10, 0.55 * len(keys) + 1.4))
    axes = figure.subplots()
    colours = ["#3182bd", "#fd8d3c", "#74c476"]
    series = [(name, [med([v / 1000 for v in results.instructions(k, workload)]) for k in keys], colour)
              for (workload, name), colour in zip((("forwarded", "forwarded request"), ("refused", "refused (403)"),
                                                   ("watch_event", "watch event")), colours)]
    grouped_barh(axes, configuration_labels(results, keys), series, "{:.1f}k")
    axes.set_xlabel("thousand user-space instructions of the proxy, all threads (callgrind), median of launches")
    figure.suptitle("Instructions per request, Envoy --concurrency 1")
    legend_below(figure, axes)
    save(figure, path)


CHARTS = {"memory.svg": memory_chart, "cpu.svg": cpu_chart, "startup.svg": startup_chart,
          "instructions.svg": instructions_chart}


def draw_all(results: Results, directory: pathlib.Path) -> list[pathlib.Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in CHARTS.items():
        draw(results, directory / name)
        paths.append(directory / name)
    return paths
