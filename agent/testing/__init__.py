"""Testing your bridge, and the framework itself: an exact fake clock, an in-process harness.

* :class:`AppHarness` — run an App on a mock MQTT client and a fake clock; script time and
  commands; assert on what was published (see :mod:`agent.testing.harness`).
* :class:`FakeClock` — the clock port, moved by the test, exactly.
* :func:`make_settings` — settings from defaults and overrides only (no environment).
* :func:`eventually` — a bounded wait for effects on other threads.

With pytest, the fixtures ``harness``, ``fake_clock``, ``mock_mqtt`` and ``device_context``
come from the plugin :mod:`agent.testing.pytest_plugin`, registered on installation. Importing
:mod:`agent` never imports pytest.
"""

from __future__ import annotations

from agent.testing.clock import FakeClock
from agent.testing.harness import AppHarness, HandlerFailed, Message, make_settings
from agent.testing.waiting import eventually

__all__ = ["AppHarness", "FakeClock", "HandlerFailed", "Message", "eventually", "make_settings"]
