"""App.cli(): argument parsing, settings loading and exit codes (no broker needed)."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.app import App
from agent.cli import main
from agent.context import AppContext
from agent.mqtt.fakes import MockMqttClient
from agent.settings import Settings


@pytest.fixture(autouse=True)
def _keep_root_logging() -> Iterator[None]:
    """App.cli() configures the root logger; give the next test the one it had."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def test_cli_exits_78_with_one_line_for_a_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[mqtt]\nport = 0\n")
    with pytest.raises(SystemExit) as exit_info:
        App("demo").cli(["--config", str(config)])
    assert exit_info.value.code == 78
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{config}: mqtt.port: expected" in err[0]


def test_cli_rejects_a_bad_log_level(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        App("demo").cli(["--log-level", "LOUD", "--env-file", str(empty)])
    assert exit_info.value.code == 78
    assert "--log-level" in capsys.readouterr().err


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    import agent

    with pytest.raises(SystemExit) as exit_info:
        App("demo").cli(["--version"])
    assert exit_info.value.code == 0
    assert agent.__version__ in capsys.readouterr().out


def test_async_lifespan_is_refused_with_a_clear_message() -> None:
    @contextlib.asynccontextmanager
    async def lifespan(ctx: AppContext) -> AsyncIterator[None]:
        yield

    app = App("demo", lifespan=lifespan)
    with pytest.raises(TypeError, match=r"not a context manager.*contextmanager"):
        app.run(mqtt=MockMqttClient(), settings=Settings())


def test_cli_exits_1_for_an_unexpected_error(tmp_path: Path) -> None:
    @contextlib.contextmanager
    def lifespan(ctx: AppContext):  # type: ignore[no-untyped-def]
        raise RuntimeError("the database is on fire")
        yield

    empty = tmp_path / "empty.env"
    empty.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        App("demo", lifespan=lifespan).cli(["--env-file", str(empty), "--log-format", "text"])
    assert exit_info.value.code == 1


@contextlib.contextmanager
def must_not_start(ctx: AppContext) -> Iterator[None]:
    """A lifespan for apps whose settings must be refused: if they are accepted after all,
    the app stops here (exit 1) instead of running on, trying to reach a broker."""
    raise RuntimeError("the settings were accepted")
    yield


DEEP = 5000

HOSTILE_TOML = {
    "nested arrays": "a = " + "[" * DEEP + "]" * DEEP + "\n",
    "nested inline tables": "a = " + "{b = " * DEEP + "1" + "}" * DEEP + "\n",
    "deep table header": "[" + ".".join(["a"] * DEEP) + "]\n",
    "5000-digit integer": "a = " + "7" * DEEP + "\n",
}


def one_config_error_line(capsys: pytest.CaptureFixture[str], prog: str, path: Path) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: configuration error: {path}: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("case", list(HOSTILE_TOML))
def test_hostile_config_exits_78_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    config = tmp_path / "hostile.toml"
    config.write_text('app = "nosuchmodule:app"\n' + HOSTILE_TOML[case])
    # the agent command reads the file for `app` before anything else ...
    assert main(["--config", str(config)]) == 78
    line = one_config_error_line(capsys, "agent", config)
    assert "invalid TOML: " in line
    # ... and App.cli() reads it as its settings
    with pytest.raises(SystemExit) as exit_info:
        App("demo", lifespan=must_not_start).cli(["--config", str(config)])
    assert exit_info.value.code == 78
    assert one_config_error_line(capsys, "demo", config) == line.replace("agent:", "demo:", 1)


@pytest.mark.parametrize("spec", ["fuzz_conf ig_app:app", "app:", ":app", "a-b:app", "a:b c"])
def test_an_app_value_that_is_no_import_string_exits_78_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str
) -> None:
    # Found by tests/test_fuzz_config.py: a space spliced into the value gave exit 1.
    config = tmp_path / "agent.toml"
    config.write_text(f'app = "{spec}"\n')
    assert main(["--config", str(config)]) == 78
    line = one_config_error_line(capsys, "agent", config)
    assert 'app: expected "module:attribute" naming the App to run' in line, line


def test_agent_command_shows_a_huge_app_value_short(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('app = "' + "x" * 100_000 + '"\n')
    assert main(["--config", str(config)]) == 78
    line = one_config_error_line(capsys, "agent", config)
    assert line.endswith('found "' + "x" * 55 + '..."')


@pytest.mark.parametrize("prefix", ["a//b", "/a", "a/", "a/ b", " a", "a\x01b", "$SYS/a"])
def test_cli_refuses_a_bad_topic_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], prefix: str
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f"[mqtt]\ntopic_prefix = {json.dumps(prefix)}\n")
    with pytest.raises(SystemExit) as exit_info:
        App("demo", lifespan=must_not_start).cli(["--config", str(config)])
    assert exit_info.value.code == 78
    line = one_config_error_line(capsys, "demo", config)
    assert line.startswith(f"demo: configuration error: {config}: mqtt.topic_prefix: expected ")


class Touchy(Settings):
    limit: int = 1

    def validate(self) -> None:
        _ = 10 // self.limit


def test_cli_reports_a_crashing_validate_hook_as_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("limit = 0\n")
    with pytest.raises(SystemExit) as exit_info:
        App("demo", settings_class=Touchy, lifespan=must_not_start).cli(["--config", str(config)])
    assert exit_info.value.code == 78
    line = one_config_error_line(capsys, "demo", config)
    assert line.endswith(
        "Touchy.validate() failed: ZeroDivisionError: integer division or modulo by zero"
    )


def test_run_logs_each_load_warning_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[mqtt]\nusername = "u"\npassword = "pw-1f1f"\n')
    config.chmod(0o644)
    settings = Settings.load(config_file=config, env_file=None, environ={})
    stop = threading.Event()
    stop.set()  # run() starts, sees the shutdown request and returns
    with caplog.at_level(logging.WARNING):
        App("demo").run(mqtt=MockMqttClient(), settings=settings, shutdown_event=stop)
    warnings = [r for r in caplog.records if "other users can read it" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert warnings[0].name == "agent.settings"
    assert f"{config} holds mqtt.password" in warnings[0].getMessage()
    assert "pw-1f1f" not in caplog.text
    caplog.clear()
    config.chmod(0o600)
    settings = Settings.load(config_file=config, env_file=None, environ={})
    with caplog.at_level(logging.WARNING):
        App("demo").run(mqtt=MockMqttClient(), settings=settings, shutdown_event=stop)
    assert "other users can read it" not in caplog.text


def test_sigterm_reaches_the_shutdown_event_even_when_logging_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The handler runs between two bytecodes of the main thread, possibly inside a log
    write: a log call there raises ("reentrant call inside BufferedWriter") and, before
    the fix, lost the shutdown request. The handler must not depend on logging."""
    import os
    import signal

    import agent.app as app_module
    import agent.runtime.signals as signals_module

    def reentrant(*args: object, **kwargs: object) -> None:
        raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stderr>'>")

    for level in ("debug", "info", "warning", "error"):
        monkeypatch.setattr(app_module.log, level, reentrant)
    catcher = signals_module.SignalCatcher()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        catcher.wait()
        assert catcher.event.is_set()
        assert catcher.received == "SIGTERM"
    finally:
        catcher.restore()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.set_wakeup_fd(-1) == -1  # the wakeup fd is given back too


def test_a_storm_of_stop_signals_never_wedges_the_main_thread() -> None:
    """Signals a few microseconds apart (a supervisor forwarding SIGTERM, Ctrl-C twice) once
    ran the handler inside itself while it held the shutdown event's lock: the main thread
    deadlocked for good. Here 300 of them arrive while the main thread waits, then more
    after the event is set; the wait ends, and nothing hangs."""
    import os
    import signal
    import threading
    import time

    import agent.runtime.signals as signals_module

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a shell's background job
    catcher = signals_module.SignalCatcher()
    done = threading.Event()

    def storm() -> None:
        for i in range(300):
            os.kill(os.getpid(), signal.SIGTERM if i % 2 else signal.SIGINT)
            deadline = time.perf_counter() + (i % 40) * 2e-6
            while time.perf_counter() < deadline:
                pass
        done.set()

    sender = threading.Thread(target=storm, name="signal-storm")
    try:
        sender.start()
        catcher.wait()
        assert catcher.event.is_set()
        assert catcher.received in ("SIGTERM", "SIGINT")
        assert done.wait(10)
        sender.join(10)
        assert not sender.is_alive()
    finally:
        catcher.restore()
    assert signal.getsignal(signal.SIGINT) is before


def test_another_threads_set_ends_the_signal_wait() -> None:
    """A device given up for good (exit_on_device_failure) sets the event from its own
    thread: the main thread's wait ends at once, with no signal."""
    import threading

    import agent.runtime.signals as signals_module

    catcher = signals_module.SignalCatcher()
    try:
        timer = threading.Timer(0.05, catcher.event.set)
        timer.start()
        catcher.wait()
        timer.join(10)
        assert catcher.event.is_set()
        assert catcher.received == ""
    finally:
        catcher.restore()
    catcher.event.set()  # after restore: the closed pipe is never written to


def test_a_forked_childs_signals_are_its_own() -> None:
    """A device that forks (multiprocessing) and terminates its child: the child gets the
    default handlers back and dies of the SIGTERM; the agent's wait hears nothing."""
    import os
    import signal

    import agent.runtime.signals as signals_module

    catcher = signals_module.SignalCatcher()
    try:
        pid = os.fork()
        if pid == 0:  # the child: SIGTERM to itself is delivered before kill() returns
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            finally:
                os._exit(3)  # still alive: the signal was swallowed
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status
        assert catcher._pipe is not None
        assert signals_module._drain(catcher._pipe[0]) == b""  # nothing reached the agent
        assert not catcher.event.is_set()
    finally:
        catcher.restore()


def test_a_stolen_wakeup_fd_does_not_swallow_sigterm(caplog: pytest.LogCaptureFixture) -> None:
    """Code run on the main thread during start (an asyncio loop closing) may reset the
    signal wakeup fd: the handler's own write still ends the wait, and keep_wakeup_fd()
    takes the fd back with a warning."""
    import os
    import signal
    import threading

    import agent.runtime.signals as signals_module

    catcher = signals_module.SignalCatcher()
    try:
        signal.set_wakeup_fd(-1)
        with caplog.at_level("WARNING", logger="agent.app"):
            catcher.keep_wakeup_fd()
        assert "replaced the signal wakeup fd" in caplog.text
        assert catcher._pipe is not None
        assert signal.set_wakeup_fd(catcher._pipe[1]) == catcher._pipe[1]
        signal.set_wakeup_fd(-1)  # stolen again, and not taken back this time
        os.kill(os.getpid(), signal.SIGTERM)
        rescue = threading.Timer(10, catcher.event.set)  # a failure, not a hung suite
        rescue.start()
        catcher.wait()
        rescue.cancel()
        assert catcher.received == "SIGTERM"
    finally:
        catcher.restore()


# -- agent describe -----------------------------------------------------------------------------

DESCRIBED_APP = """
from typing import Protocol

import agent


class RelayPort(Protocol):
    def state(self) -> str: ...


class FakeRelay:
    def state(self) -> str:
        return "fake"


class BridgeSettings(agent.Settings):
    poll_interval: float = 5.0


app = agent.App(
    "bridge",
    "2.0.0",
    settings_class=BridgeSettings,
    adapters={RelayPort: ("no_such_hw_lib.gpio:Relay", FakeRelay)},
)


@app.telemetry(
    "boiler",
    interval=lambda s: s.poll_interval,
    publish=agent.OnChange(threshold=0.5) | agent.Every(seconds=60),
    group="bus",
)
def boiler(relay: RelayPort) -> dict:
    return {"relay": relay.state()}


@app.command("valve")
def valve(payload: str) -> dict:
    return {"state": payload}
"""


@pytest.fixture
def described(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """An app module under a name of its own (imports are cached per process) and its
    config file holding a password; yields (config path, module name)."""
    import sys
    import uuid

    module = f"described_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(DESCRIBED_APP)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'app = "{module}:app"\npoll_interval = 2.5\n'
        '[mqtt]\nhost = "127.0.0.1"\nport = 1\ntopic_prefix = "home/bridge"\n'
        'username = "u"\npassword = "pw-describe-3b7e"\n'
    )
    config.chmod(0o600)
    yield config, module
    sys.modules.pop(module, None)
    while str(tmp_path) in sys.path:  # the agent command put the config's folder there
        sys.path.remove(str(tmp_path))


def test_describe_prints_the_devices_topics_and_adapters(
    described: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = described
    assert main(["describe", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == "bridge 2.0.0: IoT-to-MQTT bridge"
    boiler = next(line for line in lines if line.startswith("boiler "))
    assert boiler.split()[:9] == [
        "boiler",
        "telemetry",
        "yes",
        "2.5",  # the interval function of the settings, resolved
        "s",
        "OnChange(threshold=0.5)",
        "|",
        "Every(seconds=60)",
        "bus",
    ]
    for topic in ("home/bridge/boiler/state", "home/bridge/valve/set", "home/bridge/status"):
        assert topic in out
    relay = next(line for line in lines if line.startswith("RelayPort"))
    assert relay.split() == ["RelayPort", "no_such_hw_lib.gpio:Relay", "FakeRelay", "impl"]
    assert "pw-describe-3b7e" not in out


def test_describe_json_is_the_snapshot(
    described: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    from agent.introspect import build_registry_snapshot

    config, module = described
    assert main(["describe", "--config", str(config), "--json", "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    app = importlib.import_module(module).app
    settings = app.settings_class.load(config_file=config)
    assert printed == build_registry_snapshot(app, settings)
    assert printed["dry_run"] is True
    assert printed["adapters"]["RelayPort"]["active"] == "dry_run"
    assert printed["devices"]["telemetry"][0]["interval"] == 2.5


def test_describe_never_connects_imports_or_builds_adapters(
    described: tuple[Path, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import sys

    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("no connection allowed in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    threads = threading.active_count()
    config, _ = described
    for extra in ([], ["--json"], ["--dry-run"]):
        assert main(["describe", "--config", str(config), *extra]) == 0
    assert attempts == []
    assert threading.active_count() == threads
    assert "no_such_hw_lib" not in sys.modules  # the lazy adapter was never imported
    assert "pw-describe-3b7e" not in capsys.readouterr().out


def test_describe_exits_78_with_one_line_for_config_errors(
    described: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, module = described
    config.write_text(f'app = "{module}:app"\n[mqtt]\nport = 0\n')
    assert main(["describe", "--config", str(config)]) == 78
    assert "mqtt.port: expected" in one_config_error_line(capsys, "agent", config)
    config.write_text('app = "no_such_app_module:app"\n')
    assert main(["describe", "--config", str(config)]) == 78
    assert "no module named 'no_such_app_module'" in one_config_error_line(capsys, "agent", config)
    # No --config: the daemon's default file, /etc/agent.toml, as for a run.
    default = config.parent / "etc-agent.toml"
    monkeypatch.setattr("agent.daemon.DEFAULT_CONFIG", str(default))
    for argv in (["describe"], []):
        assert main(argv) == 78
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"agent: configuration error: {default}: config file not found"]


def test_app_cli_describe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    app = App("demo", lifespan=must_not_start)  # describe must not run it
    app.add_command("valve", lambda payload: None)
    with pytest.raises(SystemExit) as exit_info:
        app.cli(["describe", "--json", "--env-file", str(empty)])
    assert exit_info.value.code == 0
    snapshot = json.loads(capsys.readouterr().out)
    assert snapshot["devices"]["command"][0]["subscribes"] == ["demo/valve/set"]


def test_help_mentions_describe_and_version_still_works(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import agent

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "agent describe --help" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["describe", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: agent describe") and "--json" in out and "--dry-run" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"agent {agent.__version__}"


def test_run_without_a_subcommand_stops_78_for_a_missing_adapter_module(
    described: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``agent --config FILE`` still runs the app: here start-up reaches the adapters and
    finds the lazy one's module missing — one line naming it and the port, no traceback."""
    config, _ = described
    assert main(["--config", str(config), "--log-level", "WARNING"]) == 78
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "agent: configuration error: adapter for RelayPort: cannot import "
        "'no_such_hw_lib.gpio:Relay': no module named 'no_such_hw_lib' "
        "(install it, or run with --dry-run to use the dry-run variant)"
    ]
