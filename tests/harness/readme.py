"""The commands README.md tells a user to run, read from README.md itself, so that the tests run exactly those
and fail when the README changes under them."""

from __future__ import annotations

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def section(heading: str, source: pathlib.Path = README) -> str:
    """The text under a heading (`### 1. Inject…`, matched from its start) up to the next heading of its level
    or above."""
    text = source.read_text()
    level = len(heading) - len(heading.lstrip("#"))
    match = re.search(rf"^{re.escape(heading)}.*$", text, re.MULTILINE)
    assert match, f"{source.name} has no heading {heading!r}"
    end = re.search(rf"^#{{1,{level}}} ", text[match.end():], re.MULTILINE)
    return text[match.end():match.end() + end.start()] if end else text[match.end():]


def blocks(heading: str, language: str = "sh", source: pathlib.Path = README) -> list:
    """The fenced code blocks of one language under a heading, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", section(heading, source), re.MULTILINE | re.DOTALL)


def commands(block: str) -> list:
    """A shell block's commands: one a line, `\\`-continued lines joined; blank lines dropped."""
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]
