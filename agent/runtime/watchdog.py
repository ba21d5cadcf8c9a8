"""systemd integration of a run: READY, STATUS, STOPPING and the watchdog's pings.

Under ``Type=notify`` (see :mod:`agent.systemd`) the runtime says ``READY=1`` once the config
is validated, adapters entered, the lifespan and ``on_configure`` hooks run and the device
threads started — not waiting for the broker, since a Pi must boot without a network;
``STATUS=`` with a one-line summary whenever it changes (checked every second);
``STOPPING=1`` when shutdown begins; and, with ``WatchdogSec=`` in the unit, ``WATCHDOG=1`` at
half that interval — but only while the :class:`~agent.runtime.supervisor.Supervisor` finds
the agent sound. A wedged agent stops pinging and systemd restarts it.

The pings are timed in real seconds on a thread of their own (``watchdog``): they answer to
systemd's clock, not to the agent's clock port, and must go on when the scheduler is stuck —
that is exactly what they report. Outside systemd nothing here runs.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from agent.health import HealthReporter
from agent.runtime.supervisor import Supervisor
from agent.systemd import Notifier, NullNotifier

__all__ = ["SystemdLink", "status_line"]

log = logging.getLogger("agent.watchdog")


def status_line(health: HealthReporter, mqtt_connected: bool | None) -> str:
    """``"3 devices: 2 ok, 1 stalled (meter); MQTT connected"`` from the heartbeat's view."""
    beat = health.build_heartbeat()
    counts = Counter(status.status for status in beat.devices.values())
    troubled = sorted(n for n, s in beat.devices.items() if s.status not in ("ok", "busy"))
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    line = f"{len(beat.devices)} device(s): {parts or 'none'}"
    if troubled:
        shown = ", ".join(troubled[:3]) + (" …" if len(troubled) > 3 else "")
        line += f" ({shown})"
    if mqtt_connected is not None:
        line += f"; MQTT {'connected' if mqtt_connected else 'not connected'}"
    return line


class SystemdLink:
    """Tells systemd how the run is doing (see the module docstring)."""

    def __init__(self, notifier: Notifier, supervisor: Supervisor) -> None:
        self.notifier = notifier
        self._supervisor = supervisor
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._withheld: str | None = None

    @property
    def active(self) -> bool:
        """False outside systemd: then there is nothing to compute or send."""
        return not isinstance(self.notifier, NullNotifier)

    def ready(self) -> None:
        self.notifier.ready()
        interval = self.notifier.watchdog_interval
        if interval is not None:
            self._thread = threading.Thread(
                target=self._ping, args=(interval,), name="watchdog", daemon=True
            )
            self._thread.start()

    def status(self, line: str) -> None:
        self.notifier.status(line)

    def stopping(self) -> None:
        self.notifier.stopping()

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.notifier.close()

    def _ping(self, interval: float) -> None:
        try:
            while not self._stop.wait(interval):
                problem = self._supervisor.unsound()
                if problem is None:
                    if self._withheld is not None:
                        log.warning("watchdog pings resume: %s is over", self._withheld)
                        self._withheld = None
                    self.notifier.watchdog()
                elif problem != self._withheld:
                    log.error("withholding the systemd watchdog ping: %s", problem)
                    self._withheld = problem
        except BaseException:  # never die silently
            log.critical("the watchdog thread crashed", exc_info=True)
            raise
