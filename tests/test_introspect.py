"""build_registry_snapshot, format_snapshot, and the adapters they describe (no broker needed).

The snapshot is checked field by field on one app that uses every registration option, with
and without settings; then what it must never do (connect, import a lazy adapter string,
build an adapter, show a secret). The second half covers ``agent.adapters``: the three kinds
of implementation, settings injection, dry-run variants and lazy imports that fail.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Protocol

import pytest

from agent import (
    App,
    CircuitBreaker,
    DeviceContext,
    Every,
    LinearBackoff,
    MemoryStore,
    MockMqttClient,
    OnChange,
    SaveOnPublish,
    Settings,
)
from agent.adapters import Adapters, load_string
from agent.introspect import build_registry_snapshot, format_snapshot
from agent.settings import SECRET, ConfigError, MqttSettings


class GasSettings(Settings):
    poll_interval: float = 7.5
    api_token: Annotated[str, SECRET] = "tok-9c1d"


class MeterPort(Protocol):
    def read(self) -> int: ...


class RelayPort(Protocol):
    def state(self) -> str: ...


class SerialMeter:
    """Stands in for a real adapter; the snapshot must never build one."""

    built = 0

    def __init__(self, settings: GasSettings) -> None:  # a string annotation: see __future__
        SerialMeter.built += 1
        self.interval = settings.poll_interval

    def read(self) -> int:
        return 1


class FakeRelay:
    def __init__(self, settings: Settings) -> None:  # the base class takes any subclass
        self.settings = settings

    def state(self) -> str:
        return "fake"


def make_meter(settings: GasSettings) -> SerialMeter:
    return SerialMeter(settings)


def open_bus() -> dict[str, int]:
    return {}


def rich_app() -> App:
    """An app using every option the snapshot describes."""
    app = App(
        "gas2mqtt",
        "1.2.3",
        description="gas meter bridge",
        settings_class=GasSettings,
        store=MemoryStore(),
        adapters={MeterPort: (SerialMeter, make_meter)},
    )
    app.adapter(RelayPort, "no_such_hw_lib.gpio:Relay", dry_run=FakeRelay)

    @app.telemetry(
        "boiler",
        interval=10,
        publish=OnChange(threshold=0.5) | Every(seconds=60),
        group="bus",
        retry=3,
        retry_on=(OSError, ValueError),
        backoff=LinearBackoff(step=1.0),
        circuit_breaker=CircuitBreaker(threshold=4),
        persist=SaveOnPublish(),
        init=open_bus,
        timeout=12,
    )
    def boiler(bus: dict[str, int]) -> dict[str, object]:
        return {}

    @app.telemetry("meter", interval=lambda s: s.poll_interval, retry=2)
    def meter(port: MeterPort) -> dict[str, object]:
        return {}

    @app.telemetry("slow", interval=20, enabled=False, timeout=None)
    def slow() -> dict[str, object]:
        return {}

    @app.command("valve")
    def valve(payload: str) -> dict[str, object]:
        return {}

    @app.device("blind")
    def blind(ctx: DeviceContext) -> None:
        pass

    @app.device()  # the root device: its topics sit right under the prefix
    def main(ctx: DeviceContext) -> None:
        pass

    return app


def by_name(snapshot: dict[str, object], kind: str, name: str) -> dict[str, object]:
    devices = snapshot["devices"][kind]  # type: ignore[index]
    return next(d for d in devices if d["name"] == name)


def settings_with(**mqtt: object) -> GasSettings:
    """Settings built in code (no file, no environment), ``mqtt`` for its [mqtt] table."""
    return GasSettings(mqtt=MqttSettings(**mqtt))


# -- the snapshot ------------------------------------------------------------------------------


def test_snapshot_describes_the_app_without_settings() -> None:
    snap = build_registry_snapshot(rich_app())
    assert {k: snap[k] for k in ("name", "version", "description", "prefix", "dry_run")} == {
        "name": "gas2mqtt",
        "version": "1.2.3",
        "description": "gas meter bridge",
        "prefix": "gas2mqtt",
        "dry_run": False,
    }
    assert snap["publishes"] == {"status": "gas2mqtt/status", "error": "gas2mqtt/error"}
    assert [d["name"] for d in snap["devices"]["telemetry"]] == ["boiler", "meter", "slow"]
    assert by_name(snap, "telemetry", "boiler") == {
        "name": "boiler",
        "root": False,
        "enabled": True,
        "init": "open_bus",
        "interval": 10.0,
        "strategy": "OnChange(threshold=0.5) | Every(seconds=60)",
        "group": "bus",
        "retry": 3,
        "retry_on": ["OSError", "ValueError"],
        "backoff": "LinearBackoff(step=1, max_delay=60)",
        "circuit_breaker": "CircuitBreaker(threshold=4)",
        "persist": "SaveOnPublish()",
        "timeout": 12.0,
        "publishes": {
            "state": "gas2mqtt/boiler/state",
            "availability": "gas2mqtt/boiler/availability",
            "error": "gas2mqtt/boiler/error",
        },
        "subscribes": [],
    }


def test_snapshot_fills_in_the_defaults_the_runtime_uses() -> None:
    snap = build_registry_snapshot(rich_app())
    meter = by_name(snap, "telemetry", "meter")
    assert meter["interval"] == "callable"  # a function of the settings, none given
    assert meter["timeout"] == "default"  # max(3 × interval, 30 s): the interval is unknown
    assert meter["strategy"] is None  # every reading is published
    assert meter["retry_on"] == ["OSError"]  # retry=2 with the default exceptions ...
    assert meter["backoff"] == "ExponentialBackoff(base=2, max_delay=60)"  # ... and backoff
    slow = by_name(snap, "telemetry", "slow")
    assert slow["enabled"] is False
    assert slow["timeout"] is None  # timeout=None: no bound
    assert slow["retry"] == 0 and slow["retry_on"] is None and slow["backoff"] is None
    assert by_name(snap, "command", "valve")["timeout"] == 30.0


def test_snapshot_topics_of_commands_devices_and_the_root() -> None:
    snap = build_registry_snapshot(rich_app())
    valve = by_name(snap, "command", "valve")
    assert valve["subscribes"] == ["gas2mqtt/valve/set"]
    assert valve["publishes"]["state"] == "gas2mqtt/valve/state"
    assert "interval" not in valve and "strategy" not in valve
    blind = by_name(snap, "device", "blind")
    assert blind["subscribes"] == ["gas2mqtt/blind/set", "gas2mqtt/blind/+/set"]
    root = by_name(snap, "device", "main")
    assert root["root"] is True
    assert root["publishes"] == {
        "state": "gas2mqtt/state",
        "availability": "gas2mqtt/availability",
        "error": "gas2mqtt/error",
    }
    assert root["subscribes"] == ["gas2mqtt/set", "gas2mqtt/+/set"]


def test_snapshot_with_settings_uses_their_prefix_and_resolves_intervals() -> None:
    snap = build_registry_snapshot(rich_app(), settings_with(topic_prefix="home/gas"))
    assert snap["prefix"] == "home/gas"
    assert snap["publishes"] == {"status": "home/gas/status", "error": "home/gas/error"}
    meter = by_name(snap, "telemetry", "meter")
    assert meter["interval"] == 7.5
    assert meter["timeout"] == 30.0  # max(3 × 7.5, 30)
    assert by_name(snap, "device", "main")["subscribes"] == ["home/gas/set", "home/gas/+/set"]
    assert build_registry_snapshot(rich_app(), settings_with())["prefix"] == "gas2mqtt"


@pytest.mark.parametrize(
    "interval",
    [lambda s: 1 / 0, lambda s: -1, lambda s: "5", lambda s: s.mqtt.password],
    ids=["raises", "negative", "a string", "a secret"],
)
def test_an_interval_function_that_gives_no_valid_number_stays_callable(interval: object) -> None:
    app = App("demo")
    app.add_telemetry("t", lambda: {}, interval=interval)  # type: ignore[arg-type]
    settings = settings_with(username="u", password="pw-5e5e")
    snap = build_registry_snapshot(app, settings)
    assert by_name(snap, "telemetry", "t")["interval"] == "callable"
    assert "pw-5e5e" not in json.dumps(snap)


def test_snapshot_is_plain_json() -> None:
    snap = build_registry_snapshot(rich_app(), settings_with())
    assert json.loads(json.dumps(snap)) == snap


def test_snapshot_describes_adapters_without_importing_or_building_them() -> None:
    before = SerialMeter.built
    app = rich_app()
    snap = build_registry_snapshot(app, settings_with())
    assert snap["adapters"] == {
        "MeterPort": {"impl": "SerialMeter", "dry_run": "make_meter", "active": "impl"},
        "RelayPort": {
            "impl": "no_such_hw_lib.gpio:Relay",
            "dry_run": "FakeRelay",
            "active": "impl",
        },
    }
    assert SerialMeter.built == before
    assert "no_such_hw_lib" not in sys.modules
    app.dry_run = True
    snap = build_registry_snapshot(app)
    assert snap["dry_run"] is True
    assert {port: a["active"] for port, a in snap["adapters"].items()} == {
        "MeterPort": "dry_run",
        "RelayPort": "dry_run",
    }


def test_a_port_without_a_dry_run_variant_uses_its_implementation_in_dry_run() -> None:
    app = App("demo", dry_run=True, adapters={MeterPort: SerialMeter})
    assert build_registry_snapshot(app)["adapters"]["MeterPort"] == {
        "impl": "SerialMeter",
        "dry_run": None,
        "active": "impl",
    }


def test_ports_that_share_a_name_are_told_apart_by_module() -> None:
    other = type("MeterPort", (), {"__module__": "elsewhere"})
    app = App("demo", adapters={MeterPort: SerialMeter, other: SerialMeter})
    assert list(build_registry_snapshot(app)["adapters"]) == [
        f"{__name__}.MeterPort",
        "elsewhere.MeterPort",
    ]


def test_an_adapter_instance_is_shown_by_its_type_only() -> None:
    class Secretive:
        def __repr__(self) -> str:
            return "Secretive(password='pw-77aa')"

    app = App("demo", adapters={MeterPort: Secretive()})  # type: ignore[dict-item]
    snap = build_registry_snapshot(app)
    assert snap["adapters"]["MeterPort"]["impl"].endswith("Secretive instance")
    assert "pw-77aa" not in json.dumps(snap)


def test_snapshot_never_shows_a_secret(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        'api_token = "tok-secret-41"\n[mqtt]\nusername = "u"\npassword = "pw-secret-41"\n'
    )
    config.chmod(0o600)
    settings = GasSettings.load(config_file=config, env_file=None, environ={})
    snap = build_registry_snapshot(rich_app(), settings)
    text = json.dumps(snap) + format_snapshot(snap)
    assert "pw-secret-41" not in text and "tok-secret-41" not in text


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every attempt to open a connection is recorded and refused."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("this test allows no connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield attempts


def test_snapshot_never_connects(no_network: list[object]) -> None:
    threads = threading.active_count()
    snap = build_registry_snapshot(rich_app(), settings_with())
    format_snapshot(snap)
    assert no_network == []
    assert threading.active_count() == threads  # no MQTT client, no worker started


# -- the table ---------------------------------------------------------------------------------


def test_format_snapshot_shows_every_device_topic_and_adapter() -> None:
    text = format_snapshot(build_registry_snapshot(rich_app(), settings_with()))
    lines = text.splitlines()
    assert lines[0] == "gas2mqtt 1.2.3: gas meter bridge"
    assert "app publishes gas2mqtt/status (heartbeat), gas2mqtt/error (errors)" in lines
    boiler = next(line for line in lines if line.startswith("boiler ") and "telemetry" in line)
    assert boiler.split() == [
        "boiler",
        "telemetry",
        "yes",
        "10",
        "s",
        "OnChange(threshold=0.5)",
        "|",
        "Every(seconds=60)",
        "bus",
        "12",
        "s",
        "open_bus",
    ]
    assert "main (root)" in text
    assert "every reading" in text  # meter: no strategy
    assert "CircuitBreaker(threshold=4)" in text  # the failure-handling table
    for topic in ("gas2mqtt/blind/+/set", "gas2mqtt/valve/set", "gas2mqtt/slow/error"):
        assert topic in text
    relay = next(line for line in lines if line.startswith("RelayPort"))
    assert relay.split() == ["RelayPort", "no_such_hw_lib.gpio:Relay", "FakeRelay", "impl"]
    assert all(line == line.rstrip() for line in lines)


def test_format_snapshot_of_an_empty_app() -> None:
    text = format_snapshot(build_registry_snapshot(App("demo")))
    assert "no devices registered" in text
    assert "PORT" not in text and "TELEMETRY" not in text


# -- adapters: registration --------------------------------------------------------------------


def test_registration_checks_what_it_can_without_importing() -> None:
    adapters = Adapters()
    adapters.register(RelayPort, "no_such_hw_lib.gpio:Relay")  # fine: imported at start-up
    with pytest.raises(ValueError, match="already registered"):
        adapters.register(RelayPort, FakeRelay)
    for bad in ("no_colon_or_dot", "mod:", ":attr", "mod:a b", "a-b:c"):
        with pytest.raises(ValueError, match="expected 'module:attribute'"):
            Adapters().register(MeterPort, bad)
    with pytest.raises(ValueError, match="expected 'module:attribute'"):
        Adapters().register(MeterPort, SerialMeter, dry_run="nope")


def test_registration_refuses_what_cannot_be_injected() -> None:
    async def async_factory() -> SerialMeter:
        raise AssertionError

    def unannotated(x):  # type: ignore[no-untyped-def]
        raise AssertionError

    def wants_a_port(port: RelayPort) -> SerialMeter:
        raise AssertionError

    with pytest.raises(TypeError, match="async def"):
        Adapters().register(MeterPort, async_factory)
    with pytest.raises(TypeError, match="no type annotation"):
        Adapters().register(MeterPort, unannotated)
    with pytest.raises(TypeError, match="asks for RelayPort: adapters get only the settings"):
        Adapters().register(MeterPort, SerialMeter, dry_run=wants_a_port)


# -- adapters: resolving -----------------------------------------------------------------------


def test_classes_and_factories_get_the_settings_injected() -> None:
    settings = settings_with()
    adapters = Adapters()
    adapters.register(MeterPort, SerialMeter, dry_run=make_meter)
    adapters.register(RelayPort, FakeRelay)
    real = adapters.resolve(settings, dry_run=False)
    assert isinstance(real[MeterPort], SerialMeter) and real[MeterPort].interval == 7.5
    assert isinstance(real[RelayPort], FakeRelay) and real[RelayPort].settings is settings
    dry = adapters.resolve(settings, dry_run=True)
    assert isinstance(dry[MeterPort], SerialMeter) and dry[MeterPort] is not real[MeterPort]
    assert isinstance(dry[RelayPort], FakeRelay)  # no dry-run variant: the implementation


@pytest.fixture
def lazy_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh importable module (unique name) with ``Relay(settings)`` and ``make()``."""
    name = f"lazy_hw_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "from agent import Settings\n"
        "class Relay:\n"
        "    def __init__(self, settings: Settings) -> None:\n"
        "        self.settings = settings\n"
        "    def state(self) -> str:\n"
        "        return 'real'\n"
        "def make() -> Relay:\n"
        "    return Relay(None)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_a_lazy_string_is_imported_only_when_its_variant_is_built(lazy_module: str) -> None:
    settings = settings_with()
    adapters = Adapters()
    adapters.register(RelayPort, f"{lazy_module}:Relay", dry_run=FakeRelay)
    adapters.register(MeterPort, SerialMeter, dry_run=f"{lazy_module}.make")
    assert lazy_module not in sys.modules  # registration imports nothing
    dry = adapters.resolve(settings, dry_run=True)
    assert isinstance(dry[RelayPort], FakeRelay)
    assert type(dry[MeterPort]).__name__ == "Relay"  # the dotted form, a factory
    real = adapters.resolve(settings, dry_run=False)
    assert type(real[RelayPort]).__name__ == "Relay"
    assert real[RelayPort].settings is settings  # injected into the imported class


def test_a_lazy_string_is_not_imported_in_dry_run(lazy_module: str) -> None:
    adapters = Adapters()
    adapters.register(RelayPort, f"{lazy_module}:Relay", dry_run=FakeRelay)
    adapters.resolve(settings_with(), dry_run=True)
    assert lazy_module not in sys.modules


def test_a_missing_module_is_a_config_error_naming_it_and_the_port() -> None:
    adapters = Adapters()
    adapters.register(RelayPort, "no_such_hw_lib.gpio:Relay", dry_run=FakeRelay)
    with pytest.raises(ConfigError) as caught:
        adapters.resolve(settings_with(), dry_run=False)
    assert str(caught.value) == (
        "adapter for RelayPort: cannot import 'no_such_hw_lib.gpio:Relay': no module named "
        "'no_such_hw_lib' (install it, or run with --dry-run to use the dry-run variant)"
    )
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)
    assert "no_such_hw_lib" not in sys.modules
    assert isinstance(adapters.resolve(settings_with(), dry_run=True)[RelayPort], FakeRelay)


def test_a_missing_hardware_library_under_an_existing_module_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"wraps_hw_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("import no_such_gpio_lib\nclass Relay: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    adapters = Adapters()
    adapters.register(RelayPort, f"{name}:Relay")  # no dry-run variant: no --dry-run hint
    with pytest.raises(ConfigError) as caught:
        adapters.resolve(settings_with(), dry_run=True)
    assert str(caught.value) == (
        f"adapter for RelayPort: cannot import '{name}:Relay': no module named "
        "'no_such_gpio_lib' (install it)"
    )


def test_a_missing_attribute_is_a_config_error(lazy_module: str) -> None:
    adapters = Adapters()
    adapters.register(RelayPort, f"{lazy_module}:Relay.Inner")
    with pytest.raises(ConfigError) as caught:
        adapters.resolve(settings_with(), dry_run=False)
    assert str(caught.value) == (
        f"adapter for RelayPort: cannot import '{lazy_module}:Relay.Inner': "
        f"'{lazy_module}.Relay' has no attribute 'Inner'"
    )


def test_a_module_that_crashes_is_a_bug_not_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"crashes_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('wiring fault')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    adapters = Adapters()
    adapters.register(RelayPort, f"{name}:Relay")
    with pytest.raises(RuntimeError, match="wiring fault"):
        adapters.resolve(settings_with(), dry_run=False)


def test_nothing_is_built_when_a_later_import_fails() -> None:
    before = SerialMeter.built
    adapters = Adapters()
    adapters.register(MeterPort, SerialMeter)
    adapters.register(RelayPort, "no_such_hw_lib:Relay")
    with pytest.raises(ConfigError):
        adapters.resolve(settings_with(), dry_run=False)
    assert SerialMeter.built == before


def test_an_imported_factory_that_asks_for_a_port_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"asks_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("def make(n: int) -> object:\n    return n\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    adapters = Adapters()
    adapters.register(RelayPort, f"{name}:make")
    with pytest.raises(TypeError, match="asks for int: adapters get only the settings"):
        adapters.resolve(settings_with(), dry_run=False)


def test_load_string_still_raises_what_the_import_raises() -> None:
    with pytest.raises(ModuleNotFoundError):
        load_string("no_such_module_at_all:x")
    with pytest.raises(AttributeError):
        load_string("json:no_such_attr")
    assert load_string("json:dumps") is json.dumps and load_string("json.dumps") is json.dumps


# -- adapters in a run -------------------------------------------------------------------------


def run_once(app: App, settings: Settings) -> MockMqttClient:
    """Run ``app`` until its telemetry published once (bounded), then shut it down."""
    mqtt = MockMqttClient()
    stop = threading.Event()
    runner = threading.Thread(
        target=app.run, kwargs={"mqtt": mqtt, "settings": settings, "shutdown_event": stop}
    )
    runner.start()
    try:
        for _ in range(500):
            if any(topic == "demo/relay/state" for topic, *_ in mqtt.published):
                break
            stop.wait(0.01)
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()
    return mqtt


def relay_app(**kwargs: object) -> App:
    app = App("demo", heartbeat_interval=None, **kwargs)  # type: ignore[arg-type]

    @app.telemetry("relay", interval=60)
    def relay(port: RelayPort) -> dict[str, object]:
        return {"relay": port.state()}

    return app


def test_a_dry_run_app_uses_the_dry_run_variant_and_never_imports_the_real_one() -> None:
    app = relay_app(dry_run=True, adapters={RelayPort: ("no_such_hw_lib.gpio:Relay", FakeRelay)})
    mqtt = run_once(app, settings_with())
    states = [payload for topic, payload, *_ in mqtt.published if topic == "demo/relay/state"]
    assert states and json.loads(states[0]) == {"relay": "fake"}
    assert "no_such_hw_lib" not in sys.modules


def test_app_run_stops_with_a_config_error_for_a_missing_module() -> None:
    app = relay_app(adapters={RelayPort: ("no_such_hw_lib.gpio:Relay", FakeRelay)})
    with pytest.raises(ConfigError, match="no module named 'no_such_hw_lib'"):
        app.run(mqtt=MockMqttClient(), settings=settings_with(), shutdown_event=threading.Event())
