"""The App's device stores: exactly one :class:`~agent.persist.DeviceStore` per device key.

``App(store=JsonFileStore("/var/lib/agent/state.json"))`` gives every device that asks for
``store: DeviceStore`` (or has ``persist=``) its own slice of that store. The runtime:

* creates each device's DeviceStore once per process — the same object in ``init``, in every
  call and across device restarts, so what a handler mutated is what gets saved and a counter
  can never roll back to a stale copy;
* loads it on the device's thread before the first ``init`` or handler call (a restart
  keeps the in-memory state: it is newer than the disk);
* saves it after each telemetry cycle as ``persist=`` asks, and at shutdown on the device's
  own thread (best effort from the main thread for one that overran the grace period);
* routes the stores' problems (a corrupt file moved aside, saves failing) to the error
  topics, and closes the backend last.

Writes never happen on paho's network thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from agent.errors import ErrorPublisher
from agent.persist import DeviceStore, save_at_shutdown
from agent.registry import Registration
from agent.stores import ReportsProblems, Store, StoreProblem

__all__ = ["DeviceStores"]


class DeviceStores:
    """One DeviceStore per device key, for the lifetime of the App."""

    def __init__(self, backend: Store) -> None:
        self.backend = backend
        self._by_key: dict[str, DeviceStore] = {}
        self._lock = threading.Lock()

    def for_device(self, reg: Registration) -> DeviceStore:
        """The device's store, created on first use (not loaded yet)."""
        with self._lock:
            store = self._by_key.get(reg.name)
            if store is None:
                store = self._by_key[reg.name] = DeviceStore(self.backend, reg.name)
            return store

    def loaded(self, reg: Registration) -> DeviceStore:
        """The device's store, loaded: call on the device's thread before ``init``."""
        store = self.for_device(reg)
        if not store.loaded:
            store.load()
        return store

    def bind(self, errors: ErrorPublisher, is_root: Callable[[str], bool]) -> None:
        """Send the backend's problems to MQTT through ``errors`` (problems found earlier,
        e.g. a corrupt file moved aside while loading, are delivered now)."""
        if isinstance(self.backend, ReportsProblems):

            def publish(problem: StoreProblem) -> None:
                key = problem.key
                errors.publish(
                    problem.error,
                    device=key,
                    is_root=key is not None and is_root(key),
                    details=dict(problem.details),
                )

            self.backend.bind_reporter(publish)

    def save_all(self, names: list[str]) -> None:
        """Save the stores of ``names`` (devices whose threads did not end in time)."""
        with self._lock:
            stores = [self._by_key[n] for n in names if n in self._by_key]
        for store in stores:
            save_at_shutdown(store)

    def close(self) -> None:
        """Unbind and close the backend (last, before MQTT goes away)."""
        if isinstance(self.backend, ReportsProblems):
            self.backend.bind_reporter(None)
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()
