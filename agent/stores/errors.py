"""The errors of the stores: :class:`StoreError` and its subclasses, :class:`UnstorableData`,
and :data:`STORE_ERROR_TYPES`, which maps them to the ``error_type`` of their error payloads.

They sit in a module of their own because every other module of the package raises them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "STORE_ERROR_TYPES",
    "StoreCorrupt",
    "StoreError",
    "StoreSaveFailed",
    "UnstorableData",
]


class StoreError(Exception):
    """Base of the errors the stores define."""


class StoreCorrupt(StoreError):
    """A store file (or row) could not be read; it was moved aside and treated as empty."""


class StoreSaveFailed(StoreError):
    """Saving a device's state failed (reported once per failure streak; see
    :class:`agent.persist.DeviceStore`). Its ``__cause__`` is the underlying error."""


class UnstorableData(TypeError):
    """The data is not JSON that loads back as it was saved.

    ``key`` is the store key, ``path`` the offending field (``"history[2].value"``; empty
    for the data itself) and ``type_name`` the offending value's type.
    """

    def __init__(self, message: str, *, key: str, path: str, type_name: str) -> None:
        super().__init__(message)
        self.key = key
        self.path = path
        self.type_name = type_name


#: ``error_type`` of the error payloads for store problems (merge into the error publisher's
#: map; like every error type, matched by exact class).
STORE_ERROR_TYPES: Mapping[type[BaseException], str] = MappingProxyType(
    {StoreCorrupt: "store_corrupt", StoreSaveFailed: "store_save_failed"}
)


class _Unreadable(Exception):
    """Internal: stored bytes that are not a store (the message says why)."""
