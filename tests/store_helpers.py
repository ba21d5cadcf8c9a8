"""Helpers shared by the store tests (not collected): stores by kind, child processes with a
deadline, and a directory that is read-only even for root."""

from __future__ import annotations

import contextlib
import os
import pwd
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from agent.stores import JsonFileStore, SqliteStore, StoreBase, StoreProblem

CHILD = Path(__file__).resolve().parent / "store_crash_child.py"
BOUND = 10.0  # seconds: the longest any wait in these tests may take before it fails

KINDS = ["json", "sqlite"]


def file_name(kind: str) -> str:
    return "state.json" if kind == "json" else "state.db"


def make_store(kind: str, path: Path, **options: float) -> JsonFileStore | SqliteStore:
    return JsonFileStore(path) if kind == "json" else SqliteStore(path, **options)


def collecting(store: StoreBase) -> list[StoreProblem]:
    """Bind a reporter to ``store`` that collects its problems into the returned list."""
    problems: list[StoreProblem] = []
    store.bind_reporter(problems.append)
    return problems


def child_env() -> dict[str, str]:
    """The environment for a child script: the same agent package as this process."""
    import agent

    env = dict(os.environ)
    home = str(Path(agent.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (home, env.get("PYTHONPATH")) if p)
    return env


def start_child(*args: str) -> subprocess.Popen[bytes]:
    """Start ``store_crash_child.py ARGS`` with pipes on stdin and stdout."""
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=child_env(),
    )


class LineReader:
    """Whole lines from a child's stdout, each within a deadline (select, no thread)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self._buffer = b""

    def readline(self, timeout: float = BOUND) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line within {timeout} s (have {self._buffer[-200:]!r})")
            ready, _, _ = select.select([self._fd], [], [], remaining)
            if ready:
                chunk = os.read(self._fd, 1 << 16)
                if not chunk:
                    raise EOFError(f"the child closed its output (have {self._buffer[-200:]!r})")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


def send(process: subprocess.Popen[bytes], line: str) -> None:
    assert process.stdin is not None
    process.stdin.write(line.encode() + b"\n")
    process.stdin.flush()


def stop(process: subprocess.Popen[bytes]) -> None:
    """Kill ``process`` (one we started) if it still runs, and reap it."""
    if process.poll() is None:
        process.kill()
    process.wait(BOUND)
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


@contextlib.contextmanager
def open_directory() -> Iterator[Path]:
    """A fresh directory that every user may enter (mode 0755), removed afterwards.

    pytest's ``tmp_path`` lies under a 0700 directory of the user running the tests, which
    a process running as ``nobody`` could not even enter.
    """
    path = Path(tempfile.mkdtemp(prefix="agent-store-"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


NOBODY = pwd.getpwnam("nobody").pw_uid


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """Make ``directory`` read-only for this process — really, root included.

    The directory becomes mode 0555. Root ignores modes, so when the tests run as root the
    process also takes ``nobody``'s effective user id for the duration (``seteuid``, which
    root can undo; on Linux it applies to every thread). Every parent must be enterable by
    ``nobody``: use :func:`open_directory`.
    """
    directory.chmod(0o555)
    try:
        if os.geteuid() == 0:
            os.seteuid(NOBODY)
            try:
                yield
            finally:
                os.seteuid(0)
        else:
            yield
    finally:
        directory.chmod(0o755)
