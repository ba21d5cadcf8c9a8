"""Private RabbitMQ nodes with the MQTT plugin, for integration tests (issue 14).

:class:`RabbitMQ` runs Debian 12's ``rabbitmq-server`` (3.10, MQTT 3.1.1 through the
``rabbitmq_mqtt`` plugin) as a foreground subprocess, with everything of its own in a
temporary directory: node name ``rabbit-<random>@localhost``, config file, enabled-plugins
file, Mnesia and log directories, ``HOME`` holding the Erlang cookie, and a free MQTT port
and distribution port on 127.0.0.1. It is the counterpart of
:class:`agent.testing.mosquitto.Mosquitto`: ``.host``, ``.port`` (MQTT), ``start()``,
``stop()``, ``kill()``, ``close()``, ``log_text()``, context manager.

Each node (or each :func:`cluster`) also runs its own ``epmd`` on a free port of 127.0.0.1
(``ERL_EPMD_PORT``), so nothing here touches port 4369, a system RabbitMQ or another
test's nodes, and nothing outlives :meth:`RabbitMQ.close` / :meth:`Cluster.close`.

:func:`cluster` starts ``n`` nodes sharing one cookie and one epmd and joins every node to
the first (``rabbitmqctl stop_app; join_cluster; start_app``).

Not a test module (no ``test_`` prefix): nothing here is collected. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as mqtt

from agent.testing.mosquitto import free_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
"""Debian's real scripts: ``/usr/sbin/rabbitmq-server`` is a wrapper that, run as root,
``su``s to the ``rabbitmq`` user and works in /var/lib/rabbitmq; we call these directly."""
RABBITMQ_SERVER = RABBITMQ_BIN / "rabbitmq-server"
RABBITMQCTL = RABBITMQ_BIN / "rabbitmqctl"
EPMD = "/usr/bin/epmd"
INSTALL_HINT = (
    "rabbitmq-server is missing: install it: "
    "sudo apt-get install -y --no-install-recommends rabbitmq-server"
)

START_TIMEOUT = 90.0
"""A first start (fresh Mnesia) takes about 6-10 s here; a loaded 2-CPU CI machine more."""
CTL_TIMEOUT = 60.0


def require_rabbitmq() -> None:
    """Fail (never skip) with the install command when Debian's rabbitmq-server is absent."""
    for path in (RABBITMQ_SERVER, RABBITMQCTL, Path(EPMD)):
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"{INSTALL_HINT} ({path} not found)")


def _wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def mqtt_handshake(host: str, port: int, timeout: float = 5.0) -> bool:
    """True when an MQTT 3.1.1 CONNECT on ``host:port`` gets an accepting CONNACK."""
    if hasattr(mqtt, "CallbackAPIVersion"):  # paho 2.x
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{port}")
    else:
        client = mqtt.Client(client_id=f"probe-{port}")
    try:
        client.connect(host, port, keepalive=10)
    except OSError:
        return False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                return False
            if client.is_connected():
                return True
        return False
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()


class Epmd:
    """A private Erlang port mapper on 127.0.0.1:``port``, so nodes never share the
    system's (port 4369) and never leave one behind."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self._log = directory / "epmd.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        env = {**os.environ, "ERL_EPMD_ADDRESS": "127.0.0.1"}
        with open(self._log, "ab") as log:
            self._process = subprocess.Popen(
                [EPMD, "-port", str(self.port), "-address", "127.0.0.1"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        if not _wait_for_port("127.0.0.1", self.port, timeout):
            self.stop()
            raise RuntimeError(f"epmd did not listen on {self.port} in {timeout} s")

    def stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5.0)


class RabbitMQ:
    """A private RabbitMQ node with the MQTT plugin on a free 127.0.0.1 port.

    Args:
        directory: where config, Mnesia, logs and the cookie go; a fresh temporary
            directory if None (removed by :meth:`close`).
        port: the MQTT port; a free one if None.
        cookie: the Erlang cookie (nodes of a cluster share one); random if None.
        epmd_port: the port of an epmd already running (a cluster's); if None, the node
            runs its own epmd on a free port and stops it in :meth:`close`.
        extra_config: more ``rabbitmq.conf`` lines (new-style ``key = value``).
    """

    def __init__(
        self,
        *,
        directory: str | os.PathLike[str] | None = None,
        port: int | None = None,
        cookie: str | None = None,
        epmd_port: int | None = None,
        extra_config: Sequence[str] = (),
    ) -> None:
        require_rabbitmq()
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="rabbitmq-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.dist_port = free_port(self.host)
        self.nodename = f"rabbit-{secrets.token_hex(4)}@localhost"
        self.cookie = cookie or secrets.token_hex(16)
        self._own_epmd = epmd_port is None
        self._epmd = Epmd(self.directory) if epmd_port is None else None
        self.epmd_port = self._epmd.port if self._epmd is not None else int(epmd_port or 0)
        self.home = self.directory / "home"
        self.config_path = self.directory / "rabbitmq.conf"
        self.plugins_path = self.directory / "enabled_plugins"
        self.log_dir = self.directory / "log"
        self.mnesia_dir = self.directory / "mnesia"
        self.stdout_path = self.directory / "stdout.log"
        self._extra_config = list(extra_config)
        self._process: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None
        """How long the last :meth:`start` took, until MQTT CONNECT got its CONNACK."""
        self._write_files()

    def _write_files(self) -> None:
        for folder in (self.home, self.log_dir, self.mnesia_dir):
            folder.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o600)
        lines = [
            # No AMQP listener: the tests speak MQTT only, and fewer ports, fewer clashes.
            "listeners.tcp = none",
            f"mqtt.listeners.tcp.default = {self.host}:{self.port}",
            "mqtt.allow_anonymous = true",
            "mqtt.default_user = guest",
            "mqtt.default_pass = guest",
            "mqtt.vhost = /",
            "mqtt.exchange = amq.topic",
            "loopback_users = none",
            "log.console = false",
            "log.file.level = info",
            *self._extra_config,
        ]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.plugins_path.write_text("[rabbitmq_mqtt].\n")

    def env(self) -> dict[str, str]:
        """The environment for this node's ``rabbitmq-server`` and ``rabbitmqctl``."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        return {
            **base,
            "HOME": str(self.home),  # ~/.erlang.cookie, for the node and for rabbitmqctl
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.config_path),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.plugins_path),
            "RABBITMQ_MNESIA_BASE": str(self.mnesia_dir),
            "RABBITMQ_LOG_BASE": str(self.log_dir),
            "RABBITMQ_PID_FILE": str(self.directory / "rabbitmq.pid"),
            "RABBITMQ_CONF_ENV_FILE": str(self.directory / "rabbitmq-env.conf"),
            # The distribution listener on loopback only (it binds 0.0.0.0 by default).
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    @property
    def running(self) -> bool:
        """True while the node's process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the node; return once an MQTT CONNECT gets a CONNACK (bounded)."""
        if self.running:
            return
        if self._epmd is not None:
            self._epmd.start()
        (self.directory / "rabbitmq-env.conf").touch()  # not Debian's /etc one
        began = time.monotonic()
        with open(self.stdout_path, "ab") as out:
            self._process = subprocess.Popen(
                [str(RABBITMQ_SERVER)],
                cwd=self.directory,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,  # its own process group: kill() ends erl's children
            )
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"rabbitmq-server exited with {self._process.returncode}:\n{self.log_text()}"
                )
            if _wait_for_port(self.host, self.port, 0.2) and mqtt_handshake(
                self.host, self.port, timeout=max(0.5, deadline - time.monotonic())
            ):
                self.start_seconds = time.monotonic() - began
                return
        self.kill()
        raise RuntimeError(
            f"RabbitMQ did not accept MQTT on {self.port} in {timeout} s:\n{self.log_text()}"
        )

    def ctl(self, *args: str, timeout: float = CTL_TIMEOUT, check: bool = True) -> str:
        """Run ``rabbitmqctl -n NODE ARGS`` (bounded); its output, or an error with it."""
        try:
            done = subprocess.run(
                [str(RABBITMQCTL), "-n", self.nodename, *args],
                cwd=self.directory,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} took over {timeout} s") from exc
        output = (done.stdout + done.stderr).decode(errors="replace")
        if check and done.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} failed ({done.returncode}):\n{output}"
            )
        return output

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node cleanly (``rabbitmqctl stop``, bounded); SIGKILL if that fails."""
        if not self.running:
            return
        with contextlib.suppress(RuntimeError):
            self.ctl("stop", timeout=timeout)
        process = self._process
        assert process is not None
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the node's whole process group at once, as a crash would."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10.0)

    def log_text(self) -> str:
        """The node's log files so far, and what it printed."""
        parts = []
        paths = sorted(self.log_dir.glob("*.log")) if self.log_dir.exists() else []
        for path in (*paths, self.stdout_path):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return "".join(parts)

    def close(self) -> None:
        """Stop the node (and its own epmd) and remove its directory if we created it."""
        try:
            self.stop()
        finally:
            if self._epmd is not None:
                self._epmd.stop()
            if self._own_dir:
                shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RabbitMQ:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Cluster:
    """``n`` RabbitMQ nodes on one machine, sharing a cookie and a private epmd, every node
    joined to the first. ``nodes[i].host/.port`` is node i's MQTT listener;
    :meth:`hosts` lists them as ``host:port`` strings (for ``mqtt.hosts``)."""

    def __init__(self, n: int = 2, *, directory: str | os.PathLike[str] | None = None) -> None:
        if n < 1:
            raise ValueError("a cluster needs at least one node")
        require_rabbitmq()
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="rabbitmq-cluster-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self._epmd = Epmd(self.directory)
        cookie = secrets.token_hex(16)
        self.nodes = [
            RabbitMQ(
                directory=self.directory / f"node{i}", cookie=cookie, epmd_port=self._epmd.port
            )
            for i in range(n)
        ]
        self.start_seconds: float | None = None

    def hosts(self) -> list[str]:
        return [f"{node.host}:{node.port}" for node in self.nodes]

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start every node, then join each one after the first to the first (bounded)."""
        began = time.monotonic()
        self._epmd.start()
        first, *others = self.nodes
        # All at once: much of a boot is waiting (e.g. about 4 s for a Raft election of the
        # MQTT plugin's client id tracker), so on 2 CPUs this beats one after the other.
        errors: list[BaseException] = []

        def boot(node: RabbitMQ) -> None:
            try:
                node.start(timeout)
            except BaseException as exc:  # re-raised below, on the calling thread
                errors.append(exc)

        threads = [threading.Thread(target=boot, args=(node,)) for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout + 10)
        if errors:
            raise errors[0]
        for node in others:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.nodename)
            node.ctl("start_app")
            if not _wait_for_port(node.host, node.port, timeout) or not mqtt_handshake(
                node.host, node.port
            ):
                raise RuntimeError(f"{node.nodename} did not serve MQTT after joining the cluster")
        status = first.ctl("cluster_status", "--formatter", "json")
        for node in self.nodes:
            if node.nodename not in status:
                raise RuntimeError(f"{node.nodename} is not in the cluster:\n{status}")
        self.start_seconds = time.monotonic() - began

    def mirror_mqtt_sessions(self) -> None:
        """Mirror every MQTT session queue to all nodes (a classic mirrored-queue policy).

        Without it a persistent session (``clean_session = false``) lives in a queue on the
        node the client first connected to; when that node stops, the client can connect to
        another node but its SUBSCRIBE fails (``home node ... of durable queue
        'mqtt-subscription-<id>qos1' ... is down``) and the connection is closed, again and
        again. With it the mirror on a surviving node takes over: session present, and the
        QoS 1 messages queued before and during the move are delivered.
        """
        self.nodes[0].ctl(
            "set_policy",
            "--apply-to",
            "queues",
            "mqtt-sessions-everywhere",
            "^mqtt-subscription-",
            '{"ha-mode": "all", "ha-sync-mode": "automatic", "ha-promote-on-shutdown": "always"}',
        )

    def close(self) -> None:
        """Stop every node (the last first), the epmd, and remove the directory if ours."""
        try:
            for node in reversed(self.nodes):
                node.close()
        finally:
            self._epmd.stop()
            if self._own_dir:
                shutil.rmtree(self.directory, ignore_errors=True)

    def log_text(self) -> str:
        return "".join(f"=== {node.nodename}\n{node.log_text()}" for node in self.nodes)

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cluster(n: int = 2, *, directory: str | os.PathLike[str] | None = None) -> Cluster:
    """A :class:`Cluster` of ``n`` nodes, not started yet: use it as a context manager
    (``with cluster(2) as c:``) or call ``start()`` and ``close()``."""
    return Cluster(n, directory=directory)


_RESET = (
    # The retained messages: a dets table per vhost, opened by the MQTT plugin a moment after
    # the vhost starts (so wait for it), kept in memory and written out lazily (so sync it).
    # Emptied before the vhost goes, because deleting and creating the vhost again reopens
    # the same file with whatever it held.
    "Retained = fun Wait(N) -> "
    "  case [T || T <- dets:all(), is_atom(T), "
    '              lists:prefix("rabbit_mqtt_retained_", atom_to_list(T))] of '
    "    [] when N > 0 -> timer:sleep(50), Wait(N - 1); "
    "    Tables -> Tables "
    "  end "
    "end, "
    "[begin ok = dets:delete_all_objects(T), ok = dets:sync(T) end || T <- Retained(200)], "
    # The users a test added (SharedNode.add_user).
    '[rabbit_auth_backend_internal:delete_user(U, <<"tests">>) '
    ' || [{user, U} | _] <- rabbit_auth_backend_internal:list_users(), U =/= <<"guest">>], '
    # The vhost: its queues (the MQTT sessions) and connections go with it.
    'ok = rabbit_vhost:delete(<<"/">>, <<"tests">>), '
    'ok = rabbit_vhost:add(<<"/">>, <<"tests">>), '
    "ok = rabbit_auth_backend_internal:set_permissions("
    '<<"guest">>, <<"/">>, <<".*">>, <<".*">>, <<".*">>, <<"tests">>), '
    "[_ | _] = Retained(200), "  # open again, empty, before the next test publishes
)

_FLUSH_LOG = (
    # RabbitMQ's own file handler (rabbit_logger_std_h) writes with a delay of up to 2 s.
    "[M:filesync(Id) || #{id := Id, module := M} <- logger:get_handler_config(), "
    "M =:= logger_std_h orelse M =:= rabbit_logger_std_h], ok."
)


class SharedNode:
    """One RabbitMQ node for a whole test session, shown to each test as its own broker.

    The ``broker`` fixture (tests/conftest.py) gives a test either a fresh
    :class:`~agent.testing.mosquitto.Mosquitto` or this. A node takes about 10 s to boot,
    so there is one; :meth:`reset` (about 0.6 s) gives each test an empty broker: no
    sessions, no retained messages, no connections. ``start``/``stop``/``kill``/``restart``
    act on the node itself, as the mosquitto fixture's do on mosquitto, and a test that
    leaves it stopped gets it booted again by the next :meth:`reset`.
    """

    kind = "rabbitmq"

    def __init__(self, node: RabbitMQ) -> None:
        self.node = node
        self._log_mark = 0

    @property
    def host(self) -> str:
        return self.node.host

    @property
    def port(self) -> int:
        return self.node.port

    @property
    def running(self) -> bool:
        return self.node.running

    def reset(self) -> None:
        """Boot the node if a test left it down, then empty it."""
        self.node.start()
        self.node.ctl("eval", _RESET + _FLUSH_LOG)
        self._log_mark = len(self._log())

    def add_user(self, name: str, password: str) -> None:
        """A user with every permission on the MQTT vhost, until the next :meth:`reset`.

        RabbitMQ checks the credentials a client gives even where anonymous logins are
        allowed (mosquitto's ``allow_anonymous true`` lets any name and password in).
        """
        quoted = password.replace("\\", "\\\\").replace('"', '\\"')
        self.node.ctl(
            "eval",
            f'rabbit_auth_backend_internal:add_user(<<"{name}">>, <<"{quoted}">>, <<"tests">>), '
            f'ok = rabbit_auth_backend_internal:set_permissions(<<"{name}">>, <<"/">>, '
            '<<".*">>, <<".*">>, <<".*">>, <<"tests">>).',
        )

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Boot the node; return once MQTT CONNECT is accepted (3-5 s after a stop)."""
        self.node.start(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node cleanly (``rabbitmqctl stop``)."""
        self.node.stop(timeout)

    def kill(self) -> None:
        """SIGKILL the node, as a crash would."""
        self.node.kill()

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        self.stop()
        self.start(timeout)

    def _log(self) -> str:
        path = self.node.log_dir / f"{self.node.nodename}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_text(self) -> str:
        """The node's log since this test's :meth:`reset` (connections are logged at info:
        ``accepting MQTT connection ... client id: ID``), with what the node had not yet
        written out (its logger buffers) written first."""
        if self.node.running:
            self.node.ctl("eval", _FLUSH_LOG, check=False)
        return self._log()[self._log_mark :]
