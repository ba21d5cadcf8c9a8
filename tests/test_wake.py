"""``ctx.wake()``: another thread (a hardware library's callback) wakes a device's thread.

The callback only records what happened and wakes the device; the device's own thread acts
on it. A ``ctx.sleep()`` in progress returns True at once, ``ctx.commands()`` yields None,
and wakes that come before the device looks collapse into one.
"""

from __future__ import annotations

import threading

import agent
from agent.testing import AppHarness


def test_wake_ends_a_sleep_early_and_sleep_says_so() -> None:
    app = agent.App("demo", "1.0")
    results: list[tuple[float, bool]] = []
    contexts: list[agent.DeviceContext] = []

    @app.device("button")
    def button(ctx: agent.DeviceContext) -> None:
        contexts.append(ctx)
        while not ctx.shutdown_requested:
            woken = ctx.sleep(100)
            results.append((ctx.clock.now(), woken))

    with AppHarness(app) as h:
        h.advance(5)
        # From a thread that is not the device's, as gpiozero's callbacks are; many wakes
        # before the device looks are one.
        waker = threading.Thread(target=lambda: [contexts[0].wake() for _ in range(50)])
        waker.start()
        waker.join()
        h.advance(0)
        assert results == [(5.0, True)]
        h.advance(100)
        assert results == [(5.0, True), (105.0, False)]


def test_commands_yields_none_on_wake() -> None:
    app = agent.App("demo", "1.0")
    seen: list[object] = []
    contexts: list[agent.DeviceContext] = []

    @app.device("reader")
    def reader(ctx: agent.DeviceContext) -> None:
        contexts.append(ctx)
        for command in ctx.commands():
            seen.append(None if command is None else command.payload)

    with AppHarness(app) as h:
        h.advance(1)
        contexts[0].wake()
        h.advance(0)
        h.send_command("reader", "hello")
        assert seen == [None, "hello"]
