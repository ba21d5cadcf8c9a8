"""The registration decorators, shared by :class:`~agent.App` and :class:`~agent.Router`.

``@app.telemetry``, ``@app.command``, ``@app.device`` and their imperative forms
(``add_telemetry`` …), ``adapter`` and ``on_configure``: what a module declares. An App runs
what it holds; a Router only holds it, for an App to include (``app.include_router``), so a
module can contribute devices without owning the App.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from agent.adapters import Adapters, AdapterSpec
from agent.injection import check_plain_function, signature_params
from agent.persist import PersistPolicy
from agent.registry import DEFAULT, Default, IntervalSpec, Kind, Registry, TelemetryOptions
from agent.retry import BackoffStrategy, CircuitBreaker
from agent.strategies import PublishStrategy

if TYPE_CHECKING:
    from agent.entities import Entity  # imported only by a run that declares entities

__all__ = ["Registrations"]

F = TypeVar("F", bound=Callable[..., Any])


class Registrations:
    """What ``App`` and ``Router`` have in common: the devices, adapters and hooks declared."""

    registry: Registry
    adapters: Adapters
    configure_hooks: list[Callable[..., Any]]

    def _decorator(self, kind: Kind, name: str | None, **options: Any) -> Callable[[F], F]:
        def decorator(func: F) -> F:
            self.registry.add(kind, name, func, **options)
            return func

        return decorator

    def device(
        self,
        name: str | None = None,
        *,
        init: Callable[..., Any] | None = None,
        enabled: bool = True,
        timeout: float | Default | None = DEFAULT,
        entities: Sequence[Entity] = (),
    ) -> Callable[[F], F]:
        """Register a device function run once on its own thread (usually a loop); it is
        restarted if it raises, or returns early without command handlers. ``timeout``
        bounds each of its command handlers' calls (default 30 s, None: no bound)."""

        return self._decorator(
            "device", name, init=init, enabled=enabled, timeout=timeout, entities=entities
        )

    def add_device(
        self,
        name: str | Callable[..., Any],
        func: Callable[..., Any],
        *,
        init: Callable[..., Any] | None = None,
        enabled: bool = True,
        is_root: bool = False,
        timeout: float | Default | None = DEFAULT,
        entities: Sequence[Entity] = (),
    ) -> None:
        """Imperative form of :meth:`device` (named unless ``is_root``)."""
        self.registry.add(
            "device",
            _name_of(name),
            func,
            init=init,
            enabled=enabled,
            is_root=is_root,
            timeout=timeout,
            entities=entities,
        )

    def telemetry(
        self,
        name: str | None = None,
        *,
        interval: IntervalSpec,
        publish: PublishStrategy | None = None,
        persist: PersistPolicy | None = None,
        init: Callable[..., Any] | None = None,
        enabled: bool = True,
        group: str | None = None,
        retry: int = 0,
        retry_on: tuple[type[BaseException], ...] | None = None,
        backoff: BackoffStrategy | None = None,
        circuit_breaker: CircuitBreaker | None = None,
        timeout: float | Default | None = DEFAULT,
        entities: Sequence[Entity] = (),
    ) -> Callable[[F], F]:
        """Register a handler called every ``interval`` seconds (or a function of the
        settings returning them); a returned dict is published as state, None publishes
        nothing this cycle.

        ``publish`` decides which readings go out (:mod:`agent.strategies`; the first always
        does). ``retry`` retries a failed cycle for the exceptions in ``retry_on`` (default
        ``(OSError,)``) with ``backoff`` (default :class:`~agent.ExponentialBackoff`) between
        attempts; ``circuit_breaker`` rests a handler that keeps failing (:mod:`agent.retry`).
        Devices with the same ``group`` share one thread and one scheduler job; each keeps
        its own interval. ``persist`` (:mod:`agent.persist`) saves the device's
        ``DeviceStore`` after cycles; it needs ``App(store=...)``.
        """

        def decorator(func: F) -> F:
            self.add_telemetry(
                name if name is not None else func,
                func,
                interval=interval,
                publish=publish,
                persist=persist,
                init=init,
                enabled=enabled,
                group=group,
                retry=retry,
                retry_on=retry_on,
                backoff=backoff,
                circuit_breaker=circuit_breaker,
                is_root=name is None,
                timeout=timeout,
                entities=entities,
            )
            return func

        return decorator

    def add_telemetry(
        self,
        name: str | Callable[..., Any],
        func: Callable[..., Any],
        *,
        interval: IntervalSpec,
        publish: PublishStrategy | None = None,
        persist: PersistPolicy | None = None,
        init: Callable[..., Any] | None = None,
        enabled: bool = True,
        group: str | None = None,
        is_root: bool = False,
        retry: int = 0,
        retry_on: tuple[type[BaseException], ...] | None = None,
        backoff: BackoffStrategy | None = None,
        circuit_breaker: CircuitBreaker | None = None,
        timeout: float | Default | None = DEFAULT,
        entities: Sequence[Entity] = (),
    ) -> None:
        """Imperative form of :meth:`telemetry`."""
        self.registry.add(
            "telemetry",
            _name_of(name),
            func,
            init=init,
            enabled=enabled,
            interval=interval,
            is_root=is_root,
            telemetry=TelemetryOptions(
                publish, persist, group, retry, retry_on, backoff, circuit_breaker
            ),
            timeout=timeout,
            entities=entities,
        )

    def command(
        self,
        name: str | None = None,
        *,
        init: Callable[..., Any] | None = None,
        enabled: bool = True,
        timeout: float | Default | None = DEFAULT,
        entities: Sequence[Entity] = (),
    ) -> Callable[[F], F]:
        """Register a handler called for each command on ``{prefix}/{name}/set``; parameters
        named ``topic`` and ``payload`` get the message, a returned dict is published. A
        call running past ``timeout`` (default 30 s, None: no bound) is reported stalled."""

        return self._decorator(
            "command", name, init=init, enabled=enabled, timeout=timeout, entities=entities
        )

    def add_command(
        self,
        name: str | Callable[..., Any],
        func: Callable[..., Any],
        *,
        init: Callable[..., Any] | None = None,
        enabled: bool = True,
        is_root: bool = False,
        timeout: float | Default | None = DEFAULT,
        entities: Sequence[Entity] = (),
    ) -> None:
        """Imperative form of :meth:`command`."""
        self.registry.add(
            "command",
            _name_of(name),
            func,
            init=init,
            enabled=enabled,
            is_root=is_root,
            timeout=timeout,
            entities=entities,
        )

    def adapter(
        self, port_type: type, impl: AdapterSpec, *, dry_run: AdapterSpec | None = None
    ) -> None:
        """Map a port type to its implementation (and an optional dry-run variant)."""
        self.adapters.register(port_type, impl, dry_run=dry_run)

    def on_configure(self, func: F) -> F:
        """Register a hook run after settings and adapters are ready, before devices start."""
        check_plain_function(func, "on_configure hook")
        signature_params(func, "on_configure hook")
        self.configure_hooks.append(func)
        return func


def _name_of(name: str | Callable[..., Any]) -> str:
    return name if isinstance(name, str) else name.__name__
