"""What a built-in device type is: the contract between the daemon and each built-in.

The daemon reads ``[[device]]`` tables from the config file. The keys every device has are
checked by the daemon (:class:`DeviceSpec`): ``type``, ``name``, ``enabled``, ``interval``,
``publish``, ``filter``, ``retry``, ``group``. Everything else in the table belongs to the
type, which checks it (:meth:`DeviceType.check`) and registers the device on a
:class:`~agent.Router` with the public framework API (:meth:`DeviceType.register`) — a
built-in is a plain use of ``agent``, nothing more.

Problems are reported, not raised: :meth:`DeviceType.check` calls ``problem(key, expected,
found)`` for each (``key`` relative to the device's table, e.g. ``"mounts[1]"``), so
``agent check`` can list every mistake of a file at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from agent.router import Router
from agent.strategies import PublishStrategy

__all__ = ["COMMON_KEYS", "DeviceSpec", "DeviceType", "FieldFilter", "Problem"]

COMMON_KEYS = ("type", "name", "enabled", "interval", "publish", "filter", "retry", "group")
"""The keys every ``[[device]]`` table may have; the rest belong to its type."""

Problem = Callable[[str, str, str], None]
"""``problem(key, expected, found)``: report one mistake in a device's table (``found``
already quoted for display, never a secret)."""


class FieldFilter:
    """A signal filter for one numeric field of the state: ``kind`` is ``median``, ``pt1``
    or ``one_euro``, ``params`` its arguments (``window``; ``tau``; ``min_cutoff``, ``beta``,
    ``d_cutoff``). ``dt`` is the device's interval. Read-only by convention."""

    __slots__ = ("field", "kind", "params")

    def __init__(self, field: str, kind: str, params: Mapping[str, float]) -> None:
        self.field = field
        self.kind = kind
        self.params = params

    def __repr__(self) -> str:
        return f"FieldFilter({self.field!r}, {self.kind!r}, {dict(self.params)!r})"


class DeviceSpec:
    """The keys every ``[[device]]`` table has, checked by the daemon (read-only by
    convention: :meth:`but` makes a changed copy).

    ``key`` is where it is in the file, for messages (``"device[2]"``); ``interval`` None
    means the type's default (or none, for command types); ``options`` are the rest of the
    table, the type's own keys.
    """

    __slots__ = (
        "enabled",
        "filters",
        "group",
        "interval",
        "key",
        "name",
        "options",
        "publish",
        "retry",
        "type",
    )

    def __init__(
        self,
        key: str,
        type: str,
        name: str,
        enabled: bool = True,
        interval: float | None = None,
        publish: PublishStrategy | None = None,
        filters: tuple[FieldFilter, ...] = (),
        retry: int = 0,
        group: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.key = key
        self.type = type
        self.name = name
        self.enabled = enabled
        self.interval = interval
        self.publish = publish
        self.filters = filters
        self.retry = retry
        self.group = group
        self.options: Mapping[str, Any] = {} if options is None else options

    def but(self, **changes: Any) -> DeviceSpec:
        """A copy with ``changes`` (keyword arguments of the constructor)."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        return DeviceSpec(**{**fields, **changes})

    def __repr__(self) -> str:
        return f"DeviceSpec({self.key!r}, type={self.type!r}, name={self.name!r})"


class DeviceType(Protocol):
    """A built-in device type (``[[device]] type = "system"``)."""

    name: str
    """The ``type`` value in the config file."""

    default_interval: float | None
    """Seconds between readings when the table gives none; None for a type that only takes
    commands (then ``interval``, ``publish``, ``filter`` and ``retry`` are refused)."""

    def check(self, options: Mapping[str, Any], problem: Problem) -> Any:
        """Check the type's own keys (unknown ones included, with a "did you mean");
        return what :meth:`register` needs (e.g. a small dataclass). Report every problem
        through ``problem``; never raise for a user's mistake."""
        ...

    # Optional: ``fields(options) -> set[str]``, every field the device may publish on any
    # host, when that is more than the entities it declares on this one (``system``). The
    # daemon checks the field names of ``filter`` and ``publish.on_change`` against it, or
    # against the declared entities' fields.

    def register(self, router: Router, spec: DeviceSpec, options: Any) -> None:
        """Register the device on ``router`` with ``router.add_telemetry`` /
        ``add_command`` / ``add_device``: name ``spec.name``, ``enabled``, ``interval``,
        ``publish``, ``retry``, ``group`` from ``spec``, and ``entities=`` for Home
        Assistant. Wrap a telemetry handler with :func:`agent.daemon.filters.filtered` to
        apply ``spec.filters``."""
        ...
