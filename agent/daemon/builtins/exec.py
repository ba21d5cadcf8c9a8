"""The ``exec`` and ``exec_command`` device types: a program's output as telemetry, and a
fixed set of programs Home Assistant (or anyone with the command topic) may start.

``exec`` runs ``command`` every ``interval`` seconds (60 by default) and publishes what it
printed::

    [[device]]
    type = "exec"
    name = "tank"
    command = ["/usr/local/bin/tank-level", "--raw"]   # the program and its arguments
    parse = "number"            # "number" (default) or "json"
    field = "level"             # the state key of the number (default "value")
    scale = 0.1                 # value = number * scale + offset (defaults 1 and 0)
    unit = "%"                  # unit, device_class, state_class ("measurement" by
    icon = "mdi:water-percent"  # default; "" for none) and icon: Home Assistant's
    timeout = 5                 # seconds (default 10, or half the interval if shorter)

* ``parse = "number"``: the whole output, stripped of white space, is one decimal number
  (``42``, ``-3.5``, ``1e3``; not ``nan``, not ``21,5``, not ``42 °C``). The state is
  ``{field: number * scale + offset}``; an integer stays an integer when scale and offset
  are left alone. One Home Assistant sensor is declared for it, named after the device.
* ``parse = "json"``: the output is one JSON object, published as the state as it is (the
  device's ``filter`` may smooth its numeric fields). No Home Assistant entity is declared:
  the fields are the program's, unknown here. ``field``, ``scale``, ``offset`` and the
  Home Assistant keys are refused with it.

``exec_command`` takes commands and runs one of a configured set of programs::

    [[device]]
    type = "exec_command"
    name = "pi"
    commands = { reboot = ["/usr/bin/sudo", "/sbin/reboot"], sync = ["/bin/sync"] }
    timeout = 30                # seconds (default 30)

A command on ``agent/pi/set`` is the entry's name, as plain text (``reboot``) or as JSON
(``{"command": "reboot"}``). The payload only *chooses* an entry: it is compared with the
configured names and never becomes, or reaches, an argument. Anything else — an unknown
name, JSON of another shape, ``; rm -rf /``, ``$(reboot)``, a megabyte, NUL bytes — is an
``invalid_payload`` error listing the valid names, and no process is started. After a run
the device publishes ``{"command": "reboot", "result": "ok", "exit_code": 0, "output":
"<its last line of output>"}``; ``result`` is ``ok``, ``failed`` (a non-zero exit or a
signal), ``timeout`` or ``not_started`` (the program could not be executed), and every
result but ``ok`` is also an error payload. Each name is a Home Assistant ``button``.
Refused payloads never count towards the device's restart budget: the device serves its
commands from ``ctx.on_command`` handlers, whose failures are reported and survived, so
a stream of hostile payloads cannot get it given up.

How a program is run, for both types:

* **Never a shell.** ``command`` is an argument list handed to ``execve``; nothing in it is
  interpreted (``$HOME``, ``*``, ``;`` are plain characters). Its first item is an absolute
  path, or a name looked up on the child's ``PATH`` when the config is checked (and the
  path found is what runs).
* **A clean environment.** The child gets ``PATH`` (Debian's default,
  ``/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin``), ``LC_ALL=C.UTF-8`` (so
  numbers are printed with a decimal point) and the device's ``env`` table — never the
  daemon's own environment, which may hold ``AGENT_MQTT__PASSWORD``. ``cwd`` (an existing
  folder; default ``/``) is where it runs; stdin is ``/dev/null``.
* **Its own process group, killed at the timeout.** The program starts a new session, so at
  ``timeout`` (real seconds: a real process runs in real time whatever clock the
  scheduler uses) ``SIGKILL`` goes to the whole group — whatever it started with it dies
  too — and the reading fails with ``TimeoutError``. That is an ``OSError``, as is a
  non-zero exit (:class:`CommandFailed`), so the device's ``retry`` applies to both.
* **Bounded output.** At most 1 MiB of output is read for ``exec``: more, and the group is
  killed and the reading fails (a ``ValueError``, not retried), so a runaway program cannot
  fill the Pi's memory. ``exec_command`` keeps only the last 4 KiB. Of stderr only the last
  4 KiB is kept: its last line names what went wrong in the error message, with the
  program's path and exit status — never its arguments or environment, which may hold
  tokens.
* Output that is not UTF-8, not a number, or not a JSON object is a ``ValueError``: one
  error payload, and the device goes on.

``timeout`` must be below the ``interval`` of an ``exec`` device; that one relation is
checked when the device is registered (``agent check`` reports it), since the type's
:meth:`~agent.daemon.types.DeviceType.check` does not see the common keys.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import selectors
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.clock import SystemClock
from agent.context import Command, DeviceContext
from agent.daemon.builtins._common import (
    HA_KEYS,
    OptionReader,
    add_polled,
    entity_of,
    show,
)
from agent.daemon.types import DeviceSpec, Problem
from agent.entities import Entity
from agent.errors import InvalidPayload
from agent.router import Router
from agent.settings import ConfigError

__all__ = [
    "DEFAULT_PATH",
    "EXEC",
    "EXEC_COMMAND",
    "MAX_OUTPUT",
    "TYPES",
    "CommandFailed",
    "CommandOptions",
    "ExecOptions",
    "Outcome",
    "parse_json",
    "parse_number",
    "run_program",
]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The child's ``PATH`` unless the device's ``env`` sets one: Debian's default for root."""

MAX_OUTPUT = 1024 * 1024
"""Bytes of output an ``exec`` reading may have; more is an error (memory stays bounded)."""

_TAIL = 4096  # bytes kept of stderr, and of an exec_command's stdout: enough for a last line
_LINE = 200  # characters of a last line shown in a message or a state
_READ = 65536
_GRACE = 2.0  # real seconds for a killed group to let go of its pipes, and to be reaped
_STALL_MARGIN = 5.0  # the stall watch reports a handler call only after our own kill

# The deadline of a real process is real time: a fake clock cannot make a program finish
# sooner, and the scheduler's clock may be one. Reading it through agent.clock keeps that
# module the only one that reads time.
_REAL = SystemClock()

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FIELD = re.compile(r"[A-Za-z0-9_]{1,64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_INTEGER = re.compile(r"[-+]?\d{1,300}")
_MAX_CHOICE = 1024  # characters of a command payload worth parsing: a name is at most 64

_EXEC_KEYS = ("command", "timeout", "parse", "field", "scale", "offset", *HA_KEYS, "env", "cwd")
_NUMBER_ONLY = ("field", "scale", "offset", *HA_KEYS)
_COMMAND_KEYS = ("commands", "timeout", "env", "cwd")

EXEC_DEFAULT_TIMEOUT = 10.0
COMMAND_DEFAULT_TIMEOUT = 30.0


class CommandFailed(OSError):
    """A program could not be started, exited with a non-zero status or was killed by a
    signal. An ``OSError``: like a sensor that did not answer, it is worth a ``retry``."""


# -- running a program ---------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a finished program left: its exit status (negative: killed by that signal), its
    output (all of it, or its tail) and the tail of its stderr."""

    status: int
    stdout: bytes
    stderr: bytes


def run_program(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str],
    cwd: str = "/",
    limit: int | None = MAX_OUTPUT,
) -> Outcome:
    """Run ``argv`` (no shell) in a new session with ``env`` as its whole environment and
    wait for it, at most ``timeout`` real seconds.

    ``limit``: bytes of stdout allowed (more is a ValueError), or None to keep only its last
    4 KiB. Returns the :class:`Outcome` whatever the exit status; raises
    :class:`CommandFailed` when the program cannot be started, ``TimeoutError`` when it
    overruns. On a timeout or too much output ``SIGKILL`` goes to the program's whole
    process group, and this returns only once every member still holding its output is
    gone (bounded by a short grace).
    """
    try:
        proc = subprocess.Popen(
            list(argv),
            shell=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own group: a timeout kills what it started too
            close_fds=True,
            env=dict(env),
            cwd=cwd,
        )
    except OSError as exc:
        # The file named is the program, or the folder cwd when that is what is missing.
        where = f" ({exc.filename})" if exc.filename and exc.filename != argv[0] else ""
        raise CommandFailed(f"cannot start {argv[0]}: {exc.strerror or exc}{where}") from None
    assert proc.stdout is not None and proc.stderr is not None
    out = _Sink(limit)
    err = _Sink(None)
    selector = selectors.DefaultSelector()
    killed = False
    try:
        selector.register(proc.stdout, selectors.EVENT_READ, out)
        selector.register(proc.stderr, selectors.EVENT_READ, err)
        deadline = _REAL.now() + timeout
        trouble = _read(selector, deadline)
        if trouble is None:
            try:
                status = proc.wait(timeout=max(0.0, deadline - _REAL.now()))
            except subprocess.TimeoutExpired:
                trouble = "timeout"
            else:
                return Outcome(status, bytes(out.data), bytes(err.data))
        killed = True
        unkillable = _kill_group(proc)
        # The pipes close when the last process holding them is dead: then nothing the
        # program started with its output is left.
        _read(selector, _REAL.now() + _GRACE, drain=True)
        _reap(proc)
        note = f" ({unkillable})" if unkillable else ""
        if trouble == "timeout":
            raise TimeoutError(f"{argv[0]} did not finish within {timeout:g} s: killed{note}")
        raise ValueError(
            f"{argv[0]} printed more than {limit} bytes: killed{note} (a reading is one "
            "number or one JSON object)"
        )
    finally:
        selector.close()
        proc.stdout.close()
        proc.stderr.close()
        if proc.returncode is None and not killed:  # an unexpected exception: leave nothing
            _kill_group(proc)
            _reap(proc)


class _Sink:
    """Where one pipe's bytes go: all of them up to ``limit``, or (None) only the tail."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.data = bytearray()

    def add(self, chunk: bytes) -> bool:
        """Keep ``chunk``; False when that is more than the limit."""
        self.data += chunk
        if self.limit is None:
            if len(self.data) > _TAIL:
                del self.data[:-_TAIL]
            return True
        return len(self.data) <= self.limit


def _read(selector: selectors.BaseSelector, deadline: float, *, drain: bool = False) -> str | None:
    """Read both pipes until they close (None), ``deadline`` passes (``"timeout"``) or stdout
    exceeds its limit (``"too large"``); ``drain``: throw what arrives away. Memory stays
    bounded: at most the limit plus one read of stdout, and 4 KiB tails otherwise."""
    while selector.get_map():
        remaining = deadline - _REAL.now()
        if remaining <= 0:
            return "timeout"
        for key, _ in selector.select(remaining):
            chunk = os.read(key.fd, _READ)
            if not chunk:
                selector.unregister(key.fileobj)
            elif not drain and not key.data.add(chunk):
                return "too large"
    return None


def _kill_group(proc: subprocess.Popen[bytes]) -> str:
    """SIGKILL the program's process group; called while the program is not yet reaped, so
    its id still names its group. Returns why it could not, or ""."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return ""
    except PermissionError:
        # A set-user-ID program (sudo) may not be ours to signal.
        return "not permitted to kill its process group"
    return ""


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Collect a killed program's exit status, waiting a short grace at most."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=_GRACE)  # else it is stuck in the kernel: subprocess reaps it later


def _last_line(data: bytes) -> str:
    """The last non-blank line of ``data``, printable and at most 200 characters."""
    text = data.decode("utf-8", errors="replace")
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line:
            line = "".join(c if c.isprintable() else "?" for c in line)
            return line if len(line) <= _LINE else line[: _LINE - 3] + "..."
    return ""


def _failure(program: str, outcome: Outcome) -> str:
    """``/usr/bin/x exited with status 2: <stderr's last line>``."""
    if outcome.status < 0:
        try:
            name = signal.Signals(-outcome.status).name
        except ValueError:
            name = str(-outcome.status)
        what = f"{program} was killed by signal {name}"
    else:
        what = f"{program} exited with status {outcome.status}"
    reason = _last_line(outcome.stderr)
    return f"{what}: {reason}" if reason else what


# -- parsing a reading ---------------------------------------------------------------------


def _text(program: str, stdout: bytes) -> str:
    try:
        return stdout.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{program} printed bytes that are not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None


def parse_number(program: str, stdout: bytes, *, scale: float, offset: float) -> int | float:
    """The one number ``stdout`` is, times ``scale`` plus ``offset``; ValueError otherwise.
    An integer stays an ``int`` when scale and offset change nothing."""
    text = _text(program, stdout).strip()
    if not _NUMBER.fullmatch(text):
        found = show(text) if text else "nothing"
        raise ValueError(f"{program} printed {found}, not a number")
    if scale == 1 and offset == 0 and _INTEGER.fullmatch(text):
        return int(text)
    value = float(text) * scale + offset
    if not math.isfinite(value):
        raise ValueError(f"{program} printed {show(text)}, out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(program: str, stdout: bytes) -> dict[str, Any]:
    """The JSON object ``stdout`` is; ValueError for anything else (NaN and Infinity too:
    the state must be valid JSON)."""
    text = _text(program, stdout)
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"{program} printed JSON nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"{program} printed no valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{program} printed a JSON {type(value).__name__}, not an object")
    return value


# -- options common to both types ----------------------------------------------------------


def _environment(read: OptionReader) -> dict[str, str]:
    """The child's whole environment: the defaults and the ``env`` table."""
    env = {"PATH": DEFAULT_PATH, "LC_ALL": "C.UTF-8"}
    table = read.table("env", expected='a table like { TZ = "UTC" }')
    for key, value in (table or {}).items():
        name = str(key)
        if not _ENV_NAME.fullmatch(name):
            read.report(f"env.{name}", "a variable name: letters, digits and _", show(name))
        elif not isinstance(value, str) or "\0" in value:
            read.report(f"env.{name}", "a string (without NUL)", show(value))
        else:
            env[name] = value
    return env


def _cwd(read: OptionReader) -> str:
    cwd = read.absolute_path("cwd", "/")
    if read.has("cwd") and cwd != "/" and not os.path.isdir(cwd):
        read.report("cwd", "an existing folder", f"{show(cwd)} (no such folder)")
    return cwd


_ARGV_EXPECTED = (
    'the program and its arguments, a list like ["/usr/bin/vcgencmd", "measure_temp"] '
    "(no shell: a string is never split)"
)


def _argv(read: OptionReader, key: str, value: Any, path: str) -> tuple[str, ...] | None:
    """``value`` as an argument list whose program exists; problems go to ``key``."""
    if not isinstance(value, list) or not value:
        read.report(key, _ARGV_EXPECTED, show(value))
        return None
    argv: list[str] = []
    for index, item in enumerate(value, start=1):
        if not isinstance(item, str) or "\0" in item or (index == 1 and not item):
            read.report(f"{key}[{index}]", "a string (without NUL)", show(item))
            return None
        argv.append(item)
    program = _program(read, f"{key}[1]", argv[0], path)
    if program is None:
        return None
    return (program, *argv[1:])


def _program(read: OptionReader, key: str, name: str, path: str) -> str | None:
    """The absolute path of ``name``: itself if absolute, else found on ``path``."""
    if os.path.isabs(name):
        if not os.path.isfile(name):
            read.report(key, "an executable program", f"{show(name)} (no such program)")
            return None
        if not os.access(name, os.X_OK):
            read.report(key, "an executable program", f"{show(name)} (not executable)")
            return None
        return name
    if "/" in name:
        read.report(key, "an absolute path or a program name found on PATH", show(name))
        return None
    found = shutil.which(name, path=path)
    if found is None:
        read.report(
            key,
            "an absolute path or a program name found on PATH",
            f"{show(name)} (not found in {path})",
        )
        return None
    return os.path.abspath(found)


def _timeout(read: OptionReader, default: float) -> float | None:
    """``timeout`` if given (None when absent); ``default`` stands in for a wrong one."""
    if not read.has("timeout"):
        return None
    return read.number("timeout", default, above=0, expected="seconds, a number > 0")


# -- exec ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecOptions:
    """A checked ``exec`` device. ``timeout`` None: the default for its interval."""

    argv: tuple[str, ...]
    timeout: float | None
    parse: str
    field: str
    scale: float
    offset: float
    meta: Mapping[str, str | None]
    env: Mapping[str, str]
    cwd: str

    def timeout_for(self, interval: float) -> float | None:
        """The timeout of a device polled every ``interval`` seconds: the one given, or
        10 s, or half the interval when that is shorter. None: the one given is not below
        the interval (each reading would run into the next)."""
        if self.timeout is None:
            return min(EXEC_DEFAULT_TIMEOUT, interval / 2)
        return self.timeout if self.timeout < interval else None

    def reading(self, timeout: float) -> Callable[[], dict[str, Any]]:
        """The telemetry handler: run the program once, parse what it printed."""

        def read() -> dict[str, Any]:
            outcome = run_program(self.argv, timeout=timeout, env=self.env, cwd=self.cwd)
            if outcome.status != 0:
                raise CommandFailed(_failure(self.argv[0], outcome))
            if self.parse == "json":
                return parse_json(self.argv[0], outcome.stdout)
            number = parse_number(
                self.argv[0], outcome.stdout, scale=self.scale, offset=self.offset
            )
            return {self.field: number}

        return read


class ExecType:
    """``type = "exec"`` (see the module docstring)."""

    name = "exec"
    default_interval: float | None = 60.0

    def check(self, options: Mapping[str, Any], problem: Problem) -> ExecOptions | None:
        read = OptionReader(self.name, options, problem, known=_EXEC_KEYS)
        env = _environment(read)
        cwd = _cwd(read)
        argv: tuple[str, ...] | None = None
        if read.has("command"):
            argv = _argv(read, "command", options["command"], env["PATH"])
        else:
            read.report("command", _ARGV_EXPECTED, "nothing")
        timeout = _timeout(read, EXEC_DEFAULT_TIMEOUT)
        parse = read.string("parse", "number", choices=("number", "json"))
        if parse == "json":
            for key in _NUMBER_ONLY:
                if read.has(key):
                    read.report(
                        key,
                        'nothing with parse = "json" (the object is published as it is)',
                        show(options[key]),
                    )
        field = read.string(
            "field", "value", pattern=_FIELD, expected="a state key: letters, digits and _"
        )
        scale = read.number("scale", 1.0, nonzero=True)
        offset = read.number("offset", 0.0)
        meta = read.entity_meta(options, "", state_class="measurement")
        if argv is None or read.count:
            return None
        return ExecOptions(argv, timeout, parse, field, scale, offset, meta, env, cwd)

    def register(self, router: Router, spec: DeviceSpec, options: ExecOptions) -> None:
        interval = spec.interval if spec.interval is not None else self.default_interval
        assert interval is not None
        timeout = options.timeout_for(interval)
        if timeout is None:
            # check() does not see the interval; agent check reports this from build_app.
            raise ConfigError(
                key=f"{spec.key}.timeout",
                expected=f"seconds below the device's interval ({interval:g})",
                found=show(options.timeout),
            )
        entities: list[Entity] = []
        if options.parse == "number":
            # The device's one value: "" names the entity after the device.
            entities.append(entity_of(options.field, options.meta, name=""))
        add_polled(
            router,
            spec,
            options.reading(timeout),
            default_interval=interval,
            entities=entities,
        )


# -- exec_command --------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandOptions:
    """A checked ``exec_command`` device: its programs by name."""

    commands: Mapping[str, tuple[str, ...]]
    timeout: float
    env: Mapping[str, str]
    cwd: str

    def choose(self, payload: str) -> str:
        """The configured name ``payload`` asks for: ``reboot`` or ``{"command": "reboot"}``.
        Anything else raises InvalidPayload, before any process could start."""
        text = payload.strip()
        name: Any = None
        if len(text) <= _MAX_CHOICE:
            if text.startswith("{"):
                try:
                    data = json.loads(text)
                except ValueError:
                    data = None
                if isinstance(data, dict) and len(data) == 1:
                    name = data.get("command")
            else:
                name = text
        # Only an exact configured name passes: the payload selects, it is never used.
        if isinstance(name, str) and name in self.commands:
            return name
        valid = ", ".join(self.commands)
        raise InvalidPayload(
            f'expected one of {valid} (as plain text or as {{"command": "<name>"}}), '
            f"got {show(payload)}"
        )

    def run(self, name: str) -> tuple[dict[str, Any], Exception | None]:
        """Run entry ``name``: the state to publish, and the error to report if it failed."""
        argv = self.commands[name]
        state: dict[str, Any] = {"command": name, "exit_code": None, "output": ""}
        try:
            outcome = run_program(
                argv, timeout=self.timeout, env=self.env, cwd=self.cwd, limit=None
            )
        except TimeoutError as exc:
            return {**state, "result": "timeout"}, exc
        except CommandFailed as exc:
            return {**state, "result": "not_started"}, exc
        state["exit_code"] = outcome.status if outcome.status >= 0 else None
        state["output"] = _last_line(outcome.stdout)
        if outcome.status != 0:
            error = CommandFailed(f"command {name!r}: {_failure(argv[0], outcome)}")
            return {**state, "result": "failed"}, error
        return {**state, "result": "ok"}, None


class ExecCommandType:
    """``type = "exec_command"`` (see the module docstring)."""

    name = "exec_command"
    default_interval: float | None = None

    def check(self, options: Mapping[str, Any], problem: Problem) -> CommandOptions | None:
        read = OptionReader(self.name, options, problem, known=_COMMAND_KEYS)
        env = _environment(read)
        cwd = _cwd(read)
        expected = 'a table of named programs like { reboot = ["/usr/bin/sudo", "/sbin/reboot"] }'
        table = read.table("commands", expected=expected)
        if not read.has("commands"):
            read.report("commands", expected, "nothing")
        elif table is not None and not table:
            read.report("commands", expected, "an empty table")
        commands: dict[str, tuple[str, ...]] = {}
        for key, value in (table or {}).items():
            name = str(key)
            if not _NAME.fullmatch(name):
                read.report(
                    "commands",
                    "command names of letters, digits, - and _ (at most 64 characters)",
                    show(name),
                )
                continue
            argv = _argv(read, f"commands.{name}", value, env["PATH"])
            if argv is not None:
                commands[name] = argv
        timeout = _timeout(read, COMMAND_DEFAULT_TIMEOUT) or COMMAND_DEFAULT_TIMEOUT
        if read.count:
            return None
        return CommandOptions(commands, timeout, env, cwd)

    def register(self, router: Router, spec: DeviceSpec, options: CommandOptions) -> None:
        def serve(ctx: DeviceContext) -> None:
            def on_command(command: Command) -> None:
                state, error = options.run(options.choose(command.payload))
                ctx.publish_state(state)
                if error is not None:
                    raise error

            # A handler registered here, not add_command: its failures are reported and
            # never counted towards a restart, so refused payloads cannot get it given up.
            ctx.on_command(on_command)

        router.add_device(
            spec.name,
            serve,
            enabled=spec.enabled,
            timeout=options.timeout + _GRACE * 2 + _STALL_MARGIN,
            entities=[
                Entity(name, component="button", name=name, payload_on=name)
                for name in options.commands
            ],
        )


EXEC = ExecType()
EXEC_COMMAND = ExecCommandType()
TYPES = (EXEC, EXEC_COMMAND)
