"""The daemon's config file: every kind of mistake gives its message, all at once.

The built-in types are replaced by two small fakes here, so that these tests are about the
daemon's own keys and the file as a whole; each built-in's own keys are tested with it.
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import agent.daemon.config as config_module
from agent import App, Router
from agent.cli import main
from agent.daemon import builtins
from agent.daemon.app import build_app, make_store
from agent.daemon.config import DaemonSettings, StoreSettings, check_config, load_config
from agent.daemon.types import DeviceSpec, Problem
from agent.settings import ConfigError
from agent.stores import JsonFileStore, MemoryStore, SqliteStore
from agent.strategies import AllStrategy, AnyStrategy, Every, OnChange
from agent.testing import AppHarness


class PollType:
    """A polled fake: needs ``path`` (a string); knows ``scale``."""

    name = "poll"
    default_interval: float | None = 10.0
    KEYS = ("path", "scale")

    def check(self, options: Mapping[str, Any], problem: Problem) -> Any:
        for key in options:
            if key not in self.KEYS:
                problem(key, f"one of {', '.join(self.KEYS)}", "an unknown key")
        if not isinstance(options.get("path"), str):
            problem("path", "a file path", repr(options.get("path")))
        return dict(options)

    def register(self, router: Router, spec: DeviceSpec, options: Any) -> None:
        def read() -> dict:
            return {"value": 21.5 * options.get("scale", 1)}

        router.add_telemetry(
            spec.name,
            read,
            interval=spec.interval or 10.0,
            publish=spec.publish,
            enabled=spec.enabled,
            retry=spec.retry,
            group=spec.group,
        )


class CommandType:
    """A command-only fake."""

    name = "switch"
    default_interval: float | None = None

    def check(self, options: Mapping[str, Any], problem: Problem) -> Any:
        for key in options:
            problem(key, "no other keys", "an unknown key")
        return None

    def register(self, router: Router, spec: DeviceSpec, options: Any) -> None:
        def switch(payload: str) -> dict:
            return {"state": payload}

        router.add_command(spec.name, switch, enabled=spec.enabled)


REAL_BUILTINS = builtins.BUILTINS


@pytest.fixture(autouse=True)
def fake_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builtins, "BUILTINS", {"poll": PollType(), "switch": CommandType()})
    monkeypatch.setattr(config_module, "BUILTINS", builtins.BUILTINS)


def write(tmp_path: Path, text: str, name: str = "agent.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path: Path) -> list[str]:
    config, problems = check_config(path, env_file=None, environ={})
    assert config is None
    return [str(p) for p in problems]


# -- a good file ----------------------------------------------------------------------------


GOOD = """
    name = "house"

    [mqtt]
    host = "broker.lan"

    [store]
    backend = "memory"

    [[device]]
    type = "poll"
    name = "boiler"
    path = "/sys/x"
    interval = 30
    publish = { on_change = 0.5, every = 600 }
    filter = { value = { median = 5 } }
    retry = 2
    group = "slow"

    [[device]]
    type = "switch"
    name = "pump"

    [[device]]
    type = "poll"
    path = "/sys/y"
    enabled = false
"""


def test_a_good_file_gives_its_devices_and_a_one_line_summary(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), env_file=None, environ={})
    boiler, pump, poll = config.devices
    assert boiler.spec.name == "boiler" and boiler.spec.interval == 30.0
    assert isinstance(boiler.spec.publish, AnyStrategy)
    assert [f.kind for f in boiler.spec.filters] == ["median"]
    assert (boiler.spec.retry, boiler.spec.group) == (2, "slow")
    assert pump.spec.interval is None and pump.spec.publish is None
    assert poll.spec.name == "poll" and poll.spec.enabled is False  # the type is the name
    assert poll.spec.interval == 10.0  # the type's default
    summary = config.summary()
    assert "\n" not in summary
    assert "OK" in summary and "2 device(s) enabled (poll, switch)" in summary
    assert "1 disabled" in summary and "broker broker.lan:1883" in summary


def test_the_app_has_every_device_on_one_connection(tmp_path: Path) -> None:
    app = build_app(load_config(write(tmp_path, GOOD), env_file=None, environ={}))
    assert app.name == "house"
    assert [r.name for r in app.registry] == ["boiler", "pump", "poll"]
    assert isinstance(app.store, MemoryStore)
    with AppHarness(app) as h:
        h.assert_state("boiler", {"value": 21.5})
        h.send_command("pump", "ON")
        h.assert_state("pump", {"state": "ON"})


@pytest.mark.parametrize(
    ("publish", "expected"),
    [
        ("{ on_change = true }", OnChange),
        ("{ on_change = { value = 0.2 } }", OnChange),
        ("{ every = 60 }", Every),
        ("{ every_n = 3 }", Every),
        ("{ on_change = 1, every_n = 10 }", AnyStrategy),
        ('{ on_change = 1, every = 60, combine = "all" }', AllStrategy),
    ],
)
def test_publish_tables_become_strategies(tmp_path: Path, publish: str, expected: type) -> None:
    path = write(tmp_path, f'[[device]]\ntype = "poll"\npath = "x"\npublish = {publish}\n')
    (device,) = load_config(path, env_file=None, environ={}).devices
    assert isinstance(device.spec.publish, expected)


def test_filters_by_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[device]]
        type = "poll"
        path = "x"
        filter = { a = { median = 3 }, b = { pt1 = 30 }, "c.d" = { one_euro = { beta = 0.1 } } }
        """,
    )
    (device,) = load_config(path, env_file=None, environ={}).devices
    by_field = {f.field: (f.kind, dict(f.params)) for f in device.spec.filters}
    assert by_field == {
        "a": ("median", {"window": 3}),
        "b": ("pt1", {"tau": 30.0}),
        "c.d": ("one_euro", {"min_cutoff": 1.0, "beta": 0.1, "d_cutoff": 1.0}),
    }


def test_the_environment_overrides_the_file_with_the_agent_prefix(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    config = load_config(
        path, env_file=None, environ={"AGENT_MQTT__HOST": "elsewhere", "MQTT__HOST": "ignored"}
    )
    assert config.settings.mqtt.host == "elsewhere"


def test_the_filters_switch_is_no_setting_and_never_refused(tmp_path: Path) -> None:
    """AGENT_FILTERS_NO_SIMD=1 pins the filters' portable path (read by the extension at
    import); under the daemon's AGENT_ prefix it was refused as an unknown setting."""
    path = write(tmp_path, GOOD)
    config = load_config(path, env_file=None, environ={"AGENT_FILTERS_NO_SIMD": "1"})
    assert (
        config.settings.mqtt.host == load_config(path, env_file=None, environ={}).settings.mqtt.host
    )
    with pytest.raises(ConfigError, match="AGENT_FILTERS_NO_SIMDD"):  # a typo still is one
        load_config(path, env_file=None, environ={"AGENT_FILTERS_NO_SIMDD": "1"})


@pytest.mark.parametrize(
    ("backend", "store_type"),
    [("sqlite", SqliteStore), ("json", JsonFileStore), ("memory", MemoryStore), ("none", None)],
)
def test_store_backends(tmp_path: Path, backend: str, store_type: type | None) -> None:
    store = make_store(StoreSettings(backend=backend))
    assert store is None if store_type is None else isinstance(store, store_type)
    assert not any(tmp_path.iterdir())  # nothing created before the first save


def test_store_default_paths_are_under_var_lib_agent() -> None:
    assert StoreSettings().resolved_path() == "/var/lib/agent/state.db"
    assert StoreSettings(backend="json").resolved_path() == "/var/lib/agent/state.json"
    assert StoreSettings(backend="json", path="/x/s.json").resolved_path() == "/x/s.json"


# -- mistakes -------------------------------------------------------------------------------


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name = "a/b"
        modules = ["ok", "not a module"]

        [mqtt]
        hostt = "x"
        port = 0

        [store]
        backend = "sqlite3"

        [[device]]
        type = "pol"

        [[device]]
        type = "poll"
        path = "x"
        interval = -1
        publish = { on_chnge = 1 }
        filter = { value = { median = 0 }, other = { mean = 3 } }
        retry = "3"
        enabled = "yes"
        scael = 2

        [[device]]
        type = "switch"
        interval = 5

        [[device]]
        name = "nothing"

        [[device]]
        type = "poll"
        name = "twice"
        path = "x"

        [[device]]
        type = "poll"
        name = "twice"
        path = "y"

        [[device]]
        type = "poll"
        name = "bad/name"
        """,
    )
    lines = problems_of(path)
    src = str(path)
    expected = [
        f'{src}: mqtt.hostt: unknown key (did you mean "mqtt.host"?)',
        f"{src}: mqtt.port: expected an integer 1-65535",
        f"{src}: store.backend: expected one of",
        f"{src}: name: expected one topic level",
        f"{src}: modules[2]: expected a module name",
        f'{src}: device[1].type: unknown device type "pol" (did you mean "poll"?)',
        f"{src}: device[2].interval: expected seconds between readings, a number > 0, found -1",
        f'{src}: device[2].publish.on_chnge: unknown key (did you mean "on_change"?)',
        f"{src}: device[2].filter.value.median: expected a window of readings",
        f'{src}: device[2].filter.other.mean: unknown filter (did you mean "median"?)',
        f'{src}: device[2].retry: expected a whole number of retries, 0-100, found "3"',
        f'{src}: device[2].enabled: expected true or false, found "yes"',
        f"{src}: device[2].scael: expected one of path, scale",
        f"{src}: device[3].interval: a switch device is not polled",
        f"{src}: device[4].type: expected the device's type, one of poll, switch, found nothing",
        f'{src}: device[6].name: a second device named "twice" (the first is device[5])',
        f"{src}: device[7].name: expected one topic level",
        f"{src}: device[7].path: expected a file path",
    ]
    for start in expected:
        assert any(line.startswith(start) for line in lines), (start, lines)
    assert len(lines) == len(expected), lines


def test_check_prints_one_line_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--config", str(write(tmp_path, GOOD))]) == 0
    out, err = capsys.readouterr()
    assert err == "" and len(out.splitlines()) == 1 and ": OK; " in out


def test_check_prints_every_problem_and_exits_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, '[mqtt]\nport = "x"\n[[device]]\ntype = "pol"\n')
    assert main(["check", "--config", str(path)]) == 78
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 2 and "Traceback" not in err
    assert all(line.startswith(f"agent: configuration error: {path}: ") for line in lines)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[mqtt\n", "invalid TOML"),
        ("device = 3\n", "device: expected"),
        (
            '[store]\nbackend = "memory"\npath = "/x"\n',
            'store.path: path is set but backend is "memory"',
        ),
        (
            "[[device]]\ntype = 'poll'\npath = 'x'\nfilter = 3\n",
            "device[1].filter: expected a table",
        ),
        (
            "[[device]]\ntype = 'poll'\npath = 'x'\npublish = {}\n",
            "device[1].publish: expected at least one",
        ),
        (
            "[[device]]\ntype = 'poll'\npath = 'x'\npublish = { combine = 'most', every = 1 }\n",
            "device[1].publish.combine",
        ),
        (
            "[[device]]\ntype = 'switch'\nretry = 1\n",
            "device[1].retry: a switch device is not polled: remove retry",
        ),
        (
            "[[device]]\ntype = 'poll'\npath = 'x'\nfilter = { v = { pt1 = 0 } }\n",
            "device[1].filter.v.pt1: expected a time constant",
        ),
        (
            "[[device]]\ntype = 'poll'\npath = 'x'\n"
            "filter = { v = { one_euro = { beta = -1 } } }\n",
            "device[1].filter.v.one_euro",
        ),
        (
            "[[device]]\ntype = 'poll'\npath = 'x'\ngroup = ''\n",
            "device[1].group: expected a group name",
        ),
    ],
)
def test_each_kind_of_mistake_has_its_message(tmp_path: Path, text: str, message: str) -> None:
    lines = problems_of(write(tmp_path, text))
    assert len(lines) == 1 and message in lines[0], lines


def test_a_missing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(tmp_path / "nope.toml")]) == 78
    assert capsys.readouterr().err.strip().endswith("nope.toml: config file not found")


def test_the_run_command_lists_every_problem_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, '[mqtt]\nport = "x"\n[[device]]\ntype = "pol"\n')
    assert main(["--config", str(path)]) == 78
    assert len(capsys.readouterr().err.splitlines()) == 2


def test_settings_check_keeps_going_after_a_problem(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[mqtt]\nport = 0\nkeepalive = 1\nhostt = "x"\n[logging]\nlevel = "LOUD"\n'
    )
    settings, problems = DaemonSettings.check(config_file=path, env_file=None, environ={})
    assert settings is None
    keys = sorted(p.key for p in problems)
    assert keys == ["logging.level", "mqtt.hostt", "mqtt.keepalive", "mqtt.port"]


# -- the user's modules -------------------------------------------------------------------


@pytest.fixture
def module_name(tmp_path: Path) -> Iterator[str]:
    name = f"usermod_{uuid.uuid4().hex[:8]}"
    yield name
    sys.modules.pop(name, None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def test_a_user_module_adds_its_router(tmp_path: Path, module_name: str) -> None:
    (tmp_path / f"{module_name}.py").write_text(
        textwrap.dedent(
            """
            import agent
            garden = agent.Router(__name__, prefix="garden-")

            @garden.telemetry("soil", interval=60)
            def soil() -> dict:
                return {"moisture": 0.4}
            """
        )
    )
    text = GOOD.replace('name = "house"', f'name = "house"\nmodules = ["{module_name}"]')
    path = write(tmp_path, text)
    app = build_app(load_config(path, env_file=None, environ={}))
    assert [r.name for r in app.registry][-1] == "garden-soil"
    with AppHarness(app) as h:
        h.assert_state("garden-soil", {"moisture": 0.4})


@pytest.mark.parametrize(
    ("source", "spec", "message"),
    [
        (None, "{m}", "cannot import '{m}': no module named '{m}'"),
        (
            "raise RuntimeError('no sensor')",
            "{m}",
            "importing '{m}' failed: RuntimeError: no sensor ({m}.py line 1)",
        ),
        ("def broken(:\n", "{m}", "importing '{m}' failed: SyntaxError"),
        ("x = 1", "{m}", "module '{m}' has no agent.Router"),
        (
            "import agent\na = agent.Router()\nb = agent.Router()",
            "{m}",
            "has several Routers (a, b)",
        ),
        ("import agent\na = agent.Router()", "{m}:b", "expected an agent.Router named 'b'"),
        (
            "import agent\nr = agent.Router('mine')\n@r.command('pump')\n"
            "def pump(payload: str) -> None: ...",
            "{m}",
            "device 'pump' from router 'mine'",
        ),
    ],
)
def test_module_problems_are_one_line(
    tmp_path: Path,
    module_name: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    source: str | None,
    spec: str,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    if source is not None:
        (tmp_path / f"{module_name}.py").write_text(source + "\n")
    text = GOOD.replace(
        'name = "house"', f'name = "house"\nmodules = ["{spec.format(m=module_name)}"]'
    )
    path = write(tmp_path, text)
    assert main(["check", "--config", str(path)]) == 78
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"{path}: modules[1]: " in err
    assert message.format(m=module_name) in err, err


def test_module_path_is_searched_first(tmp_path: Path, module_name: str) -> None:
    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / f"{module_name}.py").write_text(
        "import agent\nr = agent.Router('mine')\n@r.telemetry('tank', interval=5)\n"
        "def tank() -> dict:\n    return {'on': True}\n"
    )
    text = GOOD.replace(
        'name = "house"',
        f'name = "house"\nmodules = ["{module_name}"]\nmodule_path = ["{folder}"]',
    )
    try:
        app = build_app(load_config(write(tmp_path, text), env_file=None, environ={}))
        assert "tank" in [r.name for r in app.registry]
    finally:
        if str(folder) in sys.path:
            sys.path.remove(str(folder))
    problems = problems_of(write(tmp_path, 'module_path = ["relative/dir"]\n'))
    assert problems == [
        f"{tmp_path / 'agent.toml'}: module_path[1]: expected an absolute folder path, "
        'found "relative/dir"'
    ]


def test_a_device_needing_a_store_is_refused_without_one(
    tmp_path: Path,
    module_name: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"{module_name}.py").write_text(
        "import agent\nr = agent.Router('meter')\n@r.telemetry('gas', interval=5)\n"
        "def gas(store: agent.DeviceStore) -> dict:\n    return {}\n"
    )
    text = GOOD.replace('name = "house"', f'name = "house"\nmodules = ["{module_name}"]')
    text = text.replace('backend = "memory"', 'backend = "none"')
    path = write(tmp_path, text)
    assert main(["check", "--config", str(path)]) == 78
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert f"{path}: modules[1]: " in err and "'gas'" in err and "store" in err, err


def test_a_config_naming_an_app_still_works(
    tmp_path: Path, module_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / f"{module_name}.py").write_text(
        "import agent\napp = agent.App('legacy')\n@app.telemetry('t', interval=5)\n"
        "def t() -> dict:\n    return {}\n"
    )
    path = write(tmp_path, f'app = "{module_name}:app"\n[mqtt]\nhost = "h"\n')
    assert main(["check", "--config", str(path)]) == 0
    assert "app 'legacy' with 1 device(s)" in capsys.readouterr().out
    from agent.cli import _load_any_app

    loaded = _load_any_app(str(path), None)
    assert isinstance(loaded, App) and loaded.name == "legacy"


def test_check_never_connects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Port 9 (discard) on a host that does not resolve: a connection attempt would fail.
    path = write(tmp_path, GOOD.replace("broker.lan", "no-such-host.invalid"))
    assert (
        main(["check", "--config", str(path), "--env-file", str(write(tmp_path, "", ".env"))]) == 0
    )


def test_check_lists_problems_of_every_stage_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file's own mistakes, the types' registration checks, the modules and the Home
    Assistant metadata: all in one run of ``agent check``, one line each."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config_module, "BUILTINS", REAL_BUILTINS)
    reading = tmp_path / "reading"
    reading.write_text("1\n")
    path = write(
        tmp_path,
        f"""
        modules = ["no_such_module_x1", "1bad", "ok:"]

        [logging]
        levle = "DEBUG"

        [homeassistant]
        discovery_prefix = "a/+"
        status_topic = "#"

        [[device]]
        type = "file"
        path = "{reading}"
        intervall = 5

        [[device]]
        type = "exec"
        name = "a"
        command = ["/bin/echo", "1"]
        interval = 5
        timeout = 5

        [[device]]
        type = "exec"
        name = "b"
        command = ["/bin/echo", "1"]
        interval = 5
        timeout = 9

        [[device]]
        type = "file"
        name = "boiler"
        path = "{reading}"
        field = "temperature"
        unit = "C"
        device_class = "temperature"
        filter = {{ temprature = {{ median = 3 }} }}
        """,
    )
    assert main(["check", "--config", str(path)]) == 78
    lines = capsys.readouterr().err.strip().splitlines()
    keys = [line.split(": ")[3] for line in lines]
    assert keys == [  # in the order of the file, whatever stage found them
        "logging.levle",
        "homeassistant.discovery_prefix",
        "homeassistant.status_topic",
        "modules[1]",
        "modules[2]",
        "modules[3]",
        "device[1].intervall",
        "device[2].timeout",
        "device[3].timeout",
        "device[4].filter.temprature",
        "device[4]",
    ], lines
    assert 'did you mean "logging.level"?' in lines[0]
    assert "no module named 'no_such_module_x1'" in lines[3]
    assert 'did you mean "interval"?' in lines[6]
    assert 'did you mean "temperature"?' in lines[9]
    assert 'unit "C" is not a unit of device_class "temperature"' in lines[10]


def test_check_warns_when_the_store_folder_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "nowhere" / "state.db"
    path = write(tmp_path, f'[store]\npath = "{missing}"\n')
    assert main(["check", "--config", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{path}: OK")
    assert captured.err.splitlines() == [
        f"agent: warning: {path}: store.path: the folder {missing.parent} does not exist (the "
        "service's StateDirectory= creates /var/lib/agent when it starts; elsewhere create it "
        "or set [store] path); until then nothing is saved"
    ]
    missing.parent.mkdir()
    assert main(["check", "--config", str(path)]) == 0
    assert capsys.readouterr().err == ""
