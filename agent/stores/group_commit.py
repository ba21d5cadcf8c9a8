"""The base of the file-backed stores: :class:`_CommittingStore`, read once, then written by
group commit.

Device threads save concurrently. The saves that arrive while a write is in progress are
written together by the next write, so a save waits for at most the write in progress and
then its own, and ten devices saving on the same tick cost one or two writes, not ten. No
lock is held during a write; the writer role is. Subclasses say how to read and write the
file (:meth:`_CommittingStore._read`, :meth:`_CommittingStore._write`).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from agent.stores.base import StoreBase
from agent.stores.errors import StoreCorrupt, StoreError
from agent.stores.problems import StoreProblem

__all__: list[str] = []

# One logger for the whole package, named as before the split: "agent.stores".
logger = logging.getLogger("agent.stores")


class _Batch:
    """Saves that one write commits together."""

    __slots__ = ("done", "entries", "error")

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}
        self.done = False
        self.error: BaseException | None = None


class _CommittingStore(StoreBase):
    """A store on a file: read once, then written by group commit.

    The first use reads the whole store into memory (the *durable* map: what is on disk,
    as canonical bytes per key); ``load`` answers from it. A save puts its entry into the
    *open batch* and waits until that batch is written:

    * if no write is in progress, the saving thread takes the open batch (a new one opens
      for later saves), releases the lock, writes, and wakes everybody;
    * otherwise it waits; when that write ends, one of the waiting threads writes the batch.

    So the lock is never held during I/O, one write is in progress at a time, a save waits
    for at most two writes, and every save that returned is on disk. When a write fails,
    every save of its batch raises that error and the durable map stays as it was.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self._path = Path(os.path.abspath(os.fspath(path)))
        self._cond = threading.Condition(threading.Lock())
        self._durable: dict[str, bytes] | None = None  # None: not read yet
        self._open_batch = _Batch()
        self._in_flight: _Batch | None = None
        # Problems found while the lock is held (or during a write) are reported after it:
        # never call a hook, which publishes, with a lock of ours held.
        self._deferred: list[StoreProblem] = []
        self._deferred_lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path

    def _load_encoded(self, key: str) -> bytes | None:
        try:
            with self._cond:
                return self._durable_map().get(key)
        finally:
            self._report_deferred()

    def _save_encoded(self, key: str, text: bytes, *, force: bool = False) -> None:
        try:
            self._save_and_wait(key, text, force=force)
        finally:
            self._report_deferred()

    def _defer(self, problem: StoreProblem) -> None:
        with self._deferred_lock:
            self._deferred.append(problem)

    def _report_deferred(self) -> None:
        with self._deferred_lock:
            problems, self._deferred = self._deferred, []
        for problem in problems:
            self.report_problem(problem)

    def _save_and_wait(self, key: str, text: bytes, *, force: bool) -> None:
        with self._cond:
            durable = self._durable_map()
            pending = key in self._open_batch.entries or (
                self._in_flight is not None and key in self._in_flight.entries
            )
            if not force and not pending and durable.get(key) == text:
                return  # exactly that is on disk already
            batch = self._open_batch
            batch.entries[key] = text
            while not batch.done:
                if self._in_flight is not None:
                    self._cond.wait()
                else:
                    self._commit(batch)
        if batch.error is not None:
            raise batch.error

    def _durable_map(self) -> dict[str, bytes]:
        """Called with the lock held; the first call reads the store (once: a failure to
        read is raised and tried again at the next call)."""
        if self._durable is None:
            self._durable = self._read()
        return self._durable

    def _commit(self, batch: _Batch) -> None:
        """Write ``batch`` (the open one); called with the lock held, returns with it held."""
        assert batch is self._open_batch and self._durable is not None
        self._open_batch = _Batch()
        self._in_flight = batch
        document = {**self._durable, **batch.entries}
        error: BaseException | None = StoreError("the write was interrupted")
        self._cond.release()
        try:
            self._write(document, batch.entries)
            error = None
        except Exception as exc:
            error = exc
        finally:
            self._cond.acquire()
            if error is None:
                self._durable = document
                self.writes += 1
            batch.done, batch.error = True, error
            self._in_flight = None
            self._cond.notify_all()

    def _read(self) -> dict[str, bytes]:
        raise NotImplementedError

    def _write(self, document: dict[str, bytes], changed: dict[str, bytes]) -> None:
        """Make ``document`` (everything) durable; ``changed`` is what differs from disk."""
        raise NotImplementedError

    def _set_aside_report(
        self, reason: str, moved_to: Path | None, move_error: OSError | None, **details: object
    ) -> None:
        """Log and report a store file that could not be read."""
        if move_error is None:
            logger.error(
                "store file %s is corrupt: %s; moved it aside to %s (kept for inspection) "
                "and starting with an empty store",
                self._path,
                reason,
                moved_to,
            )
        else:
            logger.error(
                "store file %s is corrupt: %s; could not move it aside (%s), so it is kept "
                "where it is and not overwritten until it can be moved; starting empty",
                self._path,
                reason,
                move_error,
            )
        self._defer(
            StoreProblem(
                StoreCorrupt(f"store file {self._path} is corrupt: {reason}"),
                None,
                {
                    "path": str(self._path),
                    "moved_to": None if moved_to is None else str(moved_to),
                    "reason": reason,
                    **details,
                },
            )
        )
