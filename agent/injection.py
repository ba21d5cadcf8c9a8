"""Dependency injection by type annotation.

A handler declares what it needs through its parameters' annotations::

    def read(ctx: DeviceContext, settings: MySettings, log: logging.Logger) -> dict: ...

The framework looks every annotation up among the values it can provide (settings, the
device context, a logger, the clock, adapters, the value an ``init`` factory returned) and
calls the function with them. The lookup is planned once, when a device starts, so the hot
path is a plain ``func(**kwargs)``.

Some parameters are matched by *name* instead (``topic`` and ``payload`` of ``@app.command``
handlers): those are passed per call and need no annotation.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any


class Param:
    """One parameter of a handler and the type it asks for (None for by-name parameters).

    Read-only by convention (nothing enforces it).
    """

    __slots__ = ("annotation", "name")

    def __init__(self, name: str, annotation: Any) -> None:
        self.name = name
        self.annotation = annotation


def check_plain_function(func: Callable[..., Any], role: str) -> None:
    """Reject coroutine functions: agent runs plain functions on threads."""
    target = getattr(func, "__func__", func)
    if inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target):
        name = getattr(func, "__qualname__", repr(func))
        raise TypeError(
            f"{role} {name!r} is a coroutine function (async def); agent runs plain functions "
            "on threads: define it with def"
        )
    if not callable(func):
        raise TypeError(f"{role} must be callable, got {func!r}")


def signature_params(
    func: Callable[..., Any], role: str, by_name: Iterable[str] = ()
) -> list[Param]:
    """Read the parameters of ``func``; every one must be annotated unless it is in ``by_name``.

    Raises TypeError naming the function and the parameter otherwise.
    """
    by_name = frozenset(by_name)
    name = getattr(func, "__qualname__", repr(func))
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError) as exc:  # builtins without a signature
        raise TypeError(f"cannot read the signature of {role} {name!r}: {exc}") from exc
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # a forward reference to a local class: keep the raw strings
        hints = {}
    params: list[Param] = []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name in by_name:
            params.append(Param(p.name, None))
            continue
        annotation = hints.get(p.name, p.annotation)
        if annotation is inspect.Parameter.empty:
            if p.default is not inspect.Parameter.empty:
                continue  # optional and unannotated: left to its default
            raise TypeError(
                f"parameter {p.name!r} of {role} {name!r} has no type annotation; agent injects "
                "parameters by type (e.g. ctx: DeviceContext, settings: Settings)"
            )
        params.append(Param(p.name, annotation))
    return params


def asks_for(params: Iterable[Param], cls: type) -> Param | None:
    """The first parameter annotated with ``cls`` (or a subclass, or its name as a string
    that could not be evaluated), or None."""
    for param in params:
        wanted = _unwrap_optional(param.annotation)
        if isinstance(wanted, str) and wanted.strip("'\"").rpartition(".")[2] == cls.__name__:
            return param
        if wanted is cls or (isinstance(wanted, type) and _subclass(wanted, cls)):
            return param
    return None


def _subclass(candidate: type, cls: type) -> bool:
    try:
        return issubclass(candidate, cls)
    except TypeError:  # a Protocol that is not runtime_checkable: only itself matches
        return False


def _unwrap_optional(annotation: Any) -> Any:
    """``X | None`` asks for X."""
    args = typing.get_args(annotation)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _by_type_name(name: str, providers: Mapping[Any, object]) -> Any:
    """An annotation that could not be evaluated (a class local to a function, under
    ``from __future__ import annotations``) is matched by class name, subclasses included."""
    name = name.strip("'\"").rpartition(".")[2]
    for key in providers:
        if isinstance(key, type) and any(k.__name__ == name for k in key.__mro__):
            return key
    return name


class Lazy:
    """A provider made only when a parameter asks for it (e.g. a per-device logger: 1,000
    devices need not keep 1,000 loggers that no handler uses)."""

    __slots__ = ("_factory",)

    def __init__(self, factory: Callable[[], object]) -> None:
        self._factory = factory

    def get(self) -> object:
        return self._factory()


def _provided(value: object) -> object:
    return value.get() if isinstance(value, Lazy) else value


def resolve(
    params: list[Param],
    providers: Mapping[Any, object],
    *,
    role: str,
    func_name: str,
) -> dict[str, object]:
    """Build the keyword arguments for ``params`` from ``providers`` (type → value).

    An exact type match wins; otherwise the first provider whose type is a subclass of the
    annotation (``settings: Settings`` receives a ``MySettings``).
    """
    kwargs: dict[str, object] = {}
    for param in params:
        if param.annotation is None:
            continue
        wanted = _unwrap_optional(param.annotation)
        if isinstance(wanted, str):
            wanted = _by_type_name(wanted, providers)
        if wanted in providers:
            kwargs[param.name] = _provided(providers[wanted])
            continue
        for key, value in providers.items():
            if isinstance(key, type) and isinstance(wanted, type) and issubclass(key, wanted):
                kwargs[param.name] = _provided(value)
                break
        else:
            shown = getattr(wanted, "__name__", repr(wanted))
            raise TypeError(
                f"cannot inject parameter {param.name!r} of {role} {func_name!r}: nothing of type "
                f"{shown} is available (register an adapter for it, return it from init=, or "
                "use one of DeviceContext, Settings, logging.Logger, ClockPort)"
            )
    return kwargs


def call_with_injection(
    func: Callable[..., Any], providers: Mapping[Any, object], role: str
) -> Any:
    """Plan and call ``func`` once (for factories and hooks that run a single time)."""
    params = signature_params(func, role)
    name = getattr(func, "__qualname__", repr(func))
    return func(**resolve(params, providers, role=role, func_name=name))
