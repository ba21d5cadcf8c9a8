"""What the built-in types share: reading their options, registering a polled device.

Each built-in's :meth:`~agent.daemon.types.DeviceType.check` gets the rest of its
``[[device]]`` table as a plain mapping — whatever the TOML parser made of it: strings,
numbers, booleans, lists, tables, dates. :class:`OptionReader` turns that into typed values
one key at a time. A key that is wrong is reported through ``problem(key, expected, found)``
and its default is used, so the check goes on and ``agent check`` lists every mistake of a
file in one run; an unknown key is reported with the closest known one ("did you mean")::

    read = OptionReader("system", options, problem, known=("mounts", "sysfs_root"))
    mounts = read.strings("mounts", ("/",), absolute_paths=True)
    root = read.absolute_path("sysfs_root", "/sys")

Nothing here raises for a user's mistake, whatever the value is.

:func:`add_polled` registers a telemetry device the way every built-in does: the common keys
of :class:`~agent.daemon.types.DeviceSpec` passed through, the handler wrapped with the
device's signal filters.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent.daemon.filters import filtered
from agent.daemon.types import COMMON_KEYS, DeviceSpec, Problem
from agent.entities import Entity
from agent.registry import DEFAULT, Default
from agent.router import Router
from agent.settings.conversion import _show

__all__ = [
    "HA_KEYS",
    "OptionReader",
    "add_polled",
    "entity_of",
    "field_slug",
    "read_text",
    "show",
]

HA_KEYS = ("unit", "device_class", "state_class", "icon")
"""The Home Assistant keys a type with a user-defined value takes (``file``, ``exec``)."""

_SLUG = re.compile(r"[^A-Za-z0-9_]+")


def show(value: Any) -> str:
    """``value`` quoted for a message: one short line, whatever it is."""
    return _show(value)


def field_slug(text: str) -> str:
    """A state key made of ``text``: ``"/boot/firmware"`` → ``"boot_firmware"``,
    ``"br-lan"`` → ``"br_lan"`` (letters, digits and ``_`` only, so that every consumer —
    a Home Assistant template, a shell script — can name it)."""
    return _SLUG.sub("_", text).strip("_")


def read_text(path: str, *, limit: int = 65536) -> str:
    """The text of a small file (sysfs, procfs, a sensor's value), for a handler to parse.

    The read is bounded: a ``path`` that is a device or a pipe that never ends
    (``/dev/zero``) must not hang a device thread or fill its memory. Raises OSError as
    ``open`` does (missing, no permission: worth retrying, the framework's ``retry``
    catches OSError), ValueError for content no handler could use (longer than ``limit``
    bytes, not UTF-8) — a mistake in the config, not a passing fault.
    """
    with open(path, "rb") as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path}: more than {limit} bytes; expected a short text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None


class OptionReader:
    """Typed access to one device table's own options (see the module docstring).

    Args:
        type_name: the device type, for messages ("an option of system").
        options: the table without the common keys (``type``, ``name``, ``interval`` …).
        problem: where each mistake goes.
        known: every option the type takes; anything else is reported at once.
    """

    def __init__(
        self,
        type_name: str,
        options: Mapping[str, Any],
        problem: Problem,
        *,
        known: Sequence[str],
    ) -> None:
        self.type_name = type_name
        self.problem = problem
        self.count = 0  # problems reported so far (register() is only called at 0)
        if not isinstance(options, Mapping):  # defensive: the daemon always passes a dict
            self.report("", "a table of options", show(options))
            options = {}
        self.options = options
        for key in options:
            if key not in known:
                self.report(str(key), self._unknown(str(key), known), "an unknown key")

    def _unknown(self, key: str, known: Sequence[str]) -> str:
        # A typo may be of a key every device has ("intervall"), not only of the type's.
        close = difflib.get_close_matches(key, [*known, *COMMON_KEYS], n=1, cutoff=0.6)
        if close:
            return f"an option of {self.type_name} (did you mean {json.dumps(close[0])}?)"
        return f"an option of {self.type_name}: {', '.join(known)}"

    def report(self, key: str, expected: str, found: str) -> None:
        """Report one problem (and count it)."""
        self.count += 1
        self.problem(key, expected, found)

    def has(self, key: str) -> bool:
        return key in self.options

    # -- scalars -------------------------------------------------------------------------

    def string(
        self,
        key: str,
        default: str,
        *,
        choices: Sequence[str] | None = None,
        expected: str | None = None,
        pattern: re.Pattern[str] | None = None,
    ) -> str:
        """A string option; ``choices`` or ``pattern`` restrict it."""
        if key not in self.options:
            return default
        value = self.options[key]
        if choices is not None:
            wanted = expected or "one of " + ", ".join(json.dumps(c) for c in choices)
            if not isinstance(value, str) or value not in choices:
                if isinstance(value, str):
                    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
                    if close:
                        wanted += f" (did you mean {json.dumps(close[0])}?)"
                self.report(key, wanted, show(value))
                return default
            return value
        if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
            self.report(key, expected or "a string", show(value))
            return default
        return value

    def optional_string(self, key: str, *, expected: str = "a string") -> str | None:
        """A string option that may be absent (None); an empty string is refused."""
        if key not in self.options:
            return None
        value = self.options[key]
        if not isinstance(value, str) or not value.strip():
            self.report(key, expected, show(value))
            return None
        return value

    def number(
        self,
        key: str,
        default: float,
        *,
        above: float | None = None,
        at_most: float | None = None,
        nonzero: bool = False,
        expected: str | None = None,
    ) -> float:
        """A finite number (TOML integer or float, not a boolean) within the bounds."""
        if key not in self.options:
            return default
        value = self.options[key]
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            try:
                number = float(value)  # an integer of 400 digits overflows
            except OverflowError:
                ok = False
            else:
                ok = (
                    math.isfinite(number)
                    and (above is None or number > above)
                    and (at_most is None or number <= at_most)
                    and (not nonzero or number != 0)
                )
        if not ok:
            if expected is None:
                bounds = []
                if above is not None:
                    bounds.append(f"> {above:g}")
                if at_most is not None:
                    bounds.append(f"<= {at_most:g}")
                if nonzero:
                    bounds.append("not 0")
                expected = "a number" + (f" {' and '.join(bounds)}" if bounds else "")
            self.report(key, expected, show(value))
            return default
        return float(value)

    def integer(self, key: str, default: int, *, minimum: int, maximum: int) -> int:
        """A whole number (a TOML integer, not a float or a boolean) in ``minimum..maximum``."""
        if key not in self.options:
            return default
        value = self.options[key]
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            self.report(key, f"a whole number {minimum}-{maximum}", show(value))
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        if key not in self.options:
            return default
        value = self.options[key]
        if not isinstance(value, bool):
            self.report(key, "true or false", show(value))
            return default
        return value

    def absolute_path(self, key: str, default: str) -> str:
        """A string that is an absolute path without NUL."""
        if key not in self.options:
            return default
        value = self.options[key]
        if not isinstance(value, str) or not os.path.isabs(value) or "\0" in value:
            self.report(key, "an absolute path (starting with /)", show(value))
            return default
        return value

    # -- lists and tables ----------------------------------------------------------------

    def strings(
        self,
        key: str,
        default: Sequence[str],
        *,
        expected: str = "a list of strings",
        item: re.Pattern[str] | None = None,
        item_expected: str = "a non-empty string",
        absolute_paths: bool = False,
        min_items: int = 0,
    ) -> tuple[str, ...]:
        """A list of strings; each item is checked and reported as ``key[N]`` (from 1)."""
        if key not in self.options:
            return tuple(default)
        value = self.options[key]
        if not isinstance(value, list) or len(value) < min_items:
            self.report(key, expected, show(value))
            return tuple(default)
        out: list[str] = []
        for index, entry in enumerate(value, start=1):
            good = isinstance(entry, str) and entry != "" and "\0" not in entry
            if good and absolute_paths:
                good = os.path.isabs(entry)
            if good and item is not None:
                good = item.fullmatch(entry) is not None
            if not good:
                self.report(f"{key}[{index}]", item_expected, show(entry))
                continue
            out.append(entry)
        return tuple(out)

    def table(self, key: str, *, expected: str) -> Mapping[str, Any] | None:
        """A TOML table (None when absent or not a table — the latter reported)."""
        if key not in self.options:
            return None
        value = self.options[key]
        if not isinstance(value, Mapping):
            self.report(key, expected, show(value))
            return None
        return value

    # -- Home Assistant ------------------------------------------------------------------

    def entity_meta(
        self, table: Mapping[str, Any], prefix: str, *, state_class: str | None
    ) -> dict[str, str | None]:
        """``unit``, ``device_class``, ``state_class`` and ``icon`` from ``table`` (the
        device's options, or one field's table; ``prefix`` names it in messages).

        ``state_class = ""`` leaves it out (for a value Home Assistant should not keep
        statistics of). Whether the combination is one Home Assistant accepts is checked
        where discovery is built (:mod:`agent.daemon.homeassistant`), for every device alike.
        """
        meta: dict[str, str | None] = {"state_class": state_class}
        for key in HA_KEYS:
            if key not in table:
                continue
            value = table[key]
            if not isinstance(value, str) or (key != "state_class" and not value.strip()):
                self.report(f"{prefix}{key}", "a string", show(value))
                continue
            if key == "icon" and not value.startswith("mdi:"):
                self.report(f"{prefix}{key}", 'an icon name like "mdi:thermometer"', show(value))
                continue
            meta[key] = value or None
        return meta


def entity_of(field: str, meta: Mapping[str, str | None], *, name: str | None) -> Entity:
    """A sensor entity for ``field`` with the metadata of :meth:`OptionReader.entity_meta`."""
    return Entity(
        field,
        name=name,
        unit=meta.get("unit"),
        device_class=meta.get("device_class"),
        state_class=meta.get("state_class"),
        icon=meta.get("icon"),
    )


def add_polled(
    router: Router,
    spec: DeviceSpec,
    handler: Callable[..., Any],
    *,
    default_interval: float,
    entities: Sequence[Entity],
    timeout: float | Default | None = DEFAULT,
) -> float:
    """Register ``handler`` as the telemetry device ``spec`` describes; return its interval.

    ``interval``, ``publish``, ``retry``, ``group`` and ``enabled`` come from the spec as
    they are; the handler is wrapped so that ``spec.filters`` smooth their fields (with the
    interval as the filters' time step) before the publish strategy sees the reading.
    """
    interval = spec.interval if spec.interval is not None else default_interval
    router.add_telemetry(
        spec.name,
        filtered(handler, spec.filters, interval),
        interval=interval,
        publish=spec.publish,
        enabled=spec.enabled,
        group=spec.group,
        retry=spec.retry,
        timeout=timeout,
        entities=entities,
    )
    return interval
