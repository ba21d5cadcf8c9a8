"""Bounded waiting for tests: poll a condition, fail with a clear message after a deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def eventually(
    predicate: Callable[[], object],
    timeout: float = 5.0,
    what: str = "",
    *,
    describe: Callable[[], str] | None = None,
) -> None:
    """Return once ``predicate()`` is truthy; raise AssertionError after ``timeout`` real
    seconds. Use it for effects on other threads that signal nothing (a message recorded by a
    fake); prefer waiting on an event where there is one."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            extra = f"; {describe()}" if describe is not None else ""
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what or predicate}{extra}"
            )
        pause.wait(0.005)
