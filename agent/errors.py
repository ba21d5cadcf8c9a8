"""Structured error payloads, and publishing them without ever failing the caller.

When a device handler raises, the framework publishes one JSON object::

    {"error_type": "invalid_payload", "message": "expected a number", "device": "valve",
     "timestamp": "2026-11-24T05:00:00+00:00", "details": {"payload": "abc"}}

to ``{prefix}/error`` (always) and to ``{prefix}/{device}/error`` (named, non-root devices),
QoS 1, not retained: an error is an event, not a state.

``error_type`` comes from a map of exception *classes* to strings, looked up by the exact
class of the exception: a subclass is **not** matched (map it too if you want it), so that
adding a subclass somewhere never silently changes what consumers see. Unmapped exceptions
give ``"error"``. The framework's own exceptions below have default types; a user's map is
merged over them and wins:

* :class:`InvalidPayload` → ``invalid_payload``: an inbound command payload cannot be
  understood.
* :class:`PayloadTooLarge` → ``payload_too_large``: an inbound payload exceeds the configured
  limit (a subclass of :class:`InvalidPayload`, so ``except InvalidPayload`` catches both).
* :class:`CommandQueueFull` → ``command_overflow``: a device's command queue is full and the
  command was dropped.
* :class:`HandlerStalled` → ``stalled``: a handler call is past its timeout.
* :class:`RestartsExhausted` → ``restarts_exhausted``: a device failed again with its restart
  budget spent; it is not called again.
* :class:`AdapterUnhealthy` → ``adapter_unhealthy``: an adapter failed its health check.

There is deliberately no "HandlerError" wrapper: the handler's own exception, with its own
class and message, tells the consumer more, and the exact-class map can name it.

Secrets: ``message`` is ``str(error)`` and ``details`` is published as given. Keeping
passwords, tokens and keys out of both is the caller's job; the framework puts none there.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import TYPE_CHECKING

from agent.clock import utc_now
from agent.logs import redact, redact_data
from agent.topics import Topics

if TYPE_CHECKING:
    from agent.mqtt.port import MqttPort

__all__ = [
    "DEFAULT_ERROR_TYPES",
    "AdapterUnhealthy",
    "CommandQueueFull",
    "ErrorPayload",
    "ErrorPublisher",
    "HandlerStalled",
    "InvalidPayload",
    "PayloadTooLarge",
    "RestartsExhausted",
    "build_error_payload",
]

logger = logging.getLogger(__name__)

# Deeper nesting than this in ``details`` is shown as repr(): it also stops reference cycles.
_MAX_DEPTH = 16


class InvalidPayload(ValueError):
    """An inbound command payload could not be parsed or validated."""


class PayloadTooLarge(InvalidPayload):
    """An inbound payload was larger than the configured limit (``mqtt.max_payload_bytes``)."""


class CommandQueueFull(RuntimeError):
    """A device's command queue was full, so a command was dropped."""


class HandlerStalled(TimeoutError):
    """A handler call ran past its timeout (the thread cannot be killed: it is reported)."""


class AdapterUnhealthy(RuntimeError):
    """An adapter failed its health check: it raised (the cause), returned false, or overran."""


class RestartsExhausted(RuntimeError):
    """A device failed again after its restart budget was spent: it is not called again."""


#: The framework's default error types (read-only); user maps are merged over it.
DEFAULT_ERROR_TYPES: Mapping[type[BaseException], str] = MappingProxyType(
    {
        InvalidPayload: "invalid_payload",
        PayloadTooLarge: "payload_too_large",
        CommandQueueFull: "command_overflow",
        HandlerStalled: "stalled",
        RestartsExhausted: "restarts_exhausted",
        AdapterUnhealthy: "adapter_unhealthy",
    }
)


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not lose the error report
        return f"<unrepresentable {type(value).__name__}>"


def _json_safe(value: object, depth: int = 0) -> object:
    """Return ``value`` as plain JSON data; what JSON cannot hold becomes its ``repr``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        # NaN and infinities are not JSON; json.dumps would write invalid tokens for them.
        return value if math.isfinite(value) else repr(value)
    if depth >= _MAX_DEPTH:
        return _safe_repr(value)
    if isinstance(value, Mapping):
        return {
            (key if isinstance(key, str) else _safe_repr(key)): _json_safe(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_json_safe(item, depth + 1) for item in value]
    return _safe_repr(value)


def _iso_utc(moment: datetime) -> str:
    # A naive datetime from a user's clock is taken to be UTC already.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat()


@dataclass(frozen=True)
class ErrorPayload:
    """One error event, ready for JSON and MQTT. Immutable."""

    error_type: str
    message: str
    device: str | None
    timestamp: str
    details: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """Return the payload as plain JSON data (non-JSON ``details`` values as ``repr``),
        every registered secret (:func:`agent.logs.register_secret`) in the message and the
        details replaced by ``***``: an exception's text may quote a password, and this goes
        on the wire."""
        return {
            "error_type": self.error_type,
            "message": redact(self.message),
            "device": self.device,
            "timestamp": self.timestamp,
            "details": redact_data(_json_safe(self.details)),
        }

    def to_json(self) -> str:
        """Serialise to a compact JSON string."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)


def build_error_payload(
    error: BaseException,
    *,
    error_type_map: Mapping[type[BaseException], str] | None = None,
    device: str | None = None,
    details: Mapping[str, object] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> ErrorPayload:
    """Convert an exception into an :class:`ErrorPayload`.

    ``error_type`` is looked up by ``type(error)`` exactly (subclasses are not matched) in
    ``error_type_map`` merged over :data:`DEFAULT_ERROR_TYPES`, else ``"error"``. The
    message is ``str(error)``, or the class name when that is empty. The timestamp is
    ISO-8601 UTC from ``clock()`` when given, else :func:`agent.clock.utc_now`.
    """
    types = {**DEFAULT_ERROR_TYPES, **(error_type_map or {})}
    message = str(error) or type(error).__name__
    return ErrorPayload(
        error_type=types.get(type(error), "error"),
        message=message,
        device=device,
        timestamp=_iso_utc((clock or utc_now)()),
        details=dict(details or {}),
    )


@dataclass
class ErrorPublisher:
    """Publishes error payloads to MQTT, fire-and-forget.

    :meth:`publish` never raises: a failure to build, serialise or publish is logged and
    swallowed, because a failed error report must not take the agent down with it.
    """

    mqtt: MqttPort
    topic_prefix: str
    error_type_map: dict[type[BaseException], str] = field(default_factory=dict)
    clock: Callable[[], datetime] | None = None
    _topics: Topics = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._topics = Topics(self.topic_prefix)
        self._types = {**DEFAULT_ERROR_TYPES, **self.error_type_map}

    def error_type(self, error: BaseException) -> str:
        """The ``error_type`` a payload for ``error`` gets (exact class, else ``"error"``)."""
        return self._types.get(type(error), "error")

    def publish(
        self,
        error: BaseException,
        *,
        device: str | None = None,
        is_root: bool = False,
        details: Mapping[str, object] | None = None,
    ) -> None:
        """Publish ``error`` to ``{prefix}/error`` and, for a named non-root device, also
        to ``{prefix}/{device}/error`` (for the root that would duplicate the global one).
        """
        try:
            payload = build_error_payload(
                error,
                error_type_map=self.error_type_map,
                device=device,
                details=details,
                clock=self.clock,
            ).to_json()
        except Exception:
            # A bug (a broken clock, an unprintable exception): show the traceback.
            logger.exception("could not build the error report for %s", type(error).__name__)
            return
        topics = [self._topics.error()]
        if device is not None and not is_root:
            topics.append(self._topics.error(device))
        for topic in topics:
            # Each topic on its own: one failed publish must not suppress the other.
            try:
                self.mqtt.publish(topic, payload, retain=False, qos=1)
            except Exception as exc:
                logger.warning("could not publish error report to %s: %r", topic, exc)
