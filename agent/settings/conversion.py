"""Turning a raw value from one source into the typed value of a field, or a ConfigError.

Two kinds of raw value arrive here. TOML values and keyword arguments are *typed* and are
checked strictly (a boolean is never a number). Text from the environment or a ``.env`` file
is *parsed* (``yes`` is true, ``a,b`` is a list). Either way a value that does not fit, or
fails a :class:`~agent.settings.fields.Check`, becomes a :class:`ConfigError` that says what
was expected (:func:`_describe`) and what was found (:func:`_show`, which never shows a
secret).
"""

from __future__ import annotations

import json
import pathlib
import typing
from typing import Any, Literal

from agent.settings.errors import ConfigError
from agent.settings.fields import _Field, _SectionBase


class _Raw:
    """One value as a source gave it, with where it came from (for error messages).

    Read-only by convention (nothing enforces it).
    """

    __slots__ = ("line", "source", "typed", "value", "variable")

    def __init__(
        self,
        value: Any,
        source: str,
        typed: bool,
        line: int | None = None,
        variable: str | None = None,
    ) -> None:
        self.value = value
        self.source = source
        # True: TOML / Python values, checked strictly; False: text from env / .env
        self.typed = typed
        self.line = line
        self.variable = variable

    def error(self, key: str, expected: str, found: str) -> ConfigError:
        return ConfigError(
            source=self.source,
            key=key,
            expected=expected,
            found=found,
            line=self.line,
            variable=self.variable,
        )


class _Mismatch(Exception):
    """Internal: the value does not fit; the caller turns it into a ConfigError."""


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _convert(spec: _Field, raw: _Raw, key: str) -> Any:
    base = _describe(spec.type)
    # The constraints, when there are any, say it better: "an integer 1-65535".
    expected = " and ".join(c.expected.format(type=base) for c in spec.checks) or base
    value = raw.value
    try:
        if value is None:
            if not spec.optional:
                raise _Mismatch
            return None
        if not raw.typed and spec.optional and value.strip() == "":
            return None  # MQTT__USERNAME= clears an optional setting
        result = _coerce(spec.type, value, raw.typed)
    except _Mismatch:
        raise raw.error(key, expected, _show(value, spec.secret)) from None
    if not all(check.test(result) for check in spec.checks):
        raise raw.error(key, expected, _show(value, spec.secret))
    return result


def _coerce(tp: Any, value: Any, typed: bool) -> Any:
    """Convert ``value`` to ``tp``: strictly for typed values, by parsing for text."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if tp is bool:
        if typed:
            if isinstance(value, bool):
                return value
            raise _Mismatch
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise _Mismatch
    if tp is int:
        if typed:
            # bool is an int subclass; TOML `port = true` is still a mistake.
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            raise _Mismatch
        try:
            return int(value.strip(), 10)
        except ValueError:
            raise _Mismatch from None
    if tp is float:
        if typed:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            raise _Mismatch
        try:
            return float(value.strip())
        except ValueError:
            raise _Mismatch from None
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if isinstance(tp, type) and issubclass(tp, pathlib.PurePath):
        if isinstance(value, (str, pathlib.PurePath)) and str(value):
            return tp(value)
        raise _Mismatch
    if origin is Literal:
        return _coerce_literal(tp, value, typed)
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        items = value if typed else _split_list(value)
        if not isinstance(items, list):
            raise _Mismatch
        # Elements of a JSON array are typed values, like TOML's.
        item_typed = typed or value.lstrip().startswith("[")
        return [_coerce(item_tp, item, item_typed) for item in items]
    if origin is dict:
        _, value_tp = typing.get_args(tp) or (str, Any)
        table = value if typed else _json(value)
        if not isinstance(table, dict):
            raise _Mismatch
        item_typed = True
        return {str(k): _coerce(value_tp, v, item_typed) for k, v in table.items()}
    if isinstance(tp, type) and issubclass(tp, _SectionBase):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict) and typed:
            return tp(**value)
        raise _Mismatch
    raise TypeError(f"unsupported settings type {tp!r}")


def _coerce_literal(tp: Any, value: Any, typed: bool) -> Any:
    for choice in typing.get_args(tp):
        if isinstance(choice, str):
            # Strings match case-insensitively and are stored as declared ("debug" -> "DEBUG").
            # A TOML integer is accepted for a numeric-looking choice: `protocol = 5`.
            if isinstance(value, str) and value.strip().lower() == choice.lower():
                return choice
            if isinstance(value, int) and not isinstance(value, bool) and str(value) == choice:
                return choice
        elif isinstance(choice, bool):
            if (typed and value is choice) or (not typed and str(value).lower() == str(choice)):
                return choice
        elif typed:
            if type(value) is type(choice) and value == choice:
                return choice
        elif value.strip() == str(choice):
            return choice
    raise _Mismatch


def _split_list(text: str) -> list[Any]:
    if text.lstrip().startswith("["):
        parsed = _json(text)
        if not isinstance(parsed, list):
            raise _Mismatch
        return parsed
    return [part.strip() for part in text.split(",") if part.strip()]


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise _Mismatch from None


def _describe(tp: Any) -> str:
    """Say what a type accepts, in words for a person editing a config file."""
    origin = typing.get_origin(tp)
    if tp is str:
        return "a string"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if tp is Any:
        return "a value"
    if isinstance(tp, type) and issubclass(tp, pathlib.PurePath):
        return "a path"
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(c) for c in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        noun = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}
        return f"a list of {noun.get(item, 'values')} (comma-separated or a JSON array)"
    if origin is dict:
        return "a table"
    if isinstance(tp, type) and issubclass(tp, _SectionBase):
        return "a table"
    return repr(tp)


_SHOWN = 60  # characters of a found value in an error line: enough to recognise it


def _show(value: Any, secret: bool = False, limit: int = _SHOWN) -> str:
    """Quote a found value for an error message; secrets are described, never shown.

    The result is one short line whatever the value: strings are cut to ``limit``
    characters, numbers too (a TOML integer may have thousands of digits), and lists and
    tables are named by their kind only, so a huge or deeply nested value is never walked.
    """
    kind = _kind(value)
    if secret:
        return f"{kind} (value hidden)"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= limit else text[: limit - 4] + '..."'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() > 4 * limit:
        # Beyond sys.get_int_max_str_digits() repr() raises, and well before that the
        # digits stop helping: the size says what is wrong.
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 3] + "..."
    if value is None:
        return "nothing"
    return kind


def _one_line(text: str, limit: int = 200) -> str:
    """``text`` as one line of at most ``limit`` characters, for a ConfigError detail."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _exception_text(err: BaseException) -> str:
    """``"ValueError: message"`` of an unexpected exception, as one short line.

    ``str()`` of an arbitrary exception may itself fail (a broken ``__str__``) or be
    enormous; neither may stop a configuration error from being reported.
    """
    try:
        message = str(err)
    except Exception:
        message = ""
    name = type(err).__name__
    return _one_line(f"{name}: {message}" if message else name)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__
