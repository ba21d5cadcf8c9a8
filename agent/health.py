"""Heartbeats and availability: telling MQTT (and Home Assistant) that the agent is alive.

Three signals, all retained QoS 1 so a consumer that connects later still sees them:

* ``{prefix}/status``: a JSON heartbeat while the agent runs::

      {"status": "online", "uptime_s": 12.3, "version": "0.1.0",
       "devices": {"gas": {"status": "ok"}, "pump": {"status": "error", "skipped_ticks": 2}}}

  and plain ``offline`` on clean shutdown, or from the broker as the last will
  (:func:`build_will_config`) when the agent dies or loses its connection.
* ``{prefix}/{device}/availability`` (root device: ``{prefix}/availability``): ``online`` /
  ``offline`` per device.

Uptime is measured on the monotonic :class:`agent.clock.ClockPort` (a wall-clock jump after
NTP sync must not make it negative or huge) and rounded to 0.1 s: finer digits are noise in
a heartbeat sent every minute, and a retained payload that changes less churns less.

Every publication is fire-and-forget: failures are logged, never raised, because losing
one heartbeat is better than losing the device thread that tried to send it.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from agent.clock import utc_now
from agent.mqtt.port import WillConfig
from agent.topics import Topics

if TYPE_CHECKING:
    from agent.clock import ClockPort
    from agent.mqtt.port import MqttPort

__all__ = [
    "DeviceStatus",
    "HealthReporter",
    "HeartbeatPayload",
    "build_will_config",
]

logger = logging.getLogger(__name__)

ONLINE = "online"
OFFLINE = "offline"


@dataclass(frozen=True)
class DeviceStatus:
    """One device's health in the heartbeat.

    ``status`` is ``starting`` (not announced yet: the heartbeat sent on connecting, before
    the device threads are up), ``ok``, ``busy`` (slower than its interval: ticks skipped),
    ``error`` (its last call failed), ``stalled`` (a call is past its timeout),
    ``circuit_open``, ``restarting`` (waiting for its restart) or ``offline`` (given up).
    The counters:
    ``skipped_ticks``; ``failures`` — handler calls failed in a row; ``last_error`` — the
    exception type of the last failure; ``last_success`` — ISO-8601 UTC time of the last good
    call; ``restarts`` made. :meth:`to_dict` shows only what is set, to keep a 1,000-device
    heartbeat small.
    """

    status: str = "ok"
    skipped_ticks: int = 0
    failures: int = 0
    last_error: str | None = None
    last_success: str | None = None
    restarts: int = 0

    def to_dict(self) -> dict[str, object]:
        """Return ``{"status": ...}`` plus the fields that are set (non-zero, not None)."""
        out: dict[str, object] = {"status": self.status}
        for name in ("skipped_ticks", "failures", "last_error", "last_success", "restarts"):
            value = getattr(self, name)
            if value:
                out[name] = value
        return out


@dataclass(frozen=True)
class HeartbeatPayload:
    """An app-level status snapshot, ready for JSON and MQTT. Immutable."""

    status: str
    uptime_s: float
    version: str
    devices: dict[str, DeviceStatus] = field(default_factory=dict)
    agent: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """Return plain JSON data, device entries expanded by :meth:`DeviceStatus.to_dict`,
        then the agent's own figures (``mqtt``, ``threads``, ``rss_bytes``, ``adapters``)."""
        return {
            "status": self.status,
            "uptime_s": self.uptime_s,
            "version": self.version,
            "devices": {name: status.to_dict() for name, status in self.devices.items()},
            **self.agent,
        }

    def to_json(self) -> str:
        """Serialise to a compact JSON string."""
        return json.dumps(self.to_dict(), separators=(",", ":"))


class _Tracked:
    __slots__ = ("announced", "is_root", "online", "status", "succeeded_at")

    def __init__(
        self,
        status: DeviceStatus,
        is_root: bool,
        announced: bool,
        online: bool = True,
        succeeded_at: datetime.datetime | None = None,
    ) -> None:
        self.status = status  # last_success aside: see succeeded_at
        self.is_root = is_root
        # "online" was published for it, so shutdown owes it an "offline"
        self.announced = announced
        self.online = online  # what its availability topic says now
        # The last good call. Every call sets it, so it is formatted only when read (current()).
        self.succeeded_at = succeeded_at

    def current(self) -> DeviceStatus:
        if self.succeeded_at is None:
            return self.status
        return replace(self.status, last_success=_stamp(self.succeeded_at))


@dataclass(eq=False)
class HealthReporter:
    """Publishes the heartbeat and per-device availability, and tracks device health.

    Thread-safe: device threads and the scheduler thread call it concurrently. State is
    read and changed under a lock; publishing happens outside it, so a slow MQTT port never
    blocks a thread that only updates a status.

    Devices become *tracked* through :meth:`publish_device_available` (and, for the
    heartbeat only, :meth:`set_device_status`). :meth:`devices` lists those whose
    availability was announced, for re-announcing them after a reconnect.
    """

    mqtt: MqttPort
    topic_prefix: str
    version: str
    clock: ClockPort
    _topics: Topics = field(init=False, repr=False)
    _started: float = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)
    _tracked: dict[str, _Tracked] = field(init=False, repr=False, default_factory=dict)
    _shut_down: bool = field(init=False, repr=False, default=False)
    _agent_info: Callable[[], dict[str, object]] | None = field(
        init=False, repr=False, default=None
    )
    _held_offline: Callable[[str], bool] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self._topics = Topics(self.topic_prefix)
        self._started = self.clock.now()

    # -- tracking -----------------------------------------------------------------------

    def set_device_status(
        self, device: str, status: str = "ok", *, skipped_ticks: int | None = None
    ) -> None:
        """Update (or add) a device's status; ``skipped_ticks=None`` keeps the counter."""
        with self._lock:
            entry = self._entry(device)
            ticks = entry.status.skipped_ticks if skipped_ticks is None else skipped_ticks
            if entry.status.status != status or entry.status.skipped_ticks != ticks:
                # every cycle calls this: no churn when nothing changed
                entry.status = replace(entry.status, status=status, skipped_ticks=ticks)

    def record_call(self, device: str, error: BaseException | None = None) -> None:
        """Count a handler call: a success resets ``failures`` and stamps ``last_success``
        (wall clock, for people); a failure counts and names its type."""
        with self._lock:
            entry = self._entry(device)
            if error is None:
                entry.succeeded_at = utc_now()
                if entry.status.failures:
                    entry.status = replace(entry.status, failures=0)
            else:
                entry.status = replace(
                    entry.status,
                    failures=entry.status.failures + 1,
                    last_error=type(error).__name__,
                )

    def set_restarts(self, device: str, restarts: int) -> None:
        with self._lock:
            entry = self._entry(device)
            entry.status = replace(entry.status, restarts=restarts)

    def status_of(self, device: str) -> DeviceStatus | None:
        with self._lock:
            entry = self._tracked.get(device)
            return entry.current() if entry is not None else None

    def hold_offline(self, held: Callable[[str], bool] | None) -> None:
        """``held(device)`` True keeps the device ``offline`` whatever it announces itself
        (an adapter it uses is down); its ``online`` waits for the hold's end."""
        self._held_offline = held

    def set_agent_info(self, provider: Callable[[], dict[str, object]] | None) -> None:
        """Add the agent's own figures to every heartbeat (called when one is built)."""
        self._agent_info = provider

    def _entry(self, device: str) -> _Tracked:
        entry = self._tracked.get(device)
        if entry is None:
            entry = self._tracked[device] = _Tracked(DeviceStatus(), False, False)
        return entry

    def remove_device(self, device: str) -> None:
        """Stop tracking ``device`` (publishes nothing). Unknown names are ignored."""
        with self._lock:
            self._tracked.pop(device, None)

    def devices(self) -> list[tuple[str, bool]]:
        """Return ``(name, is_root)`` of every device announced ``online`` and still tracked."""
        with self._lock:
            return [(name, e.is_root) for name, e in self._tracked.items() if e.announced]

    def republish_availability(self) -> None:
        """Publish every announced device's current availability again (after a reconnect:
        a device that is ``offline`` because its readings fail must stay ``offline``)."""
        with self._lock:
            current = [
                (name, e.is_root, e.online) for name, e in self._tracked.items() if e.announced
            ]
        for name, is_root, online in current:
            self._publish(self._topics.availability(name, is_root), ONLINE if online else OFFLINE)

    # -- availability -------------------------------------------------------------------

    def expect(self, device: str, *, is_root: bool = False) -> None:
        """List ``device`` in the heartbeat as ``starting`` until it announces itself: the
        heartbeat sent on connecting, before the device threads are up, must not say the
        agent has no devices. Publishes nothing."""
        with self._lock:
            if device not in self._tracked:
                self._tracked[device] = _Tracked(
                    DeviceStatus(status="starting"), is_root, announced=False, online=False
                )

    def is_online(self, device: str) -> bool:
        """True when ``device``'s availability topic says ``online`` (it was announced and
        not taken down since)."""
        with self._lock:
            entry = self._tracked.get(device)
            return entry is not None and entry.announced and entry.online

    def publish_device_available(self, device: str, *, is_root: bool = False) -> None:
        """Publish ``online`` on the device's availability topic and track it as ``ok``.

        Announcing again (after a reconnect) resets the status to ``ok`` but keeps the
        counters: they count since the agent started.
        """
        held = self._held_offline is not None and self._held_offline(device)
        with self._lock:
            old = self._tracked.get(device)
            status = replace(old.status, status="ok") if old is not None else DeviceStatus()
            self._tracked[device] = _Tracked(
                status,
                is_root,
                announced=True,
                online=not held,
                succeeded_at=old.succeeded_at if old is not None else None,
            )
            # The last of the devices expected at start-up is up: say so now rather than a
            # heartbeat interval later (the one sent on connecting said "starting").
            last_started = (
                old is not None
                and old.status.status == "starting"
                and not any(e.status.status == "starting" for e in self._tracked.values())
            )
        if not held:
            self._publish(self._topics.availability(device, is_root), ONLINE)
        if last_started:
            self.publish_heartbeat()

    def publish_device_unavailable(
        self, device: str, *, is_root: bool = False, keep_tracking: bool = False
    ) -> None:
        """Publish ``offline`` on the device's availability topic and stop tracking it —
        or, with ``keep_tracking`` (a device that runs but whose readings fail), keep it in
        the heartbeat and owe it ``online`` again when :meth:`publish_device_available`
        is called."""
        with self._lock:
            entry = self._tracked.get(device)
            if keep_tracking and entry is not None:
                entry.online = False
            else:
                self._tracked.pop(device, None)
        self._publish(self._topics.availability(device, is_root), OFFLINE)

    # -- heartbeat ----------------------------------------------------------------------

    def build_heartbeat(self) -> HeartbeatPayload:
        """Return the current heartbeat: ``online``, uptime (0.1 s), version, devices."""
        uptime = round(max(0.0, self.clock.now() - self._started), 1)
        with self._lock:
            devices = {name: entry.current() for name, entry in self._tracked.items()}
        provider = self._agent_info
        agent = provider() if provider is not None else {}
        return HeartbeatPayload(ONLINE, uptime, self.version, devices, agent)

    def publish_heartbeat(self) -> None:
        """Publish the heartbeat JSON, retained, to ``{prefix}/status``.

        After :meth:`shutdown` it does nothing: a late tick of the scheduler must not
        overwrite the retained ``offline`` with ``online``.
        """
        with self._lock:
            if self._shut_down:
                logger.debug("heartbeat skipped: health reporter is shut down")
                return
        try:
            payload = self.build_heartbeat().to_json()
        except Exception:
            logger.exception("could not build the heartbeat")
            return
        self._publish(self._topics.status, payload)

    def shutdown(self) -> None:
        """Publish ``offline`` for every announced device, then ``offline`` on the status
        topic, and forget all devices. Later heartbeats are suppressed.
        """
        with self._lock:
            self._shut_down = True
            announced = [(n, e.is_root) for n, e in self._tracked.items() if e.announced]
            self._tracked.clear()
        for device, is_root in announced:
            self._publish(self._topics.availability(device, is_root), OFFLINE)
        self._publish(self._topics.status, OFFLINE)

    # -- internals ----------------------------------------------------------------------

    def _publish(self, topic: str, payload: str) -> None:
        try:
            self.mqtt.publish(topic, payload, retain=True, qos=1)
        except Exception as exc:
            logger.warning("could not publish to %s: %r", topic, exc)


def _stamp(moment: datetime.datetime) -> str:
    return moment.replace(microsecond=0).isoformat()


def build_will_config(topic_prefix: str) -> WillConfig:
    """Return the app's last will: ``offline`` to ``{topic_prefix}/status``, QoS 1, retained.

    Give it to the MQTT client so the broker announces the agent's death (a crash, a lost
    network) that the agent itself can no longer report.
    """
    return WillConfig(topic=Topics(topic_prefix).status, payload=OFFLINE, qos=1, retain=True)
