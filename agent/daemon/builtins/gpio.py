"""``type = "gpio_input"`` and ``type = "gpio_output"``: a GPIO pin of a Raspberry Pi, through
gpiozero (Raspberry Pi OS ships it; elsewhere ``sudo apt install python3-gpiozero`` or ``pip
install gpiozero``).

::

    [[device]]
    type = "gpio_input"
    name = "door"
    pin = 17                 # BCM number 0-27, or a gpiozero pin name: "GPIO17", "BOARD11", "J8:11"
    pull = "up"              # "up" (the default), "down" or "none" (an external resistor)
    active_low = true        # ON while the pin is low; default: true with pull "up", else false
    debounce = 0.05          # seconds the level must hold before a change counts (0: every edge)
    device_class = "door"    # Home Assistant's binary_sensor class (optional), icon = "mdi:..."

    [[device]]
    type = "gpio_output"
    name = "heater"
    pin = 18
    active_low = false       # true: the load is on while the pin is low (most relay boards)
    initial = "off"          # "off" (the default), "on", or "restore": as before the restart
    device_class = "switch"  # or "outlet" (optional), icon = "mdi:..."

**What is published.** Both publish ``{"state": "ON"}`` or ``{"state": "OFF"}`` retained on
``{prefix}/{name}/state`` when they start and after every change. An input also publishes
each change as an event, not retained, on ``{prefix}/{name}/event``::

    {"event": "activated", "state": "ON", "at": "2026-03-10T12:00:00.123456+00:00"}

(``deactivated`` / ``OFF`` the other way; ``at`` is the wall-clock time of the edge that made
the change). An output takes ``ON``, ``OFF`` or ``TOGGLE`` (any case, surrounding spaces
ignored) or JSON ``{"state": "ON"}`` on ``{prefix}/{name}/set``; anything else is an
``invalid_payload`` error report and changes nothing. The state is published after every
command, changed or not, so the sender sees it was taken. A command sent to an input is
reported as an error (it has no command handler) and the input goes on.

**Neither is polled.** An input publishes when its level changes, an output when told to:
``interval``, ``publish``, ``filter``, ``retry`` and ``group`` are refused (there is no
reading to repeat, filter or retry, and an edge must not wait for the devices of a group).

**Debounce** is ours, not gpiozero's ``bounce_time`` (whose meaning differs between pin
libraries, and which some ignore): after the last edge, the level must hold ``debounce``
seconds (the clock port's time); then the pin is read, and a level that differs from the
published state is the change. With the default 0.05, a contact that chatters for 10 ms
gives one change, 50 ms after it settled; a pulse shorter than ``debounce`` gives none.
With ``debounce = 0`` every edge that gpiozero reports and that changes the state is
published, in order.

**Restore.** ``initial = "restore"`` saves the state in the daemon's store (``[store]``) at
every change, before it is published, and starts with it (``OFF`` the first time); it needs
a store (``backend = "none"`` is refused by ``agent check``). ``off``/``on`` need none.

**Pins** are opened when the device starts, on its thread, and closed when it stops: nothing
touches the hardware at check time. A closed output pin is an input again (gpiozero's
release), so wire a load so that a floating pin means off. A pin that cannot be opened
(used twice, not on this board, no pin library on this host) stops the device with an error
report naming the pin; the supervisor retries it. Without gpiozero, ``agent check`` says::

    device[2].type: expected gpiozero installed for a gpio_input device (sudo apt install
    python3-gpiozero, or pip install gpiozero), found "gpio_input" without gpiozero

gpiozero is imported only when a GPIO device is checked or starts, so a host without it
runs the other built-ins. ``GPIOZERO_PIN_FACTORY=mock`` tries a config on a laptop.

**Threads.** gpiozero calls its edge callbacks on a thread of its own (on the test's thread
for mock pins). Such a callback only records the edge and wakes the device's thread, which
does everything else — debounce, state, event — one thing at a time, like every device.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import Any

from agent.clock import ClockPort, utc_now
from agent.context import Command, DeviceContext
from agent.daemon.builtins._common import OptionReader, show
from agent.daemon.ha_tables import BINARY_SENSOR_DEVICE_CLASSES, SWITCH_DEVICE_CLASSES
from agent.daemon.types import DeviceSpec, Problem
from agent.entities import Entity
from agent.errors import InvalidPayload
from agent.persist import DeviceStore
from agent.router import Router

__all__ = ["GPIO_INPUT", "GPIO_OUTPUT", "TYPES", "GpioUnavailable"]

log = logging.getLogger("agent.daemon.gpio")

ON, OFF = "ON", "OFF"

INSTALL_HINT = "sudo apt install python3-gpiozero, or pip install gpiozero"

_PIN_NAME = re.compile(r"(?:GPIO|BCM|BOARD|WPI)\d{1,2}|[A-Z][A-Z0-9]*:\d{1,3}")
_PIN_EXPECTED = 'a BCM GPIO number 0-27, or a gpiozero pin name like "GPIO17", "BOARD11" or "J8:11"'

# gpiozero creates its pin factory (the pin library) when the first pin of the process is
# opened; two device threads opening their first pins at once could each make one.
_OPEN_LOCK = threading.Lock()


class GpioUnavailable(RuntimeError):
    """A GPIO device cannot start: gpiozero is missing, or its pin cannot be opened."""


def _gpiozero() -> ModuleType | None:
    """gpiozero, imported now (never at import time: hosts without it run the rest)."""
    try:
        return importlib.import_module("gpiozero")
    except ImportError:
        return None


# -- options -------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputOptions:
    pin: int | str
    pull: str  # "up", "down", "none"
    active_low: bool
    debounce: float  # seconds; 0: every edge
    device_class: str | None
    icon: str | None


@dataclass(frozen=True)
class OutputOptions:
    pin: int | str
    active_low: bool
    initial: str  # "off", "on", "restore"
    device_class: str | None
    icon: str | None


def _need_gpiozero(type_name: str, read: OptionReader) -> None:
    if _gpiozero() is None:
        read.report(
            "type",
            f"gpiozero installed for a {type_name} device ({INSTALL_HINT})",
            f"{json.dumps(type_name)} without gpiozero",
        )


def _pin(read: OptionReader) -> int | str:
    if not read.has("pin"):
        read.report("pin", _PIN_EXPECTED, "nothing")
        return 0
    value = read.options["pin"]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 27:
        return value
    if isinstance(value, str) and _PIN_NAME.fullmatch(value):
        return value
    expected = _PIN_EXPECTED
    if isinstance(value, str) and _PIN_NAME.fullmatch(value.strip().upper()):
        expected += f" (did you mean {json.dumps(value.strip().upper())}?)"  # gpiozero 2: case
    read.report("pin", expected, show(value))
    return 0


def _ha(read: OptionReader, classes: tuple[str, ...]) -> tuple[str | None, str | None]:
    device_class = None
    if read.has("device_class"):
        device_class = read.string("device_class", "", choices=classes) or None
    icon = read.optional_string("icon", expected='an icon name like "mdi:door"')
    if icon is not None and not icon.startswith("mdi:"):
        read.report("icon", 'an icon name like "mdi:door"', show(icon))
        icon = None
    return device_class, icon


class GpioInputType:
    """``gpio_input``: a pin's level as ``ON``/``OFF``, with edge events (module docstring)."""

    name = "gpio_input"
    default_interval: float | None = None
    KEYS = ("pin", "pull", "active_low", "debounce", "device_class", "icon")

    def check(self, options: Mapping[str, Any], problem: Problem) -> InputOptions:
        read = OptionReader(self.name, options, problem, known=self.KEYS)
        _need_gpiozero(self.name, read)
        pin = _pin(read)
        pull = read.string("pull", "up", choices=("up", "down", "none"))
        # A switch to ground on a pulled-up pin is the usual wiring: closed = low = ON.
        active_low = read.boolean("active_low", pull == "up")
        expected = "seconds, a number 0-60 (0: no debounce)"
        debounce = read.number("debounce", 0.05, at_most=60, expected=expected)
        if debounce < 0:  # number() has no inclusive lower bound
            read.report("debounce", expected, show(read.options["debounce"]))
            debounce = 0.05
        device_class, icon = _ha(read, BINARY_SENSOR_DEVICE_CLASSES)
        return InputOptions(pin, pull, active_low, debounce, device_class, icon)

    def register(self, router: Router, spec: DeviceSpec, options: InputOptions) -> None:
        entity = Entity(
            "state",
            component="binary_sensor",
            name="",  # the device's main entity: Home Assistant names it after the device
            payload_on=ON,
            payload_off=OFF,
            device_class=options.device_class,
            icon=options.icon,
        )

        def open_pin(ctx: DeviceContext) -> _OpenPin:
            return _open_input(ctx, options)

        def gpio_input(ctx: DeviceContext, pin: _OpenPin) -> None:
            _run_input(ctx, options, pin)

        router.add_device(
            spec.name, gpio_input, init=open_pin, enabled=spec.enabled, entities=[entity]
        )


class GpioOutputType:
    """``gpio_output``: a pin switched by ``ON``/``OFF``/``TOGGLE`` (module docstring)."""

    name = "gpio_output"
    default_interval: float | None = None
    KEYS = ("pin", "active_low", "initial", "device_class", "icon")

    def check(self, options: Mapping[str, Any], problem: Problem) -> OutputOptions:
        read = OptionReader(self.name, options, problem, known=self.KEYS)
        _need_gpiozero(self.name, read)
        pin = _pin(read)
        active_low = read.boolean("active_low", False)
        initial = read.string("initial", "off", choices=("off", "on", "restore"))
        device_class, icon = _ha(read, SWITCH_DEVICE_CLASSES)
        return OutputOptions(pin, active_low, initial, device_class, icon)

    def register(self, router: Router, spec: DeviceSpec, options: OutputOptions) -> None:
        entity = Entity(
            "state",
            component="switch",
            name="",
            payload_on=ON,
            payload_off=OFF,
            device_class=options.device_class,
            icon=options.icon,
        )
        if options.initial == "restore":
            # Only this variant asks for the store, so "off"/"on" run with backend = "none".
            def open_restored(ctx: DeviceContext, store: DeviceStore) -> _OpenPin:
                return _open_output(ctx, options, store)

            def gpio_output_restored(ctx: DeviceContext, store: DeviceStore, pin: _OpenPin) -> None:
                _run_output(ctx, options, store, pin)

            router.add_device(
                spec.name,
                gpio_output_restored,
                init=open_restored,
                enabled=spec.enabled,
                entities=[entity],
            )
            return

        def open_pin(ctx: DeviceContext) -> _OpenPin:
            return _open_output(ctx, options, None)

        def gpio_output(ctx: DeviceContext, pin: _OpenPin) -> None:
            _run_output(ctx, options, None, pin)

        router.add_device(
            spec.name, gpio_output, init=open_pin, enabled=spec.enabled, entities=[entity]
        )


GPIO_INPUT = GpioInputType()
GPIO_OUTPUT = GpioOutputType()
TYPES = (GPIO_INPUT, GPIO_OUTPUT)


# -- opening pins ----------------------------------------------------------------------------


def _open(what: str, pin: int | str, make: Callable[[ModuleType], Any]) -> Any:
    """``make(gpiozero)``, with every way it fails as one :class:`GpioUnavailable` that
    names the pin (gpiozero's own messages do not say which device asked)."""
    gpiozero = _gpiozero()
    if gpiozero is None:
        raise GpioUnavailable(f"{what} needs gpiozero, which is not installed ({INSTALL_HINT})")
    try:
        with _OPEN_LOCK:
            return make(gpiozero)
    except Exception as exc:  # GPIOZeroError, and the pin libraries' own (OSError, ...)
        raise GpioUnavailable(
            f"cannot open GPIO pin {json.dumps(pin)} for {what}: {type(exc).__name__}: {exc}"
        ) from exc


def _close(device: Any, pin: int | str) -> None:
    try:
        with _OPEN_LOCK:
            device.close()
    except Exception:  # closing at shutdown must not hide why the device stopped
        log.exception("closing GPIO pin %s failed", pin)


def _word(active: bool) -> str:
    return ON if active else OFF


# -- gpio_input ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Edge:
    active: bool  # the level after the edge, in the device's sense (active_low applied)
    at: float  # the clock port's time
    wall: datetime  # for the event's "at"


_MAX_EDGES = 1024  # a chattering contact faster than the device thread: keep the newest
_IDLE = 3600.0  # seconds an input sleeps with no edge pending (any edge wakes it at once)


class _EdgeQueue:
    """Edges from gpiozero's thread to the device's thread.

    gpiozero calls back on a thread of its own; :meth:`push` records the edge and wakes the
    device (:meth:`~agent.DeviceContext.wake`, at most once per batch), whose thread then
    takes the batch with :meth:`take` — the device's work stays on the device's thread.
    """

    def __init__(self, ctx: DeviceContext) -> None:
        self._clock: ClockPort = ctx.clock
        self._wake = ctx.wake
        self._lock = threading.Lock()
        self._edges: deque[_Edge] = deque(maxlen=_MAX_EDGES)
        self._woken = False
        self.lost = 0  # edges pushed out by newer ones since the last take()

    def push(self, active: bool) -> None:
        """On gpiozero's thread: record the edge and wake the device's thread."""
        edge = _Edge(active, self._clock.now(), utc_now())
        with self._lock:
            if len(self._edges) == _MAX_EDGES:
                self.lost += 1
            self._edges.append(edge)
            wake, self._woken = not self._woken, True
        if wake:
            self._wake()

    def take(self) -> tuple[list[_Edge], int]:
        """On the device's thread: the edges so far, and how many were lost."""
        with self._lock:
            edges, lost = list(self._edges), self.lost
            self._edges.clear()
            self.lost = 0
            self._woken = False
        return edges, lost


@dataclass
class _OpenPin:
    """A gpiozero device opened by a device's ``init`` — before the device is announced
    ``online``, so a pin that cannot be opened keeps it ``offline`` through its restarts
    instead of flapping — and handed to the device function, which closes it."""

    device: Any
    pin: int | str


def _open_input(ctx: DeviceContext, options: InputOptions) -> _OpenPin:
    pull_up = {"up": True, "down": False, "none": None}[options.pull]

    def make(gpiozero: ModuleType) -> Any:
        return gpiozero.DigitalInputDevice(
            options.pin,
            pull_up=pull_up,
            active_state=None if pull_up is not None else not options.active_low,
        )

    return _OpenPin(_open(f"gpio_input {ctx.name!r}", options.pin, make), options.pin)


def _run_input(ctx: DeviceContext, options: InputOptions, pin: _OpenPin) -> None:
    """The device function of a ``gpio_input``: publish the level of the pin its ``init``
    opened, then each change until shutdown; the pin is closed whatever ends it."""
    pull_up = {"up": True, "down": False, "none": None}[options.pull]
    # gpiozero fixes the polarity of a pulled pin (pull-up: active when low); the user's
    # active_low may differ (a normally-closed contact), so the rest is inverted here.
    zero_active_low = pull_up is True if pull_up is not None else options.active_low
    invert = zero_active_low != options.active_low
    edges = _EdgeQueue(ctx)
    device = pin.device
    try:
        device.when_activated = lambda: edges.push(not invert)
        device.when_deactivated = lambda: edges.push(invert)
        _serve_input(ctx, edges, lambda: bool(device.is_active) != invert, options.debounce)
    finally:
        device.when_activated = None
        device.when_deactivated = None
        _close(device, pin.pin)


def _serve_input(
    ctx: DeviceContext, edges: _EdgeQueue, level: Callable[[], bool], debounce: float
) -> None:
    state = level()
    ctx.publish_state({"state": _word(state)})
    settle_at: float | None = None  # when the level has held long enough (debounce)
    changed_at: datetime | None = None  # the wall time of the last edge seen

    def change(active: bool, wall: datetime) -> None:
        nonlocal state
        state = active
        word = _word(active)
        event = {"event": "activated" if active else "deactivated", "state": word}
        ctx.publish("event", json.dumps({**event, "at": wall.isoformat()}), retain=False)
        ctx.publish_state({"state": word})

    while not ctx.shutdown_requested:
        # Sleep until an edge wakes us or the debounce has run out; commands sent to an
        # input are answered meanwhile (it has no handler: reported as such).
        wait = _IDLE if settle_at is None else max(0.0, settle_at - ctx.clock.now())
        woken = ctx.sleep(wait)
        if ctx.shutdown_requested:
            return  # a change still settling is not published half-way
        batch, lost = edges.take()
        if lost:
            log.warning("device %r: %d GPIO edges came too fast and were lost", ctx.name, lost)
        if debounce == 0:
            for edge in batch:
                if edge.active != state:
                    change(edge.active, edge.wall)
            if lost and level() != state:  # the lost edges may have left it elsewhere
                change(level(), utc_now())
            continue
        if batch:
            settle_at = batch[-1].at + debounce
            changed_at = batch[-1].wall
        elif settle_at is not None and (not woken or ctx.clock.now() >= settle_at):
            # The wait ran out with no edge (not woken): the level held. That, and not only
            # the clock comparison, decides: now + (settle_at - now) may round to just
            # below settle_at, and the change must not then wait for another edge.
            settle_at = None
            now = level()
            if now != state:
                change(now, changed_at or utc_now())


# -- gpio_output -----------------------------------------------------------------------------


def parse_command(payload: str, current: bool) -> bool:
    """The level a command asks for: ``ON``, ``OFF``, ``TOGGLE`` (any case) or JSON
    ``{"state": "ON"}``; :class:`~agent.InvalidPayload` for anything else."""
    text = payload.strip()
    word: object = text
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except RecursionError:  # '{"state":[[[[...]]]]}': valid JSON, but too deep to parse
            raise InvalidPayload("not valid JSON: nested too deeply") from None
        except ValueError as exc:
            raise InvalidPayload(f"not valid JSON: {exc}") from None
        if not isinstance(data, dict) or set(data) != {"state"}:
            raise InvalidPayload(
                'expected a JSON object {"state": "ON"} (ON, OFF or TOGGLE), '
                f"got {_quoted(payload)}"
            )
        word = data["state"]
    upper = word.strip().upper() if isinstance(word, str) else None
    if upper == "TOGGLE":
        return not current
    if upper in (ON, OFF):
        return upper == ON
    raise InvalidPayload(f'expected ON, OFF, TOGGLE or {{"state": "ON"}}, got {_quoted(payload)}')


_QUOTED = 60  # characters of a refused payload in its error message: enough to recognise it


def _quoted(payload: str) -> str:
    """``repr(payload)``, cut short: a refused payload of 256 KiB must not be echoed whole
    into the log line and the error payloads that report it."""
    if len(payload) <= _QUOTED:
        return repr(payload)
    return f"{payload[:_QUOTED]!r}... ({len(payload)} characters)"


def _open_output(ctx: DeviceContext, options: OutputOptions, store: DeviceStore | None) -> _OpenPin:
    """Open the pin at its initial level: ``initial``, or the state saved in ``store``."""
    if store is not None:
        saved = store.get("state", OFF)
        if saved not in (ON, OFF):
            log.warning(
                "device %r: stored state %r is not ON or OFF: starting OFF", ctx.name, saved
            )
        on = saved == ON
    else:
        on = options.initial == "on"

    def make(gpiozero: ModuleType) -> Any:
        # The initial level is set as the pin becomes an output: no glitch to the other one.
        return gpiozero.OutputDevice(
            options.pin, active_high=not options.active_low, initial_value=on
        )

    return _OpenPin(_open(f"gpio_output {ctx.name!r}", options.pin, make), options.pin)


def _run_output(
    ctx: DeviceContext, options: OutputOptions, store: DeviceStore | None, pin: _OpenPin
) -> None:
    """The device function of a ``gpio_output``: publish the level of the pin its ``init``
    opened, then switch it on command until shutdown; the pin is closed whatever ends it."""
    device = pin.device
    try:

        def switch(command: Command) -> None:
            wanted = parse_command(command.payload, bool(device.is_active))
            device.value = wanted
            if store is not None:
                store["state"] = _word(wanted)
                store.save()  # on disk before anyone is told (a failed save is reported)
            ctx.publish_state({"state": _word(wanted)})

        ctx.on_command(switch)
        ctx.publish_state({"state": _word(bool(device.is_active))})
        while not ctx.shutdown_requested:
            ctx.sleep(3600)  # commands are handled while it sleeps; returns at shutdown
    finally:
        _close(device, pin.pin)
