"""The start runs with the cyclic garbage collector paused (agent.startup, ADR-012)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from test_runtime import Running

from agent import App, startup


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    startup.resume()
    if was:
        gc.enable()
    else:
        gc.disable()


def test_pause_and_resume_pair_up() -> None:
    gc.enable()
    startup.pause()
    assert not gc.isenabled()
    startup.pause()  # idempotent
    startup.resume()
    assert gc.isenabled()
    startup.resume()  # idempotent
    assert gc.isenabled()


def test_a_collector_the_program_turned_off_stays_off() -> None:
    gc.disable()
    startup.pause()
    startup.resume()
    assert not gc.isenabled()


def test_app_run_builds_with_the_collector_paused_and_serves_with_it_on() -> None:
    gc.enable()
    seen: list[bool] = []
    app = App("demo")

    @app.on_configure
    def configure() -> None:  # runs while the runtime is being built
        seen.append(gc.isenabled())

    app.add_telemetry("t", lambda: {"v": 1}, interval=1)
    with Running(app) as r:
        r.until(lambda: r.states("demo/t/state"), "the first reading")
        r.until(gc.isenabled, "the collector on again once started")
    assert seen == [False]
    assert gc.isenabled()


def test_a_start_that_fails_turns_the_collector_back_on() -> None:
    gc.enable()
    app = App("demo")

    @app.on_configure
    def configure() -> None:
        raise RuntimeError("no such bus")

    with pytest.raises(RuntimeError, match="no such bus"):
        App.run(app, mqtt=Running(app).mqtt)
    assert gc.isenabled()


def test_importing_agent_leaves_the_collector_as_it_was() -> None:
    """``import agent`` pauses the collector for its own imports only (a fresh process)."""
    import subprocess
    import sys

    probe = "import gc; import agent; print(gc.isenabled())"
    off = "import gc; gc.disable(); import agent; print(gc.isenabled())"
    for code, expected in ((probe, "True"), (off, "False")):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.stdout.strip() == expected, done.stderr
