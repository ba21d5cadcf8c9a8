"""MqttClient against a real private mosquitto, observed on the wire by a real paho client.

Runs on paho 2.x (.venv) and paho 1.6 (/usr/bin/python3). Keepalives and backoffs are
short and every wait is bounded.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import subscriptions

import agent.mqtt.paho as paho_module
from agent.mqtt.paho import NETWORK_THREAD_NAME, WINDOW, MqttClient
from agent.mqtt.port import (
    MqttConnectionEvents,
    MqttLifecycle,
    MqttMessageHandler,
    MqttPort,
    WillConfig,
)
from agent.settings import MqttSettings
from agent.testing import eventually
from agent.testing.mosquitto import Mosquitto, Observer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def settings_for(broker: Mosquitto, **overrides: Any) -> MqttSettings:
    values: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "topic_prefix": "t",
        "keepalive": 5,
        "reconnect_min_delay": 0.05,
        "reconnect_max_delay": 0.2,
    }
    values.update(overrides)
    return MqttSettings(**values)


class Inbox:
    """A message callback that queues what it receives, for bounded waits."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()

    def __call__(self, topic: str, payload: bytes, retained: bool) -> None:
        self.queue.put((topic, payload, retained))

    def get(self, timeout: float = 5.0) -> tuple[str, bytes, bool]:
        return self.queue.get(timeout=timeout)


class ConnectCounter:
    """A connect callback that counts calls and lets a test wait for the n-th one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0

    def __call__(self) -> None:
        with self._cond:
            self.count += 1
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float = 5.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.count >= n, timeout), (
                f"connect callback called {self.count} times, expected {n}"
            )


class LogWatch(logging.Handler):
    """Collects agent.mqtt.paho records; a test can wait for one containing a text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._cond = threading.Condition()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        with self._cond:
            self.records.append(record)
            self._cond.notify_all()

    def count(self, text: str) -> int:
        with self._cond:
            return sum(1 for r in self.records if text in r.getMessage())

    def wait_for(self, text: str, n: int = 1, timeout: float = 5.0) -> None:
        with self._cond:
            ok = self._cond.wait_for(
                lambda: sum(1 for r in self.records if text in r.getMessage()) >= n, timeout
            )
            if not ok:
                seen = "\n".join(r.getMessage() for r in self.records)
                raise AssertionError(f"no {n}x log {text!r} within {timeout} s; got:\n{seen}")


@pytest.fixture
def log_watch() -> Iterator[LogWatch]:
    logger = logging.getLogger("agent.mqtt.paho")
    handler = LogWatch()
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@pytest.fixture
def clients() -> Iterator[list[MqttClient]]:
    """Every MqttClient a test appends here is stopped at teardown."""
    made: list[MqttClient] = []
    yield made
    for client in made:
        client.stop(timeout=2)


def started(
    clients: list[MqttClient],
    settings: MqttSettings,
    will: WillConfig | None = None,
    *,
    subscribe: tuple[str, ...] = (),
    client_id: str | None = None,
    wait: bool = True,
) -> tuple[MqttClient, Inbox, ConnectCounter]:
    client = MqttClient(settings, will, client_id=client_id)
    clients.append(client)
    inbox, connects = Inbox(), ConnectCounter()
    client.on_message(inbox)
    client.on_connect(connects)
    for topic in subscribe:
        client.subscribe(topic)
    if subscribe:
        client.subscribe(PROBE)
    client.start()
    if wait:
        connects.wait_for(1)
        if subscribe:
            wait_subscribed(client, inbox)
    return client, inbox, connects


PROBE = "probe/subscribed"


def wait_subscribed(client: MqttClient, inbox: Inbox, timeout: float = 5.0) -> None:
    """Block until the broker has our subscriptions: our own probe message comes back.

    The connect callback runs once SUBSCRIBE is sent, not acknowledged; the probe is
    published after it on the same connection, so its return proves the SUBACK.
    """
    client.publish(PROBE, "sync")
    others: list[tuple[str, bytes, bool]] = []
    while (message := inbox.get(timeout)) != (PROBE, b"sync", False):
        others.append(message)
    with inbox.queue.mutex:  # e.g. queued session messages: keep them, first, in order
        inbox.queue.queue.extendleft(reversed(others))


# -- basics ----------------------------------------------------------------------------


def test_client_implements_every_port() -> None:
    client = MqttClient(MqttSettings(host="127.0.0.1", port=1))
    for port in (MqttPort, MqttMessageHandler, MqttLifecycle, MqttConnectionEvents):
        assert isinstance(client, port)
    client.stop()  # never started: a no-op


def refused_as_mqtt_5(broker: Mosquitto, clients: list[MqttClient], log_watch: LogWatch) -> None:
    """RabbitMQ 3.10 speaks no MQTT 5: it closes the connection without a CONNACK. The
    client keeps retrying, and its warning names the protocol setting (docs/rabbitmq.md)."""
    client, _, connects = started(clients, settings_for(broker, protocol="5"), wait=False)
    log_watch.wait_for("does the broker speak MQTT 5?")
    assert not client.connected and connects.count == 0


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_round_trip_both_ways(
    broker: Mosquitto,
    observer: Observer,
    clients: list[MqttClient],
    log_watch: LogWatch,
    protocol: str,
) -> None:
    if broker.kind == "rabbitmq" and protocol == "5":
        refused_as_mqtt_5(broker, clients, log_watch)
        return
    client, inbox, _ = started(
        clients, settings_for(broker, protocol=protocol), subscribe=("t/dev/set",)
    )
    assert client.connected

    client.publish("t/dev/state", '{"on": true}', retain=True)
    client.publish("t/dev/event", b"\x01\x02", qos=0)
    state = observer.wait_for("t/dev/state")
    assert (state.payload, state.qos) == (b'{"on": true}', 1)
    assert observer.wait_for("t/dev/event").payload == b"\x01\x02"
    assert client.flush(5)

    observer.publish("t/dev/set", "off")
    assert inbox.get() == ("t/dev/set", b"off", False)

    # Retained on the broker: a fresh subscriber gets it with the retain flag.
    late = Observer(broker.host, broker.port, ["t/dev/state"], client_id="late")
    try:
        message = late.wait_for("t/dev/state")
        assert (message.payload, message.retain) == (b'{"on": true}', True)
    finally:
        late.close()


def test_publish_rejects_programming_errors(clients: list[MqttClient]) -> None:
    client = MqttClient(MqttSettings(host="127.0.0.1", port=1, max_payload_bytes=4))
    with pytest.raises(ValueError):
        client.publish("t/+/state", "x")
    with pytest.raises(ValueError):
        client.publish("", "x")
    with pytest.raises(ValueError):
        client.publish("t/state", "x", qos=3)
    with pytest.raises(ValueError, match="max_payload_bytes"):
        client.publish("t/state", "12345")


def test_socket_has_tcp_nodelay_and_network_thread_is_named(
    broker: Mosquitto, clients: list[MqttClient]
) -> None:
    client, _, _ = started(clients, settings_for(broker))
    sock = client._paho.socket()  # type: ignore[union-attr]
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    assert NETWORK_THREAD_NAME in {t.name for t in threading.enumerate()}


def test_stop_is_idempotent_and_sends_no_will(
    broker: Mosquitto, observer: Observer, clients: list[MqttClient]
) -> None:
    client, _, _ = started(clients, settings_for(broker), WillConfig("t/status", "died"))
    client.publish("t/status", "offline", retain=True)  # what the runtime does first
    client.stop()
    client.stop()
    assert not client.connected
    # The flush in stop() made sure the broker had it before the clean DISCONNECT, and the
    # clean DISCONNECT means the broker drops the will.
    observer.publish("t/probe", "x")  # the broker handled everything before this
    observer.wait_for("t/probe")
    assert [m.payload for m in observer.messages("t/status")] == [b"offline"]


# -- the last will -----------------------------------------------------------------------

KILL_SCRIPT = """
import sys, threading
from agent.mqtt.paho import MqttClient
from agent.mqtt.port import WillConfig
from agent.settings import MqttSettings

settings = MqttSettings(host=sys.argv[1], port=int(sys.argv[2]), keepalive=5)
client = MqttClient(settings, WillConfig("kill/status"), client_id="kill-test")
connected = threading.Event()
client.on_connect(connected.set)
client.start()
assert connected.wait(10)
client.publish("kill/status", "online", retain=True)
assert client.flush(5)
threading.Event().wait(60)
"""


def test_broker_publishes_the_will_when_the_process_is_killed(
    broker: Mosquitto, observer: Observer
) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, broker.host, str(broker.port)], cwd=REPO, env=env
    )
    try:
        observer.wait_for("kill/status", lambda m: m.payload == b"online", timeout=10)
        process.send_signal(signal.SIGKILL)
        process.wait(5)
        observer.wait_for("kill/status", lambda m: m.payload == b"offline", timeout=5)
    finally:
        process.kill()
        process.wait(5)
    late = Observer(broker.host, broker.port, ["kill/status"], client_id="late")
    try:
        message = late.wait_for("kill/status")
        assert (message.payload, message.retain, message.qos) == (b"offline", True, 1)
    finally:
        late.close()


# -- reconnection ----------------------------------------------------------------------


def test_broker_restart_reconnects_resubscribes_and_sends_latest_buffered(
    broker: Mosquitto, clients: list[MqttClient], log_watch: LogWatch
) -> None:
    client, inbox, connects = started(
        clients, settings_for(broker, offline_buffer_size=3), subscribe=("t/cmd",)
    )
    broker.stop()
    eventually(lambda: not client.connected, what="the client to notice the broker is gone")
    log_watch.wait_for("lost connection")

    # While down: a=1, b=1, a=2, c=1, d=1 with room for 3 topics -> a=2, c=1, d=1.
    for topic, value in [("a", "1"), ("b", "1"), ("a", "2"), ("c", "1"), ("d", "1")]:
        client.publish(f"t/buf/{topic}", value, retain=True)
    assert client._paho._out_messages == {}  # type: ignore[union-attr]  # paho's queue
    assert not client.flush(0.05)  # buffered, not acknowledged
    log_watch.wait_for("outbox full")

    broker.start()
    connects.wait_for(2)
    assert client.flush(5)
    log_watch.wait_for("dropped from the full outbox")

    buffered = [f"t/buf/{topic}" for topic in "abcd"]
    topics = [*subscriptions(broker, *buffered, wildcard="t/buf/#"), "t/end"]
    watcher = Observer(broker.host, broker.port, topics, client_id="w")
    try:
        watcher.publish("t/end", "x")
        watcher.wait_for("t/end")  # retained messages were queued before this
        got = {m.topic: m.payload for m in watcher.messages("t/buf/#")}
        assert got == {"t/buf/a": b"2", "t/buf/c": b"1", "t/buf/d": b"1"}
        watcher.publish("t/cmd", "again")
        assert inbox.get() == ("t/cmd", b"again", False)  # resubscribed
    finally:
        watcher.close()


def test_start_without_broker_then_broker_appears(
    tmp_path: Path, clients: list[MqttClient], log_watch: LogWatch
) -> None:
    server = Mosquitto(directory=tmp_path)  # configured, not started yet
    try:
        before = time.monotonic()
        client, _, connects = started(clients, settings_for(server), wait=False)
        assert time.monotonic() - before < 1.0  # start() never blocks on the network
        log_watch.wait_for("cannot connect")
        log_watch.wait_for("still cannot connect")  # it keeps retrying
        assert not client.connected
        client.publish("t/state", "early", retain=True)
        server.start()
        connects.wait_for(1)
        watcher = Observer(server.host, server.port, ["t/state"], client_id="w")
        try:
            assert watcher.wait_for("t/state").payload == b"early"
        finally:
            watcher.close()
    finally:
        server.close()


def test_unresolvable_host_is_retried_and_stop_is_prompt(
    clients: list[MqttClient], log_watch: LogWatch
) -> None:
    settings = MqttSettings(
        host="does-not-exist.invalid", port=1883, reconnect_min_delay=0.05, reconnect_max_delay=0.1
    )
    client = MqttClient(settings)
    before = time.monotonic()
    client.start()
    assert time.monotonic() - before < 1.0
    log_watch.wait_for("cannot connect")
    log_watch.wait_for("still cannot connect", n=2, timeout=10)  # attempts 2 and 4
    assert not client.connected
    before = time.monotonic()
    client.stop(timeout=3)
    assert time.monotonic() - before < 3.5


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_persistent_session_keeps_qos1_commands_sent_while_away(
    broker: Mosquitto,
    observer: Observer,
    clients: list[MqttClient],
    log_watch: LogWatch,
    protocol: str,
) -> None:
    if broker.kind == "rabbitmq" and protocol == "5":
        refused_as_mqtt_5(broker, clients, log_watch)
        return
    settings = settings_for(broker, protocol=protocol)
    first, _, _ = started(clients, settings, subscribe=("t/dev/set",), client_id="persist")
    first.stop()

    observer.publish("t/dev/set", "while-away", qos=1)

    _, inbox, _ = started(clients, settings, subscribe=("t/dev/set",), client_id="persist")
    assert inbox.get() == ("t/dev/set", b"while-away", False)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_network_thread_is_reported_on_every_paho(
    broker: Mosquitto, clients: list[MqttClient]
) -> None:
    """paho 2.x forgets its thread (``_thread = None``) when the thread ends: the
    supervisor's vital check must still see it dead, not only 120 s later as a silent loop."""
    client = MqttClient(settings_for(broker))
    clients.append(client)
    client.start()
    eventually(lambda: client.connected, timeout=10)
    assert client.network_problem() is None
    paho = client._paho
    assert paho is not None

    def broken_round(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the network loop")  # escapes loop_forever

    paho.loop_misc = broken_round  # type: ignore[method-assign]
    eventually(lambda: client.network_problem() is not None, timeout=10)
    assert client.network_problem() == "the MQTT network thread has died"


def test_a_raising_callback_does_not_kill_the_network_thread(
    broker: Mosquitto, observer: Observer, clients: list[MqttClient], log_watch: LogWatch
) -> None:
    client = MqttClient(settings_for(broker))
    clients.append(client)
    inbox, connects = Inbox(), ConnectCounter()

    def bad_message(topic: str, payload: bytes, retained: bool) -> None:
        raise RuntimeError("handler bug")

    def bad_connect() -> None:
        raise RuntimeError("connect hook bug")

    client.on_message(bad_message)
    client.on_message(inbox)
    client.on_connect(bad_connect)
    client.on_connect(connects)
    client.subscribe("t/in")
    client.subscribe(PROBE)
    client.start()
    connects.wait_for(1)
    wait_subscribed(client, inbox)

    observer.publish("t/in", "1")
    observer.publish("t/in", "2")
    assert inbox.get() == ("t/in", b"1", False)
    assert inbox.get() == ("t/in", b"2", False)
    assert log_watch.count("message callback failed for topic t/in") == 2
    assert log_watch.count("connect callback") == 1
    client.publish("t/out", "still alive")
    observer.wait_for("t/out")


# -- TLS ---------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"openssl {' '.join(args)} failed:\n{done.stderr}"


# Certificates as a real CA issues them. Python 3.13 verifies with VERIFY_X509_STRICT by
# default, which refuses a CA without keyUsage (and certificates without the key
# identifiers); OpenSSL's bare defaults give neither, so every extension is spelled out.
_CA_EXTENSIONS = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

_LEAF_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = {usage}
subjectAltName = {san}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""

# For `openssl ca`, the one way to give a certificate dates in the past on every OpenSSL:
# `x509 -req` has -not_before/-not_after only from 3.4 on (Debian 12 ships 3.0).
_ISSUER_CONFIG = """\
[ca]
default_ca = issuer
[issuer]
database = {name}.index
serial = {name}.serial
new_certs_dir = .
default_md = sha256
policy = anything
unique_subject = no
[anything]
commonName = supplied
"""

_SERVER_SAN = "IP:127.0.0.1,DNS:localhost"


def _make_ca(directory: Path, name: str) -> None:
    (directory / f"{name}.cnf").write_text(_CA_EXTENSIONS)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-config", f"{name}.cnf", "-extensions", "ca",
        "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt",
        cwd=directory,
    )  # fmt: skip


def _make_cert(
    directory: Path,
    ca: str,
    name: str,
    san: str,
    usage: str,
    *,
    valid: tuple[datetime, datetime] | None = None,
) -> None:
    """A leaf certificate signed by ``ca``; ``usage`` is serverAuth or clientAuth.

    ``valid`` (not before, not after) replaces the default "from now for 2 days", e.g. to
    make a certificate that has already expired.
    """
    (directory / f"{name}.cnf").write_text(_CA_EXTENSIONS)  # only its [req] part is used
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-config", f"{name}.cnf",
        "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr",
        cwd=directory,
    )  # fmt: skip
    (directory / f"{name}.ext").write_text(_LEAF_EXTENSIONS.format(usage=usage, san=san))
    if valid is None:
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
            cwd=directory,
        )  # fmt: skip
        return
    not_before, not_after = (f"{t.astimezone(timezone.utc):%y%m%d%H%M%S}Z" for t in valid)
    (directory / f"{name}.index").write_text("")
    (directory / f"{name}.issuer.cnf").write_text(_ISSUER_CONFIG.format(name=name))
    _openssl(
        "ca", "-batch", "-notext", "-config", f"{name}.issuer.cnf", "-rand_serial",
        "-cert", f"{ca}.crt", "-keyfile", f"{ca}.key",
        "-startdate", not_before, "-enddate", not_after,
        "-extfile", f"{name}.ext", "-in", f"{name}.csr", "-out", f"{name}.crt",
        cwd=directory,
    )  # fmt: skip


def _make_self_signed(directory: Path, name: str, san: str) -> None:
    """A server certificate signed by its own key: no CA vouches for it."""
    leaf = _LEAF_EXTENSIONS.format(usage="serverAuth", san=san)
    (directory / f"{name}.cnf").write_text(f"{_CA_EXTENSIONS}[leaf]\n{leaf}")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-config", f"{name}.cnf", "-extensions", "leaf",
        "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt",
        cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every certificate the TLS tests use, made once: RSA key generation is the slow part.

    ``server`` is issued by ``ca`` for 127.0.0.1; the others are each wrong in one way.
    """
    certs = tmp_path_factory.mktemp("certs")
    _make_ca(certs, "ca")
    _make_ca(certs, "other-ca")
    _make_cert(certs, "ca", "server", _SERVER_SAN, "serverAuth")
    _make_cert(certs, "ca", "client", "DNS:client", "clientAuth")
    _make_cert(certs, "ca", "elsewhere", "DNS:elsewhere.example", "serverAuth")
    now = datetime.now(timezone.utc)
    past = (now - timedelta(days=3), now - timedelta(days=1))
    _make_cert(certs, "ca", "expired", _SERVER_SAN, "serverAuth", valid=past)
    _make_self_signed(certs, "self-signed", _SERVER_SAN)
    return certs


def _tls_mosquitto(directory: Path, certs: Path, server_cert: str, *extra: str) -> Mosquitto:
    """A broker with only a TLS listener presenting ``server_cert`` (not started)."""
    broker = Mosquitto(
        [
            f"cafile {certs / 'ca.crt'}",
            f"certfile {certs / f'{server_cert}.crt'}",
            f"keyfile {certs / f'{server_cert}.key'}",
            *extra,
        ],
        directory=directory,
    )
    broker.certs = certs  # type: ignore[attr-defined]
    return broker


@pytest.fixture
def tls_broker(tmp_path: Path, tls_certs: Path) -> Iterator[Mosquitto]:
    """A broker with only a TLS listener that also requires a client certificate."""
    server = _tls_mosquitto(tmp_path / "broker", tls_certs, "server", "require_certificate true")
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def tls_broker_presenting(tmp_path: Path, tls_certs: Path) -> Iterator[Callable[[str], Mosquitto]]:
    """Starts a TLS broker presenting the named certificate of ``tls_certs``.

    It asks for no client certificate, so a refusal can only be our client's verdict on
    the broker's certificate.
    """
    made: list[Mosquitto] = []

    def start(server_cert: str) -> Mosquitto:
        broker = _tls_mosquitto(tmp_path / f"broker-{server_cert}", tls_certs, server_cert)
        made.append(broker)
        broker.start()
        return broker

    yield start
    for broker in made:
        broker.close()


def _refused_and_retried(
    broker: Mosquitto, settings: MqttSettings, clients: list[MqttClient], log_watch: LogWatch
) -> str:
    """Start a client the broker's certificate must not satisfy; check it never connects
    and keeps retrying, and return its one WARNING for the caller to check the reason."""
    client, _, connects = started(clients, settings, wait=False)
    log_watch.wait_for("still cannot connect")  # a second attempt failed the same way
    warnings = [r.getMessage() for r in log_watch.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "MQTT cannot connect to" in warnings[0], warnings
    assert "CERTIFICATE_VERIFY_FAILED" in warnings[0]
    assert not client.connected and connects.count == 0
    assert log_watch.count("MQTT connected") == 0
    # Nothing past the handshake: the broker never saw an MQTT CONNECT from us.
    assert "New client connected" not in broker.log_text()
    return warnings[0]


def test_tls_with_the_right_ca_and_a_client_certificate_connects(
    tls_broker: Mosquitto, clients: list[MqttClient]
) -> None:
    certs: Path = tls_broker.certs  # type: ignore[attr-defined]
    settings = settings_for(
        tls_broker,
        tls=True,
        ca_file=str(certs / "ca.crt"),
        cert_file=str(certs / "client.crt"),
        key_file=str(certs / "client.key"),
    )
    client, inbox, _ = started(clients, settings, subscribe=("t/echo",))
    client.publish("t/echo", "over tls")
    assert inbox.get() == ("t/echo", b"over tls", False)
    # What the refusal tests' "never reached the broker" check relies on:
    assert "New client connected" in tls_broker.log_text()


def test_tls_with_the_wrong_ca_does_not_connect(
    tls_broker: Mosquitto, clients: list[MqttClient], log_watch: LogWatch
) -> None:
    certs: Path = tls_broker.certs  # type: ignore[attr-defined]
    settings = settings_for(
        tls_broker,
        tls=True,
        ca_file=str(certs / "other-ca.crt"),
        cert_file=str(certs / "client.crt"),
        key_file=str(certs / "client.key"),
    )
    client, _, connects = started(clients, settings, wait=False)
    log_watch.wait_for("CERTIFICATE_VERIFY_FAILED")
    log_watch.wait_for("still cannot connect")  # and it keeps refusing on retries
    assert not client.connected
    assert connects.count == 0


def test_tls_verifies_by_default_against_the_system_store(
    tls_broker_presenting: Callable[[str], Mosquitto],
    clients: list[MqttClient],
    log_watch: LogWatch,
) -> None:
    broker = tls_broker_presenting("server")  # issued by our test CA, for 127.0.0.1
    warning = _refused_and_retried(broker, settings_for(broker, tls=True), clients, log_watch)
    # Our test CA is in no system store; mosquitto sends it along (OpenSSL completes the
    # chain from its cafile), so OpenSSL finds an untrusted root rather than no issuer.
    untrusted = "self[- ]signed certificate in certificate chain|unable to get local issuer"
    assert re.search(untrusted, warning)
    assert "comes from a CA this machine does not trust: set mqtt.ca_file" in warning


@pytest.mark.parametrize(
    ("certificate", "reason", "hint"),
    [
        # DNS:elsewhere.example only
        ("elsewhere", "IP address mismatch, certificate is not valid for '127.0.0.1'",
         "mqtt.host is not a name the broker's certificate lists"),
        # issued by the right CA, for this host, valid until yesterday
        ("expired", "certificate has expired", "renew it, or check this machine's clock"),
        # its own issuer (OpenSSL 3 / 1.1 spell it differently); not "in certificate chain":
        # the broker's own certificate, depth 0
        ("self-signed", "self[- ]signed certificate(?! in certificate chain)",
         "the broker presents a self-signed certificate"),
    ],
    ids=["another host", "expired", "self-signed"],
)  # fmt: skip
def test_tls_refuses_a_certificate_that_is_wrong_and_says_why(
    tls_broker_presenting: Callable[[str], Mosquitto],
    tls_certs: Path,
    clients: list[MqttClient],
    log_watch: LogWatch,
    certificate: str,
    reason: str,
    hint: str,
) -> None:
    broker = tls_broker_presenting(certificate)
    settings = settings_for(broker, tls=True, ca_file=str(tls_certs / "ca.crt"))
    warning = _refused_and_retried(broker, settings, clients, log_watch)
    assert re.search(reason, warning), warning
    assert hint in warning


def test_a_tls_refusal_after_the_handshake_is_logged_with_its_reason_and_retried(
    tls_broker: Mosquitto, clients: list[MqttClient], log_watch: LogWatch
) -> None:
    # The broker requires a client certificate and none is given: with TLS 1.3 the
    # handshake completes and the broker's alert ends the link before the CONNACK.
    certs: Path = tls_broker.certs  # type: ignore[attr-defined]
    settings = settings_for(tls_broker, tls=True, ca_file=str(certs / "ca.crt"))
    client, _, connects = started(clients, settings, wait=False)
    log_watch.wait_for("certificate required")
    first = next(r for r in log_watch.records if "certificate required" in r.getMessage())
    assert first.levelno == logging.WARNING
    assert "mqtt.cert_file" in first.getMessage()  # the fix, not only the symptom
    # paho 1.6 used to let this SSLError end its network thread: it must keep retrying.
    log_watch.wait_for("still cannot connect")
    assert any(t.name == NETWORK_THREAD_NAME and t.is_alive() for t in threading.enumerate())
    assert sum(r.levelno == logging.WARNING for r in log_watch.records) == 1
    assert not client.connected and connects.count == 0


# -- ordering after a reconnect (paho's callbacks driven by hand, no broker) -------------


class FakeInfo:
    def __init__(self, mid: int, rc: int = 0) -> None:
        self.mid, self.rc = mid, rc


class FakePaho:
    """Stands in for paho's client: records what MqttClient hands it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.subscribed: list[str] = []
        self.next_mid = 0
        self.ack_synchronously: Callable[[int], None] | None = None

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> FakeInfo:
        self.next_mid += 1
        self.sent.append((topic, payload))
        if self.ack_synchronously is not None:
            self.ack_synchronously(self.next_mid)  # the ack beats publish() returning
        return FakeInfo(self.next_mid)

    def subscribe(self, topic: str, qos: int) -> tuple[int, int]:
        self.subscribed.append(topic)
        return 0, 1000 + len(self.subscribed)  # apart from the publishes' mids


def _hand_driven() -> tuple[MqttClient, FakePaho, Callable[[], None], Callable[[], None]]:
    client = MqttClient(MqttSettings(host="127.0.0.1", port=1))
    fake = FakePaho()
    client._paho = fake  # type: ignore[assignment]

    def connect() -> None:
        client._on_connect(fake, None, {"session present": 1}, 0)

    def disconnect() -> None:
        client._on_disconnect(fake, None, None, 7, None)  # same arity on 1.6 and 2.x paths

    return client, fake, connect, disconnect


def test_newer_message_waits_for_the_ack_of_an_older_one_paho_resends() -> None:
    client, fake, connect, disconnect = _hand_driven()
    client.subscribe("t/cmd")
    connect()
    assert fake.subscribed == ["t/cmd"]
    client.publish("t/s", "1", retain=True)  # mid 1, never acked before the link drops
    disconnect()
    client.publish("t/s", "2", retain=True)
    client.publish("t/o", "x")
    fake.sent.clear()

    connect()  # paho would now re-send mid 1 ("1") after this handler returns
    assert fake.subscribed == ["t/cmd", "t/cmd"]
    assert fake.sent == [("t/o", b"x")]  # "2" is held back behind the re-sent "1"
    client.publish("t/s", "3", retain=True)  # newer still: replaces the held "2"
    assert fake.sent == [("t/o", b"x")]
    assert not client.flush(0)

    client._on_publish(fake, None, 1)  # the broker acks the re-sent "1"
    assert fake.sent == [("t/o", b"x"), ("t/s", b"3")]
    client.publish("t/s", "4", retain=True)  # no longer held: straight out
    assert fake.sent[-1] == ("t/s", b"4")
    for mid in range(2, fake.next_mid + 1):
        client._on_publish(fake, None, mid)
    assert client.flush(0)


def test_buffer_goes_out_retained_first_newest_per_topic_then_events_in_order() -> None:
    client, fake, connect, disconnect = _hand_driven()
    client.on_connect(lambda: client.publish("t/status", "online", retain=True))
    client.publish("t/error", "e1")
    for topic, value in [("a", "1"), ("b", "1"), ("a", "2")]:
        client.publish(f"t/{topic}", value, retain=True)
    client.publish("t/error", "e2")
    assert fake.sent == []
    connect()
    # Retained: the newest per topic, in the order of their latest publish, the connect
    # callback's behind what was published while away; then every event, in order.
    assert fake.sent == [
        ("t/b", b"1"),
        ("t/a", b"2"),
        ("t/status", b"online"),
        ("t/error", b"e1"),
        ("t/error", b"e2"),
    ]
    assert client.connected
    disconnect()
    assert not client.connected


def test_paho_never_holds_more_than_the_window_and_states_overtake_events() -> None:
    client, fake, connect, _ = _hand_driven()
    connect()
    for i in range(WINDOW + 50):
        client.publish("t/error", f"e{i}")  # a burst of error reports
    assert len(fake.sent) == WINDOW  # the rest waits in our bounded outbox, not in paho
    client.publish("t/dev/state", "s1", retain=True)
    client.publish("t/dev/state", "s2", retain=True)
    client._on_publish(fake, None, 1)  # the broker acks one: one slot frees
    assert fake.sent[-1] == ("t/dev/state", b"s2")  # the state first, newest only
    client._on_publish(fake, None, 2)
    assert fake.sent[-1] == ("t/error", f"e{WINDOW}".encode())  # then the events resume


def test_a_full_outbox_drops_the_oldest_event_and_keeps_states() -> None:
    client = MqttClient(MqttSettings(host="127.0.0.1", port=1, offline_buffer_size=3))
    fake = FakePaho()
    client._paho = fake  # type: ignore[assignment]
    for i in range(5):
        client.publish("t/error", f"e{i}")
    client.publish("t/s", "state", retain=True)
    client._on_connect(fake, None, {"session present": 1}, 0)
    assert fake.sent == [("t/s", b"state"), ("t/error", b"e2"), ("t/error", b"e3"),
                         ("t/error", b"e4")]  # fmt: skip


def test_an_ack_that_arrives_before_publish_returns_is_not_lost() -> None:
    client, fake, connect, _ = _hand_driven()
    connect()
    fake.ack_synchronously = lambda mid: client._on_publish(fake, None, mid)
    client.publish("t/s", "1")
    assert client.flush(0)


@pytest.mark.parametrize(
    ("reason", "hint"),
    [
        (
            "SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
            "failed: CA cert does not include key usage extension (_ssl.c:1029)",
            "strict verification",
        ),
        (
            "SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
            "failed: Missing Authority Key Identifier (_ssl.c:1029)",
            "strict verification",
        ),
        (
            "SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
            "failed: unable to get local issuer certificate (_ssl.c:1006)",
            "set mqtt.ca_file to that CA's certificate",
        ),
        (
            "SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
            "failed: certificate is not yet valid (_ssl.c:1006)",
            "check this machine's clock",
        ),
        (
            "SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
            "failed: unsuitable certificate purpose (_ssl.c:1006)",
            "check mqtt.ca_file and that mqtt.host matches",
        ),
    ],
)
def test_a_refused_certificate_gets_the_hint_that_fits(reason: str, hint: str) -> None:
    from agent.mqtt.paho import _with_hint

    assert hint in _with_hint(reason).split(" — ", 1)[1]


@pytest.mark.parametrize("qos", [1, 0])
def test_a_burst_far_beyond_the_outbox_loses_nothing_while_connected(
    tmp_path: Path, clients: list[MqttClient], qos: int
) -> None:
    # A broker that queues far more than the burst: whatever is lost here, agent lost.
    with Mosquitto(["max_queued_messages 1000000"], directory=tmp_path) as server:
        watcher = Observer(server.host, server.port, ["t/burst"], client_id="burst-watch")
        try:
            client, _, _ = started(clients, settings_for(server, offline_buffer_size=50))
            client.wait_for_room_on(threading.current_thread())  # as the runtime does: a device
            count = 3000
            for i in range(count):  # 60x the outbox: the publisher waits for room instead
                client.publish("t/burst", str(i), qos=qos)
            eventually(lambda: len(watcher.messages("t/burst")) >= count, timeout=30)
            got = [int(m.payload) for m in watcher.messages("t/burst")]
            assert got == list(range(count))  # all of them, in order, once
            assert client.stats()["dropped"] == 0
        finally:
            watcher.close()


def _sends_on_this_thread(client: MqttClient, thread: threading.Thread | None = None) -> list[int]:
    """Count the socket writes paho makes on the calling thread (or on ``thread``) from now
    on (a list of one counter, so the caller reads it as it grows)."""
    paho = client._paho
    assert paho is not None
    here, count, write = thread or threading.current_thread(), [0], paho._sock_send

    def counted(buf: Any) -> Any:
        if threading.current_thread() is here:
            count[0] += 1
        return write(buf)

    paho._sock_send = counted  # type: ignore[method-assign]
    return count


def _wakes_from_this_thread(client: MqttClient) -> list[int]:
    """Count the wake-ups of paho's network thread (a byte on its socket pair) sent from the
    calling thread from now on."""
    paho = client._paho
    assert paho is not None
    here, count, pair = threading.current_thread(), [0], paho._sockpairW

    class Counted:
        def send(self, data: bytes) -> int:
            if threading.current_thread() is here:
                count[0] += 1
            return int(pair.send(data))

        def __getattr__(self, name: str) -> Any:
            return getattr(pair, name)

    paho._sockpairW = Counted()
    return count


@pytest.mark.parametrize("qos", [0, 1])
def test_a_burst_is_written_by_the_network_thread_in_order(
    broker: Mosquitto,
    observer: Observer,
    clients: list[MqttClient],
    monkeypatch: pytest.MonkeyPatch,
    qos: int,
) -> None:
    monkeypatch.setattr(paho_module, "BURST_GAP", 3600.0)  # every publish follows quickly
    client, _, _ = started(clients, settings_for(broker))
    eventually(lambda: client.connected, timeout=5)  # connect handling done: may wait
    client.wait_for_room_on(threading.current_thread())
    assert client._paho is not None
    client._paho._local.wrote = -1e9  # this thread's last write: long ago
    sends = _sends_on_this_thread(client)
    wakes = _wakes_from_this_thread(client)
    count = 500
    for i in range(count):
        client.publish("t/burst", str(i), qos=qos)
    # The first few are written at once, here; the rest by the network thread, joined,
    # woken for them (else they would wait for its next round: up to a second).
    assert sends[0] <= paho_module.BURST_AFTER
    assert wakes[0] > 0
    eventually(lambda: len(observer.messages("t/burst")) == count, timeout=10)
    assert [int(m.payload) for m in observer.messages("t/burst")] == list(range(count))
    assert client.stats()["dropped"] == 0


def test_replies_to_quick_commands_are_each_written_at_once(
    broker: Mosquitto,
    observer: Observer,
    clients: list[MqttClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # However quick a stream of commands, a reply to each is no burst: it is written on the
    # replying thread at once, not handed to the network thread (a wake and a thread
    # switch more per command).
    monkeypatch.setattr(paho_module, "BURST_GAP", 3600.0)  # every write follows quickly
    client, inbox, _ = started(clients, settings_for(broker), subscribe=("t/cmd",))
    eventually(lambda: client.connected, timeout=5)
    assert client._paho is not None
    client._paho._local.wrote = -1e9  # this thread's last write: long ago
    sends = _sends_on_this_thread(client)
    wakes = _wakes_from_this_thread(client)
    count = 3 * paho_module.BURST_AFTER + 1
    for i in range(count):
        observer.publish("t/cmd", str(i), qos=0)
        assert inbox.get() == ("t/cmd", str(i).encode(), False)
        client.publish("t/reply", str(i), qos=0)
    # All written here. (One may be left to the network thread if that one happened to hold
    # the write lock at the moment: not a burst. Taken for a burst, 7 of 10 would be.)
    assert sends[0] >= count - 1
    assert wakes[0] <= 1
    eventually(lambda: len(observer.messages("t/reply")) == count, timeout=5)


def _pubacks_queued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the PUBACKs paho queues from now on (it does so after ``on_message`` returned,
    so a test that got a message may be ahead of its PUBACK)."""
    count, original = [0], paho_module._PahoClient._send_puback

    def counted(self: Any, mid: int) -> Any:
        count[0] += 1
        return original(self, mid)

    monkeypatch.setattr(paho_module._PahoClient, "_send_puback", counted)
    return count


def _commanded(
    clients: list[MqttClient], broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> tuple[MqttClient, Inbox, Any, list[int]]:
    """A client subscribed to ``t/cmd``, its paho client, and the count of PUBACKs queued,
    once the subscription probe's own PUBACK is written."""
    acks = _pubacks_queued(monkeypatch)
    client, inbox, _ = started(clients, settings_for(broker), subscribe=("t/cmd",))
    paho = client._paho
    assert paho is not None and paho._thread is not None
    eventually(lambda: acks[0] == 1 and not paho._out_packet, timeout=5)
    return client, inbox, paho, acks


def test_a_command_at_qos_1_is_acknowledged_with_its_reply(
    broker: Mosquitto,
    observer: Observer,
    clients: list[MqttClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The PUBACK of a command waits for the reply and goes out with it, in one send on the
    # replying thread: the network thread writes nothing (it wrote every PUBACK itself).
    client, inbox, paho, acks = _commanded(clients, broker, monkeypatch)
    monkeypatch.setattr(paho_module, "ACK_GRACE", 3600.0)  # only a reply can take it along
    network = _sends_on_this_thread(client, paho._thread)
    here = _sends_on_this_thread(client)
    count = 10
    for i in range(count):
        observer.publish("t/cmd", str(i), qos=1)
        assert inbox.get() == ("t/cmd", str(i).encode(), False)
        eventually(lambda n=i + 2: acks[0] == n, timeout=5)  # paho queued its PUBACK
        client.publish("t/reply", str(i), qos=0)
        assert not paho._out_packet  # written, the PUBACK with it
    eventually(lambda: len(observer.messages("t/reply")) == count, timeout=5)
    assert network[0] == 0
    assert here[0] == count  # one send a command: its PUBACK and its reply
    assert not paho._out_packet


def test_a_command_at_qos_1_with_no_reply_is_still_acknowledged(
    broker: Mosquitto,
    observer: Observer,
    clients: list[MqttClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, inbox, paho, acks = _commanded(clients, broker, monkeypatch)
    network = _sends_on_this_thread(client, paho._thread)
    observer.publish("t/cmd", "quiet", qos=1)
    assert inbox.get() == ("t/cmd", b"quiet", False)
    # Nothing takes it along: the loop writes it once it is due (ACK_GRACE).
    eventually(lambda: network[0] == 1, timeout=5)
    assert acks[0] == 2
    assert not paho._out_packet


def test_held_writes_go_out_together_at_the_end_of_the_block_in_order(
    broker: Mosquitto, observer: Observer, clients: list[MqttClient]
) -> None:
    client, _, _ = started(clients, settings_for(broker))
    eventually(lambda: client.connected, timeout=5)  # connect handling done: may wait
    sends = _sends_on_this_thread(client)
    with client.writes_held():
        client.publish("t/held/state", "s", retain=True)
        for i in range(10):
            client.publish("t/held/event", str(i))
            client.publish("t/held/fast", str(i), qos=0)
        assert sends[0] == 0  # kept in the outbox: nothing handed over, nothing written
        assert len(client._outbox) == 21
    assert sends[0] > 0  # released: handed over and written on this thread, together
    assert client.flush(5)
    for topic in ("t/held/event", "t/held/fast"):  # MQTT orders per topic and QoS only
        eventually(lambda t=topic: len(observer.messages(t)) == 10, timeout=5)
        assert [int(m.payload) for m in observer.messages(topic)] == list(range(10))
    assert observer.wait_for("t/held/state").payload == b"s"
    before = sends[0]
    with client.writes_held():
        with client.writes_held():  # nested: held until the outer block ends
            client.publish("t/held/event", "10")
        client.publish("t/held/event", "11")
        assert sends[0] == before
    eventually(lambda: len(observer.messages("t/held/event")) == 12, timeout=5)
    assert [int(m.payload) for m in observer.messages("t/held/event")] == list(range(12))


def test_a_hold_keeps_back_only_the_holders_own_messages(
    broker: Mosquitto, observer: Observer, clients: list[MqttClient]
) -> None:
    client, _, _ = started(clients, settings_for(broker))
    eventually(lambda: client.connected, timeout=5)  # connect handling done: may wait
    with client.writes_held():
        client.publish("t/held/mine", "1")
        other = threading.Thread(target=client.publish, args=("t/held/theirs", "2"))
        other.start()
        other.join(5)
        # Another thread's message goes out at once (and takes along what waits before it).
        assert observer.wait_for("t/held/theirs").payload == b"2"
        assert observer.wait_for("t/held/mine").payload == b"1"


def test_a_held_publisher_that_must_wait_for_room_writes_first(
    broker: Mosquitto,
    observer: Observer,
    clients: list[MqttClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Held messages while the thread waits for room would get no acknowledgement to make
    that room: nothing would be in flight, and nobody else might publish."""
    # Without the fix each of ~190 waits would last the whole backpressure wait: keep it short.
    monkeypatch.setattr("agent.mqtt.paho.BACKPRESSURE_WAIT", 0.2)
    client, _, _ = started(clients, settings_for(broker, offline_buffer_size=5))
    eventually(lambda: client.connected, timeout=5)  # connect handling done: may wait
    client.wait_for_room_on(threading.current_thread())
    room = client._room
    in_flight_at_wait: list[bool] = []

    class Room:  # the publishers' condition, noting whether anything is on its way
        def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
            # the lock is held: what waits in the outbox is in paho's hands, or going there
            in_flight_at_wait.append(client._in_paho[1] > 0 or client._pumping)
            return room.wait_for(predicate, timeout)

        def notify_all(self) -> None:
            room.notify_all()

    client._room = Room()  # type: ignore[assignment]
    count = 200  # 40x the event lane
    with client.writes_held():
        for i in range(count):
            client.publish("t/held/burst", str(i))
    eventually(lambda: len(observer.messages("t/held/burst")) >= count, timeout=30)
    assert [int(m.payload) for m in observer.messages("t/held/burst")] == list(range(count))
    assert client.stats()["dropped"] == 0
    # Without the fix the holder waits (nothing of its own is in flight) and this fails; with
    # it, acknowledgements may keep the lane from ever filling: then there is no wait at all.
    assert all(in_flight_at_wait)


def test_a_publisher_waiting_for_room_drops_the_oldest_once_the_link_is_gone() -> None:
    client = MqttClient(MqttSettings(host="127.0.0.1", port=1, offline_buffer_size=3))
    fake = FakePaho()
    client._paho = fake  # type: ignore[assignment]
    client._on_connect(fake, None, {"session present": 1}, 0)
    for i in range(WINDOW + 3):  # the window in paho's hands, the outbox full
        client.publish("t/e", f"e{i}")
    waiting = threading.Thread(target=client.publish, args=("t/e", "late"), name="publisher")
    client.wait_for_room_on(waiting)
    waiting.start()
    waiting.join(0.2)
    assert waiting.is_alive()  # connected: it waits for room, nothing is dropped
    assert client.stats()["dropped"] == 0
    client._on_disconnect(fake, None, None, 7, None)
    waiting.join(5)
    assert not waiting.is_alive()  # the link is gone: no point waiting, the oldest goes
    assert client.stats()["dropped"] == 1


def test_only_registered_threads_wait_and_nobody_once_shutdown_begins() -> None:
    client = MqttClient(MqttSettings(host="127.0.0.1", port=1, offline_buffer_size=3))
    fake = FakePaho()
    client._paho = fake  # type: ignore[assignment]
    client._on_connect(fake, None, {"session present": 1}, 0)
    for i in range(WINDOW + 3):
        client.publish("t/e", f"e{i}")
    client.publish("t/e", "from the scheduler")  # not registered: the oldest goes, at once
    assert client.stats()["dropped"] == 1
    device = threading.Thread(target=client.publish, args=("t/e", "late"), name="device")
    client.wait_for_room_on(device)
    device.start()
    device.join(0.2)
    assert device.is_alive()  # a device waits for room
    client.stop_waiting()  # what the runtime does first when it stops
    device.join(5)
    assert not device.is_alive()
    assert client.stats()["dropped"] == 2
    client.publish("t/e", "after")  # and nobody waits any more
    assert client.stats()["dropped"] == 3


class _Code:
    """paho 2.x hands SUBACK results as ReasonCode objects (``.value``), 1.6 as ints."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __str__(self) -> str:
        return "Unspecified error" if self.value == 0x80 else f"Granted QoS {self.value}"


@pytest.mark.parametrize("refused", [0x80, _Code(0x80)], ids=["paho 1.6", "paho 2.x"])
def test_a_subscription_the_broker_refuses_is_a_warning_naming_the_topic(
    refused: object, caplog: pytest.LogCaptureFixture
) -> None:
    # mosquitto grants every subscription and filters by its ACL on delivery; other brokers
    # (and ACL plugins) answer SUBACK 0x80, which used to pass without a word.
    client, fake, connect, _ = _hand_driven()
    client.subscribe("t/+/set")
    client.subscribe("t/set")
    with caplog.at_level(logging.WARNING, logger="agent.mqtt.paho"):
        connect()
        first, second = 1001, 1002  # the SUBSCRIBEs' mids, in order
        client._on_subscribe(fake, None, first, [1])  # granted
        client._on_subscribe(fake, None, second, [refused])
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "refused the subscription to t/set" in warnings[0]
    assert "check the broker's ACL" in warnings[0]


def _sound_link(keepalive: int) -> tuple[Any, socket.socket]:
    """A paho client of MqttClient's, connected (as far as paho knows) over a socket pair."""
    import paho.mqtt.client as paho

    client = MqttClient(MqttSettings(host="127.0.0.1", port=1, keepalive=keepalive))
    inner = client._build_client()
    ours, theirs = socket.socketpair()
    inner._sock = ours
    inner._keepalive = keepalive
    inner._state = (
        paho._ConnectionState.MQTT_CS_CONNECTED
        if hasattr(paho, "_ConnectionState")
        else paho.mqtt_cs_connected
    )
    return inner, theirs


def test_the_link_watch_pings_a_quiet_link_and_never_drops_a_sound_one() -> None:
    # Half a keepalive without a byte from the broker, and nothing sent for a whole one
    # (commands in, no answers out): the watch's PINGREQ must not make paho 1.6's own
    # check, in the same round, close the link.
    inner, broker_side = _sound_link(keepalive=10)
    dropped: list[object] = []
    inner.on_disconnect = lambda *args: dropped.append(args)
    now = time.monotonic()
    inner.last_received = now - 6
    with inner._msgtime_mutex:
        inner._last_msg_out = now - 11
        for name in ("_last_msg_in", "_last_bytes_received"):  # 1.6 / 2.x
            if hasattr(inner, name):
                setattr(inner, name, now - 6)
    inner.loop_misc()
    assert dropped == [] and inner._sock is not None
    assert inner._ping_t  # a PINGREQ is on its way
    inner.loop_write()
    assert broker_side.recv(16) == b"\xc0\x00"  # PINGREQ
    # A whole keepalive without a byte: dropped, once.
    inner.last_received = time.monotonic() - 10
    inner.loop_misc()
    assert len(dropped) == 1 and inner._sock is None
    broker_side.close()


def test_a_redelivered_message_is_passed_on_and_logged_at_a_falling_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, fake, _, _ = _hand_driven()
    got: list[tuple[str, bytes]] = []
    client.on_message(lambda topic, payload, retained: got.append((topic, payload)))

    class Message:
        topic, payload, retain, dup = "t/valve/set", b"open", False, 0

    class Redelivered(Message):
        dup = 1

    with caplog.at_level(logging.DEBUG, logger="agent.mqtt.paho"):
        client._on_message(fake, None, Message())
        for _ in range(9):
            client._on_message(fake, None, Redelivered())
    assert got == [("t/valve/set", b"open")] * 10  # at least once: every copy is handled
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 4  # the 1st, 2nd, 4th and 8th
    assert infos[-1] == (
        "MQTT: a message on t/valve/set came again, marked as a redelivery (DUP); it is "
        "handled again, as QoS 1 delivers at least once (8 so far)"
    )


def test_messages_whose_topic_is_not_utf8_are_dropped_and_logged_at_a_falling_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, fake, _, _ = _hand_driven()
    got: list[str] = []
    client.on_message(lambda topic, payload, retained: got.append(topic))

    class BadTopic:  # paho decodes the topic on access, as MQTTMessage.topic does
        payload, retain, dup = b"x", False, 0

        @property
        def topic(self) -> str:
            return b"\xff\xfe".decode("utf-8")

    with caplog.at_level(logging.DEBUG, logger="agent.mqtt.paho"):
        for _ in range(100):
            client._on_message(fake, None, BadTopic())
    assert got == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 7  # the 1st, 2nd, 4th, ... 64th
    assert warnings[-1] == "MQTT: dropped a message whose topic is not UTF-8 (64 so far)"
