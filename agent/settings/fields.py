"""Field metadata: constraints, the secret markers, and what a settings class declares.

A field is an annotated class attribute with a default. Its annotation may carry
``typing.Annotated`` metadata: :class:`Check` constraints (:func:`between`, :func:`at_least`,
:func:`greater_than`) and the :data:`SECRET` and :data:`SECRET_FILE` markers.
:func:`_fields` turns a class's annotations into :class:`_Field` records once and caches
them; the conversion, the :class:`~agent.settings.section.Section` base and the sources all
work from those records.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

__all__ = ["SECRET", "SECRET_FILE", "Check", "at_least", "between", "greater_than"]


class _SectionBase:
    """Root of :class:`~agent.settings.section.Section`, known here by this name only.

    Field metadata and conversion must tell a nested section from a plain value, and the
    section machinery is built on top of them; this empty base lets them ask
    ``issubclass(tp, _SectionBase)`` without importing ``section.py`` (an import cycle).
    """


class Check:
    """A constraint attached to a field through ``typing.Annotated``.

    ``test`` gets the already converted value. ``expected`` describes an acceptable value;
    ``{type}`` in it is replaced by the description of the field's type, so
    ``Check(lambda v: v > 0, "{type} > 0")`` reads "a number > 0" on a float field.

    Read-only by convention (nothing enforces it).
    """

    __slots__ = ("expected", "test")

    def __init__(self, test: Callable[[Any], bool], expected: str) -> None:
        self.test = test
        self.expected = expected

    def __repr__(self) -> str:
        # The test is mostly a lambda: its repr would say nothing but an address.
        return f"Check(expected={self.expected!r})"


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


class _Marker:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


SECRET = _Marker("SECRET")
"""Marks a field as secret: ``password: Annotated[str | None, SECRET] = None``.

Secret values are shown as ``"***"`` by ``repr()`` and ``to_dict()``, never echoed in a
:class:`ConfigError`, and registered with :func:`agent.logs.register_secret` on load so that
a log line containing one by mistake shows ``***`` instead.

When :meth:`Settings.load <agent.settings.Settings.load>` finds a secret in a TOML or ``.env``
file that other users may read, it adds a warning to the loaded settings'
:meth:`~agent.settings.Settings.load_warnings`."""

SECRET_FILE = _Marker("SECRET_FILE")
"""Marks a field that names a file holding a secret:
``password_file: Annotated[str | None, SECRET_FILE] = None``.

The path itself is not secret and is shown as usual; but when
:meth:`Settings.load <agent.settings.Settings.load>` finds that the file it names may be read
by other users, it adds a warning to the loaded settings'
:meth:`~agent.settings.Settings.load_warnings`."""


class _Field:
    """One declared field of a section class. Read-only by convention (nothing enforces
    it): the records are cached and shared."""

    __slots__ = ("checks", "default", "name", "optional", "secret", "secret_file", "type")

    def __init__(
        self,
        name: str,
        type: Any,
        optional: bool,
        default: Any,
        checks: tuple[Check, ...],
        secret: bool,
        secret_file: bool = False,
    ) -> None:
        self.name = name
        self.type = type  # the annotation with Annotated and Optional peeled off
        self.optional = optional
        self.default = default
        self.checks = checks
        self.secret = secret
        self.secret_file = secret_file

    @property
    def is_section(self) -> bool:
        return isinstance(self.type, type) and issubclass(self.type, _SectionBase)


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
    secret = secret_file = False
    if typing.get_origin(hint) is Annotated:
        for meta in hint.__metadata__:
            if isinstance(meta, Check):
                checks.append(meta)
            elif meta is SECRET:
                secret = True
            elif meta is SECRET_FILE:
                secret_file = True
        hint = hint.__origin__
    optional = False
    if _is_union(hint):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(members) < len(typing.get_args(hint))
        if len(members) != 1:
            raise TypeError(f"setting {name!r}: unions other than `X | None` are not supported")
        hint = members[0]
    return _Field(name, hint, optional, default, tuple(checks), secret, secret_file)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)
