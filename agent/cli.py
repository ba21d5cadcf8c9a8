"""The command line: ``App.cli()`` and the ``agent`` console command.

``agent --config /etc/agent.toml`` (the default path) runs the daemon the config file
describes — built-in devices, the user's modules, Home Assistant discovery (see
:mod:`agent.daemon`). A config file with ``app = "module:attribute"`` instead names an App the
user wrote: that App is imported (the config file's folder and the working directory are
searched first) and run with the rest of the file as its settings.

``agent check [--config FILE]`` checks a config file without connecting: exit 0 and a
one-line summary, or exit 78 and every problem, one per line.

``agent describe --config FILE [--json] [--dry-run] [--env-file PATH]`` loads the App and its
settings the same way and prints what it would do — devices, topics, adapters — as a table,
or with ``--json`` as the JSON of :func:`agent.introspect.build_registry_snapshot`. It never
connects to the broker, never imports a lazy adapter string, never builds an adapter and never
prints a secret. ``App.cli()`` takes ``describe`` too (``python mybridge.py describe``), with
``--config`` optional there as for running.

How the command line is parsed: a first argument ``describe`` or ``check`` selects that
subcommand, whose options follow it; anything else — an option such as ``--config`` or
``--version``, or nothing at all — is the run command, parsed exactly as before subcommands
existed. So ``agent --config FILE``, ``python -m agent --config FILE``, ``agent --version``
and every systemd unit written for them keep working, and no config file path can be mistaken for a
subcommand (``--config`` always takes its value). argparse sub-parsers were not used: they
would make a subcommand mandatory, or, made optional, still take the first stray positional
argument for one and change the run command's usage and errors.

Exit codes: 0 after a clean shutdown, 78 (``EX_CONFIG``) for a configuration error — one line
on stderr naming the file, the key and the fix, no traceback — 70 (``EX_SOFTWARE``) after a
clean shutdown because a device failed for good with ``App(exit_on_device_failure=True)``,
and 1 for anything unexpected.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from agent.settings import ConfigError
from agent.settings.conversion import _show

if TYPE_CHECKING:
    from agent.app import App

EX_OK = 0
EX_UNEXPECTED = 1
EX_CONFIG = 78

log = logging.getLogger("agent.cli")


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    from agent import __version__

    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=f"'{prog} describe --help': show the devices, topics and adapters without "
        "connecting to the broker."
        + (" 'agent check --help': check a config file." if prog == "agent" else ""),
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="TOML settings file" + (" (default /etc/agent.toml)" if prog == "agent" else ""),
    )
    parser.add_argument(
        "--env-file", metavar="PATH", help="a .env file (default: ./.env if present)"
    )
    parser.add_argument("--dry-run", action="store_true", help="use the dry-run adapters")
    parser.add_argument(
        "--log-level",
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING, ERROR or CRITICAL (overrides the settings)",
    )
    parser.add_argument(
        "--log-format", choices=["json", "text"], help="log format (overrides the settings)"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def _load_settings(app: App, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    kwargs = {}
    if args.env_file is not None:
        kwargs["env_file"] = args.env_file
    settings = app.settings_class.load(config_file=args.config, **kwargs)
    if args.log_level is not None:
        level = args.log_level.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(
                source="arguments",
                key="--log-level",
                expected="DEBUG, INFO, WARNING, ERROR or CRITICAL",
                found=_show(args.log_level),
            )
        settings.logging.level = level
    if args.log_format is not None:
        settings.logging.format = args.log_format
    return settings


def build_describe_parser(prog: str) -> argparse.ArgumentParser:
    """The options of ``describe``; ``prog`` is the command's own name (``agent``)."""
    parser = argparse.ArgumentParser(
        prog=f"{prog} describe",
        description="Print the app's devices, their topics and the adapters, without "
        "connecting to the broker or building any adapter.",
    )
    # Not required=True: the agent command's missing --config is exit 78 and one line, as
    # for a run; App.cli() needs none (the settings may come from the environment alone).
    parser.add_argument("--config", metavar="PATH", help="TOML settings file")
    parser.add_argument(
        "--env-file", metavar="PATH", help="a .env file (default: ./.env if present)"
    )
    parser.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    parser.add_argument(
        "--dry-run", action="store_true", help="describe the adapters a --dry-run would use"
    )
    # _load_settings reads these; describe configures no logging.
    parser.set_defaults(log_level=None, log_format=None)
    return parser


def describe_app(app: App, argv: list[str], *, prog: str) -> int:
    """``describe``: load the settings and print the snapshot; return the exit code.

    Only the settings are loaded — for the topic prefix and the intervals that are
    functions of them, and so that a configuration error is found as ``run`` would find it.
    """
    from agent.introspect import build_registry_snapshot, format_snapshot

    args = build_describe_parser(prog).parse_args(argv)
    try:
        settings = _load_settings(app, args)
    except ConfigError as exc:
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    if args.dry_run:
        app.dry_run = True
    snapshot = build_registry_snapshot(app, settings)
    print(json.dumps(snapshot, indent=2) if args.json else format_snapshot(snapshot))
    return EX_OK


def run_app(app: App, argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Parse ``argv``, load settings, configure logging and run ``app``; return the exit code.

    ``argv`` starting with ``describe`` describes the app instead (see the module docstring).
    """
    from agent.logs import configure_logging

    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["describe"]:
        return describe_app(app, argv[1:], prog=prog or app.name)
    parser = build_parser(prog or app.name, app.description)
    args = parser.parse_args(argv)
    try:
        settings = _load_settings(app, args)
    except ConfigError as exc:
        print(f"{parser.prog}: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    try:
        configure_logging(settings.logging, service=app.name, version=app.version)
    except ConfigError as exc:  # the log file cannot be opened
        print(f"{parser.prog}: configuration error: {settings.blame(exc)}", file=sys.stderr)
        return EX_CONFIG
    if args.dry_run:
        app.dry_run = True
    from agent.app import DeviceFailed

    try:
        app.run(settings=settings)
    except ConfigError as exc:
        print(f"{parser.prog}: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except DeviceFailed as exc:
        return exc.exit_code  # logged already; the shutdown was clean
    except Exception:
        log.critical("%s stopped by an unexpected error", app.name, exc_info=True)
        return EX_UNEXPECTED
    return EX_OK


def _app_spec(config: str | None) -> str:
    """Read the ``app`` key of the config file without validating the rest (its schema is
    the app's settings class, known only once the app is imported)."""
    from agent.settings import read_toml

    if config is None:
        raise ConfigError(
            source="arguments",
            key="--config",
            detail='missing: the agent command needs a config file with app = "module:attribute"',
        )
    from agent.adapters import is_import_string

    data = read_toml(Path(config))
    spec = data.get("app")
    if not isinstance(spec, str) or ":" not in spec or not is_import_string(spec):
        raise ConfigError(
            source=config,
            key="app",
            expected='"module:attribute" naming the App to run',
            found=_show(spec),
        )
    return spec


def _import_app(spec: str, config: str) -> App:
    from agent.adapters import load_string
    from agent.app import App

    module_name = spec.partition(":")[0]
    for folder in (str(Path(config).resolve().parent), str(Path.cwd())):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        obj = load_string(spec)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(
                source=config,
                key="app",
                detail=f"cannot import {spec!r}: no module named {exc.name!r} "
                "(put it next to the config file or install it)",
            ) from None
        raise
    except AttributeError:
        raise ConfigError(
            source=config,
            key="app",
            detail=f"module {module_name!r} has no attribute {spec.partition(':')[2]!r}",
        ) from None
    if not isinstance(obj, App):
        raise ConfigError(
            source=config,
            key="app",
            expected="an agent.App",
            found=f"{spec!r}, a {type(obj).__name__}",
        )
    return obj


def _load_app(config: str | None) -> App | int:
    """The App the config file names, or the exit code after saying why not."""
    try:
        return _import_app(_app_spec(config), config)  # type: ignore[arg-type]
    except ConfigError as exc:
        print(f"agent: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except Exception as exc:
        print(f"agent: could not load the app: {type(exc).__name__}: {exc}", file=sys.stderr)
        logging.basicConfig()
        log.debug("import failure", exc_info=True)
        return EX_UNEXPECTED


def _load_any_app(config: str, env_file: str | None) -> App | int:
    """The App a config file describes: the user's (``app = "module:attribute"``) or the
    daemon's (any other file; see :mod:`agent.daemon`)."""
    from agent.settings import read_toml

    try:
        legacy = "app" in read_toml(config)
    except ConfigError as exc:
        print(f"agent: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    if legacy:  # a user's App: the daemon's modules are never imported
        return _load_app(config)
    from agent.daemon.command import load_app

    return load_app(config, env_file=".env" if env_file is None else env_file)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``agent`` console command (and of ``python -m agent``)."""
    from agent.daemon import DEFAULT_CONFIG

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["check"]:
        from agent.daemon.command import check

        return check(argv[1:])
    if argv[:1] == ["describe"]:
        args = build_describe_parser("agent").parse_args(argv[1:])
        if args.config is None:
            args.config = DEFAULT_CONFIG
            argv += ["--config", DEFAULT_CONFIG]
        app = _load_any_app(args.config, args.env_file)
        return app if isinstance(app, int) else describe_app(app, argv[1:], prog="agent")
    parser = build_parser("agent", "Run an IoT-to-MQTT bridge from a config file.")
    args = parser.parse_args(argv)
    if args.config is None:
        argv += ["--config", DEFAULT_CONFIG]
        args.config = DEFAULT_CONFIG
    app = _load_any_app(args.config, args.env_file)
    if isinstance(app, int):
        return app
    return run_app(app, argv, prog="agent")


def entry() -> NoReturn:
    """The ``agent`` command and ``python -m agent``: :func:`main`, then a quick exit."""
    exit_process(main())


def exit_process(code: int) -> NoReturn:
    """End the process with ``code`` once the agent has stopped, skipping the interpreter's
    teardown when nothing needs it.

    Tearing down a few hundred modules takes the interpreter about 30 ms here — as long as
    the agent's whole shutdown — and a service manager waits for it. When only daemon
    threads are left (the agent's own are joined or daemon by then), the exit handlers run
    (``atexit``: logging's flush among them), the standard streams are flushed, and the
    process ends with ``os._exit``. A non-daemon thread the user started keeps the normal
    exit, which waits for it.
    """
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if any(not t.daemon for t in others) or run_exit_handlers is None:
        sys.exit(code)
    run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
