"""``type = "file"``: a number (or a JSON object) read from a file — sysfs, hwmon, a value
another program keeps up to date.

::

    [[device]]
    type = "file"
    name = "board"
    path = "/sys/devices/platform/soc/soc:hwmon/hwmon/hwmon*/temp1_input"
    field = "temperature"          # the state's key (default "value")
    scale = 0.001                  # value * scale + offset (defaults 1 and 0)
    offset = 0
    decimals = 1                   # round the result (default: exact, see below)
    unit = "°C"                    # Home Assistant: unit, device_class, state_class, icon
    device_class = "temperature"

State: ``{"temperature": 45.2}``.

* ``path`` (required) is an absolute path. It may hold ``*``, ``?`` or ``[...]`` wildcards,
  which must match exactly one file when it is read: hwmon numbers change from boot to
  boot, the device path above them does not.
* The file holds one number (whitespace around it is fine): an integer stays an integer
  when ``scale`` and ``offset`` leave it alone; otherwise the result is a float, rounded to
  ``decimals`` places when given, else to 12 significant digits so that ``21437 * 0.001``
  is published as ``21.437``, not ``21.437000000000001``.
* ``json = true``: the file holds JSON. A number is read as above; an object is published
  as it is, as the whole state (``field``, ``scale`` and ``offset`` are about one number
  and do not touch it); anything else is refused. The object's fields are not known in
  advance, so ``unit``, ``device_class``, ``state_class`` and ``icon`` are refused with
  ``json = true`` and no Home Assistant entity is declared.

Errors, each an error payload with the device ``offline`` until a good reading: a missing
or unreadable file is an OSError (a sysfs file can come back, so ``retry`` applies); content
that is not a number (or not JSON, not UTF-8, longer than 64 KiB, a wildcard matching
several files) is a ValueError, not retried. The device keeps running either way.

Home Assistant: one sensor entity for ``field`` with the table's ``unit``,
``device_class``, ``state_class`` (default ``measurement``; ``""`` leaves it out) and
``icon``.
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from agent.daemon.builtins._common import (
    HA_KEYS,
    OptionReader,
    add_polled,
    entity_of,
    read_text,
    show,
)
from agent.daemon.types import DeviceSpec, Problem
from agent.router import Router

__all__ = ["FILE", "TYPES", "FileOptions", "FileType", "make_handler", "parse_number"]

KEYS = ("path", "field", "scale", "offset", "decimals", "json", *HA_KEYS)

_FIELD = re.compile(r"[A-Za-z0-9_]+")
_WILDCARD = re.compile(r"[*?\[]")


@dataclasses.dataclass(frozen=True)
class FileOptions:
    """A checked ``file`` table."""

    path: str
    field: str = "value"
    scale: float = 1.0
    offset: float = 0.0
    decimals: int | None = None
    json: bool = False
    meta: Mapping[str, str | None] = dataclasses.field(default_factory=dict)  # the HA keys


class FileType:
    """The ``file`` device type (see the module docstring)."""

    name = "file"
    default_interval: float | None = 60.0

    def check(self, options: Mapping[str, Any], problem: Problem) -> FileOptions:
        read = OptionReader(self.name, options, problem, known=KEYS)
        if read.has("path"):
            path = read.absolute_path("path", "/")
        else:
            read.report("path", "the file to read, an absolute path", "nothing")
            path = "/"
        as_json = read.boolean("json", False)
        meta = read.entity_meta(options, "", state_class="measurement")
        if as_json:
            for key in HA_KEYS:
                if read.has(key):
                    read.report(
                        key,
                        "no Home Assistant keys with json = true (the state's fields are the "
                        "file's own)",
                        show(options[key]),
                    )
        return FileOptions(
            path=path,
            field=read.string(
                "field",
                "value",
                pattern=_FIELD,
                expected="a state key: letters, digits and _",
            ),
            scale=read.number("scale", 1.0, nonzero=True),
            offset=read.number("offset", 0.0),
            decimals=read.integer("decimals", 0, minimum=0, maximum=12)
            if read.has("decimals")
            else None,
            json=as_json,
            meta=meta,
        )

    def register(self, router: Router, spec: DeviceSpec, options: FileOptions) -> None:
        add_polled(
            router,
            spec,
            make_handler(options),
            default_interval=self.default_interval or 60.0,
            entities=[] if options.json else [entity_of(options.field, options.meta, name=None)],
        )


def resolve(path: str) -> str:
    """``path`` itself, or the one file its wildcards match (see the module docstring)."""
    if not _WILDCARD.search(path):
        return path
    matches = sorted(glob.glob(path))
    if not matches:
        raise FileNotFoundError(errno.ENOENT, "no file matches", path)
    if len(matches) > 1:
        shown = ", ".join(matches[:3]) + (", ..." if len(matches) > 3 else "")
        raise ValueError(f"{path} matches {len(matches)} files ({shown}); make it match one")
    return matches[0]


def parse_number(text: str, where: str) -> int | float:
    """The one number in ``text`` (an int when it is written as one); ValueError else."""
    stripped = text.strip()
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        number = float(stripped)
    except ValueError:
        raise ValueError(f"{where}: expected a number, found {show(stripped)}") from None
    if not math.isfinite(number):  # float() takes "nan" and "inf": no reading is either
        raise ValueError(f"{where}: expected a finite number, found {show(stripped)}")
    return number


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e400: valid JSON, but no reading, and not publishable
        raise ValueError(f"{text} is too large for a number")
    return number


def make_handler(options: FileOptions) -> Callable[[], dict[str, Any]]:
    """The telemetry handler of one ``file`` device."""

    def scaled(number: int | float) -> int | float:
        if isinstance(number, int) and options.scale == 1 and options.offset == 0:
            return number
        value = number * options.scale + options.offset
        if options.decimals is not None:
            return round(value, options.decimals) if options.decimals else round(value)
        return float(f"{value:.12g}")

    def read_file() -> dict[str, Any]:
        path = resolve(options.path)
        text = read_text(path)
        if not options.json:
            return {options.field: scaled(parse_number(text, path))}
        try:
            data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
        except RecursionError:
            raise ValueError(f"{path}: JSON nested too deeply") from None
        except ValueError as err:  # json.JSONDecodeError too
            raise ValueError(f"{path}: not JSON: {err}") from None
        if isinstance(data, dict):
            return data
        if isinstance(data, int | float) and not isinstance(data, bool):
            return {options.field: scaled(data)}
        raise ValueError(
            f"{path}: expected a JSON object or number, found {type(data).__name__} {show(data)}"
        )

    return read_file


FILE = FileType()
TYPES = (FILE,)
