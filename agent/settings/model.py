"""The framework's own settings: :class:`Settings` (the root, with ``load()``) and its sections.

:class:`MqttSettings` and :class:`LoggingSettings` are the sections every application has;
an application subclasses :class:`Settings` to add its own fields.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal, TypeVar

from agent.logs import register_secret
from agent.settings.conversion import _Raw
from agent.settings.errors import ConfigError
from agent.settings.fields import SECRET, at_least, between, greater_than
from agent.settings.section import Section
from agent.settings.sources import _read_dotenv, _read_environ, _read_toml

# Annotated, ClassVar, Literal, SECRET and the checks are used at run time, not only by type
# checkers: the field annotations below are strings resolved against this module's globals.

__all__ = ["LoggingSettings", "MqttSettings", "Settings"]

_S = TypeVar("_S", bound="Settings")


class MqttSettings(Section):
    """How to reach the MQTT broker.

    ``client_id`` None means "derive one": see :func:`default_client_id`. ``tls`` turns on
    TLS with certificate verification always on (against ``ca_file``, or the system CA
    store when it is None); ``cert_file`` and ``key_file`` add a client certificate.
    ``clean_session = false`` (the default) keeps a persistent session, so QoS 1 commands
    sent while the agent was down are delivered when it comes back.
    """

    host: str = "localhost"
    port: Annotated[int, between(1, 65535)] = 1883
    username: str | None = None
    password: Annotated[str | None, SECRET] = None
    password_file: str | None = None
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
    reconnect_max_delay: Annotated[float, greater_than(0)] = 60.0
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
                found=f"{json.dumps(self.password_file)} ({reason})",
            ) from None
        secret = text[:-1] if text.endswith("\n") else text
        secret = secret[:-1] if secret.endswith("\r") else secret
        register_secret(secret)
        return secret

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
        if self.topic_prefix is not None and (
            not self.topic_prefix or re.search(r"[+#\x00]", self.topic_prefix)
        ):
            raise ConfigError(
                key="topic_prefix",
                expected="a topic without wildcards (+, #)",
                found=json.dumps(self.topic_prefix),
            )
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
                    key=name, expected="a readable file", found=f"{json.dumps(value)} (missing)"
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

        Raises:
            ConfigError: the first problem found, as one line naming source and key.
        """
        layers: dict[tuple[str, ...], _Raw] = {}
        if config_file is not None:
            layers.update(_read_toml(cls, pathlib.Path(config_file)))
        if env_file is not None:
            env_path = pathlib.Path(env_file)
            if str(env_file) != ".env" or env_path.exists():
                layers.update(_read_dotenv(cls, env_path))
        layers.update(_read_environ(cls, os.environ if environ is None else environ))
        settings = cls._from_layers(layers, ())
        try:
            settings._validate_tree(())
        except ConfigError as err:
            if not err.source:
                _blame(err, layers)
            raise
        for _path, spec, value in settings._walk():
            if spec.secret and isinstance(value, str):
                register_secret(value)
        return settings


def _blame(err: ConfigError, layers: dict[tuple[str, ...], _Raw]) -> None:
    """Fill in where a value that a validate() hook rejected came from."""
    path = tuple(err.key.split(".")) if err.key else ()
    exact = layers.get(path)
    # A rejected key that kept its default: blame whatever set a neighbour in its section.
    raw = exact or next((r for p, r in layers.items() if p[:-1] == path[:-1]), None)
    if raw is None:
        err.source = "defaults"
        return
    err.source = raw.source
    if exact is not None:
        err.line = exact.line
        err.variable = exact.variable
