"""Stores: where device state survives a restart — and a power cut.

A *store* maps a key (one per device: its name) to a dict of JSON data::

    store = JsonFileStore("/var/lib/gas2mqtt/state.json")
    store.save("counter", {"impulses": 1234})       # on disk when it returns
    store.load("counter")                            # {"impulses": 1234}; None if never saved

Four stores ship, all with the same contract (:class:`Store`):

* :class:`JsonFileStore` — one JSON file, one top-level key per device, replaced atomically:
  the one to choose for a few devices, a file a person can read and diff;
* :class:`SqliteStore` — one row per key in an SQLite database (WAL, ``synchronous=FULL``):
  for stores that grow or are shared by many devices (a save writes its rows, not the
  whole file);
* :class:`MemoryStore` — a dict, for tests; :class:`NullStore` — keeps nothing.

**The data is JSON, in every store.** A value JSON cannot hold exactly — a tuple, a set, a
non-string dict key, NaN or an infinity, any other object — is a :class:`UnstorableData`
(a ``TypeError``) that names the key, the path of the offending field and its type, and
nothing is written. :class:`MemoryStore` checks exactly as the file stores do, so a unit test
on it catches what a file store would refuse. What is loaded is always a fresh copy: mutating
it never changes the store.

**Thread-safe.** Device threads save concurrently. The file-backed stores *group-commit*
(``group_commit`` below): ten devices saving on the same tick cost one or two writes, not
ten, a save waits for at most the write in progress and then its own, and no lock is held
during a write.

**Few writes.** Saving exactly what is already stored writes nothing (and
:class:`agent.persist.DeviceStore` does not even call the store when its content did not
change). ``store.writes`` counts the writes that reached the medium.

**Problems are reported, not raised, when nobody could act on them.** A store file that
cannot be read (garbage, truncated, not a database) is moved aside as
``<name>.corrupt-<UTC timestamp>`` and kept for inspection, logged (naming the file) and
treated as empty — never an exception at start-up. The store cannot publish to MQTT itself:
the runtime gives it a hook with :meth:`StoreBase.bind_reporter`; problems found before
that (a corrupt file found at the first load, before MQTT is up) are kept and delivered
when the hook is bound. Failed *saves* raise to the caller;
:class:`agent.persist.DeviceStore` turns them into one report per failure streak.

See docs/adr/007-persistence-and-crash-safety.md for the crash model and why each step of
a write is there.

Import from here, not from the modules, which are laid out so that each one imports only
those above it:

- ``errors``: :class:`StoreError`, :class:`StoreCorrupt`, :class:`StoreSaveFailed`,
  :class:`UnstorableData` and :data:`STORE_ERROR_TYPES`.
- ``encoding``: canonical JSON (:func:`encode`), the checks that name what JSON cannot
  hold, the key check, parsing stored bytes.
- ``problems``: :class:`StoreProblem`, :data:`ProblemHook`, and the channel that keeps
  problems until a hook is bound.
- ``base``: the :class:`Store` and :class:`ReportsProblems` protocols and :class:`StoreBase`.
- ``memory``: :class:`MemoryStore` and :class:`NullStore`.
- ``files``: :data:`FILE_MODE`, :data:`DIRECTORY_MODE`, and the durable-file steps
  (fsync of a directory, directories, set-aside names).
- ``group_commit``: the base of the file-backed stores: read once, written by group commit.
- ``json_file``: :class:`JsonFileStore`.
- ``sqlite``: :class:`SqliteStore`.

Everything logs to the one logger ``agent.stores``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.stores.base import ReportsProblems, Store, StoreBase
from agent.stores.encoding import _check_key as _check_key  # agent.persist uses it
from agent.stores.encoding import encode
from agent.stores.errors import (
    STORE_ERROR_TYPES,
    StoreCorrupt,
    StoreError,
    StoreSaveFailed,
    UnstorableData,
)
from agent.stores.files import DIRECTORY_MODE, FILE_MODE
from agent.stores.memory import MemoryStore, NullStore
from agent.stores.problems import ProblemHook, StoreProblem

if TYPE_CHECKING:
    from agent.stores.json_file import JsonFileStore
    from agent.stores.sqlite import SqliteStore

__all__ = [
    "DIRECTORY_MODE",
    "FILE_MODE",
    "STORE_ERROR_TYPES",
    "JsonFileStore",
    "MemoryStore",
    "NullStore",
    "ProblemHook",
    "ReportsProblems",
    "SqliteStore",
    "Store",
    "StoreBase",
    "StoreCorrupt",
    "StoreError",
    "StoreProblem",
    "StoreSaveFailed",
    "UnstorableData",
    "encode",
]


def __getattr__(name: str) -> Any:
    # The file stores are imported when first asked for: a run without a store (or with a
    # JSON one) never loads sqlite3 and its library.
    if name in ("JsonFileStore", "_render"):
        from agent.stores import json_file

        return getattr(json_file, name)
    if name == "SqliteStore":
        from agent.stores.sqlite import SqliteStore

        return SqliteStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
