"""Inbound routing: command topic → the device's inbox. Runs on paho's network thread.

Everything here is quick and never blocks: parse the topic, check the payload, put a
``Command`` into a bounded inbox. Bad input (oversized or non-UTF-8 payloads, unknown
devices, a full queue) is reported through the :class:`~agent.runtime.reporting.Reporter`
— log and error payload, at a bounded rate — and dropped; the devices keep serving.

Two kinds of message are not commands and are ignored without an error report: a
*retained* one (it would replay at every reconnect: a warning says how to clear it), and an
*empty* one — which is exactly what clearing a retained command looks like, since the broker
forwards the empty retained publish to current subscribers as a live message (DEBUG log).

Three wildcard subscriptions cover every command topic (``{prefix}/set``, ``{prefix}/+/set``,
``{prefix}/+/+/set``). They never overlap, so the broker delivers each message once, and the
routing by name happens here.
"""

from __future__ import annotations

import logging

from agent.clock import ClockPort
from agent.context import Command
from agent.errors import CommandQueueFull, InvalidPayload, PayloadTooLarge
from agent.runtime.inbox import Inbox
from agent.runtime.reporting import Reporter
from agent.topics import Topics, filter_matches

log = logging.getLogger("agent.routing")


class Route:
    """Where commands for one device go (read-only by convention)."""

    __slots__ = ("inbox", "is_root", "name")

    def __init__(self, name: str, is_root: bool, inbox: Inbox) -> None:
        self.name = name
        self.is_root = is_root
        self.inbox = inbox


class Router:
    """Maps inbound messages on command topics to device inboxes."""

    def __init__(
        self,
        topics: Topics,
        routes: list[Route],
        *,
        reporter: Reporter,
        clock: ClockPort,
        max_payload_bytes: int,
    ) -> None:
        self._topics = topics
        self._named = {r.name: r for r in routes if not r.is_root}
        self._root = next((r for r in routes if r.is_root), None)
        self._reporter = reporter
        self._clock = clock
        self._max = max_payload_bytes
        self._dotted = _dotted_patterns(topics.prefix, list(self._named))

    def subscriptions(self) -> list[str]:
        if not self._named and self._root is None:
            return []
        p = self._topics.prefix
        return [f"{p}/set", f"{p}/+/set", f"{p}/+/+/set"]

    def _resolve(self, first: str | None, second: str | None) -> tuple[Route | None, str | None]:
        if first is None:
            return self._root, None
        if first in self._named:
            return self._named[first], second
        if second is None and self._root is not None:
            return self._root, first  # {prefix}/{sub}/set of the root device
        return None, None

    def _reject(
        self,
        error: BaseException,
        route: Route | None,
        details: dict[str, object],
        *,
        count_key: str | None = None,
        shown: str | None = None,
    ) -> None:
        """Report the rejected message (rate-limited); the message is dropped. ``shown`` is
        the topic as the log line shows it (default: as it is)."""
        name, is_root = (route.name, route.is_root) if route is not None else (None, False)
        self._reporter.report(
            error,
            device=name,
            is_root=is_root,
            details=details,
            log=log,
            message=f"rejected a command on {shown or details.get('topic', '?')}: {error}",
            count_key=count_key,
        )

    def _dot_problem(self, topic: str) -> str | None:
        """Why ``topic``, no command of ours, may be one all the same: one of our command
        topics as a broker that splits levels at dots delivers it; or None."""
        if not any(filter_matches(pattern, topic) for pattern in self._dotted):
            return None
        return (
            "it looks like one of ours with each '.' made a level separator, as RabbitMQ "
            "does (it routes MQTT on AMQP keys): on such a broker use no dots in "
            "mqtt.topic_prefix, device names or sub-topics (docs/rabbitmq.md)"
        )

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        parsed = self._topics.parse_command(topic)
        if self._dotted and (parsed is None or self._resolve(*parsed)[0] is None):
            dotted = self._dot_problem(topic)
            if dotted is not None:
                if retained or not payload:  # no command, as below
                    log.debug("ignored a retained or empty message on %s", topic)
                else:
                    self._reject(LookupError(dotted), None, {"topic": topic})
                return
        if parsed is None:
            problem = self._topics.command_topic_problem(topic)
            if problem is not None:  # delivered by our subscriptions, but no command
                self._reject(
                    LookupError(f"not a command topic: {problem}"),
                    None,
                    {"topic": topic},
                    shown=ascii(topic),  # the log line gets no raw control characters
                )
            return
        route, sub = self._resolve(*parsed)
        if retained:
            log.warning(
                "ignored a retained command on %s: retained commands would replay at every "
                "reconnect; publish commands with retain=false (clear it with an empty "
                "retained message)",
                topic,
            )
            return
        if not payload:
            log.debug("ignored an empty message on %s: an empty payload is not a command", topic)
            return
        if route is None:
            self._reject(
                LookupError(f"no device accepts commands on {topic}"), None, {"topic": topic}
            )
            return
        if len(payload) > self._max:
            self._reject(
                PayloadTooLarge(
                    f"command payload of {len(payload)} bytes exceeds the limit of {self._max}"
                ),
                route,
                {"topic": topic, "size": len(payload)},
            )
            return
        try:
            text = payload.decode("utf-8") if isinstance(payload, bytes) else str(payload)
        except UnicodeDecodeError as exc:
            self._reject(
                InvalidPayload(
                    f"command payload is not UTF-8 text: {exc.reason} at byte {exc.start}"
                ),
                route,
                {"topic": topic},
            )
            return
        command = Command(
            topic=topic,
            payload=text,
            device=route.name,
            sub_topic=sub,
            received_at=self._clock.now(),
        )
        dropped = route.inbox.put_command(command)
        if dropped is command:
            return  # the device is shutting down
        if isinstance(dropped, Command):
            self._reject(
                CommandQueueFull(
                    f"command queue of {route.name!r} is full ({route.inbox.capacity} "
                    "pending): the oldest pending commands are dropped to make room"
                ),
                route,
                {"topic": topic, "dropped_topic": dropped.topic},
                count_key="dropped",
            )


def _dotted_patterns(prefix: str, names: list[str]) -> list[str]:
    """Our command topics as a broker that treats ``.`` as a level separator delivers them
    (``a.b/valve/set`` comes as ``a/b/valve/set``); empty when no name has a dot, as on
    every broker but RabbitMQ nothing more is to be said.

    Only those our subscriptions still catch there: ``{prefix}/+/+/set`` has as many levels
    as the prefix split at its dots, plus three. A sub-topic of a device whose name has a
    dot is one level more: such a broker never delivers it (docs/rabbitmq.md).
    """
    if "." not in prefix and not any("." in name for name in names):
        return []
    ours = [f"{prefix}/set", f"{prefix}/+/set", f"{prefix}/+/+/set"]
    ours += [f"{prefix}/{name}/{tail}" for name in names for tail in ("set", "+/set")]
    deepest = len(prefix.replace(".", "/").split("/")) + 3
    flat = {topic.replace(".", "/") for topic in ours if "." in topic}
    return sorted(topic for topic in flat if len(topic.split("/")) <= deepest)
