"""Durable files: the modes of what a store creates, and the steps a crash-safe write needs
(fsync of a directory, directories made durable in their parents, whole writes), plus the
names of files set aside and the liveness of the process a temporary file belongs to.

ADR-007 (docs/adr/007-persistence-and-crash-safety.md) says why each step is there.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent.clock import utc_now

__all__ = ["DIRECTORY_MODE", "FILE_MODE"]


FILE_MODE = 0o600
"""Mode of every file a store writes: state may hold counters, positions, tokens."""

DIRECTORY_MODE = 0o700
"""Mode of every directory a store creates."""


def _fsync_directory(directory: Path) -> None:
    """Make the directory's entries (a rename, a new file) durable.

    Some file systems cannot fsync a directory (EINVAL); there is nothing better to do.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != 22:  # EINVAL
            raise
    finally:
        os.close(fd)


def _make_directories(directory: Path) -> None:
    """Create ``directory`` and missing parents, each 0700, each made durable in its parent
    (a new directory's entry is lost at a power cut unless its parent is fsync'd)."""
    if directory.is_dir():
        return
    missing: list[Path] = []
    for level in (directory, *directory.parents):
        if level.is_dir():
            break
        missing.append(level)
    for level in reversed(missing):
        try:
            os.mkdir(level, DIRECTORY_MODE)
        except FileExistsError:
            if not level.is_dir():
                raise
            continue  # another thread or process made it
        os.chmod(level, DIRECTORY_MODE)  # exactly 0700, whatever the umask
        _fsync_directory(level.parent)


def _alive(pid_and_suffix: str) -> bool:
    """Whether the process named by ``<pid>-...`` runs (an unparsable name: no)."""
    try:
        pid = int(pid_and_suffix.partition("-")[0])
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but not ours to signal
        return True
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _aside_name(path: Path, suffix: str = "") -> Path:
    """``<name><suffix>.corrupt-<UTC timestamp>``, numbered if that exists already."""
    stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
    candidate = path.with_name(f"{path.name}{suffix}.corrupt-{stamp}")
    number = 1
    while os.path.lexists(candidate):
        number += 1
        candidate = path.with_name(f"{path.name}{suffix}.corrupt-{stamp}-{number}")
    return candidate
