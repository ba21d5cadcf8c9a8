"""Adapters: implementations of the app's hardware/service ports, chosen at start-up.

A *port* is the type a handler asks for (usually a ``typing.Protocol``); an *adapter* is what
the framework hands over for it. ``app.adapter(Port, impl, dry_run=variant)`` (or
``App(adapters={Port: impl, Other: (impl, variant)})``) maps a port to one of three kinds of
implementation, each for the real run and, optionally, for ``--dry-run``:

* a **class** — instantiated once at start-up: ``app.adapter(GasMeterPort, SerialGasMeter)``;
* a **factory** function returning the adapter: ``app.adapter(Port, make_meter)``;
* a **lazy** ``"module:attribute"`` string (``"pkg.module.attribute"`` works too), naming a
  class or factory that is imported only when the app starts and only if that variant is
  selected::

      app.adapter(RelayPort, "mybridge.gpio:GpioRelay", dry_run=FakeRelay)

  so a module that needs a hardware library (``RPi.GPIO``, ``smbus2``) is never imported
  by ``--dry-run``, by tests or by ``agent describe`` — and the bridge still runs on a
  laptop where that library is not even installed.

Classes and factories get the settings injected by annotation: a constructor or factory
parameter annotated with ``Settings`` or a subclass receives the app's settings instance
(``def __init__(self, settings: GasSettings)``). Nothing else is injected into adapters —
they are built before any device — so any other annotated parameter is refused when the
adapter is registered (a lazy string's target: when it is imported).

At start-up (:meth:`Adapters.resolve`) every selected lazy string is imported *before* any
adapter is built, so a missing module stops start-up with nothing half-built. A missing
module (``ModuleNotFoundError``, or any ``ImportError`` such as a native library that does not
load) or a missing attribute is a :class:`~agent.settings.ConfigError` naming the port, the
string and the module: the command line exits 78 with that one line, as for any other
deployment mistake. An exception raised by the module's own code is a bug, not a deployment
problem, and propagates with its traceback.

Adapters that are context managers (``__enter__``/``__exit__``, duck-typed) are entered before
the lifespan and exited after it, last in first out, by the runtime's ``ExitStack``.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from agent.injection import (
    Param,
    _unwrap_optional,
    check_plain_function,
    resolve,
    signature_params,
)
from agent.settings import ConfigError, Settings

__all__ = ["AdapterEntry", "AdapterSpec", "Adapters", "describe_spec", "load_string"]

AdapterSpec = type | str | Callable[..., object]
"""A class, a factory function or a lazy ``"module:attribute"`` string."""


def _split(spec: str) -> tuple[str, str]:
    """``"pkg.mod:Outer.Inner"`` → ``("pkg.mod", "Outer.Inner")``; the dotted form
    ``"pkg.mod.attr"`` splits at its last dot. ``ValueError`` for anything else."""
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    dotted = (module_name.split("."), attr.split("."))
    if not module_name or not attr or not all(p.isidentifier() for ps in dotted for p in ps):
        raise ValueError(f"cannot import {spec!r}: expected 'module:attribute'")
    return module_name, attr


def is_import_string(spec: str) -> bool:
    """Whether ``spec`` has the shape :func:`load_string` takes (it may still not import)."""
    try:
        _split(spec)
    except ValueError:
        return False
    return True


def load_string(spec: str) -> Any:
    """Import ``"pkg.module:attr"`` (or ``"pkg.module.attr"``) and return the attribute.

    Raises what the import raises (``ModuleNotFoundError``, ``AttributeError``): callers
    decide what a missing module means (the ``agent`` command: a wrong ``app`` key).
    """
    module_name, attr = _split(spec)
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def describe_spec(spec: AdapterSpec | None) -> str | None:
    """How an adapter spec is shown (``agent describe``), without importing or calling it:
    a lazy string as given, a class or a factory by its qualified name."""
    if spec is None or isinstance(spec, str):
        return spec
    name = getattr(spec, "__qualname__", None)
    if isinstance(name, str):
        return name
    # An instance (callable or not): its type only. Its repr could show anything it holds.
    return f"{type(spec).__qualname__} instance"


def _params(target: Callable[..., object], role: str) -> list[Param]:
    """The parameters of a class or factory, with their annotations evaluated.

    For a class, :func:`~agent.injection.signature_params` evaluates the *class's*
    annotations (its attributes), not the constructor's, so under ``from __future__ import
    annotations`` a ``settings: MySettings`` parameter would stay a string. The
    constructor's own hints are evaluated here and win.
    """
    params = signature_params(target, role)
    if isinstance(target, type):
        try:
            hints = typing.get_type_hints(target.__init__)
        except Exception:  # a local class, an inherited C constructor: keep what we have
            hints = {}
        params = [Param(p.name, hints.get(p.name, p.annotation)) for p in params]
    return params


def _check_injectable(params: list[Param], role: str, name: str) -> None:
    """Adapters are built before any device: only the settings can be injected into them.

    An annotation that is still a string (a class local to a function) is matched by name
    at start-up and cannot be checked here.
    """
    for param in params:
        wanted = _unwrap_optional(param.annotation)
        if not isinstance(wanted, type):
            continue
        if _subclass(wanted, Settings) or _subclass(Settings, wanted):
            continue
        raise TypeError(
            f"parameter {param.name!r} of {role} {name!r} asks for {wanted.__name__}: adapters "
            "get only the settings injected (annotate it with your Settings class, or give "
            "it a default)"
        )


def _subclass(candidate: type, cls: type) -> bool:
    try:
        return issubclass(candidate, cls)
    except TypeError:  # a Protocol that is not runtime_checkable
        return False


def _check_spec(spec: AdapterSpec, role: str) -> None:
    """Everything that can be checked without importing anything."""
    if isinstance(spec, str):
        _split(spec)  # the form only: the import waits for start-up
        return
    if callable(spec):
        check_plain_function(spec, role)
        name = getattr(spec, "__qualname__", repr(spec))
        _check_injectable(_params(spec, role), role, name)


class AdapterEntry:
    """One registered port: its implementation and its optional dry-run variant.

    Read-only by convention (nothing enforces it).
    """

    __slots__ = ("dry_run", "impl", "port")

    def __init__(self, port: type, impl: AdapterSpec, dry_run: AdapterSpec | None = None) -> None:
        self.port = port
        self.impl = impl
        self.dry_run = dry_run

    def __repr__(self) -> str:
        return f"AdapterEntry({self.port.__name__}, {self.impl!r}, dry_run={self.dry_run!r})"

    @property
    def role(self) -> str:
        return f"adapter for {self.port.__name__}"

    def selected(self, dry_run: bool) -> AdapterSpec:
        """The variant a run uses: the dry-run one in dry-run mode when there is one."""
        return self.dry_run if dry_run and self.dry_run is not None else self.impl


class Adapters:
    """The adapter mapping of one App: port type → :class:`AdapterEntry`."""

    def __init__(self) -> None:
        self._entries: dict[type, AdapterEntry] = {}

    def register(
        self, port_type: type, impl: AdapterSpec, *, dry_run: AdapterSpec | None = None
    ) -> None:
        """Add a port. ``ValueError`` for a second adapter for the same port or a string
        that is not ``"module:attribute"``; ``TypeError`` for an ``async def`` factory or a
        parameter that cannot be injected. Nothing is imported or built here."""
        if port_type in self._entries:
            raise ValueError(f"an adapter for {port_type.__name__} is already registered")
        entry = AdapterEntry(port_type, impl, dry_run)
        _check_spec(impl, entry.role)
        if dry_run is not None:
            _check_spec(dry_run, f"dry-run {entry.role}")
        self._entries[port_type] = entry

    def __contains__(self, port_type: type) -> bool:
        return port_type in self._entries

    def __iter__(self) -> Iterator[AdapterEntry]:
        """The entries in registration order (for introspection: nothing is imported)."""
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def resolve(
        self,
        settings: object,
        *,
        dry_run: bool,
        given: Mapping[type, object] | None = None,
    ) -> dict[type, object]:
        """Build every adapter — the dry-run variant where asked and registered.

        First every selected lazy string is imported (a missing module or attribute is a
        :class:`ConfigError` before anything is built), then each class or factory is
        called with the settings injected; anything else given as an adapter is used as is.
        ``given`` adapters (a test's scripted fakes) are used as they are, and their
        registered implementations are never imported.
        """
        given = dict(given or {})
        entries = [e for e in self._entries.values() if e.port not in given]
        targets = {e.port: self._target(e, e.selected(dry_run), dry_run) for e in entries}
        providers = {type(settings): settings}
        out: dict[type, object] = dict(given)
        for entry in entries:
            target = targets[entry.port]
            if callable(target):
                name = getattr(target, "__qualname__", repr(target))
                kwargs = resolve(
                    _params(target, entry.role), providers, role=entry.role, func_name=name
                )
                out[entry.port] = target(**kwargs)
            else:
                out[entry.port] = target
        return out

    def _target(self, entry: AdapterEntry, spec: AdapterSpec, dry_run: bool) -> object:
        """The class, factory or object ``spec`` stands for, importing a lazy string."""
        if not isinstance(spec, str):
            return spec
        target = _import(spec, entry, dry_run)
        _check_spec(target, entry.role)  # first sight of an imported class or factory
        return target


def _import(spec: str, entry: AdapterEntry, dry_run: bool) -> object:
    module_name, attr = _split(spec)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            why = f"no module named {exc.name!r}"
        else:  # e.g. a native library that does not load; its message names it
            why = " ".join(str(exc).split()) or type(exc).__name__
        hint = "install it"
        if not dry_run and entry.dry_run is not None:
            hint += ", or run with --dry-run to use the dry-run variant"
        raise ConfigError(
            source=entry.role, detail=f"cannot import {spec!r}: {why} ({hint})"
        ) from exc
    # The import is done: an AttributeError its code raised has propagated as the bug it
    # is. What is missing now is the attribute the string names.
    path = attr.split(".")
    for depth, part in enumerate(path):
        if not hasattr(obj, part):
            owner = ".".join([module_name, *path[:depth]])
            raise ConfigError(
                source=entry.role,
                detail=f"cannot import {spec!r}: {owner!r} has no attribute {part!r}",
            )
        obj = getattr(obj, part)
    return obj
