"""Reading the sources a :class:`Settings` class is loaded from: TOML, ``.env``, environment.

Each reader returns the values it found as ``{key path: _Raw}`` (``("mqtt", "port")``), with
the file, line and variable name kept for error messages; :meth:`Settings.load
<agent.settings.Settings.load>` layers them. Unknown keys are errors here, with a
``did you mean`` suggestion. :func:`read_toml` is public for callers that need a key before
they know the schema.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from agent.settings.conversion import _exception_text, _Raw, _show
from agent.settings.errors import RAISE, ConfigError, Problems
from agent.settings.fields import _Field, _fields

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

if TYPE_CHECKING:
    from agent.settings.model import Settings
    from agent.settings.section import Section

__all__ = ["read_toml"]


def _suggest(wrong: str, choices: list[str]) -> str:
    import difflib  # only when something is misspelt

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


_MAX_DEPTH = 100
"""Deepest nesting of arrays and tables accepted in a config file.

A real configuration needs a handful of levels. Anything near Python's recursion limit
would make every later recursive walk (``copy.deepcopy``, ``repr``, ``==``) fail far from
the file that caused it, so such a file is refused here, with its name."""

_TOO_DEEP = f"nested too deeply (at most {_MAX_DEPTH} levels of arrays and tables)"


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML file without checking it against any settings class.

    For callers that need one key before they know the schema (the ``agent`` command reads
    ``app = "module:attribute"`` first). Raises :class:`ConfigError`, and nothing else, for
    a missing, unreadable or malformed file: with the line number of a syntax error, and
    also for what the parser does not report as a syntax error (values nested too deeply,
    an integer with more digits than Python converts).
    """
    source = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
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
    except Exception as err:
        # The parser recurses once per nesting level and converts integers with int():
        # a hostile or broken file raises RecursionError or ValueError instead of a
        # TOMLDecodeError. Whatever it is, the file is at fault, not the program.
        raise ConfigError(source=source, detail=f"invalid TOML: {_parse_failure(err)}") from None
    if _depth(data) > _MAX_DEPTH:
        raise ConfigError(
            source=source,
            detail=f"invalid TOML: {_TOO_DEEP}",
        )
    return data


def _parse_failure(err: Exception) -> str:
    """Say what an exception from the TOML parser other than TOMLDecodeError means."""
    if isinstance(err, RecursionError):
        return _TOO_DEEP
    if isinstance(err, ValueError) and "digits" in str(err):
        # "Exceeds the limit (4300 digits) for integer string conversion ..."
        return f"integer too large (more than {_int_digit_limit()} digits)"
    return _exception_text(err)


def _int_digit_limit() -> int:
    # sys.get_int_max_str_digits exists from 3.11 (and in 3.10.7+ security releases).
    getter = getattr(sys, "get_int_max_str_digits", None)
    return int(getter()) if getter is not None else 4300


def _depth(value: Any) -> int:
    """How deeply arrays and tables nest in ``value`` (a scalar is 0, ``[]`` is 1).

    With a work list rather than recursion: the point is to measure values too deep to
    recurse into.
    """
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > _MAX_DEPTH:
                break  # enough to refuse it; do not walk the rest
        pending.extend((child, depth) for child in children)
    return deepest


def _read_toml(
    cls: type[Section], path: pathlib.Path, problems: Problems = RAISE
) -> dict[tuple[str, ...], _Raw]:
    data = read_toml(path)
    source = str(path)
    out: dict[tuple[str, ...], _Raw] = {}
    _flatten_toml(cls, data, (), source, out, problems)
    return out


def _flatten_toml(
    cls: type[Section],
    table: dict[str, Any],
    path: tuple[str, ...],
    source: str,
    out: dict[tuple[str, ...], _Raw],
    problems: Problems = RAISE,
) -> None:
    # Recursive, but only into the sections ``cls`` declares: the depth is that of the
    # settings classes, never that of the file (read_toml refused deep files already).
    fields = _fields(cls)
    for key, value in table.items():
        here = (*path, key)
        dotted = ".".join(here)
        spec = fields.get(key)
        if spec is None:
            choices = [".".join((*path, name)) for name in fields]
            problems.report(
                ConfigError(
                    source=source,
                    key=dotted,
                    detail="unknown key" + _suggest(dotted, choices),
                )
            )
            continue
        if spec.is_section:
            if not isinstance(value, dict):
                problems.report(
                    ConfigError(
                        source=source,
                        key=dotted,
                        expected=f"a table [{dotted}]",
                        found=_show(value),
                    )
                )
                continue
            _flatten_toml(spec.type, value, here, source, out, problems)
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


def _read_dotenv(
    cls: type[Settings], path: pathlib.Path, problems: Problems = RAISE
) -> dict[tuple[str, ...], _Raw]:
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
            problems.report(
                ConfigError(
                    source=source,
                    line=number,
                    key=_env_key(name, cls.env_prefix),
                    variable=name,
                    detail="unknown setting" + _suggest(name.upper(), list(names)),
                )
            )
            continue
        out[key_path] = _Raw(value, source, typed=False, line=number, variable=name)
    return out


PROCESS_VARIABLES = frozenset({"AGENT_FILTERS_NO_SIMD"})
"""The agent's own environment variables that are no settings (the filters extension reads
this one at import): never refused as unknown settings under the ``AGENT_`` prefix."""


def _read_environ(
    cls: type[Settings], environ: Mapping[str, str], problems: Problems = RAISE
) -> dict[tuple[str, ...], _Raw]:
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
        if upper in PROCESS_VARIABLES:
            continue
        # Without a prefix the environment is shared with everything else (PATH, HOME, ...):
        # only a name that starts like one of ours (MQTT__HOTS) is reported. With a prefix,
        # every prefixed name is ours, so a typo there is reported too.
        first = upper[len(prefix) :].split("__", 1)[0]
        if prefix or first in top:
            problems.report(
                ConfigError(
                    source="environment",
                    key=_env_key(name, prefix),
                    variable=name,
                    detail="unknown setting" + _suggest(upper, list(names)),
                )
            )
    return out
