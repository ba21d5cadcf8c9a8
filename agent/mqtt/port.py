"""The MQTT ports: the narrow contracts the rest of agent codes against.

Nothing here imports paho. The runtime only ever sees these Protocols, so a test can hand
it a :class:`~agent.mqtt.fakes.MockMqttClient` and production hands it the paho-backed
:class:`~agent.mqtt.paho.MqttClient` (ADR-003).

The ports are split by capability (interface segregation): a device context needs only
:class:`MqttPort`; the router needs :class:`MqttMessageHandler`; the runtime needs
:class:`MqttLifecycle`, :class:`MqttConnectionEvents` and :class:`MqttDiagnostics`. The real
client and both fakes implement all of them (ADR-010), so the runtime treats them alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

MessageCallback = Callable[[str, bytes, bool], None]
"""(topic, payload, retained). Called on the network thread: must be quick and never block."""

ConnectCallback = Callable[[], None]
"""Called on the network thread after each successful (re)connect, after resubscription."""


@dataclass(frozen=True)
class WillConfig:
    """The last will: what the broker publishes for us when we vanish without a goodbye.

    The broker stores it at connect time and publishes it when the connection dies
    without a clean DISCONNECT (crash, SIGKILL, power cut, network loss noticed after
    about 1.5 x keepalive). The agent uses ``{prefix}/status`` / ``offline`` / QoS 1 /
    retained, so Home Assistant marks everything unavailable.
    """

    topic: str
    payload: str = "offline"
    qos: int = 1
    retain: bool = True


@runtime_checkable
class MqttPort(Protocol):
    """Publish and subscribe: all a device needs.

    Both methods are thread-safe, never block on the network and may be called from any
    thread, including from inside MQTT callbacks.
    """

    def publish(
        self, topic: str, payload: str | bytes, *, retain: bool = False, qos: int = 1
    ) -> None:
        """Send ``payload`` to ``topic`` (str payloads are UTF-8 encoded)."""
        ...

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe to ``topic``; the subscription is restored after every reconnect."""
        ...


@runtime_checkable
class MqttMessageHandler(Protocol):
    """Inbound messages: register callbacks that receive every message."""

    def on_message(self, callback: MessageCallback) -> None:
        """Call ``callback(topic, payload, retained)`` for every inbound message."""
        ...


@runtime_checkable
class MqttLifecycle(Protocol):
    """Adapters that hold a connection and must be started and stopped."""

    def start(self) -> None:
        """Begin connecting in the background; never blocks, never raises for a down broker."""
        ...

    def stop(self, timeout: float = 5.0) -> None:
        """Flush, disconnect cleanly and stop the network thread. Idempotent."""
        ...


@runtime_checkable
class MqttConnectionEvents(Protocol):
    """Connection state: what to do on every (re)connect, and whether we are connected."""

    def on_connect(self, callback: ConnectCallback) -> None:
        """Call ``callback()`` after each successful (re)connect, after resubscription."""
        ...

    @property
    def connected(self) -> bool:
        """True while a broker session is established."""
        ...

    def flush(self, timeout: float) -> bool:
        """Wait until every QoS>0 publish made so far is acked; True if all were."""
        ...


@runtime_checkable
class MqttDiagnostics(Protocol):
    """What the heartbeat and the systemd watchdog ask of the connection."""

    def stats(self) -> dict[str, object]:
        """``connected``, ``reconnects``, ``queued`` and ``dropped`` for the heartbeat."""
        ...

    def network_problem(self) -> str | None:
        """Why the network thread is not sound (dead or wedged), or None."""
        ...
