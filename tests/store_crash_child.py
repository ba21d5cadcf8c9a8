"""Processes for the store crash and failure tests; run as a script, never collected.

    store_crash_child.py zygote KIND PATH     # forks counter writers on request (see below)
    store_crash_child.py trace MODE PATH      # one traced save between markers (ALICE test)
    store_crash_child.py fsize KIND PATH LIMIT  # saves under RLIMIT_FSIZE (a full disk)
    store_crash_child.py lock PATH            # holds BEGIN EXCLUSIVE on an SQLite database

KIND is ``json`` or ``sqlite``. Every line this script prints is written with one
``os.write`` (unbuffered, and atomic on a pipe), so a reader sees whole lines only, and a
line a writer printed is in the pipe even if the writer is killed right after.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import resource
import shutil
import signal
import sqlite3
import sys
from pathlib import Path

from agent.persist import DeviceStore
from agent.stores import JsonFileStore, SqliteStore, StoreBase, _render, encode

KEY = "counter"
TRACE_BEGIN = "/agent-store-trace-begin"
TRACE_END = "/agent-store-trace-end"


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def make_store(kind: str, path: str) -> StoreBase:
    return JsonFileStore(path) if kind == "json" else SqliteStore(path)


def payload(n: int) -> str:
    """A few kB that depend on ``n``: a torn or mixed value cannot pass for a whole one."""
    return f"{n:010d}|" * 300


# ----------------------------------------------------------------------- SIGKILL test


def counter_loop(kind: str, path: str) -> None:
    """Save an increasing counter as fast as possible; print each one once it is saved."""
    store = make_store(kind, path)
    saved = store.load(KEY)
    n = 0 if saved is None else int(saved["n"])
    say(f"start {n}")
    while True:
        n += 1
        store.save(KEY, {"n": n, "payload": payload(n)})
        say(f"saved {n}")


def zygote(kind: str, path: str) -> None:
    """A warm interpreter that forks a counter writer per ``go`` and reaps it on ``reap``.

    Forking from this single-threaded process costs about a millisecond, where starting a
    fresh interpreter costs a hundred: 200 kills stay within seconds. Nothing of the store
    is opened here, so no file or SQLite connection crosses a fork.
    """
    gc.freeze()  # imported objects move to a generation no collection visits: fewer copies
    while True:
        words = sys.stdin.readline().split()
        if not words or words[0] == "quit":
            return
        if words[0] == "go":
            pid = os.fork()
            if pid == 0:
                try:
                    counter_loop(kind, path)
                finally:
                    os._exit(1)
            say(f"child {pid}")
        elif words[0] == "reap":
            pid = int(words[1])
            _, status = os.waitpid(pid, 0)
            say(f"reaped {pid} {status}")


# ----------------------------------------------------------------------- strace test


def _unsafe_save(path: Path, data: bytes) -> None:
    """How not to do it (for the checker's self-test): no fsync before the rename."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, data)
    os.close(fd)
    os.replace(temporary, path)


def _no_directory_fsync_save(path: Path, data: bytes) -> None:
    """Consistent but not durable (for the checker's self-test): no fsync of the directory."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
    os.replace(temporary, path)


def trace_target(mode: str, path: str) -> None:
    """Save ``old`` (unless ``mode`` ends in ``-first``), snapshot the directory into
    ``<dir>.initial``, then save ``new`` between two marker system calls.

    Modes: ``store`` (JsonFileStore.save), ``sqlite`` (SqliteStore.save: a commit into the
    WAL of an open database); for the checker's self-test, saves that get it wrong:
    ``unsafe`` and ``no-dir-fsync`` (hand-written), ``sqlite-normal`` (synchronous=NORMAL).
    """
    sqlite = mode.startswith("sqlite")
    store: StoreBase = SqliteStore(path) if sqlite else JsonFileStore(path)
    first = mode.endswith("-first")
    kind = mode.removesuffix("-first")
    old = {"n": 1, "payload": payload(1)}
    new = {"n": 2, "payload": payload(2)}
    if first:
        Path(path).parent.mkdir(mode=0o700)  # an empty directory; creating it is not traced
        store.load(KEY)  # the first read happens here, outside the traced part
    else:
        store.save(KEY, old)
    if mode == "sqlite-normal":  # durability off, for the checker's self-test
        assert isinstance(store, SqliteStore) and store._conn is not None
        store._conn.execute("PRAGMA synchronous = NORMAL")
    directory = Path(path).parent
    shutil.copytree(directory, str(directory) + ".initial")
    data = _render({KEY: encode(KEY, new)})  # the bytes the store itself would write
    _marker(TRACE_BEGIN)
    if kind in ("store", "sqlite", "sqlite-normal"):
        store.save(KEY, new)
    elif kind == "unsafe":
        _unsafe_save(Path(path), data)
    elif kind == "no-dir-fsync":
        _no_directory_fsync_save(Path(path), data)
    else:
        raise SystemExit(f"unknown trace mode {mode!r}")
    _marker(TRACE_END)
    # Exit without closing: a clean close would checkpoint the WAL into the database after
    # the traced part, which is none of the trace's business (and a crash does not close).
    os._exit(0)


def _marker(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.stat(name)  # a system call with a recognisable path, in trace=file


# ----------------------------------------------------------------------- failures


def fsize_scenario(kind: str, path: str, limit: int) -> None:
    """Fill the "disk" (RLIMIT_FSIZE: no file may grow past ``limit`` bytes, root included)
    with a big value, then shrink it again; print what happened as one JSON line."""
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(message)s")
    # Past the limit the kernel sends SIGXFSZ (which kills by default); ignored, the write
    # fails with EFBIG instead, which is what a full disk looks like to the store.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    store = make_store(kind, path)
    problems: list[dict[str, object]] = []
    store.bind_reporter(
        lambda p: problems.append(
            {"type": type(p.error).__name__, "key": p.key, "details": dict(p.details)}
        )
    )
    device = DeviceStore(store, "meter")
    device["small"] = 1
    results = {"first": device.save()}
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    device["big"] = "x" * (4 * limit)
    results["full"] = device.save()
    results["full_again"] = device.save()
    results["dirty"] = device.dirty
    results["streak"] = device.failures.count
    del device["big"]
    device["small"] = 2
    results["after"] = device.save()
    results["problems"] = problems
    store.close()
    say(json.dumps(results))


def hold_lock(path: str) -> None:
    """Hold the write lock of an SQLite database until a line arrives on stdin."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    say("locked")
    sys.stdin.readline()
    conn.execute("COMMIT")
    conn.close()
    say("released")


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "zygote":
        zygote(args[0], args[1])
    elif command == "trace":
        trace_target(args[0], args[1])
    elif command == "fsize":
        fsize_scenario(args[0], args[1], int(args[2]))
    elif command == "lock":
        hold_lock(args[0])
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
