"""The ``file`` built-in: a number or JSON from a real file, scaled; every option's
mistakes; bad content as error payloads while the device keeps running."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import builtin_helpers as helpers
import pytest

from agent import App, Router
from agent.daemon.app import build_app
from agent.daemon.builtins import BUILTINS
from agent.daemon.builtins.file import FILE, make_handler
from agent.daemon.config import check_config
from agent.daemon.types import DeviceSpec
from agent.testing import AppHarness


def checked(**table: Any) -> Any:
    return helpers.checked(FILE, table)


def problems_of(table: dict[str, Any]) -> list[tuple[str, str, str]]:
    return helpers.problems_of(FILE, table)


def read(path: Path, text: str | bytes, **table: Any) -> dict[str, Any]:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return make_handler(checked(path=str(path), **table))()


# -- check ------------------------------------------------------------------------------


def test_the_defaults() -> None:
    options = checked(path="/sys/class/hwmon/hwmon0/temp1_input")
    assert (options.field, options.scale, options.offset, options.decimals, options.json) == (
        "value",
        1.0,
        0.0,
        None,
        False,
    )
    assert dict(options.meta) == {"state_class": "measurement"}
    assert BUILTINS["file"] is FILE and FILE.default_interval == 60.0


P = {"path": "/x"}


@pytest.mark.parametrize(
    ("table", "key", "expected", "found"),
    [
        ({}, "path", "the file to read, an absolute path", "nothing"),
        ({"path": "temp1_input"}, "path", "an absolute path", '"temp1_input"'),
        ({"path": 3}, "path", "an absolute path", "3"),
        ({**P, "scael": 2}, "scael", 'did you mean "scale"?', "an unknown key"),
        ({**P, "feild": "t"}, "feild", 'did you mean "field"?', "an unknown key"),
        ({**P, "field": "a b"}, "field", "a state key: letters, digits and _", '"a b"'),
        ({**P, "field": 3}, "field", "a state key", "3"),
        ({**P, "field": ""}, "field", "a state key", '""'),
        ({**P, "scale": 0}, "scale", "a number not 0", "0"),
        ({**P, "scale": "2"}, "scale", "a number", '"2"'),
        ({**P, "scale": True}, "scale", "a number", "true"),
        ({**P, "offset": math.inf}, "offset", "a number", "inf"),
        ({**P, "offset": math.nan}, "offset", "a number", "nan"),
        ({**P, "decimals": 13}, "decimals", "a whole number 0-12", "13"),
        ({**P, "decimals": 1.5}, "decimals", "a whole number 0-12", "1.5"),
        ({**P, "decimals": -1}, "decimals", "a whole number 0-12", "-1"),
        ({**P, "json": "yes"}, "json", "true or false", '"yes"'),
        ({**P, "unit": 3}, "unit", "a string", "3"),
        ({**P, "device_class": ""}, "device_class", "a string", '""'),
        ({**P, "icon": "thermometer"}, "icon", 'an icon name like "mdi:thermometer"', ""),
        ({**P, "json": True, "unit": "°C"}, "unit", "no Home Assistant keys with json", ""),
    ],
)
def test_each_mistake_is_reported_with_its_key(
    table: dict[str, Any], key: str, expected: str, found: str
) -> None:
    ((where, wanted, shown),) = problems_of(table)
    assert where == key and expected in wanted and found in shown


def test_every_mistake_of_a_table_is_reported_at_once() -> None:
    problems = problems_of({"path": "x", "scale": 0, "json": 1, "colour": 2})
    assert [p[0] for p in problems] == ["colour", "path", "json", "scale"]


def test_home_assistant_keys_become_the_entity() -> None:
    options = checked(
        path="/x", field="temp", unit="°C", device_class="temperature", icon="mdi:fire"
    )
    router = Router("r")
    FILE.register(router, DeviceSpec(key="device[1]", type="file", name="board"), options)
    ((device, entity),) = router.entities
    assert device == "board" and entity.field == "temp"
    assert (entity.unit, entity.device_class, entity.state_class, entity.icon) == (
        "°C",
        "temperature",
        "measurement",
        "mdi:fire",
    )
    no_stats = checked(path="/x", state_class="")
    assert no_stats.meta["state_class"] is None
    json_router = Router("j")
    json_spec = DeviceSpec(key="device[1]", type="file", name="j")
    FILE.register(json_router, json_spec, checked(path="/x", json=True))
    assert list(json_router.entities) == []


# -- reading ------------------------------------------------------------------------------


def test_a_number_is_scaled_and_offset(tmp_path: Path) -> None:
    f = tmp_path / "temp1_input"
    assert read(f, "45250\n") == {"value": 45250}  # an integer left alone stays one
    assert read(f, "45250\n", scale=0.001) == {"value": 45.25}
    assert read(f, "21437", scale=0.001) == {"value": 21.437}  # not 21.437000000000001
    assert read(f, " 3.5 ", scale=2, offset=-1, field="level") == {"level": 6.0}
    assert read(f, "-40", offset=273.15) == {"value": 233.15}
    assert read(f, "45287\n", scale=0.001, decimals=1) == {"value": 45.3}
    assert read(f, "45687\n", scale=0.001, decimals=0) == {"value": 46}
    assert read(f, "1e3") == {"value": 1000.0}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", 'expected a number, found ""'),
        ("21.5 C\n", 'expected a number, found "21.5 C"'),
        ("nan\n", 'expected a finite number, found "nan"'),
        ("inf", "expected a finite number"),
        (b"\xff\xfe1", "not UTF-8 text"),
        ("1" * 70000, "more than 65536 bytes"),
    ],
)
def test_content_that_is_not_a_number_is_a_value_error(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    with pytest.raises(ValueError, match="^" + str(tmp_path)) as info:
        read(tmp_path / "v", content)
    assert message in str(info.value)


def test_a_missing_file_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        make_handler(checked(path=str(tmp_path / "gone")))()


def test_wildcards_must_match_exactly_one_file(tmp_path: Path) -> None:
    pattern = str(tmp_path / "hwmon*" / "temp1_input")
    handler = make_handler(checked(path=pattern, scale=0.001))
    with pytest.raises(FileNotFoundError, match="no file matches"):
        handler()
    (tmp_path / "hwmon3").mkdir()
    (tmp_path / "hwmon3" / "temp1_input").write_text("51000\n")
    assert handler() == {"value": 51.0}
    (tmp_path / "hwmon4").mkdir()
    (tmp_path / "hwmon4" / "temp1_input").write_text("52000\n")
    with pytest.raises(ValueError, match=r"matches 2 files .*hwmon3/temp1_input, .*hwmon4"):
        handler()


def test_json_objects_are_the_state_and_json_numbers_are_scaled(tmp_path: Path) -> None:
    f = tmp_path / "v.json"
    doc = '{"temperature": 21.5, "ok": true, "nested": {"n": [1, 2]}}'
    assert read(f, doc, json=True, scale=10) == {
        "temperature": 21.5,
        "ok": True,
        "nested": {"n": [1, 2]},
    }
    assert read(f, "2150", json=True, scale=0.01, field="t") == {"t": 21.5}
    assert read(f, "7", json=True) == {"value": 7}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('"21.5"', "expected a JSON object or number, found str"),
        ("[1, 2]", "expected a JSON object or number, found list"),
        ("true", "expected a JSON object or number, found bool"),
        ("null", "expected a JSON object or number, found NoneType"),
        ("{", "not JSON"),
        ('{"t": NaN}', "not JSON: NaN is not a number JSON allows"),
        ("1e400", "not JSON: 1e400 is too large"),
        ("[" * 50000, "JSON nested too deeply"),
    ],
)
def test_json_that_is_not_an_object_or_number_is_a_value_error(
    tmp_path: Path, content: str, message: str
) -> None:
    with pytest.raises(ValueError) as info:
        read(tmp_path / "v.json", content, json=True)
    assert message in str(info.value)


# -- the device ---------------------------------------------------------------------------


def test_bad_content_is_an_error_payload_and_the_device_keeps_running(tmp_path: Path) -> None:
    f = tmp_path / "level"
    f.write_text("512\n")
    router = Router("built-ins")
    spec = DeviceSpec(key="device[1]", type="file", name="tank", interval=10.0)
    FILE.register(router, spec, checked(path=str(f), field="percent", scale=100 / 1024))
    app = App("agent", heartbeat_interval=None)
    app.include_router(router)
    with AppHarness(app, raise_errors=False) as h:
        h.assert_state("tank", {"percent": 50.0})
        f.write_text("EIO\n")
        h.advance(10)
        error = h.assert_published("agent/tank/error").json()
        assert error["message"] == f'{f}: expected a number, found "EIO"'
        h.assert_published("agent/tank/availability", "offline", retain=True)
        f.unlink()
        h.advance(10)  # another kind of failure: reported too
        assert "No such file" in h.assert_published("agent/tank/error").json()["message"]
        f.write_text("256\n")
        h.advance(10)
        h.assert_state("tank", {"percent": 25.0})
        h.assert_published("agent/tank/availability", "online", retain=True)
        assert len(h.messages_for("agent/tank/error")) == 2


def test_a_config_file_with_file_devices_checks_builds_and_runs(tmp_path: Path) -> None:
    (tmp_path / "temp1_input").write_text("48312\n")
    (tmp_path / "doc.json").write_text('{"mode": "eco", "w": 12}\n')
    config = tmp_path / "agent.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [store]
            backend = "memory"

            [[device]]
            type = "file"
            name = "board"
            path = "{tmp_path}/temp1_input"
            field = "temperature"
            scale = 0.001
            decimals = 1
            unit = "°C"
            device_class = "temperature"
            interval = 5
            retry = 1
            group = "files"

            [[device]]
            type = "file"
            name = "doc"
            path = "{tmp_path}/doc.json"
            json = true
            group = "files"
            """
        )
    )
    checked_config, problems = check_config(config, env_file=None, environ={})
    assert problems == [] and checked_config is not None
    board, doc = checked_config.devices
    assert board.options.meta["unit"] == "°C" and board.spec.retry == 1
    assert doc.options.json and doc.spec.group == "files"
    app = build_app(checked_config)
    with AppHarness(app) as h:
        h.assert_state("board", {"temperature": 48.3})
        h.assert_state("doc", {"mode": "eco", "w": 12})
        (tmp_path / "temp1_input").write_text("49000\n")
        h.advance(5)
        h.assert_state("board", {"temperature": 49.0})


def test_a_config_file_reports_the_file_table_mistakes(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[[device]]\ntype = "file"\nscale = 0\n')
    checked_config, problems = check_config(config, env_file=None, environ={})
    assert checked_config is None
    lines = sorted(str(p) for p in problems)
    assert len(lines) == 2, lines
    assert "device[1].path: expected the file to read, an absolute path, found nothing" in lines[0]
    assert "device[1].scale: expected a number not 0, found 0" in lines[1]
