"""Reading a results file: the figures the report, the targets and the charts are made of.

Pure functions of the data (results.json): no measuring, no Envoy, so that the report can be rendered and
checked anywhere.
"""

from __future__ import annotations

import statistics

# The sidecar's shipped concurrency and the connection count the issues' targets are stated at.
MAIN_CELL = (1, 64)
NOT_MEASURED = "not measured"


def med(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values, fmt: str = "{:.2f}") -> str:
    """median [min–max] of the values, or the value alone, or 'not measured'."""
    values = [v for v in values if v is not None]
    if not values:
        return NOT_MEASURED
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}–{fmt.format(max(values))}]"


def mib(kb: float | None) -> float | None:
    return None if kb is None else kb / 1024


def fmt_or_na(value: float | None, fmt: str) -> str:
    return NOT_MEASURED if value is None else fmt.format(value)


def quantity_kb(quantity: str) -> float:
    """A Kubernetes memory quantity ("160Mi", "1Gi", "100M") in KiB."""
    units = {"Ki": 1, "Mi": 1024, "Gi": 1024 ** 2, "k": 1000 / 1024, "M": 1e6 / 1024, "G": 1e9 / 1024}
    for suffix in sorted(units, key=len, reverse=True):
        if quantity.endswith(suffix):
            return float(quantity[:-len(suffix)]) * units[suffix]
    return float(quantity) / 1024


class Results:
    """One results file, with the questions the report asks of it."""

    def __init__(self, data: dict):
        self.data = data
        self.configs = data["configs"]
        self.runs = data.get("runs", [])

    def label(self, key: str) -> str:
        return next(c["label"] for c in self.configs if c["key"] == key)

    def why_not_measured(self, key: str) -> str | None:
        config = next(c for c in self.configs if c["key"] == key)
        return None if config["measured"] else config["why"]

    def cells(self) -> list[tuple[int, int]]:
        return sorted({(r["concurrency"], r["connections"]) for r in self.runs})

    def pick(self, key: str, cell: tuple[int, int] = MAIN_CELL) -> list[dict]:
        concurrency, connections = cell
        return [r for r in self.runs
                if r["config"] == key and r["concurrency"] == concurrency and r["connections"] == connections]

    def values(self, key: str, field: str, cell: tuple[int, int] = MAIN_CELL) -> list:
        return [r.get(field) for r in self.pick(key, cell)]

    def median(self, key: str, field: str, cell: tuple[int, int] = MAIN_CELL) -> float | None:
        return med(self.values(key, field, cell))

    def per_round(self, numerator: str, denominator: str, field: str, combine,
                  cell: tuple[int, int] = MAIN_CELL) -> list[float]:
        """combine(numerator's value, denominator's value) for each round where both ran: adjacent runs."""
        out = []
        for round_index in sorted({r["round"] for r in self.runs}):
            a = [r.get(field) for r in self.pick(numerator, cell) if r["round"] == round_index]
            b = [r.get(field) for r in self.pick(denominator, cell) if r["round"] == round_index]
            if a and b and a[0] is not None and b[0] is not None:
                out.append(combine(a[0], b[0]))
        return out

    # --- instructions (callgrind) ---

    def instruction_rows(self) -> list[dict]:
        return (self.data.get("instructions") or {}).get("rows", [])

    def instructions(self, key: str, workload: str = "forwarded") -> list[float]:
        """Instructions per request (or per watch event) of `key`, one value per launch."""
        return [row["per_unit"] for row in self.instruction_rows()
                if row["config"] == key and row["workload"] == workload]

    def idle_instructions_per_s(self, key: str) -> list[float]:
        """Instructions per idle second with podward's refresh as shipped, one value per launch."""
        return [row["per_s"] for row in self.instruction_rows()
                if row["config"] == key and row["workload"] == "idle" and row["refresh"] == "as shipped"]

    def instruction_pairs(self, a: str, b: str, workload_a: str = "forwarded", workload_b: str = "forwarded",
                          combine=lambda x, y: x / y) -> list[float]:
        """combine(a, b) per repeat: launches of the same repeat ran next to each other."""
        def by_repeat(key: str, workload: str) -> dict:
            return {row["repeat"]: row["per_unit"] for row in self.instruction_rows()
                    if row["config"] == key and row["workload"] == workload}
        first, second = by_repeat(a, workload_a), by_repeat(b, workload_b)
        return [combine(first[r], second[r]) for r in sorted(first) if r in second]

    def why_not_counted(self, key: str) -> str | None:
        """Why a configuration has no instruction counts, or None if it has them."""
        counted = self.data.get("instructions")
        if not counted:
            return "not in this run's data"
        if "why" in counted:
            return counted["why"]
        if key in counted.get("failures", {}):
            return f"did not run under valgrind ({counted['failures'][key]})"
        return None

    def startup(self, key: str) -> list[float]:
        return [row["seconds"] for row in self.data.get("startup") or [] if row["config"] == key]

    def module_bytes(self, name: str) -> int | None:
        return self.data["machine"]["modules"].get(name)

    def sidecar_memory_kb(self, kind: str) -> float | None:
        """The shipped sidecar's memory request or limit ("requests"/"limits"), as the manifests say."""
        resources = (self.data.get("shipped_sidecar") or {}).get("resources", {})
        quantity = resources.get(kind, {}).get("memory")
        return None if quantity is None else quantity_kb(quantity)
