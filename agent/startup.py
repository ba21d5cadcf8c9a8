"""Start-up without the cyclic garbage collector (ADR-012, decision 9).

Starting the agent — importing paho and the runtime, reading the config, building devices
and threads — creates tens of thousands of objects and next to no garbage. The collector
does not know that: it runs a pass every 700 new objects, and now and then a full one
over everything alive, which is 5-10 % of a start here (more on a Pi Zero). So the start
runs with the collector paused, and it is switched back on once the agent is serving.

:func:`pause` and :func:`resume` pair up in three places: ``import agent`` pauses for its
own imports and resumes at their end; the command line pauses before it reads the config
(and imports the app's module); :meth:`agent.App.run` pauses too (for programs that call
it themselves) and resumes once the runtime is built — before adapters, lifespan and
``on_configure`` hooks and device threads run: user code at start runs with the collector
as the program set it. Both are idempotent. Whether the collector was on is looked at when
pausing: a program that turned it off before keeps it off, and one that turns it off while
its module is imported under the command line gets it back on. A process forked while the
collector is paused starts with it on. Measured (spawn to first state, 30 alternating
runs): 3-6 ms of ~120.
"""

from __future__ import annotations

import gc
import os
import threading

__all__ = ["pause", "resume"]

_lock = threading.Lock()  # two Apps may start at once in one program (tests do)
_paused_by_us = False


def pause() -> None:
    """Turn the cyclic collector off until :func:`resume`, if it is on."""
    global _paused_by_us
    with _lock:
        if gc.isenabled():
            gc.disable()
            _paused_by_us = True


def resume() -> None:
    """Turn the collector back on if :func:`pause` turned it off."""
    global _paused_by_us
    with _lock:
        if _paused_by_us:
            _paused_by_us = False
            gc.enable()


def _in_forked_child() -> None:
    # The child of a fork during the pause (multiprocessing's default on Linux) would
    # otherwise run without the collector for life: nothing in it resumes.
    global _lock, _paused_by_us
    _lock = threading.Lock()
    if _paused_by_us:
        _paused_by_us = False
        gc.enable()


os.register_at_fork(after_in_child=_in_forked_child)
