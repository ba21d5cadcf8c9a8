"""Nothing lost when the process dies or the power goes.

1. **SIGKILL**, 200 times per file-backed store: a child saves an increasing counter with a
   payload of 3 kB as fast as it can and prints each counter once ``save()`` returned; the
   test kills it at a random moment, then loads the store: it must load without a problem
   report, the value must be whole, and never older than the last one printed.
   Children are forked by a warm "zygote" process (see store_crash_child.py), so a round
   costs milliseconds, not an interpreter start.

2. **Power loss**, for :class:`JsonFileStore`, in the manner of ALICE (store_crash_model.py):
   ``strace`` records one save, the model builds every state a crash could leave on disk
   (operations after the last fsync lost or reordered, writes partly persisted), and each
   state is written to a directory and loaded: the old value or the new one, never neither;
   and once the save returned, only the new one. The checker is checked too: it must catch
   a save without fsync (neither old nor new) and one without the directory fsync (not
   durable).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from store_crash_child import KEY, TRACE_BEGIN, TRACE_END, payload
from store_crash_model import CrashState, Op, materialise, states_of_trace
from store_helpers import (
    BOUND,
    CHILD,
    KINDS,
    LineReader,
    child_env,
    collecting,
    file_name,
    make_store,
    send,
    start_child,
    stop,
)

KILLS = 200


def _check_whole(value: dict[str, Any] | None, reported: int, context: str) -> int:
    """The loaded value is whole and not older than ``reported``; returns its counter."""
    if value is None:
        assert reported == 0, f"nothing loaded, but {reported} was saved ({context})"
        return 0
    n = value["n"]
    assert value == {"n": n, "payload": payload(n)}, f"a torn value ({context})"
    assert n >= reported, f"loaded {n}, but {reported} had been saved ({context})"
    return int(n)


@pytest.mark.parametrize("kind", KINDS)
def test_sigkill_at_random_moments_never_loses_a_returned_save(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "store" / file_name(kind)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    zygote = start_child("zygote", kind, str(path))
    assert zygote.stdout is not None
    lines = LineReader(zygote.stdout)
    loaded = 0  # the counter the store held after the previous kill
    stats = {"saves": 0, "loaded one more than printed": 0}
    if kind == "json":
        stats["left a temporary file"] = 0  # killed between creating it and the rename
    started = time.perf_counter()
    try:
        for round_ in range(KILLS):
            context = f"{kind}, round {round_}, seed {seed}"
            send(zygote, "go")
            pid = start = None
            printed: list[int] = []
            wanted = rng.randrange(5)  # saves to let through before the kill
            while pid is None or start is None or len(printed) < wanted:
                word, number = lines.readline().split()
                if word == "child":
                    pid = int(number)
                elif word == "start":
                    start = int(number)
                else:
                    printed.append(int(number))
            # The kill lands anywhere in a save: a random spin of up to 2 ms (a save takes
            # about one), on top of the random number of saves let through.
            spin_until = time.perf_counter() + rng.uniform(0, 0.002)
            while time.perf_counter() < spin_until:
                pass
            os.kill(pid, signal.SIGKILL)
            send(zygote, f"reap {pid}")
            while True:
                word, *rest = lines.readline().split()
                if word == "reaped":
                    status = int(rest[1])
                    break
                printed.append(int(rest[0]))  # printed before it died
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, context
            assert start == loaded, f"the child started from {start}, not {loaded} ({context})"
            reported = printed[-1] if printed else start
            if kind == "json" and any(path.parent.glob(".*.tmp-*")):
                stats["left a temporary file"] += 1
            store = make_store(kind, path)
            problems = collecting(store)
            try:
                value = store.load(KEY)
            finally:
                store.close()
            assert problems == [], context
            loaded = _check_whole(value, reported, context)
            stats["loaded one more than printed"] += loaded == reported + 1
            stats["saves"] += len(printed)
        send(zygote, "quit")
        assert zygote.wait(BOUND) == 0
    finally:
        stop(zygote)
    elapsed = time.perf_counter() - started
    assert not list(path.parent.glob("*.corrupt-*"))
    # Evidence that the kills hit saves in progress, not only the gaps between them (each
    # happens in a fifth of the rounds or more: 200 rounds without one would be a 1e-19).
    if kind == "json":
        assert stats["left a temporary file"] > 0, stats
    else:
        assert stats["loaded one more than printed"] > 0, stats
    print(f"\n{kind}: {KILLS} kills in {elapsed:.2f} s, seed {seed}, {stats}")


# --------------------------------------------------------------------------- ALICE


@dataclass(frozen=True)
class Traced:
    ops: list[Op]
    states: list[CrashState]  # a crash at any point of the save
    returned: list[CrashState]  # a crash after the save returned
    directory: Path  # where the traced save wrote


def _trace(mode: str, tmp_path: Path) -> Traced:
    """Run one save of ``mode`` (store_crash_child.py) under strace and model it."""
    strace = shutil.which("strace")
    assert strace, "strace is needed (Debian: apt-get install strace)"
    directory = tmp_path / "store"
    trace = tmp_path / "trace.txt"
    # -y names the file behind each descriptor (SQLite's were opened before the trace).
    command = [strace, "-f", "-qq", "-y", "-e", "trace=file,desc", "-xx", "-s", "10000000"]
    command += ["-o", str(trace), sys.executable, str(CHILD), "trace", mode]
    name = "state.db" if mode.startswith("sqlite") else "state.json"
    subprocess.run([*command, str(directory / name)], env=child_env(), check=True, timeout=60)
    initial = Path(f"{directory}.initial")
    ops, states, returned = states_of_trace(
        trace.read_text(), TRACE_BEGIN, TRACE_END, initial, directory
    )
    return Traced(ops, states, returned, directory)


def _load_state(
    state: CrashState, traced: Path, where: Path, kind: str = "json"
) -> tuple[Any, list[Any]]:
    """Materialise ``state`` under ``where`` and load it like the agent at start-up."""
    materialise(state, traced, where)
    store = make_store(kind, where / file_name(kind))
    problems = collecting(store)
    try:
        return store.load(KEY), problems
    finally:
        store.close()


OLD = {"n": 1, "payload": payload(1)}
NEW = {"n": 2, "payload": payload(2)}


@pytest.mark.parametrize(
    ("mode", "kind", "before"),
    [("store", "json", OLD), ("store-first", "json", None), ("sqlite", "sqlite", OLD)],
)
def test_every_crash_state_of_a_traced_save_loads_the_old_or_the_new_value(
    mode: str, kind: str, before: dict[str, Any] | None, tmp_path: Path
) -> None:
    traced = _trace(mode, tmp_path)
    kinds = [op.kind for op in traced.ops]
    if kind == "json":  # the protocol of ADR-007, as the kernel saw it
        assert kinds == ["creat", "write", "fsync-file", "rename", "fsync-dir"]
        assert len(traced.states) >= 5
    else:  # a commit appends frames to the WAL and syncs it; the database is not touched
        assert kinds[-1] == "fsync-file" and set(kinds[:-1]) == {"write"}
        assert {op.inode for op in traced.ops} == {traced.ops[-1].inode}
        assert len(traced.states) >= 20
    for i, state in enumerate(traced.states):
        value, problems = _load_state(state, traced.directory, tmp_path / f"state-{i}", kind)
        assert value in (before, NEW), state.how
        assert problems == [], state.how
    assert traced.returned  # at least the state with everything persisted
    for i, state in enumerate(traced.returned):
        value, _ = _load_state(state, traced.directory, tmp_path / f"returned-{i}", kind)
        assert value == NEW, f"a returned save was lost: {state.how}"


def test_the_checker_catches_a_save_without_fsync(tmp_path: Path) -> None:
    traced = _trace("unsafe", tmp_path)
    bad = []
    for i, state in enumerate(traced.states):
        value, problems = _load_state(state, traced.directory, tmp_path / f"state-{i}")
        if value not in (OLD, NEW) or problems:
            bad.append(state.how)
    assert bad, "the model found no crash state that loses both values"


@pytest.mark.parametrize(("mode", "kind"), [("no-dir-fsync", "json"), ("sqlite-normal", "sqlite")])
def test_the_checker_catches_a_save_that_is_not_durable(
    mode: str, kind: str, tmp_path: Path
) -> None:
    """Without the directory fsync (JSON), or with SQLite's ``synchronous=NORMAL``, every
    crash state is still old-or-new, but a save that returned can be lost."""
    traced = _trace(mode, tmp_path)
    kinds = [op.kind for op in traced.ops]
    assert "fsync-dir" not in kinds and (kind == "json" or "fsync-file" not in kinds)
    if kind == "json":  # (SQLite's consistency is the test above)
        for i, state in enumerate(traced.states):
            value, problems = _load_state(state, traced.directory, tmp_path / f"state-{i}")
            assert value in (OLD, NEW) and not problems, state.how  # consistent...
    values = [
        _load_state(state, traced.directory, tmp_path / f"returned-{i}", kind)[0]
        for i, state in enumerate(traced.returned)
    ]
    assert OLD in values  # ...but not durable: the last step was not synced
