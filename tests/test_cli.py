"""App.cli(): argument parsing, settings loading and exit codes (no broker needed)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.app import App
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
