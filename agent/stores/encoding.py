"""JSON, exactly: the canonical encoding (:func:`encode`), the checks that name what JSON
cannot hold, the key check, and the parsing of stored bytes.

Every store keeps canonical bytes (sorted keys, no spaces, UTF-8, never NaN): equal data,
equal bytes, so comparing bytes tells whether anything changed. A value JSON cannot hold
exactly is an :class:`~agent.stores.errors.UnstorableData` naming the key, the field's path
and its type.
"""

from __future__ import annotations

import json
import math
from typing import Any

from agent.stores.errors import UnstorableData, _Unreadable

__all__ = ["encode"]


def _dumps(value: object) -> bytes:
    """The canonical text: sorted keys, no spaces, UTF-8, never NaN. Equal data, equal bytes,
    so comparing bytes tells whether anything changed."""
    text = json.dumps(
        value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
    )
    return text.encode("utf-8")


def encode(key: str, data: object) -> bytes:
    """The canonical JSON of ``data`` as stored under ``key``, or :class:`UnstorableData`.

    Fast path: encode and decode (both C code) and compare with the original; that also
    catches what ``json`` would convert silently (a tuple becomes a list, a key ``1`` becomes
    ``"1"``), which would load back different from what was saved. Only when that fails is
    the data walked in Python, to name the offending field.
    """
    if not isinstance(data, dict):
        raise UnstorableData(
            f"cannot store {key!r}: the data must be a dict, got {_a(data)}",
            key=key,
            path="",
            type_name=type(data).__name__,
        )
    try:
        text = _dumps(data)
        if json.loads(text) == data:
            return text
        failure: BaseException | None = None
    except (TypeError, ValueError, RecursionError) as exc:
        failure = exc
    raise _explain(key, data, failure)


_MAX_DEPTH = 200  # deeper than any device state; json's C code recurses too


def _a(value: object) -> str:
    name = type(value).__name__
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def _join(path: str, key: str) -> str:
    if key and not any(c in key for c in '.[]"'):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _problem_in(
    value: object, path: str, parents: set[int], depth: int
) -> tuple[str, object, str] | None:
    """(path, value, what is wrong) of the first thing JSON cannot hold, depth first."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path, value, "a str with a lone surrogate, which is not Unicode text"
        return None
    if isinstance(value, int):
        try:
            str(value)
        except ValueError:  # beyond sys.get_int_max_str_digits()
            return path, value, "an int too long to write as decimal digits"
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return path, value, f"a float ({value!r}), which JSON cannot hold"
    if isinstance(value, dict | list):
        if depth >= _MAX_DEPTH:
            return path, value, f"nested more than {_MAX_DEPTH} levels deep"
        if id(value) in parents:
            return path, value, f"{_a(value)} that contains itself (a reference cycle)"
        parents.add(id(value))
        try:
            if isinstance(value, list):
                for index, item in enumerate(value):
                    found = _problem_in(item, f"{path}[{index}]", parents, depth + 1)
                    if found:
                        return found
                return None
            for name, item in value.items():
                if not isinstance(name, str):  # the key is the offending value here
                    return (
                        path,
                        name,
                        f"a dict with a key of type {type(name).__name__} ({name!r}); "
                        "JSON object keys are strings",
                    )
                found = _problem_in(item, _join(path, name), parents, depth + 1)
                if found:
                    return found
            return None
        finally:
            parents.discard(id(value))
    return (
        path,
        value,
        f"{_a(value)}, which JSON cannot hold (use dict, list, str, int, float, bool or None)",
    )


def _explain(key: str, data: dict[str, Any], failure: BaseException | None) -> UnstorableData:
    found = _problem_in(data, "", set(), 0)
    if found is None:  # json refused something the walk accepts (an exotic subclass)
        return UnstorableData(
            f"cannot store {key!r}: {failure or 'the data does not load back as saved'}",
            key=key,
            path="",
            type_name=type(data).__name__,
        )
    path, value, what = found
    where = f"field {path!r}" if path else "the data"
    return UnstorableData(
        f"cannot store {key!r}: {where} is {what}",
        key=key,
        path=path,
        type_name=type(value).__name__,
    )


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a store key must be a str, got {_a(key)}")
    if not key:
        raise ValueError("a store key must not be empty")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"a store key must be Unicode text, got {key!r}") from None
    return key


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _parse_object(raw: bytes | str, what: str) -> dict[str, Any]:
    """Parse ``raw`` as one JSON object, or raise :class:`_Unreadable` saying why."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise _Unreadable(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _Unreadable(
            f"{what} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise _Unreadable(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _Unreadable(f"{what} is {_a(value)}, not a JSON object")
    return value
