"""The one exception every settings problem becomes: :class:`ConfigError`.

It sits in a module of its own because every other part of the package raises it, and so
does :mod:`agent.logs` (lazily, when a log file cannot be opened).
"""

from __future__ import annotations

import re

__all__ = ["ConfigError"]

# What would break the one line: control characters (newline, carriage return, escape),
# the C1 controls (U+0085 is a newline to Python and to some terminals, U+009B starts an
# escape sequence) and Unicode's line and paragraph separators. A key name or a value
# quoted by code that did not escape it may hold any of them: TOML's quoted keys can.
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


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
        return _BREAKS.sub(_escape, ": ".join(parts))


class Problems:
    """Where the loader puts each :class:`ConfigError`: raised at once (the default, for
    ``load()``), or kept so that the loader carries on and every problem of a file is found
    in one pass (``collect=True``, for :meth:`Settings.check
    <agent.settings.Settings.check>` and ``agent check``)."""

    def __init__(self, *, collect: bool = False) -> None:
        self.collect = collect
        self.found: list[ConfigError] = []

    def report(self, err: ConfigError) -> None:
        """Raise ``err``, or keep it when collecting."""
        if not self.collect:
            raise err
        self.found.append(err)


RAISE = Problems()
"""The loader's default: the first problem is raised (nothing is ever kept in it)."""
