"""Logging: JSON and text lines, the rotating file, and secrets kept out of every line."""

from __future__ import annotations

import json
import logging
import pathlib
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from freezegun import freeze_time

import agent.logs
from agent.logs import JsonFormatter, configure_logging, register_secret
from agent.settings import ConfigError, LoggingSettings


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    """configure_logging replaces the root handlers; give pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if getattr(handler, "_agent_owned", False):
            handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def json_lines(text: str) -> list[dict[str, object]]:
    lines = text.splitlines()
    return [json.loads(line) for line in lines]


def test_json_line_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingSettings(), service="weather", version="1.2.3")
    with freeze_time("2026-11-24 05:00:00.123456"):
        logging.getLogger("agent.test").warning("hello %s", "world")
    (line,) = json_lines(capsys.readouterr().err)
    assert line == {
        "timestamp": "2026-11-24T05:00:00.123+00:00",
        "level": "WARNING",
        "logger": "agent.test",
        "message": "hello world",
        "service": "weather",
        "version": "1.2.3",
    }
    assert list(line)[:4] == ["timestamp", "level", "logger", "message"]


def test_version_omitted_when_empty_and_extras_kept(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingSettings(), service="svc")
    logging.getLogger("x").info("reading", extra={"device": "bme280", "value": 21.5})
    (line,) = json_lines(capsys.readouterr().err)
    assert "version" not in line
    assert (line["service"], line["device"], line["value"]) == ("svc", "bme280", 21.5)


def test_exception_and_stack_info_stay_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingSettings(), service="svc")
    log = logging.getLogger("x")
    try:
        raise ValueError("sensor gone")
    except ValueError:
        log.exception("read failed")
    log.info("where am I", stack_info=True)
    err = capsys.readouterr().err
    first, second = json_lines(err)
    assert first["level"] == "ERROR"
    assert str(first["exception"]).startswith("Traceback (most recent call last):")
    assert str(first["exception"]).endswith("ValueError: sensor gone")
    assert "stack_info" not in first
    assert "exception" not in second
    assert "test_exception_and_stack_info_stay_on_one_line" in str(second["stack_info"])


def test_level_filters_and_is_case_insensitive(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingSettings(level="warning"), service="svc")
    logging.getLogger("x").info("hidden")
    logging.getLogger("x").error("shown")
    lines = json_lines(capsys.readouterr().err)
    assert [line["message"] for line in lines] == ["shown"]
    assert logging.getLogger().level == logging.WARNING


def test_text_format_uses_utc(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingSettings(format="text"), service="svc")
    with freeze_time("2026-11-24 05:00:00.5"):
        logging.getLogger("agent.mqtt").info("connected to %s", "broker")
    assert capsys.readouterr().err == (
        "2026-11-24T05:00:00.500+00:00 INFO agent.mqtt: connected to broker\n"
    )


def test_configure_replaces_handlers() -> None:
    root = logging.getLogger()
    stray = logging.NullHandler()
    root.addHandler(stray)
    configure_logging(LoggingSettings(), service="svc")
    configure_logging(LoggingSettings(), service="svc")
    assert stray not in root.handlers
    assert len(root.handlers) == 1
    assert isinstance(root.handlers[0].formatter, JsonFormatter)


def test_rotating_file(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.log"
    settings = LoggingSettings(file=str(path), max_file_bytes=500, backup_count=2)
    configure_logging(settings, service="svc")
    log = logging.getLogger("rot")
    for i in range(40):
        log.info("line %03d", i)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["agent.log", "agent.log.1", "agent.log.2"]
    for name in names:
        assert (tmp_path / name).stat().st_size <= 500
    last = json_lines(path.read_text(encoding="utf-8"))[-1]
    assert last["message"] == "line 039"
    assert len(capsys.readouterr().err.splitlines()) == 40  # stderr gets everything too


def test_unwritable_log_file_is_a_config_error(tmp_path: pathlib.Path) -> None:
    settings = LoggingSettings(file=str(tmp_path / "no-such-dir" / "agent.log"))
    with pytest.raises(ConfigError) as info:
        configure_logging(settings, service="svc")
    assert info.value.key == "logging.file"
    assert "No such file or directory" in str(info.value)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_password_logged_by_mistake_never_appears(
    fmt: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = f"pw-{fmt}-d41d8cd9"
    register_secret(secret)
    path = tmp_path / "agent.log"
    configure_logging(LoggingSettings(format=fmt, file=str(path)), service="svc")
    log = logging.getLogger("leaky")
    log.info(f"connecting with password {secret}")  # in the message
    log.info("connecting with password %s", secret)  # in the arguments
    log.info("as a dict %s", {"password": secret})
    log.info("in extra", extra={"pw": secret})
    try:
        raise ConnectionError(f"broker refused {secret}")
    except ConnectionError:
        log.exception("connect failed")  # in the exception text
    log.warning("stack %s", secret, stack_info=True)
    err = capsys.readouterr().err
    text = path.read_text(encoding="utf-8")
    for output in (err, text):
        assert secret not in output
        # message, argument, dict, exception, stack message; and the extra field in JSON
        assert output.count("***") >= (6 if fmt == "json" else 5)
    if fmt == "json":
        assert [line["message"] for line in json_lines(err)][:2] == [
            "connecting with password ***",
            "connecting with password ***",
        ]


def test_json_formatter_redacts_without_the_filter() -> None:
    register_secret("standalone-0a0a")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "pw %s", ("standalone-0a0a",), None)
    assert json.loads(JsonFormatter(service="s").format(record))["message"] == "pw ***"


def test_longer_secret_is_hidden_whole() -> None:
    register_secret("abc-1234")
    register_secret("abc-1234-extended")
    assert agent.logs.redact("x abc-1234-extended y") == "x *** y"


def test_no_deprecation_warning_on_this_python_json_logger() -> None:
    """Import and use the formatter with DeprecationWarning as an error, in a fresh process."""
    code = (
        "import logging, agent.logs as l;"
        "r = logging.LogRecord('x', 20, 'f', 1, 'm', (), None);"
        "print(type(l.JsonFormatter()).__mro__[1].__module__);"
        "print(l.JsonFormatter(service='s').format(r))"
    )
    root = pathlib.Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        cwd=root,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "DeprecationWarning" not in result.stderr, result.stderr
    base_module, line = result.stdout.splitlines()
    try:
        import pythonjsonlogger.json  # noqa: F401
    except ImportError:  # python-json-logger 2.0.x
        assert base_module == "pythonjsonlogger.jsonlogger"
    else:
        assert base_module == "pythonjsonlogger.json"
    assert json.loads(line)["message"] == "m"
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", json.loads(line)["timestamp"]
    )


def test_dict_message_fields_are_merged(capsys: pytest.CaptureFixture[str]) -> None:
    register_secret("dict-secret-6b6b")  # so the filter is active, not skipped
    configure_logging(LoggingSettings(), service="svc")
    logging.getLogger("x").info({"event": "reading", "value": 3, "pw": ["dict-secret-6b6b"]})
    (line,) = json_lines(capsys.readouterr().err)
    assert (line["message"], line["event"], line["value"]) == ("", "reading", 3)
    assert line["pw"] == ["***"]


def test_python_warnings_become_log_records_in_the_configured_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json as _json
    import warnings

    from agent.logs import configure_logging
    from agent.settings import LoggingSettings

    configure_logging(LoggingSettings(format="json"), service="svc")
    try:
        # What warnings.warn() calls to show one (pytest records warnings instead of
        # showing them, so the test calls it as the warnings machinery would).
        warnings.showwarning(
            RuntimeWarning("falling back\nto another pin factory"), RuntimeWarning, "x.py", 1
        )
        lines = capsys.readouterr().err.strip().splitlines()
        record = _json.loads(lines[-1])
        assert record["logger"] == "py.warnings"
        assert "falling back" in record["message"] and "RuntimeWarning" in record["message"]
    finally:
        logging.captureWarnings(False)
