"""``Router``: devices a module contributes to an App it does not own.

The daemon runs one App for the whole config file; a user module adds its devices to it::

    # mybridge.py, listed in /etc/agent.toml under modules = ["mybridge"]
    import agent

    router = agent.Router("mybridge", prefix="garden-")

    @router.telemetry("soil", interval=300)        # device "garden-soil"
    def soil() -> dict: ...

``app.include_router(router)`` adds them: the same decorators as ``App``, the same checks,
and a name clash is an error naming both sources.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from agent.adapters import Adapters
from agent.entities import Entity
from agent.registrations import Registrations
from agent.registry import Kind, Registration, Registry
from agent.topics import validate_name

__all__ = ["Router"]


class _RouterRegistry(Registry):
    """Adds the router's name prefix and names the router as the source."""

    def __init__(self, router: Router) -> None:
        # The App checks the store rules when it includes the router.
        super().__init__(has_store=True)
        self._router = router

    def add(
        self, kind: Kind, name: str | None, func: Callable[..., Any], **options: Any
    ) -> Registration:
        if name is not None:
            name = self._router.prefix + name
        options.setdefault("source", f"router {self._router.name!r} (module {func.__module__})")
        return super().add(kind, name, func, **options)


class Router(Registrations):
    """A set of devices, adapters and hooks for an App to include (see the module docstring).

    Args:
        name: shown in error messages; the calling module's name by default.
        prefix: put in front of every device name (``"garden-"``); each full name must still
            be a valid topic level.
    """

    def __init__(self, name: str | None = None, *, prefix: str = "") -> None:
        if name is None:
            frame = inspect.currentframe()
            caller = frame.f_back if frame is not None else None
            name = caller.f_globals.get("__name__", "router") if caller is not None else "router"
        self.name = str(name)
        if prefix:
            validate_name(prefix.rstrip("-_") or prefix, "router prefix")
        self.prefix = prefix
        self.registry = _RouterRegistry(self)
        self.adapters = Adapters()
        self.configure_hooks: list[Callable[..., Any]] = []

    @property
    def entities(self) -> Sequence[tuple[str, Entity]]:
        return [(reg.name, entity) for reg in self.registry for entity in reg.entities]

    def __repr__(self) -> str:
        return f"Router({self.name!r}, {len(self.registry)} device(s))"
