"""Settings: typed classes with defaults, loaded from TOML, a ``.env`` file and the environment.

A settings class is a plain class whose annotated attributes are its fields::

    class MySettings(Settings):
        env_prefix = "MYAPP_"
        poll_interval: Annotated[float, greater_than(0)] = 30.0
        sensors: list[str] = []

``MySettings.load(config_file="/etc/myapp.toml")`` then layers four sources, each one
overriding the previous: the class defaults, the TOML file, the ``.env`` file and the
environment (``MYAPP_POLL_INTERVAL=10``, ``MYAPP_MQTT__HOST=broker``: ``__`` walks into a
section). ``MySettings()`` gives the defaults alone, and keyword arguments
(``MqttSettings(port=1884)``) are checked with the same rules as a TOML file.

There is no pydantic here on purpose (Debian 12 ships only pydantic 1, see
docs/adr/002-settings-without-pydantic.md): the validator below understands just the types a
configuration needs. Every problem becomes a :class:`ConfigError` whose ``str()`` is one line
naming the source, the key, what was expected and what was found.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import inspect
import json
import os
import pathlib
import re
import socket
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from agent.logs import register_secret

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "SECRET",
    "Check",
    "ConfigError",
    "LoggingSettings",
    "MqttSettings",
    "Section",
    "Settings",
    "at_least",
    "between",
    "default_client_id",
    "greater_than",
    "read_toml",
]

_S = TypeVar("_S", bound="Settings")


# --------------------------------------------------------------------------- errors


class ConfigError(Exception):
    """A configuration problem, told in one line a person can act on.

    Attributes:
        source: where the value came from: a TOML file path, a ``.env`` path, ``"environment"``,
            ``"arguments"`` (keyword arguments in code) or ``"defaults"``.
        key: dotted path of the setting, e.g. ``"mqtt.port"`` (empty for file-level problems).
        expected: what would have been accepted, e.g. ``"an integer 1-65535"``.
        found: what was there instead, already quoted for display (never a secret's value).
        line: line number in the source file, when known.
        variable: the environment variable name as written, for env and ``.env`` sources.
        detail: replaces ``"expected ..., found ..."`` when that shape does not fit.
    """

    def __init__(
        self,
        *,
        source: str = "",
        key: str = "",
        expected: str = "",
        found: str = "",
        line: int | None = None,
        variable: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.key = key
        self.expected = expected
        self.found = found
        self.line = line
        self.variable = variable
        self.detail = detail

    def __str__(self) -> str:
        # Built on demand: the loader fills in ``source`` after a validate() hook raised.
        parts = [self.source or "settings"]
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.key and self.variable:
            parts.append(f"{self.key} ({self.variable})")
        elif self.key or self.variable:
            parts.append(self.key or self.variable or "")
        parts.append(self.detail or f"expected {self.expected}, found {self.found}")
        return ": ".join(parts)


# --------------------------------------------------------------------------- field metadata


@dataclasses.dataclass(frozen=True)
class Check:
    """A constraint attached to a field through ``typing.Annotated``.

    ``test`` gets the already converted value. ``expected`` describes an acceptable value;
    ``{type}`` in it is replaced by the description of the field's type, so
    ``Check(lambda v: v > 0, "{type} > 0")`` reads "a number > 0" on a float field.
    """

    test: Callable[[Any], bool]
    expected: str


def between(low: float, high: float) -> Check:
    """Inclusive range, e.g. ``Annotated[int, between(1, 65535)]``."""
    return Check(lambda v: low <= v <= high, f"{{type}} {_num(low)}-{_num(high)}")


def at_least(low: float) -> Check:
    """Lower bound, inclusive: ``Annotated[int, at_least(0)]``."""
    return Check(lambda v: v >= low, f"{{type}} >= {_num(low)}")


def greater_than(low: float) -> Check:
    """Lower bound, exclusive: ``Annotated[float, greater_than(0)]``."""
    return Check(lambda v: v > low, f"{{type}} > {_num(low)}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


class _SecretMarker:
    def __repr__(self) -> str:
        return "SECRET"


SECRET = _SecretMarker()
"""Marks a field as secret: ``password: Annotated[str | None, SECRET] = None``.

Secret values are shown as ``"***"`` by ``repr()`` and ``to_dict()``, never echoed in a
:class:`ConfigError`, and registered with :func:`agent.logs.register_secret` on load so that
a log line containing one by mistake shows ``***`` instead."""


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    type: Any  # the annotation with Annotated and Optional peeled off
    optional: bool
    default: Any
    checks: tuple[Check, ...]
    secret: bool

    @property
    def is_section(self) -> bool:
        return isinstance(self.type, type) and issubclass(self.type, Section)


# --------------------------------------------------------------------------- sections


class Section:
    """Base of every settings class: annotated class attributes are the fields.

    A field needs a default. Supported types: ``str``, ``int``, ``float``, ``bool``,
    ``pathlib.Path``, ``Literal[...]``, ``list[X]``, ``dict[str, X]``, ``Any``, ``X | None``
    and other :class:`Section` subclasses (a TOML table, or ``SECTION__FIELD`` in the
    environment). Constraints and the secret marker go in ``Annotated[...]`` metadata.

    Override :meth:`validate` for checks that involve several fields.
    """

    def __init__(self, **values: Any) -> None:
        fields = _fields(type(self))
        for key in values:
            if key not in fields:
                raise TypeError(f"{type(self).__name__} has no setting {key!r}")
        for name, spec in fields.items():
            if name in values:
                raw = _Raw(values[name], "arguments", typed=True)
            elif spec.is_section:
                # An instance default was validated when it was built; copy it so that two
                # settings objects never share a mutable section.
                setattr(self, name, copy.deepcopy(spec.default))
                continue
            else:
                raw = _Raw(spec.default, f"{type(self).__name__} defaults", typed=True)
            setattr(self, name, _convert(spec, raw, name))

    def validate(self) -> None:
        """Cross-field checks, run by :meth:`Settings.load` after every field is converted.

        Raise :class:`ConfigError` with ``key`` set to the field name that is wrong (relative
        to this section: ``"key_file"``, not ``"mqtt.key_file"``); the loader adds the
        section path and the source the value came from. Sections are validated before the
        section that holds them. Not run by ``__init__``, so code and tests can build
        settings that point at files which do not exist.
        """

    def to_dict(self, *, redact: bool = True) -> dict[str, Any]:
        """The settings as nested plain data, for display (secrets as ``"***"``)."""
        out: dict[str, Any] = {}
        for name, spec in _fields(type(self)).items():
            value = getattr(self, name)
            if isinstance(value, Section):
                out[name] = value.to_dict(redact=redact)
            elif redact and spec.secret and value is not None:
                out[name] = "***"
            elif isinstance(value, pathlib.PurePath):
                out[name] = str(value)
            else:
                out[name] = copy.deepcopy(value)
        return out

    def __repr__(self) -> str:
        shown = []
        for name, spec in _fields(type(self)).items():
            value = getattr(self, name)
            shown.append(f"{name}={'***' if spec.secret and value is not None else value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in _fields(type(self)))

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    # -- internals used by the loader ------------------------------------------------

    @classmethod
    def _from_layers(cls, values: dict[tuple[str, ...], _Raw], path: tuple[str, ...]) -> Any:
        """Build an instance from the merged sources: ``values`` maps key paths to raw values."""
        self = cls.__new__(cls)
        for name, spec in _fields(cls).items():
            here = (*path, name)
            if spec.is_section:
                setattr(self, name, spec.type._from_layers(values, here))
            elif here in values:
                setattr(self, name, _convert(spec, values[here], ".".join(here)))
            else:
                default = _Raw(spec.default, f"{cls.__name__} defaults", typed=True)
                setattr(self, name, _convert(spec, default, ".".join(here)))
        return self

    def _validate_tree(self, path: tuple[str, ...]) -> None:
        for name, spec in _fields(type(self)).items():
            if spec.is_section:
                getattr(self, name)._validate_tree((*path, name))
        try:
            self.validate()
        except ConfigError as err:
            if path and not err.source:
                err.key = ".".join((*path, err.key)) if err.key else ".".join(path)
            raise

    def _walk(self, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], _Field, Any]]:
        for name, spec in _fields(type(self)).items():
            value = getattr(self, name)
            if isinstance(value, Section):
                yield from value._walk((*path, name))
            else:
                yield (*path, name), spec, value


_FIELD_CACHE: dict[type, dict[str, _Field]] = {}


def _fields(cls: type) -> dict[str, _Field]:
    """The fields of a section class, resolved once (lazily, so forward references work)."""
    cached = _FIELD_CACHE.get(cls)
    if cached is not None:
        return cached
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except NameError as err:
        # Annotations are looked up in the module's globals: a class defined inside a
        # function cannot name another local class.
        raise TypeError(f"cannot resolve the field types of {cls.__name__}: {err}") from None
    out: dict[str, _Field] = {}
    for klass in reversed(cls.__mro__):
        for name in inspect.get_annotations(klass):
            hint = hints.get(name)
            if name.startswith("_") or name == "env_prefix" or typing.get_origin(hint) is ClassVar:
                continue
            if not hasattr(cls, name):
                raise TypeError(f"{cls.__name__}.{name} needs a default value")
            out[name] = _make_field(name, hint, getattr(cls, name))
    _FIELD_CACHE[cls] = out
    return out


def _make_field(name: str, hint: Any, default: Any) -> _Field:
    checks: list[Check] = []
    secret = False
    if typing.get_origin(hint) is Annotated:
        for meta in hint.__metadata__:
            if isinstance(meta, Check):
                checks.append(meta)
            elif meta is SECRET:
                secret = True
        hint = hint.__origin__
    optional = False
    if _is_union(hint):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(members) < len(typing.get_args(hint))
        if len(members) != 1:
            raise TypeError(f"setting {name!r}: unions other than `X | None` are not supported")
        hint = members[0]
    return _Field(name, hint, optional, default, tuple(checks), secret)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


# --------------------------------------------------------------------------- conversion


@dataclasses.dataclass(frozen=True)
class _Raw:
    """One value as a source gave it, with where it came from (for error messages)."""

    value: Any
    source: str
    typed: bool  # True: TOML / Python values, checked strictly; False: text from env / .env
    line: int | None = None
    variable: str | None = None

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
    if isinstance(tp, type) and issubclass(tp, Section):
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
    if isinstance(tp, type) and issubclass(tp, Section):
        return "a table"
    return repr(tp)


def _show(value: Any, secret: bool = False) -> str:
    """Quote a found value for an error message; secrets are described, never shown."""
    kind = _kind(value)
    if secret:
        return f"{kind} (value hidden)"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:56] + '..."'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if value is None:
        return "nothing"
    return kind


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


# --------------------------------------------------------------------------- sources


def _suggest(wrong: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(wrong, choices, n=1, cutoff=0.6)
    return f" (did you mean {json.dumps(close[0])}?)" if close else ""


def _all_paths(cls: type[Section], path: tuple[str, ...] = ()) -> dict[tuple[str, ...], _Field]:
    """Every leaf setting of ``cls`` by key path."""
    out: dict[tuple[str, ...], _Field] = {}
    for name, spec in _fields(cls).items():
        if spec.is_section:
            out.update(_all_paths(spec.type, (*path, name)))
        else:
            out[(*path, name)] = spec
    return out


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML file without checking it against any settings class.

    For callers that need one key before they know the schema (the ``agent`` command reads
    ``app = "module:attribute"`` first). Raises :class:`ConfigError` for a missing,
    unreadable or malformed file, with the line number of a syntax error.
    """
    source = str(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(source=source, detail="config file not found") from None
    except OSError as err:
        raise ConfigError(source=source, detail=f"cannot read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(source=source, detail=f"invalid TOML: not UTF-8 ({err.reason})") from None
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        # tomllib puts the position at the end of its message: "... (at line 3, column 5)".
        match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        line = None
        if match:
            line = int(match.group(1))
            message = f"{message[: match.start()]} (column {match.group(2)})"
        raise ConfigError(source=source, line=line, detail=f"invalid TOML: {message}") from None


def _read_toml(cls: type[Section], path: pathlib.Path) -> dict[tuple[str, ...], _Raw]:
    data = read_toml(path)
    source = str(path)
    out: dict[tuple[str, ...], _Raw] = {}
    _flatten_toml(cls, data, (), source, out)
    return out


def _flatten_toml(
    cls: type[Section],
    table: dict[str, Any],
    path: tuple[str, ...],
    source: str,
    out: dict[tuple[str, ...], _Raw],
) -> None:
    fields = _fields(cls)
    for key, value in table.items():
        here = (*path, key)
        dotted = ".".join(here)
        spec = fields.get(key)
        if spec is None:
            choices = [".".join((*path, name)) for name in fields]
            raise ConfigError(
                source=source,
                key=dotted,
                detail="unknown key" + _suggest(dotted, choices),
            )
        if spec.is_section:
            if not isinstance(value, dict):
                raise ConfigError(
                    source=source,
                    key=dotted,
                    expected=f"a table [{dotted}]",
                    found=_show(value),
                )
            _flatten_toml(spec.type, value, here, source, out)
        else:
            out[here] = _Raw(value, source, typed=True)


_ENV_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def _parse_dotenv(text: str, source: str) -> Iterator[tuple[int, str, str]]:
    """Yield ``(line number, name, value)`` for each assignment in a ``.env`` file.

    Understands what docker compose and systemd users write: ``#`` comments (whole-line, or
    after whitespace on an unquoted value), an optional ``export`` prefix, single quotes
    (literal) and double quotes (``\\n``, ``\\"``, ``\\\\`` escapes). Values are not
    interpolated.
    """
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ENV_LINE.match(stripped)
        if not match:
            # The line is not shown: it may hold a password.
            raise ConfigError(
                source=source, line=number, detail="invalid line: expected NAME=value"
            )
        name, rest = match.groups()
        if rest[:1] in ("'", '"'):
            value, tail = _unquote(rest, source, number)
            if tail.strip() and not tail.strip().startswith("#"):
                raise ConfigError(
                    source=source,
                    line=number,
                    variable=name,
                    detail="unexpected text after the closing quote",
                )
        else:
            value = re.split(r"\s+#", rest, maxsplit=1)[0].strip()
        yield number, name, value


def _unquote(rest: str, source: str, number: int) -> tuple[str, str]:
    quote = rest[0]
    out: list[str] = []
    i = 1
    while i < len(rest):
        char = rest[i]
        if char == quote:
            return "".join(out), rest[i + 1 :]
        if quote == '"' and char == "\\" and i + 1 < len(rest):
            nxt = rest[i + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(char)
        i += 1
    raise ConfigError(source=source, line=number, detail=f"missing closing {quote} quote")


def _env_names(cls: type[Settings]) -> dict[str, tuple[str, ...]]:
    """Upper-cased variable name -> key path, e.g. ``MYAPP_MQTT__HOST -> ("mqtt", "host")``."""
    prefix = cls.env_prefix.upper()
    return {prefix + "__".join(path).upper(): path for path in _all_paths(cls)}


def _env_key(name: str, prefix: str) -> str:
    """The dotted key an unknown variable name would have had: ``MQTT__HOTS -> mqtt.hots``."""
    upper, prefix = name.upper(), prefix.upper()
    bare = upper[len(prefix) :] if upper.startswith(prefix) else upper
    return bare.lower().replace("__", ".")


def _read_dotenv(cls: type[Settings], path: pathlib.Path) -> dict[tuple[str, ...], _Raw]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source=source, detail="env file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8"
        raise ConfigError(source=source, detail=f"cannot read: {reason}") from None
    names = _env_names(cls)
    out: dict[tuple[str, ...], _Raw] = {}
    for number, name, value in _parse_dotenv(text, source):
        key_path = names.get(name.upper())
        if key_path is None:
            # A .env file is written for this program: every line must mean something.
            raise ConfigError(
                source=source,
                line=number,
                key=_env_key(name, cls.env_prefix),
                variable=name,
                detail="unknown setting" + _suggest(name.upper(), list(names)),
            )
        out[key_path] = _Raw(value, source, typed=False, line=number, variable=name)
    return out


def _read_environ(cls: type[Settings], environ: Mapping[str, str]) -> dict[tuple[str, ...], _Raw]:
    names = _env_names(cls)
    prefix = cls.env_prefix.upper()
    top = {name.upper() for name in _fields(cls)}
    out: dict[tuple[str, ...], _Raw] = {}
    for name, value in environ.items():
        upper = name.upper()
        if not upper.startswith(prefix):
            continue
        key_path = names.get(upper)
        if key_path is not None:
            out[key_path] = _Raw(value, "environment", typed=False, variable=name)
            continue
        # Without a prefix the environment is shared with everything else (PATH, HOME, ...):
        # only a name that starts like one of ours (MQTT__HOTS) is reported. With a prefix,
        # every prefixed name is ours, so a typo there is reported too.
        first = upper[len(prefix) :].split("__", 1)[0]
        if prefix or first in top:
            raise ConfigError(
                source="environment",
                key=_env_key(name, prefix),
                variable=name,
                detail="unknown setting" + _suggest(upper, list(names)),
            )
    return out


# --------------------------------------------------------------------------- concrete settings


class MqttSettings(Section):
    """How to reach the MQTT broker.

    ``client_id`` None means "derive one": see :func:`default_client_id`. ``tls`` turns on
    TLS with certificate verification always on (against ``ca_file``, or the system CA
    store when it is None); ``cert_file`` and ``key_file`` add a client certificate.
    ``clean_session = false`` (the default) keeps a persistent session, so QoS 1 commands
    sent while the agent was down are delivered when it comes back.
    """

    host: str = "localhost"
    port: Annotated[int, between(1, 65535)] = 1883
    username: str | None = None
    password: Annotated[str | None, SECRET] = None
    password_file: str | None = None
    client_id: str | None = None
    keepalive: Annotated[int, between(5, 65535)] = 60
    topic_prefix: str | None = None
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    clean_session: bool = False
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    reconnect_min_delay: Annotated[float, greater_than(0)] = 1.0
    reconnect_max_delay: Annotated[float, greater_than(0)] = 60.0
    max_payload_bytes: Annotated[int, at_least(1)] = 256 * 1024
    offline_buffer_size: Annotated[int, at_least(1)] = 1000

    def resolved_password(self) -> str | None:
        """The password: ``password`` itself, or the contents of ``password_file``.

        The file is read on every call (so a rotated secret is picked up on reconnect), with
        one trailing newline removed. The value is registered with the log redaction filter.
        """
        if self.password is not None:
            register_secret(self.password)
            return self.password
        if self.password_file is None:
            return None
        try:
            text = pathlib.Path(self.password_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else "not UTF-8"
            raise ConfigError(
                key="mqtt.password_file",
                expected="a readable file holding the password",
                found=f"{json.dumps(self.password_file)} ({reason})",
            ) from None
        secret = text[:-1] if text.endswith("\n") else text
        secret = secret[:-1] if secret.endswith("\r") else secret
        register_secret(secret)
        return secret

    def validate(self) -> None:
        """Cross-field rules; see the class docstring for what each setting means."""
        if self.password is not None and self.password_file is not None:
            raise ConfigError(
                key="password_file",
                detail="password and password_file are both set; keep only one",
            )
        if (self.password is not None or self.password_file) and self.username is None:
            raise ConfigError(
                key="username", expected="a user name when a password is set", found="nothing"
            )
        if self.password_file is not None:
            try:
                self.resolved_password()  # fail at start-up, not at the first connect
            except ConfigError as err:
                err.key = "password_file"
                raise
        if self.client_id is not None and not self.client_id.strip():
            raise ConfigError(key="client_id", expected="a non-empty string", found='""')
        if self.topic_prefix is not None and (
            not self.topic_prefix or re.search(r"[+#\x00]", self.topic_prefix)
        ):
            raise ConfigError(
                key="topic_prefix",
                expected="a topic without wildcards (+, #)",
                found=json.dumps(self.topic_prefix),
            )
        if self.reconnect_min_delay > self.reconnect_max_delay:
            raise ConfigError(
                key="reconnect_min_delay",
                expected=f"at most reconnect_max_delay ({self.reconnect_max_delay:g})",
                found=f"{self.reconnect_min_delay:g}",
            )
        if (self.cert_file is None) != (self.key_file is None):
            given = "cert_file" if self.key_file is None else "key_file"
            missing = "key_file" if given == "cert_file" else "cert_file"
            raise ConfigError(
                key=given, detail=f"{given} is set but {missing} is not; set both or neither"
            )
        for name in ("ca_file", "cert_file", "key_file"):
            value = getattr(self, name)
            if value is None:
                continue
            if not self.tls:
                raise ConfigError(
                    key=name, detail=f"{name} is set but tls is false; set tls = true"
                )
            if not os.access(value, os.R_OK):
                raise ConfigError(
                    key=name, expected="a readable file", found=f"{json.dumps(value)} (missing)"
                )


_LEVELS = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class LoggingSettings(Section):
    """Where logs go and how they look.

    ``format = "json"`` writes one JSON object per line (for journald, Loki and friends);
    ``"text"`` is for a person at a terminal. ``level`` is case-insensitive. With ``file``
    set, logs also go to that file, rotated at ``max_file_bytes`` with ``backup_count``
    old files kept.
    """

    level: _LEVELS = "INFO"
    format: Literal["json", "text"] = "json"
    file: str | None = None
    max_file_bytes: Annotated[int, at_least(1)] = 10 * 1024 * 1024
    backup_count: Annotated[int, at_least(0)] = 3


class Settings(Section):
    """Root settings of an application: subclass it and add your own fields.

    ``env_prefix`` (a class attribute, e.g. ``"MYAPP_"``) is put in front of every
    environment variable name. The base class has none, so it reads ``MQTT__HOST`` and
    ignores unrelated variables.
    """

    env_prefix: ClassVar[str] = ""
    app: str | None = None
    mqtt: MqttSettings = MqttSettings()
    logging: LoggingSettings = LoggingSettings()

    @classmethod
    def load(
        cls: type[_S],
        *,
        config_file: str | os.PathLike[str] | None = None,
        env_file: str | os.PathLike[str] | None = ".env",
        environ: Mapping[str, str] | None = None,
    ) -> _S:
        """Read every source, check every value and return the settings.

        Sources, each overriding the one before: the class defaults, ``config_file``
        (TOML), ``env_file`` and ``environ`` (``os.environ`` when None). A missing ``.env``
        in the working directory is fine (it is only the default); any other file that is
        named but missing is an error.

        Raises:
            ConfigError: the first problem found, as one line naming source and key.
        """
        layers: dict[tuple[str, ...], _Raw] = {}
        if config_file is not None:
            layers.update(_read_toml(cls, pathlib.Path(config_file)))
        if env_file is not None:
            env_path = pathlib.Path(env_file)
            if str(env_file) != ".env" or env_path.exists():
                layers.update(_read_dotenv(cls, env_path))
        layers.update(_read_environ(cls, os.environ if environ is None else environ))
        settings = cls._from_layers(layers, ())
        try:
            settings._validate_tree(())
        except ConfigError as err:
            if not err.source:
                _blame(err, layers)
            raise
        for _path, spec, value in settings._walk():
            if spec.secret and isinstance(value, str):
                register_secret(value)
        return settings


def _blame(err: ConfigError, layers: dict[tuple[str, ...], _Raw]) -> None:
    """Fill in where a value that a validate() hook rejected came from."""
    path = tuple(err.key.split(".")) if err.key else ()
    exact = layers.get(path)
    # A rejected key that kept its default: blame whatever set a neighbour in its section.
    raw = exact or next((r for p, r in layers.items() if p[:-1] == path[:-1]), None)
    if raw is None:
        err.source = "defaults"
        return
    err.source = raw.source
    if exact is not None:
        err.line = exact.line
        err.variable = exact.variable


# --------------------------------------------------------------------------- client id


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def default_client_id(
    prefix: str,
    *,
    machine_id_file: str | os.PathLike[str] = "/etc/machine-id",
    hostname: str | None = None,
) -> str:
    """A client id unique per host and application that survives restarts.

    ``{prefix}-{hostname}-{hash}``: the hash is 8 hex digits of SHA-256 over the machine id
    (``/etc/machine-id``; the hostname when there is none) and the prefix, so two apps on
    one host, or one app on two cloned SD cards with distinct machine ids, never share an
    id, while a restart reuses it (and so finds its persistent session). Only
    ``[A-Za-z0-9_-]`` is used, and the hostname is shortened to keep within the 23
    characters every MQTT 3.1.1 broker must accept.
    """
    host = hostname if hostname is not None else socket.gethostname()
    try:
        machine = pathlib.Path(machine_id_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        machine = ""
    digest = hashlib.sha256(f"{machine or host}\0{prefix}".encode()).hexdigest()[:8]
    safe_prefix = _UNSAFE.sub("-", prefix).strip("-") or "agent"
    safe_prefix = safe_prefix[:14]  # leaves room for "-" + 8 hex digits within 23
    room = 23 - len(safe_prefix) - 1 - 8 - 1
    safe_host = _UNSAFE.sub("-", host).strip("-")[: max(room, 0)].strip("-")
    if not safe_host:
        return f"{safe_prefix}-{digest}"
    return f"{safe_prefix}-{safe_host}-{digest}"
