"""Config fuzzing (issue 14): whatever a config file holds, ``agent --config FILE`` either
gets past loading it or stops with exit code 78 and configuration-error lines naming the
file — never a traceback.

Three kinds of bad file, for the App settings (a file with ``app = "module:attribute"``) and
for the daemon's ``/etc/agent.toml`` (the shipped file is a seed):

- random bytes and text, and random bytes spliced into a valid file;
- truncations of valid files at every cut point (a cut that is still a complete, valid
  config must then load without any error);
- a value of every other TOML type (string, integer, float, boolean, array, table,
  datetime) for every key of the App settings, the daemon settings and every built-in
  device type's table: exit 78 naming that key.

The CLI runs in-process (:func:`agent.cli.main`, stderr captured) so that hundreds of files
take seconds; ``App.run`` is replaced by a recorder, so a valid file never connects to a
broker — reaching it is "got past config loading". A few real ``python -m agent`` runs at
the end prove the in-process path is the one the command takes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.util
import io
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomllib
from e2e_helpers import agent_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agent.app
import agent.daemon.config  # imported now: its import-time warnings are not a test's stderr
import agent.filters
import agent.logs
from agent.cli import main
from agent.daemon.config import DaemonSettings
from agent.settings import Settings
from agent.settings.sources import _all_paths

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = (ROOT / "etc" / "agent.toml").read_text(encoding="utf-8")
ERROR = "agent: configuration error: "
MAX_LINE = 600  # "one clear line": a message longer than this is no longer clear

# Reproducible in CI: the same examples on every run (a test that fails one run in fifty is
# a bug), no deadline (a loaded CI machine is slow, not wrong).
FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

APP_MODULE = "fuzz_config_app"
APP_SOURCE = textwrap.dedent(
    """
    import pathlib
    from typing import Annotated, Literal

    import agent
    from agent.settings import between, greater_than


    class FuzzSettings(agent.Settings):
        env_prefix = "FUZZAPP_"
        poll_interval: Annotated[float, greater_than(0)] = 5.0
        retries: Annotated[int, between(0, 10)] = 3
        verbose: bool = False
        mode: Literal["fast", "slow"] = "fast"
        sensors: list[str] = []
        labels: dict[str, str] = {}
        data_dir: pathlib.Path = pathlib.Path("/tmp")


    app = agent.App("fuzzapp", settings_class=FuzzSettings)


    @app.telemetry("meter", interval=lambda s: s.poll_interval)
    def meter() -> dict:
        return {"value": 1}
    """
)

# A small App config: every section, most keys set.
APP_CONFIG = f"""\
app = "{APP_MODULE}:app"
poll_interval = 2.5
retries = 2
verbose = true
mode = "slow"
sensors = ["a", "b"]
labels = {{ room = "kitchen" }}
data_dir = "/var/lib/fuzz"

[mqtt]
host = "127.0.0.1"
port = 1
username = "u"
password = "p"
client_id = "fuzz"
keepalive = 30
topic_prefix = "home/fuzz"
protocol = "5"
clean_session = true
reconnect_min_delay = 0.5
reconnect_max_delay = 2
max_payload_bytes = 1000
offline_buffer_size = 10

[logging]
level = "warning"
format = "text"
max_file_bytes = 1000
backup_count = 1
"""

# Every built-in device type, from the examples commented out in the shipped file, with
# what this machine lacks replaced (no thermometer to find, a program that exists).
DEVICES = """\
[[device]]
type = "system"
name = "system"
interval = 60
mounts = ["/"]
interfaces = ["eth0"]
thermal_zone = "auto"
sysfs_root = "/sys"
procfs_root = "/proc"
publish = { on_change = true, every = 600, every_n = 5, combine = "any" }
filter = { cpu_temperature = { median = 3 }, load_1 = { pt1 = 30 } }
retry = 1
group = "slow"
enabled = true

[[device]]
type = "w1_temperature"
name = "w1"
interval = 30
sensors = { boiler = "28-0316a2794aff" }
sysfs_root = "/sys"
filter = { temperature = { one_euro = { min_cutoff = 1.0, beta = 0.0, d_cutoff = 1.0 } } }

[[device]]
type = "gpio_input"
name = "doorbell"
pin = 17
pull = "up"
active_low = true
debounce = 0.05
device_class = "occupancy"
icon = "mdi:bell"

[[device]]
type = "gpio_output"
name = "relay"
pin = 27
active_low = false
initial = "off"
device_class = "outlet"
icon = "mdi:power"

[[device]]
type = "file"
name = "nvme"
path = "/sys/class/hwmon/hwmon1/temp1_input"
field = "temperature"
scale = 0.001
offset = 0
decimals = 1
unit = "°C"
device_class = "temperature"
state_class = "measurement"
icon = "mdi:thermometer"

[[device]]
type = "file"
name = "json_file"
path = "/run/x.json"
json = false

[[device]]
type = "exec"
name = "wifi"
command = ["/bin/sh", "-c", "echo 1"]
interval = 30
timeout = 5
parse = "number"
field = "quality"
scale = 1
offset = 0
unit = "%"
env = { TZ = "UTC" }
cwd = "/"

[[device]]
type = "exec_command"
name = "maintenance"
commands = { restart_web = ["/bin/sh", "-c", "true"] }
timeout = 30
env = { TZ = "UTC" }
cwd = "/"
"""

# The shipped file's settings with every key set, and every device type.
DAEMON_BASE = """\
name = "agent"
modules = []
module_path = ["/etc/agent"]

[mqtt]
host = "127.0.0.1"
port = 1

[logging]
level = "INFO"
format = "json"

[store]
backend = "memory"

[homeassistant]
enabled = true
discovery_prefix = "homeassistant"
status_topic = "homeassistant/status"
"""
DAEMON_CONFIG = f"{DAEMON_BASE}\n{DEVICES}"


def strip_comments(text: str) -> str:
    """The file without comment lines and blank lines: what a cut inside a comment adds
    nothing to (a comment cut anywhere is still a comment)."""
    kept = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return "\n".join(kept) + "\n"


# -- running the CLI in-process -----------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    code: int | str  # the exit code; "crash" for an exception that escaped main()
    stderr: str
    stdout: str
    ran: bool  # App.run was reached: the config was loaded and accepted
    data: bytes

    @property
    def app(self) -> bool:
        """The file parses and names an App: its loader stops at the first problem."""
        return _names_an_app(self.data)

    @property
    def lines(self) -> list[str]:
        return self.stderr.strip().splitlines()


class Cli:
    """``agent --config FILE`` in-process, in a private folder, with App.run recorded."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.config = folder / "agent.toml"
        self.ran = False

    def run(self, content: str | bytes, *argv: str) -> Outcome:
        data = content.encode("utf-8") if isinstance(content, str) else content
        self.config.write_bytes(data)
        self.ran = False
        out, err = io.StringIO(), io.StringIO()
        root = logging.getLogger()
        saved = (list(root.handlers), root.level, list(sys.path))
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code: int | str = main([*argv, "--config", str(self.config)])
                except SystemExit as exc:  # argparse: not ours to fuzz, but no traceback
                    code = exc.code if isinstance(exc.code, int) else 2
                except BaseException:
                    import traceback

                    traceback.print_exc(file=sys.stderr)
                    code = "crash"
        finally:
            for handler in list(root.handlers):
                root.removeHandler(handler)
                if getattr(handler, "_agent_owned", False):
                    handler.close()
            for handler in saved[0]:
                root.addHandler(handler)
            root.setLevel(saved[1])
            logging.captureWarnings(False)
            sys.path[:] = saved[2]
        return Outcome(code, err.getvalue(), out.getvalue(), self.ran, data)


def _names_an_app(data: bytes) -> bool:
    try:
        return "app" in tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError, ValueError):
        return False


@pytest.fixture(scope="module")
def cli() -> Iterator[Cli]:
    with (
        tempfile.TemporaryDirectory(prefix="fuzz-config-") as name,
        pytest.MonkeyPatch.context() as mp,
    ):
        folder = Path(name).resolve()
        (folder / f"{APP_MODULE}.py").write_text(APP_SOURCE)
        runner = Cli(folder)
        real_configure = agent.logs.configure_logging

        def recorded_run(app: agent.App, *, settings: Any = None, **_: Any) -> None:
            runner.ran = True  # past config loading: a real run would connect now

        def confined_configure(settings: Any, **kwargs: Any) -> None:
            # A fuzzed logging.file must not create files elsewhere (the tests may run as
            # root): one whose folder exists is moved into ours; a missing folder still
            # fails as it would.
            if settings.file and os.path.isdir(os.path.dirname(os.path.abspath(settings.file))):
                settings.file = str(folder / "fuzz.log")
            real_configure(settings, **kwargs)

        mp.setattr(agent.app.App, "run", recorded_run)
        mp.setattr(agent.logs, "configure_logging", confined_configure)
        mp.chdir(folder)  # no ./.env
        for variable in list(os.environ):
            if variable.upper().startswith(("AGENT_", "FUZZAPP_", "MQTT__", "LOGGING__")):
                mp.delenv(variable)
        yield runner
        sys.modules.pop(APP_MODULE, None)


def assert_clean(outcome: Outcome, config: Path) -> None:
    """Exit 0 having reached App.run, or exit 78 with configuration-error lines naming the
    file; never a traceback. One line for a file naming an App (its loader stops at the
    first problem); the daemon's lists every problem, one line each."""
    where = f"exit {outcome.code}, stderr:\n{outcome.stderr[-3000:]}"
    assert "Traceback" not in outcome.stderr, where
    assert outcome.code in (0, 78), where
    if outcome.code == 0:
        assert outcome.ran and ERROR not in outcome.stderr, where
        return
    assert not outcome.ran, where
    lines = outcome.lines
    assert lines, where
    if outcome.app:
        assert len(lines) == 1, where
    for line in lines:
        assert line.startswith(f"{ERROR}{config}"), where
        assert len(line) <= MAX_LINE, where


def named(outcome: Outcome, key: str) -> bool:
    """Some line of stderr names ``key`` (``device[2].mounts`` also by ``device[2].mounts[1]``)."""
    pattern = re.compile(r": " + re.escape(key) + r"(?=[.\[: (])")
    return any(pattern.search(line) for line in outcome.lines)


# -- random bytes and text ----------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=400))
def test_random_bytes(cli: Cli, data: bytes) -> None:
    assert_clean(cli.run(data), cli.config)


@FUZZ
@given(text=st.text(max_size=300))
def test_random_text(cli: Cli, text: str) -> None:
    assert_clean(cli.run(text), cli.config)


TOML_ALPHABET = st.sampled_from(list('[]{}=",.\'#\n \t-+:_0123456789aeflnrstuxz"\\'))


@FUZZ
@given(text=st.text(TOML_ALPHABET, max_size=200))
def test_random_toml_like_text(cli: Cli, text: str) -> None:
    assert_clean(cli.run(text), cli.config)


@FUZZ
@given(
    seed=st.sampled_from(["app", "daemon"]),
    where=st.floats(0, 1),
    junk=st.binary(min_size=1, max_size=20),
    drop=st.integers(0, 20),
)
def test_junk_spliced_into_a_valid_config(
    cli: Cli, seed: str, where: float, junk: bytes, drop: int
) -> None:
    text = (APP_CONFIG if seed == "app" else DAEMON_CONFIG).encode()
    at = int(where * len(text))
    outcome = cli.run(text[:at] + junk + text[at + drop :])
    assert_clean(outcome, cli.config)


# -- truncations ----------------------------------------------------------------------------


def the_seeds_are_valid(cli: Cli) -> None:
    for text in (SHIPPED, APP_CONFIG, DAEMON_CONFIG):
        outcome = cli.run(text)
        assert outcome.code == 0 and outcome.ran, outcome.stderr


def test_the_seeds_are_valid(cli: Cli) -> None:
    the_seeds_are_valid(cli)


def check_cut(cli: Cli, data: bytes, *, compare: bool = True) -> None:
    outcome = cli.run(data)
    assert_clean(outcome, cli.config)
    # The loader decides: a cut that is still complete must load without any error (and
    # `agent check` must agree with the run on whether it is).
    if not compare:
        return
    checked = cli.run(data, "check")
    assert checked.code == outcome.code, (data[-200:], outcome.stderr, checked.stderr)


@pytest.mark.parametrize(
    "seed",
    [
        pytest.param(strip_comments(SHIPPED), id="shipped"),
        pytest.param(strip_comments(APP_CONFIG), id="app"),
    ],
)
def test_every_cut_of_a_valid_config(cli: Cli, seed: str) -> None:
    data = seed.encode()
    for cut in range(len(data) + 1):
        # `agent check` is compared at the line cuts and the random ones (time).
        check_cut(cli, data[:cut], compare=False)


def test_every_line_cut_of_the_shipped_file(cli: Cli) -> None:
    data = SHIPPED.encode()
    cuts = [0] + [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]
    for cut in cuts:
        check_cut(cli, data[:cut])


@FUZZ
@given(seed=st.sampled_from(["shipped", "app", "daemon"]), where=st.floats(0, 1))
def test_random_cuts_anywhere(cli: Cli, seed: str, where: float) -> None:
    text = {"shipped": SHIPPED, "app": APP_CONFIG, "daemon": DAEMON_CONFIG}[seed].encode()
    check_cut(cli, text[: int(where * len(text))])


# -- wrong types everywhere -------------------------------------------------------------------

KINDS = ("string", "integer", "float", "boolean", "array", "table", "datetime")

LONG = "x" * 500

# One of each kind, and the odd ones out of each (empty, huge, not a number).
SAMPLES: dict[str, list[Any]] = {
    "string": ["wrong", "", LONG],
    "integer": [7, 0, -1, 2**70],
    "float": [0.5, -2.5, math.nan, math.inf],
    "boolean": [True, False],
    "array": [[], [1, "a"], [[{}]]],
    "table": [{}, {"k": 1}, {"k": {"n": [1]}}],
    "datetime": [
        datetime.datetime(1979, 5, 27, 7, 32, tzinfo=datetime.timezone.utc),
        datetime.datetime(1979, 5, 27, 7, 32),
        datetime.date(1979, 5, 27),
        datetime.time(7, 32),
    ],
}


def kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return "datetime"


def toml_value(value: Any) -> str:
    """``value`` as an inline TOML value (tables inline, so any key may hold any value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(_escape(c) for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items())
            + "}"
        )
    return value.isoformat()


def _escape(char: str) -> str:
    if char in '"\\':
        return "\\" + char
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return f"\\u{ord(char):04x}"
    return char


def toml_document(data: dict[str, Any]) -> str:
    return "".join(f"{toml_value(key)} = {toml_value(value)}\n" for key, value in data.items())


def test_the_toml_writer_round_trips() -> None:
    for seed in (APP_CONFIG, DAEMON_CONFIG, SHIPPED):
        data = tomllib.loads(seed)
        assert tomllib.loads(toml_document(data)) == data


def _accepted(tp: Any) -> set[str]:
    """The TOML kinds a settings field of type ``tp`` takes (a value of another kind must
    be refused naming the key; one of these may still be out of range)."""
    from agent.settings.fields import _SectionBase

    origin = typing.get_origin(tp)
    if tp is Any:
        return set(KINDS)
    if tp is bool:
        return {"boolean"}
    if tp is int:
        return {"integer"}
    if tp is float:
        return {"integer", "float"}
    if tp is str or (isinstance(tp, type) and issubclass(tp, os.PathLike)):
        return {"string"}
    if origin is typing.Literal:
        digits = any(isinstance(c, str) and c.isdigit() for c in typing.get_args(tp))
        return {"string", "integer"} if digits else {"string"}
    if origin is list:
        return {"array"}
    if origin is dict or (isinstance(tp, type) and issubclass(tp, _SectionBase)):
        return {"table"}
    raise AssertionError(f"a settings type this test does not know: {tp!r}")


def settings_keys(cls: type[Settings], skip: tuple[str, ...] = ()) -> dict[str, set[str]]:
    return {
        ".".join(path): _accepted(spec.type)
        for path, spec in _all_paths(cls).items()
        if ".".join(path) not in skip
    }


def _app_settings_class() -> type[Settings]:
    spec = importlib.util.spec_from_loader(APP_MODULE + "_schema", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its annotations are resolved in its globals
    exec(compile(APP_SOURCE, APP_MODULE, "exec"), module.__dict__)
    return module.FuzzSettings  # type: ignore[no-any-return]


# The daemon's ``[[device]]`` keys: the common ones, then each type's own, with the TOML
# kinds each accepts (a type that is not polled refuses the polling keys whatever they are).
NUMBER = {"integer", "float"}
POLLED_KEYS = {
    "interval": NUMBER,
    "publish": {"table"},
    "publish.on_change": {"boolean", "integer", "float", "table"},
    "publish.every": NUMBER,
    "publish.every_n": {"integer"},
    "publish.combine": {"string"},
    "filter": {"table"},
    "retry": {"integer"},
    "group": {"string"},
}
COMMON = {"type": {"string"}, "name": {"string"}, "enabled": {"boolean"}}
HA = {"unit": {"string"}, "device_class": {"string"}, "state_class": {"string"}, "icon": {"string"}}
DEVICE_KEYS: dict[str, dict[str, set[str]]] = {
    "system": {
        **POLLED_KEYS,
        "filter.cpu_temperature": {"table"},
        "filter.cpu_temperature.median": {"integer"},
        "filter.load_1.pt1": NUMBER,
        "mounts": {"array"},
        "interfaces": {"array"},
        "thermal_zone": {"string"},
        "sysfs_root": {"string"},
        "procfs_root": {"string"},
    },
    "w1_temperature": {
        **POLLED_KEYS,
        "filter.temperature.one_euro": {"table"},
        "filter.temperature.one_euro.beta": NUMBER,
        "sensors": {"string", "array", "table"},
        "sensors.boiler": {"string"},
        "sysfs_root": {"string"},
    },
    "gpio_input": {
        "pin": {"integer"},
        "pull": {"string"},
        "active_low": {"boolean"},
        "debounce": NUMBER,
        "device_class": {"string"},
        "icon": {"string"},
    },
    "gpio_output": {
        "pin": {"integer"},
        "active_low": {"boolean"},
        "initial": {"string"},
        "device_class": {"string"},
        "icon": {"string"},
    },
    "file": {
        **POLLED_KEYS,
        "path": {"string"},
        "field": {"string"},
        "scale": NUMBER,
        "offset": NUMBER,
        "decimals": {"integer"},
        "json": {"boolean"},
        **HA,
    },
    "exec": {
        **POLLED_KEYS,
        "command": {"array"},
        "timeout": NUMBER,
        "parse": {"string"},
        "field": {"string"},
        "scale": NUMBER,
        "offset": NUMBER,
        "env": {"table"},
        "env.TZ": {"string"},
        "cwd": {"string"},
        **HA,
    },
    "exec_command": {
        "commands": {"table"},
        "commands.restart_web": {"array"},
        "timeout": NUMBER,
        "env": {"table"},
        "cwd": {"string"},
    },
}
NOT_POLLED = {"interval": set(), "publish": set(), "filter": set(), "retry": set(), "group": set()}


DEVICE_TABLES = tomllib.loads(DEVICES)["device"]


def _device_keys() -> dict[str, set[str]]:
    """``device[N].key`` for every table of DEVICES and every key its type takes."""
    out: dict[str, set[str]] = {}
    for index, table in enumerate(DEVICE_TABLES, start=1):
        kind = table["type"]
        keys = {**COMMON, **DEVICE_KEYS[kind]}
        if "interval" not in DEVICE_KEYS[kind]:
            keys.update(NOT_POLLED)
        for key, accepted in keys.items():
            out[f"device[{index}].{key}"] = accepted
    return out


APP_KEYS = settings_keys(_app_settings_class())
DAEMON_KEYS = {**settings_keys(DaemonSettings, skip=("device",)), **_device_keys()}
DAEMON_KEYS["device"] = {"array"}

_STEP = re.compile(r"([^.\[\]]+)(?:\[(\d+)\])?")


def replaced(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of ``data`` with the dotted ``key`` (``device[2].publish.every``) set to
    ``value``, tables on the way created as needed."""
    import copy

    out = copy.deepcopy(data)
    steps = [(m.group(1), m.group(2)) for m in _STEP.finditer(key)]
    here: Any = out
    for number, (name, index) in enumerate(steps):
        last = number == len(steps) - 1
        if index is not None:
            here = here[name][int(index) - 1]
            assert not last
        elif last:
            here[name] = value
        else:
            here = here.setdefault(name, {})
    return out


def seed_for(key: str) -> tuple[dict[str, Any], str]:
    """The valid file a key is changed in, and the key's name there: the App's settings,
    or the daemon's with only the device table the key is in (one device is faster to
    load than eight, and its problems are its own)."""
    if key in APP_KEYS:
        return tomllib.loads(APP_CONFIG), key
    data = tomllib.loads(DAEMON_BASE)
    match = re.match(r"device\[(\d+)\]", key)
    if match is None:
        return {**data, "device": DEVICE_TABLES}, key
    data["device"] = [DEVICE_TABLES[int(match.group(1)) - 1]]
    return data, "device[1]" + key[match.end() :]


def check_wrong_type(cli: Cli, key: str, value: Any) -> None:
    data, key_there = seed_for(key)
    outcome = cli.run(toml_document(replaced(data, key_there, value)))
    assert_clean(outcome, cli.config)
    accepted = APP_KEYS[key] if key in APP_KEYS else DAEMON_KEYS[key]
    if kind_of(value) not in accepted:
        assert outcome.code == 78, (key, value, outcome.stderr)
        assert named(outcome, key_there), (key, value, outcome.stderr)
    elif outcome.code == 78 and not named(outcome, key_there):
        # A kind the key takes, a value it refuses: the key is named, unless a rule across
        # keys blames a partner (mqtt.password without mqtt.username; in a device's table,
        # which is the only one in the file, any key of it: json = true refuses unit).
        partners = _PARTNERS.get(key_there, ("device[1]",))
        assert any(named(outcome, p) for p in partners), (key, value, outcome.stderr)


# Keys whose value, of the right kind, may make a cross-field rule blame another key.
_PARTNERS: dict[str, tuple[str, ...]] = {
    "mqtt.password": ("mqtt.username", "mqtt.password_file"),
    "mqtt.password_file": ("mqtt.username", "mqtt.password_file"),
    "mqtt.reconnect_max_delay": ("mqtt.reconnect_min_delay",),
    "mqtt.cert_file": ("mqtt.cert_file", "mqtt.key_file"),
    "mqtt.key_file": ("mqtt.cert_file", "mqtt.key_file"),
}


def samples(accepted: set[str]) -> Iterator[Any]:
    """One value of each kind; every sample of the kinds the key takes (their edges)."""
    for kind in KINDS:
        yield from SAMPLES[kind] if kind in accepted else SAMPLES[kind][:1]


@pytest.mark.parametrize("key", sorted(APP_KEYS))
def test_every_app_key_refuses_every_other_type(cli: Cli, key: str) -> None:
    for value in samples(APP_KEYS[key]):
        check_wrong_type(cli, key, value)


@pytest.mark.parametrize("key", sorted(DAEMON_KEYS))
def test_every_daemon_key_refuses_every_other_type(cli: Cli, key: str) -> None:
    for value in samples(DAEMON_KEYS[key]):
        check_wrong_type(cli, key, value)


def _no_module(text: str) -> bool:
    """Not the name of a module that exists: a fuzzed ``modules`` entry must not import
    one (``antigravity`` opens a browser)."""
    name = text.partition(":")[0].split(".")[0]
    try:
        return not name.isidentifier() or importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


SAFE_TEXT = st.text(max_size=30).filter(_no_module)
SCALARS = st.one_of(
    SAFE_TEXT,
    st.integers(),
    st.floats(),
    st.booleans(),
    st.datetimes(timezones=st.none() | st.just(datetime.timezone.utc)),
    st.dates(),
    st.times(),
)
TOML_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(SAFE_TEXT, inner, max_size=3),
    max_leaves=6,
)


@FUZZ
@given(key=st.sampled_from(sorted(APP_KEYS)), value=TOML_VALUES)
def test_random_values_for_app_keys(cli: Cli, key: str, value: Any) -> None:
    check_wrong_type(cli, key, value)


@settings(FUZZ, max_examples=200)
@given(key=st.sampled_from(sorted(DAEMON_KEYS)), value=TOML_VALUES)
def test_random_values_for_daemon_keys(cli: Cli, key: str, value: Any) -> None:
    check_wrong_type(cli, key, value)


def test_a_refused_unit_is_quoted_short(cli: Cli) -> None:
    """A 500-character unit was quoted whole, making a 700-character line."""
    data, key = seed_for("device[5].unit")
    outcome = cli.run(toml_document(replaced(data, key, LONG)))
    assert_clean(outcome, cli.config)


def test_a_key_or_value_with_line_breaks_stays_on_one_line(cli: Cli) -> None:
    for text in (
        '"a\\nb\\u0085c\\u2028d" = 1\n',  # an unknown key, quoted with line breaks
        'app = "\\u0085\\u001b[31m"\n',  # a refused value that is no App
        '[[device]]\ntype = "\\u2029"\n',
    ):
        outcome = cli.run(text)
        assert_clean(outcome, cli.config)
        assert outcome.code == 78 and len(outcome.lines) == 1, outcome.stderr
        assert "\x1b" not in outcome.stderr


def test_a_log_file_that_cannot_be_opened_is_a_configuration_error(cli: Cli) -> None:
    """Refused when logging opens it (as the service's user: `agent check` run by another
    user, or before systemd made /var/log/agent, must not judge it): that was a traceback
    and exit 1; now one line naming the config file and the key, exit 78."""
    for seed in (APP_CONFIG, SHIPPED):
        text = seed.replace("[logging]\n", '[logging]\nfile = "/nonexistent/dir/agent.log"\n')
        outcome = cli.run(text)
        assert_clean(outcome, cli.config)
        assert outcome.code == 78 and len(outcome.lines) == 1, outcome.stderr
        assert f"{cli.config}: logging.file: expected a file the agent can write" in outcome.stderr


# -- the real command ----------------------------------------------------------------------


def _noise(line: str) -> bool:
    """stderr lines that come from this machine, not from the config: the C++ filters not
    built (a source tree without its extension, e.g. under Debian's python3)."""
    return not agent.filters.NATIVE and (
        "C++ filters" in line
        or line.strip() == "from agent.filters import MedianFilter, OneEuroFilter, Pt1Filter"
    )


def command_env() -> dict[str, str]:
    """For ``python -m agent``: the agent package this process imports (source, editable
    install or a staged build), none of the settings variables."""
    return {
        k: v for k, v in agent_env().items() if not k.upper().startswith(("AGENT_", "FUZZAPP_"))
    }


REAL_CASES = {
    "app, truncated": APP_CONFIG[: APP_CONFIG.index("port")] + "port = ",
    "app, wrong type": APP_CONFIG.replace("keepalive = 30", "keepalive = [30]"),
    "app, bytes": b"\xff\xfe[mqtt]\x00",
    "daemon, truncated": DAEMON_CONFIG[: DAEMON_CONFIG.index("mounts")] + 'mounts = ["/',
    "daemon, wrong types": DAEMON_CONFIG.replace("pin = 17", "pin = 1.5").replace(
        "retry = 1", 'retry = "1"'
    ),
    "shipped, wrong type": SHIPPED.replace("port = 1883", "port = 1979-05-27"),
}


@pytest.mark.parametrize("case", list(REAL_CASES))
def test_the_real_command_says_what_the_in_process_one_says(cli: Cli, case: str) -> None:
    content = REAL_CASES[case]
    expected = cli.run(content)
    assert expected.code == 78, expected.stderr
    env = command_env()
    done = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(cli.config)],
        cwd=cli.folder,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = [line for line in done.stderr.splitlines() if not _noise(line)]
    assert done.returncode == 78, done.stderr
    assert "Traceback" not in done.stderr
    assert lines == expected.lines


def test_the_real_command_gets_past_a_valid_config(cli: Cli) -> None:
    """A valid file (mqtt at a closed port): the run starts and tries to connect; that is
    past loading the config (the process is killed then: its shutdown is not this test's)."""
    cli.config.write_text(SHIPPED.replace("port = 1883", "port = 1").replace("sqlite", "memory"))
    env = command_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "--config", str(cli.config)],
        cwd=cli.folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    timer = threading.Timer(30, proc.kill)  # never hang, whatever the agent does
    timer.start()
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "MQTT cannot connect" in line:
                break
        else:
            raise AssertionError("".join(seen))
        assert "Traceback" not in "".join(seen) and ERROR not in "".join(seen)
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
