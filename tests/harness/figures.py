"""Figures the tests measure, kept for the closing notes and the README (not asserted here)."""

from __future__ import annotations

import json
import os
import pathlib

# PODWARD_FIGURES: elsewhere, as the benchmark asks for the figures of the test it runs.
DIRECTORY = pathlib.Path(os.environ.get("PODWARD_FIGURES", "/tmp/podward-figures"))


def record_figures(topic: str, build: str, section: str, figures: dict):
    """Writes one build's section of DIRECTORY/<topic>.json, keeping the others, and prints it."""
    path = DIRECTORY / f"{topic}.json"
    DIRECTORY.mkdir(parents=True, exist_ok=True)
    recorded = json.loads(path.read_text()) if path.exists() else {}
    recorded.setdefault(build, {})[section] = figures
    path.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    print(f"\n[{topic} {build} {section}] {json.dumps(figures)}")
