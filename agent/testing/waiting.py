"""Bounded waiting for tests: poll a condition, fail with a clear message after a deadline."""

from __future__ import annotations

import threading
from collections.abc import Callable

from agent.testing.clock import _real_now


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
    deadline = _real_now() + timeout
    pause = threading.Event()
    while not predicate():
        if _real_now() > deadline:
            extra = f"; {describe()}" if describe is not None else ""
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what or predicate}{extra}"
            )
        pause.wait(0.005)
