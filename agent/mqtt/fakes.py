"""Test doubles for the MQTT ports: a recording mock and a silent null adapter.

Neither needs a broker or paho. Both implement every port the real client does —
:class:`~agent.mqtt.port.MqttPort`, :class:`~agent.mqtt.port.MqttMessageHandler`,
:class:`~agent.mqtt.port.MqttConnectionEvents`, :class:`~agent.mqtt.port.MqttLifecycle` and
:class:`~agent.mqtt.port.MqttDiagnostics` — so the runtime never needs to tell them apart (a
deliberate difference from the reference, whose fakes have no lifecycle: ADR-010). The mock's
``start()`` plays a broker accepting the connection at once; the null client never
connects.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from agent.mqtt.port import ConnectCallback, MessageCallback

logger = logging.getLogger(__name__)


def _as_text(payload: str | bytes) -> str:
    # Tests compare against str; undecodable bytes still show up rather than raise.
    return payload if isinstance(payload, str) else payload.decode("utf-8", errors="replace")


def _as_bytes(payload: str | bytes) -> bytes:
    return payload.encode("utf-8") if isinstance(payload, str) else payload


@dataclass
class MockMqttClient:
    """In-memory MQTT double that records what the code under test does.

    ``published`` holds ``(topic, payload, retain, qos)`` with the payload decoded to
    ``str``; ``subscriptions`` holds every subscribed topic in call order. Set
    ``raise_on_publish`` to make the next publishes raise it (nothing is recorded then).
    ``deliver()`` plays the broker: it calls the message callbacks synchronously on the
    calling thread, and ``simulate_connect()`` calls the connect callbacks.

    All methods are thread-safe; callbacks are called outside the lock so they may
    publish back into the mock.
    """

    published: list[tuple[str, str, bool, int]] = field(default_factory=list)
    subscriptions: list[str] = field(default_factory=list)
    raise_on_publish: Exception | None = None
    _message_callbacks: list[MessageCallback] = field(
        default_factory=list, init=False, repr=False, compare=False
    )
    _connect_callbacks: list[ConnectCallback] = field(
        default_factory=list, init=False, repr=False, compare=False
    )
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def publish(
        self, topic: str, payload: str | bytes, *, retain: bool = False, qos: int = 1
    ) -> None:
        """Record the publish, or raise ``raise_on_publish`` if it is set."""
        with self._lock:
            if self.raise_on_publish is not None:
                raise self.raise_on_publish
            self.published.append((topic, _as_text(payload), retain, qos))

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Record the subscription."""
        with self._lock:
            self.subscriptions.append(topic)

    def on_message(self, callback: MessageCallback) -> None:
        """Register a callback that ``deliver()`` will call."""
        with self._lock:
            self._message_callbacks.append(callback)

    def on_connect(self, callback: ConnectCallback) -> None:
        """Register a callback that ``simulate_connect()`` will call."""
        with self._lock:
            self._connect_callbacks.append(callback)

    @property
    def connected(self) -> bool:
        """Always True: the mock is a broker that never goes away."""
        return True

    def flush(self, timeout: float = 0.0) -> bool:
        """Nothing is ever in flight: always True at once."""
        return True

    def start(self) -> None:
        """Connect at once: the connect callbacks run, on the calling thread."""
        self.simulate_connect()

    def stop(self, timeout: float = 5.0) -> None:
        """Nothing to stop."""

    def stats(self) -> dict[str, object]:
        """A broker that never went away: connected, nothing queued or dropped."""
        return {"connected": True, "reconnects": 0, "queued": 0, "dropped": 0}

    def network_problem(self) -> str | None:
        """There is no network thread to die."""
        return None

    def deliver(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        """Simulate an inbound message: call every message callback, synchronously.

        Exceptions from callbacks propagate, so a test sees its handler's bug.
        """
        with self._lock:
            callbacks = list(self._message_callbacks)
        data = _as_bytes(payload)
        for callback in callbacks:
            callback(topic, data, retain)

    def simulate_connect(self) -> None:
        """Simulate a (re)connect: call every connect callback, synchronously."""
        with self._lock:
            callbacks = list(self._connect_callbacks)
        for callback in callbacks:
            callback()

    def reset(self) -> None:
        """Clear all recorded data, callbacks and failure injection."""
        with self._lock:
            self.published.clear()
            self.subscriptions.clear()
            self.raise_on_publish = None
            self._message_callbacks.clear()
            self._connect_callbacks.clear()

    def get_messages_for(self, topic: str) -> list[tuple[str, bool, int]]:
        """Return ``(payload, retain, qos)`` for every publish to exactly ``topic``."""
        with self._lock:
            return [(p, r, q) for t, p, r, q in self.published if t == topic]


@dataclass
class NullMqttClient:
    """Silent no-op adapter for running without a broker (MQTT not configured).

    Every method does nothing but log at DEBUG. ``connected`` is False, because nothing
    is connected and code that reports connection health must not claim otherwise;
    ``flush()`` is True, because nothing is ever pending. Callbacks are accepted and never
    called.
    """

    def publish(
        self, topic: str, payload: str | bytes, *, retain: bool = False, qos: int = 1
    ) -> None:
        """Discard the message."""
        logger.debug("NullMqttClient: dropping publish to %s", topic)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Ignore the subscription."""
        logger.debug("NullMqttClient: ignoring subscribe to %s", topic)

    def on_message(self, callback: MessageCallback) -> None:
        """Accept and never call the callback."""
        logger.debug("NullMqttClient: message callback ignored")

    def on_connect(self, callback: ConnectCallback) -> None:
        """Accept and never call the callback."""
        logger.debug("NullMqttClient: connect callback ignored")

    @property
    def connected(self) -> bool:
        """Always False: there is no broker."""
        return False

    def flush(self, timeout: float = 0.0) -> bool:
        """Nothing is pending: always True."""
        return True

    def start(self) -> None:
        """Nothing to connect to: the connect callbacks are never called."""

    def stop(self, timeout: float = 5.0) -> None:
        """Nothing to stop."""

    def stats(self) -> dict[str, object]:
        """Nothing is ever connected, queued or dropped."""
        return {"connected": False, "reconnects": 0, "queued": 0, "dropped": 0}

    def network_problem(self) -> str | None:
        """There is no network thread to die."""
        return None
