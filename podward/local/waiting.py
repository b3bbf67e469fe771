"""Waiting for an event, never for a time: one bounded wait, which fails saying what did not happen. Envoy's
start-up, the tests and their harness all wait with it."""

from __future__ import annotations

import inspect
import time

# How often a condition is asked again: often enough not to slow a test down, seldom enough not to load the machine.
INTERVAL_S = 0.05


def wait_for(condition, timeout: float = 5.0, what: str | None = None, interval: float = INTERVAL_S):
    """Asks `condition()` until it returns something true, and returns that; after `timeout` seconds, fails
    naming `what` was awaited (by default, the condition's source) and what it returned last."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g} s: {what or _source(condition)} (last: {result!r})")
        time.sleep(interval)
    return result


def _source(condition) -> str:
    try:
        return " ".join(inspect.getsource(condition).split())
    except (OSError, TypeError):
        return repr(condition)
