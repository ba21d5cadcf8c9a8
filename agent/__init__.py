"""agent — an IoT-to-MQTT bridge agent and framework for embedded Linux.

Synchronous and threaded: plain ``def`` handlers, one thread per device, one scheduler
thread, paho-mqtt behind small ports. The public API is gathered here; everything else
in the package is internal.
"""

from __future__ import annotations

__version__ = "0.1.0"

# Public names are added here as their modules land (see __all__).

__all__ = [
    "__version__",
]
