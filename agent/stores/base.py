"""What a store is: the :class:`Store` and :class:`ReportsProblems` protocols, and
:class:`StoreBase`, which every shipped store extends (key and data checks, problem
reporting, the ``writes`` counter).
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from agent.stores.encoding import _check_key, encode
from agent.stores.problems import ProblemHook, StoreProblem, _ProblemChannel

__all__ = ["ReportsProblems", "Store", "StoreBase"]


@runtime_checkable
class Store(Protocol):
    """Key → JSON dict persistence. Must be safe to call from several threads at once.

    ``load(key)`` returns a fresh dict, or None when nothing was saved under ``key``.
    ``save(key, data)`` stores a copy of ``data`` and returns once it is stored (for the
    file-backed stores: on disk); it raises ``TypeError`` for data that is not JSON, and
    whatever the medium raised when the write failed (then nothing changed).
    """

    def load(self, key: str) -> dict[str, Any] | None: ...

    def save(self, key: str, data: dict[str, Any]) -> None: ...


@runtime_checkable
class ReportsProblems(Protocol):
    """A store that can report problems (all shipped stores): see :class:`StoreBase`."""

    def bind_reporter(self, hook: ProblemHook | None) -> None: ...

    def report_problem(self, problem: StoreProblem) -> None: ...


class StoreBase:
    """What the shipped stores share: key and data checks, problem reporting, ``writes``.

    Subclasses implement :meth:`_load_encoded` and :meth:`_save_encoded`, which work on
    canonical JSON bytes (:func:`encode`); :class:`agent.persist.DeviceStore` calls those
    directly, since it has the bytes already.
    """

    def __init__(self) -> None:
        self._problems = _ProblemChannel()
        self.writes = 0
        """Writes that reached the medium (for the file stores: commits, each one fsync'd)."""

    def load(self, key: str) -> dict[str, Any] | None:
        raw = self._load_encoded(_check_key(key))
        return None if raw is None else json.loads(raw)

    def save(self, key: str, data: dict[str, Any]) -> None:
        self._save_encoded(_check_key(key), encode(key, data))

    def close(self) -> None:
        """Release files and connections (the store reopens them if used again)."""

    def bind_reporter(self, hook: ProblemHook | None) -> None:
        """Send problems to ``hook`` from now on, and those found so far at once.

        The runtime binds a hook that publishes an error payload; None unbinds (problems
        are kept again).
        """
        self._problems.bind(hook)

    def report_problem(self, problem: StoreProblem) -> None:
        """Hand ``problem`` to the bound hook, or keep it until one is bound."""
        self._problems.report(problem)

    def _load_encoded(self, key: str) -> bytes | None:
        raise NotImplementedError

    def _save_encoded(self, key: str, text: bytes, *, force: bool = False) -> None:
        """Store ``text`` under ``key``; unless ``force``, skip it when it is stored already."""
        raise NotImplementedError
