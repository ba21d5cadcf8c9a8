"""agent.systemd: sd_notify datagrams to real AF_UNIX sockets, the watchdog environment,
the null notifier, failures that never raise, and concurrent senders.

Nothing here mocks a socket: each test binds a real datagram socket (a file in
``tmp_path``, or an abstract name unique to the test) and reads back what arrived. A
datagram sent to a Unix socket is queued before ``sendto`` returns, so "nothing was sent"
is checked with a non-blocking read, and every blocking read has a timeout.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.systemd import (
    SEND_TIMEOUT,
    STATUS_MAX_CHARS,
    Notifier,
    NullNotifier,
    SystemdNotifier,
    notifier_from_environment,
    status_line,
    watchdog_interval_from_environment,
)

#: Bound on every blocking read: generous, since it only matters when a test fails.
RECEIVE_TIMEOUT = 5.0


class Receiver:
    """A bound AF_UNIX datagram socket standing in for systemd's notify socket.

    ``notify_socket`` is the value for ``$NOTIFY_SOCKET`` (a path or ``@name``).
    """

    def __init__(self, notify_socket: str) -> None:
        self.notify_socket = notify_socket
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        address = "\0" + notify_socket[1:] if notify_socket.startswith("@") else notify_socket
        self.sock.bind(address)
        self.sock.settimeout(RECEIVE_TIMEOUT)

    def receive(self) -> bytes:
        """The next datagram, whole; fails the test after RECEIVE_TIMEOUT seconds."""
        return self.sock.recv(65536)

    def pending(self) -> list[bytes]:
        """Every datagram queued right now, without waiting."""
        out: list[bytes] = []
        # Non-blocking for the moment: with a timeout set, Python would wait out the
        # timeout before reporting an empty queue.
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(65536))
        except BlockingIOError:
            return out
        finally:
            self.sock.settimeout(RECEIVE_TIMEOUT)

    def close(self) -> None:
        self.sock.close()


def abstract_name() -> str:
    """An abstract socket name no other test (or test run) uses."""
    return f"@agent-test-{uuid.uuid4()}"


@pytest.fixture
def path_receiver(tmp_path: Path) -> Iterator[Receiver]:
    receiver = Receiver(str(tmp_path / "notify.sock"))
    yield receiver
    receiver.close()


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Receiver]:
    """A receiver on a socket file, then on an abstract name."""
    name = str(tmp_path / "notify.sock") if request.param == "path" else abstract_name()
    receiver = Receiver(name)
    yield receiver
    receiver.close()


@pytest.fixture
def notifiers() -> Iterator[list[SystemdNotifier]]:
    """Notifiers a test created, closed at teardown (their sockets are real)."""
    made: list[SystemdNotifier] = []
    yield made
    for notifier in made:
        notifier.close()


def make(
    made: list[SystemdNotifier], notify_socket: str, *, send_timeout: float = SEND_TIMEOUT
) -> SystemdNotifier:
    """A SystemdNotifier that the ``notifiers`` fixture closes at teardown."""
    notifier = SystemdNotifier(notify_socket, send_timeout=send_timeout)
    made.append(notifier)
    return notifier


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "agent.systemd" and r.levelno == level]


# -- the messages ---------------------------------------------------------------------------


def test_every_message_arrives_byte_for_byte(
    receiver: Receiver, notifiers: list[SystemdNotifier]
) -> None:
    notifier = make(notifiers, receiver.notify_socket)
    notifier.ready()
    assert receiver.receive() == b"READY=1"
    notifier.status("3 devices online")
    assert receiver.receive() == b"STATUS=3 devices online"
    notifier.watchdog()
    assert receiver.receive() == b"WATCHDOG=1"
    notifier.stopping()
    assert receiver.receive() == b"STOPPING=1"
    assert receiver.pending() == []


def test_status_is_utf8(path_receiver: Receiver, notifiers: list[SystemdNotifier]) -> None:
    notifier = make(notifiers, path_receiver.notify_socket)
    notifier.status("boiler 21.5 °C, Fühler ok")
    assert path_receiver.receive() == "STATUS=boiler 21.5 °C, Fühler ok".encode()
    notifier.status("bad \udcff surrogate")  # from a file name decoded with surrogateescape
    assert path_receiver.receive() == b"STATUS=bad ? surrogate"


def test_status_is_sent_only_when_it_changed(
    path_receiver: Receiver, notifiers: list[SystemdNotifier]
) -> None:
    notifier = make(notifiers, path_receiver.notify_socket)
    notifier.status("ok")
    notifier.status("ok")
    assert path_receiver.pending() == [b"STATUS=ok"]
    notifier.status("1 device in error")
    notifier.status("ok")
    assert path_receiver.pending() == [b"STATUS=1 device in error", b"STATUS=ok"]
    # Other messages do not make the same status "new" again.
    notifier.watchdog()
    notifier.status("ok")
    assert path_receiver.pending() == [b"WATCHDOG=1"]
    # Compared after cleaning up: the same line with other whitespace is no change.
    notifier.status("two\nlines")
    notifier.status("two  lines\n")
    assert path_receiver.pending() == [b"STATUS=two lines"]


def test_empty_status_is_a_status_too(
    path_receiver: Receiver, notifiers: list[SystemdNotifier]
) -> None:
    notifier = make(notifiers, path_receiver.notify_socket)
    notifier.status("")
    notifier.status("\n")
    assert path_receiver.pending() == [b"STATUS="]


def test_long_status_is_capped(path_receiver: Receiver, notifiers: list[SystemdNotifier]) -> None:
    notifier = make(notifiers, path_receiver.notify_socket)
    notifier.status("x" * 10_000)
    line = path_receiver.receive().decode()
    assert line == "STATUS=" + "x" * (STATUS_MAX_CHARS - 1) + "…"


def test_status_line() -> None:
    assert status_line("ok") == "ok"
    assert status_line("  a\nb\r\nc\rd\te  ") == "a b c d e"
    assert status_line("nul\0byte") == "nul byte"
    assert status_line("a\u2028b") == "a b"  # Unicode line separators are newlines too
    assert status_line("x" * STATUS_MAX_CHARS) == "x" * STATUS_MAX_CHARS
    capped = status_line("word " * 100)
    assert len(capped) <= STATUS_MAX_CHARS
    assert capped.endswith("word…")  # no dangling space before the ellipsis
    assert "\n" not in status_line("\n".join(["line"] * 100))


# -- choosing a notifier --------------------------------------------------------------------


def test_from_environment_under_systemd(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.systemd")
    notifier = notifier_from_environment({"NOTIFY_SOCKET": receiver.notify_socket}, pid=42)
    try:
        assert isinstance(notifier, SystemdNotifier)
        assert isinstance(notifier, Notifier)
        assert notifier.watchdog_interval is None
        notifier.ready()
        assert receiver.receive() == b"READY=1"
    finally:
        notifier.close()
    assert caplog.records == []


def test_no_notify_socket_gives_a_silent_null_notifier(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.systemd")
    notifier = notifier_from_environment({"WATCHDOG_USEC": "30000000"}, pid=42)
    assert isinstance(notifier, NullNotifier)
    assert isinstance(notifier, Notifier)
    assert notifier.watchdog_interval is None  # nobody to ping
    notifier.ready()
    notifier.status("anything")
    notifier.watchdog()
    notifier.stopping()
    notifier.close()
    assert caplog.records == []


def test_default_environment_is_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert isinstance(notifier_from_environment(), NullNotifier)


@pytest.mark.parametrize(
    "value", ["run/systemd/notify", "notify.sock", "", "@", "vsock:2:1234", "/" + "x" * 200]
)
def test_unusable_notify_socket_gives_null_notifier_and_one_warning(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.systemd")
    notifier = notifier_from_environment({"NOTIFY_SOCKET": value, "WATCHDOG_USEC": "x"}, pid=42)
    assert isinstance(notifier, NullNotifier)
    notifier.ready()
    notifier.status("anything")
    notifier.watchdog()
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 1, caplog.text
    assert "NOTIFY_SOCKET" in warnings[0].getMessage()
    assert len(caplog.records) == 1  # and nothing about the (also broken) watchdog


@pytest.mark.parametrize("value", ["relative", "", "@", "/" + "x" * 200, "@" + "x" * 200])
def test_constructor_refuses_unusable_address(value: str) -> None:
    with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
        SystemdNotifier(value)


def test_constructor_refuses_bad_numbers() -> None:
    with pytest.raises(ValueError, match="watchdog_interval"):
        SystemdNotifier("/run/notify", watchdog_interval=0)
    with pytest.raises(ValueError, match="send_timeout"):
        SystemdNotifier("/run/notify", send_timeout=0)


def test_longest_addresses_are_accepted() -> None:
    # sockaddr_un.sun_path is 108 bytes: a path needs its NUL inside, an abstract name not.
    assert SystemdNotifier("/" + "x" * 106).notify_socket == "/" + "x" * 106
    assert SystemdNotifier("@" + "x" * 107).notify_socket == "@" + "x" * 107


def test_repr() -> None:
    assert repr(NullNotifier()) == "NullNotifier()"
    notifier = SystemdNotifier("@bus", watchdog_interval=15.0)
    assert repr(notifier) == "SystemdNotifier('@bus', watchdog_interval=15.0)"


# -- the watchdog environment ---------------------------------------------------------------

OUR_PID = 4242


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(OUR_PID)}, 15.0),
        ({"WATCHDOG_USEC": "1"}, 0.0000005),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_PID": str(OUR_PID)}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval_from_environment(environ, OUR_PID) == expected


@pytest.mark.parametrize("usec", ["", "abc", "0", "-5", " 5", "+5", "1_000", "1.5", "٣"])
def test_invalid_watchdog_usec_is_no_watchdog(usec: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.systemd")
    assert watchdog_interval_from_environment({"WATCHDOG_USEC": usec}, OUR_PID) is None
    assert [r.getMessage() for r in records(caplog, logging.WARNING)] == [
        f"WATCHDOG_USEC={usec!r} is not a positive number of microseconds; watchdog pings are off"
    ]


@pytest.mark.parametrize("pid", ["", "abc", "0", "-1"])
def test_invalid_watchdog_pid_is_no_watchdog(pid: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.systemd")
    environ = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}
    assert watchdog_interval_from_environment(environ, OUR_PID) is None
    assert len(records(caplog, logging.WARNING)) == 1


def test_watchdog_pid_defaults_to_ours() -> None:
    environ = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval_from_environment(environ) == 1.0
    environ["WATCHDOG_PID"] = str(os.getpid() + 1)
    assert watchdog_interval_from_environment(environ) is None


def test_from_environment_carries_the_watchdog_interval(receiver: Receiver) -> None:
    base = {"NOTIFY_SOCKET": receiver.notify_socket, "WATCHDOG_USEC": "60000000"}
    for extra, expected in [({}, 30.0), ({"WATCHDOG_PID": str(OUR_PID)}, 30.0)]:
        notifier = notifier_from_environment({**base, **extra}, pid=OUR_PID)
        assert notifier.watchdog_interval == expected
        notifier.close()
    other = notifier_from_environment({**base, "WATCHDOG_PID": "1"}, pid=OUR_PID)
    # Still a real notifier (READY=1 and STATUS= are ours to send), just no watchdog.
    assert isinstance(other, SystemdNotifier)
    assert other.watchdog_interval is None
    other.close()


# -- failures never raise -------------------------------------------------------------------


def test_receiver_gone_then_back(
    tmp_path: Path, notifiers: list[SystemdNotifier], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.systemd")
    path = str(tmp_path / "notify.sock")
    receiver = Receiver(path)
    notifier = make(notifiers, path)
    notifier.ready()
    assert receiver.receive() == b"READY=1"

    receiver.close()
    os.unlink(path)
    notifier.watchdog()  # none of these raises
    notifier.status("degraded")
    notifier.watchdog()
    notifier.stopping()
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 1, caplog.text
    assert "WATCHDOG" in warnings[0].getMessage()
    assert "FileNotFoundError" in warnings[0].getMessage()
    assert path in warnings[0].getMessage()
    assert len(records(caplog, logging.DEBUG)) == 3  # the same error again: quietly

    receiver = Receiver(path)  # systemd is back (a new socket at the same address)
    try:
        notifier.watchdog()
        assert receiver.receive() == b"WATCHDOG=1"
        # "degraded" never arrived, so it is not "unchanged": it is sent now.
        notifier.status("degraded")
        assert receiver.receive() == b"STATUS=degraded"
        notifier.status("degraded")
        assert receiver.pending() == []
    finally:
        receiver.close()
    assert len(records(caplog, logging.WARNING)) == 1


def test_each_distinct_error_warns_once(
    tmp_path: Path, notifiers: list[SystemdNotifier], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.systemd")
    path = str(tmp_path / "notify.sock")
    notifier = make(notifiers, path)
    notifier.ready()  # no socket file: ENOENT
    notifier.ready()
    receiver = Receiver(path)
    receiver.close()  # the file stays, nobody reads: ECONNREFUSED
    notifier.ready()
    notifier.ready()
    os.unlink(path)
    notifier.ready()  # ENOENT again: already warned about
    warnings = [r.getMessage() for r in records(caplog, logging.WARNING)]
    assert len(warnings) == 2, caplog.text
    assert "FileNotFoundError" in warnings[0]
    assert "ConnectionRefusedError" in warnings[1]
    assert len(records(caplog, logging.DEBUG)) == 3


def test_full_receiver_queue_blocks_only_briefly(
    path_receiver: Receiver, notifiers: list[SystemdNotifier], caplog: pytest.LogCaptureFixture
) -> None:
    # A receiver that never reads (systemd too busy): Linux queues a few datagrams
    # (net.unix.max_dgram_qlen), then a send waits at most send_timeout and is dropped.
    caplog.set_level(logging.DEBUG, logger="agent.systemd")
    notifier = make(notifiers, path_receiver.notify_socket, send_timeout=0.05)
    sent = 0
    while not records(caplog, logging.WARNING):
        notifier.watchdog()
        sent += 1
        assert sent < 100_000, "the queue never filled up"
    assert "BlockingIOError" in records(caplog, logging.WARNING)[0].getMessage()
    queued = path_receiver.pending()
    assert queued == [b"WATCHDOG=1"] * (sent - 1)
    notifier.watchdog()  # there is room again
    assert path_receiver.receive() == b"WATCHDOG=1"


def test_close_is_idempotent_and_the_next_send_reopens(
    path_receiver: Receiver, notifiers: list[SystemdNotifier]
) -> None:
    notifier = make(notifiers, path_receiver.notify_socket)
    notifier.close()  # before any socket exists
    notifier.ready()
    notifier.close()
    notifier.close()
    notifier.stopping()
    assert path_receiver.pending() == [b"READY=1", b"STOPPING=1"]


# -- threads --------------------------------------------------------------------------------


def test_concurrent_senders_deliver_every_datagram_whole(
    path_receiver: Receiver, notifiers: list[SystemdNotifier], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.systemd")
    notifier = make(notifiers, path_receiver.notify_socket, send_timeout=RECEIVE_TIMEOUT)
    threads_n, calls_n = 8, 50
    start = threading.Barrier(threads_n)
    # Statuses long enough that a torn or interleaved datagram could not go unnoticed.
    padding = "p" * 150

    def sender(index: int) -> None:
        start.wait(timeout=RECEIVE_TIMEOUT)
        for call in range(calls_n):
            notifier.status(f"thread {index} call {call} {padding}")
            notifier.watchdog()

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    # The receive queue holds only a few datagrams; the senders wait while we drain it.
    received = [path_receiver.receive() for _ in range(threads_n * calls_n * 2)]
    for thread in threads:
        thread.join(timeout=RECEIVE_TIMEOUT)
        assert not thread.is_alive()
    assert path_receiver.pending() == []

    statuses = sorted(d for d in received if d.startswith(b"STATUS="))
    expected = sorted(
        f"STATUS=thread {i} call {c} {padding}".encode()
        for i in range(threads_n)
        for c in range(calls_n)
    )
    assert statuses == expected
    assert received.count(b"WATCHDOG=1") == threads_n * calls_n
    assert records(caplog, logging.WARNING) == []
