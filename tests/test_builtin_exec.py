"""The ``exec`` and ``exec_command`` built-ins, with real programs in real subprocesses.

Each device is checked and registered as the daemon does it (``check`` then ``register`` on
a Router included in an App) and run by the testing kit's AppHarness, on a mock MQTT client
and a fake clock; the programs themselves are real and run in real time, so every timeout
here is a fraction of a second. Shell one-liners appear only as the *configured* command —
that is config, written by the Pi's owner — never as anything a payload could reach.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from builtin_helpers import check, checked

from agent import App, Entity
from agent.daemon.builtins import BUILTINS
from agent.daemon.builtins.exec import (
    DEFAULT_PATH,
    EXEC,
    EXEC_COMMAND,
    MAX_OUTPUT,
    CommandOptions,
    parse_json,
    parse_number,
    run_program,
)
from agent.daemon.config import check_config
from agent.daemon.types import DeviceSpec
from agent.router import Router
from agent.settings import ConfigError
from agent.testing import AppHarness

ENV = {"PATH": DEFAULT_PATH, "LC_ALL": "C.UTF-8"}


def build(device_type: Any, options: Mapping[str, Any], *, name: str = "dev", **common: Any) -> App:
    """An App with one built-in device, checked and registered as the daemon does."""
    router = Router("built-in devices")
    common.setdefault("interval", device_type.default_interval)  # as the daemon's check does
    spec = DeviceSpec(key="device[1]", type=device_type.name, name=name, options=options, **common)
    device_type.register(router, spec, checked(device_type, options))
    app = App("agent", heartbeat_interval=None)
    app.include_router(router)
    return app


@pytest.fixture
def start() -> Iterator[Callable[..., AppHarness]]:
    """``start(type, options, name=..., interval=..., retry=...)``: the device running."""
    running: list[AppHarness] = []

    def start(device_type: Any, options: Mapping[str, Any], **common: Any) -> AppHarness:
        h = AppHarness(build(device_type, options, **common), raise_errors=False)
        running.append(h)
        return h.start()

    yield start
    for h in running:
        h.stop()


def errors(h: AppHarness, device: str = "dev") -> list[dict[str, Any]]:
    return [m.json() for m in h.messages_for(f"agent/{device}/error")]


def states(h: AppHarness, device: str = "dev") -> list[dict[str, Any]]:
    return [m.json() for m in h.messages_for(f"agent/{device}/state")]


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a parent that never reaps counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def sh(script: str, *args: str) -> list[str]:
    return ["/bin/sh", "-c", script, "sh", *args]


# -- exec: readings ---------------------------------------------------------------------


def test_a_number_is_published_under_value_as_an_integer(start) -> None:
    h = start(EXEC, {"command": ["/bin/echo", "42"]})
    assert states(h) == [{"value": 42}]
    assert isinstance(h.last_state("dev")["value"], int)  # type: ignore[index]


def test_scale_and_offset_and_the_home_assistant_sensor(start) -> None:
    options = {
        "command": ["/usr/bin/printf", "45250\n"],
        "field": "temperature",
        "scale": 0.001,
        "offset": -0.25,
        "unit": "°C",
        "device_class": "temperature",
        "icon": "mdi:thermometer",
    }
    h = start(EXEC, options)
    h.assert_state("dev", {"temperature": 45.0})
    assert h.app.registry.get("dev").entities == (  # type: ignore[union-attr]
        Entity(
            "temperature",
            name="",
            unit="°C",
            device_class="temperature",
            state_class="measurement",
            icon="mdi:thermometer",
        ),
    )


def test_a_json_object_is_the_state_and_declares_no_entity(start) -> None:
    script = 'printf \'{"temperature": 21.5, "door": {"open": false}}\''
    h = start(EXEC, {"command": sh(script), "parse": "json"})
    assert states(h) == [{"temperature": 21.5, "door": {"open": False}}]
    assert h.app.registry.get("dev").entities == ()  # type: ignore[union-attr]


def test_each_interval_runs_the_program_again(start, tmp_path: Path) -> None:
    reading = tmp_path / "reading"
    reading.write_text("1\n")
    h = start(EXEC, {"command": ["/bin/cat", str(reading)]}, interval=30)
    reading.write_text("2\n")
    h.advance(29.999)
    assert states(h) == [{"value": 1}]
    h.advance(0.001)
    assert states(h) == [{"value": 1}, {"value": 2}]


def test_invalid_output_is_an_error_payload_and_the_device_goes_on(start, tmp_path) -> None:
    reading = tmp_path / "reading"
    reading.write_text("21,5\n")  # a German locale's decimal comma
    h = start(EXEC, {"command": ["/bin/cat", str(reading)]}, interval=30)
    [error] = errors(h)
    assert error["message"] == '/bin/cat printed "21,5", not a number'
    assert states(h) == []
    reading.write_text("21.5\n")
    h.advance(30)
    assert states(h) == [{"value": 21.5}]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (b"", "printed nothing, not a number"),
        (b"  \n", "printed nothing, not a number"),
        (b"abc", 'printed "abc", not a number'),
        (b"nan", 'printed "nan", not a number'),
        (b"inf", 'printed "inf", not a number'),
        (b"42 \xc2\xb0C", 'printed "42 °C", not a number'),
        (b"1\n2\n", 'printed "1\\n2", not a number'),
        (b"4\x002", 'printed "4\\u00002", not a number'),
        (b"0x1f", 'printed "0x1f", not a number'),
        (b"1_000", 'printed "1_000", not a number'),
        (b"\xff\xfe", "printed bytes that are not UTF-8 text (invalid start byte at byte 0)"),
        (b"1e999", 'printed "1e999", out of range'),
        (b"9" * 5000, '...", out of range'),
    ],
)
def test_what_is_not_one_number(output: bytes, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_number("/bin/x", output, scale=1, offset=0.5)
    assert message in str(info.value)
    assert len(str(info.value)) < 200  # one short line, whatever was printed


@pytest.mark.parametrize(
    ("output", "value"),
    [(b"42\n", 42), (b" -7 ", -7), (b"+3.5", 3.5), (b".5", 0.5), (b"1e3", 1000.0)],
)
def test_numbers(output: bytes, value: float) -> None:
    assert parse_number("/bin/x", output, scale=1, offset=0) == value


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (b"[1, 2]", "printed a JSON list, not an object"),
        (b'"text"', "printed a JSON str, not an object"),
        (b"", "printed no valid JSON"),
        (b'{"a": 1} {"b": 2}', "printed no valid JSON: Extra data"),
        (b'{"a": NaN}', "NaN is not a number JSON allows"),
        (b'{"a": -Infinity}', "-Infinity is not a number JSON allows"),
        (b"[" * 200_000, "nested too deeply"),
        (b'{"a": "\xff"}', "not UTF-8 text"),
    ],
)
def test_what_is_not_one_json_object(output: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=r"^/bin/x ") as info:
        parse_json("/bin/x", output)
    assert message in str(info.value)


# -- exec: failures -------------------------------------------------------------------------


def test_a_non_zero_exit_names_the_program_its_status_and_stderr_not_its_arguments(
    start,
) -> None:
    script = 'echo "starting" >&2; echo "no sensor on bus 1" >&2; exit 3'
    h = start(EXEC, {"command": sh(script, "--token=s3cret"), "env": {"TOKEN": "s3cret"}})
    [error] = errors(h)
    assert error["message"] == "/bin/sh exited with status 3: no sensor on bus 1"
    assert "s3cret" not in json.dumps(error)
    assert states(h) == []


def test_a_program_killed_by_a_signal_says_which() -> None:
    outcome = run_program(sh("kill -SEGV $$"), timeout=5, env=ENV)
    assert outcome.status == -11


def test_a_failure_is_retried_as_an_oserror(start, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    h = start(EXEC, {"command": sh(f"echo run >> {runs}; exit 1")}, retry=2)
    assert runs.read_text().count("run") == 1
    h.advance(10)  # two back-offs of about 2 and 4 s
    assert runs.read_text().count("run") == 3
    assert len(errors(h)) == 1  # one report per streak


def test_a_timeout_kills_the_whole_process_group(start, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"echo $$ > {pids}; sleep 30 & echo $! >> {pids}; wait"
    h = start(EXEC, {"command": sh(script), "timeout": 0.3})
    [error] = errors(h)
    assert error["message"] == "/bin/sh did not finish within 0.3 s: killed"
    shell, child = (int(pid) for pid in pids.read_text().split())
    assert gone(shell) and gone(child)


def test_a_timeout_is_a_timeout_error_so_retry_applies() -> None:
    with pytest.raises(TimeoutError):
        run_program(["/bin/sleep", "30"], timeout=0.2, env=ENV)


def test_too_much_output_kills_the_program(start, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"echo $$ > {pids}; while :; do echo 1111111111111111111111111111111; done"
    h = start(EXEC, {"command": sh(script)})
    [error] = errors(h)
    assert error["message"] == (
        f"/bin/sh printed more than {MAX_OUTPUT} bytes: killed (a reading is one number or "
        "one JSON object)"
    )
    assert gone(int(pids.read_text()))


def test_output_up_to_the_limit_is_read_whole() -> None:
    outcome = run_program(["/usr/bin/head", "-c", str(MAX_OUTPUT), "/dev/zero"], timeout=5, env=ENV)
    assert len(outcome.stdout) == MAX_OUTPUT


def test_only_the_tail_of_stderr_is_kept() -> None:
    outcome = run_program(sh("head -c 1000000 /dev/zero >&2; echo last >&2"), timeout=5, env=ENV)
    assert len(outcome.stderr) == 4096 and outcome.stderr.endswith(b"\0last\n")


def test_a_program_that_vanished_after_the_check_is_an_oserror(tmp_path: Path) -> None:
    program = tmp_path / "reader"
    program.write_text("#!/bin/sh\necho 1\n")
    program.chmod(0o755)
    options = checked(EXEC, {"command": [str(program)]})
    program.unlink()
    with pytest.raises(OSError, match=f"cannot start {program}: No such file or directory"):
        options.reading(5)()


# -- exec: what the program gets ------------------------------------------------------------


def test_the_environment_is_clean_and_the_env_table_is_added(
    start, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AGENT_MQTT__PASSWORD", "hunter2")
    script = (
        'printf \'{"path": "%s", "locale": "%s", "tz": "%s", "password": "%s", "cwd": "%s"}\' '
        '"$PATH" "$LC_ALL" "$TZ" "${AGENT_MQTT__PASSWORD-unset}" "$(pwd)"'
    )
    options = {"command": sh(script), "parse": "json", "env": {"TZ": "UTC"}, "cwd": str(tmp_path)}
    h = start(EXEC, options)
    assert states(h) == [
        {
            "path": DEFAULT_PATH,
            "locale": "C.UTF-8",
            "tz": "UTC",
            "password": "unset",
            "cwd": str(tmp_path),
        }
    ]


def test_stdin_is_empty() -> None:
    assert run_program(["/bin/cat"], timeout=5, env=ENV).stdout == b""


def test_a_program_name_is_looked_up_on_the_child_path_at_check_time() -> None:
    options = checked(EXEC, {"command": ["echo", "1"]})
    assert options.argv == (shutil.which("echo", path=DEFAULT_PATH), "1")
    assert os.path.isabs(options.argv[0])


def test_the_default_timeout_is_10_s_or_half_a_short_interval(start) -> None:
    options = checked(EXEC, {"command": ["/bin/echo", "1"]})
    assert options.timeout_for(60) == 10 and options.timeout_for(5) == 2.5
    h = start(EXEC, {"command": ["/bin/sleep", "30"]}, interval=0.4)
    [error] = errors(h)
    assert error["message"] == "/bin/sleep did not finish within 0.2 s: killed"


def test_a_timeout_not_below_the_interval_is_a_config_error() -> None:
    spec = DeviceSpec(key="device[3]", type="exec", name="dev", interval=10)
    options = checked(EXEC, {"command": ["/bin/echo", "1"], "timeout": 10})
    with pytest.raises(ConfigError) as info:
        EXEC.register(Router("r"), spec, options)
    assert str(info.value) == (
        "settings: device[3].timeout: expected seconds below the device's interval (10), found 10.0"
    )


# -- exec: check-time mistakes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key", "expected", "found"),
    [
        ({}, "command", "the program and its arguments, a list like", "nothing"),
        ({"command": "ls -l"}, "command", "(no shell: a string is never split)", '"ls -l"'),
        ({"command": []}, "command", "a list like", "a list"),
        ({"command": [1]}, "command[1]", "a string (without NUL)", "1"),
        ({"command": [""]}, "command[1]", "a string (without NUL)", '""'),
        ({"command": ["/bin/echo", "a\0b"]}, "command[2]", "without NUL", '"a\\u0000b"'),
        ({"command": ["bin/echo"]}, "command[1]", "an absolute path or a program name", ""),
        (
            {"command": ["no-such-program-here"]},
            "command[1]",
            "found on PATH",
            f'"no-such-program-here" (not found in {DEFAULT_PATH})',
        ),
        (
            {"command": ["/no/such/program"]},
            "command[1]",
            "an executable program",
            '"/no/such/program" (no such program)',
        ),
        ({"comand": []}, "comand", 'did you mean "command"?', "an unknown key"),
        ({"parse": "jsn"}, "parse", 'one of "number", "json" (did you mean "json"?)', '"jsn"'),
        ({"parse": "json", "scale": 2}, "scale", 'nothing with parse = "json"', "2"),
        ({"parse": "json", "unit": "W"}, "unit", 'nothing with parse = "json"', '"W"'),
        ({"timeout": 0}, "timeout", "seconds, a number > 0", "0"),
        ({"timeout": "5"}, "timeout", "seconds, a number > 0", '"5"'),
        ({"field": "a.b"}, "field", "a state key: letters, digits and _", '"a.b"'),
        ({"scale": 0}, "scale", "a number not 0", "0"),
        ({"icon": "thermometer"}, "icon", 'an icon name like "mdi:thermometer"', ""),
        ({"env": ["A=1"]}, "env", 'a table like { TZ = "UTC" }', "a list"),
        ({"env": {"A-B": "1"}}, "env.A-B", "a variable name", '"A-B"'),
        ({"env": {"A": 1}}, "env.A", "a string (without NUL)", "1"),
        ({"cwd": "tmp"}, "cwd", "an absolute path (starting with /)", '"tmp"'),
        ({"cwd": "/no/such/folder"}, "cwd", "an existing folder", "(no such folder)"),
    ],
)
def test_exec_mistakes_are_reported(
    options: dict[str, Any], key: str, expected: str, found: str
) -> None:
    if not key.startswith("command") and "command" not in options:
        options = {"command": ["/bin/echo", "1"], **options}
    result, problems = check(EXEC, options)
    assert result is None
    assert [p[0] for p in problems] == [key], problems
    assert expected in problems[0][1] and found in problems[0][2], problems


def test_a_file_that_is_not_executable_is_no_program(tmp_path: Path) -> None:
    text = tmp_path / "reading.txt"
    text.write_text("42\n")
    text.chmod(0o644)
    result, problems = check(EXEC, {"command": [str(text)]})
    assert result is None
    [(key, expected, found)] = problems
    assert (key, expected) == ("command[1]", "an executable program")
    assert found.endswith(" (not executable)")


def test_every_mistake_of_a_config_file_is_listed_with_its_place(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        "[[device]]\n"
        'type = "exec"\n'
        'command = ["/bin/echo", "1"]\n'
        "\n"
        "[[device]]\n"
        'type = "exec"\n'
        'name = "gpu"\n'
        'command = ["vcgencmd-nowhere", "measure_temp"]\n'
        'parse = "json"\n'
        "scale = 0.001\n"
        "\n"
        "[[device]]\n"
        'type = "exec_command"\n'
        'commands = { reboot = "/sbin/reboot" }\n'
    )
    result, problems = check_config(config, env_file=None, environ={})
    assert result is None
    assert [str(p) for p in problems] == [
        f"{config}: device[2].command[1]: expected an absolute path or a program name found on "
        f'PATH, found "vcgencmd-nowhere" (not found in {DEFAULT_PATH})',
        f'{config}: device[2].scale: expected nothing with parse = "json" (the object is '
        "published as it is), found 0.001",
        f"{config}: device[3].commands.reboot: expected the program and its arguments, a list "
        'like ["/usr/bin/vcgencmd", "measure_temp"] (no shell: a string is never split), '
        'found "/sbin/reboot"',
    ]


def test_both_types_are_built_ins() -> None:
    assert BUILTINS["exec"] is EXEC and BUILTINS["exec_command"] is EXEC_COMMAND
    assert EXEC.default_interval == 60 and EXEC_COMMAND.default_interval is None


# -- exec_command ---------------------------------------------------------------------------


@pytest.fixture
def stamps(tmp_path: Path) -> Path:
    return tmp_path / "stamps"


@pytest.fixture
def commands(tmp_path: Path, stamps: Path) -> dict[str, Any]:
    """Two entries that leave a trace in ``stamps``, run in ``tmp_path``."""
    return {
        "commands": {
            "stamp": sh(f"echo stamp >> {stamps}; echo stamped"),
            "second-one": ["/bin/echo", "two"],
        },
        "cwd": str(tmp_path),
        "timeout": 5,
    }


def test_plain_text_or_json_chooses_an_entry(start, commands, stamps: Path) -> None:
    h = start(EXEC_COMMAND, commands, name="pi")
    assert states(h, "pi") == []  # nothing runs at start
    h.send_command("pi", "stamp")
    assert stamps.read_text() == "stamp\n"
    assert states(h, "pi") == [
        {"command": "stamp", "exit_code": 0, "output": "stamped", "result": "ok"}
    ]
    h.send_command("pi", '{"command": "stamp"}')
    h.send_command("pi", " second-one\n")
    assert stamps.read_text() == "stamp\nstamp\n"
    h.assert_state("pi", {"command": "second-one", "output": "two", "result": "ok"})
    assert errors(h, "pi") == []


HOSTILE: list[str | bytes] = [
    "; rm -rf /",
    "stamp; touch pwned",
    "stamp && touch pwned",
    "stamp | touch pwned",
    "$(touch pwned)",
    "`touch pwned`",
    "stamp\ntouch pwned",
    "stamp\0",
    "\0",
    "sta\0mp",
    "STAMP",
    "stamp stamp",
    "../stamp",
    "*",
    "-h",
    '"stamp"',
    '["stamp"]',
    '{"command": "stamp; touch pwned"}',
    '{"command": ["stamp"]}',
    '{"command": "stamp", "args": ["-rf", "/"]}',
    '{"cmd": "stamp"}',
    '{"command": "stamp"',
    "{}",
    "stamp" + " " * 2000 + "x",
    "s" * 100_000,
    "x" * (1024 * 1024),  # over the router's limit: refused before any handler
    b"\xff\xfe stamp",  # not UTF-8: refused before any handler
]


def test_hostile_payloads_start_nothing_and_are_reported(
    start, commands, stamps: Path, tmp_path: Path
) -> None:
    h = start(EXEC_COMMAND, commands, name="pi")
    for count, payload in enumerate(HOSTILE, start=1):
        h.advance(1)  # past the reporter's one report per second and error type
        h.send_command("pi", payload)
        reported = errors(h, "pi")
        assert len(reported) == count, payload
        error = reported[-1]
        assert error["error_type"] in ("invalid_payload", "payload_too_large"), error
        if error["error_type"] == "invalid_payload" and isinstance(payload, str):
            assert error["message"].startswith(
                'expected one of stamp, second-one (as plain text or as {"command": "<name>"})'
            ), error
            assert len(error["message"]) < 300
    assert not stamps.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert states(h, "pi") == []
    # Refused payloads are not failures of the device: it is never restarted or given up.
    h.send_command("pi", "stamp")
    assert stamps.read_text() == "stamp\n"
    h.assert_state("pi", {"command": "stamp", "result": "ok"})


def test_a_command_on_a_sub_topic_starts_nothing(start, commands, stamps: Path) -> None:
    h = start(EXEC_COMMAND, commands, name="pi")
    h.send_command("pi", "stamp", sub_topic="stamp")
    assert not stamps.exists()
    [error] = errors(h, "pi")
    assert "no handler for sub-topic 'stamp'" in error["message"]


def test_arguments_are_passed_as_they_are_never_to_a_shell(start, tmp_path: Path) -> None:
    literal = "$(touch pwned); touch pwned2 `touch pwned3` && $HOME *"
    options = {"commands": {"say": ["/bin/echo", literal]}, "cwd": str(tmp_path)}
    h = start(EXEC_COMMAND, options, name="pi")
    h.send_command("pi", "say")
    h.assert_state("pi", {"output": literal, "result": "ok"})
    assert list(tmp_path.iterdir()) == []


def test_a_failing_command_publishes_its_result_and_an_error(start) -> None:
    options = {"commands": {"fail": sh("echo partial; echo 'disk full' >&2; exit 3")}}
    h = start(EXEC_COMMAND, options, name="pi")
    h.send_command("pi", "fail")
    assert states(h, "pi") == [
        {"command": "fail", "exit_code": 3, "output": "partial", "result": "failed"}
    ]
    [error] = errors(h, "pi")
    assert error["message"] == "command 'fail': /bin/sh exited with status 3: disk full"


def test_a_command_past_its_timeout_is_killed_with_its_group(start, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"echo $$ > {pids}; sleep 30 & echo $! >> {pids}; echo waiting; wait"
    h = start(EXEC_COMMAND, {"commands": {"hang": sh(script)}, "timeout": 0.3}, name="pi")
    h.send_command("pi", "hang")
    assert states(h, "pi") == [
        {"command": "hang", "exit_code": None, "output": "", "result": "timeout"}
    ]
    [error] = errors(h, "pi")
    assert error["message"] == "/bin/sh did not finish within 0.3 s: killed"
    assert all(gone(int(pid)) for pid in pids.read_text().split())


def test_a_command_that_cannot_start_is_reported(start, tmp_path: Path) -> None:
    program = tmp_path / "script"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    h = start(EXEC_COMMAND, {"commands": {"go": [str(program)]}}, name="pi")
    program.chmod(0o644)
    h.send_command("pi", "go")
    h.assert_state("pi", {"command": "go", "result": "not_started", "exit_code": None})
    [error] = errors(h, "pi")
    assert error["message"] == f"cannot start {program}: Permission denied"


def test_only_the_last_line_of_long_output_is_kept(start) -> None:
    options = {"commands": {"noisy": sh("head -c 3000000 /dev/zero | tr '\\0' x; echo; echo done")}}
    h = start(EXEC_COMMAND, options, name="pi")
    h.send_command("pi", "noisy")
    h.assert_state("pi", {"output": "done", "result": "ok"})


def test_each_command_is_a_home_assistant_button() -> None:
    app = build(EXEC_COMMAND, {"commands": {"reboot": ["/bin/true"], "sync": ["/bin/sync"]}})
    assert app.registry.get("dev").entities == (  # type: ignore[union-attr]
        Entity("reboot", component="button", name="reboot", payload_on="reboot"),
        Entity("sync", component="button", name="sync", payload_on="sync"),
    )


def test_exec_command_options() -> None:
    options = checked(EXEC_COMMAND, {"commands": {"sync": ["sync", "-f", "/"]}})
    assert options == CommandOptions(
        {"sync": (shutil.which("sync", path=DEFAULT_PATH), "-f", "/")},
        timeout=30.0,
        env=ENV,
        cwd="/",
    )


@pytest.mark.parametrize(
    ("options", "key", "expected", "found"),
    [
        ({}, "commands", "a table of named programs like", "nothing"),
        ({"commands": {}}, "commands", "a table of named programs", "an empty table"),
        ({"commands": ["/sbin/reboot"]}, "commands", "a table of named programs", "a list"),
        ({"commands": {"re boot": ["/bin/true"]}}, "commands", "letters, digits, - and _", ""),
        ({"commands": {"a\0": ["/bin/true"]}}, "commands", "letters, digits", '"a\\u0000"'),
        ({"commands": {"x" * 65: ["/bin/true"]}}, "commands", "(at most 64 characters)", ""),
        ({"commands": {"go": []}}, "commands.go", "the program and its arguments", "a list"),
        ({"commands": {"go": ["nowhere-x"]}}, "commands.go[1]", "found on PATH", "not found"),
        ({"commands": {"go": ["/bin/true", 2]}}, "commands.go[2]", "a string", "2"),
        ({"commands": {"go": ["/bin/true"]}, "timeout": -1}, "timeout", "> 0", "-1"),
        ({"commands": {"go": ["/bin/true"]}, "parse": "json"}, "parse", "commands, timeout", ""),
        ({"commands": {"go": ["/bin/true"]}, "comands": 1}, "comands", 'mean "commands"', ""),
    ],
)
def test_exec_command_mistakes_are_reported(
    options: dict[str, Any], key: str, expected: str, found: str
) -> None:
    result, problems = check(EXEC_COMMAND, options)
    assert result is None
    assert [p[0] for p in problems] == [key], problems
    assert expected in problems[0][1] and found in problems[0][2], problems
