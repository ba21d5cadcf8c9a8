"""Stores in the running app: injection, one DeviceStore per device, save policies, saving at
shutdown, and failures reported over MQTT. Fake clock, mock MQTT, real stores."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from test_runtime import BOUND, Running

from agent import (
    App,
    DeviceContext,
    DeviceStore,
    JsonFileStore,
    MemoryStore,
    SaveOnChange,
    SaveOnPublish,
    SaveOnShutdown,
)
from agent.testing import FakeClock


def test_one_store_object_in_init_every_call_and_every_kind_of_device() -> None:
    backend = MemoryStore({"meter": {"n": 41}})
    app = App("demo", store=backend)
    seen: dict[str, list[int]] = {"init": [], "meter": [], "valve": [], "blind": []}

    class Counter:
        def __init__(self, store: DeviceStore) -> None:
            seen["init"].append(id(store))

    def init(store: DeviceStore) -> Counter:
        return Counter(store)

    @app.telemetry("meter", interval=1, init=init)
    def meter(store: DeviceStore, counter: Counter) -> dict:
        seen["meter"].append(id(store))
        store["n"] = store.get("n", 0) + 1
        return {"n": store["n"]}

    @app.command("valve")
    def valve(payload: str, store: DeviceStore) -> None:
        seen["valve"].append(id(store))
        store["position"] = payload
        assert store.save()  # synchronous: stored when it returns

    @app.device("blind")
    def blind(ctx: DeviceContext, store: DeviceStore) -> None:
        seen["blind"].append(id(store))
        store["moves"] = 1
        while not ctx.shutdown_requested:
            ctx.sleep(100)

    with Running(app) as r:
        r.until(lambda: r.states("demo/meter/state"), "the first reading")
        r.clock.wait_for_waiters(4, timeout=BOUND)
        r.clock.advance(1)
        r.until(lambda: len(r.states("demo/meter/state")) == 2, "the second reading")
        r.mqtt.deliver("demo/valve/set", "open")
        r.until(lambda: backend.load("valve") == {"position": "open"}, "the valve's save")
        assert backend.load("meter") == {"n": 41}  # no persist=: not saved during the run
    assert [s["n"] for s in r.states("demo/meter/state")] == [42, 43]  # loaded before init
    assert len(set(seen["init"] + seen["meter"])) == 1  # one object, init and every call
    assert backend.load("meter") == {"n": 43}  # saved at shutdown, on its thread
    assert backend.load("blind") == {"moves": 1}
    assert app.device_stores is not None
    assert app.device_stores.for_device(app.registry.get("meter")) is not None  # type: ignore[arg-type]


class CountingStore:
    """A plain Store (the Protocol only: load and save), recording every save."""

    def __init__(self) -> None:
        self.data: dict[str, dict] = {}
        self.saves: list[dict] = []

    def load(self, key: str) -> dict | None:
        return json.loads(json.dumps(self.data[key])) if key in self.data else None

    def save(self, key: str, data: dict) -> None:
        self.data[key] = json.loads(json.dumps(data))
        self.saves.append({key: self.data[key]})


@pytest.mark.parametrize(
    ("policy", "during_run", "expected"),
    [
        # readings 1, 1, 2, None (changes the store), 2; OnChange publishes 1 and 2
        (SaveOnPublish(), 2, [1, 2, 3]),  # after cycles 1 and 3; shutdown saves cycle 4's
        (SaveOnChange(), 3, [1, 2, 3]),  # after cycles 1, 3 and 4: those changed the store
        (SaveOnShutdown(), 0, [3]),  # once, at shutdown
    ],
)
def test_save_policies(policy: object, during_run: int, expected: list[int]) -> None:
    from agent import OnChange

    backend = CountingStore()
    app = App("demo", store=backend)
    values = iter([1, 1, 2, None, 2])
    cycles = [0]

    @app.telemetry("t", interval=1, publish=OnChange(), persist=policy)  # type: ignore[arg-type]
    def t(store: DeviceStore) -> dict | None:
        cycles[0] += 1
        value = next(values)
        store["cycles"] = store.get("cycles", 0) + (1 if value is None else 0)
        if value is None:
            return None
        store["last"] = value
        return {"v": value}

    with Running(app) as r:
        for second in range(1, 5):
            r.clock.wait_for_waiters(2, timeout=BOUND)
            r.clock.advance(1)
            r.until(lambda s=second: len(r.mqtt.get_messages_for("demo/t/availability")) and
                    r.clock.waiters >= 2 and cycles[0] == s + 1, f"cycle {second}")  # fmt: skip
        r.clock.wait_for_waiters(2, timeout=BOUND)
        assert len(backend.saves) == during_run
    saved = [s["t"].get("last", 0) + s["t"].get("cycles", 0) for s in backend.saves]
    assert saved == expected, backend.saves


def test_nothing_changed_nothing_written() -> None:
    backend = CountingStore()
    app = App("demo", store=backend)

    @app.telemetry("t", interval=1, persist=SaveOnPublish())
    def t(store: DeviceStore) -> dict:
        store["constant"] = 1
        return {"v": 1}

    with Running(app) as r:
        r.until(lambda: backend.saves, "the first save")
        for _ in range(3):
            r.clock.wait_for_waiters(2, timeout=BOUND)
            r.clock.advance(1)
        r.clock.wait_for_waiters(2, timeout=BOUND)
    assert len(backend.saves) == 1  # published four times, stored once


def test_a_store_needs_an_app_with_a_store() -> None:
    app = App("demo")
    with pytest.raises(ValueError, match="parameter 'store' asks for a DeviceStore"):

        @app.command("valve")
        def valve(store: DeviceStore) -> None: ...

    with pytest.raises(ValueError, match="persist="):
        app.add_telemetry("t", lambda: {}, interval=1, persist=SaveOnChange())

    with_store = App("demo", store=MemoryStore())
    with pytest.raises(ValueError, match="persist= takes a save policy"):
        with_store.add_telemetry("t", lambda: {}, interval=1, persist="always")  # type: ignore[arg-type]


def test_failing_saves_are_reported_once_per_streak_and_the_device_goes_on(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "state"
    backend = JsonFileStore(directory / "state.json")
    app = App("demo", store=backend)
    broken = threading.Event()

    @app.telemetry("t", interval=1, persist=SaveOnChange())
    def t(store: DeviceStore, clock: FakeClock) -> dict:
        store["at"] = clock.now()
        return {"at": clock.now()}

    original = backend._save_encoded

    def save_encoded(*args: object, **kwargs: object) -> None:
        if broken.is_set():
            raise OSError(28, "No space left on device")
        original(*args, **kwargs)  # type: ignore[arg-type]

    backend._save_encoded = save_encoded  # type: ignore[method-assign]
    with Running(app) as r:
        r.until(lambda: (directory / "state.json").exists(), "the first save")
        broken.set()
        for second in range(1, 4):
            r.clock.wait_for_waiters(2, timeout=BOUND)
            r.clock.advance(1)
            r.until(lambda s=second: len(r.states("demo/t/state")) == s + 1, f"cycle {second}")
        broken.clear()
        r.clock.wait_for_waiters(2, timeout=BOUND)
        r.clock.advance(1)
        r.until(lambda: json.loads((directory / "state.json").read_text())["t"]["at"] == 4.0,
                "the save that works again")  # fmt: skip
    errors = r.states("demo/t/error")
    assert len(errors) == 1, errors  # one report for the whole streak
    assert "No space left" in errors[0]["message"]
    assert [s["at"] for s in r.states("demo/t/state")] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_a_corrupt_file_at_start_up_is_moved_aside_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"meter": {"n": 1}')  # cut off mid-write by something else
    app = App("demo", store=JsonFileStore(path))

    @app.telemetry("meter", interval=100)
    def meter(store: DeviceStore) -> dict:
        return {"n": store.get("n", 0)}

    with Running(app) as r:
        r.until(lambda: r.states("demo/error"), "the report")
        r.until(lambda: r.states("demo/meter/state"), "the reading")
    assert r.states("demo/meter/state") == [{"n": 0}]  # treated as empty
    report = r.states("demo/error")[0]
    assert report["error_type"] == "store_corrupt" and str(path) in report["message"]
    assert list(tmp_path.glob("state.json.corrupt-*"))
