"""MQTT behind small ports: the Protocols, the paho adapter and the test doubles.

``MqttClient`` is imported lazily so that code which only needs the ports or the fakes
(unit tests, ``NullMqttClient`` runs) does not load paho.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.mqtt.fakes import MockMqttClient, NullMqttClient
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
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
