"""Adapters: implementations of the app's hardware/service ports, chosen at start-up.

``app.adapter(GasMeterPort, "mybridge.hw:SerialGasMeter", dry_run=FakeGasMeter)`` maps a port
(a Protocol type) to an implementation: a class, a factory function, or a lazy-import string
``"module:attribute"`` (imported only when the app starts, so a module that needs real hardware
libraries is never imported in dry-run or tests). Classes and factories get the settings
injected when they ask for them by annotation.

Adapters that are context managers (``__enter__``/``__exit__``, duck-typed) are entered before
the lifespan and exited after it, last in first out, by the runtime's ``ExitStack``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from agent.injection import call_with_injection, check_plain_function, signature_params

AdapterSpec = type | str | Callable[..., object]


def load_string(spec: str) -> Any:
    """Import ``"pkg.module:attr"`` (or ``"pkg.module.attr"``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"cannot import {spec!r}: expected 'module:attribute'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _check_spec(spec: AdapterSpec, port_type: type) -> None:
    if isinstance(spec, str):
        return  # checked when imported at start-up
    if callable(spec):
        check_plain_function(spec, f"adapter for {port_type.__name__}")
        signature_params(spec, f"adapter for {port_type.__name__}")


class Adapters:
    """The adapter mapping of one App."""

    def __init__(self) -> None:
        self._specs: dict[type, tuple[AdapterSpec, AdapterSpec | None]] = {}

    def register(
        self, port_type: type, impl: AdapterSpec, *, dry_run: AdapterSpec | None = None
    ) -> None:
        if port_type in self._specs:
            raise ValueError(f"an adapter for {port_type.__name__} is already registered")
        _check_spec(impl, port_type)
        if dry_run is not None:
            _check_spec(dry_run, port_type)
        self._specs[port_type] = (impl, dry_run)

    def __contains__(self, port_type: type) -> bool:
        return port_type in self._specs

    def resolve(self, settings: object, *, dry_run: bool) -> dict[type, object]:
        """Instantiate every adapter (the dry-run variant where asked and available)."""
        providers = {type(settings): settings}
        out: dict[type, object] = {}
        for port_type, (impl, dry) in self._specs.items():
            spec = dry if dry_run and dry is not None else impl
            target = load_string(spec) if isinstance(spec, str) else spec
            if callable(target):
                out[port_type] = call_with_injection(
                    target, providers, f"adapter for {port_type.__name__}"
                )
            else:
                out[port_type] = target
        return out
