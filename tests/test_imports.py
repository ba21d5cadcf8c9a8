"""What a plain run imports (ADR-012, decisions 1 and 8).

A run imports only what its config uses, and builds no dataclass beyond those the reference
API defines as dataclasses: on Python 3.11 each costs 0.5-0.9 ms of start-up, and 29 of them
were a fifth of agent's start. These tests look at a fresh interpreter (a real subprocess)
after it imported what ``python -m agent --config`` imports for an app of telemetry and
command devices, so a new heavy import or a new dataclass on that path fails here rather
than showing up months later as a slower start on a Pi.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Stages 1-2 run the tests with ``python -P`` against a staged install: a child must not
# import the checkout from its working directory instead.
PYTHON = [sys.executable, "-P"] if getattr(sys.flags, "safe_path", False) else [sys.executable]

# What a run's imports leave loaded: agent's modules that hold a dataclass, and which of
# the modules a plain run must not need are loaded anyway.
PROBE = textwrap.dedent(
    """
    import dataclasses, json, sys

    import agent.cli, agent.mqtt.paho, agent.runtime.lifecycle
    from agent import App, DeviceContext

    app = App(name="probe")
    app.add_telemetry("t0", lambda: {"v": 1}, interval=1.0)

    @app.command("echo")
    def echo(payload: str, ctx: DeviceContext) -> None:
        ctx.publish("reply", payload, qos=0)

    dataclass_names = sorted(
        f"{name}.{attr}"
        for name, module in list(sys.modules.items())
        if name == "agent" or name.startswith("agent.")
        for attr, value in vars(module).items()
        if isinstance(value, type)
        and value.__module__ == name
        and dataclasses.is_dataclass(value)
    )
    print(json.dumps({"dataclasses": dataclass_names, "modules": sorted(sys.modules)}))
    """
)

REFERENCE_DATACLASSES = {
    # The API reference defines these as dataclasses; users may rely on that.
    "agent.errors.ErrorPayload",
    "agent.errors.ErrorPublisher",
    "agent.health.DeviceStatus",
    "agent.health.HealthReporter",
    "agent.health.HeartbeatPayload",
    "agent.mqtt.port.WillConfig",
}

NOT_FOR_A_PLAIN_RUN = [
    "sqlite3",  # only with a sqlite store
    "agent._filters",  # the C++ filters (and libstdc++): only with filters
    "agent.filters",
    "agent.daemon.app",  # only for a daemon config file
    "agent.entities",  # only with Home Assistant entities
    "agent.introspect",  # ``describe``
    "agent.router",
    "agent.mqtt.fakes",
    "agent.testing",
    "logging.handlers",  # only with a log file (it imports pickle)
    "difflib",  # "did you mean": only for a config mistake
    "shlex",
]


def _probe() -> dict[str, list[str]]:
    done = subprocess.run(
        [*PYTHON, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_a_plain_run_builds_only_the_reference_apis_dataclasses() -> None:
    """Internal records are plain classes (ADR-012, decision 8): a new ``@dataclass`` on the
    start path costs ~0.7 ms of every start on Python 3.11 and several on a Pi Zero."""
    found = set(_probe()["dataclasses"])
    assert found - REFERENCE_DATACLASSES == set(), (
        "dataclasses created on every start; write a plain class with __slots__ instead "
        "(ADR-012, decision 8)"
    )
    assert found >= {"agent.mqtt.port.WillConfig", "agent.health.DeviceStatus"}  # it can see


def test_a_plain_run_imports_only_what_it_uses() -> None:
    modules = set(_probe()["modules"])
    assert [m for m in NOT_FOR_A_PLAIN_RUN if m in modules] == []
    assert {"agent.runtime.lifecycle", "paho.mqtt.client"} <= modules  # it can see
