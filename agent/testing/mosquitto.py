"""A private mosquitto broker and a wire observer, for integration tests.

:class:`Mosquitto` runs Debian's ``/usr/sbin/mosquitto`` on a free port of 127.0.0.1 with
its own config in a temporary directory, and can stop, kill and restart it on the same
port. :class:`Observer` is a plain paho client (1.6 or 2.x) that records what crosses the
wire, so tests check the real bytes rather than what our own client believes it sent.

Both are bounded everywhere: nothing here waits without a timeout.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt

MOSQUITTO = "/usr/sbin/mosquitto"
INSTALL_HINT = "mosquitto is missing: install it: sudo apt-get install mosquitto"


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """A private mosquitto process with its own config, port and log.

    Args:
        extra_config: config lines appended right after the ``listener`` line, so they
            apply to that listener (e.g. ``cafile``/``certfile``/``keyfile`` for TLS, or
            ``allow_anonymous false`` and ``password_file``). Persistence is off unless a
            ``persistence ...`` line is given here.
        directory: where to write config and log; a fresh temporary directory if None.
        port: the port to listen on; a free one if None.
        log_types: mosquitto's ``log_type`` lines; ``("all",)`` logs every packet (what
            tests that read the log need), a long soak wants less.
    """

    kind = "mosquitto"
    """What the tests' ``broker`` fixture also says of its RabbitMQ node (``"rabbitmq"``)."""

    def __init__(
        self,
        extra_config: Sequence[str] = (),
        *,
        directory: str | os.PathLike[str] | None = None,
        port: int | None = None,
        log_types: Sequence[str] = ("all",),
    ) -> None:
        if not os.access(MOSQUITTO, os.X_OK):
            raise RuntimeError(INSTALL_HINT)
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="mosquitto-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.config_path = self.directory / "mosquitto.conf"
        self.log_path = self.directory / "mosquitto.log"
        self._extra_config = list(extra_config)
        self._log_types = list(log_types)
        self._process: subprocess.Popen[bytes] | None = None
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            *self._extra_config,
            "allow_anonymous true"
            if not any(line.startswith("allow_anonymous") for line in self._extra_config)
            else "",
            "set_tcp_nodelay true",
            "persistence false"
            if not any(line.startswith("persistence") for line in self._extra_config)
            else "",
            f"log_dest file {self.log_path}",
            *(f"log_type {kind}" for kind in self._log_types),
            "connection_messages true",
            # When run as root mosquitto would drop to user "mosquitto", who cannot read
            # our temporary directory; keep the current user.
            f"user {getpass.getuser()}",
        ]
        self.config_path.write_text("\n".join(line for line in lines if line) + "\n")

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait (bounded) until it accepts TCP connections."""
        if self.running:
            return
        stderr = open(self.directory / "stderr.log", "ab")  # noqa: SIM115 - closed below
        try:
            self._process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        finally:
            stderr.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self._process.returncode}:\n{self.log_text()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.01)  # a bounded probe loop, not a guess
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.port} in {timeout} s")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the broker (SIGTERM) and wait; SIGKILL if it lingers."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Kill the broker at once (SIGKILL), as a crash would."""
        self._end(signal.SIGKILL, 5.0)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start(timeout)

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5.0)

    def log_text(self) -> str:
        """The broker's log so far (plus anything it wrote to stderr)."""
        parts = []
        for path in (self.log_path, self.directory / "stderr.log"):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def close(self) -> None:
        """Stop the broker and remove its directory if we created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Message(NamedTuple):
    """One message seen on the wire."""

    topic: str
    payload: bytes
    retain: bool
    qos: int


def _new_paho_client(client_id: str) -> Any:
    if hasattr(mqtt, "CallbackAPIVersion"):  # paho 2.x
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    return mqtt.Client(client_id=client_id)


class Observer:
    """A real paho client that records every message on the topics it subscribes to.

    It reconnects by itself (after a broker restart) and subscribes again. ``username`` and
    ``password`` are for a broker with ``allow_anonymous false``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topics: Iterable[str] = ("#",),
        *,
        client_id: str = "observer",
        timeout: float = 5.0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._cond = threading.Condition()
        self._messages: list[Message] = []
        self._topics = list(topics)
        self._connected = False
        self._suback_mids: set[int] = set()
        self._client = _new_paho_client(client_id)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.reconnect_delay_set(0.05, 0.5)
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.connect_async(host, port, keepalive=5)
        self._client.loop_start()
        if not self.wait_connected(timeout):
            self.close()
            raise TimeoutError(f"observer could not connect to {host}:{port}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, *rest: Any) -> None:
        code = rc if isinstance(rc, int) else getattr(rc, "value", rc)
        if code != 0:
            return
        mids = {client.subscribe(topic, 1)[1] for topic in self._topics}
        with self._cond:
            self._suback_mids = mids
            self._cond.notify_all()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, *rest: Any) -> None:
        with self._cond:
            self._suback_mids.discard(mid)
            if not self._suback_mids:
                self._connected = True
            self._cond.notify_all()

    def _on_disconnect(self, client: Any, userdata: Any, *rest: Any) -> None:
        with self._cond:
            self._connected = False
            self._cond.notify_all()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._cond:
            self._messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos))
            self._cond.notify_all()

    def wait_connected(self, timeout: float = 5.0) -> bool:
        """Wait until connected and every subscription is acknowledged."""
        with self._cond:
            return self._cond.wait_for(lambda: self._connected, timeout)

    def wait_for(
        self,
        topic: str,
        predicate: Callable[[Message], bool] | None = None,
        timeout: float = 5.0,
    ) -> Message:
        """Return the first recorded message on ``topic`` (a filter: wildcards allowed)
        that satisfies ``predicate``, waiting up to ``timeout`` s for it to arrive.

        Already-recorded messages count: call :meth:`clear` first to wait for a new one.
        """

        def find() -> Message | None:
            for message in self._messages:
                if mqtt.topic_matches_sub(topic, message.topic) and (
                    predicate is None or predicate(message)
                ):
                    return message
            return None

        with self._cond:
            found = self._cond.wait_for(find, timeout)
            if found is None:
                seen = "\n  ".join(repr(m) for m in self._messages) or "(nothing)"
                raise AssertionError(
                    f"no message on {topic!r} matching the predicate within {timeout} s; "
                    f"seen:\n  {seen}"
                )
            return found

    def messages(self, topic: str | None = None) -> list[Message]:
        """Everything recorded so far, or only what matches the filter ``topic``."""
        with self._cond:
            return [
                m for m in self._messages if topic is None or mqtt.topic_matches_sub(topic, m.topic)
            ]

    def clear(self) -> None:
        """Forget everything recorded so far."""
        with self._cond:
            self._messages.clear()

    def publish(
        self,
        topic: str,
        payload: str | bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout: float = 5.0,
    ) -> None:
        """Publish and wait (bounded) until the broker has it (QoS>0) or it is sent."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError(f"observer publish to {topic} not acknowledged in {timeout} s")

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()
