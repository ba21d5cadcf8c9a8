"""Testing a bridge exactly: :class:`AppHarness` runs your App in the test's process, on a
mock MQTT client and a fake clock, and lets the test script time.

::

    from agent.testing import AppHarness

    def test_the_meter_publishes_every_minute():
        with AppHarness(app, poll_interval=60) as h:      # settings overrides, env ignored
            h.advance(600)                                # ten minutes, in milliseconds
            assert len(h.messages_for("gas2mqtt/meter/state")) == 11   # + the one at start
            h.send_command("valve", "open")               # returns once the handler ran
            h.assert_state("valve", {"state": "open"})

* Time moves only with :meth:`AppHarness.advance`, exactly: every tick, retry delay and
  ``ctx.sleep`` that falls due runs at its instant, in order, and ``advance`` returns when the
  app is idle again (see :class:`~agent.testing.FakeClock`).
* :meth:`AppHarness.send_command` plays the broker delivering a command and returns after
  the handler ran and its publishes are recorded.
* :attr:`AppHarness.published` is every message, in order, as :class:`Message`.
* With ``raise_errors=True`` (the default) a handler that raises fails the test — with its
  traceback and the handler's name — at the next harness call; with ``False`` its failure is
  only the usual error payload in :attr:`~AppHarness.published`, for tests of error handling.

Settings come from :func:`make_settings`: the class defaults and your overrides only — never
the environment or a ``.env`` file, so a test runs the same on every machine.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.app import App
from agent.mqtt.fakes import MockMqttClient
from agent.runtime.persistence import DeviceStores
from agent.settings import Settings
from agent.settings.sources import _flatten_toml
from agent.stores import Store
from agent.testing.clock import FakeClock
from agent.topics import Topics, filter_matches

__all__ = ["AppHarness", "HandlerFailed", "Message", "make_settings"]


def make_settings(settings_class: type[Settings] = Settings, **overrides: Any) -> Settings:
    """Settings from the class defaults and ``overrides`` alone (no environment, no
    ``.env``), checked as a config file would be: an unknown key raises
    :class:`~agent.settings.ConfigError` with a "did you mean".

    Nested settings as a dict or with ``__``: ``mqtt={"topic_prefix": "t"}`` or
    ``mqtt__topic_prefix="t"``.
    """
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        *sections, name = key.split("__")
        table = nested
        for section in sections:
            table = table.setdefault(section, {})
        if isinstance(value, Mapping) and isinstance(table.get(name), dict):
            table[name].update(value)
        else:
            table[name] = dict(value) if isinstance(value, Mapping) else value
    layers: dict[tuple[str, ...], Any] = {}
    _flatten_toml(settings_class, nested, (), "make_settings", layers)
    settings = settings_class._from_layers(layers, ())
    settings._validate_tree(())
    return settings


@dataclass(frozen=True)
class Message:
    """One message the app published."""

    topic: str
    payload: str
    qos: int
    retain: bool

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)


class HandlerFailed(AssertionError):
    """A handler raised while ``raise_errors`` was on: the test fails with its traceback."""


class AppHarness:
    """Runs ``app`` in-process on a :class:`~agent.mqtt.fakes.MockMqttClient` and a
    :class:`~agent.testing.FakeClock` (see the module docstring).

    Args:
        app: the App under test (its registrations are used as they are).
        settings: ready settings; by default :func:`make_settings` of the app's settings
            class with ``overrides``.
        raise_errors: make a handler's exception fail the test (default), or keep it as an
            error payload only.
        adapters: adapter instances to use instead of the registered ones (the test's
            scripted fakes); the registered implementations of those ports are never
            imported.
        store: the store backend for this run (default: the App's). Each harness run loads
            the devices' stores afresh from it, as a restarted process would.
        dry_run: use the registered dry-run adapters (default: the App's setting).
    """

    def __init__(
        self,
        app: App,
        settings: Settings | None = None,
        *,
        raise_errors: bool = True,
        adapters: Mapping[type, object] | None = None,
        store: Store | None = None,
        dry_run: bool | None = None,
        **overrides: Any,
    ) -> None:
        if settings is not None and overrides:
            raise TypeError("give settings= or setting overrides, not both")
        self.app = app
        self.settings = (
            settings if settings is not None else make_settings(app.settings_class, **overrides)
        )
        self.mqtt = MockMqttClient()
        self.clock = FakeClock()
        self.raise_errors = raise_errors
        self._adapters = dict(adapters) if adapters is not None else None
        backend = store if store is not None else app.store
        if store is not None and app.store is None:
            raise TypeError("store= needs an App that has a store (App(..., store=...))")
        self.store = backend
        self._dry_run = dry_run
        self._shutdown = threading.Event()
        self._runtime: Any = None
        self._failures: list[tuple[str | None, BaseException]] = []
        self._lock = threading.Lock()
        prefix = self.settings.mqtt.topic_prefix or app.name
        self.topics = Topics(prefix)

    # -- running ---------------------------------------------------------------------------

    def start(self) -> AppHarness:
        """Start the app (its threads wait on the fake clock) and return when it is idle."""
        from agent.runtime.lifecycle import Runtime

        if self._runtime is not None:
            raise RuntimeError("the harness is already started")
        runtime = Runtime(
            self.app,
            settings=self.settings,
            mqtt=self.mqtt,
            shutdown_event=self._shutdown,
            clock=self.clock,
            adapters=self._adapters,
            # A fresh one per run: stores load from the backend, as after a real restart.
            device_stores=DeviceStores(self.store) if self.store is not None else None,
            dry_run=self._dry_run,
        )
        report = runtime.reporter.report

        def spy(error: BaseException, **kwargs: Any) -> None:
            if kwargs.get("traceback"):  # a handler's own exception (not a bad payload)
                with self._lock:
                    self._failures.append((kwargs.get("device"), error))
            report(error, **kwargs)

        runtime.reporter.report = spy  # type: ignore[method-assign]
        self._runtime = runtime
        runtime.start()
        self.wait_until_idle()
        return self

    def stop(self) -> None:
        """Shut the app down as SIGTERM would (shutdown saves, offline, …)."""
        runtime, self._runtime = self._runtime, None
        if runtime is None:
            return
        self._shutdown.set()
        runtime.stop()

    def __enter__(self) -> AppHarness:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def advance(self, seconds: float) -> None:
        """Move time forward exactly ``seconds``; returns when the app is idle again."""
        self._running().clock.advance(seconds)
        self.wait_until_idle()

    def send_command(self, device: str, payload: str | bytes, sub_topic: str | None = None) -> None:
        """Deliver a command as the broker would; returns after the handler ran."""
        runtime = self._running()
        reg = self.app.registry.get(device)
        is_root = reg is not None and reg.is_root
        topic = (
            self.topics.set(device, is_root)
            if sub_topic is None
            else self.topics.command(device, sub_topic, is_root)
        )
        self.mqtt.deliver(topic, payload)
        runtime.clock.settle_now()
        self.wait_until_idle()

    def wait_until_idle(self) -> None:
        """Wait (real time, bounded) until every thread of the app waits on the clock or has
        ended; then fail the test if a handler raised (``raise_errors``)."""
        runtime = self._running()
        threads = [w.thread for w in runtime.workers]
        threads.append(runtime.scheduler._thread)
        self.clock.wait_until_parked([t for t in threads if t is not None])
        self._raise_failures()

    # -- what was published ------------------------------------------------------------

    @property
    def published(self) -> list[Message]:
        """Every message the app published, in order."""
        return [Message(t, p, q, r) for t, p, r, q in list(self.mqtt.published)]

    def messages_for(self, topic: str) -> list[Message]:
        """The messages on ``topic`` (an MQTT filter: ``+`` and ``#`` allowed)."""
        return [m for m in self.published if filter_matches(topic, m.topic)]

    def last_state(self, device: str) -> dict[str, Any] | None:
        """The device's last published state, or None."""
        reg = self.app.registry.get(device)
        topic = self.topics.state(device, reg is not None and reg.is_root)
        states = self.messages_for(topic)
        return states[-1].json() if states else None

    def assert_state(self, device: str, subset: Mapping[str, Any]) -> None:
        """Assert the device's last state has ``subset``'s keys with those values."""
        state = self.last_state(device)
        if state is None:
            raise AssertionError(f"device {device!r} has published no state")
        differing = [
            f"{key}: expected {want!r}, got {state[key]!r}"
            if key in state
            else f"{key}: missing (expected {want!r})"
            for key, want in subset.items()
            if key not in state or state[key] != want
        ]
        if differing:
            raise AssertionError(
                f"state of device {device!r} differs: "
                + "; ".join(differing)
                + f" (state: {state})"
            )

    def assert_published(
        self,
        topic: str,
        payload: str | Mapping[str, Any] | None = None,
        *,
        qos: int | None = None,
        retain: bool | None = None,
    ) -> Message:
        """Assert a message on ``topic`` (filter) with that payload (text, or a dict compared
        as JSON), QoS and retain flag, where given; returns the last match."""
        found = [
            m
            for m in self.messages_for(topic)
            if (payload is None or _same_payload(m, payload))
            and (qos is None or m.qos == qos)
            and (retain is None or m.retain == retain)
        ]
        if not found:
            seen = "\n  ".join(repr(m) for m in self.messages_for(topic)) or "(nothing)"
            raise AssertionError(
                f"no message on {topic!r} with payload={payload!r} qos={qos} retain={retain}; "
                f"on that topic:\n  {seen}"
            )
        return found[-1]

    # -- internals -----------------------------------------------------------------------

    def _running(self) -> Any:
        if self._runtime is None:
            raise RuntimeError("start the harness first (AppHarness.start() or with ...)")
        return self._runtime

    def _raise_failures(self) -> None:
        with self._lock:
            failures, self._failures = self._failures, []
        if not failures or not self.raise_errors:
            return
        device, error = failures[0]
        reg = self.app.registry.get(device) if device else None
        handler = reg.func.__qualname__ if reg is not None else "a handler"
        raise HandlerFailed(
            f"handler {handler!r} of device {device!r} raised {type(error).__name__}: {error} "
            "(AppHarness(raise_errors=False) keeps it as an error payload instead)"
        ) from error


def _same_payload(message: Message, payload: str | Mapping[str, Any]) -> bool:
    if isinstance(payload, Mapping):
        try:
            return message.json() == dict(payload)
        except ValueError:
            return False
    return message.payload == payload
