"""Home Assistant discovery without a broker: the configs built for each component, the
combinations refused with a message that says what to write, ids made safe, and the
lifespan run by the testing kit — configs published and remembered, those of removed devices
cleared, and Home Assistant's ``online`` answered after the random delay on the fake clock."""

from __future__ import annotations

import json
import random
import threading
from typing import Any

import pytest
from ha_schema import DOCUMENTED, check_discovery

import agent
from agent import ConfigError, Entity
from agent.daemon import ha_tables
from agent.daemon.homeassistant import (
    STORE_KEY,
    THREAD_NAME,
    HomeAssistantSettings,
    build_configs,
    check_app_entities,
    discovery_lifespan,
    entity_config_errors,
    field_path,
    ha_id,
)
from agent.settings import Settings
from agent.stores import MemoryStore
from agent.testing import AppHarness, eventually

HA = HomeAssistantSettings(enabled=True)
STATUS = "{{ value_json.status if value_json is mapping else value }}"
ON_OFF = (
    "{{ 'ON' if (value_json.%(f)s is number and value_json.%(f)s != 0) or "
    "(value_json.%(f)s | string | lower) in ['true', '1', 'on'] else 'OFF' }}"
)


def noop() -> dict:
    return {}


def cmd(payload: str) -> dict:
    return {}


def configs_of(app: agent.App, *, prefix: str | None = None, ha: Any = HA) -> dict[str, dict]:
    configs = build_configs(
        app.registry, prefix=prefix or app.name, ha=ha, settings=Settings(), version="9.9"
    )
    for topic, payload in configs.items():
        assert check_discovery(topic, payload, prefix=ha.discovery_prefix) == [], (topic, payload)
    return configs


def problem(app: agent.App) -> str:
    with pytest.raises(ConfigError) as caught:
        check_app_entities(app, HA, source="agent.toml")
    return str(caught.value)


# -- one config per entity, each component ---------------------------------------------


def test_a_sensor_config_has_everything_home_assistant_needs() -> None:
    app = agent.App("heating", "1.0")
    app.add_telemetry(
        "boiler",
        noop,
        interval=30,
        entities=[
            Entity("flow_c", device_class="temperature", unit="°C", state_class="measurement")
        ],
    )
    configs = configs_of(app)
    assert configs["homeassistant/sensor/heating/boiler_flow_c/config"] == {
        "name": "Flow c",
        "unique_id": "agent_heating_boiler_flow_c",
        "default_entity_id": "sensor.heating_boiler_flow_c",
        "state_topic": "heating/boiler/state",
        "value_template": "{{ value_json.flow_c }}",
        "device_class": "temperature",
        "unit_of_measurement": "°C",
        "state_class": "measurement",
        "expire_after": 90,  # 3 x 30 s
        "availability": [
            {"topic": "heating/status", "value_template": STATUS},
            {"topic": "heating/boiler/availability"},
        ],
        "availability_mode": "all",
        "qos": 1,
        "device": {
            "identifiers": ["agent_heating_boiler"],
            "name": "boiler",
            "sw_version": "9.9",
            "model": "agent telemetry device",
            "via_device": "agent_heating",
        },
        "origin": {"name": "agent", "sw_version": "9.9"},
    }
    assert "object_id" not in json.dumps(configs)


def test_the_agent_is_a_device_with_a_connectivity_sensor_read_from_its_status() -> None:
    app = agent.App("heating", "1.0")
    config = configs_of(app)["homeassistant/binary_sensor/heating/connectivity/config"]
    assert config["state_topic"] == "heating/status"
    assert config["device_class"] == "connectivity"
    assert config["device"]["identifiers"] == ["agent_heating"]
    assert "availability" not in config  # it must read OFF, not "unavailable", when offline
    # The heartbeat JSON while running, the plain last will otherwise:
    assert config["value_template"] == (
        "{{ 'ON' if (value_json.status if value_json is mapping else value) == 'online' "
        "else 'OFF' }}"
    )


def test_binary_sensors_and_switches_read_booleans_or_the_payloads_declared() -> None:
    app = agent.App("garden", "1.0")
    app.add_telemetry(
        "pump",
        noop,
        interval=10,
        entities=[
            Entity("running", component="binary_sensor", device_class="running"),
            Entity("lid", component="binary_sensor", payload_on="open", payload_off="shut"),
        ],
    )
    app.add_command(
        "valve",
        cmd,
        entities=[
            Entity("on", component="switch"),
            Entity(
                "state",
                component="switch",
                payload_on="open",
                payload_off="closed",
                command_sub_topic="state",
            ),
        ],
    )
    configs = configs_of(app)
    running = configs["homeassistant/binary_sensor/garden/pump_running/config"]
    assert running["value_template"] == ON_OFF % {"f": "running"}
    assert (running["payload_on"], running["payload_off"]) == ("ON", "OFF")
    assert running["expire_after"] == 30
    lid = configs["homeassistant/binary_sensor/garden/pump_lid/config"]
    assert lid["value_template"] == "{{ value_json.lid }}"
    assert (lid["payload_on"], lid["payload_off"]) == ("open", "shut")
    switch = configs["homeassistant/switch/garden/valve_on/config"]
    assert switch["value_template"] == ON_OFF % {"f": "on"}
    assert switch["command_topic"] == "garden/valve/set"
    assert switch["retain"] is False
    assert (switch["state_on"], switch["state_off"]) == ("ON", "OFF")
    assert "expire_after" not in switch  # a command device is not polled
    sub = configs["homeassistant/switch/garden/valve_state/config"]
    assert sub["command_topic"] == "garden/valve/state/set"
    assert (sub["payload_on"], sub["state_on"], sub["state_off"]) == ("open", "open", "closed")


def boolean_templates() -> dict[str, str]:
    """The value templates of a binary sensor and a switch without payloads declared."""
    app = agent.App("garden", "1.0")
    app.add_command(
        "valve",
        cmd,
        entities=[
            Entity("is-open", component="binary_sensor"),
            Entity("state", component="switch"),
        ],
    )
    configs = configs_of(app)
    return {
        "binary_sensor": configs["homeassistant/binary_sensor/garden/valve_is-open/config"][
            "value_template"
        ],
        "switch": configs["homeassistant/switch/garden/valve_state/config"]["value_template"],
    }


def test_a_boolean_field_compares_its_text_so_that_off_is_not_on() -> None:
    # Jinja's own truth would make the string "OFF" (what a command handler answering
    # {"state": payload} publishes after Home Assistant sent OFF) read ON.
    assert boolean_templates() == {
        "binary_sensor": "{{ 'ON' if (value_json['is-open'] is number and "
        "value_json['is-open'] != 0) or (value_json['is-open'] | string | lower) in "
        "['true', '1', 'on'] else 'OFF' }}",
        "switch": ON_OFF % {"f": "state"},
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "ON"),
        (False, "OFF"),
        (1, "ON"),
        (0, "OFF"),
        (1.0, "ON"),
        (2, "ON"),
        (0.0, "OFF"),
        ("1", "ON"),
        ("ON", "ON"),
        ("OFF", "OFF"),
        ("on", "ON"),
        ("Off", "OFF"),
        ("true", "ON"),
        ("False", "OFF"),
        (None, "OFF"),
    ],
)
def test_the_boolean_template_renders_as_home_assistant_would(value: Any, expected: str) -> None:
    """Home Assistant renders value templates with Jinja2 in a sandbox, ``value_json`` the
    parsed payload. jinja2 is a test dependency (not one of agent's): scripts/test installs
    it (python3-jinja2 from Debian, jinja2 from PyPI in the test extra)."""
    try:
        from jinja2 import sandbox
    except ImportError:  # pragma: no cover - a broken test environment
        pytest.fail("jinja2 is missing: sudo apt install python3-jinja2, or pip install jinja2")
    env = sandbox.ImmutableSandboxedEnvironment()
    payload = json.loads(json.dumps({"is-open": value, "state": value}))
    for template in boolean_templates().values():
        assert env.from_string(template).render(value_json=payload) == expected
    missing = env.from_string(boolean_templates()["switch"]).render(value_json={})
    assert missing == "OFF"


def test_the_device_model_says_what_kind_of_device_it_is() -> None:
    app = agent.App("a", "1.0")
    app.add_telemetry("t", noop, interval=5, entities=[Entity("v")])
    app.add_command("c", cmd, entities=[Entity("on", component="switch")])
    app.add_device("d", noop, entities=[Entity("v")])
    configs = configs_of(app)
    models = {
        topic.split("/")[3]: config["device"]["model"]
        for topic, config in configs.items()
        if "connectivity" not in topic
    }
    assert models == {
        "t_v": "agent telemetry device",
        "c_on": "agent command device",
        "d_v": "agent device",
    }


def test_buttons_numbers_and_selects_send_commands() -> None:
    app = agent.App("hifi", "1.0")
    app.add_command(
        "amp",
        cmd,
        entities=[
            Entity(
                "restart",
                component="button",
                device_class="restart",
                payload_on="reboot",
                command_sub_topic="restart",
            ),
            Entity("identify", component="button"),
            Entity(
                "volume",
                component="number",
                minimum=0,
                maximum=60,
                step=0.5,
                unit="dB",
                device_class="sound_pressure",
            ),
            Entity("input", component="select", options=("tv", "radio"), icon="mdi:import"),
        ],
    )
    configs = configs_of(app)
    button = configs["homeassistant/button/hifi/amp_restart/config"]
    assert button["payload_press"] == "reboot"
    assert button["command_topic"] == "hifi/amp/restart/set"
    assert "state_topic" not in button and "value_template" not in button
    assert configs["homeassistant/button/hifi/amp_identify/config"]["payload_press"] == "PRESS"
    number = configs["homeassistant/number/hifi/amp_volume/config"]
    assert (number["min"], number["max"], number["step"]) == (0, 60, 0.5)
    assert number["unit_of_measurement"] == "dB"
    assert number["state_topic"] == "hifi/amp/state"
    select = configs["homeassistant/select/hifi/amp_input/config"]
    assert select["options"] == ["tv", "radio"]
    assert select["icon"] == "mdi:import"
    assert select["retain"] is False


def test_the_root_device_belongs_to_the_agent_and_disabled_devices_get_no_config() -> None:
    app = agent.App("meter", "1.0")
    app.add_telemetry(
        "main",
        noop,
        interval=60,
        is_root=True,
        entities=[Entity("power_w", name="", device_class="power", unit="W")],
    )
    app.add_telemetry("spare", noop, interval=60, enabled=False, entities=[Entity("x")])
    configs = configs_of(app, prefix="home/meter", ha=HomeAssistantSettings(discovery_prefix="ha"))
    config = configs["ha/sensor/home_meter/main_power_w/config"]
    assert config["name"] is None  # the device's main entity: named after the device
    assert config["state_topic"] == "home/meter/state"
    assert config["availability"][1] == {"topic": "home/meter/availability"}
    assert config["device"]["identifiers"] == ["agent_home_meter"]
    assert not any("spare" in topic for topic in configs)


@pytest.mark.parametrize(
    ("publish", "expire"),
    [
        (None, 30),
        (agent.Every(n=3), 90),
        (agent.Every(seconds=25), 90),  # readings at 0, 10, 20, 30 s: published at 30
        (agent.OnChange(), None),  # may stay silent for ever
        (agent.OnChange() | agent.Every(seconds=60), 180),
        (agent.OnChange() & agent.Every(seconds=60), None),
    ],
)
def test_expire_after_is_three_times_the_longest_silence(publish: Any, expire: int | None) -> None:
    app = agent.App("a", "1.0")
    app.add_telemetry("t", noop, interval=10, publish=publish, entities=[Entity("v")])
    config = configs_of(app)["homeassistant/sensor/a/t_v/config"]
    assert config.get("expire_after") == expire


def test_an_interval_given_as_a_function_of_the_settings_is_used() -> None:
    app = agent.App("a", "1.0")
    app.add_telemetry("t", noop, interval=lambda s: 0.4, entities=[Entity("v")])
    assert configs_of(app)["homeassistant/sensor/a/t_v/config"]["expire_after"] == 2  # ceil 1.2


# -- ids and templates -----------------------------------------------------------------


def test_ids_keep_what_home_assistant_allows_and_replace_the_rest() -> None:
    assert ha_id("boiler-2_a") == "boiler-2_a"
    assert ha_id("kitchen.temp sensor") == "kitchen_temp_sensor"
    assert ha_id("温度") == ha_id("温度") != ha_id("湿度")  # a stable hash: nothing usable
    assert ha_id("温度").isascii()
    app = agent.App("my app", "1.0")
    app.add_telemetry("Küche.1", noop, interval=5, entities=[Entity("sensor.Temp-1")])
    (topic,) = [t for t in configs_of(app) if "/sensor/" in t]
    assert topic == "homeassistant/sensor/my_app/K_che_1_sensor_Temp-1/config"
    config = configs_of(app)[topic]
    assert config["default_entity_id"] == "sensor.my_app_k_che_1_sensor_temp_1"
    assert config["value_template"] == "{{ value_json.sensor['Temp-1'] }}"


def test_value_templates_use_brackets_where_a_dot_would_not_work() -> None:
    assert field_path("a.b") == "value_json.a.b"
    assert field_path("items") == "value_json['items']"  # the dict method, with a dot
    assert field_path("1st") == "value_json['1st']"
    assert field_path("it's") == "value_json['it\\'s']"


def test_two_entities_with_the_same_id_are_refused() -> None:
    app = agent.App("a", "1.0")
    app.add_telemetry("t", noop, interval=5, entities=[Entity("x.y"), Entity("x_y")])
    assert "its Home Assistant id 't_x_y' is the one of field 'x.y' of device 't'" in problem(app)
    app = agent.App("b", "1.0")
    app.add_telemetry("t", noop, interval=5, entities=[Entity("Temp"), Entity("temp")])
    assert "sensor.b_t_temp" in problem(app)


# -- what Home Assistant refuses, refused when the config is loaded -------------------


def refused(*entities: Entity, kind: str = "telemetry") -> str:
    app = agent.App("a", "1.0")
    if kind == "telemetry":
        app.add_telemetry("boiler", noop, interval=5, entities=entities)
    else:
        app.add_command("boiler", cmd, entities=entities)
    return problem(app)


def test_a_unit_that_is_not_one_of_the_device_class_is_refused_with_the_right_ones() -> None:
    message = refused(Entity("flow", device_class="temperature", unit="C"))
    assert message.startswith("agent.toml: device 'boiler' (")
    assert message.endswith(
        ', sensor \'flow\': unit "C" is not a unit of device_class "temperature" '
        '(use one of "°C", "K", "°F")'
    )


@pytest.mark.parametrize(
    ("entity", "kind", "expected"),
    [
        (
            Entity("t", device_class="temperature"),
            "telemetry",
            'device_class "temperature" needs a unit (use one of "K", "°C", "°F")',
        ),
        (
            Entity("t", device_class="temperature", unit="°C", state_class="total"),
            "telemetry",
            'state_class "total" is not one of device_class "temperature" (use one of '
            '"measurement", or none)',
        ),
        (
            Entity("t", device_class="timestamp", state_class="measurement"),
            "telemetry",
            'device_class "timestamp" takes no state_class: leave out "measurement"',
        ),
        (
            Entity("t", device_class="date", unit="d"),
            "telemetry",
            'device_class "date" has no unit: leave out unit "d"',
        ),
        (
            Entity("t", device_class="temprature", unit="°C"),
            "telemetry",
            'device_class "temprature" is not one of a sensor (did you mean "temperature"?',
        ),
        (
            Entity("t", state_class="measurment"),
            "telemetry",
            'state_class "measurment" is not a state class (use one of "measurement"',
        ),
        (
            Entity("t", unit="%", state_class="measurement_angle"),
            "telemetry",
            'state_class "measurement_angle" needs unit "°", not "%"',
        ),
        (
            Entity("t", options=("a", "b")),
            "telemetry",
            'options are for a sensor with device_class "enum" only',
        ),
        (
            Entity("t", component="binary_sensor", unit="%"),
            "telemetry",
            "unit is not an option of a binary_sensor (only of: sensor, number)",
        ),
        (
            Entity("t", component="binary_sensor", device_class="door-ish"),
            "telemetry",
            'device_class "door-ish" is not one of a binary_sensor',
        ),
        (
            Entity("t", component="switch"),
            "telemetry",
            "a switch sends commands, but telemetry device 'boiler' takes none (register it "
            "with @app.command or @app.device)",
        ),
        (Entity("t", component="select"), "command", "a select needs options (its choices)"),
        (
            Entity("t", component="select", options=("a", "a")),
            "command",
            'options ["a", "a"] repeat a choice',
        ),
        (
            Entity("t", component="number", minimum=10, maximum=5),
            "command",
            "minimum 10 is above maximum 5",
        ),
        (
            Entity("t", component="number", step=0.0001),
            "command",
            "step must be at least 0.001, got 0.0001",
        ),
        (
            Entity("t", component="number", device_class="temperature", unit="C"),
            "command",
            'unit "C" is not a unit of device_class "temperature"',
        ),
        (
            Entity("t", component="button", payload_off="x"),
            "command",
            "payload_off is not an option of a button (only of: binary_sensor, switch)",
        ),
        (
            Entity("t", component="switch", command_sub_topic="a/b"),
            "command",
            "invalid command sub-topic name 'a/b': it contains a '/'",
        ),
        (
            Entity("t", icon="thermometer"),
            "telemetry",
            'icon "thermometer" is not an icon name like "mdi:thermometer"',
        ),
        (Entity("a..b"), "telemetry", 'field "a..b" has an empty part in its dot path'),
    ],
)
def test_what_home_assistant_refuses_is_named(entity: Entity, kind: str, expected: str) -> None:
    assert expected in refused(entity, kind=kind)


def test_every_problem_is_counted_and_the_first_one_told() -> None:
    message = refused(
        Entity("a", unit=" "), Entity("b", device_class="nope"), Entity("c", icon="x")
    )
    assert message.startswith("agent.toml: device 'boiler' (")
    assert message.endswith(
        ", sensor 'a': unit \" \" is not a unit (leave it out for none) (and 2 more)"
    )


def test_each_problem_is_its_own_error_at_the_key_of_its_device() -> None:
    app = agent.App("a", "1.0")
    app.add_telemetry(
        "boiler",
        noop,
        interval=5,
        entities=[
            Entity("flow", device_class="temperature", unit="C"),
            Entity("ok", device_class="temperature", unit="°C"),
            Entity("b", device_class="temprature", unit="°C"),
        ],
    )
    app.add_command("lamp", cmd, entities=[Entity("c", icon="x")])
    app.add_telemetry("spare", noop, interval=5, enabled=False, entities=[Entity("d", icon="y")])
    app.add_telemetry("fine", noop, interval=5, entities=[Entity("e", unit="%")])
    errors = entity_config_errors(
        app,
        HA,
        source="agent.toml",
        keys={"boiler": "device[2]", "lamp": "modules[1]", "fine": "device[1]"},
    )
    assert [(e.source, e.key) for e in errors] == [
        ("agent.toml", "device[2]"),
        ("agent.toml", "device[2]"),
        ("agent.toml", "modules[1]"),
        ("agent.toml", ""),  # not in keys
    ]
    lines = [str(e) for e in errors]
    assert lines[0] == (
        "agent.toml: device[2]: device 'boiler', sensor 'flow': unit \"C\" is not a unit of "
        'device_class "temperature" (use one of "°C", "K", "°F")'
    )
    assert lines[1].startswith(
        "agent.toml: device[2]: device 'boiler', sensor 'b': device_class \"temprature\" "
        'is not one of a sensor (did you mean "temperature"?'
    )
    assert lines[2] == (
        "agent.toml: modules[1]: device 'lamp', sensor 'c': "
        'icon "x" is not an icon name like "mdi:thermometer"'
    )
    # Without a key, where the device was registered says where to look.
    assert lines[3].startswith("agent.toml: device 'spare' (module "), lines[3]
    assert all("\n" not in line for line in lines)


def test_an_app_without_problems_has_no_entity_errors() -> None:
    app = agent.App("a", "1.0")
    app.add_telemetry("t", noop, interval=5, entities=[Entity("v", unit="%")])
    assert entity_config_errors(app, HA, source="agent.toml", keys={"t": "device[1]"}) == []
    check_app_entities(app, HA, source="agent.toml")  # raises nothing either


def test_combinations_home_assistant_accepts_pass() -> None:
    app = agent.App("a", "1.0")
    app.add_telemetry(
        "t",
        noop,
        interval=5,
        entities=[
            Entity("pm", device_class="pm25", unit="µg/m³", state_class="measurement"),
            Entity("kwh", device_class="energy", unit="kWh", state_class="total_increasing"),
            Entity("eur", device_class="monetary", unit="EUR", state_class="total"),
            Entity("aqi", device_class="aqi", state_class="measurement"),
            Entity("mode", device_class="enum", options=("eco", "boost")),
            Entity("seen", device_class="timestamp"),
            Entity(
                "wind", device_class="wind_direction", unit="°", state_class="measurement_angle"
            ),
            Entity("anything", unit="furlongs"),
        ],
    )
    check_app_entities(app, HA, source="agent.toml")
    configs = configs_of(app)
    # The micro sign typed on a keyboard becomes the Greek mu Home Assistant uses.
    assert configs["homeassistant/sensor/a/t_pm/config"]["unit_of_measurement"] == "μg/m³"


def test_a_bad_discovery_prefix_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="discovery_prefix: expected a topic prefix"):
        HomeAssistantSettings(discovery_prefix="home/+/x").validate()
    HomeAssistantSettings(discovery_prefix="home/ha").validate()


@pytest.mark.parametrize("topic", ["homeassistant/+", "#", "ha//status", ""])
def test_a_status_topic_with_wildcards_or_empty_levels_is_a_config_error(topic: str) -> None:
    with pytest.raises(ConfigError, match="status_topic: expected a topic without wildcards"):
        HomeAssistantSettings(status_topic=topic).validate()


def test_home_assistants_birth_topic_is_its_own_setting() -> None:
    settings = HomeAssistantSettings(discovery_prefix="ha")
    assert settings.status_topic == "homeassistant/status"  # Home Assistant's default
    settings.validate()
    HomeAssistantSettings(status_topic="hass/birth").validate()


# -- the checker fails on what Home Assistant refuses --------------------------------


GOOD = {
    "name": "Flow",
    "unique_id": "u1",
    "default_entity_id": "sensor.a_flow",
    "state_topic": "a/boiler/state",
    "value_template": "{{ value_json.flow }}",
    "availability": [
        {"topic": "a/status", "value_template": STATUS},
        {"topic": "a/b/availability"},
    ],
    "availability_mode": "all",
    "device": {"identifiers": ["agent_a"], "name": "a"},
    "origin": {"name": "agent"},
}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"object_id": "a_flow"}, "object_id is removed"),
        ({"state_topic": None}, "state_topic is required"),
        ({"unique_id": None}, "unique_id is required"),
        ({"colour": "red"}, "colour is not an option of a sensor"),
        ({"qos": True}, "qos is a bool"),
        ({"qos": 3}, "qos 3 is not 0, 1 or 2"),
        ({"expire_after": 1.5}, "expire_after is a float"),
        ({"default_entity_id": "switch.a_flow"}, "is not sensor.<lower_case_id>"),
        ({"default_entity_id": "sensor.A-flow"}, "is not sensor.<lower_case_id>"),
        ({"availability": [{"payload_available": "up"}]}, "availability[0] is not an object"),
        ({"availability": [{"topic": "a/#/b"}]}, "availability[0].topic 'a/#/b' is not a topic"),
        ({"availability_topic": "a/status"}, "exclude each other"),
        ({"availability_mode": "most"}, "availability_mode 'most'"),
        ({"device": {"name": "a"}}, "device needs identifiers or connections"),
        ({"device": {"identifiers": ["x"], "colour": "red"}}, "device.colour"),
        ({"origin": {"sw_version": "1"}}, "origin.name is required"),
        ({"value_template": "value_json.flow"}, "is not a template"),
        ({"device_class": "temperature", "unit_of_measurement": "C"}, "unit 'C' is not valid"),
        (
            {"device_class": "temperature", "unit_of_measurement": "°C", "state_class": "total"},
            "state_class 'total' is not valid with device_class 'temperature'",
        ),
        ({"device_class": "heat"}, "device_class 'heat' is not one"),
        ({"options": ["a"]}, 'options need device_class "enum"'),
        ({"icon": "fire"}, "icon 'fire'"),
    ],
)
def test_the_checker_finds_what_is_wrong(change: dict, expected: str) -> None:
    config = {**GOOD, **change}
    config = {k: v for k, v in config.items() if v is not None}
    assert check_discovery("homeassistant/sensor/a/a_flow/config", GOOD) == []
    problems = check_discovery("homeassistant/sensor/a/a_flow/config", config)
    assert any(expected in p for p in problems), problems


# -- the checker's own reading of Home Assistant's documentation --------------------


def test_the_documented_classes_agree_with_the_tables_today() -> None:
    for dc, (units, state_classes) in DOCUMENTED.items():
        assert set(ha_tables.UNITS_OF[dc]) == units, dc
        assert set(ha_tables.STATE_CLASSES_OF[dc]) == state_classes, dc


@pytest.mark.parametrize(
    ("table", "dc", "wrong", "entity", "expected"),
    [
        (
            ha_tables.UNITS_OF,
            "temperature",
            "C",
            Entity("v", device_class="temperature", unit="C"),
            "unit 'C' is not one Home Assistant documents for device_class 'temperature'",
        ),
        (
            ha_tables.UNITS_OF,
            "humidity",
            "%RH",
            Entity("v", device_class="humidity", unit="%RH"),
            "unit '%RH' is not one Home Assistant documents for device_class 'humidity'",
        ),
        (
            ha_tables.UNITS_OF,
            "battery",
            "V",
            Entity("v", device_class="battery", unit="V"),
            "unit 'V' is not one Home Assistant documents for device_class 'battery'",
        ),
        (
            ha_tables.UNITS_OF,
            "power",
            "kWh",
            Entity("v", device_class="power", unit="kWh"),
            "unit 'kWh' is not one Home Assistant documents for device_class 'power'",
        ),
        (
            ha_tables.UNITS_OF,
            "energy",
            "kW",
            Entity("v", device_class="energy", unit="kW", state_class="total"),
            "unit 'kW' is not one Home Assistant documents for device_class 'energy'",
        ),
        (
            ha_tables.STATE_CLASSES_OF,
            "energy",
            "measurement",
            Entity("v", device_class="energy", unit="kWh", state_class="measurement"),
            "state_class 'measurement' is not one Home Assistant documents for 'energy'",
        ),
        (
            ha_tables.STATE_CLASSES_OF,
            "temperature",
            "total_increasing",
            Entity("v", device_class="temperature", unit="°C", state_class="total_increasing"),
            "state_class 'total_increasing' is not one Home Assistant documents for 'temperature'",
        ),
    ],
    ids=[
        "temperature-C",
        "humidity-%RH",
        "battery-V",
        "power-kWh",
        "energy-kW",
        "energy-measurement",
        "temperature-total_increasing",
    ],
)
def test_a_wrong_table_entry_is_caught_by_what_home_assistant_documents(
    monkeypatch: pytest.MonkeyPatch,
    table: dict[str, tuple[str | None, ...]],
    dc: str,
    wrong: str,
    entity: Entity,
    expected: str,
) -> None:
    # The mistake the code and the table-based checks share: the table takes a wrong value.
    monkeypatch.setitem(table, dc, (*table[dc], wrong))
    app = agent.App("a", "1.0")
    app.add_telemetry("t", noop, interval=5, entities=[entity])
    check_app_entities(app, HA, source="agent.toml")  # the code believes the table
    configs = build_configs(app.registry, prefix="a", ha=HA, settings=Settings(), version="1")
    config = configs["homeassistant/sensor/a/t_v/config"]
    assert check_discovery("homeassistant/sensor/a/t_v/config", config) == [expected]


def test_what_home_assistant_documents_passes_the_checker() -> None:
    app = agent.App("a", "1.0")
    app.add_telemetry(
        "t",
        noop,
        interval=5,
        entities=[
            Entity("c", device_class="temperature", unit="°F", state_class="measurement"),
            Entity("h", device_class="humidity", unit="%", state_class="measurement"),
            Entity("b", device_class="battery", unit="%"),
            Entity("p", device_class="power", unit="kW", state_class="measurement"),
            Entity("e", device_class="energy", unit="Wh", state_class="total"),
            Entity("m", device_class="energy", unit="MWh", state_class="total_increasing"),
        ],
    )
    assert len(configs_of(app)) == 7  # configs_of runs the checker on each


def test_the_checker_knows_each_components_required_keys_and_the_topic_shape() -> None:
    assert check_discovery("homeassistant/sensor/a b/x/config", GOOD)
    assert check_discovery("homeassistant/sensor/a/x/state", GOOD)
    switch = {k: v for k, v in GOOD.items() if k != "default_entity_id"}
    assert check_discovery("homeassistant/switch/a/x/config", switch) == [
        "command_topic is required"
    ]
    button = {"unique_id": "b", "command_topic": "a/+/set"}
    assert check_discovery("homeassistant/button/a/x/config", button) == [
        "command_topic 'a/+/set' is not a topic to publish to"
    ]
    number = {"unique_id": "n", "command_topic": "a/set", "min": 5, "max": 1}
    assert check_discovery("homeassistant/number/a/x/config", number) == ["max must be >= min"]
    select = {"unique_id": "s", "command_topic": "a/set"}
    assert check_discovery("homeassistant/select/a/x/config", select) == ["options is required"]
    assert check_discovery("homeassistant/sensor/a/x/config", []) == [
        "the payload is a list, not a JSON object"
    ]


# -- the lifespan, run by the testing kit -------------------------------------------


def make_app(
    *devices: str,
    store: MemoryStore | None,
    delay: tuple[float, float] = (2.0, 2.0),
    rng: random.Random | None = None,
    ha: HomeAssistantSettings = HA,
) -> agent.App:
    """An App with telemetry devices ``devices`` (one sensor each) and discovery on."""
    app = agent.App(
        "house",
        "1.0",
        heartbeat_interval=3600,
        lifespan=discovery_lifespan(ha, store=store, version="9.9", delay=delay, rng=rng),
    )
    for name in devices:
        app.add_telemetry(
            name,
            lambda: {"t": 21.5},
            interval=600,
            entities=[Entity("t", device_class="temperature", unit="°C")],
        )
    return app


def config_topics(h: AppHarness) -> list[str]:
    return [m.topic for m in h.messages_for("homeassistant/+/+/+/config")]


def test_configs_go_out_retained_before_the_states_and_are_remembered() -> None:
    store = MemoryStore()
    with AppHarness(make_app("hall", "attic", store=store)) as h:
        assert h.mqtt.subscriptions.count("homeassistant/status") == 1
        configs = h.messages_for("homeassistant/+/+/+/config")
        assert sorted(m.topic for m in configs) == [
            "homeassistant/binary_sensor/house/connectivity/config",
            "homeassistant/sensor/house/attic_t/config",
            "homeassistant/sensor/house/hall_t/config",
        ]
        for message in configs:
            assert (message.retain, message.qos) == (True, 1)
            assert check_discovery(message.topic, message.json()) == []
        topics = [m.topic for m in h.published]
        assert topics.index("homeassistant/sensor/house/hall_t/config") < topics.index(
            "house/hall/state"
        )
    assert store.load(STORE_KEY) == {"configs": sorted(m.topic for m in configs)}


def test_the_configs_of_a_removed_device_are_cleared_at_the_next_start() -> None:
    store = MemoryStore()
    with AppHarness(make_app("hall", "attic", store=store)):
        pass
    with AppHarness(make_app("hall", store=store)) as h:
        cleared = [m for m in h.published if m.payload == ""]
        assert [(m.topic, m.retain, m.qos) for m in cleared] == [
            ("homeassistant/sensor/house/attic_t/config", True, 1)
        ]
        assert "homeassistant/sensor/house/hall_t/config" in config_topics(h)
    assert "homeassistant/sensor/house/attic_t/config" not in store.load(STORE_KEY)["configs"]
    with AppHarness(make_app("hall", store=store)) as h:
        assert not [m for m in h.published if m.payload == ""]  # cleared once, not again


def test_a_damaged_store_clears_nothing_but_discovery_configs() -> None:
    store = MemoryStore()
    store.save(STORE_KEY, {"configs": ["house/hall/state", "homeassistant/sensor/x/y/config", 7]})
    with AppHarness(make_app("hall", store=store)) as h:
        assert [m.topic for m in h.published if m.payload == ""] == [
            "homeassistant/sensor/x/y/config"
        ]
    store.save(STORE_KEY, {"configs": "garbage"})
    with AppHarness(make_app("hall", store=store)) as h:
        assert not [m for m in h.published if m.payload == ""]


def test_without_a_store_the_configs_are_published_and_nothing_is_cleared() -> None:
    with AppHarness(make_app("hall", store=None)) as h:
        assert "homeassistant/sensor/house/hall_t/config" in config_topics(h)
        assert not [m for m in h.published if m.payload == ""]


def test_home_assistants_online_brings_configs_then_states_after_the_delay() -> None:
    with AppHarness(make_app("hall", store=MemoryStore())) as h:
        (thread,) = [t for t in threading.enumerate() if t.name == THREAD_NAME]
        start = h.clock.now()
        h.mqtt.published.clear()
        h.mqtt.deliver("homeassistant/status", "offline")  # not a birth: nothing
        h.mqtt.deliver("homeassistant/status", "online")
        h.mqtt.deliver("homeassistant/status", "online")  # during the delay: the same one
        eventually(lambda: h.clock.next_deadline == start + 2.0, what="the delay armed")
        h.advance(1.999)
        assert h.published == []
        h.advance(0.001)
        topics = [m.topic for m in h.published]
        assert sorted(t for t in topics if t.endswith("/config")) == [
            "homeassistant/binary_sensor/house/connectivity/config",
            "homeassistant/sensor/house/hall_t/config",
        ]
        assert topics.index("homeassistant/sensor/house/hall_t/config") < topics.index(
            "house/hall/state"
        )
        assert "house/status" in topics and "house/hall/availability" in topics
        assert all(m.retain for m in h.published)
        h.mqtt.published.clear()
        h.advance(10)
        assert h.published == []  # one re-publish for the three messages
    assert not thread.is_alive()


@pytest.mark.parametrize(
    ("options", "birth"),
    [
        # Another discovery prefix leaves Home Assistant's birth topic where it was.
        ({"discovery_prefix": "ha"}, "homeassistant/status"),
        ({"status_topic": "hass/birth"}, "hass/birth"),
    ],
)
def test_online_is_awaited_on_the_status_topic_not_under_the_discovery_prefix(
    options: dict[str, str], birth: str
) -> None:
    ha = HomeAssistantSettings(enabled=True, **options)
    with AppHarness(make_app("hall", store=None, ha=ha)) as h:
        assert h.mqtt.subscriptions.count(birth) == 1
        assert f"{ha.discovery_prefix}/status" not in h.mqtt.subscriptions
        start = h.clock.now()
        h.mqtt.published.clear()
        h.mqtt.deliver(birth, "online")
        eventually(lambda: h.clock.next_deadline == start + 2.0, what="the delay armed")
        h.advance(2.0)
        topics = [m.topic for m in h.published]
        assert f"{ha.discovery_prefix}/sensor/house/hall_t/config" in topics
        assert "house/hall/state" in topics


def test_online_under_another_discovery_prefix_is_not_home_assistants() -> None:
    ha = HomeAssistantSettings(enabled=True, discovery_prefix="ha")
    with AppHarness(make_app("hall", store=None, ha=ha)) as h:
        h.mqtt.published.clear()
        h.mqtt.deliver("ha/status", "online")
        h.advance(10)
        assert h.published == []


def test_the_delay_is_drawn_between_its_bounds() -> None:
    rng = random.Random(7)
    expected = random.Random(7).uniform(0.5, 3.0)
    with AppHarness(make_app("hall", store=None, delay=(0.5, 3.0), rng=rng)) as h:
        start = h.clock.now()
        h.mqtt.deliver("homeassistant/status", "online")
        eventually(lambda: h.clock.next_deadline == start + expected, what="the delay armed")


def test_shutdown_during_the_delay_stops_the_thread_at_once() -> None:
    h = AppHarness(make_app("hall", store=None, delay=(100.0, 100.0))).start()
    (thread,) = [t for t in threading.enumerate() if t.name == THREAD_NAME]
    start = h.clock.now()
    h.mqtt.deliver("homeassistant/status", "online")
    eventually(lambda: h.clock.next_deadline == start + 100.0, what="the delay armed")
    h.mqtt.published.clear()
    h.stop()
    assert not thread.is_alive()
    assert not [m for m in h.mqtt.published if m[0].endswith("/config")]


def test_an_entity_home_assistant_refuses_stops_the_start_with_a_config_error() -> None:
    app = make_app(store=None)
    app.add_telemetry(
        "bad", noop, interval=5, entities=[Entity("t", device_class="temperature", unit="C")]
    )
    with pytest.raises(ConfigError, match=r"device 'bad' .*unit \"C\""):
        AppHarness(app).start()


def test_a_disabled_device_is_checked_too() -> None:
    app = agent.App("a", "1.0")
    app.add_telemetry(
        "spare", noop, interval=5, enabled=False, entities=[Entity("t", state_class="average")]
    )
    assert "device 'spare'" in problem(app)
    assert not any("spare" in topic for topic in configs_of_unchecked(app))


def configs_of_unchecked(app: agent.App) -> dict[str, dict]:
    """build_configs leaves a disabled device out, mistakes and all (it is not running)."""
    return build_configs(app.registry, prefix=app.name, ha=HA, settings=Settings(), version="1")
