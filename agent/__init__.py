"""agent — an IoT-to-MQTT bridge agent and framework for embedded Linux.

Synchronous and threaded: plain ``def`` handlers, one thread per device, one scheduler
thread, paho-mqtt behind small ports. The public API is gathered here; everything else
in the package is internal.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from agent.app import App, DeviceFailed
from agent.clock import ClockPort, SystemClock
from agent.context import AppContext, Command, DeviceContext
from agent.errors import (
    CommandQueueFull,
    ErrorPayload,
    ErrorPublisher,
    HandlerStalled,
    InvalidPayload,
    PayloadTooLarge,
    RestartsExhausted,
    build_error_payload,
)
from agent.health import DeviceStatus, HealthReporter, HeartbeatPayload, build_will_config
from agent.logs import JsonFormatter, configure_logging
from agent.mqtt.port import (
    MessageCallback,
    MqttConnectionEvents,
    MqttDiagnostics,
    MqttLifecycle,
    MqttMessageHandler,
    MqttPort,
    WillConfig,
)
from agent.persist import (
    DeviceStore,
    PersistPolicy,
    SaveOnChange,
    SaveOnPublish,
    SaveOnShutdown,
)
from agent.retry import (
    BackoffStrategy,
    CircuitBreaker,
    ExponentialBackoff,
    FixedBackoff,
    LinearBackoff,
)
from agent.settings import ConfigError, LoggingSettings, MqttSettings, Settings
from agent.stores import (
    MemoryStore,
    NullStore,
    Store,
    StoreCorrupt,
    StoreError,
    StoreSaveFailed,
    UnstorableData,
)
from agent.strategies import AllStrategy, AnyStrategy, Every, OnChange, PublishStrategy

if TYPE_CHECKING:
    from agent.entities import Entity
    from agent.filters import Filter, MedianFilter, OneEuroFilter, Pt1Filter
    from agent.introspect import build_registry_snapshot
    from agent.mqtt.fakes import MockMqttClient, NullMqttClient
    from agent.mqtt.paho import MqttClient
    from agent.router import Router
    from agent.stores import JsonFileStore, SqliteStore

_LAZY = {
    "Entity": "agent.entities",
    "Filter": "agent.filters",
    "MedianFilter": "agent.filters",
    "OneEuroFilter": "agent.filters",
    "Pt1Filter": "agent.filters",
    "build_registry_snapshot": "agent.introspect",
    "MockMqttClient": "agent.mqtt.fakes",
    "NullMqttClient": "agent.mqtt.fakes",
    "MqttClient": "agent.mqtt.paho",
    "Router": "agent.router",
    "JsonFileStore": "agent.stores",
    "SqliteStore": "agent.stores",
}
"""Public names imported when first asked for (PEP 562), not by ``import agent``: each pulls
in what a running agent may not need — the C++ filters and libstdc++, sqlite3, paho, the
fakes, Home Assistant's entities. A run imports only what its config uses: less memory and
a faster start (ADR-012)."""


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agent' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


__all__ = [
    "AllStrategy",
    "AnyStrategy",
    "App",
    "AppContext",
    "BackoffStrategy",
    "CircuitBreaker",
    "ClockPort",
    "Command",
    "CommandQueueFull",
    "ConfigError",
    "DeviceContext",
    "DeviceFailed",
    "DeviceStatus",
    "DeviceStore",
    "Entity",
    "ErrorPayload",
    "ErrorPublisher",
    "Every",
    "ExponentialBackoff",
    "Filter",
    "FixedBackoff",
    "HandlerStalled",
    "HealthReporter",
    "HeartbeatPayload",
    "InvalidPayload",
    "JsonFileStore",
    "JsonFormatter",
    "LinearBackoff",
    "LoggingSettings",
    "MedianFilter",
    "MemoryStore",
    "MessageCallback",
    "MockMqttClient",
    "MqttClient",
    "MqttConnectionEvents",
    "MqttDiagnostics",
    "MqttLifecycle",
    "MqttMessageHandler",
    "MqttPort",
    "MqttSettings",
    "NullMqttClient",
    "NullStore",
    "OnChange",
    "OneEuroFilter",
    "PayloadTooLarge",
    "PersistPolicy",
    "Pt1Filter",
    "PublishStrategy",
    "RestartsExhausted",
    "Router",
    "SaveOnChange",
    "SaveOnPublish",
    "SaveOnShutdown",
    "Settings",
    "SqliteStore",
    "Store",
    "StoreCorrupt",
    "StoreError",
    "StoreSaveFailed",
    "SystemClock",
    "UnstorableData",
    "WillConfig",
    "__version__",
    "build_error_payload",
    "build_registry_snapshot",
    "build_will_config",
    "configure_logging",
]
