"""The :class:`Section` base class: a plain class whose annotated attributes are its fields.

``Section`` builds instances from keyword arguments (``__init__``) or from the merged
sources (``_from_layers``, used by :meth:`Settings.load <agent.settings.Settings.load>`),
runs the :meth:`~Section.validate` hooks bottom-up, and shows itself with secrets hidden.
"""

from __future__ import annotations

import copy
import pathlib
from collections.abc import Iterator
from typing import Any

from agent.settings.conversion import _convert, _exception_text, _Raw
from agent.settings.errors import RAISE, ConfigError, Problems
from agent.settings.fields import _Field, _fields, _SectionBase

__all__ = ["Section"]


class Section(_SectionBase):
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
    def _from_layers(
        cls,
        values: dict[tuple[str, ...], _Raw],
        path: tuple[str, ...],
        problems: Problems = RAISE,
    ) -> Any:
        """Build an instance from the merged sources: ``values`` maps key paths to raw values.

        A value that ``problems`` keeps (rather than raises) is replaced by the default, so
        that the rest can still be checked."""
        self = cls.__new__(cls)
        for name, spec in _fields(cls).items():
            here = (*path, name)
            default = _Raw(spec.default, f"{cls.__name__} defaults", typed=True)
            if spec.is_section:
                setattr(self, name, spec.type._from_layers(values, here, problems))
                continue
            try:
                value = _convert_loaded(spec, values.get(here, default), ".".join(here))
            except ConfigError as err:
                problems.report(err)
                value = _convert_loaded(spec, default, ".".join(here))
            setattr(self, name, value)
        return self

    def _validate_tree(self, path: tuple[str, ...], problems: Problems = RAISE) -> None:
        """Run the validate() hooks bottom-up; with a collecting ``problems``, every
        section's first problem is kept and the other sections are still checked (a
        section whose values were refused already is not validated: its hook would only
        repeat the refusal)."""
        for name, spec in _fields(type(self)).items():
            if spec.is_section:
                getattr(self, name)._validate_tree((*path, name), problems)
        here = ".".join(path)
        if any(err.key == here or err.key.startswith(here + ".") for err in problems.found):
            return
        try:
            self.validate()
        except ConfigError as err:
            if path and not err.source:
                err.key = ".".join((*path, err.key)) if err.key else ".".join(path)
            problems.report(err)
        except Exception as err:
            # A hook that crashes on a value it did not foresee still rejected that value:
            # report it like any other, on the section (the loader adds the source). The
            # message is the hook's own, so it may quote a secret of this section.
            text = _exception_text(err)
            for _path, spec, value in self._walk():
                if spec.secret and isinstance(value, str) and value:
                    text = text.replace(value, "***")
            failure = ConfigError(
                key=".".join(path), detail=f"{type(self).__name__}.validate() failed: {text}"
            )
            failure.__cause__ = err
            problems.report(failure)

    def _walk(self, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], _Field, Any]]:
        for name, spec in _fields(type(self)).items():
            value = getattr(self, name)
            if isinstance(value, Section):
                yield from value._walk((*path, name))
            else:
                yield (*path, name), spec, value


def _convert_loaded(spec: _Field, raw: _Raw, key: str) -> Any:
    """:func:`_convert` for the loader: whatever goes wrong is the value's fault.

    A :class:`~agent.settings.fields.Check` or a nested section may raise anything on a
    value it did not foresee; the value came from a source a person can fix, so the
    failure is reported as a ConfigError naming that source and key, not as a traceback.
    """
    try:
        return _convert(spec, raw, key)
    except ConfigError:
        raise
    except Exception as err:
        # The message may quote the value: keep it out for a secret.
        why = type(err).__name__ if spec.secret else _exception_text(err)
        raise ConfigError(
            source=raw.source,
            key=key,
            line=raw.line,
            variable=raw.variable,
            detail=f"cannot use this value: {why}",
        ) from err
