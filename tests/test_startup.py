"""The start runs with the cyclic garbage collector paused (agent.startup, ADR-012)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from test_runtime import Running

import agent.runtime.lifecycle
from agent import App, startup

# Stages 1-2 run the tests with ``python -P`` against a staged install: a child must not
# import the checkout from its working directory instead.
PYTHON = [sys.executable, "-P"] if getattr(sys.flags, "safe_path", False) else [sys.executable]


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


def test_app_run_builds_with_the_collector_paused_and_runs_user_code_with_it_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Paused while the runtime is imported and built; on again before the start runs
    user code (adapters, hooks, devices)."""
    gc.enable()
    building: list[bool] = []
    configuring: list[bool] = []
    build = agent.runtime.lifecycle.Runtime.__init__

    def observed(self: object, *args: object, **kwargs: object) -> None:
        building.append(gc.isenabled())
        build(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(agent.runtime.lifecycle.Runtime, "__init__", observed)
    app = App("demo")

    @app.on_configure
    def configure() -> None:
        configuring.append(gc.isenabled())

    app.add_telemetry("t", lambda: {"v": 1}, interval=1)
    with Running(app) as r:
        r.until(lambda: r.states("demo/t/state"), "the first reading")
        assert gc.isenabled()
    assert building == [False]
    assert configuring == [True]


def test_a_start_that_fails_turns_the_collector_back_on() -> None:
    gc.enable()
    app = App("demo")

    @app.on_configure
    def configure() -> None:
        raise RuntimeError("no such bus")

    with pytest.raises(RuntimeError, match="no such bus"):
        App.run(app, mqtt=Running(app).mqtt)
    assert gc.isenabled()


def test_a_process_forked_during_the_pause_has_the_collector_on() -> None:
    gc.enable()
    startup.pause()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once, without pytest's teardown
        os._exit(0 if gc.isenabled() else 1)
    _, status = os.waitpid(pid, 0)
    startup.resume()
    assert os.waitstatus_to_exitcode(status) == 0
    assert gc.isenabled()


def test_import_agent_pauses_the_collector_for_its_imports_only() -> None:
    """While ``import agent`` runs its imports the collector is off; after it, as before."""
    probe = textwrap.dedent(
        """
        import gc, sys
        {setup}
        seen = []

        class Watch:  # records the collector's state when agent.app is being imported
            def find_spec(self, name, path=None, target=None):
                if name == "agent.app":
                    seen.append(gc.isenabled())
                return None

        sys.meta_path.insert(0, Watch())
        import agent
        print(seen, gc.isenabled())
        """
    )
    for setup, expected in (("", "[False] True"), ("gc.disable()", "[False] False")):
        done = subprocess.run(
            [*PYTHON, "-c", probe.format(setup=setup)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.stdout.strip() == expected, done.stderr
