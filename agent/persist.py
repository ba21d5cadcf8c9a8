"""A device's persistent state: :class:`DeviceStore`, save policies, and the runtime's calls.

A handler asks for its store by type and uses it like a dict::

    @app.telemetry("counter", interval=60, persist=SaveOnChange())
    def counter(store: DeviceStore) -> dict:
        store["impulses"] = store.get("impulses", 0) + read_new_impulses()
        return store.to_dict()

    @app.command("valve")
    def valve(payload: str, store: DeviceStore) -> dict:
        store["position"] = payload
        store.save()                      # on disk when it returns (or reported, see below)
        return {"position": payload}

**When is it saved?** Always at shutdown, and whenever a handler calls :meth:`DeviceStore.save`.
A telemetry device may add a policy (``persist=``), asked after every cycle:

* :class:`SaveOnPublish` — after a cycle that published a state, so what is stored matches
  what consumers last saw;
* :class:`SaveOnChange` — after a cycle that left the store changed (the fewest losses);
* :class:`SaveOnShutdown` — never during the run (the fewest writes);
* ``a | b`` saves when either says so, ``a & b`` when both do.

A save of a store whose content did not change writes nothing, whatever asked for it.

**What changed?** :class:`DeviceStore` compares the canonical JSON of its content with that
of what was last loaded or saved, so nested changes count too (``store["a"]["b"] = 1``,
``store["log"].append(x)``) and a value changed and changed back does not.
:meth:`DeviceStore.mark_dirty` forces the next save to write anyway.

**When saving fails** (read-only directory, full disk, a database locked past its busy
timeout), the state stays in memory, still dirty, and the next save — the policy's, the
handler's or the one at shutdown — tries again. The device keeps running: ``save()`` returns
False instead of raising, and the failures are reported once per streak (see
:class:`SaveFailures`).

**For the runtime:** one :class:`DeviceStore` per device, created and loaded on the device's
thread before its first handler call; :func:`save_after_cycle` after every telemetry cycle;
:func:`save_at_shutdown` when the device stops. Neither raises. A DeviceStore belongs to its
device's thread (like everything of a device, ADR-005): it is not locked; the stores behind
it are.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator, MutableMapping
from typing import Any, Protocol, runtime_checkable

from agent.stores import (
    ProblemHook,
    ReportsProblems,
    Store,
    StoreBase,
    StoreProblem,
    StoreSaveFailed,
    UnstorableData,
    _check_key,
    encode,
)

__all__ = [
    "AllPolicy",
    "AnyPolicy",
    "DeviceStore",
    "PersistPolicy",
    "PolicyBase",
    "SaveFailures",
    "SaveOnChange",
    "SaveOnPublish",
    "SaveOnShutdown",
    "check_policy",
    "save_after_cycle",
    "save_at_shutdown",
]

logger = logging.getLogger(__name__)


class SaveFailures:
    """The failure streak of one device's saves.

    The first failure of a streak is logged at ERROR and reported (an error payload of type
    ``store_save_failed`` through ``report``); the next ones only at DEBUG, counted; the
    first success after them logs one INFO line with the count. So a disk that stays full
    for a week gives one error payload, not one per save.
    """

    def __init__(self, key: str, where: str, report: ProblemHook | None) -> None:
        self._key = key
        self._where = where
        self._report = report
        self.count = 0
        """Failed saves in the current streak (0: saving works)."""
        self.last_error: BaseException | None = None

    @property
    def failing(self) -> bool:
        return self.count > 0

    def failed(self, error: BaseException) -> None:
        self.count += 1
        self.last_error = error
        reason = f"{type(error).__name__}: {error}"
        if self.count > 1:
            logger.debug("saving %r failed again (%d in a row): %s", self._key, self.count, reason)
            return
        message = f"could not save the state of {self._key!r} to {self._where}: {reason}"
        logger.error("%s; it stays in memory and the next save tries again", message)
        if self._report is None:
            return
        failure = StoreSaveFailed(message)
        failure.__cause__ = error
        details = {"store": self._where, "reason": reason, "exception": type(error).__name__}
        try:
            self._report(StoreProblem(failure, self._key, details))
        except Exception:  # a broken reporter must not stop the device
            logger.exception("the store problem reporter failed")

    def succeeded(self) -> None:
        if self.count:
            logger.info(
                "saving the state of %r to %s works again (after %d failed attempts)",
                self._key,
                self._where,
                self.count,
            )
        self.count = 0
        self.last_error = None


class DeviceStore(MutableMapping[str, Any]):
    """One device's state: a dict of JSON values, stored under ``key`` in ``backend``.

    * :meth:`load` reads it (the runtime does, before the first handler call; any other
      first access loads too). A key never saved loads as ``{}``.
    * Item access works like a dict. Setting a value checks it at once: what JSON cannot
      hold (a tuple, a set, NaN, ...) raises :class:`~agent.stores.UnstorableData` (a
      ``TypeError``) on that line, naming the field.
    * :attr:`dirty` is True when the content differs from what was last loaded or saved
      (nested changes included) or :meth:`mark_dirty` was called.
    * :meth:`save` writes when dirty, and never raises for a failed write: it returns
      False, keeps the state (still dirty) and reports the failure once per streak; the
      next save tries again. It returns True when the state is stored (now or already).

    Problems go to ``on_problem``, or else to the backend's reporter
    (:meth:`~agent.stores.StoreBase.bind_reporter`), or else only to the log.
    """

    def __init__(self, backend: Store, key: str, *, on_problem: ProblemHook | None = None) -> None:
        if not isinstance(backend, Store):
            raise TypeError(f"not a store (load and save are needed): {backend!r}")
        self._backend = backend
        self._key = _check_key(key)
        self._data: dict[str, Any] = {}
        self._saved: bytes | None = None  # canonical JSON last loaded or saved; None: not loaded
        self._forced = False
        if on_problem is None and isinstance(backend, ReportsProblems):
            on_problem = backend.report_problem
        self._failures = SaveFailures(self._key, repr(backend), on_problem)

    @property
    def key(self) -> str:
        return self._key

    @property
    def backend(self) -> Store:
        return self._backend

    @property
    def loaded(self) -> bool:
        return self._saved is not None

    @property
    def failures(self) -> SaveFailures:
        """The current failure streak (``count``, ``last_error``)."""
        return self._failures

    def load(self) -> None:
        """Replace the content with what the backend holds (``{}`` if nothing).

        Errors reading the backend (a file nobody may read) are raised: starting empty
        would overwrite the stored state at the next save. Unreadable *content* is not an
        error here: the stores move it aside, report it and load nothing.
        """
        if isinstance(self._backend, StoreBase):
            raw = self._backend._load_encoded(self._key)
            saved = raw if raw is not None else encode(self._key, {})
        else:
            data = self._backend.load(self._key)
            if data is not None and not isinstance(data, dict):
                raise TypeError(f"{self._backend!r}.load({self._key!r}) returned {data!r}")
            saved = encode(self._key, data or {})
        self._data = json.loads(saved)  # our own copy, whatever the backend keeps
        self._saved = saved
        self._forced = False

    def save(self) -> bool:
        """Store the content if it changed; True when it is stored, False when it failed.

        Synchronous: with a file-backed store the state is on disk when this returns True.
        A failure (the medium's error, or content that is not JSON because a nested value
        was changed to one) keeps the content and the dirty flag and is reported once per
        failure streak; the next save tries again.
        """
        self._ensure_loaded()
        try:
            text = encode(self._key, self._data)
        except UnstorableData as exc:
            self._failures.failed(exc)
            return False
        if text == self._saved and not self._forced:
            self._failures.succeeded()  # changed and changed back: stored as it is
            return True
        try:
            if isinstance(self._backend, StoreBase):
                # No second encoding; forced past the store's own "already stored" check.
                self._backend._save_encoded(self._key, text, force=self._forced)
            else:
                self._backend.save(self._key, json.loads(text))
        except Exception as exc:
            self._failures.failed(exc)
            return False
        self._saved, self._forced = text, False
        self._failures.succeeded()
        return True

    def mark_dirty(self) -> None:
        """Make the next :meth:`save` write even if the content looks unchanged."""
        self._forced = True

    @property
    def dirty(self) -> bool:
        """True when a save would write (content changed, or :meth:`mark_dirty`)."""
        self._ensure_loaded()
        if self._forced:
            return True
        try:
            return encode(self._key, self._data) != self._saved
        except UnstorableData:
            return True  # certainly not what was stored

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the content (e.g. to return it from a telemetry handler)."""
        self._ensure_loaded()
        return copy.deepcopy(self._data)

    def _ensure_loaded(self) -> None:
        if self._saved is None:
            self.load()

    def __getitem__(self, name: str) -> Any:
        self._ensure_loaded()
        return self._data[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self._ensure_loaded()
        if not isinstance(name, str):
            raise TypeError(
                f"DeviceStore keys are str (JSON object keys), got {type(name).__name__}"
            )
        encode(self._key, {name: value})  # refuse it here, on the line that set it
        self._data[name] = value

    def __delitem__(self, name: str) -> None:
        self._ensure_loaded()
        del self._data[name]

    def __iter__(self) -> Iterator[str]:
        self._ensure_loaded()
        return iter(self._data)

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._data)

    def __repr__(self) -> str:
        state = "not loaded" if self._saved is None else repr(self._data)
        return f"DeviceStore({self._key!r}, {state})"


# --------------------------------------------------------------------------- policies


@runtime_checkable
class PersistPolicy(Protocol):
    """Decides, after each telemetry cycle, whether to save the device's store.

    ``published`` tells whether the cycle published a state. Only the decision is the
    policy's: a save of an unchanged store writes nothing anyway, and the store is always
    saved at shutdown.
    """

    def should_save(self, store: DeviceStore, published: bool) -> bool: ...


class PolicyBase:
    """Base of the shipped policies: ``|`` and ``&``."""

    def should_save(self, store: DeviceStore, published: bool) -> bool:
        raise NotImplementedError

    def __or__(self, other: PersistPolicy) -> AnyPolicy:
        return AnyPolicy(self, other)

    def __ror__(self, other: PersistPolicy) -> AnyPolicy:
        return AnyPolicy(other, self)

    def __and__(self, other: PersistPolicy) -> AllPolicy:
        return AllPolicy(self, other)

    def __rand__(self, other: PersistPolicy) -> AllPolicy:
        return AllPolicy(other, self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SaveOnPublish(PolicyBase):
    """Save after every cycle that published a state."""

    def should_save(self, store: DeviceStore, published: bool) -> bool:
        return published


class SaveOnChange(PolicyBase):
    """Save after every cycle that left the store changed."""

    def should_save(self, store: DeviceStore, published: bool) -> bool:
        return store.dirty


class SaveOnShutdown(PolicyBase):
    """Save only at shutdown (which happens whatever the policy): fewest writes, and
    whatever changed since the start is lost if the power goes."""

    def should_save(self, store: DeviceStore, published: bool) -> bool:
        return False


class _CompositePolicy(PolicyBase):
    _symbol = "?"

    def __init__(self, *children: PersistPolicy) -> None:
        flat: list[PersistPolicy] = []
        for child in children:
            check_policy(child)
            flat.extend(child.children if type(child) is type(self) else [child])  # type: ignore[attr-defined]
        if not flat:
            raise ValueError(f"{type(self).__name__} needs at least one policy")
        self.children: tuple[PersistPolicy, ...] = tuple(flat)

    def _votes(self, store: DeviceStore, published: bool) -> list[bool]:
        # Every child is asked, always: a policy of your own may count cycles.
        return [bool(child.should_save(store, published)) for child in self.children]

    def __repr__(self) -> str:
        return f" {self._symbol} ".join(repr(child) for child in self.children)


class AnyPolicy(_CompositePolicy):
    """Saves when any of its policies says so (``a | b``)."""

    _symbol = "|"

    def should_save(self, store: DeviceStore, published: bool) -> bool:
        return any(self._votes(store, published))


class AllPolicy(_CompositePolicy):
    """Saves when all of its policies say so (``a & b``)."""

    _symbol = "&"

    def should_save(self, store: DeviceStore, published: bool) -> bool:
        return all(self._votes(store, published))


def check_policy(policy: object) -> PersistPolicy:
    """Return ``policy`` if it is a :class:`PersistPolicy`, else raise TypeError (for
    registration: ``persist=`` is checked when the device is declared)."""
    if not isinstance(policy, PersistPolicy):
        raise TypeError(
            f"persist= takes a save policy (SaveOnPublish(), SaveOnChange(), SaveOnShutdown() "
            f"or an object with should_save(store, published)), got {policy!r}"
        )
    return policy


# --------------------------------------------------------------------------- runtime calls


def save_after_cycle(store: DeviceStore, policy: PersistPolicy | None, *, published: bool) -> bool:
    """After a telemetry cycle (on the device's thread): save if ``policy`` says so.

    Without a policy nothing is saved here (the handler's own ``save()`` calls and the save
    at shutdown remain). Never raises; True when a save was asked for and succeeded.
    """
    if policy is None:
        return False
    try:
        wanted = bool(policy.should_save(store, published))
    except Exception:
        logger.exception("the persist policy %r of %r failed; not saving now", policy, store.key)
        return False
    return wanted and _save(store)


def save_at_shutdown(store: DeviceStore) -> bool:
    """When the device stops (on its thread, after its last handler call): save whatever
    changed. Never raises; True when the state is stored."""
    return _save(store)


def _save(store: DeviceStore) -> bool:
    try:
        return store.save()
    except Exception:  # only a failed lazy load gets here; the runtime must go on
        logger.exception("could not save the state of %r", store.key)
        return False
