"""What handlers see: ``DeviceContext`` for a device, ``AppContext`` for the lifespan, ``Command``.

A ``DeviceContext`` belongs to one device and is used from that device's thread only: it
publishes the device's state, waits (``sleep``), and hands commands to the handlers registered
with ``on_command`` — always on the device's own thread, one at a time, so device code needs no
locks.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import typing
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, overload

from agent.clock import ClockPort
from agent.runtime.inbox import WAKE, Inbox, Tick
from agent.topics import Topics, validate_sub_topic

T = TypeVar("T")
CommandHandler = Callable[..., Any]

log = logging.getLogger("agent.context")


class Command:
    """One inbound command, as a device handler receives it (read-only by convention).

    ``sub_topic`` is ``"calibrate"`` for ``{prefix}/{device}/calibrate/set`` and None for
    ``{prefix}/{device}/set``; ``received_at`` is the clock port's time when it arrived.

    A plain class rather than a dataclass: one is built per command, and a frozen
    dataclass costs 0.9 ms to define at start and 1 µs per instance (ADR-012).
    """

    __slots__ = ("device", "payload", "received_at", "sub_topic", "topic")
    __match_args__ = ("topic", "payload", "device", "sub_topic", "received_at")

    def __init__(
        self,
        topic: str,
        payload: str,
        device: str,
        sub_topic: str | None = None,
        received_at: float = 0.0,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.device = device
        self.sub_topic = sub_topic
        self.received_at = received_at

    def _key(self) -> tuple[str, str, str, str | None, float]:
        return (self.topic, self.payload, self.device, self.sub_topic, self.received_at)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Command(topic={self.topic!r}, payload={self.payload!r}, device={self.device!r}, "
            f"sub_topic={self.sub_topic!r}, received_at={self.received_at!r})"
        )


def _adapter_lookup(adapters: dict[type, object], port_type: type[T]) -> T:
    try:
        return adapters[port_type]  # type: ignore[return-value]
    except KeyError:
        name = getattr(port_type, "__name__", repr(port_type))
        raise LookupError(f"no adapter is registered for {name}") from None


class AppContext:
    """Context of the application lifespan: settings and adapters, nothing per device.

    For app-wide services (the daemon's Home Assistant discovery) it also offers the MQTT
    port (``mqtt``: publish, subscribe, ``on_message`` — whose callbacks run on the network
    thread and must be quick), the clock port, the topic ``prefix``, the App's device
    ``registry`` and ``republish()``, which sends the heartbeat, every availability and the
    latest retained states again.
    """

    def __init__(
        self,
        *,
        settings: Any,
        adapters: dict[type, object],
        mqtt: Any = None,
        clock: ClockPort | None = None,
        prefix: str | None = None,
        registry: Any = None,
        republish: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self._adapters = adapters
        self.mqtt = mqtt
        self.clock = clock
        self.prefix = prefix
        self.registry = registry
        self._republish = republish

    def republish(self) -> None:
        """Publish the heartbeat, availability and latest states again (e.g. after Home
        Assistant restarted and forgot them)."""
        if self._republish is not None:
            self._republish()

    def adapter(self, port_type: type[T]) -> T:
        """The adapter registered for ``port_type``; LookupError if there is none."""
        return _adapter_lookup(self._adapters, port_type)


class StateCache:
    """The latest retained state per topic, so it can go out again after a reconnect."""

    def __init__(self) -> None:
        self._latest: dict[str, str] = {}
        self._lock = threading.Lock()

    def remember(self, topic: str, payload: str) -> None:
        with self._lock:
            self._latest[topic] = payload

    def items(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._latest.items())


def encode_state(payload: dict[str, object]) -> str:
    """Serialise a state dict; non-JSON values (NaN included) raise instead of being mangled."""
    if not isinstance(payload, dict):
        raise TypeError(f"state must be a dict, got {type(payload).__name__}")
    return json.dumps(payload, allow_nan=False, separators=(",", ":"))


class DeviceContext:
    """Per-device runtime context injected by the framework (see module docstring)."""

    def __init__(
        self,
        *,
        name: str,
        settings: Any,
        mqtt: Any,
        topic_prefix: str,
        shutdown_event: threading.Event,
        adapters: dict[type, object],
        clock: ClockPort,
        is_root: bool = False,
        inbox: Inbox | None = None,
        states: StateCache | None = None,
        on_handler_error: Callable[[BaseException, Command], None] | None = None,
        on_call: Callable[[], Callable[[], None]] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.mqtt = mqtt
        self.topic_prefix = topic_prefix
        self.topics = Topics(topic_prefix)
        self.is_root = is_root
        self._state_topic = self.topics.state(name, is_root)
        self.clock = clock
        self._shutdown_event = shutdown_event
        self._adapters = adapters
        self._inbox = inbox if inbox is not None else Inbox(clock)
        self._states = states if states is not None else StateCache()
        self._on_handler_error = on_handler_error
        self._on_call = on_call  # marks a handler call's start; returns its end (stall watch)
        self._handlers: dict[str | None, CommandHandler] = {}
        self._iterating = False

    # -- state and publishing ---------------------------------------------------------------

    @property
    def shutdown_requested(self) -> bool:
        """True once the framework has started a graceful shutdown."""
        return self._shutdown_event.is_set()

    def publish_state(self, payload: dict[str, object], *, retain: bool = True) -> None:
        """Publish ``payload`` as JSON to ``{prefix}/{device}/state`` (root: ``{prefix}/state``)."""
        topic = self._state_topic
        data = encode_state(payload)
        if retain:
            self._states.remember(topic, data)
        self.mqtt.publish(topic, data, retain=retain, qos=1)

    def publish(
        self, channel: str, payload: str | bytes, *, retain: bool = False, qos: int = 1
    ) -> None:
        """Publish to ``{prefix}/{device}/{channel}`` — an escape hatch; prefer publish_state."""
        validate_sub_topic(channel)
        self.mqtt.publish(
            self.topics.channel(self.name, channel, self.is_root), payload, retain=retain, qos=qos
        )

    def adapter(self, port_type: type[T]) -> T:
        """The adapter registered for ``port_type``; LookupError if there is none."""
        return _adapter_lookup(self._adapters, port_type)

    # -- waiting ----------------------------------------------------------------------------

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` of clock time, serving commands meanwhile; returns early at
        shutdown, and on :meth:`wake` (then True; False otherwise)."""
        deadline = self.clock.now() + seconds
        while not self._shutdown_event.is_set():
            remaining = deadline - self.clock.now()
            if remaining <= 0:
                return False
            item = self._inbox.get(remaining)
            if isinstance(item, Command):
                self.dispatch(item)
            elif item is WAKE:
                return True
            elif item is None and self._inbox.closed:
                return False
        return False

    def wake(self) -> None:
        """Wake the device's thread, from any thread: its ``ctx.sleep()`` returns True at
        once, or ``ctx.commands()`` yields ``None``.

        For hardware libraries that call back on a thread of their own (gpiozero's
        ``when_pressed``, a serial reader): record what happened, call ``ctx.wake()``, and
        let the device's own thread act on it, so the device's code still runs on one
        thread, one thing at a time. Wakes that come before the device looks are one.
        """
        self._inbox.put_wake()

    def commands(self, timeout: float | None = None) -> Iterator[Command | None]:
        """Yield inbound commands as they arrive; ``None`` each time ``timeout`` passes idle.

        Ends when shutdown starts. May be used once per context, and not together with
        ``on_command`` handlers.
        """
        if self._iterating:
            raise RuntimeError(f"commands() is already in use for device {self.name!r}")
        if self._handlers:
            raise RuntimeError(
                f"device {self.name!r} has on_command handlers; use either commands() or on_command"
            )
        self._iterating = True
        return self._iterate(timeout)

    def _iterate(self, timeout: float | None) -> Iterator[Command | None]:
        while not self._shutdown_event.is_set():
            item = self._inbox.get(timeout)
            if self._shutdown_event.is_set() or (item is None and self._inbox.closed):
                return
            if isinstance(item, Tick):
                continue
            yield None if item is WAKE else item  # type: ignore[misc]

    # -- command handlers -------------------------------------------------------------------

    @overload
    def on_command(self, handler_or_sub_topic: CommandHandler) -> CommandHandler: ...
    @overload
    def on_command(
        self, handler_or_sub_topic: str | None = None
    ) -> Callable[[CommandHandler], CommandHandler]: ...

    def on_command(self, handler_or_sub_topic: CommandHandler | str | None = None) -> Any:
        """Register a command handler: ``@ctx.on_command``, ``ctx.on_command(h)`` or
        ``@ctx.on_command("calibrate")`` for ``{prefix}/{device}/calibrate/set``.

        A handler takes either one ``Command`` parameter, or ``(sub_topic, payload)``.
        """
        if callable(handler_or_sub_topic):
            self._register(None, handler_or_sub_topic)
            return handler_or_sub_topic
        sub = handler_or_sub_topic
        if sub is not None:
            validate_sub_topic(sub)

        def decorator(handler: CommandHandler) -> CommandHandler:
            self._register(sub, handler)
            return handler

        return decorator

    def _register(self, sub: str | None, handler: CommandHandler) -> None:
        from agent.injection import check_plain_function

        check_plain_function(handler, "command handler")
        if self._iterating:
            raise RuntimeError(
                f"device {self.name!r} iterates commands(); use either commands() or on_command"
            )
        if sub in self._handlers:
            where = "the device topic" if sub is None else f"sub-topic {sub!r}"
            raise RuntimeError(f"a command handler for {where} of {self.name!r} is registered")
        self._handlers[sub] = _adapt_handler(handler)

    def forget_handlers(self) -> None:
        """Drop the registered command handlers (before a device restarts: its fresh call
        registers them again). Framework-internal."""
        self._handlers.clear()
        self._iterating = False

    @property
    def command_handler(self) -> CommandHandler | None:
        """The root command handler, or None. Framework-internal."""
        return self._handlers.get(None)

    @property
    def command_handlers(self) -> dict[str | None, CommandHandler]:
        """All registered command handlers keyed by sub-topic. Framework-internal."""
        return dict(self._handlers)

    def get_command_handler(self, sub_topic: str | None) -> CommandHandler | None:
        """The handler for ``sub_topic`` (None: the device topic)."""
        return self._handlers.get(sub_topic)

    def dispatch(self, command: Command) -> None:
        """Run the handler for ``command`` on this thread; failures are reported, not raised."""
        handler = self._handlers.get(command.sub_topic)
        if handler is None:
            err = LookupError(
                f"device {self.name!r} has no handler for "
                + (
                    "its command topic"
                    if command.sub_topic is None
                    else f"sub-topic {command.sub_topic!r}"
                )
            )
            self._report(err, command)
            return
        ended = self._on_call() if self._on_call is not None else None
        try:
            handler(command)
        except Exception as exc:  # a handler's failure must not end the device
            self._report(exc, command)
        finally:
            if ended is not None:
                ended()

    def _report(self, exc: BaseException, command: Command) -> None:
        if self._on_handler_error is not None:
            self._on_handler_error(exc, command)
        else:
            log.error("command handler of %r failed: %s", self.name, exc, exc_info=exc)


def _adapt_handler(handler: CommandHandler) -> Callable[[Command], Any]:
    """Turn either handler style into one taking a Command."""
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        params = []
    if len(params) == 1:
        try:
            ann = typing.get_type_hints(handler).get(params[0].name)
        except Exception:  # a local forward reference: judge the string
            ann = params[0].annotation
        if ann is Command or (isinstance(ann, str) and ann.rpartition(".")[2] == "Command"):
            return handler
    return lambda cmd: handler(cmd.sub_topic, cmd.payload)
