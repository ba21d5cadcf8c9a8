"""Telling systemd how the agent is doing: the ``sd_notify(3)`` protocol, without libsystemd.

**What ``Type=notify`` is.** With ``Type=simple`` systemd considers a service started the
moment its process exists, so units ordered ``After=agent.service`` may start while the
agent is still reading its config. With ``Type=notify`` systemd waits until the service
*says* it is ready. It says so, and more, by sending small text datagrams to the
``AF_UNIX`` socket whose address systemd puts in ``$NOTIFY_SOCKET`` (a path such as
``/run/systemd/notify``, or ``@name`` for a Linux abstract socket). That is all
``sd_notify(3)`` does, so this module speaks the protocol with the standard library and the
project does not depend on python-systemd.

**What we send, and when** (the runtime decides when; this module only delivers):

* ``READY=1`` once: after the config is validated, adapters are entered, the lifespan and
  ``on_configure`` hooks have run and the device threads are started. It does *not* wait
  for the MQTT broker: a broker that is down is something the agent rides out by
  reconnecting, not a failed start, and waiting for it would make boot order matter.
* ``STATUS=<one line>`` when the agent's health changes; ``systemctl status agent`` shows it
  as ``Status: "..."``. :meth:`SystemdNotifier.status` sends only when the line changed, so
  the runtime may call it as often as it likes.
* ``STOPPING=1`` when shutdown begins, so systemd shows "deactivating" instead of wondering
  why the service is slow.
* ``WATCHDOG=1`` every :attr:`~Notifier.watchdog_interval` seconds while the agent is sound.
  We never send ``MAINPID=``: the agent is the main process systemd started.

**What ``WatchdogSec=`` does.** With ``WatchdogSec=60`` in the unit, systemd expects a
``WATCHDOG=1`` at least every 60 seconds; if one is late it kills the service (``SIGABRT``
by default, see ``WatchdogSignal=``) and, with ``Restart=on-failure`` or
``Restart=on-watchdog``, starts it again. That catches the failures a crash does not: a
deadlock, or a process alive but no longer doing its job. systemd passes the timeout as
``$WATCHDOG_USEC`` (and the process it is meant for as ``$WATCHDOG_PID``, because children
inherit the environment); like ``sd_watchdog_enabled(3)`` recommends, we ping at *half*
the timeout so that one late ping is not yet fatal. A unit for the agent::

    [Service]
    Type=notify
    ExecStart=/usr/bin/agent --config /etc/agent.toml
    WatchdogSec=60
    Restart=on-failure

**Outside systemd** (a terminal, a container, the tests) ``$NOTIFY_SOCKET`` is not set,
:func:`notifier_from_environment` returns a :class:`NullNotifier`, and every call is a
no-op: silent and free, so the runtime calls the notifier unconditionally.

A notification must never take the agent down: :class:`SystemdNotifier` never raises into
its caller. A failed send is logged (a WARNING the first time each kind of error happens,
DEBUG after that) and the next call simply tries again, because the receiver may come back
(``systemctl daemon-reexec`` re-creates the socket).

This module reads no clock: it only does I/O. Deciding *when* to ping is the runtime's job,
with :mod:`agent.clock` like every other timer.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

__all__ = [
    "SEND_TIMEOUT",
    "STATUS_MAX_CHARS",
    "Notifier",
    "NullNotifier",
    "SystemdNotifier",
    "notifier_from_environment",
    "status_line",
    "watchdog_interval_from_environment",
]

logger = logging.getLogger("agent.systemd")

#: Longest ``STATUS=`` text we send, in characters. ``systemctl status`` shows the status on
#: one line of a terminal, so more is never read; and 200 characters stay far below the
#: 4096-byte datagram systemd accepts even if every one of them takes 4 bytes in UTF-8.
STATUS_MAX_CHARS = 200

#: Longest time, in seconds, one send may block. A datagram to a Unix socket blocks only
#: while the receiver's queue is full (Linux queues just ``net.unix.max_dgram_qlen``
#: datagrams, 10 by default, per receiver), i.e. while systemd is too busy to read. We wait
#: that out briefly, as ``sd_notify(3)`` does, rather than drop ``READY=1`` at a busy boot;
#: but never forever, because the caller is one of the agent's own threads.
SEND_TIMEOUT = 2.0

# sd_notify(3) sends with MSG_NOSIGNAL so that a vanished receiver can never raise SIGPIPE
# in the sender; not every platform has the flag, and 0 means "no flags".
_MSG_NOSIGNAL: int = getattr(socket, "MSG_NOSIGNAL", 0)

# sizeof(struct sockaddr_un.sun_path) on Linux. A path needs its terminating NUL inside it;
# an abstract name (which starts with a NUL instead) may use all 108 bytes.
_SUN_PATH_SIZE = 108


@runtime_checkable
class Notifier(Protocol):
    """The port through which the runtime tells the service manager how the agent is doing.

    Every method is fire-and-forget and thread-safe: it returns quickly, never raises, and
    may be called from any thread. Two implementations: :class:`SystemdNotifier` under
    systemd and :class:`NullNotifier` everywhere else; :func:`notifier_from_environment`
    picks one. A test double only needs these five methods and the property.
    """

    def ready(self) -> None:
        """Start-up is complete (``READY=1``). Send once."""
        ...

    def status(self, text: str) -> None:
        """Show ``text`` as the service's one-line status (``STATUS=``), if it changed."""
        ...

    def stopping(self) -> None:
        """Shutdown has begun (``STOPPING=1``)."""
        ...

    def watchdog(self) -> None:
        """The agent is still sound (``WATCHDOG=1``); send every :attr:`watchdog_interval`."""
        ...

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between two :meth:`watchdog` calls, or ``None`` when nobody watches."""
        ...

    def close(self) -> None:
        """Release what the notifier holds. Idempotent; a later call re-opens lazily."""
        ...


class NullNotifier:
    """The notifier outside systemd: every call does nothing, and costs next to nothing.

    No socket, no lock, no state (``__slots__ = ()``), so the runtime can call it on every
    health change and at every tick without a second thought.
    """

    __slots__ = ()

    def ready(self) -> None:
        """Do nothing."""

    def status(self, text: str) -> None:
        """Do nothing."""

    def stopping(self) -> None:
        """Do nothing."""

    def watchdog(self) -> None:
        """Do nothing."""

    @property
    def watchdog_interval(self) -> None:
        """Always ``None``: outside systemd there is no watchdog to feed."""
        return None

    def close(self) -> None:
        """Do nothing."""

    def __repr__(self) -> str:
        return "NullNotifier()"


class SystemdNotifier:
    """Send ``sd_notify(3)`` datagrams to ``notify_socket`` (the value of ``$NOTIFY_SOCKET``).

    ``notify_socket`` is an absolute path or ``@name``, an abstract socket name (the ``@``
    stands for the leading NUL byte of the real address); anything else raises
    :class:`ValueError`. ``watchdog_interval`` is what :attr:`watchdog_interval` returns:
    the seconds between two pings, normally half of ``$WATCHDOG_USEC`` as computed by
    :func:`watchdog_interval_from_environment`. ``send_timeout`` bounds one send (see
    :data:`SEND_TIMEOUT`).

    One unbound ``AF_UNIX`` datagram socket is opened at the first send and kept; each
    message goes out with ``sendto``, so nothing ties the socket to one receiver and a
    receiver that was re-created (same address, new socket) gets the next message. A lock
    serialises sends: datagrams are atomic anyway, but the lazy socket, the "status
    changed?" check and the error bookkeeping are shared state.

    Never raises from a notification: see :meth:`_send`.
    """

    def __init__(
        self,
        notify_socket: str,
        *,
        watchdog_interval: float | None = None,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        if watchdog_interval is not None and not watchdog_interval > 0:
            raise ValueError(
                f"watchdog_interval must be positive or None, not {watchdog_interval!r}"
            )
        if not send_timeout > 0:
            raise ValueError(f"send_timeout must be positive, not {send_timeout!r}")
        self._notify_socket = notify_socket
        self._address = _socket_address(notify_socket)
        self._watchdog_interval = watchdog_interval
        self._send_timeout = send_timeout
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        # The last STATUS text systemd actually received; None before the first one.
        self._last_status: str | None = None
        # Kinds of failure already logged at WARNING (see _error_key).
        self._warned: set[tuple[str, object]] = set()

    @property
    def notify_socket(self) -> str:
        """The address as given (``/run/systemd/notify`` or ``@name``)."""
        return self._notify_socket

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between two :meth:`watchdog` calls, or ``None`` without a watchdog."""
        return self._watchdog_interval

    def ready(self) -> None:
        """Send ``READY=1``."""
        self._send("READY=1")

    def status(self, text: str) -> None:
        """Send ``STATUS=`` with :func:`status_line` of ``text``, unless systemd has it already.

        "Already" means: the last status that was *delivered* is the same line. A status
        whose send failed does not count, so calling again with it retries it.
        """
        line = status_line(text)
        self._send(f"STATUS={line}", status=line)

    def stopping(self) -> None:
        """Send ``STOPPING=1``."""
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        """Send ``WATCHDOG=1``."""
        self._send("WATCHDOG=1")

    def close(self) -> None:
        """Close the socket, if one is open. Idempotent; the next send opens a new one."""
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def __repr__(self) -> str:
        return (
            f"SystemdNotifier({self._notify_socket!r}, "
            f"watchdog_interval={self._watchdog_interval!r})"
        )

    def _send(self, message: str, *, status: str | None = None) -> None:
        """Deliver ``message``; on failure log it and return, never raise.

        With ``status`` set, skip the send if that status is the last one delivered, and
        remember it once delivered. The check and the send happen under one lock so that
        two threads reporting different statuses leave ``_last_status`` telling the truth.
        """
        # "replace" because a status may carry text from anywhere (an exception message, a
        # lone surrogate from a decoded file name) and must not fail to encode.
        data = message.encode("utf-8", "replace")
        with self._lock:
            if status is not None and status == self._last_status:
                return
            error = self._deliver(data)
            if error is None:
                if status is not None:
                    self._last_status = status
                return
            key = _error_key(error)
            first_time = key not in self._warned
            self._warned.add(key)
        # Logging outside the lock: a slow log handler must not hold up other senders.
        name = message.partition("=")[0]
        logger.log(
            logging.WARNING if first_time else logging.DEBUG,
            "systemd notification %s to NOTIFY_SOCKET=%s failed: %s; the agent carries on "
            "and tries again with the next notification",
            name,
            self._notify_socket,
            _describe(error),
        )

    def _deliver(self, data: bytes) -> Exception | None:
        """Send one datagram (lock held); return the error instead of raising it.

        Any exception counts, not only :class:`OSError`: whatever goes wrong here, the
        caller is a thread of the agent that must keep running.
        """
        try:
            if self._socket is None:
                self._socket = _open_socket(self._send_timeout)
            self._socket.sendto(data, _MSG_NOSIGNAL, self._address)
        except Exception as error:
            # The socket (if it was opened) is kept: an unbound datagram socket is not
            # harmed by a failed sendto, and the receiver may be back at the next call.
            return error
        return None


def notifier_from_environment(
    environ: Mapping[str, str] = os.environ, pid: int | None = None
) -> Notifier:
    """Return the notifier this process should use, read from its environment.

    ``$NOTIFY_SOCKET`` unset → :class:`NullNotifier`, silently (not under systemd, or not
    ``Type=notify``). Set to an absolute path or an ``@abstract`` name →
    :class:`SystemdNotifier`, with the watchdog interval of
    :func:`watchdog_interval_from_environment`. Set to anything else (a relative path, an
    empty string) → :class:`NullNotifier` and one WARNING, because someone meant to
    configure this and got it wrong.

    ``pid`` is this process's id (default :func:`os.getpid`, read at call time so that a
    forked child asks for its own); it decides whether ``$WATCHDOG_PID`` means us.
    """
    notify_socket = environ.get("NOTIFY_SOCKET")
    if notify_socket is None:
        return NullNotifier()
    try:
        _socket_address(notify_socket)
    except ValueError as error:
        logger.warning("%s; systemd notifications are off", error)
        return NullNotifier()
    interval = watchdog_interval_from_environment(environ, pid)
    return SystemdNotifier(notify_socket, watchdog_interval=interval)


def watchdog_interval_from_environment(
    environ: Mapping[str, str] = os.environ, pid: int | None = None
) -> float | None:
    """Seconds between two ``WATCHDOG=1`` pings, or ``None`` when no watchdog is set up.

    Follows ``sd_watchdog_enabled(3)``: the watchdog is on when ``$WATCHDOG_USEC`` is a
    positive integer (microseconds) and ``$WATCHDOG_PID`` is either unset or our ``pid``
    (default :func:`os.getpid`). A ``$WATCHDOG_PID`` naming another process means the
    variables were inherited from a parent that is the one being watched. The result is
    *half* the timeout, the ping period systemd recommends.

    Values systemd would never write (not a number, zero, negative) give ``None`` and one
    WARNING: somebody set them by hand, and pinging on a guess would hide the mistake.
    """
    raw_usec = environ.get("WATCHDOG_USEC")
    if raw_usec is None:
        return None
    usec = _positive_int(raw_usec)
    if usec is None:
        logger.warning(
            "WATCHDOG_USEC=%r is not a positive number of microseconds; watchdog pings are off",
            raw_usec,
        )
        return None
    raw_pid = environ.get("WATCHDOG_PID")
    if raw_pid is not None:
        watched = _positive_int(raw_pid)
        if watched is None:
            logger.warning("WATCHDOG_PID=%r is not a process id; watchdog pings are off", raw_pid)
            return None
        own = os.getpid() if pid is None else pid
        if watched != own:
            # Normal, not a mistake: we inherited the watchdog of the process that started us.
            logger.debug("WATCHDOG_PID=%d is not us (%d); watchdog pings are off", watched, own)
            return None
    return usec / 2 / 1_000_000


def status_line(text: str) -> str:
    """Make ``text`` fit a ``STATUS=`` message: one line, at most :data:`STATUS_MAX_CHARS`.

    Every run of whitespace, newlines included, becomes one space (the protocol separates
    assignments by newlines, so a newline would start a new, bogus one); NUL bytes become
    spaces too (systemd drops a message that contains one). Text longer than the cap is cut
    and ends in ``…`` so that the cut is visible.
    """
    line = " ".join(text.replace("\0", " ").split())
    if len(line) > STATUS_MAX_CHARS:
        line = line[: STATUS_MAX_CHARS - 1].rstrip() + "…"
    return line


def _socket_address(notify_socket: str) -> str:
    """Turn ``$NOTIFY_SOCKET`` into a ``sendto`` address, as ``sd_notify(3)`` does.

    Raise :class:`ValueError` (with a message fit for the log) unless it is an absolute
    path or ``@`` followed by an abstract name, short enough for ``sockaddr_un``.
    """
    if notify_socket.startswith("@") and len(notify_socket) > 1:
        address = "\0" + notify_socket[1:]
        limit = _SUN_PATH_SIZE
    elif notify_socket.startswith("/"):
        address = notify_socket
        limit = _SUN_PATH_SIZE - 1  # room for the terminating NUL
    else:
        raise ValueError(
            f"NOTIFY_SOCKET={notify_socket!r} is neither an absolute path "
            "nor an abstract socket name (@name)"
        )
    if len(os.fsencode(address)) > limit:
        raise ValueError(f"NOTIFY_SOCKET={notify_socket!r} is longer than a socket address")
    return address


def _open_socket(send_timeout: float) -> socket.socket:
    """Open the sending socket, with sends bounded by ``send_timeout`` seconds.

    The bound is the kernel's ``SO_SNDTIMEO``, not :meth:`socket.socket.settimeout`: with
    the latter Python polls for "writable", which an unconnected datagram socket always
    is, and so spins a CPU core for the whole timeout while systemd's queue is full.
    ``SO_SNDTIMEO`` sleeps in the kernel until there is room, then fails with ``EAGAIN``.
    Python sockets are close-on-exec already, so no child inherits this one.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        # struct timeval is two longs, or two 64-bit integers where time_t is 64-bit
        # (64-bit Linux, and 32-bit Raspberry Pi OS built with 64-bit time). Ask the
        # kernel for the current value to learn which size it expects.
        current = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, 16)
        layout = {16: "@qq", 8: "@ii"}.get(len(current))
        if layout is not None:
            seconds = int(send_timeout)
            micros = int((send_timeout - seconds) * 1_000_000)
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack(layout, seconds, micros)
            )
    except (OSError, AttributeError):
        # No SO_SNDTIMEO here: sends block like sd_notify(3)'s own, which is still correct.
        logger.debug("cannot bound send time of the systemd notification socket")
    return sock


def _positive_int(text: str) -> int | None:
    """``text`` as a positive decimal integer, or ``None``.

    Strict on purpose: ASCII digits only (``int()`` would also take ``" 5"``, ``"+5"``,
    ``"1_000"`` and non-ASCII digits), as systemd writes these variables.
    """
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value > 0 else None


def _error_key(error: Exception) -> tuple[str, object]:
    """What makes two failures "the same error" for the once-per-error WARNING.

    The exception type and errno: ``ENOENT`` (socket file gone) and ``ECONNREFUSED`` (file
    there, nobody reading) are different problems, the same ``ENOENT`` a hundred times is
    one. Errors without an errno are told apart by their message.
    """
    errno = getattr(error, "errno", None)
    return (type(error).__name__, errno if errno is not None else str(error))


def _describe(error: Exception) -> str:
    """One readable phrase for the log, e.g. ``FileNotFoundError: [Errno 2] No such file``."""
    return f"{type(error).__name__}: {error}"
