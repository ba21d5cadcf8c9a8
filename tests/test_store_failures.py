"""When the medium fails: a read-only directory, garbage in the file, a full disk, a database
locked by another process. Real files, real processes; failures that hold for root too.

What must hold every time (see agent.persist): the save returns False instead of raising,
the state stays in memory and dirty, one error report per failure streak, the next save
tries again, and once the medium works the state is on disk.
"""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
import time
from pathlib import Path

import pytest
from store_helpers import (
    KINDS,
    LineReader,
    collecting,
    file_name,
    make_store,
    open_directory,
    read_only,
    send,
    start_child,
    stop,
)

from agent.persist import DeviceStore
from agent.stores import JsonFileStore, SqliteStore, StoreCorrupt, StoreSaveFailed


def _fresh(kind: str, path: Path, key: str) -> object:
    store = make_store(kind, path)
    try:
        return store.load(key)
    finally:
        store.close()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


@pytest.mark.parametrize("kind", KINDS)
def test_read_only_directory(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    with open_directory() as base:
        directory = base / "state"
        directory.mkdir(mode=0o755)
        path = directory / file_name(kind)
        backend = make_store(kind, path)
        problems = collecting(backend)
        device = DeviceStore(backend, "valve")
        device.load()  # nothing there yet; a load creates nothing, so it needs no writing
        device["position"] = 1
        with caplog.at_level(logging.DEBUG, logger="agent.persist"), read_only(directory):
            assert device.save() is False
            device["position"] = 2
            assert device.save() is False
        error = device.failures.last_error
        assert isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EROFS), error
        assert device.dirty and device["position"] == 2
        (problem,) = problems
        assert isinstance(problem.error, StoreSaveFailed) and problem.key == "valve"
        assert "Permission denied" in str(problem.details["reason"])
        assert [r.levelname for r in caplog.records if r.name == "agent.persist"] == [
            "ERROR",
            "DEBUG",
        ]
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="agent.persist"):
            assert device.save() is True  # writable again: the next save gets through
        assert "works again (after 2 failed attempts)" in caplog.text
        backend.close()
        assert _fresh(kind, path, "valve") == {"position": 2}
        assert _leftovers(directory) == []


def test_read_only_directory_with_an_existing_json_file(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with open_directory() as base:
        directory = base / "state"
        directory.mkdir(mode=0o755)
        path = directory / "state.json"
        backend = JsonFileStore(path)
        problems = collecting(backend)
        device = DeviceStore(backend, "valve")
        device["position"] = 1
        assert device.save() is True
        path.chmod(0o644)  # so that nobody may read it for the check below
        before = path.read_bytes()
        device["position"] = 2
        with read_only(directory):
            assert device.save() is False
            assert path.read_bytes() == before  # the old file is untouched
        assert len(problems) == 1 and device.dirty
        assert device.save() is True
        assert JsonFileStore(path).load("valve") == {"position": 2}


def test_a_corrupt_file_that_cannot_be_moved_aside_is_never_overwritten(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with open_directory() as base:
        directory = base / "state"
        directory.mkdir(mode=0o755)
        path = directory / "state.json"
        path.write_bytes(b"garbage")
        path.chmod(0o644)
        backend = JsonFileStore(path)
        problems = collecting(backend)
        device = DeviceStore(backend, "valve")
        with read_only(directory):
            device.load()  # corrupt, and cannot be moved: treated as empty, not raised
            device["position"] = 1
            assert device.save() is False
        assert path.read_bytes() == b"garbage"
        corrupt, failed = problems
        assert isinstance(corrupt.error, StoreCorrupt) and corrupt.details["moved_to"] is None
        assert isinstance(failed.error, StoreSaveFailed)
        assert device.save() is True  # now it can be moved aside first
        (aside,) = directory.glob("state.json.corrupt-*")
        assert aside.read_bytes() == b"garbage"
        assert JsonFileStore(path).load("valve") == {"position": 1}


@pytest.mark.parametrize("kind", KINDS)
def test_a_file_replaced_by_garbage_before_start(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / file_name(kind)
    first = make_store(kind, path)
    device = DeviceStore(first, "valve")
    device["position"] = 1
    assert device.save() is True
    first.close()
    garbage = b"\x89PNG this is not what you think" * 100
    path.write_bytes(garbage)  # somebody copied the wrong file over it
    backend = make_store(kind, path)
    device = DeviceStore(backend, "valve")
    with caplog.at_level(logging.ERROR, logger="agent.stores"):
        device.load()  # no exception at start-up
    assert dict(device) == {}
    assert str(path) in caplog.text
    found = path.parent.glob(f"{path.name}.corrupt-*")
    (aside,) = [p for p in found if not p.name.endswith(("-wal", "-shm"))]
    assert aside.read_bytes() == garbage
    (problem,) = collecting(backend)  # the runtime binds later: the problem waited for it
    assert isinstance(problem.error, StoreCorrupt)
    device["position"] = 2
    assert device.save() is True
    backend.close()
    assert _fresh(kind, path, "valve") == {"position": 2}


def test_a_json_file_replaced_by_garbage_while_running_is_rewritten_whole(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    backend = JsonFileStore(path)
    one, two = DeviceStore(backend, "one"), DeviceStore(backend, "two")
    one["n"] = 1
    two["n"] = 1
    assert one.save() and two.save()
    path.write_bytes(b"garbage")  # behind the store's back: it owns the file while it runs
    one["n"] = 2
    assert one.save() is True
    assert json.loads(path.read_text()) == {"one": {"n": 2}, "two": {"n": 1}}


@pytest.mark.parametrize("kind", KINDS)
def test_full_disk(kind: str, tmp_path: Path) -> None:
    """RLIMIT_FSIZE in a child process: no file may grow past 256 KiB, root included."""
    path = tmp_path / "state" / file_name(kind)
    child = start_child("fsize", kind, str(path), str(256 * 1024))
    try:
        assert child.stdout is not None
        line = LineReader(child.stdout).readline()
        assert child.wait(10) == 0
    finally:
        stop(child)
    result = json.loads(line)
    assert result["first"] is True
    assert (result["full"], result["full_again"]) == (False, False)
    assert result["dirty"] is True and result["streak"] == 2
    assert result["after"] is True
    (problem,) = result["problems"]
    assert problem["type"] == "StoreSaveFailed" and problem["key"] == "meter"
    reason = problem["details"]["reason"]
    # The kernel says EFBIG; SQLite calls that a "disk I/O error" (ENOSPC would be "database
    # or disk is full"), the JSON store passes it on as "File too large".
    expected = "File too large" if kind == "json" else "disk I/O error"
    assert expected in reason, reason
    assert _fresh(kind, path, "meter") == {"small": 2}
    assert _leftovers(path.parent) == []


def test_database_locked_by_another_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    backend = SqliteStore(path, busy_timeout=0.2)
    problems = collecting(backend)
    device = DeviceStore(backend, "valve")
    device["position"] = 1
    assert device.save() is True
    holder = start_child("lock", str(path))
    try:
        assert holder.stdout is not None
        lines = LineReader(holder.stdout)
        assert lines.readline() == "locked"
        device["position"] = 2
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="agent.persist"):
            assert device.save() is False
        waited = time.monotonic() - started
        assert waited >= 0.19  # the busy timeout, then it gives up
        assert isinstance(device.failures.last_error, sqlite3.OperationalError)
        assert "locked" in str(device.failures.last_error)
        assert device.save() is False
        (problem,) = problems
        assert isinstance(problem.error, StoreSaveFailed) and "locked" in str(problem.error)
        send(holder, "release")
        assert lines.readline() == "released"
        assert holder.wait(10) == 0
    finally:
        stop(holder)
    assert device.save() is True and not device.dirty
    backend.close()
    assert _fresh("sqlite", path, "valve") == {"position": 2}


@pytest.mark.parametrize("how", ["garbage", "deleted"])
def test_a_database_replaced_between_writes_gets_every_device_back(
    how: str, tmp_path: Path
) -> None:
    """The store reopens its database after closing it (or after an I/O error); if it
    finds garbage (moved aside) or nothing, the new database gets every row it holds."""
    path = tmp_path / "state.db"
    backend = SqliteStore(path)
    one, two = DeviceStore(backend, "one"), DeviceStore(backend, "two")
    one["n"], two["n"] = 1, 1
    assert one.save() and two.save()
    backend.close()
    if how == "garbage":
        path.write_bytes(b"garbage" * 100)
    else:
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
    one["n"] = 2
    assert one.save() is True
    backend.close()
    assert _fresh("sqlite", path, "one") == {"n": 2}
    assert _fresh("sqlite", path, "two") == {"n": 1}  # written again, though it did not change
