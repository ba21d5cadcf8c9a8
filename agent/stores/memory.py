"""The stores that keep nothing on disk: :class:`MemoryStore` (a dict, for tests) and
:class:`NullStore` (keeps nothing). Both check the data exactly as the file stores do.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from agent.stores.base import StoreBase
from agent.stores.encoding import _check_key, encode

__all__ = ["MemoryStore", "NullStore"]


class NullStore(StoreBase):
    """Keeps nothing: ``load`` is always None. Still refuses what is not JSON, so a dry run
    finds what a real store would refuse."""

    def _load_encoded(self, key: str) -> bytes | None:
        return None

    def _save_encoded(self, key: str, text: bytes, *, force: bool = False) -> None:
        pass

    def __repr__(self) -> str:
        return "NullStore()"


class MemoryStore(StoreBase):
    """A store in memory, for tests: same checks and copies as the file stores.

    ``initial`` (key → dict) is checked and copied. Values are kept as canonical JSON, so
    what comes out is always a fresh copy and exactly what a file store would give back.
    """

    def __init__(self, initial: Mapping[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._data: dict[str, bytes] = {
            _check_key(key): encode(key, value) for key, value in (initial or {}).items()
        }

    def _load_encoded(self, key: str) -> bytes | None:
        with self._lock:
            return self._data.get(key)

    def _save_encoded(self, key: str, text: bytes, *, force: bool = False) -> None:
        with self._lock:
            if force or self._data.get(key) != text:
                self._data[key] = text
                self.writes += 1

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Everything stored, as fresh dicts (for assertions)."""
        with self._lock:
            return {key: json.loads(text) for key, text in self._data.items()}

    def __repr__(self) -> str:
        return f"MemoryStore(<{len(self._data)} keys>)"
