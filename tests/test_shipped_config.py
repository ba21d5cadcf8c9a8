"""The shipped ``etc/agent.toml``: valid as it is, and every example in it valid once its
comment marks are taken away — a user enables a device by uncommenting it."""

from __future__ import annotations

import re
from pathlib import Path

from agent.daemon.app import build_app
from agent.daemon.config import check_config

SHIPPED = Path(__file__).resolve().parent.parent / "etc" / "agent.toml"


def commented_devices(text: str) -> list[str]:
    """Each ``# [[device]]`` block of the file, uncommented (up to the next blank line)."""
    blocks = re.findall(r"^# \[\[device\]\]\n(?:#[^\n]*\n)+", text, flags=re.MULTILINE)
    return ["\n".join(line[2:] for line in block.splitlines()) + "\n" for block in blocks]


def test_the_shipped_file_is_valid_as_it_is() -> None:
    config, problems = check_config(SHIPPED, env_file=None, environ={})
    assert problems == []
    assert config is not None
    assert [d.spec.type for d in config.devices] == ["system"]
    build_app(config)


def test_every_commented_device_example_is_valid_uncommented(tmp_path: Path) -> None:
    text = SHIPPED.read_text()
    examples = commented_devices(text)
    kinds = {re.search(r'type = "(\w+)"', e).group(1) for e in examples}  # type: ignore[union-attr]
    assert kinds == {
        "w1_temperature",
        "gpio_input",
        "gpio_output",
        "file",
        "exec",
        "exec_command",
    }
    path = tmp_path / "agent.toml"
    # The examples as a user would enable them, all at once in the shipped file.
    path.write_text(text + "\n" + "\n".join(examples))
    config, problems = check_config(path, env_file=None, environ={})
    assert [str(p) for p in problems] == []
    assert config is not None
    problems_after = []
    build_app(config, problems=problems_after)
    assert [str(p) for p in problems_after] == []
