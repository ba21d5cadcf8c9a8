"""The agent side of bench/bridge.py: 10 telemetry devices at 1 s and one command device.

bench/bridge.py copies this file next to a generated TOML file and runs it the way a user
would, ``python -m agent --config agent.toml`` (``app = "bridge_app:app"``). The topic
prefix is the app's name, taken from ``BENCH_PREFIX`` (each run has its own, so no retained
message of an earlier run is mistaken for this one's).

* ``t0`` … ``t9`` — telemetry, every second, return ``{"v": k}``: a retained QoS 1 state on
  ``{prefix}/tK/state``, the job the scenario's idle figures are about;
* ``echo`` — a command device. ``{prefix}/echo/set`` with the payload ``"<seq> <qos>"``:
  at QoS 1 the handler returns ``{"seq": seq}`` (a retained QoS 1 state on
  ``{prefix}/echo/state``, the path every command of a user takes); at QoS 0 it publishes
  the payload on ``{prefix}/echo/reply`` with ``ctx.publish(..., qos=0)``.
  The payload ``"burst <n> <qos>"`` publishes ``n`` messages ``"<i>"`` back to back on
  ``{prefix}/echo/burst`` with ``ctx.publish(..., qos=qos)`` (the throughput scenario).
"""

from __future__ import annotations

import os

from agent import App, DeviceContext

app = App(name=os.environ.get("BENCH_PREFIX", "benchbridge"), heartbeat_interval=60.0)


def _reader(index: int):  # type: ignore[no-untyped-def]
    count = 0

    def read() -> dict[str, object]:
        nonlocal count
        count += 1
        return {"v": count}

    read.__name__ = f"t{index}"
    return read


for _i in range(int(os.environ.get("BENCH_DEVICES", "10"))):
    app.add_telemetry(f"t{_i}", _reader(_i), interval=1.0)


@app.command("echo")
def echo(payload: str, ctx: DeviceContext) -> dict[str, object] | None:
    words = payload.split()
    if words[0] == "burst":
        count, qos = int(words[1]), int(words[2])
        for i in range(count):
            ctx.publish("burst", str(i), qos=qos)
        return None
    if words[1] == "0":
        ctx.publish("reply", payload, qos=0)
        return None
    return {"seq": int(words[0])}
