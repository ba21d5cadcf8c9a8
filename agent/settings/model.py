"""The framework's own settings: :class:`Settings` (the root, with ``load()``) and its sections.

:class:`MqttSettings` and :class:`LoggingSettings` are the sections every application has;
an application subclasses :class:`Settings` to add its own fields.
"""

from __future__ import annotations

import os
import pathlib
import stat
from collections.abc import Iterator, Mapping
from typing import Annotated, ClassVar, Literal, TypeVar

from agent.logs import register_secret
from agent.settings.conversion import _exception_text, _Raw, _show
from agent.settings.errors import RAISE, ConfigError, Problems
from agent.settings.fields import SECRET, SECRET_FILE, at_least, between, greater_than
from agent.settings.section import Section
from agent.settings.sources import _all_paths, _read_dotenv, _read_environ, _read_toml
from agent.topics import prefix_problem

# Annotated, ClassVar, Literal, SECRET, SECRET_FILE and the checks are used at run time, not
# only by type checkers: the field annotations below are strings resolved against this
# module's globals.

__all__ = ["LoggingSettings", "MqttSettings", "Settings"]

_S = TypeVar("_S", bound="Settings")

_PATH_SHOWN = 200  # a path is recognised by its end: show more of it than of other values


class MqttSettings(Section):
    """How to reach the MQTT broker.

    ``hosts`` lists several brokers (a cluster's nodes, or a spare), each "host" or
    "host:port", instead of ``host``: they are tried in order, the next one after each
    failed attempt, round and round; a link that drops is first retried where it was.
    Between connection attempts the agent waits ``reconnect_min_delay``, doubling up to
    ``reconnect_max_delay``: 1.5 s by default, so it is back within 2 s of a broker's
    return, handshake included (an attempt on a broker that is down costs next to nothing).
    ``client_id`` None means "derive one": see :func:`default_client_id`. ``tls`` turns on
    TLS with certificate verification always on (against ``ca_file``, or the system CA
    store when it is None); ``cert_file`` and ``key_file`` add a client certificate.
    ``clean_session = false`` (the default) keeps a persistent session, so QoS 1 commands
    sent while the agent was down are delivered when it comes back. ``topic_prefix`` None
    means the App's name; a prefix is checked by :func:`agent.topics.validate_prefix`, the
    rule the topics are built with. ``offline_buffer_size`` bounds what waits to go to the
    broker (while offline, or while the broker is slower than the agent): that many
    retained topics (latest value each) and that many other messages (ADR-006).
    """

    host: str = "localhost"
    port: Annotated[int, between(1, 65535)] = 1883
    hosts: list[str] = []  # noqa: RUF012 (a Section copies defaults per instance)
    username: str | None = None
    password: Annotated[str | None, SECRET] = None
    password_file: Annotated[str | None, SECRET_FILE] = None
    client_id: str | None = None
    keepalive: Annotated[int, between(5, 65535)] = 60
    topic_prefix: str | None = None
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    clean_session: bool = False
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    reconnect_min_delay: Annotated[float, greater_than(0)] = 1.0
    reconnect_max_delay: Annotated[float, greater_than(0)] = 1.5
    max_payload_bytes: Annotated[int, at_least(1)] = 256 * 1024
    offline_buffer_size: Annotated[int, at_least(1)] = 1000

    def resolved_password(self) -> str | None:
        """The password: ``password`` itself, or the contents of ``password_file``.

        The file is read on every call (so a rotated secret is picked up on reconnect), with
        one trailing newline removed. The value is registered with the log redaction filter.
        """
        if self.password is not None:
            register_secret(self.password)
            return self.password
        if self.password_file is None:
            return None
        try:
            text = pathlib.Path(self.password_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else "not UTF-8"
            raise ConfigError(
                key="mqtt.password_file",
                expected="a readable file holding the password",
                found=f"{_show(self.password_file, limit=_PATH_SHOWN)} ({reason})",
            ) from None
        secret = text[:-1] if text.endswith("\n") else text
        secret = secret[:-1] if secret.endswith("\r") else secret
        register_secret(secret)
        return secret

    def brokers(self) -> list[tuple[str, int]]:
        """The brokers to try, in order, as (host, port): each entry of ``hosts`` ("host",
        "host:port" or "[IPv6]:port"; ``port`` where none is given), else ``host``."""
        if not self.hosts:
            return [(self.host, self.port)]
        return [_broker(entry, self.port) for entry in self.hosts]

    def validate(self) -> None:
        """Cross-field rules; see the class docstring for what each setting means."""
        if self.password is not None and self.password_file is not None:
            raise ConfigError(
                key="password_file",
                detail="password and password_file are both set; keep only one",
            )
        if (self.password is not None or self.password_file) and self.username is None:
            raise ConfigError(
                key="username", expected="a user name when a password is set", found="nothing"
            )
        if self.password_file is not None:
            try:
                self.resolved_password()  # fail at start-up, not at the first connect
            except ConfigError as err:
                err.key = "password_file"
                raise
        if self.client_id is not None and not self.client_id.strip():
            raise ConfigError(key="client_id", expected="a non-empty string", found='""')
        # The runtime's Topics applies the same rule: what passes here runs.
        problem = None if self.topic_prefix is None else prefix_problem(self.topic_prefix)
        if problem is not None:
            raise ConfigError(
                key="topic_prefix",
                expected=_PREFIX_RULE,
                found=f"{_show(self.topic_prefix)} ({problem})",
            )
        if self.hosts:
            if self.host != "localhost":
                raise ConfigError(
                    key="hosts",
                    detail="host and hosts are both set; list every broker in hosts instead",
                )
            self.brokers()  # a bad entry fails at start-up
        if self.reconnect_min_delay > self.reconnect_max_delay:
            raise ConfigError(
                key="reconnect_min_delay",
                expected=f"at most reconnect_max_delay ({self.reconnect_max_delay:g})",
                found=f"{self.reconnect_min_delay:g}",
            )
        if (self.cert_file is None) != (self.key_file is None):
            given = "cert_file" if self.key_file is None else "key_file"
            missing = "key_file" if given == "cert_file" else "cert_file"
            raise ConfigError(
                key=given, detail=f"{given} is set but {missing} is not; set both or neither"
            )
        for name in ("ca_file", "cert_file", "key_file"):
            value = getattr(self, name)
            if value is None:
                continue
            if not self.tls:
                raise ConfigError(
                    key=name, detail=f"{name} is set but tls is false; set tls = true"
                )
            if not os.access(value, os.R_OK):
                raise ConfigError(
                    key=name,
                    expected="a readable file",
                    found=f"{_show(value, limit=_PATH_SHOWN)} (missing)",
                )


def _broker(entry: str, default_port: int) -> tuple[str, int]:
    host, port = entry.strip(), str(default_port)
    if host.startswith("["):  # [IPv6] or [IPv6]:port
        inner, closed, rest = host[1:].partition("]")
        host, port = inner, rest[1:] if rest.startswith(":") else (rest or port)
        if not closed:
            host = ""  # "[::1": refused below
    elif host.count(":") == 1:
        host, port = host.split(":")
    digits = port.isascii() and port.isdigit()
    if not host or not digits or not 1 <= int(port) <= 65535:
        raise ConfigError(
            key="hosts",
            expected='"host", "host:port" or "[IPv6 address]:port" with a port 1-65535',
            found=_show(entry),
        )
    return host, int(port)


# What agent.topics.validate_prefix accepts, said for a person editing a config file.
_PREFIX_RULE = (
    "one or more topic levels separated by '/', each non-empty, without '+', '#', NUL or "
    "control characters and without leading or trailing spaces, the first not starting "
    "with '$'"
)


_LEVELS = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class LoggingSettings(Section):
    """Where logs go and how they look.

    ``format = "json"`` writes one JSON object per line (for journald, Loki and friends);
    ``"text"`` is for a person at a terminal. ``level`` is case-insensitive. With ``file``
    set, logs also go to that file, rotated at ``max_file_bytes`` with ``backup_count``
    old files kept.
    """

    level: _LEVELS = "INFO"
    format: Literal["json", "text"] = "json"
    file: str | None = None
    max_file_bytes: Annotated[int, at_least(1)] = 10 * 1024 * 1024
    backup_count: Annotated[int, at_least(0)] = 3


class Settings(Section):
    """Root settings of an application: subclass it and add your own fields.

    ``env_prefix`` (a class attribute, e.g. ``"MYAPP_"``) is put in front of every
    environment variable name. The base class has none, so it reads ``MQTT__HOST`` and
    ignores unrelated variables.
    """

    env_prefix: ClassVar[str] = ""
    app: str | None = None
    mqtt: MqttSettings = MqttSettings()
    logging: LoggingSettings = LoggingSettings()

    # Filled in by load(); a leading underscore keeps it out of the fields.
    _load_warnings: tuple[str, ...] = ()
    _layers: dict[tuple[str, ...], _Raw] | None = None  # what load() read, by key path

    @classmethod
    def load(
        cls: type[_S],
        *,
        config_file: str | os.PathLike[str] | None = None,
        env_file: str | os.PathLike[str] | None = ".env",
        environ: Mapping[str, str] | None = None,
    ) -> _S:
        """Read every source, check every value and return the settings.

        Sources, each overriding the one before: the class defaults, ``config_file``
        (TOML), ``env_file`` and ``environ`` (``os.environ`` when None). A missing ``.env``
        in the working directory is fine (it is only the default); any other file that is
        named but missing is an error.

        Problems that should not stop the program (a password in a file other users can
        read) are kept for :meth:`load_warnings`.

        Raises:
            ConfigError: the first problem found, as one line naming source and key. It is
                the only exception: whatever else goes wrong while reading, converting or
                validating (a ``validate()`` hook that crashes, a file the TOML parser
                chokes on) is reported as a ConfigError too, the original exception
                chained as its ``__cause__``.
        """
        try:
            return cls._load(config_file, env_file, environ)
        except ConfigError:
            raise
        except Exception as err:
            # A safety net: every known failure is a ConfigError already. Whatever this is,
            # the program was asked to start from these sources; name the main one.
            source = str(config_file) if config_file is not None else "settings"
            raise ConfigError(
                source=source, detail=f"cannot load the settings: {_exception_text(err)}"
            ) from err

    @classmethod
    def check(
        cls: type[_S],
        *,
        config_file: str | os.PathLike[str] | None = None,
        env_file: str | os.PathLike[str] | None = ".env",
        environ: Mapping[str, str] | None = None,
    ) -> tuple[_S | None, list[ConfigError]]:
        """Like :meth:`load`, but find *every* problem instead of stopping at the first.

        Returns ``(settings, [])`` when all is well, else ``(None, problems)`` in the order
        found, one :class:`ConfigError` each. A file that cannot be parsed at all is one
        problem (nothing after a syntax error can be trusted); otherwise each unknown key,
        each refused value and each section's failed cross-field check is its own problem,
        and the rest of the file is still checked. ``agent check`` prints them.
        """
        settings, problems = cls.check_best_effort(
            config_file=config_file, env_file=env_file, environ=environ
        )
        return (None, problems) if problems else (settings, [])

    @classmethod
    def check_best_effort(
        cls: type[_S],
        *,
        config_file: str | os.PathLike[str] | None = None,
        env_file: str | os.PathLike[str] | None = ".env",
        environ: Mapping[str, str] | None = None,
    ) -> tuple[_S | None, list[ConfigError]]:
        """:meth:`check`, and the settings read as far as they go even with problems: each
        refused value replaced by its default (None only when nothing could be read, e.g.
        a file that does not parse). For a checker that goes on to look at what the good
        parts lead to; settings that came with problems must never be used to run."""
        problems = Problems(collect=True)
        settings: _S | None = None
        try:
            settings = cls._load(config_file, env_file, environ, problems)
        except ConfigError as err:
            problems.found.append(err)  # what stops reading altogether: a file unparsable
        except Exception as err:
            source = str(config_file) if config_file is not None else "settings"
            failure = ConfigError(
                source=source, detail=f"cannot load the settings: {_exception_text(err)}"
            )
            problems.found.append(failure)
        return settings, problems.found

    @classmethod
    def _load(
        cls: type[_S],
        config_file: str | os.PathLike[str] | None,
        env_file: str | os.PathLike[str] | None,
        environ: Mapping[str, str] | None,
        problems: Problems = RAISE,
    ) -> _S:
        files: list[tuple[pathlib.Path, dict[tuple[str, ...], _Raw]]] = []
        if config_file is not None:
            config_path = pathlib.Path(config_file)
            files.append((config_path, _read_toml(cls, config_path, problems)))
        if env_file is not None:
            env_path = pathlib.Path(env_file)
            if str(env_file) != ".env" or env_path.exists():
                try:
                    files.append((env_path, _read_dotenv(cls, env_path, problems)))
                except ConfigError as err:
                    problems.report(err)  # a line it cannot parse: the file is skipped
        layers: dict[tuple[str, ...], _Raw] = {}
        for _file, values in files:
            layers.update(values)
        environ = os.environ if environ is None else environ
        layers.update(_read_environ(cls, environ, problems))
        settings = cls._from_layers(layers, (), problems)
        seen = len(problems.found)
        try:
            settings._validate_tree((), problems)
        except ConfigError as err:
            if not err.source:
                _blame(err, layers)
            raise
        for err in problems.found[seen:]:
            if not err.source:
                _blame(err, layers)
        for _path, spec, value in settings._walk():
            if spec.secret and isinstance(value, str):
                register_secret(value)
        settings._load_warnings = tuple(_exposed_secrets(settings, files))
        settings._layers = layers
        return settings

    def blame(self, err: ConfigError) -> ConfigError:
        """Fill in where the value ``err.key`` names came from (file and line, or variable),
        for a value refused after loading: a log file that cannot be opened as the service's
        user is refused only when logging opens it, not by :meth:`load`, which may run as
        someone else (``agent check``)."""
        if self._layers is not None and err.source in ("", "settings"):
            _blame(err, self._layers)
        return err

    def load_warnings(self) -> list[str]:
        """What :meth:`load` found worth a warning but not worth refusing to start, one
        line each (empty for settings built in code).

        Today that is a secret other users can read: a :data:`~agent.settings.SECRET`
        field (``mqtt.password``) set in the TOML or ``.env`` file, or the file named by a
        :data:`~agent.settings.SECRET_FILE` field (``mqtt.password_file``), when that file's
        mode lets "others" read it (``mode & 0o004``; the folders above it are not
        examined). Each line names the file and the ``chmod`` that fixes it, never the
        secret; one line per file. Group-readable is fine: ``0640`` with the service's
        group is the recommended mode.

        :meth:`App.run <agent.App.run>` logs each at WARNING once, right after logging is
        configured; a program that calls :meth:`load` without ``App.run`` should log them
        itself.
        """
        return list(self._load_warnings)


def _exposed_secrets(
    settings: Settings, files: list[tuple[pathlib.Path, dict[tuple[str, ...], _Raw]]]
) -> Iterator[str]:
    """One warning per file that holds a secret and that other users can read."""
    fields = _all_paths(type(settings))
    for path, values in files:
        # Every file is checked, also one whose secret another source overrides: the
        # secret is still written in it.
        keys = [
            ".".join(key)
            for key, raw in values.items()
            if fields[key].secret and raw.value not in (None, "")
        ]
        mode = _others_can_read(path)
        if keys and mode is not None:
            yield _chmod_advice(path, f"holds {', '.join(keys)}", mode)
    for key, spec, value in settings._walk():
        if spec.secret_file and isinstance(value, (str, pathlib.PurePath)) and str(value):
            secret_path = pathlib.Path(value)
            mode = _others_can_read(secret_path)
            if mode is not None:
                yield _chmod_advice(secret_path, f"({'.'.join(key)}) holds a secret", mode)


def _others_can_read(path: pathlib.Path) -> int | None:
    """The permission bits of ``path`` when "others" may read it, else None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # gone or unreachable since it was read: nothing left to protect
    return stat.S_IMODE(mode) if mode & stat.S_IROTH else None


def _chmod_advice(path: pathlib.Path, what: str, mode: int) -> str:
    import shlex

    quoted = shlex.quote(str(path))
    return (
        f"{path} {what} and other users can read it (mode {mode:04o}): run "
        f"chmod 0640 {quoted} if its group is the service's (e.g. root:agent), "
        f"else chmod 0600 {quoted}"
    )


def _blame(err: ConfigError, layers: dict[tuple[str, ...], _Raw]) -> None:
    """Fill in where a value that a validate() hook rejected came from."""
    path = tuple(err.key.split(".")) if err.key else ()
    exact = layers.get(path)
    if exact is not None:
        err.source = exact.source
        err.line = exact.line
        err.variable = exact.variable
        return
    # The key kept its default, or names a whole section (a hook that crashed): blame
    # whatever set a value in that section, else a neighbour of the key.
    inside = [raw for p, raw in layers.items() if len(p) > len(path) and p[: len(path)] == path]
    beside = [raw for p, raw in layers.items() if p[:-1] == path[:-1]]
    raw = next(iter(inside or beside), None)
    err.source = raw.source if raw is not None else "defaults"
