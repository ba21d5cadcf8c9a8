"""SIGTERM and SIGINT, turned into the runtime's shutdown event without a lock in sight.

A Python signal handler runs on the main thread between two bytecodes — possibly in the
middle of ``threading`` code that holds the very lock ``Event.set()`` needs, or in the
middle of itself when a second signal follows the first within microseconds (``timeout``
or a supervisor forwarding the ``kill`` that was also sent to the agent, Ctrl-C pressed
twice). Setting the event there deadlocked the main thread for good. Nor may a handler log:
a reentrant write to the same stream raises.

So the handler here takes no lock and does one plain ``os.write``: the signal's number into
a pipe, which Python's C-level handler also writes to (:func:`signal.set_wakeup_fd`; the
handler's own write covers code that takes the wakeup fd over). :meth:`SignalCatcher.wait`
sleeps in ``poll`` on that pipe and sets the event itself, from ordinary code. Another
thread's ``event.set()`` (a device given up for good) writes a zero byte to the same pipe,
so the wait needs no polling. A process forked meanwhile (``multiprocessing``) gets the
handlers and wakeup fd that were there before, and closes its copy of the pipe: its signals
are its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
from typing import Any

__all__ = ["SignalCatcher"]

log = logging.getLogger("agent.app")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalCatcher:
    """While installed, SIGTERM and SIGINT end :meth:`wait`, which then sets :attr:`event`;
    :meth:`restore` gives back the previous handlers. Outside the main thread (where Python
    allows no signal handlers) it installs nothing and only waits for the event."""

    def __init__(self) -> None:
        self.received = ""
        self._previous: dict[int, Any] = {}
        self._previous_fd = -1
        self._pipe: tuple[int, int] | None = None
        if threading.current_thread() is not threading.main_thread():
            self.event = threading.Event()
            return
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._pipe = (read_fd, write_fd)
        self.event = _WakingEvent(write_fd)

        def handler(signum: int, _frame: object) -> None:
            with contextlib.suppress(OSError):  # full: a byte is waiting already
                os.write(write_fd, bytes((signum,)))

        self._previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, handler)
        _installed.append(self)

    def keep_wakeup_fd(self) -> None:
        """Take the wakeup fd back if code run meanwhile on the main thread (an adapter, a
        lifespan hook: an asyncio loop closing) set another; warns when it had to."""
        if self._pipe is None:
            return
        current = signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)
        if current != self._pipe[1]:
            log.warning(
                "something replaced the signal wakeup fd while the agent started (fd %d): "
                "taken back, so SIGTERM still stops the agent",
                current,
            )

    def wait(self) -> None:
        """Block until a stop signal arrives or another thread sets :attr:`event`."""
        if self._pipe is None:
            self.event.wait()
            return
        read_fd = self._pipe[0]
        poller = select.poll()
        poller.register(read_fd, select.POLLIN)
        while not self.event.is_set():
            poller.poll()
            for number in _drain(read_fd):
                if number in STOP_SIGNALS:
                    self.received = self.received or signal.Signals(number).name
                    self.event.set()

    def restore(self) -> None:
        """Give back the previous handlers and wakeup fd, and close the pipe. Idempotent."""
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        self._previous.clear()
        if self._pipe is not None:
            signal.set_wakeup_fd(self._previous_fd)
            self._close_pipe()
        with contextlib.suppress(ValueError):
            _installed.remove(self)

    def _close_pipe(self) -> None:
        assert self._pipe is not None and isinstance(self.event, _WakingEvent)
        self.event.detach()
        for fd in self._pipe:
            os.close(fd)
        self._pipe = None

    def _forget_in_child(self) -> None:
        """In a forked child: the parent's handlers and pipe are not the child's business."""
        with contextlib.suppress(ValueError, OSError):  # forked from another thread: no handlers
            for sig, old in self._previous.items():
                signal.signal(sig, old)
            signal.set_wakeup_fd(self._previous_fd)
        self._previous.clear()
        if self._pipe is not None:
            # No lock here: a parent's thread may have held it at the fork, and the child
            # has only this one thread.
            assert isinstance(self.event, _WakingEvent)
            self.event._write_fd = None
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None


_installed: list[SignalCatcher] = []


def _after_fork_in_child() -> None:
    while _installed:
        _installed.pop()._forget_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _drain(fd: int) -> bytes:
    """Everything waiting in the non-blocking pipe ``fd``."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 512)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


class _WakingEvent(threading.Event):
    """A :class:`threading.Event` whose ``set()`` also writes a zero byte (no signal's
    number) to a pipe, waking :meth:`SignalCatcher.wait`."""

    def __init__(self, write_fd: int) -> None:
        super().__init__()
        self._write_fd: int | None = write_fd
        self._fd_lock = threading.Lock()  # never taken in a signal handler

    def set(self) -> None:
        super().set()
        with self._fd_lock:
            if self._write_fd is not None:
                with contextlib.suppress(OSError):  # full: the waiter is waking anyway
                    os.write(self._write_fd, b"\0")

    def detach(self) -> None:
        """Stop writing: the pipe is about to close (its number may be reused)."""
        with self._fd_lock:
            self._write_fd = None
