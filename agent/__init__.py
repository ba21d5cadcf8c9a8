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
from agent.entities import Entity
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
from agent.filters import Filter, MedianFilter, OneEuroFilter, Pt1Filter
from agent.health import DeviceStatus, HealthReporter, HeartbeatPayload, build_will_config
from agent.introspect import build_registry_snapshot
from agent.logs import JsonFormatter, configure_logging
from agent.mqtt.fakes import MockMqttClient, NullMqttClient
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
from agent.router import Router
from agent.settings import ConfigError, LoggingSettings, MqttSettings, Settings
from agent.stores import (
    JsonFileStore,
    MemoryStore,
    NullStore,
    SqliteStore,
    Store,
    StoreCorrupt,
    StoreError,
    StoreSaveFailed,
    UnstorableData,
)
from agent.strategies import AllStrategy, AnyStrategy, Every, OnChange, PublishStrategy

if TYPE_CHECKING:
    from agent.mqtt.paho import MqttClient


def __getattr__(name: str) -> Any:
    # paho is imported only when the real client is asked for: ``import agent`` stays light
    # for code that uses only the filters, the fakes or the settings.
    if name == "MqttClient":
        from agent.mqtt.paho import MqttClient

        return MqttClient
    raise AttributeError(f"module 'agent' has no attribute {name!r}")


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
