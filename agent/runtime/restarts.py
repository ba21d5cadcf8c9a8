"""Restart budgets: how often a device or an adapter may be restarted before agent gives up.

The App's four knobs (the reference's, applied to adapters *and* devices here):

* ``restart_after_failures`` (5) — a telemetry or command handler that failed this many calls
  in a row (a success breaks the streak) is restarted: its ``init`` runs again;
* ``restart_cooldown`` (5 s) — the wait before each restart;
* ``max_restarts`` (3) — restarts allowed; once spent, the device (or adapter) is given up;
  ``None``: never given up (the daemon's choice: a sensor unplugged for a day must work
  again when it is plugged back in, without a service restart);
* ``max_restart_cooldown`` (None) — when set, the cooldown doubles with each restart of a
  streak (5, 10, 20 … s) up to this many seconds, so a device that cannot start (a pin not
  on this board) retries ever more rarely instead of every few seconds;
* ``sustained_health_reset`` (300 s) — that long without a failure (any failed call, not
  only restarts), and the count starts again from zero: a device that fails once a week is
  never given up.

A ``@app.device`` loop that raises, or returns while the agent is not shutting down and
without command handlers, is restarted the same way, under the same budget. Time is the
clock port's.
"""

from __future__ import annotations

from agent.clock import ClockPort

__all__ = ["RestartBudget", "RestartPolicy"]


class RestartPolicy:
    """The App's restart settings (see the module docstring).

    Read-only by convention (nothing enforces it): the values are validated once, here.
    """

    __slots__ = ("after_failures", "cooldown", "max_cooldown", "max_restarts", "sustained_reset")

    def __init__(
        self,
        after_failures: int = 5,
        max_restarts: int | None = 3,
        cooldown: float = 5.0,
        sustained_reset: float = 300.0,
        max_cooldown: float | None = None,
    ) -> None:
        self.after_failures = after_failures
        self.max_restarts = max_restarts
        self.cooldown = cooldown
        self.sustained_reset = sustained_reset
        self.max_cooldown = max_cooldown
        for name in ("after_failures", "max_restarts"):
            value = getattr(self, name)
            if name == "max_restarts" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{_arg(name)} must be a whole number >= 0, got {value!r}")
        if self.after_failures < 1:
            raise ValueError(f"restart_after_failures must be >= 1, got {self.after_failures}")
        for name in ("cooldown", "sustained_reset", "max_cooldown"):
            value = getattr(self, name)
            if name == "max_cooldown" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"{_arg(name)} must be a number of seconds >= 0, got {value!r}")

    def __repr__(self) -> str:
        return (
            f"RestartPolicy(after_failures={self.after_failures!r}, "
            f"max_restarts={self.max_restarts!r}, cooldown={self.cooldown!r}, "
            f"sustained_reset={self.sustained_reset!r}, max_cooldown={self.max_cooldown!r})"
        )

    def cooldown_before(self, restart: int) -> float:
        """The wait before restart number ``restart`` (1-based) of a streak."""
        if self.max_cooldown is None:
            return self.cooldown
        return min(self.cooldown * 2.0 ** min(max(restart - 1, 0), 60), self.max_cooldown)

    def restart_text(self, restart: int) -> str:
        """``restart 2 of 3`` (or ``restart 2`` when there is no limit), for the log."""
        if self.max_restarts is None:
            return f"restart {restart}"
        return f"restart {restart} of {self.max_restarts}"

    def worth_logging(self, restart: int) -> bool:
        """True for the restarts to log at WARNING: all of a bounded budget; the 1st, 2nd,
        4th, 8th … of an unlimited one, so a device down for a week does not fill the
        journal (the others go to DEBUG)."""
        if self.max_restarts is not None:
            return True
        return restart >= 1 and restart & (restart - 1) == 0


def _arg(name: str) -> str:
    return {
        "after_failures": "restart_after_failures",
        "max_restarts": "max_restarts",
        "cooldown": "restart_cooldown",
        "sustained_reset": "sustained_health_reset",
        "max_cooldown": "max_restart_cooldown",
    }[name]


class RestartBudget:
    """The restarts one device or adapter has used. Not thread-safe: one owner."""

    def __init__(self, policy: RestartPolicy, clock: ClockPort) -> None:
        self.policy = policy
        self._clock = clock
        self.restarts = 0
        self._last_trouble = clock.now()  # the last failure or (re)start

    def spend(self) -> bool:
        """A failure calls for a restart: True if one is allowed (and counted), False when
        the budget is spent. A failure after ``sustained_reset`` healthy seconds first
        resets the count."""
        now = self._clock.now()
        if now - self._last_trouble >= self.policy.sustained_reset:
            self.restarts = 0
        self._last_trouble = now
        limit = self.policy.max_restarts
        if limit is not None and self.restarts >= limit:
            return False
        self.restarts += 1
        return True

    def failed(self) -> None:
        """A failure that does not (yet) call for a restart: healthy time starts after it.
        Without this, a slow device (five failed readings two minutes apart) would look
        healthy for ``sustained_reset`` at each restart, and its count — with it the
        growing cooldown and the thinned-out log — would start again every time."""
        self._last_trouble = self._clock.now()

    def restarted(self) -> None:
        """The restart happened: healthy time counts from now."""
        self._last_trouble = self._clock.now()
