"""Logging: JSON lines or human text on stderr, an optional rotating file, and no secrets.

``configure_logging(settings.logging, service="myapp", version="1.2.0")`` is all an
application calls. It replaces the root logger's handlers, so every library that logs
through :mod:`logging` ends up in the same format.

The module is named ``logs`` rather than ``logging`` so that ``import logging`` inside the
package still finds the standard library.

Secrets: :func:`register_secret` adds a string (the loader registers every password it
reads) that is then replaced by ``***`` in every record that reaches a handler installed
here: in the message, its arguments, the exception text and the stack. A password passed to
``log.info("connecting with %s", password)`` by mistake never reaches a file or the journal.
"""

from __future__ import annotations

import datetime
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

try:  # python-json-logger 3.x / 4.x
    from pythonjsonlogger.json import JsonFormatter as _LibJsonFormatter
except ImportError:  # 2.0.x (Debian 12): the old module, which 3.x+ deprecates on import
    from pythonjsonlogger.jsonlogger import (  # type: ignore[no-redef]
        JsonFormatter as _LibJsonFormatter,
    )

if TYPE_CHECKING:
    from agent.settings import LoggingSettings

__all__ = [
    "JsonFormatter",
    "SecretFilter",
    "TextFormatter",
    "configure_logging",
    "redact",
    "redact_data",
    "register_secret",
]

REDACTED = "***"

_secrets: frozenset[str] = frozenset()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Never let ``value`` appear in a log line again (in this process).

    Empty values are ignored. Even a very short secret is honoured: an unreadable log line
    is a smaller harm than a leaked password.
    """
    global _secrets
    if not value:
        return
    with _secrets_lock:
        # Copy-on-write: readers (every log call, any thread) take the frozenset lock-free.
        _secrets = _secrets | {value}


def redact(text: str) -> str:
    """Replace every registered secret in ``text`` with ``***``."""
    secrets = _secrets
    if not secrets or not text:
        return text
    # Longest first, so that a secret containing another is hidden whole.
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_data(value: object) -> object:
    """:func:`redact` every string value in plain JSON data, for what goes on the wire:
    redacting the JSON text instead would miss a secret JSON escapes (a quote in it). Keys
    are left alone (names a consumer parses, and two could become one)."""
    if not _secrets:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_data(item) for item in value]
    return value


# Attributes every LogRecord has; anything else was passed with ``extra=``.
_STANDARD_ATTRS = frozenset(
    set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
)


class SecretFilter(logging.Filter):
    """Rewrites a record so that no registered secret survives, then lets it through.

    The message is formatted here (``msg % args``) and stored back without arguments, so a
    secret passed as an argument is caught too. The exception text is rendered and redacted
    into ``exc_text``, which the formatters below use instead of re-rendering ``exc_info``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        if isinstance(record.msg, dict) and not record.args:
            # Structured message: the JSON formatter turns its keys into fields; keep it a dict.
            record.msg = _redact_value(record.msg)
        else:
            try:
                message = record.getMessage()
            except Exception:  # bad format arguments: still never print a secret
                message = f"{record.msg} {record.args!r}"
            record.msg = redact(message)
            record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS:
                record.__dict__[key] = _redact_value(value)
        return True


def _redact_value(value: Any) -> Any:
    """Redact strings inside plain data (dicts, lists); other objects pass unchanged."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(item) for item in value]
    return value


def _utc_iso(created: float) -> str:
    """``2026-11-24T05:00:00.123+00:00``: UTC, milliseconds, explicit offset."""
    moment = datetime.datetime.fromtimestamp(created, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds")


class JsonFormatter(_LibJsonFormatter):
    """One JSON object per line: the shape log collectors (journald, Loki, ...) expect.

    Fields: ``timestamp`` (UTC ISO-8601), ``level``, ``logger``, ``message``, ``service``,
    ``version`` (left out when empty), then any ``extra=`` fields, ``exception`` (the
    formatted traceback) and ``stack_info`` when present. Newlines inside a traceback are
    escaped by JSON, so a record is always exactly one line.

    Built on python-json-logger's formatter for serialisation (dates, odd objects), with
    the field set chosen here so it is the same on python-json-logger 2.0 and 4.x.
    """

    def __init__(self, service: str = "", version: str = "") -> None:
        super().__init__(json_ensure_ascii=False)
        self.service = service
        self.version = version

    def add_fields(
        self,
        log_record: dict[str, Any],
        record: logging.LogRecord,
        message_dict: dict[str, Any],
    ) -> None:
        log_record["timestamp"] = _utc_iso(record.created)
        log_record["level"] = record.levelname
        log_record["logger"] = record.name
        # python-json-logger sets record.message (None or "" when msg is a dict).
        log_record["message"] = redact(getattr(record, "message", None) or "")
        log_record["service"] = self.service
        if self.version:
            log_record["version"] = self.version
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                log_record.setdefault(key, _redact_value(value))
        for key, value in message_dict.items():
            if key not in ("exc_info", "stack_info"):
                log_record.setdefault(key, _redact_value(value))
        # exc_text is what SecretFilter left, already redacted; prefer it.
        exception = record.exc_text or message_dict.get("exc_info")
        if exception:
            log_record["exception"] = redact(str(exception))
        stack = message_dict.get("stack_info")
        if stack:
            log_record["stack_info"] = redact(str(stack))


class TextFormatter(logging.Formatter):
    """``2026-11-24T05:00:00.123+00:00 INFO agent.mqtt: connected`` for people."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc_iso(record.created)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(settings: LoggingSettings, *, service: str, version: str = "") -> None:
    """Send all logging to stderr (and ``settings.file``) in the configured format.

    Removes every handler from the root logger (closing those an earlier call installed),
    installs a stderr handler and, when ``settings.file`` is set, a
    :class:`~logging.handlers.RotatingFileHandler`; each gets the :class:`SecretFilter`.
    Python's warnings are logged too (logger ``py.warnings``), in the same format.

    Raises:
        ConfigError: the log file cannot be opened (key ``logging.file``).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if getattr(handler, "_agent_owned", False):
            handler.close()

    formatter: logging.Formatter
    if settings.format == "json":
        formatter = JsonFormatter(service=service, version=version)
    else:
        formatter = TextFormatter()

    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if settings.file:
        try:
            from logging.handlers import RotatingFileHandler  # pulls in pickle: only here

            handlers.append(
                RotatingFileHandler(
                    settings.file,
                    maxBytes=settings.max_file_bytes,
                    backupCount=settings.backup_count,
                    encoding="utf-8",
                )
            )
        except OSError as err:
            from agent.settings import ConfigError  # settings imports this module
            from agent.settings.conversion import _show

            raise ConfigError(
                source="settings",
                key="logging.file",
                expected="a file the agent can write",
                found=f"{_show(settings.file, limit=200)} ({err.strerror})",
            ) from None

    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(SecretFilter())
        handler._agent_owned = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(settings.level.upper())
    # Python's warnings (a library's "falling back to another pin factory") would otherwise
    # be printed raw on stderr, several lines in the middle of one-object-per-line JSON.
    # Off first: capturing twice is a no-op even if someone restored showwarning since.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
