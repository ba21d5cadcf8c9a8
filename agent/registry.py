"""Registration records: what ``@app.device``, ``@app.telemetry`` and ``@app.command`` leave.

The registry validates everything it can at registration time, so mistakes surface when the
module is imported rather than at 3 a.m.: names, duplicate or second root devices, coroutine
functions, missing annotations and bad intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from agent.injection import Param, check_plain_function, signature_params
from agent.topics import validate_name

Kind = Literal["device", "telemetry", "command"]
IntervalSpec = float | Callable[..., float]
"""Seconds between telemetry readings, or a function of the settings returning them."""

#: ``@app.command`` handlers receive these by name, per message.
COMMAND_PARAMS = ("topic", "payload")


@dataclass
class Registration:
    """One registered device: what to run, how, and under which name."""

    kind: Kind
    name: str
    func: Callable[..., Any]
    params: list[Param]
    is_root: bool = False
    init: Callable[..., Any] | None = None
    init_params: list[Param] | None = None
    enabled: bool = True
    interval: IntervalSpec | None = None

    @property
    def accepts_commands(self) -> bool:
        return self.kind in ("device", "command")


def check_interval(value: object, what: str = "interval") -> float:
    """A telemetry interval: a finite number of seconds > 0 (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


class Registry:
    """The devices of one App, in registration order."""

    def __init__(self) -> None:
        self._by_name: dict[str, Registration] = {}

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> Registration | None:
        return self._by_name.get(name)

    @property
    def root(self) -> Registration | None:
        return next((r for r in self._by_name.values() if r.is_root), None)

    def add(
        self,
        kind: Kind,
        name: str | None,
        func: Callable[..., Any],
        *,
        is_root: bool = False,
        init: Callable[..., Any] | None = None,
        enabled: bool = True,
        interval: IntervalSpec | None = None,
    ) -> Registration:
        role = f"@app.{kind} handler"
        check_plain_function(func, role)
        if name is None:
            name = func.__name__
            is_root = True
        validate_name(name, "device")
        if name in self._by_name:
            raise ValueError(f"a device named {name!r} is already registered")
        if is_root and self.root is not None:
            raise ValueError(
                f"a root (unnamed) device is already registered ({self.root.name!r}); "
                "give this one a name"
            )
        by_name = COMMAND_PARAMS if kind == "command" else ()
        params = signature_params(func, role, by_name=by_name)
        init_params = None
        if init is not None:
            check_plain_function(init, "init factory")
            init_params = signature_params(init, "init factory")
        if kind == "telemetry":
            if interval is None:
                raise TypeError("@app.telemetry needs interval=")
            if not callable(interval):
                interval = check_interval(interval)
        reg = Registration(
            kind=kind,
            name=name,
            func=func,
            params=params,
            is_root=is_root,
            init=init,
            init_params=init_params,
            enabled=enabled,
            interval=interval,
        )
        self._by_name[name] = reg
        return reg
