"""Helpers for testing agents and the framework itself: fakes that make threads deterministic."""

from __future__ import annotations

from agent.testing.clock import FakeClock
from agent.testing.waiting import eventually

__all__ = ["FakeClock", "eventually"]
