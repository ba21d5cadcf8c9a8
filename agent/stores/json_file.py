"""The JSON file store: :class:`JsonFileStore`, one JSON object in one file, one line per
key, replaced atomically at every write.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping

from agent.stores.encoding import _a, _dumps, _parse_object
from agent.stores.errors import _Unreadable
from agent.stores.files import (
    FILE_MODE,
    _alive,
    _aside_name,
    _fsync_directory,
    _make_directories,
    _write_all,
)
from agent.stores.group_commit import _CommittingStore

__all__ = ["JsonFileStore"]

# One logger for the whole package, named as before the split: "agent.stores".
logger = logging.getLogger("agent.stores")


class JsonFileStore(_CommittingStore):
    """One JSON object in one file, one top-level key per device, replaced atomically.

    Every write replaces the whole file: temporary file in the same directory (mode 0600),
    write, ``fsync``, ``os.replace`` over the old file, ``fsync`` of the directory. A crash
    at any point leaves the old file or the new one, never a mix (ADR-007 checks every crash
    state of a traced save). Directories are created 0700 when missing.

    The store owns its file while the agent runs: it is read once, at the first ``load`` or
    ``save``, and later changes by others are overwritten. A file that cannot be read as a
    JSON object of objects is moved aside (``<name>.corrupt-<UTC timestamp>``), logged,
    reported (:meth:`bind_reporter`) and treated as empty. Temporary files a crash left
    behind (``.<name>.tmp-*``) are removed at that first read.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._aside_pending: str | None = None  # corrupt, but could not be moved aside yet

    def _temporary_prefix(self) -> str:
        return f".{self._path.name}.tmp-"

    def _read(self) -> dict[str, bytes]:
        self._remove_stale_temporaries()
        try:
            raw = self._path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return {}  # nothing there (yet); a write will say what is wrong, if anything
        try:
            document = _parse_object(raw, "the file")
            for key, value in document.items():
                if not isinstance(value, dict):
                    raise _Unreadable(f"the entry {key!r} is {_a(value)}, not a JSON object")
            return {key: _dumps(value) for key, value in document.items()}
        except _Unreadable as exc:
            self._set_aside(str(exc), size=len(raw))
            return {}

    def _remove_stale_temporaries(self) -> None:
        """Remove temporary files of writers that died (``.<name>.tmp-<pid>-<random>``);
        those of a live process (this one included) may be a write in progress."""
        prefix = self._temporary_prefix()
        with contextlib.suppress(OSError):  # no directory yet: nothing to clean
            for entry in os.scandir(self._path.parent):
                if entry.name.startswith(prefix) and not _alive(entry.name[len(prefix) :]):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    def _set_aside(self, reason: str, **details: object) -> None:
        destination = _aside_name(self._path)
        try:
            os.rename(self._path, destination)
        except OSError as exc:
            self._aside_pending = reason
            self._set_aside_report(reason, None, exc, **details)
            return
        with contextlib.suppress(OSError):
            _fsync_directory(self._path.parent)
        self._set_aside_report(reason, destination, None, **details)

    def _write(self, document: dict[str, bytes], changed: dict[str, bytes]) -> None:
        if self._aside_pending is not None:
            # Never replace a corrupt file nobody has seen: move it first, or fail the save.
            destination = _aside_name(self._path)
            os.rename(self._path, destination)
            logger.info("moved the corrupt store file %s aside to %s", self._path, destination)
            self._aside_pending = None
        _make_directories(self._path.parent)
        self._replace(_render(document))

    def _replace(self, data: bytes) -> None:
        """The atomic replacement, step by step (ADR-007 models each step)."""
        directory = self._path.parent
        temporary = directory / f"{self._temporary_prefix()}{os.getpid()}-{os.urandom(4).hex()}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            try:
                os.fchmod(fd, FILE_MODE)  # exactly 0600, whatever the umask
                _write_all(fd, data)
                os.fsync(fd)  # the data is on disk before the name can point at it
            finally:
                os.close(fd)
            os.replace(temporary, self._path)  # atomic: old file or new file, nothing between
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _fsync_directory(directory)  # the rename itself is durable: a returned save stays

    def __repr__(self) -> str:
        return f"JsonFileStore({str(self._path)!r})"


def _render(document: Mapping[str, bytes]) -> bytes:
    """The file: one JSON object, one line per key (sorted), so it diffs and reads well."""
    if not document:
        return b"{}\n"
    lines = [
        json.dumps(key, ensure_ascii=False).encode("utf-8") + b": " + document[key]
        for key in sorted(document)
    ]
    return b"{\n" + b",\n".join(lines) + b"\n}\n"
