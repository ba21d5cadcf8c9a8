"""What the ``agent`` command does with a config file.

A config file with ``app = "module:attribute"`` names an App the user wrote (the framework's
way, unchanged); any other config file is the daemon's (:mod:`agent.daemon.config`).
:func:`load_app` gives the App either way; :func:`check` is ``agent check``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from agent.app import App
from agent.daemon.config import DaemonConfig
from agent.settings import ConfigError, read_toml

__all__ = ["check", "load_app", "uses_app_key"]

EX_OK = 0
EX_CONFIG = 78


def uses_app_key(path: str) -> bool:
    """True when the file names an App of the user's (``app = ...``): the framework's
    config file of before the daemon. Raises ConfigError for a file that does not parse."""
    return "app" in read_toml(path)


def load_app(path: str, *, env_file: str | None = ".env", prog: str = "agent") -> App | int:
    """The App of a daemon config file, or the exit code (78) after printing every problem
    on stderr, one per line."""
    app, _config, problems = check_daemon(path, env_file=env_file)
    if app is None or problems:
        _print_problems(problems, prog)
        return EX_CONFIG
    return app


def check_daemon(
    path: str, *, env_file: str | None = ".env"
) -> tuple[App | None, DaemonConfig | None, list[ConfigError]]:
    """Everything ``agent check`` and a run check, every problem collected: the file and
    the environment, then — for whatever of it is good — the App built from it (modules
    imported, devices registered, Home Assistant metadata checked). A result with problems
    must not run."""
    from agent.daemon.app import build_app
    from agent.daemon.config import read_config

    config, problems = read_config(path, env_file=env_file)
    if config is None:
        return None, None, problems
    app = build_app(config, problems=problems)
    return app, config, problems


def _print_problems(problems: list[ConfigError], prog: str) -> None:
    for problem in sorted(problems, key=_place):
        print(f"{prog}: configuration error: {problem}", file=sys.stderr)


_PLACE = re.compile(r"(module_path|modules|device)\[(\d+)\]")
_ORDER = {"module_path": 1, "modules": 2, "device": 3}


def _place(problem: ConfigError) -> tuple[int, int]:
    """In the order of the file: the settings, then the modules, then the tables by number
    (checks of later stages — a module's import, a device's registration — would otherwise
    come after every problem of the file itself). ``sorted`` keeps each place's own order."""
    match = _PLACE.match(problem.key)
    if match is None:
        return (0, 0)
    return (_ORDER[match.group(1)], int(match.group(2)))


def build_check_parser(prog: str = "agent") -> argparse.ArgumentParser:
    from agent.daemon import DEFAULT_CONFIG

    parser = argparse.ArgumentParser(
        prog=f"{prog} check",
        description="Check a config file without connecting to the broker: exit 0 with a "
        "one-line summary, or exit 78 with every problem, one per line.",
    )
    parser.add_argument(
        "--config", metavar="PATH", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}"
    )
    parser.add_argument(
        "--env-file", metavar="PATH", help="a .env file (default: ./.env if present)"
    )
    return parser


def check(argv: list[str], prog: str = "agent") -> int:
    """``agent check``: read everything the service would read, import the user's modules,
    build the App — and stop there (see :func:`build_check_parser`)."""
    args = build_check_parser(prog).parse_args(argv)
    env_file = ".env" if args.env_file is None else args.env_file
    try:
        legacy = uses_app_key(args.config)
    except ConfigError as err:
        _print_problems([err], prog)
        return EX_CONFIG
    if legacy:
        return _check_legacy(args.config, env_file, prog)
    app, config, problems = check_daemon(args.config, env_file=env_file)
    if app is None or config is None or problems:
        _print_problems(problems, prog)
        return EX_CONFIG
    from agent.daemon.app import BUILTIN_SOURCE

    from_modules = sum(1 for reg in app.registry if BUILTIN_SOURCE not in reg.source)
    summary = config.summary()
    if from_modules:
        summary += f"; {from_modules} device(s) from modules"
    print(summary)
    for warning in _warnings(config):
        print(f"{prog}: warning: {warning}", file=sys.stderr)
    return EX_OK


def _warnings(config: DaemonConfig) -> list[str]:
    """What is not wrong in the file but will not work on this machine as it is now."""
    out: list[str] = []
    path = config.settings.store.resolved_path()
    if path is not None:
        folder = os.path.dirname(os.path.abspath(path)) or "/"
        if not os.path.isdir(folder):
            out.append(
                f"{config.path}: store.path: the folder {folder} does not exist (the service's "
                "StateDirectory= creates /var/lib/agent when it starts; elsewhere create it "
                "or set [store] path); until then nothing is saved"
            )
        elif not os.access(folder, os.W_OK):
            out.append(
                f"{config.path}: store.path: {folder} is not writable by this user (the "
                "service runs as user agent); until it is, nothing is saved"
            )
    return out


def _check_legacy(path: str, env_file: str, prog: str) -> int:
    from agent.cli import _load_app

    app = _load_app(path)
    if isinstance(app, int):
        return app
    settings, problems = app.settings_class.check(config_file=path, env_file=env_file)
    if settings is None:
        _print_problems(problems, prog)
        return EX_CONFIG
    print(f"{path}: OK; app {app.name!r} with {len(app.registry)} device(s)")
    return EX_OK
