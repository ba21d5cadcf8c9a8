"""The quick example: a gas meter bridge with a valve and a blind, in plain functions.

Run it against a local broker with ``scripts/run-example`` (or
``agent --config examples/quickstart.toml``) and watch ``gas2mqtt/#``:

* ``gas2mqtt/counter/state`` — the meter reading, every ``poll_interval`` seconds;
* ``gas2mqtt/valve/set`` — send ``open`` or ``closed``; the new state comes back on
  ``gas2mqtt/valve/state``, anything else gives an error on ``gas2mqtt/valve/error``;
* ``gas2mqtt/blind/position/set`` — send 0-100;
* ``gas2mqtt/status`` — the heartbeat (``offline`` when the bridge stops or dies).
"""

from __future__ import annotations

import logging
import random
from typing import Protocol

import agent


class GasMeterPort(Protocol):
    """What the bridge needs from the meter hardware."""

    def read_impulses(self) -> int: ...


class SimulatedGasMeter:
    """Stands in for the reed contact on a GPIO pin: a counter that moves now and then."""

    def __init__(self) -> None:
        self._count = 0

    def read_impulses(self) -> int:
        self._count += random.randint(0, 3)
        return self._count


class GasSettings(agent.Settings):
    poll_interval: float = 5.0
    m3_per_impulse: float = 0.01


app = agent.App(
    "gas2mqtt",
    "0.1.0",
    settings_class=GasSettings,
    adapters={GasMeterPort: SimulatedGasMeter},
    heartbeat_interval=30,
)


@app.telemetry("counter", interval=lambda settings: settings.poll_interval)
def counter(meter: GasMeterPort, settings: GasSettings) -> dict[str, object]:
    impulses = meter.read_impulses()
    return {"impulses": impulses, "volume_m3": round(impulses * settings.m3_per_impulse, 3)}


@app.command("valve")
def valve(payload: str) -> dict[str, object]:
    if payload not in ("open", "closed"):
        raise ValueError(f"valve takes 'open' or 'closed', got {payload!r}")
    return {"state": payload}


@app.device("blind")
def blind(ctx: agent.DeviceContext, log: logging.Logger) -> None:
    position = 0

    @ctx.on_command("position")
    def set_position(cmd: agent.Command) -> None:
        nonlocal position
        value = int(cmd.payload)
        if not 0 <= value <= 100:
            raise ValueError(f"position must be 0-100, got {value}")
        position = value
        ctx.publish_state({"position": position})

    ctx.publish_state({"position": position})
    while not ctx.shutdown_requested:
        ctx.sleep(60)
    log.info("blind parked at %d%% before exit", position)  # cleanup after ctx.sleep


if __name__ == "__main__":
    app.cli()
