"""``type = "system"``: the health of the host the agent runs on, on any Linux.

::

    [[device]]
    type = "system"
    name = "pi"
    interval = 60                        # the default
    mounts = ["/", "/boot/firmware"]     # disk use of these mount points (default ["/"])
    interfaces = ["eth0", "wlan0"]       # network byte counters (default: none)
    thermal_zone = "auto"                # or "thermal_zone1", or a zone type: "cpu-thermal"
    sysfs_root = "/sys"                  # for tests against a fake tree
    procfs_root = "/proc"

One flat JSON state, units in the names where they help::

    {"cpu_temperature": 47.2,                      # °C, 0.1 steps
     "load_1": 0.52, "load_5": 0.58, "load_15": 0.59,
     "memory_used_percent": 23.4, "swap_used_percent": 0.0,
     "disk_root_used_percent": 41.7, "disk_boot_firmware_used_percent": 12.0,
     "uptime_s": 350735,
     "net_eth0_rx_bytes": 123456789, "net_eth0_tx_bytes": 2345678,
     "under_voltage": "OFF", "freq_capped": "OFF", "throttled": "OFF",
     "soft_temp_limit": "OFF", "under_voltage_occurred": "ON", ...}

Where each comes from:

* ``cpu_temperature`` — ``<sysfs>/class/thermal/<zone>/temp`` (millidegrees). ``"auto"``
  takes the zone whose ``type`` names the CPU (``cpu-thermal`` on a Pi, ``x86_pkg_temp`` on
  a PC), else the lowest-numbered zone.
* ``load_*`` — ``<procfs>/loadavg``; ``uptime_s`` — ``<procfs>/uptime`` (whole seconds).
* ``memory_used_percent`` — what is not ``MemAvailable`` in ``<procfs>/meminfo`` (what
  ``free`` calls available: page cache counts as free); ``swap_used_percent`` is 0.0 on a
  host without swap, so that its entity does not come and go when ``dphys-swapfile``
  starts after the agent.
* ``disk_<mount>_used_percent`` — ``os.statvfs`` of the real path, as ``df`` computes it
  (the blocks reserved for root count as neither used nor available); ``/`` is ``root``.
* ``net_<interface>_rx_bytes`` / ``_tx_bytes`` — ``<sysfs>/class/net/<if>/statistics``.
  Counters since the interface came up: they restart at 0 after a reboot.
* Raspberry Pi only: the firmware's ``get_throttled`` bits, read from the sysfs file the
  Pi kernel's firmware driver exposes (``<sysfs>/devices/platform/soc/soc:firmware/
  get_throttled``, or the same file under another platform bus on newer boards) — no
  ``vcgencmd``, no ``video`` group. Bits 0-3 are "now" (``under_voltage``,
  ``freq_capped``, ``throttled``, ``soft_temp_limit``), bits 16-19 "has occurred since
  boot" (the same names with ``_occurred``). Without that file, the ``rpi_volt`` hwmon's
  ``in0_lcrit_alarm`` gives ``under_voltage`` alone. They are published as ``"ON"`` /
  ``"OFF"``, Home Assistant's own binary_sensor payloads, so the discovery config and the
  state agree without a template. On other hosts these fields are simply absent.

A part this host does not have (no thermal zone in a container, an interface that is
down and gone, a mount point not mounted) is left out of the state, not reported as an
error: a configured mount or interface that disappears is logged once (WARNING) and once
more when it is back. The device fails — an error payload, availability ``offline`` —
only when nothing at all could be read (a ``procfs_root`` that is not procfs).

Home Assistant entities are declared for every part that can be there: the load, memory,
swap, uptime and the configured disks and interfaces always, the CPU temperature and the
throttling flags when their files exist when the device is registered (so a PC does not
get eight unknown Pi flags). Temperature: ``°C``/``temperature``/``measurement``;
percentages: ``%``/``measurement``; uptime: ``duration``/``s``/``total_increasing`` (a
reboot is a reset, as Home Assistant reads a drop of such a sensor); network counters:
``data_size``/``B``/``total_increasing``; flags: ``binary_sensor``/``problem`` with
payloads ``ON``/``OFF``.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from agent.daemon.builtins._common import (
    OptionReader,
    add_polled,
    field_slug,
    read_text,
    show,
)
from agent.daemon.types import DeviceSpec, Problem
from agent.entities import Entity
from agent.router import Router

__all__ = [
    "SYSTEM",
    "THROTTLE_BITS",
    "TYPES",
    "SystemOptions",
    "SystemType",
    "entities",
    "make_handler",
    "mount_slug",
    "thermal_zone_file",
    "throttle_source",
]

log = logging.getLogger("agent.daemon.system")

KEYS = ("mounts", "interfaces", "thermal_zone", "sysfs_root", "procfs_root")

# Linux refuses interface names longer than 15 bytes, with '/' or whitespace; ':' only
# appears in old alias names, which have no sysfs directory of their own.
_INTERFACE = re.compile(r"(?!\.\.?$)[^/\s:]{1,15}")
_ZONE = re.compile(r"(?!\.\.?$)[^/\s]+")

# Zone types naming the CPU, best first: Raspberry Pi (and most ARM boards), Intel, AMD.
_CPU_ZONE_TYPES = ("cpu-thermal", "cpu_thermal", "x86_pkg_temp", "k10temp", "soc_thermal")

# get_throttled: bit -> field. Bits 0-3 are the state now, 16-19 "since boot".
THROTTLE_BITS = {
    0: "under_voltage",
    1: "freq_capped",
    2: "throttled",
    3: "soft_temp_limit",
    16: "under_voltage_occurred",
    17: "freq_capped_occurred",
    18: "throttled_occurred",
    19: "soft_temp_limit_occurred",
}

_THROTTLE_NAMES = {
    "under_voltage": "Under-voltage",
    "freq_capped": "CPU frequency capped",
    "throttled": "Throttled",
    "soft_temp_limit": "Soft temperature limit",
}


@dataclass(frozen=True)
class SystemOptions:
    """A checked ``system`` table. ``mounts`` and ``interfaces`` pair each configured name
    with the slug its state fields use."""

    mounts: tuple[tuple[str, str], ...] = (("/", "root"),)
    interfaces: tuple[tuple[str, str], ...] = ()
    thermal_zone: str = "auto"
    sysfs_root: str = "/sys"
    procfs_root: str = "/proc"


def mount_slug(path: str) -> str:
    """The ``<mount>`` of ``disk_<mount>_used_percent``: ``/`` → ``root``,
    ``/boot/firmware`` → ``boot_firmware``."""
    return "root" if path.rstrip("/") == "" else field_slug(path)


class SystemType:
    """The ``system`` device type (see the module docstring)."""

    name = "system"
    default_interval: float | None = 60.0

    def check(self, options: Mapping[str, Any], problem: Problem) -> SystemOptions:
        read = OptionReader(self.name, options, problem, known=KEYS)
        mounts = read.strings(
            "mounts",
            ("/",),
            expected='a list of mount points, e.g. ["/", "/boot/firmware"]',
            item_expected="a mount point, an absolute path",
            absolute_paths=True,
        )
        interfaces = read.strings(
            "interfaces",
            (),
            expected='a list of network interfaces, e.g. ["eth0", "wlan0"]',
            item=_INTERFACE,
            item_expected="an interface name as `ip link` shows it (1-15 characters, no / "
            "or spaces)",
        )
        zone = read.string(
            "thermal_zone",
            "auto",
            pattern=_ZONE,
            expected='"auto", a zone ("thermal_zone0") or a zone type ("cpu-thermal")',
        )
        return SystemOptions(
            mounts=_slugged(read, "mounts", mounts, mount_slug, "disk"),
            interfaces=_slugged(read, "interfaces", interfaces, field_slug, "net"),
            thermal_zone=zone,
            sysfs_root=read.absolute_path("sysfs_root", "/sys"),
            procfs_root=read.absolute_path("procfs_root", "/proc"),
        )

    def fields(self, options: SystemOptions) -> set[str]:
        """Every field the device may publish on some host — what a ``filter`` or a
        dead-band may name — including the parts this host lacks (a Pi's config is
        checked on a laptop, where there is no thermal zone and no throttling flag)."""
        declared = {entity.field for entity in entities(options)}
        return declared | {"cpu_temperature", *THROTTLE_BITS.values()}

    def register(self, router: Router, spec: DeviceSpec, options: SystemOptions) -> None:
        add_polled(
            router,
            spec,
            make_handler(options),
            default_interval=self.default_interval or 60.0,
            entities=entities(options),
        )


def _slugged(
    read: OptionReader,
    key: str,
    names: tuple[str, ...],
    slug: Callable[[str], str],
    field_prefix: str,
) -> tuple[tuple[str, str], ...]:
    """Pair each name with its slug; two names giving one state field are a mistake."""
    out: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    values = read.options.get(key)
    # Positions in the file's list, for messages (items already reported are not in names).
    given = list(enumerate(values, 1)) if isinstance(values, list) else list(enumerate(names, 1))
    for index, name in given:
        if name not in names:
            continue
        where = f"{key}[{index}]"
        slugged = slug(name)
        if not slugged:
            read.report(where, "a name with a letter or digit (it names state fields)", show(name))
            continue
        if slugged in seen:
            read.report(
                where,
                f"a name of its own: {show(seen[slugged])} already gives the fields "
                f"{field_prefix}_{slugged}_*",
                show(name),
            )
            continue
        seen[slugged] = name
        out.append((name, slugged))
    return tuple(out)


# -- reading -----------------------------------------------------------------------------


def thermal_zone_file(options: SystemOptions) -> str | None:
    """The ``temp`` file of the zone ``options.thermal_zone`` names, or None."""
    base = os.path.join(options.sysfs_root, "class", "thermal")
    wanted = options.thermal_zone
    if wanted != "auto":
        direct = os.path.join(base, wanted, "temp")
        if os.path.exists(direct):
            return direct
    zones: list[tuple[int, str, str]] = []
    for path in glob.glob(os.path.join(base, "thermal_zone*")):
        number = os.path.basename(path).removeprefix("thermal_zone")
        try:
            kind = read_text(os.path.join(path, "type")).strip()
        except (OSError, ValueError):
            kind = ""
        zones.append((int(number) if number.isdigit() else 1 << 30, kind, path))
    zones.sort()
    if wanted != "auto":
        chosen = [path for _, kind, path in zones if kind == wanted]
    else:
        chosen = [path for preferred in _CPU_ZONE_TYPES for _, k, path in zones if k == preferred]
        chosen += [path for _, kind, path in zones if "cpu" in kind.lower()]
        chosen += [path for _, _, path in zones]
    return os.path.join(chosen[0], "temp") if chosen else None


def throttle_source(sysfs_root: str) -> tuple[str, str] | None:
    """``("firmware", path)`` of the Pi firmware's ``get_throttled``, else
    ``("hwmon", path)`` of the ``rpi_volt`` under-voltage alarm, else None."""
    platform = os.path.join(sysfs_root, "devices", "platform")
    usual = os.path.join(platform, "soc", "soc:firmware", "get_throttled")
    if os.path.exists(usual):
        return ("firmware", usual)
    # Newer boards put the firmware node under another bus (axi, soc@107c000000, ...).
    for path in sorted(glob.glob(os.path.join(platform, "*", "*firmware", "get_throttled"))):
        return ("firmware", path)
    for hwmon in sorted(glob.glob(os.path.join(sysfs_root, "class", "hwmon", "hwmon*"))):
        try:
            name = read_text(os.path.join(hwmon, "name")).strip()
        except (OSError, ValueError):
            continue
        alarm = os.path.join(hwmon, "in0_lcrit_alarm")
        if name == "rpi_volt" and os.path.exists(alarm):
            return ("hwmon", alarm)
    return None


def _number(path: str) -> int:
    text = read_text(path).strip()
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{path}: expected a whole number, found {show(text)}") from None


def _temperature(options: SystemOptions) -> dict[str, Any]:
    path = thermal_zone_file(options)
    if path is None:
        raise FileNotFoundError(f"no thermal zone under {options.sysfs_root}/class/thermal")
    return {"cpu_temperature": round(_number(path) / 1000, 1)}


def _load(options: SystemOptions) -> dict[str, Any]:
    path = os.path.join(options.procfs_root, "loadavg")
    fields = read_text(path).split()
    try:
        one, five, fifteen = (float(x) for x in fields[:3])
    except ValueError:
        raise ValueError(f"{path}: expected three load averages, found {show(fields)}") from None
    return {"load_1": round(one, 2), "load_5": round(five, 2), "load_15": round(fifteen, 2)}


def _meminfo(path: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in read_text(path, limit=1 << 20).splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0])
    return values


def _percent(used: float, total: float) -> float:
    return round(100.0 * used / total, 1)


def _memory(options: SystemOptions) -> dict[str, Any]:
    path = os.path.join(options.procfs_root, "meminfo")
    info = _meminfo(path)
    total = info.get("MemTotal", 0)
    if total <= 0:
        raise ValueError(f"{path}: no MemTotal")
    # Kernels before 3.14 have no MemAvailable: free + buffers + page cache is close.
    available = info.get("MemAvailable")
    if available is None:
        available = info.get("MemFree", 0) + info.get("Buffers", 0) + info.get("Cached", 0)
    swap_total = info.get("SwapTotal", 0)
    swap_used = swap_total - info.get("SwapFree", swap_total)
    return {
        "memory_used_percent": _percent(max(total - available, 0), total),
        "swap_used_percent": _percent(swap_used, swap_total) if swap_total > 0 else 0.0,
    }


def _uptime(options: SystemOptions) -> dict[str, Any]:
    path = os.path.join(options.procfs_root, "uptime")
    fields = read_text(path).split()
    try:
        return {"uptime_s": int(float(fields[0]))}
    except (ValueError, IndexError):
        raise ValueError(f"{path}: expected seconds, found {show(fields)}") from None


def _disk(path: str, slug: str) -> dict[str, Any]:
    stat = os.statvfs(path)
    used = stat.f_blocks - stat.f_bfree
    usable = used + stat.f_bavail
    if usable <= 0:  # an empty pseudo file system (proc, sysfs): nothing to report
        raise ValueError(f"{path}: a file system without blocks")
    return {f"disk_{slug}_used_percent": _percent(used, usable)}


def _net(options: SystemOptions, interface: str, slug: str) -> dict[str, Any]:
    base = os.path.join(options.sysfs_root, "class", "net", interface, "statistics")
    return {
        f"net_{slug}_rx_bytes": _number(os.path.join(base, "rx_bytes")),
        f"net_{slug}_tx_bytes": _number(os.path.join(base, "tx_bytes")),
    }


def _throttling(options: SystemOptions) -> dict[str, Any]:
    source = throttle_source(options.sysfs_root)
    if source is None:
        raise FileNotFoundError("not a Raspberry Pi (no get_throttled, no rpi_volt hwmon)")
    kind, path = source
    text = read_text(path).strip()
    try:
        bits = int(text, 16) if kind == "firmware" else int(text)
    except ValueError:
        raise ValueError(f"{path}: expected a number, found {show(text)}") from None
    if kind == "hwmon":
        return {"under_voltage": "ON" if bits else "OFF"}
    return {name: "ON" if bits >> bit & 1 else "OFF" for bit, name in THROTTLE_BITS.items()}


def make_handler(options: SystemOptions) -> Callable[[], dict[str, Any]]:
    """The telemetry handler of one ``system`` device: reads every part, leaves out what
    cannot be read, raises OSError when nothing could be."""
    parts: list[tuple[str, bool, Callable[[], dict[str, Any]]]] = [
        ("cpu temperature", False, partial(_temperature, options)),
        ("load", False, partial(_load, options)),
        ("memory", False, partial(_memory, options)),
        ("uptime", False, partial(_uptime, options)),
    ]
    for path, slug in options.mounts:
        parts.append((f"mount {path}", True, partial(_disk, path, slug)))
    for interface, slug in options.interfaces:
        parts.append((f"interface {interface}", True, partial(_net, options, interface, slug)))
    parts.append(("throttling", False, partial(_throttling, options)))
    missing: set[str] = set()  # configured parts that failed last time: logged once

    def read_system() -> dict[str, Any]:
        state: dict[str, Any] = {}
        failures: list[str] = []
        for label, configured, read in parts:
            try:
                state.update(read())
            except (OSError, ValueError) as err:
                failures.append(f"{label}: {err}")
                if configured and label not in missing:
                    missing.add(label)
                    log.warning("%s cannot be read, its fields are left out: %s", label, err)
                else:
                    log.debug("%s left out: %s", label, err)
                continue
            if label in missing:
                missing.discard(label)
                log.info("%s can be read again", label)
        if not state:
            raise OSError("nothing could be read: " + "; ".join(failures))
        return state

    return read_system


# -- Home Assistant ----------------------------------------------------------------------


def entities(options: SystemOptions) -> list[Entity]:
    """The entities of a ``system`` device on this host (see the module docstring)."""
    out: list[Entity] = []
    if thermal_zone_file(options) is not None:
        out.append(
            Entity(
                "cpu_temperature",
                name="CPU temperature",
                unit="°C",
                device_class="temperature",
                state_class="measurement",
            )
        )
    for minutes in (1, 5, 15):
        out.append(
            Entity(
                f"load_{minutes}",
                name=f"Load ({minutes} min)",
                state_class="measurement",
                icon="mdi:gauge",
            )
        )
    out.append(
        Entity(
            "memory_used_percent",
            name="Memory used",
            unit="%",
            state_class="measurement",
            icon="mdi:memory",
        )
    )
    out.append(Entity("swap_used_percent", name="Swap used", unit="%", state_class="measurement"))
    for path, slug in options.mounts:
        out.append(
            Entity(
                f"disk_{slug}_used_percent",
                name=f"Disk used {path}",
                unit="%",
                state_class="measurement",
                icon="mdi:harddisk",
            )
        )
    out.append(
        Entity(
            "uptime_s",
            name="Uptime",
            unit="s",
            device_class="duration",
            state_class="total_increasing",
        )
    )
    for interface, slug in options.interfaces:
        for direction, word in (("rx", "received"), ("tx", "sent")):
            out.append(
                Entity(
                    f"net_{slug}_{direction}_bytes",
                    name=f"{interface} {word}",
                    unit="B",
                    device_class="data_size",
                    state_class="total_increasing",
                )
            )
    source = throttle_source(options.sysfs_root)
    if source is not None:
        names = THROTTLE_BITS.values() if source[0] == "firmware" else ("under_voltage",)
        for field in names:
            base = field.removesuffix("_occurred")
            title = _THROTTLE_NAMES[base] + (" since boot" if field != base else "")
            out.append(
                Entity(
                    field,
                    component="binary_sensor",
                    name=title,
                    device_class="problem",
                    payload_on="ON",
                    payload_off="OFF",
                )
            )
    return out


SYSTEM = SystemType()
TYPES = (SYSTEM,)
