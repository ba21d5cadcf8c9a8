"""The built-in device types, by the name the config file uses (``[[device]] type = ...``).

Each lives in its own module of this package and exports ``TYPES``, a tuple of
:class:`~agent.daemon.types.DeviceType`. A type's module is imported only when a config file
uses it (or ``agent check`` looks it up), so a Pi that runs one ``system`` device never loads
the GPIO or exec code.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from agent.daemon.types import DeviceType

__all__ = ["BUILTINS"]

_MODULES = {
    "system": "system",
    "w1_temperature": "w1_temperature",
    "file": "file",
    "exec": "exec",
    "exec_command": "exec",
    "gpio_input": "gpio",
    "gpio_output": "gpio",
}


class _BuiltinTypes(Mapping[str, DeviceType]):
    """``{"system": <the system type>, ...}``, importing each type's module on first use."""

    def __getitem__(self, name: str) -> DeviceType:
        module = _MODULES[name]  # KeyError: not a built-in
        types = importlib.import_module(f"{__name__}.{module}").TYPES
        for device_type in types:
            if device_type.name == name:
                return device_type
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(_MODULES)

    def __len__(self) -> int:
        return len(_MODULES)

    def __contains__(self, name: object) -> bool:
        return name in _MODULES


BUILTINS: Mapping[str, DeviceType] = _BuiltinTypes()
