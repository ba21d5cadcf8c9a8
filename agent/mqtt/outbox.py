"""The outbox: what waits to be handed to paho, in two bounded lanes.

The real client never gives paho more than a small window of messages at a time (see
:mod:`agent.mqtt.paho`); everything else waits here. Two lanes, served in this order:

* **retained** — states, availability, the heartbeat: only the latest value of a retained
  topic matters, so a newer message *replaces* a waiting one for the same topic and moves
  to the back. Bounded by ``capacity`` topics — or ``retained_capacity``, when the owner
  knows it has more retained topics of its own (a state and an availability per device);
  when full, the topic updated least recently is dropped.
* **events** — everything not retained: error reports, a device's own events. Each one is
  its own news, so they wait in order, bounded by ``capacity`` messages; when full, the
  oldest is dropped.

The retained lane always goes first, so a burst of error reports can delay or push out only
other events, never a state, an availability or a heartbeat.

A topic can be *held*: while paho still owes the broker an older message for it (a QoS 1
message from an earlier connection that paho re-sends after a reconnect), nothing newer for
that topic may overtake it, so :meth:`Outbox.peek` skips held topics.

Not thread-safe on its own: the client calls it under its lock.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Container

__all__ = ["Outbox", "Outgoing"]


class Outgoing:
    """One message on its way to the broker (read-only by convention; a plain class, as
    one is built per publish: see ADR-012)."""

    __slots__ = ("payload", "qos", "retain", "topic")

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain

    def __repr__(self) -> str:
        return f"Outgoing({self.topic!r}, {len(self.payload)} bytes, qos={self.qos})"


class Outbox:
    """Two bounded lanes of outgoing messages; see the module docstring."""

    def __init__(self, capacity: int, *, retained_capacity: int | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"outbox capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._retained_capacity = max(capacity, retained_capacity or 0)
        self._retained: OrderedDict[str, Outgoing] = OrderedDict()
        self._events: deque[Outgoing] = deque()

    def put(self, message: Outgoing) -> Outgoing | None:
        """Queue ``message``; returns the message dropped to make room, if any.

        A retained message that replaces a waiting one for its topic drops nothing: the
        older value is superseded, not lost.
        """
        if message.retain:
            if message.topic in self._retained:
                self._retained[message.topic] = message
                self._retained.move_to_end(message.topic)
                return None
            dropped = None
            if len(self._retained) >= self._retained_capacity:
                _, dropped = self._retained.popitem(last=False)
            self._retained[message.topic] = message
            return dropped
        dropped = self._events.popleft() if len(self._events) >= self._capacity else None
        self._events.append(message)
        return dropped

    def put_back(self, message: Outgoing) -> None:
        """Return a message that could not be handed over to the front of its lane.

        A newer retained message for the same topic wins over the one put back.
        """
        if message.retain:
            if message.topic not in self._retained:
                self._retained[message.topic] = message
                self._retained.move_to_end(message.topic, last=False)
        else:
            self._events.appendleft(message)

    def peek(self, held: Container[str] = ()) -> Outgoing | None:
        """The next message whose topic is not ``held`` (retained ones first), left in
        place; None if there is none."""
        for topic, message in self._retained.items():
            if topic not in held:
                return message
        for message in self._events:
            if message.topic not in held:
                return message
        return None

    def events_full(self) -> bool:
        """True when the event lane is at capacity: the next event would push one out."""
        return len(self._events) >= self._capacity

    def events_below(self, fraction: float) -> bool:
        """True when the event lane holds at most ``fraction`` of its capacity."""
        return len(self._events) <= self._capacity * fraction

    def remove(self, message: Outgoing) -> None:
        """Remove ``message``, as :meth:`peek` returned it (no second search for it)."""
        if self._retained.get(message.topic) is message:
            del self._retained[message.topic]
        elif self._events and self._events[0] is message:
            self._events.popleft()  # the usual case: the oldest event
        else:
            self._events.remove(message)

    def has_acknowledged(self) -> bool:
        """True when a waiting message needs the broker's acknowledgement (QoS > 0)."""
        return any(m.qos > 0 for m in self._retained.values()) or any(
            m.qos > 0 for m in self._events
        )

    def __len__(self) -> int:
        return len(self._retained) + len(self._events)
