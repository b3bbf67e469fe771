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
        self.runs = data["runs"]

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

    def startup(self, key: str) -> list[float]:
        return [row["seconds"] for row in self.data.get("startup") or [] if row["config"] == key]

    def module_bytes(self, name: str) -> int | None:
        return self.data["machine"]["modules"].get(name)

    def sidecar_memory_kb(self, kind: str) -> float | None:
        """The shipped sidecar's memory request or limit ("requests"/"limits"), as the manifests say."""
        resources = (self.data.get("shipped_sidecar") or {}).get("resources", {})
        quantity = resources.get(kind, {}).get("memory")
        return None if quantity is None else quantity_kb(quantity)
