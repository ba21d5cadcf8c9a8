"""MQTT behind small ports: the Protocols, the paho adapter and the test doubles.

``MqttClient`` and the fakes are imported lazily: code which only needs the ports or the
fakes (unit tests, ``NullMqttClient`` runs) does not load paho, and a run does not load the
fakes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.mqtt.port import (
    ConnectCallback,
    MessageCallback,
    MqttConnectionEvents,
    MqttLifecycle,
    MqttMessageHandler,
    MqttPort,
    WillConfig,
)

if TYPE_CHECKING:
    from agent.mqtt.fakes import MockMqttClient, NullMqttClient
    from agent.mqtt.paho import MqttClient

__all__ = [
    "ConnectCallback",
    "MessageCallback",
    "MockMqttClient",
    "MqttClient",
    "MqttConnectionEvents",
    "MqttLifecycle",
    "MqttMessageHandler",
    "MqttPort",
    "NullMqttClient",
    "WillConfig",
]


def __getattr__(name: str) -> Any:
    if name == "MqttClient":
        from agent.mqtt.paho import MqttClient

        return MqttClient
    if name in ("MockMqttClient", "NullMqttClient"):
        from agent.mqtt import fakes

        return getattr(fakes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
