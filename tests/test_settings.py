"""Settings: sources and their order, conversion, validation and the error messages."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
from typing import Annotated, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.logs import redact
from agent.settings import (
    SECRET,
    SECRET_FILE,
    Check,
    ConfigError,
    LoggingSettings,
    MqttSettings,
    Section,
    Settings,
    between,
    default_client_id,
    greater_than,
    read_toml,
)
from agent.topics import validate_prefix

# --------------------------------------------------------------------------- helpers


def write(tmp_path: pathlib.Path, name: str, text: str) -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(cls: type[Settings] = Settings, **kwargs: object) -> ConfigError:
    kwargs.setdefault("environ", {})
    kwargs.setdefault("env_file", None)
    with pytest.raises(ConfigError) as info:
        cls.load(**kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message, "a config error must be one line"
    return info.value


class Sensor(Section):
    pins: list[int] = []
    mode: Literal["fast", "slow"] = "slow"


class MyAppSettings(Settings):
    env_prefix = "MYAPP_"
    poll_interval: Annotated[float, greater_than(0)] = 30.0
    sensors: list[str] = []
    debug: bool = False
    data_dir: pathlib.Path = pathlib.Path("/var/lib/myapp")
    api_token: Annotated[str | None, SECRET] = None
    sensor: Sensor = Sensor()


# --------------------------------------------------------------------------- defaults and kwargs


def test_defaults_only_without_arguments() -> None:
    s = Settings()
    assert s.mqtt.host == "localhost"
    assert s.mqtt.port == 1883
    assert s.mqtt.protocol == "3.1.1"
    assert s.mqtt.clean_session is False
    assert s.logging.level == "INFO"
    assert s.logging.format == "json"
    assert s.app is None


def test_keyword_construction_is_checked_like_a_file() -> None:
    assert MqttSettings(port=1884).port == 1884
    assert LoggingSettings(level="debug").level == "DEBUG"
    with pytest.raises(ConfigError, match=r"arguments: port: expected an integer 1-65535, found 0"):
        MqttSettings(port=0)
    with pytest.raises(TypeError, match="no setting 'hostt'"):
        MqttSettings(hostt="x")


def test_instances_do_not_share_mutable_defaults() -> None:
    a, b = MyAppSettings(), MyAppSettings()
    a.sensors.append("x")
    a.mqtt.host = "elsewhere"
    assert b.sensors == []
    assert b.mqtt.host == "localhost"
    assert Settings().mqtt.host == "localhost"


def test_field_without_default_is_rejected() -> None:
    class Broken(Section):
        name: str

    with pytest.raises(TypeError, match=r"Broken\.name needs a default"):
        Broken()


# --------------------------------------------------------------------------- sources and order


def test_each_source_overrides_the_previous(tmp_path: pathlib.Path) -> None:
    toml = write(
        tmp_path,
        "agent.toml",
        'app = "from-toml"\n[mqtt]\nhost = "toml-host"\nport = 1000\nkeepalive = 30\n'
        'topic_prefix = "toml"\n',
    )
    env_file = write(tmp_path, "x.env", "MQTT__PORT=2000\nMQTT__KEEPALIVE=40\n")
    environ = {"MQTT__KEEPALIVE": "50"}
    s = Settings.load(config_file=toml, env_file=env_file, environ=environ)
    assert s.app == "from-toml"  # toml only
    assert s.mqtt.host == "toml-host"  # toml over default
    assert s.mqtt.port == 2000  # .env over toml
    assert s.mqtt.keepalive == 50  # environment over .env
    assert s.mqtt.topic_prefix == "toml"
    assert s.mqtt.username is None  # default


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQTT__HOST", "from-os-environ")
    assert Settings.load(env_file=None).mqtt.host == "from-os-environ"


def test_default_dotenv_in_working_directory(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings.load(environ={}).mqtt.host == "localhost"  # no .env: fine
    write(tmp_path, ".env", "MQTT__HOST=from-dotenv\n")
    assert Settings.load(environ={}).mqtt.host == "from-dotenv"


def test_explicit_missing_files_are_errors(tmp_path: pathlib.Path) -> None:
    err = load_error(env_file=tmp_path / "nope.env")
    assert str(err) == f"{tmp_path / 'nope.env'}: env file not found"
    err = load_error(config_file=tmp_path / "nope.toml")
    assert err.source == str(tmp_path / "nope.toml")
    assert "config file not found" in str(err)


def test_environment_names_are_case_insensitive_and_others_ignored() -> None:
    environ = {"mqtt__host": "h", "Logging__Level": "warning", "PATH": "/bin", "HOME": "/root"}
    s = Settings.load(env_file=None, environ=environ)
    assert s.mqtt.host == "h"
    assert s.logging.level == "WARNING"


def test_unknown_field_of_known_section_in_environment() -> None:
    err = load_error(environ={"MQTT__HOSTT": "x"})
    assert err.source == "environment"
    assert err.key == "mqtt.hostt"
    assert str(err) == (
        'environment: mqtt.hostt (MQTT__HOSTT): unknown setting (did you mean "MQTT__HOST"?)'
    )


def test_env_prefix_on_a_subclass() -> None:
    environ = {
        "MYAPP_POLL_INTERVAL": "2.5",
        "MYAPP_MQTT__HOST": "prefixed",
        "MQTT__HOST": "unprefixed-is-ignored",
        "MYAPP_SENSOR__PINS": "4, 17",
    }
    s = MyAppSettings.load(env_file=None, environ=environ)
    assert s.poll_interval == 2.5
    assert s.mqtt.host == "prefixed"
    assert s.sensor.pins == [4, 17]
    err = load_error(MyAppSettings, environ={"MYAPP_POL_INTERVAL": "1"})
    assert 'did you mean "MYAPP_POLL_INTERVAL"?' in str(err)
    assert err.key == "pol_interval"


# --------------------------------------------------------------------------- TOML


def test_toml_type_mismatch_names_file_key_expected_found(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "agent.toml", '[mqtt]\nport = "abc"\n')
    err = load_error(config_file=path)
    assert (err.source, err.key) == (str(path), "mqtt.port")
    assert err.expected == "an integer 1-65535"
    assert err.found == '"abc"'
    assert str(err) == f'{path}: mqtt.port: expected an integer 1-65535, found "abc"'


@pytest.mark.parametrize(
    ("line", "expected", "found"),
    [
        ("port = true", "an integer 1-65535", "true"),  # bool is never an int
        ("port = 1883.0", "an integer 1-65535", "1883.0"),  # nor a float
        ("port = 70000", "an integer 1-65535", "70000"),
        ("keepalive = 4", "an integer 5-65535", "4"),
        ("reconnect_min_delay = 0", "a number > 0", "0"),
        ("reconnect_max_delay = false", "a number > 0", "false"),
        ("max_payload_bytes = 0", "an integer >= 1", "0"),
        ("offline_buffer_size = 0", "an integer >= 1", "0"),
        ("tls = 1", "true or false", "1"),
        ("host = 5", "a string", "5"),
        ('protocol = "4"', 'one of "3.1.1", "5"', '"4"'),
        ("host = [1]", "a string", "a list"),
    ],
)
def test_toml_bad_values(tmp_path: pathlib.Path, line: str, expected: str, found: str) -> None:
    path = write(tmp_path, "agent.toml", f"[mqtt]\n{line}\n")
    err = load_error(config_file=path)
    assert err.key == "mqtt." + line.split(" ")[0]
    assert (err.expected, err.found) == (expected, found)


def test_toml_logging_constraints(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "a.toml", '[logging]\nlevel = "LOUD"\n')
    err = load_error(config_file=path)
    assert err.expected == 'one of "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"'
    path = write(tmp_path, "b.toml", '[logging]\nformat = "xml"\n')
    assert load_error(config_file=path).expected == 'one of "json", "text"'
    path = write(tmp_path, "c.toml", "[logging]\nbackup_count = -1\n")
    assert load_error(config_file=path).expected == "an integer >= 0"
    path = write(
        tmp_path, "d.toml", '[logging]\nlevel = "debug"\nformat = "TEXT"\nbackup_count = 0\n'
    )
    s = Settings.load(config_file=path, env_file=None, environ={})
    assert (s.logging.level, s.logging.format, s.logging.backup_count) == ("DEBUG", "text", 0)


def test_toml_int_accepted_for_float_and_for_numeric_literal(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "agent.toml", "[mqtt]\nreconnect_max_delay = 30\nprotocol = 5\n")
    s = Settings.load(config_file=path, env_file=None, environ={})
    assert s.mqtt.reconnect_max_delay == 30.0
    assert isinstance(s.mqtt.reconnect_max_delay, float)
    assert s.mqtt.protocol == "5"


def test_toml_unknown_keys_suggest_a_close_match(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "agent.toml", '[mqtt]\nhostt = "x"\n')
    assert str(load_error(config_file=path)) == (
        f'{path}: mqtt.hostt: unknown key (did you mean "mqtt.host"?)'
    )
    path = write(tmp_path, "b.toml", '[mqqt]\nhost = "x"\n')
    err = load_error(config_file=path)
    assert err.key == "mqqt"
    assert 'did you mean "mqtt"?' in str(err)
    path = write(tmp_path, "c.toml", "zzzz = 1\n")
    assert str(load_error(config_file=path)) == f"{path}: zzzz: unknown key"


def test_toml_section_must_be_a_table(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "agent.toml", 'mqtt = "broker"\n')
    err = load_error(config_file=path)
    assert (err.key, err.expected, err.found) == ("mqtt", "a table [mqtt]", '"broker"')


def test_toml_syntax_error_gives_the_line(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "agent.toml", '[mqtt]\nhost = "a"\nport 1883\n')
    err = load_error(config_file=path)
    assert err.line == 3
    assert str(err).startswith(f"{path}: line 3: invalid TOML: ")


# --------------------------------------------------------------------------- .env


def test_dotenv_syntax(tmp_path: pathlib.Path) -> None:
    text = "\n".join(
        [
            "# a comment",
            "",
            "export MQTT__HOST=broker.local",
            "MQTT__USERNAME = 'it''s'",  # single quotes end at the next quote
            'MQTT__TOPIC_PREFIX="home/#not-a-comment"  # but this is',
            "MQTT__CLIENT_ID=plain value # trailing comment",
            r'APP="line\nbreak \"quoted\""',
            "LOGGING__FILE='/tmp/a # b'",
        ]
    )
    path = write(tmp_path, "agent.env", text.replace("'it''s'", "'its'"))
    # topic_prefix with '#' would fail validation, so read the raw values only.
    from agent.settings import _parse_dotenv

    parsed = {name: value for _, name, value in _parse_dotenv(path.read_text(), str(path))}
    assert parsed == {
        "MQTT__HOST": "broker.local",
        "MQTT__USERNAME": "its",
        "MQTT__TOPIC_PREFIX": "home/#not-a-comment",
        "MQTT__CLIENT_ID": "plain value",
        "APP": 'line\nbreak "quoted"',
        "LOGGING__FILE": "/tmp/a # b",
    }
    path = write(tmp_path, "ok.env", "export MQTT__HOST='broker.local' # comment\nAPP=\"x\"\n")
    s = Settings.load(env_file=path, environ={})
    assert (s.mqtt.host, s.app) == ("broker.local", "x")


def test_dotenv_errors_give_the_line_but_not_its_text(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "a.env", "MQTT__HOST=x\nthis is not an assignment s3cr3t\n")
    err = load_error(env_file=path)
    assert str(err) == f"{path}: line 2: invalid line: expected NAME=value"
    path = write(tmp_path, "b.env", 'MQTT__HOST="unterminated\n')
    assert str(load_error(env_file=path)) == f'{path}: line 1: missing closing " quote'
    path = write(tmp_path, "c.env", "\nMQTT__PROT=5\n")
    assert str(load_error(env_file=path)) == (
        f'{path}: line 2: mqtt.prot (MQTT__PROT): unknown setting (did you mean "MQTT__PORT"?)'
    )
    path = write(tmp_path, "d.env", "MQTT__PORT=eighty\n")
    assert str(load_error(env_file=path)) == (
        f'{path}: line 1: mqtt.port (MQTT__PORT): expected an integer 1-65535, found "eighty"'
    )


# --------------------------------------------------------------------------- conversion from text


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *[("true", True), ("YES", True), ("on", True), ("1", True)],
        *[("False", False), ("no", False), ("OFF", False), ("0", False)],
    ],
)
def test_bool_words(text: str, value: bool) -> None:
    assert Settings.load(env_file=None, environ={"MQTT__TLS": text}).mqtt.tls is value


def test_bad_bool_and_number_text() -> None:
    err = load_error(environ={"MQTT__TLS": "maybe"})
    assert (err.expected, err.found) == ("true or false", '"maybe"')
    err = load_error(environ={"MQTT__RECONNECT_MIN_DELAY": "soon"})
    assert (err.key, err.expected) == ("mqtt.reconnect_min_delay", "a number > 0")
    err = load_error(environ={"MQTT__PORT": "1883.5"})
    assert err.expected == "an integer 1-65535"


def test_lists_from_each_source(tmp_path: pathlib.Path) -> None:
    env = {"MYAPP_SENSORS": "a, b,,c"}
    assert MyAppSettings.load(env_file=None, environ=env).sensors == ["a", "b", "c"]
    env = {"MYAPP_SENSORS": '["a,1", "b"]'}
    assert MyAppSettings.load(env_file=None, environ=env).sensors == ["a,1", "b"]
    env = {"MYAPP_SENSORS": ""}
    assert MyAppSettings.load(env_file=None, environ=env).sensors == []
    path = write(tmp_path, "a.toml", 'sensors = ["x"]\n[sensor]\npins = [1, 2]\nmode = "FAST"\n')
    s = MyAppSettings.load(config_file=path, env_file=None, environ={})
    assert (s.sensors, s.sensor.pins, s.sensor.mode) == (["x"], [1, 2], "fast")
    path = write(tmp_path, "b.toml", '[sensor]\npins = [1, "2"]\n')
    err = load_error(MyAppSettings, config_file=path)
    assert err.key == "sensor.pins"
    assert err.expected == "a list of integers (comma-separated or a JSON array)"
    err = load_error(MyAppSettings, environ={"MYAPP_SENSOR__PINS": "1,two"})
    assert (err.key, err.found) == ("sensor.pins", '"1,two"')
    err = load_error(MyAppSettings, environ={"MYAPP_SENSORS": "[1, 2"})
    assert err.key == "sensors"


def test_optional_path_and_literal_from_text() -> None:
    env = {
        "MYAPP_MQTT__USERNAME": "",  # empty clears an optional setting
        "MYAPP_DATA_DIR": "/srv/data",
        "MYAPP_SENSOR__MODE": "Fast",
        "MYAPP_DEBUG": "yes",
    }
    s = MyAppSettings.load(env_file=None, environ=env)
    assert s.mqtt.username is None
    assert s.data_dir == pathlib.Path("/srv/data")
    assert s.sensor.mode == "fast"
    assert s.debug is True
    err = load_error(MyAppSettings, environ={"MYAPP_SENSOR__MODE": "medium"})
    assert (err.expected, err.found) == ('one of "fast", "slow"', '"medium"')
    err = load_error(MyAppSettings, environ={"MYAPP_POLL_INTERVAL": "-1"})
    assert err.expected == "a number > 0"


def test_custom_constraint_via_annotated() -> None:
    class Odd(Settings):
        workers: Annotated[int, between(1, 8)] = 2

    assert Odd.load(env_file=None, environ={"WORKERS": "8"}).workers == 8
    err = load_error(Odd, environ={"WORKERS": "9"})
    assert str(err) == 'environment: workers (WORKERS): expected an integer 1-8, found "9"'


# --------------------------------------------------------------------------- cross-field checks


def test_reconnect_delays_in_order(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "a.toml", "[mqtt]\nreconnect_min_delay = 10\nreconnect_max_delay = 5\n")
    err = load_error(config_file=path)
    assert str(err) == (
        f"{path}: mqtt.reconnect_min_delay: expected at most reconnect_max_delay (5), found 10"
    )


def test_cert_without_key_and_tls_files(tmp_path: pathlib.Path) -> None:
    cert = write(tmp_path, "client.crt", "x")
    key = write(tmp_path, "client.key", "x")
    ca = write(tmp_path, "ca.crt", "x")
    path = write(tmp_path, "a.toml", f'[mqtt]\ntls = true\ncert_file = "{cert}"\n')
    err = load_error(config_file=path)
    assert str(err) == (
        f"{path}: mqtt.cert_file: cert_file is set but key_file is not; set both or neither"
    )
    path = write(tmp_path, "b.toml", f'[mqtt]\nca_file = "{ca}"\n')
    assert str(load_error(config_file=path)) == (
        f"{path}: mqtt.ca_file: ca_file is set but tls is false; set tls = true"
    )
    missing = tmp_path / "missing.crt"
    path = write(tmp_path, "c.toml", f'[mqtt]\ntls = true\nca_file = "{missing}"\n')
    err = load_error(config_file=path)
    assert (err.source, err.key, err.expected) == (str(path), "mqtt.ca_file", "a readable file")
    text = f'[mqtt]\ntls = true\nca_file = "{ca}"\ncert_file = "{cert}"\nkey_file = "{key}"\n'
    path = write(tmp_path, "d.toml", text)
    s = Settings.load(config_file=path, env_file=None, environ={})
    assert (s.mqtt.tls, s.mqtt.key_file) == (True, str(key))


def test_validate_error_blames_the_environment_variable(tmp_path: pathlib.Path) -> None:
    err = load_error(environ={"MQTT__TOPIC_PREFIX": "home/+"})
    assert str(err).startswith("environment: mqtt.topic_prefix (MQTT__TOPIC_PREFIX): expected ")
    assert err.found == "\"home/+\" (level 2 '+' contains an MQTT wildcard '+')"
    path = write(tmp_path, "a.toml", '[mqtt]\nclient_id = ""\n')
    err = load_error(config_file=path)
    assert str(err) == f'{path}: mqtt.client_id: expected a non-empty string, found ""'


def test_password_rules(tmp_path: pathlib.Path) -> None:
    secret_file = write(tmp_path, "pw", "file-secret-7f3a\n")
    env = {
        "MQTT__USERNAME": "u",
        "MQTT__PASSWORD": "p-9b1c",
        "MQTT__PASSWORD_FILE": str(secret_file),
    }
    err = load_error(environ=env)
    assert err.key == "mqtt.password_file"
    assert "both set" in str(err)
    err = load_error(environ={"MQTT__PASSWORD": "p-9b1c"})
    assert (err.key, err.expected) == ("mqtt.username", "a user name when a password is set")
    assert "p-9b1c" not in str(err)


def test_password_file_is_read_and_registered(tmp_path: pathlib.Path) -> None:
    secret_file = write(tmp_path, "pw", "file-secret-5e2d\n")
    env = {"MQTT__USERNAME": "u", "MQTT__PASSWORD_FILE": str(secret_file)}
    s = Settings.load(env_file=None, environ=env)
    assert s.mqtt.resolved_password() == "file-secret-5e2d"
    assert redact("x file-secret-5e2d y") == "x *** y"
    assert MqttSettings(password="direct-4c4c").resolved_password() == "direct-4c4c"
    assert MqttSettings().resolved_password() is None


def test_unreadable_password_file(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope"
    err = load_error(environ={"MQTT__USERNAME": "u", "MQTT__PASSWORD_FILE": str(missing)})
    assert (err.source, err.key) == ("environment", "mqtt.password_file")
    assert err.expected == "a readable file holding the password"
    with pytest.raises(ConfigError, match=r"mqtt\.password_file"):
        MqttSettings(username="u", password_file=str(missing)).resolved_password()


def test_validate_hook_on_a_subclass(tmp_path: pathlib.Path) -> None:
    class Windowed(Settings):
        start: int = 0
        end: int = 10

        def validate(self) -> None:
            if self.start >= self.end:
                raise ConfigError(key="start", expected="less than end", found=str(self.start))

    path = write(tmp_path, "a.toml", "start = 20\n")
    assert str(load_error(Windowed, config_file=path)) == (
        f"{path}: start: expected less than end, found 20"
    )


# --------------------------------------------------------------------------- secrets in output


def test_secrets_are_hidden_in_repr_dict_and_errors(tmp_path: pathlib.Path) -> None:
    m = MqttSettings(username="u", password="hidden-1a2b")
    assert "hidden-1a2b" not in repr(m)
    assert "password='***'" in repr(m)
    assert m.to_dict()["password"] == "***"
    assert m.to_dict(redact=False)["password"] == "hidden-1a2b"
    assert MqttSettings().to_dict()["password"] is None
    s = MyAppSettings(api_token="tok-3c3c")
    assert s.to_dict()["api_token"] == "***"
    assert s.to_dict()["data_dir"] == "/var/lib/myapp"
    path = write(tmp_path, "a.toml", "[mqtt]\npassword = 123456\n")
    err = load_error(config_file=path)
    assert err.found == "an integer (value hidden)"
    assert "123456" not in str(err)


def test_load_registers_secrets_for_log_redaction() -> None:
    env = {
        "MYAPP_API_TOKEN": "tok-8e8e",
        "MYAPP_MQTT__USERNAME": "u",
        "MYAPP_MQTT__PASSWORD": "pw-8f8f",
    }
    MyAppSettings.load(env_file=None, environ=env)
    assert redact("tok-8e8e and pw-8f8f") == "*** and ***"


def test_equality_by_value() -> None:
    assert Settings() == Settings()
    assert MqttSettings(port=1) != MqttSettings(port=2)


# --------------------------------------------------------------------------- client id


def test_default_client_id_shape(tmp_path: pathlib.Path) -> None:
    machine_id = write(tmp_path, "machine-id", "0123456789abcdef0123456789abcdef\n")
    cid = default_client_id("agent", machine_id_file=machine_id, hostname="pi")
    digest = hashlib.sha256(b"0123456789abcdef0123456789abcdef\0agent").hexdigest()[:8]
    assert cid == f"agent-pi-{digest}"
    # Stable across calls (restarts), different per app.
    assert default_client_id("agent", machine_id_file=machine_id, hostname="pi") == cid
    other = default_client_id("other", machine_id_file=machine_id, hostname="pi")
    assert other.rsplit("-", 1)[1] != digest


def test_default_client_id_is_short_and_safe(tmp_path: pathlib.Path) -> None:
    machine_id = write(tmp_path, "machine-id", "abc\n")
    for prefix, host in [
        ("agent", "raspberrypi-living-room.local"),
        ("my application with spaces", "h"),
        ("", "x.y"),
        ("a" * 30, "b" * 30),
    ]:
        cid = default_client_id(prefix, machine_id_file=machine_id, hostname=host)
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,23}", cid), cid
    cid = default_client_id("agent", machine_id_file=machine_id, hostname="raspberrypi.local")
    assert cid.startswith("agent-raspberr-")  # hostname cut to fit 23 characters


def test_default_client_id_falls_back_to_hostname(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "none"
    a = default_client_id("agent", machine_id_file=missing, hostname="host-a")
    b = default_client_id("agent", machine_id_file=missing, hostname="host-b")
    assert a.rsplit("-", 1)[1] != b.rsplit("-", 1)[1]
    assert a == default_client_id("agent", machine_id_file=missing, hostname="host-a")


def test_default_client_id_real_host() -> None:
    cid = default_client_id("agent")
    assert re.fullmatch(r"agent-[A-Za-z0-9_-]*[0-9a-f]{8}", cid)
    assert len(cid) <= 23
    assert os.path.basename(cid) == cid


def test_read_toml_without_a_schema(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "agent.toml", 'app = "mod:app"\n[anything]\nx = 1\n')
    assert read_toml(path) == {"app": "mod:app", "anything": {"x": 1}}
    bad = write(tmp_path, "bad.toml", "x = \n")
    with pytest.raises(ConfigError) as info:
        read_toml(bad)
    assert info.value.line == 1


def test_section_name_alone_in_environment_is_an_error() -> None:
    err = load_error(environ={"MQTT": "broker"})
    assert err.source == "environment"
    assert err.variable == "MQTT"
    assert "unknown setting" in str(err)


# --------------------------------------------------------------------------- hostile files

DEEP = 5000  # far beyond Python's recursion limit, as a hostile or generated file may be

HOSTILE_TOML = [
    ("nested arrays", "a = " + "[" * DEEP + "]" * DEEP + "\n", "nested too deeply"),
    (
        "nested inline tables",
        "a = " + "{b = " * DEEP + "1" + "}" * DEEP + "\n",
        "nested too deeply",
    ),
    ("deep table header", "[" + ".".join(["a"] * DEEP) + "]\n", "nested too deeply"),
    ("5000-digit integer", "a = " + "7" * DEEP + "\n", "integer too large"),
]


@pytest.mark.parametrize(
    ("case", "text", "why"), HOSTILE_TOML, ids=[case for case, _, _ in HOSTILE_TOML]
)
def test_hostile_toml_is_a_config_error_naming_the_file(
    tmp_path: pathlib.Path, case: str, text: str, why: str
) -> None:
    path = write(tmp_path, "agent.toml", 'app = "x:app"\n' + text)
    with pytest.raises(ConfigError) as info:
        read_toml(path)  # what the agent command reads first, for `app`
    assert str(info.value).startswith(f"{path}: invalid TOML: {why}")
    err = load_error(config_file=path)
    assert err.source == str(path)
    assert str(err).startswith(f"{path}: invalid TOML: {why}")
    assert len(str(err)) < 200


def test_nesting_limit_is_exactly_one_hundred_levels(tmp_path: pathlib.Path) -> None:
    # The file's root table is the first level: 99 arrays inside it make 100.
    ok = write(tmp_path, "ok.toml", "a = " + "[" * 99 + "]" * 99 + "\n")
    assert "a" in read_toml(ok)
    deep = write(tmp_path, "deep.toml", "a = " + "[" * 100 + "]" * 100 + "\n")
    with pytest.raises(ConfigError, match=r"nested too deeply \(at most 100 levels"):
        read_toml(deep)


def test_huge_values_are_shown_short(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "a.toml", "[mqtt]\nport = " + "9" * 70 + "\n")
    err = load_error(config_file=path)
    assert err.key == "mqtt.port"
    assert err.found == "9" * 57 + "..."
    path = write(tmp_path, "a.toml", "[mqtt]\nport = " + "9" * 4000 + "\n")
    assert re.fullmatch(r"an integer of about 4\d\d\d digits", load_error(config_file=path).found)
    path = write(
        tmp_path, "b.toml", '[mqtt]\nhost = "' + "h" * 100_000 + '"\n[logging]\nlevel = 1\n'
    )
    assert len(load_error(config_file=path).found) <= 60
    # Too many digits for repr() itself: only code can build such a value.
    with pytest.raises(ConfigError) as info:
        MqttSettings(port=10**5000)
    assert re.fullmatch(r"an integer of about 5\d\d\d digits", info.value.found)


class Crashing(Settings):
    """A settings class whose own code fails on values it did not foresee."""

    start: int = 0
    label: Annotated[str, Check(lambda v: v[0].isupper(), "a capitalised word")] = "X"
    token: Annotated[str | None, SECRET, Check(lambda v: int(v) > 0, "a number")] = None

    def validate(self) -> None:
        if self.token is not None and self.start == 13:
            raise RuntimeError(f"unlucky with token {self.token}")
        _ = 100 // self.start


def test_a_crashing_validate_hook_is_a_config_error_naming_the_file(
    tmp_path: pathlib.Path,
) -> None:
    path = write(tmp_path, "a.toml", "start = 0\n")
    err = load_error(Crashing, config_file=path)
    assert str(err) == (
        f"{path}: Crashing.validate() failed: ZeroDivisionError: integer division or modulo by zero"
    )
    assert isinstance(err.__cause__, ZeroDivisionError)  # kept for a debugger
    # The hook's message may quote a secret: it is hidden.
    path = write(tmp_path, "b.toml", 'start = 13\ntoken = "12345"\n')
    err = load_error(Crashing, config_file=path)
    assert "12345" not in str(err)
    assert "unlucky with token ***" in str(err)


class Fragile(Section):
    ratio: float = 1.0

    def validate(self) -> None:
        _ = 1 / self.ratio


class WithFragile(Settings):
    fragile: Fragile = Fragile()


def test_a_crashing_section_hook_blames_a_value_of_that_section(tmp_path: pathlib.Path) -> None:
    toml = write(tmp_path, "a.toml", "[fragile]\nratio = 0\n")
    err = load_error(WithFragile, config_file=toml, environ={"MQTT__HOST": "h"})
    assert (err.source, err.key) == (str(toml), "fragile")
    assert "Fragile.validate() failed: ZeroDivisionError" in str(err)


def test_a_crashing_check_is_a_config_error_naming_file_and_key(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "a.toml", 'start = 1\nlabel = ""\n')
    err = load_error(Crashing, config_file=path)
    assert (err.source, err.key, err.line) == (str(path), "label", None)
    assert (
        str(err) == f"{path}: label: cannot use this value: IndexError: string index out of range"
    )
    # A secret's check may quote the value in its message: only the type is shown.
    env = write(tmp_path, "a.env", "start=1\nTOKEN=not-a-number-4d4d\n")
    err = load_error(Crashing, env_file=env)
    assert str(err) == f"{env}: line 2: token (TOKEN): cannot use this value: ValueError"


def test_nothing_but_config_error_leaves_load(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.settings.model

    def broken(*args: object) -> None:
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(agent.settings.model, "_read_environ", broken)
    path = write(tmp_path, "a.toml", "")
    err = load_error(config_file=path)
    assert str(err) == f"{path}: cannot load the settings: RuntimeError: a bug over two lines"
    assert (
        str(load_error())
        == "settings: cannot load the settings: RuntimeError: a bug over two lines"
    )


# --------------------------------------------------------------------------- topic prefix


BAD_PREFIXES = [
    ("a//b", "level 2 '' is empty"),
    ("/a", "level 1 '' is empty"),
    ("a/", "level 2 '' is empty"),
    ("", "level 1 '' is empty"),
    ("a/ b", "level 2 ' b' has leading or trailing whitespace"),
    (" a", "level 1 ' a' has leading or trailing whitespace"),
    ("a ", "level 1 'a ' has leading or trailing whitespace"),
    ("a\x01b", "level 1 'a\\x01b' contains the control character U+0001"),
    ("a\nb", "level 1 'a\\nb' contains the control character U+000A"),
    ("a\0b", "level 1 'a\\x00b' contains a NUL character"),
    ("home/+", "level 2 '+' contains an MQTT wildcard '+'"),
    ("home/#", "level 2 '#' contains an MQTT wildcard '#'"),
    ("$SYS/x", "level 1 '$SYS' starts with '$'"),
]


@pytest.mark.parametrize(("prefix", "reason"), BAD_PREFIXES)
def test_bad_topic_prefix_in_toml(tmp_path: pathlib.Path, prefix: str, reason: str) -> None:
    path = write(tmp_path, "a.toml", f"[mqtt]\ntopic_prefix = {json.dumps(prefix)}\n")
    err = load_error(config_file=path)
    assert (err.source, err.key) == (str(path), "mqtt.topic_prefix")
    assert err.expected == (
        "one or more topic levels separated by '/', each non-empty, without '+', '#', NUL or "
        "control characters and without leading or trailing spaces, the first not starting "
        "with '$'"
    )
    assert err.found.startswith(json.dumps(prefix, ensure_ascii=False) + " (")
    assert reason in err.found
    assert "\n" not in str(err)


@pytest.mark.parametrize(("prefix", "reason"), [p for p in BAD_PREFIXES if p[0].strip("\n ")])
def test_bad_topic_prefix_in_the_environment(prefix: str, reason: str) -> None:
    if "\0" in prefix:
        return  # no environment variable can hold a NUL; the TOML test covers it
    err = load_error(environ={"MQTT__TOPIC_PREFIX": prefix})
    assert (err.source, err.key, err.variable) == (
        "environment",
        "mqtt.topic_prefix",
        "MQTT__TOPIC_PREFIX",
    )
    assert reason in err.found


@pytest.mark.parametrize("prefix", ["gas2mqtt", "home/gas", "a b/c", "x$", "a/$b", "Gaszähler"])
def test_good_topic_prefixes(prefix: str) -> None:
    assert Settings.load(
        env_file=None, environ={"MQTT__TOPIC_PREFIX": prefix}
    ).mqtt.topic_prefix == (prefix)


@given(st.text(alphabet=st.sampled_from("ab/ +#$\0\x01\t\u00a0é"), max_size=8))
def test_settings_accept_exactly_the_prefixes_topics_accepts(prefix: str) -> None:
    try:
        validate_prefix(prefix)
        runtime_accepts = True
    except ValueError:
        runtime_accepts = False
    try:
        MqttSettings(topic_prefix=prefix).validate()
        settings_accept = True
    except ConfigError as err:
        assert err.key == "topic_prefix"
        settings_accept = False
    assert settings_accept is runtime_accepts


# --------------------------------------------------------------------------- readable secrets


def chmod(path: pathlib.Path, mode: int) -> pathlib.Path:
    path.chmod(mode)
    return path


def test_world_readable_config_file_with_a_password_warns_once(tmp_path: pathlib.Path) -> None:
    text = '[mqtt]\nusername = "u"\npassword = "pw-6a6a"\n'
    path = chmod(write(tmp_path, "agent.toml", text), 0o644)
    s = Settings.load(config_file=path, env_file=None, environ={})
    (warning,) = s.load_warnings()
    assert warning == (
        f"{path} holds mqtt.password and other users can read it (mode 0644): run "
        f"chmod 0640 {path} if its group is the service's (e.g. root:agent), "
        f"else chmod 0600 {path}"
    )
    assert "pw-6a6a" not in warning


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o660, 0o400], ids=oct)
def test_a_file_others_cannot_read_does_not_warn(tmp_path: pathlib.Path, mode: int) -> None:
    text = '[mqtt]\nusername = "u"\npassword = "pw-6b6b"\n'
    path = chmod(write(tmp_path, "agent.toml", text), mode)
    s = Settings.load(config_file=path, env_file=None, environ={})
    assert s.load_warnings() == []


def test_world_readable_dotenv_with_a_password_warns(tmp_path: pathlib.Path) -> None:
    toml = chmod(write(tmp_path, "agent.toml", '[mqtt]\nhost = "h"\n'), 0o644)  # no secret
    env = chmod(write(tmp_path, "my env", "MQTT__USERNAME=u\nMQTT__PASSWORD=pw-6c6c\n"), 0o604)
    s = Settings.load(config_file=toml, env_file=env, environ={})
    (warning,) = s.load_warnings()
    assert warning.startswith(f"{env} holds mqtt.password and other users can read it (mode 0604)")
    assert f"chmod 0600 '{env}'" in warning  # quoted for a shell: the name has a space


def test_a_password_overridden_elsewhere_still_warns_for_its_file(tmp_path: pathlib.Path) -> None:
    text = '[mqtt]\nusername = "u"\npassword = "pw-6d6d"\n'
    path = chmod(write(tmp_path, "agent.toml", text), 0o644)
    s = Settings.load(config_file=path, env_file=None, environ={"MQTT__PASSWORD": "other"})
    assert s.mqtt.password == "other"
    assert len(s.load_warnings()) == 1 and str(path) in s.load_warnings()[0]


def test_secrets_from_the_environment_or_empty_do_not_warn(tmp_path: pathlib.Path) -> None:
    path = chmod(write(tmp_path, "agent.toml", '[mqtt]\nusername = "u"\n'), 0o644)
    environ = {"MQTT__PASSWORD": "pw-6e6e"}
    assert Settings.load(config_file=path, env_file=None, environ=environ).load_warnings() == []
    env = chmod(write(tmp_path, "a.env", "MQTT__PASSWORD=\n"), 0o644)  # clears it
    assert Settings.load(config_file=path, env_file=env, environ={}).load_warnings() == []


def test_world_readable_password_file_warns(tmp_path: pathlib.Path) -> None:
    secret = chmod(write(tmp_path, "mqtt.pw", "pw-6f6f\n"), 0o644)
    environ = {"MQTT__USERNAME": "u", "MQTT__PASSWORD_FILE": str(secret)}
    s = Settings.load(env_file=None, environ=environ)
    (warning,) = s.load_warnings()
    assert warning == (
        f"{secret} (mqtt.password_file) holds a secret and other users can read it "
        f"(mode 0644): run chmod 0640 {secret} if its group is the service's "
        f"(e.g. root:agent), else chmod 0600 {secret}"
    )
    assert "pw-6f6f" not in warning
    chmod(secret, 0o640)
    assert Settings.load(env_file=None, environ=environ).load_warnings() == []


def test_one_warning_per_file_for_own_secret_fields(tmp_path: pathlib.Path) -> None:
    class Tokens(Settings):
        api_token: Annotated[str | None, SECRET] = None
        key_path: Annotated[str | None, SECRET_FILE] = None

    key = chmod(write(tmp_path, "api.key", "k"), 0o666)
    text = f'api_token = "t-7a7a"\nkey_path = "{key}"\n[mqtt]\nusername = "u"\npassword = "p"\n'
    path = chmod(write(tmp_path, "agent.toml", text), 0o644)
    warnings = Tokens.load(config_file=path, env_file=None, environ={}).load_warnings()
    assert len(warnings) == 2
    assert warnings[0].startswith(f"{path} holds api_token, mqtt.password and other users")
    assert warnings[1].startswith(f"{key} (key_path) holds a secret and other users can read it")


def test_load_warnings_is_empty_in_code_and_a_copy(tmp_path: pathlib.Path) -> None:
    assert Settings().load_warnings() == []
    path = chmod(write(tmp_path, "a.toml", '[mqtt]\nusername = "u"\npassword = "p"\n'), 0o644)
    s = Settings.load(config_file=path, env_file=None, environ={})
    s.load_warnings().clear()
    assert len(s.load_warnings()) == 1
    assert "_load_warnings" not in s.to_dict()
