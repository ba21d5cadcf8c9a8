"""Problem reporting: :class:`StoreProblem`, the hook that receives it, and the channel that
keeps problems until a hook is bound.

A store cannot publish to MQTT itself: the runtime binds a hook
(:meth:`~agent.stores.base.StoreBase.bind_reporter`) that publishes an error payload.
Problems found before that (a corrupt file found at the first load, before MQTT is up) are
kept, up to a bound, and delivered when the hook is bound.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

__all__ = ["ProblemHook", "StoreProblem"]

# One logger for the whole package, named as before the split: "agent.stores".
logger = logging.getLogger("agent.stores")


class StoreProblem:
    """Something a store found that deserves an error payload (read-only by convention).

    ``error``'s class picks the ``error_type`` (:data:`STORE_ERROR_TYPES`); ``key`` is the
    device concerned, None for the store as a whole; ``details`` go into the payload as they
    are. The store has already written its log line: the hook only publishes.
    """

    __slots__ = ("details", "error", "key")

    def __init__(
        self,
        error: BaseException,
        key: str | None = None,
        details: Mapping[str, object] | None = None,
    ) -> None:
        self.error = error
        self.key = key
        self.details: Mapping[str, object] = {} if details is None else details

    def __repr__(self) -> str:
        return f"StoreProblem({self.error!r}, key={self.key!r}, details={self.details!r})"


ProblemHook = Callable[[StoreProblem], None]
"""Receives store problems, on the thread that found them. Must not block for long."""


class _ProblemChannel:
    """Delivers problems to a hook; keeps them (up to a bound) until one is bound."""

    MAX_KEPT = 100

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hook: ProblemHook | None = None
        self._kept: list[StoreProblem] = []
        self._dropped = 0

    def bind(self, hook: ProblemHook | None) -> None:
        with self._lock:
            self._hook = hook
            if hook is None:
                return
            kept, self._kept = self._kept, []
            dropped, self._dropped = self._dropped, 0
        if dropped:
            logger.warning("%d store problems found before reporting was set up are lost", dropped)
        for problem in kept:
            self._deliver(hook, problem)

    def report(self, problem: StoreProblem) -> None:
        with self._lock:
            hook = self._hook
            if hook is None:
                if len(self._kept) < self.MAX_KEPT:
                    self._kept.append(problem)
                else:
                    self._dropped += 1
                return
        self._deliver(hook, problem)

    @staticmethod
    def _deliver(hook: ProblemHook, problem: StoreProblem) -> None:
        try:
            hook(problem)
        except Exception:  # a broken reporter must not break the store, nor hide the problem
            logger.exception("the store problem reporter failed on %r", problem.error)
