"""The real S0 input: a GPIO pin through gpiozero (``sudo apt install python3-gpiozero``).

Never imported by ``--dry-run``, the tests or ``agent describe``: the bridge names it as the
lazy adapter ``"s0_gpio:GpioImpulseCounter"``.
"""

from __future__ import annotations

import threading

from gpiozero import Button

import agent


class GpioImpulseCounter:
    """Counts rising edges on the bridge's ``gpio_pin`` (S0+ on 3.3 V, the pin pulled down).

    gpiozero calls :meth:`_impulse` on its own thread; :meth:`take` runs on the device's.
    The settings are the bridge's ``MeterSettings``; the annotation is ``agent.Settings``
    so that this module never imports the bridge module (which may be running as
    ``__main__``).
    """

    def __init__(self, settings: agent.Settings) -> None:
        self._lock = threading.Lock()
        self._count = 0
        pin: int = settings.gpio_pin  # type: ignore[attr-defined]
        # An S0 impulse lasts at least 30 ms: 5 ms of debounce cannot swallow one.
        self._input = Button(pin, pull_up=False, bounce_time=0.005)
        self._input.when_pressed = self._impulse

    def _impulse(self) -> None:
        with self._lock:
            self._count += 1

    def take(self) -> int:
        with self._lock:
            taken, self._count = self._count, 0
        return taken

    def __enter__(self) -> GpioImpulseCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._input.close()
