"""What the tests of the built-in device types share: running a type's ``check`` on a table.

Not a test module: nothing here is collected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.daemon.types import DeviceType

Problems = list[tuple[str, str, str]]


def check(device_type: DeviceType, table: Mapping[str, Any]) -> tuple[Any, Problems]:
    """What ``device_type.check`` returns for ``table``, and every problem it reported."""
    problems: Problems = []
    result = device_type.check(table, lambda *problem: problems.append(problem))
    return result, problems


def checked(device_type: DeviceType, table: Mapping[str, Any]) -> Any:
    """The checked options of a table that must have no problem."""
    result, problems = check(device_type, table)
    assert problems == [], problems
    return result


def problems_of(device_type: DeviceType, table: Mapping[str, Any]) -> Problems:
    """Every problem ``device_type.check`` reports for ``table``."""
    return check(device_type, table)[1]
