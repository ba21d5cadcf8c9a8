"""Entity metadata: what a device's state fields *are*, for Home Assistant and friends.

A device publishes a JSON state; consumers need to know that ``temperature`` is a temperature
in °C measured now and then, or that ``on`` is a switch they may flip. Declare it on the
registration::

    @app.telemetry("boiler", interval=30, entities=[
        agent.Entity("flow_c", device_class="temperature", unit="°C", state_class="measurement"),
        agent.Entity("pump", component="binary_sensor", device_class="running"),
    ])

    @app.command("valve", entities=[agent.Entity("state", component="switch",
                                                 payload_on="open", payload_off="closed")])

Home Assistant discovery (``[homeassistant] enabled = true`` in the daemon's config) publishes
one discovery config per entity; the metadata is checked against the combinations Home
Assistant accepts when the discovery config is built (see
:mod:`agent.daemon.homeassistant`). Nothing here talks to MQTT.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COMPONENTS", "Entity"]

COMPONENTS = ("sensor", "binary_sensor", "switch", "button", "number", "select")
"""The Home Assistant components an entity may be."""


@dataclass(frozen=True)
class Entity:
    """One field of a device's state, described for consumers.

    Args:
        field: the key in the state dict (dot path for nested fields: ``"sensor.temp"``).
        component: ``sensor`` (default), ``binary_sensor``, ``switch``, ``button``,
            ``number`` or ``select``. ``switch``/``button``/``number``/``select`` send
            commands to the device's command topic.
        name: the entity's name under its device (None: the field, prettified; use
            ``""`` for the device's main entity, which Home Assistant names after the device).
        device_class, unit, state_class: Home Assistant's; only valid combinations are
            accepted (``°C`` with ``temperature``, not ``C``).
        icon: ``mdi:...``.
        payload_on, payload_off: what ``binary_sensor``/``switch`` states and commands are.
        command_sub_topic: for a command entity, the device's sub-topic
            (``{prefix}/{device}/{sub}/set``); None: the device's own command topic.
        options: for ``select``, the choices.
        minimum, maximum, step: for ``number``.
    """

    field: str
    component: str = "sensor"
    name: str | None = None
    device_class: str | None = None
    unit: str | None = None
    state_class: str | None = None
    icon: str | None = None
    payload_on: str | None = None
    payload_off: str | None = None
    command_sub_topic: str | None = None
    options: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.field, str) or not self.field:
            raise ValueError(f"Entity field must be a non-empty str, got {self.field!r}")
        if self.component not in COMPONENTS:
            raise ValueError(
                f"Entity {self.field!r}: component must be one of {', '.join(COMPONENTS)}, "
                f"got {self.component!r}"
            )
        if self.options is not None:
            object.__setattr__(self, "options", tuple(self.options))

    @property
    def commands(self) -> bool:
        """True when consumers send commands through this entity."""
        return self.component in ("switch", "button", "number", "select")
