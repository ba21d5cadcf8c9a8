"""DeviceStore (dirty tracking, failure streaks), the save policies and the runtime's calls."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from store_helpers import KINDS, collecting, file_name, make_store

from agent.persist import (
    AllPolicy,
    AnyPolicy,
    DeviceStore,
    PersistPolicy,
    SaveOnChange,
    SaveOnPublish,
    SaveOnShutdown,
    check_policy,
    save_after_cycle,
    save_at_shutdown,
)
from agent.stores import (
    JsonFileStore,
    MemoryStore,
    NullStore,
    StoreProblem,
    StoreSaveFailed,
    UnstorableData,
)

# ----------------------------------------------------------------------------- mapping


def test_a_device_store_is_a_dict_of_json_values_loaded_on_first_use() -> None:
    backend = MemoryStore({"meter": {"n": 1, "nested": {"a": [1]}}})
    store = DeviceStore(backend, "meter")
    assert not store.loaded
    assert store["n"] == 1  # the first access loads
    assert store.loaded and len(store) == 2 and set(store) == {"n", "nested"}
    assert store.get("missing", 5) == 5 and "n" in store
    store.update(m=2)
    store.setdefault("o", [])
    del store["n"]
    assert store.to_dict() == {"nested": {"a": [1]}, "m": 2, "o": []}
    assert store == {"nested": {"a": [1]}, "m": 2, "o": []}
    assert repr(store).startswith("DeviceStore('meter', {")
    assert repr(DeviceStore(backend, "other")) == "DeviceStore('other', not loaded)"


def test_a_key_never_saved_loads_empty_and_clean() -> None:
    backend = MemoryStore()
    store = DeviceStore(backend, "meter")
    store.load()
    assert dict(store) == {} and not store.dirty
    assert store.save() is True and backend.writes == 0  # nothing to write


def test_to_dict_is_a_deep_copy() -> None:
    store = DeviceStore(MemoryStore(), "meter")
    store["nested"] = {"a": [1]}
    copy = store.to_dict()
    copy["nested"]["a"].append(2)
    assert store["nested"] == {"a": [1]}


def test_load_replaces_unsaved_changes_with_what_is_stored() -> None:
    backend = MemoryStore({"meter": {"n": 1}})
    store = DeviceStore(backend, "meter")
    store["n"] = 2
    store.load()
    assert store["n"] == 1 and not store.dirty


def test_setting_a_value_json_cannot_hold_fails_on_that_line() -> None:
    store = DeviceStore(MemoryStore(), "meter")
    with pytest.raises(UnstorableData, match=r"'meter'.*'reading\.raw\[1\]'.*a tuple") as caught:
        store["reading"] = {"raw": [1, (2, 3)]}
    assert caught.value.path == "reading.raw[1]"
    with pytest.raises(UnstorableData, match="nan"):
        store["t"] = float("nan")
    with pytest.raises(TypeError, match="keys are str"):
        store[1] = 1  # type: ignore[index]
    assert dict(store) == {}  # nothing of it was kept


def test_constructor_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="not a store"):
        DeviceStore(object(), "k")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        DeviceStore(MemoryStore(), "")


# ----------------------------------------------------------------------------- dirty


def test_dirty_follows_the_content_nested_changes_included() -> None:
    backend = MemoryStore({"meter": {"log": [1], "cfg": {"a": 1}}})
    store = DeviceStore(backend, "meter")
    assert not store.dirty
    store["log"].append(2)  # nested: no __setitem__ sees it
    assert store.dirty
    assert store.save() is True
    assert backend.as_dict() == {"meter": {"log": [1, 2], "cfg": {"a": 1}}}
    assert not store.dirty
    store["cfg"]["a"] = 2
    assert store.dirty
    store["cfg"]["a"] = 1  # changed back: nothing to save
    assert not store.dirty
    writes = backend.writes
    assert store.save() is True and backend.writes == writes  # unchanged: writes nothing


def test_mark_dirty_forces_the_next_save_to_write(tmp_path: Path) -> None:
    backend = JsonFileStore(tmp_path / "state.json")
    store = DeviceStore(backend, "meter")
    store["n"] = 1
    store.save()
    (tmp_path / "state.json").unlink()  # say somebody removed the file
    assert not store.dirty
    store.mark_dirty()
    assert store.dirty
    assert store.save() is True
    assert JsonFileStore(tmp_path / "state.json").load("meter") == {"n": 1}
    assert not store.dirty


@pytest.mark.parametrize("kind", KINDS)
def test_a_save_writes_only_when_something_changed(kind: str, tmp_path: Path) -> None:
    backend = make_store(kind, tmp_path / file_name(kind))
    store = DeviceStore(backend, "meter")
    store["n"] = 1
    assert store.save() is True and backend.writes == 1
    for _ in range(5):
        assert store.save() is True
    store["n"] = 1  # set to the same value: not a change
    assert store.save() is True and backend.writes == 1
    store["n"] = 2
    assert store.save() is True and backend.writes == 2
    backend.close()


def test_a_foreign_store_gets_plain_dicts_and_its_own_reporter() -> None:
    class DictStore:
        """A minimal store of a user's: just load and save."""

        def __init__(self) -> None:
            self.data: dict[str, dict[str, Any]] = {"meter": {"n": 1}}

        def load(self, key: str) -> dict[str, Any] | None:
            return self.data.get(key)

        def save(self, key: str, data: dict[str, Any]) -> None:
            if data.get("fail"):
                raise OSError(28, "No space left on device")
            self.data[key] = data

    backend = DictStore()
    problems: list[StoreProblem] = []
    store = DeviceStore(backend, "meter", on_problem=problems.append)
    assert store["n"] == 1
    store["n"] = 2
    assert store.save() is True and backend.data == {"meter": {"n": 2}}
    store["fail"] = True
    assert store.save() is False and len(problems) == 1
    assert "No space left" in str(problems[0].error)


# ----------------------------------------------------------------------------- failures


def _blocked(tmp_path: Path) -> tuple[Path, Path]:
    """A store path whose directory is a *file*: every write fails (ENOTDIR/EEXIST), for
    root as for anyone. Removing the file lets writes through again."""
    blocker = tmp_path / "state"
    blocker.write_text("I am a file, not a directory")
    return blocker, blocker / "state.json"


def test_a_failing_save_keeps_the_state_reports_once_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker, path = _blocked(tmp_path)
    backend = JsonFileStore(path)
    problems = collecting(backend)
    store = DeviceStore(backend, "valve")
    store["position"] = 1
    with caplog.at_level(logging.DEBUG, logger="agent.persist"):
        assert store.save() is False  # the device keeps running: no exception
        store["position"] = 2
        assert store.save() is False
        assert store.save() is False
    assert store["position"] == 2 and store.dirty  # kept, and still to be saved
    assert store.failures.count == 3 and isinstance(store.failures.last_error, OSError)
    (problem,) = problems  # one report for the whole streak
    assert isinstance(problem.error, StoreSaveFailed) and problem.key == "valve"
    assert isinstance(problem.error.__cause__, OSError)
    assert problem.details["store"] == repr(backend) and problem.details["exception"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "'valve'" in errors[0].getMessage()
    assert str(path) in errors[0].getMessage()  # the store's repr names the file
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG]) == 2
    caplog.clear()
    blocker.unlink()
    with caplog.at_level(logging.INFO, logger="agent.persist"):
        assert store.save() is True
    (info,) = [r for r in caplog.records if r.levelno == logging.INFO]
    assert "works again" in info.getMessage() and "after 3 failed attempts" in info.getMessage()
    assert not store.dirty and store.failures.count == 0 and store.failures.last_error is None
    assert JsonFileStore(path).load("valve") == {"position": 2}
    # A new streak is reported again.
    blocker_dir = path.parent
    path.unlink()
    blocker_dir.rmdir()
    blocker_dir.write_text("blocked again")
    store["position"] = 3
    assert store.save() is False and len(problems) == 2


def test_nested_content_json_cannot_hold_fails_the_save_and_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = MemoryStore()
    problems = collecting(backend)
    store = DeviceStore(backend, "meter")
    store["readings"] = []
    store["readings"].append(float("inf"))  # nested: only the save can see it
    with caplog.at_level(logging.ERROR, logger="agent.persist"):
        assert store.save() is False
    assert store.dirty and backend.writes == 0
    (problem,) = problems
    assert "'readings[0]'" in str(problem.error) and "inf" in str(problem.error)
    assert isinstance(problem.error.__cause__, UnstorableData)
    store["readings"][0] = 1.5
    assert store.save() is True and backend.as_dict() == {"meter": {"readings": [1.5]}}


def test_content_changed_back_during_a_streak_ends_it(tmp_path: Path) -> None:
    _, path = _blocked(tmp_path)
    store = DeviceStore(JsonFileStore(path), "valve")
    store.load()
    store["position"] = 1
    assert store.save() is False
    del store["position"]  # back to what is stored ({}): nothing left to save
    assert store.save() is True and store.failures.count == 0


def test_a_broken_reporter_does_not_stop_the_device(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, path = _blocked(tmp_path)

    def broken(problem: StoreProblem) -> None:
        raise RuntimeError("broken reporter")

    store = DeviceStore(JsonFileStore(path), "valve", on_problem=broken)
    store["position"] = 1
    with caplog.at_level(logging.ERROR):
        assert store.save() is False
    assert "reporter failed" in caplog.text


# ----------------------------------------------------------------------------- policies


def _store(dirty: bool) -> DeviceStore:
    store = DeviceStore(MemoryStore({"d": {"n": 0}}), "d")
    if dirty:
        store["n"] = 1
    return store


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # (dirty, published): clean/not, clean/published, dirty/not, dirty/published
        (SaveOnPublish(), [False, True, False, True]),
        (SaveOnChange(), [False, False, True, True]),
        (SaveOnShutdown(), [False, False, False, False]),
        (SaveOnPublish() | SaveOnChange(), [False, True, True, True]),
        (SaveOnPublish() & SaveOnChange(), [False, False, False, True]),
        (SaveOnShutdown() | SaveOnPublish(), [False, True, False, True]),
    ],
    ids=repr,
)
def test_policies_decide_from_dirty_and_published(
    policy: PersistPolicy, expected: list[bool]
) -> None:
    cases = [(False, False), (False, True), (True, False), (True, True)]
    assert [policy.should_save(_store(d), p) for d, p in cases] == expected
    assert isinstance(policy, PersistPolicy)


def test_compositions_flatten_ask_everyone_and_show_themselves() -> None:
    asked: list[str] = []

    class Counting:
        def __init__(self, name: str, vote: bool) -> None:
            self.name, self.vote = name, vote

        def should_save(self, store: DeviceStore, published: bool) -> bool:
            asked.append(self.name)
            return self.vote

        def __repr__(self) -> str:
            return self.name

    policy = Counting("a", True) | SaveOnChange() | Counting("b", False)
    assert isinstance(policy, AnyPolicy) and len(policy.children) == 3
    assert repr(policy) == "a | SaveOnChange() | b"
    assert policy.should_save(_store(False), False) is True
    assert asked == ["a", "b"]  # b asked even though a already said yes
    both = SaveOnPublish() & Counting("c", True) & SaveOnChange()
    assert isinstance(both, AllPolicy) and len(both.children) == 3
    assert repr(both) == "SaveOnPublish() & c & SaveOnChange()"


def test_only_policies_compose_and_register() -> None:
    with pytest.raises(TypeError, match="save policy"):
        SaveOnChange() | "often"  # type: ignore[operator]
    with pytest.raises(TypeError, match="save policy"):
        check_policy(lambda store, published: True)
    assert check_policy(SaveOnChange()) is not None
    with pytest.raises(ValueError, match="at least one"):
        AnyPolicy()


# ----------------------------------------------------------------------------- runtime calls


def test_without_a_policy_nothing_is_saved_after_a_cycle_but_all_at_shutdown() -> None:
    backend = MemoryStore()
    store = DeviceStore(backend, "meter")
    store["n"] = 1
    assert save_after_cycle(store, None, published=True) is False
    assert backend.writes == 0
    assert save_at_shutdown(store) is True
    assert backend.as_dict() == {"meter": {"n": 1}}


def test_save_after_cycle_follows_the_policy() -> None:
    backend = MemoryStore()
    store = DeviceStore(backend, "meter")
    store["n"] = 1
    assert save_after_cycle(store, SaveOnPublish(), published=False) is False
    assert backend.writes == 0
    assert save_after_cycle(store, SaveOnPublish(), published=True) is True
    assert backend.writes == 1
    store["n"] = 2
    assert save_after_cycle(store, SaveOnShutdown(), published=True) is False
    assert save_after_cycle(store, SaveOnChange(), published=False) is True
    assert backend.as_dict() == {"meter": {"n": 2}} and backend.writes == 2


def test_runtime_calls_never_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def should_save(self, store: DeviceStore, published: bool) -> bool:
            raise RuntimeError("policy bug")

    store = DeviceStore(MemoryStore(), "meter")
    store["n"] = 1
    with caplog.at_level(logging.ERROR):
        assert save_after_cycle(store, Broken(), published=True) is False
    assert "policy bug" in caplog.text
    _, path = _blocked(tmp_path)
    failing = DeviceStore(JsonFileStore(path), "meter")
    failing.load()
    failing["n"] = 1
    assert save_at_shutdown(failing) is False
    assert save_after_cycle(failing, SaveOnChange(), published=False) is False
    unreadable = tmp_path / "dir-as-file.json"
    unreadable.mkdir()  # a "file" that cannot be read: the lazy load fails
    assert save_at_shutdown(DeviceStore(JsonFileStore(unreadable), "meter")) is False
    assert "could not save" in caplog.text


def test_null_store_device_saves_succeed_and_keep_nothing() -> None:
    store = DeviceStore(NullStore(), "meter")
    store["n"] = 1
    assert store.save() is True
    store.load()
    assert dict(store) == {}
