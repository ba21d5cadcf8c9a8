"""A device publishing far more than the outbox holds loses nothing while the broker is
there: its thread waits for room (ADR-012), a real agent process on a real broker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from e2e_helpers import AgentProcess

from agent.testing import eventually
from agent.testing.mosquitto import Mosquitto, Observer

APP = """
from agent import App, DeviceContext

app = App(name="bp", heartbeat_interval=None)


@app.command("burst")
def burst(payload: str, ctx: DeviceContext) -> None:
    count, qos = (int(word) for word in payload.split())
    for i in range(count):
        ctx.publish("events", str(i), qos=qos)
"""


def test_a_device_burst_of_60_outboxes_arrives_whole_and_in_order(
    tmp_path: Path, run_agent: Callable[[Path], AgentProcess]
) -> None:
    # A broker that queues far more than the burst: whatever is missing, agent lost it.
    with Mosquitto(["max_queued_messages 1000000"], directory=tmp_path / "broker") as server:
        (tmp_path / "app_under_test.py").write_text(APP)
        config = tmp_path / "agent.toml"
        config.write_text(
            'app = "app_under_test:app"\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {server.port}\noffline_buffer_size = 50\n'
            '[logging]\nformat = "text"\nlevel = "INFO"\n'
        )
        watcher = Observer(server.host, server.port, ["bp/#"], client_id="bp-watch")
        try:
            agent = run_agent(config)
            watcher.wait_for("bp/burst/availability", lambda m: m.payload == b"online", 10)
            count = 3000
            for qos in (1, 0):
                watcher.clear()
                watcher.publish("bp/burst/set", f"{count} {qos}")
                eventually(
                    lambda: len(watcher.messages("bp/burst/events")) >= count,
                    timeout=30,
                    what=f"{count} events at QoS {qos}",
                )
                got = [int(m.payload) for m in watcher.messages("bp/burst/events")]
                assert got == list(range(count))
            assert agent.terminate() == 0
            assert "dropped" not in agent.log()
        finally:
            watcher.close()
