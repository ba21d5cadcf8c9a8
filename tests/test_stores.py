"""The stores on their own: contract, JSON checks, modes, concurrency, corrupt files.

The file-backed stores run on real files in ``tmp_path``; nothing of the file system is
mocked. Failures of the medium (read-only directory, full disk, locked database) are in
test_store_failures.py, crashes in test_store_crash.py.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from store_helpers import BOUND, KINDS, collecting, file_name, make_store

from agent.stores import (
    STORE_ERROR_TYPES,
    JsonFileStore,
    MemoryStore,
    NullStore,
    ReportsProblems,
    SqliteStore,
    Store,
    StoreBase,
    StoreCorrupt,
    StoreError,
    StoreProblem,
    StoreSaveFailed,
    UnstorableData,
)

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def path(tmp_path: Path, kind: str) -> Path:
    return tmp_path / "state" / file_name(kind)


@pytest.fixture
def store(kind: str, path: Path) -> Iterator[JsonFileStore | SqliteStore]:
    s = make_store(kind, path)
    yield s
    s.close()


ALL_STORES = ["memory", "null", *KINDS]


def any_store(name: str, tmp_path: Path) -> StoreBase:
    if name == "memory":
        return MemoryStore()
    if name == "null":
        return NullStore()
    return make_store(name, tmp_path / "state" / file_name(name))


def fresh_load(kind: str, path: Path, key: str) -> dict[str, Any] | None:
    """What a new process would load: a new store object on the same file."""
    s = make_store(kind, path)
    problems = collecting(s)
    try:
        return s.load(key)
    finally:
        s.close()
        assert problems == []


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", ALL_STORES)
def test_every_store_satisfies_the_protocols(name: str, tmp_path: Path) -> None:
    s = any_store(name, tmp_path)
    assert isinstance(s, Store)
    assert isinstance(s, ReportsProblems)


def test_round_trip_through_a_new_store_object(
    kind: str, path: Path, store: JsonFileStore | SqliteStore
) -> None:
    assert store.load("meter") is None
    data = {"n": 3, "f": 0.1, "s": "é ü \u2603", "ok": True, "none": None, "list": [1, [2, {}]]}
    store.save("meter", data)
    store.save("valve", {"position": "open"})
    assert store.load("meter") == data
    assert fresh_load(kind, path, "meter") == data
    assert fresh_load(kind, path, "valve") == {"position": "open"}
    assert fresh_load(kind, path, "other") is None


@pytest.mark.parametrize("name", ["memory", *KINDS])
def test_what_goes_in_and_comes_out_is_a_copy(name: str, tmp_path: Path) -> None:
    s = any_store(name, tmp_path)
    data: dict[str, Any] = {"nested": {"list": [1, 2]}}
    s.save("k", data)
    data["nested"]["list"].append(3)  # after the save: must not reach the store
    loaded = s.load("k")
    assert loaded == {"nested": {"list": [1, 2]}}
    assert loaded is not None
    loaded["nested"]["list"].append(4)  # must not reach the store either
    assert s.load("k") == {"nested": {"list": [1, 2]}}
    assert s.load("k") is not s.load("k")


def test_memory_store_copies_its_initial_data_and_checks_it() -> None:
    initial = {"a": {"x": [1]}}
    s = MemoryStore(initial)
    initial["a"]["x"].append(2)
    assert s.as_dict() == {"a": {"x": [1]}}
    with pytest.raises(UnstorableData, match=r"'a'.*'x'.*tuple"):
        MemoryStore({"a": {"x": (1, 2)}})


def test_null_store_keeps_nothing_but_refuses_what_a_real_store_would() -> None:
    s = NullStore()
    s.save("k", {"a": 1})
    assert s.load("k") is None
    assert s.writes == 0
    with pytest.raises(UnstorableData):
        s.save("k", {"a": float("nan")})


# ----------------------------------------------------------------------------- JSON only


class Reading:
    pass


circular: dict[str, Any] = {}
circular["me"] = circular

UNSTORABLE = [
    # data, path, type name, a phrase of the message
    ({"t": (1, 2)}, "t", "tuple", "a tuple"),
    ({"s": {1, 2}}, "s", "set", "a set"),
    ({"nan": float("nan")}, "nan", "float", "nan"),
    ({"a": {"inf": math.inf}}, "a.inf", "float", "inf"),
    ({"a": [1, {"b": -math.inf}]}, "a[1].b", "float", "-inf"),
    ({"m": {1: "one"}}, "m", "int", "key of type int"),
    ({"r": Reading()}, "r", "Reading", "a Reading"),
    ({"b": b"bytes"}, "b", "bytes", "a bytes"),
    ({"x.y": {"z": [0, 1, object()]}}, '["x.y"].z[2]', "object", "an object"),
    ({"c": circular}, "c.me", "dict", "cycle"),
    ({"u": "\ud800"}, "u", "str", "surrogate"),
]


@pytest.mark.parametrize("name", ALL_STORES)
@pytest.mark.parametrize(("data", "where", "type_name", "phrase"), UNSTORABLE)
def test_what_json_cannot_hold_is_a_type_error_naming_key_path_and_type(
    name: str, data: dict[str, Any], where: str, type_name: str, phrase: str, tmp_path: Path
) -> None:
    s = any_store(name, tmp_path)
    if name != "null":
        s.save("meter", {"before": 1})
    writes = s.writes
    with pytest.raises(TypeError) as caught:
        s.save("meter", data)
    error = caught.value
    assert isinstance(error, UnstorableData)
    assert (error.key, error.path, error.type_name) == ("meter", where, type_name)
    message = str(error)
    assert "'meter'" in message and repr(where) in message and phrase in message
    assert s.writes == writes  # nothing written
    if name != "null":
        assert s.load("meter") == {"before": 1}
    if name in KINDS:
        assert fresh_load(name, tmp_path / "state" / file_name(name), "meter") == {"before": 1}


@pytest.mark.parametrize("data", [[1, 2], "text", None, 3])
def test_the_data_itself_must_be_a_dict(data: object) -> None:
    with pytest.raises(UnstorableData, match="the data must be a dict") as caught:
        MemoryStore().save("k", data)  # type: ignore[arg-type]
    assert caught.value.path == ""


def test_json_scalars_round_trip_exactly() -> None:
    s = MemoryStore()
    data = {"big": 2**80, "neg0": -0.0, "tiny": 5e-324, "max": 1.7976931348623157e308}
    s.save("k", data)
    loaded = s.load("k")
    assert loaded == data
    assert loaded is not None and math.copysign(1, loaded["neg0"]) == -1


@pytest.mark.parametrize("key", ["", 3, None, "\udcff"])
def test_keys_are_non_empty_unicode_strings(key: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        MemoryStore().save(key, {})  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- few writes


def test_saving_what_is_stored_writes_nothing(
    kind: str, path: Path, store: JsonFileStore | SqliteStore
) -> None:
    store.save("a", {"n": 1, "m": [1, 2]})
    assert store.writes == 1

    def files() -> dict[str, tuple[int, int, int]]:
        return {
            p.name: (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
            for p in path.parent.iterdir()
        }

    before = files()
    store.save("a", {"n": 1, "m": [1, 2]})
    store.save("a", {"m": [1, 2], "n": 1})  # the same JSON object, keys in another order
    assert store.writes == 1
    assert files() == before  # not a byte touched
    store.save("a", {"n": 2})
    assert store.writes == 2


def test_loading_creates_nothing(kind: str, tmp_path: Path) -> None:
    s = make_store(kind, tmp_path / "not" / "yet" / file_name(kind))
    assert s.load("a") is None
    s.close()
    assert not (tmp_path / "not").exists()


def test_the_json_file_is_one_object_one_sorted_line_per_key(tmp_path: Path) -> None:
    s = JsonFileStore(tmp_path / "state.json")
    s.save("valve", {"position": "open", "b": [1, 2]})
    s.save("counter", {"n": 1})
    text = (tmp_path / "state.json").read_text()
    assert text == '{\n"counter": {"n":1},\n"valve": {"b":[1,2],"position":"open"}\n}\n'
    assert json.loads(text) == {"counter": {"n": 1}, "valve": {"b": [1, 2], "position": "open"}}


# ----------------------------------------------------------------------------- modes


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_files_are_0600_and_created_directories_0700(kind: str, tmp_path: Path, umask: int) -> None:
    tmp_path.chmod(0o755)
    old = os.umask(umask)
    try:
        s = make_store(kind, tmp_path / "a" / "b" / file_name(kind))
        s.save("k", {"n": 1})
        s.save("k", {"n": 2})
        for directory in (tmp_path / "a", tmp_path / "a" / "b"):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        files = sorted((tmp_path / "a" / "b").iterdir())
        expected = (
            ["state.json"] if kind == "json" else ["state.db", "state.db-shm", "state.db-wal"]
        )
        assert [f.name for f in files] == expected  # (SQLite's files while it is open)
        for f in files:
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        s.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755  # an existing directory is left alone


# ----------------------------------------------------------------------------- threads


def test_concurrent_saves_of_different_keys_all_arrive(
    kind: str, path: Path, store: JsonFileStore | SqliteStore
) -> None:
    threads, rounds = 8, 40
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def device(index: int) -> None:
        try:
            start.wait(BOUND)
            for n in range(rounds):
                store.save(f"device-{index}", {"device": index, "n": n, "pad": "x" * 200})
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    workers = [threading.Thread(target=device, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(BOUND)
    assert not any(w.is_alive() for w in workers) and errors == []
    for i in range(threads):
        expected = {"device": i, "n": rounds - 1, "pad": "x" * 200}
        assert store.load(f"device-{i}") == expected
        assert fresh_load(kind, path, f"device-{i}") == expected
    assert store.writes <= threads * rounds


class GatedJsonStore(JsonFileStore):
    """A JsonFileStore whose writes wait at a gate, so a test can line saves up behind one.

    The write itself is the real one, to the real file.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def _write(self, document: dict[str, bytes], changed: dict[str, bytes]) -> None:
        self.entered.set()
        assert self.gate.wait(BOUND)
        super()._write(document, changed)


class GatedSqliteStore(SqliteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def _write(self, document: dict[str, bytes], changed: dict[str, bytes]) -> None:
        self.entered.set()
        assert self.gate.wait(BOUND)
        super()._write(document, changed)


def gated(kind: str, path: Path) -> GatedJsonStore | GatedSqliteStore:
    return GatedJsonStore(path) if kind == "json" else GatedSqliteStore(path)


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.001)


def _run(target: Any, *args: Any) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def body() -> None:
        try:
            target(*args)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    return thread, errors


def test_saves_that_arrive_during_a_write_are_committed_together_by_the_next(
    kind: str, path: Path
) -> None:
    s = gated(kind, path)
    s.gate.set()
    s.save("seed", {"n": 0})  # the first write (also creates the file)
    s.gate.clear()
    s.entered.clear()
    first, first_errors = _run(s.save, "a", {"n": 1})
    assert s.entered.wait(BOUND)  # "a" is being written, and holds the writer role
    others = [_run(s.save, key, {"n": 2}) for key in ("b", "c", "d")]
    wait_until(lambda: len(s._open_batch.entries) == 3, "b, c and d wait in the open batch")
    assert s.load("b") is None  # not on disk yet, so not loadable either
    s.gate.set()
    for thread, errors in [(first, first_errors), *others]:
        thread.join(BOUND)
        assert not thread.is_alive() and errors == []
    assert s.writes == 3  # seed, a, then b + c + d in one write
    for key, n in {"seed": 0, "a": 1, "b": 2, "c": 2, "d": 2}.items():
        assert fresh_load(kind, path, key) == {"n": n}
    s.close()


def test_a_failed_write_fails_every_save_of_its_batch_and_changes_nothing(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "state"
    s = GatedJsonStore(directory / "state.json")
    s.gate.set()
    s.save("a", {"n": 0})
    s.gate.clear()
    s.entered.clear()
    first, first_errors = _run(s.save, "a", {"n": 1})
    assert s.entered.wait(BOUND)
    second, second_errors = _run(s.save, "b", {"n": 1})
    third, third_errors = _run(s.save, "c", {"n": 1})
    wait_until(lambda: len(s._open_batch.entries) == 2, "b and c wait in the open batch")
    # Make every write fail for real: the directory becomes a file.
    directory.rename(tmp_path / "moved")
    directory.write_text("not a directory")
    s.gate.set()
    for thread in (first, second, third):
        thread.join(BOUND)
    # Each write finds a file where its directory should be, and cannot create it.
    assert [type(e[0]) for e in (first_errors, second_errors, third_errors)] == [
        FileExistsError
    ] * 3
    assert second_errors[0] is third_errors[0]  # one write, one error, every waiter sees it
    assert s.load("a") == {"n": 0} and s.load("b") is None  # what is on disk, unchanged
    assert s.writes == 1
    directory.unlink()
    (tmp_path / "moved").rename(directory)
    s.save("b", {"n": 2})
    assert fresh_load("json", directory / "state.json", "a") == {"n": 0}
    assert fresh_load("json", directory / "state.json", "b") == {"n": 2}


# ----------------------------------------------------------------------------- problems


def test_problems_are_kept_until_a_reporter_is_bound_then_delivered() -> None:
    s = MemoryStore()
    first = StoreProblem(StoreCorrupt("one"))
    second = StoreProblem(StoreCorrupt("two"), "k", {"a": 1})
    s.report_problem(first)
    s.report_problem(second)
    received: list[StoreProblem] = []
    s.bind_reporter(received.append)
    assert received == [first, second]
    third = StoreProblem(StoreCorrupt("three"))
    s.report_problem(third)
    assert received == [first, second, third]
    s.bind_reporter(None)
    s.report_problem(first)
    assert len(received) == 3
    s.bind_reporter(received.append)
    assert received[-1] is first


def test_problems_kept_are_bounded_and_the_rest_counted(caplog: pytest.LogCaptureFixture) -> None:
    s = MemoryStore()
    for i in range(150):
        s.report_problem(StoreProblem(StoreCorrupt(str(i))))
    received: list[StoreProblem] = []
    with caplog.at_level(logging.WARNING, logger="agent.stores"):
        s.bind_reporter(received.append)
    assert len(received) == 100 and str(received[0].error) == "0"
    assert "50 store problems" in caplog.text


def test_a_broken_reporter_is_logged_and_does_not_break_the_store(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = MemoryStore()

    def broken(problem: StoreProblem) -> None:
        raise RuntimeError("reporter is broken")

    s.bind_reporter(broken)
    with caplog.at_level(logging.ERROR, logger="agent.stores"):
        s.report_problem(StoreProblem(StoreCorrupt("x")))
    assert "reporter failed" in caplog.text and "reporter is broken" in caplog.text


def test_store_problems_have_error_types_for_the_payload() -> None:
    assert STORE_ERROR_TYPES[StoreCorrupt] == "store_corrupt"
    assert STORE_ERROR_TYPES[StoreSaveFailed] == "store_save_failed"


# ----------------------------------------------------------------------------- corrupt files


CORRUPT_JSON = {
    "empty": b"",
    "garbage": b"\x00\x13garbage\xfe",
    "truncated": b'{\n"a": {"n":1},\n"b": {"n"',
    "array": b"[1, 2]",
    "entry not an object": b'{"a": {"n": 1}, "b": 5}',
    "NaN": b'{"a": {"x": NaN}}',
    "not UTF-8": b'{"a": {"x": "\xff"}}',
    "two documents": b'{"a": {}}\n{"b": {}}',
}


def _aside(path: Path) -> list[Path]:
    """Files moved aside (an SQLite file's -wal/-shm follow it, named so that ``sqlite3``
    opens the set: ``state.db.corrupt-<stamp>-wal``)."""
    found = path.parent.glob(path.name + ".corrupt-*")
    return sorted(p for p in found if not p.name.endswith(("-wal", "-shm")))


@pytest.mark.parametrize("content", CORRUPT_JSON.values(), ids=CORRUPT_JSON.keys())
def test_a_corrupt_json_file_is_moved_aside_reported_and_treated_as_empty(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    s = JsonFileStore(path)
    with caplog.at_level(logging.ERROR, logger="agent.stores"):
        assert s.load("a") is None  # never an exception at start-up
    (aside,) = _aside(path)
    assert aside.read_bytes() == content  # kept, byte for byte
    assert aside.name.startswith("state.json.corrupt-") and aside.name.endswith("Z")
    assert not path.exists()
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert str(path) in record.getMessage() and str(aside) in record.getMessage()
    problems = collecting(s)  # bound after the problem was found: delivered now
    (problem,) = problems
    assert isinstance(problem.error, StoreCorrupt) and problem.key is None
    assert problem.details["path"] == str(path) and problem.details["moved_to"] == str(aside)
    assert problem.details["reason"] and problem.details["size"] == len(content)
    s.save("a", {"n": 2})
    assert json.loads(path.read_text()) == {"a": {"n": 2}}
    assert _aside(path) == [aside]  # nothing more moved


def test_two_corrupt_files_in_the_same_second_both_kept(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    for content in (b"first", b"second"):
        path.write_bytes(content)
        assert JsonFileStore(path).load("a") is None
    assert sorted(p.read_bytes() for p in _aside(path)) == [b"first", b"second"]


def _real_database(path: Path) -> bytes:
    s = SqliteStore(path)
    for i in range(50):
        s.save(f"k{i}", {"pad": "y" * 500})
    s.close()
    return path.read_bytes()


CORRUPT_SQLITE = {
    "text": lambda _: b"this is not a database, it is text\n" * 50,
    "zeros": lambda _: bytes(8192),
    "a few bytes": lambda _: b"SQL",
    "damaged pages": lambda real: real[:100] + b"\xa5" * (len(real) - 100),
}


@pytest.mark.parametrize("make", CORRUPT_SQLITE.values(), ids=CORRUPT_SQLITE.keys())
def test_a_file_that_is_not_a_database_is_moved_aside_reported_and_treated_as_empty(
    tmp_path: Path, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    content = make(_real_database(tmp_path / "real.db"))
    path.write_bytes(content)
    wal = tmp_path / "state.db-wal"
    wal.write_bytes(b"an old log that belongs to the damaged file")
    s = SqliteStore(path)
    with caplog.at_level(logging.ERROR, logger="agent.stores"):
        assert s.load("k1") is None
    aside = _aside(path)
    assert [p.read_bytes() for p in aside] == [content]
    assert str(path) in caplog.text and str(aside[0]) in caplog.text
    if not content.startswith(b"SQLite format 3"):
        # Refused before SQLite opened it, so SQLite could not discard the log beside it.
        assert Path(f"{aside[0]}-wal").read_bytes().startswith(b"an old log")
    (problem,) = collecting(s)
    assert isinstance(problem.error, StoreCorrupt) and problem.details["moved_to"] == str(aside[0])
    s.save("k1", {"n": 1})
    s.close()
    assert fresh_load("sqlite", path, "k1") == {"n": 1}


def test_a_database_row_that_is_not_a_json_object_is_renamed_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    s = SqliteStore(path)
    s.save("good", {"n": 1})
    s.save("bad", {"n": 1})
    s.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE store SET data = '{\"n\": NaN' WHERE key = 'bad'")
    conn.commit()
    conn.close()
    s = SqliteStore(path)
    with caplog.at_level(logging.ERROR, logger="agent.stores"):
        assert s.load("bad") is None
    assert s.load("good") == {"n": 1}
    (problem,) = collecting(s)
    assert isinstance(problem.error, StoreCorrupt) and problem.key == "bad"
    moved = str(problem.details["moved_to"])
    assert moved.startswith("bad.corrupt-") and "'bad'" in caplog.text
    s.save("bad", {"n": 2})
    s.close()
    conn = sqlite3.connect(path)
    rows = dict(conn.execute("SELECT key, data FROM store").fetchall())
    conn.close()
    assert rows == {"good": '{"n":1}', "bad": '{"n":2}', moved: '{"n": NaN'}


# ----------------------------------------------------------------------------- SQLite setup


def test_sqlite_runs_wal_with_synchronous_full_and_a_versioned_schema(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "state.db", busy_timeout=1.5)
    s.save("k", {"n": 1})
    conn = s._conn
    assert conn is not None
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SqliteStore.SCHEMA_VERSION == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 1500
    s.close()


def test_a_database_of_a_newer_schema_is_refused_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    s = SqliteStore(path)
    s.save("k", {"n": 1})
    s.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    with pytest.raises(StoreError, match="schema version 2"):
        SqliteStore(path).load("k")
    assert _aside(path) == []
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT data FROM store").fetchall() == [('{"n":1}',)]
    conn.close()


def test_sqlite_refuses_a_negative_busy_timeout(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="busy_timeout"):
        SqliteStore(tmp_path / "x.db", busy_timeout=-1)


# ----------------------------------------------------------------------------- leftovers


def test_temporary_files_of_dead_writers_are_removed_at_the_first_read(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    JsonFileStore(path).save("a", {"n": 1})
    dead = tmp_path / ".state.json.tmp-999999999-00000000"  # above any pid_max
    live = tmp_path / f".state.json.tmp-{os.getpid()}-00000000"
    other = tmp_path / ".other.json.tmp-999999999-00000000"
    for leftover in (dead, live, other):
        leftover.write_text("half a write")
    assert JsonFileStore(path).load("a") == {"n": 1}
    assert not dead.exists()
    assert live.exists() and other.exists()  # a live writer's, and another file's


def test_repr_names_the_file(tmp_path: Path) -> None:
    assert (
        repr(JsonFileStore(tmp_path / "s.json")) == f"JsonFileStore({str(tmp_path / 's.json')!r})"
    )
    assert repr(SqliteStore(tmp_path / "s.db")) == f"SqliteStore({str(tmp_path / 's.db')!r})"
    assert JsonFileStore("relative.json").path.is_absolute()


@pytest.mark.parametrize("kind", KINDS)
def test_the_reporter_is_never_called_with_the_store_locked(kind: str, tmp_path: Path) -> None:
    """A hook may use the store (it would deadlock if called under the store's lock)."""
    path = tmp_path / file_name(kind)
    path.write_bytes(b"garbage")
    s = make_store(kind, path)
    seen: list[object] = []
    s.bind_reporter(lambda problem: seen.append(s.load("other")))
    loader = threading.Thread(target=s.load, args=("k",), daemon=True)
    loader.start()
    loader.join(BOUND)
    assert not loader.is_alive() and seen == [None]
    s.close()


def test_a_closed_store_reopens_when_used_again(
    kind: str, path: Path, store: JsonFileStore | SqliteStore
) -> None:
    store.save("a", {"n": 1})
    store.close()
    store.save("a", {"n": 2})
    assert store.load("a") == {"n": 2}
    store.close()
    assert fresh_load(kind, path, "a") == {"n": 2}
