"""Settings: typed classes with defaults, loaded from TOML, .env and the environment.

PROVISIONAL: field declarations are the contract; the loader machinery is being written.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar


class Section:
    """Base of every settings class: annotated class attributes are the fields."""

    def __init__(self, **values: Any) -> None:
        fields = _fields(type(self))
        for key in values:
            if key not in fields:
                raise TypeError(f"{type(self).__name__} has no setting {key!r}")
        for name, default in fields.items():
            setattr(self, name, values[name] if name in values else copy.deepcopy(default))


def _fields(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        for name in getattr(klass, "__annotations__", {}):
            if not name.startswith("_") and name != "env_prefix" and hasattr(klass, name):
                out[name] = getattr(klass, name)
    return out


class MqttSettings(Section):
    host: str = "localhost"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    client_id: str | None = None
    keepalive: int = 60
    topic_prefix: str | None = None
    protocol: str = "3.1.1"
    clean_session: bool = False
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    reconnect_min_delay: float = 1.0
    reconnect_max_delay: float = 60.0
    max_payload_bytes: int = 256 * 1024
    offline_buffer_size: int = 1000


class LoggingSettings(Section):
    level: str = "INFO"
    format: str = "json"
    file: str | None = None
    max_file_bytes: int = 10 * 1024 * 1024
    backup_count: int = 3


class Settings(Section):
    env_prefix: ClassVar[str] = ""
    app: str | None = None
    mqtt: MqttSettings = MqttSettings()
    logging: LoggingSettings = LoggingSettings()
