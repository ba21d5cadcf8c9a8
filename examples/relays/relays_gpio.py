"""The real relay board: GPIO outputs through gpiozero (``sudo apt install python3-gpiozero``).

Never imported by ``--dry-run``, the tests or ``agent describe``: the bridge names it as the
lazy adapter ``"relays_gpio:GpioRelays"``.
"""

from __future__ import annotations

from gpiozero import OutputDevice

import agent


class GpioRelays:
    """One :class:`gpiozero.OutputDevice` per channel; released when the bridge stops.

    The settings are the bridge's ``RelaySettings``; the annotation is ``agent.Settings`` so
    that this module never imports the bridge module (which may be running as ``__main__``).
    """

    def __init__(self, settings: agent.Settings) -> None:
        channels: dict[str, int] = settings.channels  # type: ignore[attr-defined]
        active_high: bool = settings.active_high  # type: ignore[attr-defined]
        self._outputs = {
            name: OutputDevice(pin, active_high=active_high, initial_value=False)
            for name, pin in channels.items()
        }

    def switch(self, channel: str, on: bool) -> None:
        self._outputs[channel].value = on

    def __enter__(self) -> GpioRelays:
        return self

    def __exit__(self, *exc: object) -> None:
        for output in self._outputs.values():
            output.close()
