"""Registration records: what ``@app.device``, ``@app.telemetry`` and ``@app.command`` leave.

The registry validates everything it can at registration time, so mistakes surface when the
module is imported rather than at 3 a.m.: names, duplicate or second root devices, coroutine
functions, missing annotations, bad intervals and bad telemetry options (strategy, retry,
backoff, circuit breaker, group).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from agent.injection import Param, asks_for, check_plain_function, signature_params
from agent.persist import DeviceStore, check_policy
from agent.retry import BackoffStrategy, CircuitBreaker
from agent.strategies import PublishStrategy
from agent.topics import validate_name

if TYPE_CHECKING:
    from agent.entities import Entity  # imported only by a run that declares entities

Kind = Literal["device", "telemetry", "command"]
IntervalSpec = float | Callable[..., float]
"""Seconds between telemetry readings, or a function of the settings returning them."""


class Default:
    """The type of :data:`DEFAULT`: "use the framework's default" where None means "none"."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = Default()

#: ``@app.command`` handlers receive these by name, per message.
COMMAND_PARAMS = ("topic", "payload")


class Registration:
    """One registered device: what to run, how, and under which name.

    ``wants_store``: a DeviceStore is injected, or persist= saves one. ``timeout``: per
    handler call; DEFAULT: by kind. ``entities``: what its state fields are (Home Assistant).
    ``source``: where it was declared, for error messages ("module mybridge").
    """

    __slots__ = (
        "enabled",
        "entities",
        "func",
        "init",
        "init_params",
        "interval",
        "is_root",
        "kind",
        "name",
        "params",
        "source",
        "telemetry",
        "timeout",
        "wants_store",
    )

    def __init__(
        self,
        kind: Kind,
        name: str,
        func: Callable[..., Any],
        params: list[Param],
        is_root: bool = False,
        init: Callable[..., Any] | None = None,
        init_params: list[Param] | None = None,
        enabled: bool = True,
        interval: IntervalSpec | None = None,
        telemetry: TelemetryOptions | None = None,
        wants_store: bool = False,
        timeout: float | Default | None = DEFAULT,
        entities: tuple[Entity, ...] = (),
        source: str = "",
    ) -> None:
        self.kind = kind
        self.name = name
        self.func = func
        self.params = params
        self.is_root = is_root
        self.init = init
        self.init_params = init_params
        self.enabled = enabled
        self.interval = interval
        self.telemetry = TelemetryOptions() if telemetry is None else telemetry
        self.wants_store = wants_store
        self.timeout = timeout
        self.entities = entities
        self.source = source

    def __repr__(self) -> str:
        return f"Registration({self.kind!r}, {self.name!r}, source={self.source!r})"

    @property
    def is_telemetry(self) -> bool:
        return self.kind == "telemetry"

    @property
    def accepts_commands(self) -> bool:
        return self.kind in ("device", "command")


class TelemetryOptions:
    """How a telemetry device publishes and copes with failure (see ``App.telemetry``).

    Read-only by convention (nothing enforces it): :meth:`checked` returns a new instance
    rather than changing this one.
    """

    __slots__ = (
        "backoff",
        "circuit_breaker",
        "group",
        "persist",
        "publish",
        "retry",
        "retry_on",
    )

    def __init__(
        self,
        publish: PublishStrategy | None = None,
        persist: object | None = None,
        group: str | None = None,
        retry: int = 0,
        retry_on: tuple[type[BaseException], ...] | None = None,
        backoff: BackoffStrategy | None = None,
        circuit_breaker: CircuitBreaker | None = None,
    ) -> None:
        self.publish = publish
        self.persist = persist
        self.group = group
        self.retry = retry
        self.retry_on = retry_on
        self.backoff = backoff
        self.circuit_breaker = circuit_breaker

    def __repr__(self) -> str:
        return (
            f"TelemetryOptions(publish={self.publish!r}, persist={self.persist!r}, "
            f"group={self.group!r}, retry={self.retry!r}, retry_on={self.retry_on!r}, "
            f"backoff={self.backoff!r}, circuit_breaker={self.circuit_breaker!r})"
        )

    def checked(self) -> TelemetryOptions:
        """These options, validated: ``ValueError`` naming the argument otherwise.

        The strategy is copied: strategies keep per-device state (``Every(n=)`` counts), so
        one instance handed to several registrations must not be shared between them.
        """
        publish = self.publish
        if publish is not None:
            if isinstance(publish, type) or not isinstance(publish, PublishStrategy):
                raise ValueError(
                    f"publish= takes a publish strategy such as OnChange() or Every(seconds=60), "
                    f"got {publish!r}"
                )
            publish = copy.deepcopy(publish)
        if self.group is not None and (not isinstance(self.group, str) or not self.group.strip()):
            raise ValueError(f"group= must be a non-empty name, got {self.group!r}")
        retry = self.retry
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise ValueError(f"retry= must be a whole number >= 0, got {retry!r}")
        if self.retry_on is not None:
            if not isinstance(self.retry_on, tuple) or not self.retry_on:
                raise ValueError(
                    f"retry_on= takes a non-empty tuple of exception classes, got {self.retry_on!r}"
                )
            for cls in self.retry_on:
                if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                    raise ValueError(f"retry_on= takes exception classes, got {cls!r}")
        backoff = self.backoff
        if backoff is not None and (
            isinstance(backoff, type) or not isinstance(backoff, BackoffStrategy)
        ):
            raise ValueError(
                f"backoff= takes a backoff such as ExponentialBackoff(), got {backoff!r}"
            )
        breaker = self.circuit_breaker
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise ValueError(f"circuit_breaker= takes a CircuitBreaker(), got {breaker!r}")
        if self.persist is not None:
            try:
                check_policy(self.persist)
            except TypeError as exc:
                raise ValueError(str(exc)) from None
        return TelemetryOptions(
            publish, self.persist, self.group, retry, self.retry_on, backoff, breaker
        )


def check_interval(value: object, what: str = "interval") -> float:
    """A telemetry interval: a finite number of seconds > 0 (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


class Registry:
    """The devices of one App, in registration order. ``has_store``: the App has a store,
    so devices may ask for a ``DeviceStore`` and use ``persist=``."""

    def __init__(self, *, has_store: bool = False) -> None:
        self._by_name: dict[str, Registration] = {}
        self._has_store = has_store

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def include(self, reg: Registration) -> None:
        """Take a registration made elsewhere (a Router's) as it is, checking its name and
        root flag against these and the store rules."""
        existing = self._by_name.get(reg.name)
        if existing is not None:
            raise ValueError(
                f"device {reg.name!r} from {reg.source} clashes with device {reg.name!r} from "
                f"{existing.source}"
            )
        if reg.is_root and self.root is not None:
            raise ValueError(
                f"a second root (unnamed) device {reg.name!r} from {reg.source}: the root is "
                f"{self.root.name!r} from {self.root.source}"
            )
        if reg.wants_store and not self._has_store:
            raise ValueError(
                f"device {reg.name!r} from {reg.source} uses a DeviceStore or persist= but the "
                "App has no store; give it one, e.g. App(..., store=SqliteStore(path))"
            )
        self._by_name[reg.name] = reg

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
        telemetry: TelemetryOptions | None = None,
        timeout: float | Default | None = DEFAULT,
        entities: Sequence[Entity] = (),
        source: str | None = None,
    ) -> Registration:
        role = f"@app.{kind} handler"
        check_plain_function(func, role)
        if name is None:
            name = func.__name__
            is_root = True
        validate_name(name, "device")
        source = source if source is not None else f"module {func.__module__}"
        if name in self._by_name:
            raise ValueError(
                f"a device named {name!r} is already registered ({self._by_name[name].source}); "
                f"this one comes from {source}"
            )
        entities = tuple(entities)
        if entities:
            from agent.entities import Entity
        for entity in entities:
            if not isinstance(entity, Entity):
                raise ValueError(f"entities= takes agent.Entity(...) items, got {entity!r}")
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
        options = TelemetryOptions()
        if kind == "telemetry":
            if interval is None:
                raise TypeError("@app.telemetry needs interval=")
            if not callable(interval):
                interval = check_interval(interval)
            options = (telemetry or TelemetryOptions()).checked()
            breaker = options.circuit_breaker
            if breaker is not None and any(
                r.telemetry.circuit_breaker is breaker for r in self._by_name.values()
            ):
                raise ValueError(
                    "circuit_breaker=: this CircuitBreaker is already used by another device; "
                    "give each device its own instance"
                )
        if timeout is not None and not isinstance(timeout, Default):
            timeout = check_interval(timeout, "timeout")
        wants = asks_for([*params, *(init_params or [])], DeviceStore)
        if not self._has_store and (wants is not None or options.persist is not None):
            what = f"parameter {wants.name!r} asks for a DeviceStore" if wants else "persist="
            raise ValueError(
                f"device {name!r}: {what} but the App has no store; give it one, e.g. "
                "App(..., store=JsonFileStore('/var/lib/agent/state.json'))"
            )
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
            telemetry=options,
            wants_store=wants is not None or options.persist is not None,
            timeout=timeout,
            entities=entities,
            source=source,
        )
        self._by_name[name] = reg
        return reg
