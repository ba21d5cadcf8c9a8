"""``python -m agent --config PATH``: the same as the ``agent`` command."""

from agent.cli import entry

entry()
