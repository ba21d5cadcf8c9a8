"""End to end: the agent under the broker ACL of docs/mosquitto-acl.conf.

A real mosquitto with ``allow_anonymous false``, a password file and, as its ``acl_file``,
the example from docs/ itself with its prefix ``gas2mqtt`` replaced by ours (as its comments
tell a user to do) and one admin account appended (``topic readwrite #``) to watch the
wire. The agent runs as a real subprocess (``python -m agent --config FILE``) logged in as
the ``agent`` account of the example.

What it proves: an app (root device, command device, device with a sub-topic command,
telemetry) and the daemon with Home Assistant discovery work end to end under the ACL —
heartbeat, availability, states, commands on all three command subscriptions, error
topics, the last will, discovery configs, Home Assistant's birth message and a command
sent the way Home Assistant sends it — and the broker denies the agent nothing (no
``Denied PUBLISH`` in its log). And that the ACL bites: the agent's account can publish
nothing outside its prefix and its own discovery configs, and reads nothing but its
command topics and Home Assistant's birth topic. mosquitto drops denied publishes
silently (a PUBACK for MQTT 3.1.1) and grants any subscription but delivers only what
the account may read, so each check ends with a probe message that must arrive: what was
denied would have arrived before it.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from pathlib import Path
from typing import NamedTuple

import pytest
from e2e_helpers import BOUND, AgentProcess, write_app, write_password_file
from ha_schema import check_discovery

from agent.testing import eventually
from agent.testing.mosquitto import Message, Mosquitto, Observer

pytestmark = pytest.mark.integration

ACL_EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "mosquitto-acl.conf"
EXAMPLE_PREFIX = "gas2mqtt"  # what the example says to replace
# (topic prefix, Home Assistant node id): one level, and several levels whose node id the
# example's comments say how to make
PREFIXES = [("meter", "meter"), ("home/gas", "home_gas")]
AGENT_USER, AGENT_PASSWORD = "agent", "Acl-agent-5t5t"  # the example's account
ADMIN_USER, ADMIN_PASSWORD = "admin", "Acl-admin-8u8u"


class AclBroker(NamedTuple):
    server: Mosquitto
    secret: Path  # the agent's password, for mqtt.password_file
    prefix: str  # the agent's topic prefix, in the ACL
    node: str  # its Home Assistant node id, in the ACL

    def denied(self) -> list[str]:
        """The broker's ``Denied PUBLISH from <client> ...`` lines so far."""
        return [line for line in self.server.log_text().splitlines() if "Denied" in line]


def acl_text(prefix: str, node: str) -> str:
    """The example ACL for ``prefix`` and its node id, with the admin account appended."""
    text = ACL_EXAMPLE.read_text()
    assert f"\nuser {AGENT_USER}\n" in text and EXAMPLE_PREFIX in text
    text, discovery_lines = re.subn(
        rf"^(topic \w+ homeassistant/\+/){EXAMPLE_PREFIX}/", rf"\g<1>{node}/", text, flags=re.M
    )
    assert discovery_lines == 1, "the example's discovery line is not where the test expects"
    text = re.sub(rf"\b{EXAMPLE_PREFIX}\b", prefix, text)
    return f"{text}\nuser {ADMIN_USER}\ntopic readwrite #\n"


@pytest.fixture(params=PREFIXES, ids=[prefix for prefix, _ in PREFIXES])
def acl_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AclBroker]:
    prefix, node = request.param
    folder = tmp_path_factory.mktemp("acl-mosquitto")
    passwords = write_password_file(
        folder / "passwd", {AGENT_USER: AGENT_PASSWORD, ADMIN_USER: ADMIN_PASSWORD}
    )
    acl = folder / "acl"
    acl.write_text(acl_text(prefix, node))
    secret = folder / "agent-password"
    secret.write_text(AGENT_PASSWORD + "\n")
    secret.chmod(0o600)
    server = Mosquitto(
        ["allow_anonymous false", f"password_file {passwords}", f"acl_file {acl}"],
        directory=folder,
    )
    server.start()
    try:
        yield AclBroker(server, secret, prefix, node)
    finally:
        server.close()


def client(
    broker: AclBroker, client_id: str, *, agent: bool = False, topics: Iterable[str] = ("#",)
) -> Observer:
    """A paho client subscribed to ``topics``, logged in as the admin or as the agent's
    account."""
    user, password = (AGENT_USER, AGENT_PASSWORD) if agent else (ADMIN_USER, ADMIN_PASSWORD)
    return Observer(
        broker.server.host,
        broker.server.port,
        topics,
        client_id=client_id,
        username=user,
        password=password,
    )


@pytest.fixture
def admin(acl_broker: AclBroker) -> Iterator[Observer]:
    watcher = client(acl_broker, "acl-admin")
    try:
        yield watcher
    finally:
        watcher.close()


def credentials(broker: AclBroker) -> str:
    """The ``[mqtt]`` lines: the prefix, and logging in as the example's account."""
    return (
        f'topic_prefix = "{broker.prefix}"\n'
        f'username = "{AGENT_USER}"\npassword_file = "{broker.secret}"\n'
    )


def body(message: Message) -> dict[str, object]:
    return json.loads(message.payload)


def is_heartbeat(message: Message) -> bool:
    return message.payload.startswith(b"{") and body(message)["status"] == "online"


def first_heartbeat(admin: Observer, broker: AclBroker, agent: AgentProcess) -> Message:
    """The agent's first heartbeat; if it does not come, the agent's and broker's logs."""
    try:
        return admin.wait_for(f"{broker.prefix}/status", is_heartbeat, timeout=BOUND)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- agent log:\n{agent.log()}\n"
            f"--- broker log:\n{broker.server.log_text()[-4000:]}"
        ) from None


# -- an app: every kind of topic of the wire contract ----------------------------------------

APP = """
import agent

app = agent.App("meter", "1.0")


@app.command()  # the root device: meter/set, meter/state, meter/availability, meter/error
def main(payload: str) -> dict[str, object]:
    if payload == "bad":
        raise ValueError("main refuses 'bad'")
    return {"mode": payload}


@app.command("valve")  # meter/valve/set
def valve(payload: str) -> dict[str, object]:
    if payload not in ("open", "closed"):
        raise ValueError(f"valve takes 'open' or 'closed', got {payload!r}")
    return {"state": payload}


@app.device("blind")  # meter/blind/position/set
def blind(ctx: agent.DeviceContext) -> None:
    @ctx.on_command("position")
    def set_position(cmd: agent.Command) -> None:
        ctx.publish_state({"position": int(cmd.payload)})

    ctx.publish_state({"position": 0})
    while not ctx.shutdown_requested:
        ctx.sleep(60)


@app.telemetry("counter", interval=0.5)
def counter() -> dict[str, object]:
    return {"impulses": 7}
"""


def app_config(folder: Path, broker: AclBroker) -> Path:
    path = write_app(folder, broker.server.port, APP)
    path.write_text(path.read_text().replace("[mqtt]\n", "[mqtt]\n" + credentials(broker)))
    return path


def error_of(kind: str) -> Callable[[Message], bool]:
    return lambda m: body(m)["error_type"] == kind


def test_an_app_works_end_to_end_under_the_acl(
    acl_broker: AclBroker,
    admin: Observer,
    tmp_path: Path,
    run_agent: Callable[[Path], AgentProcess],
) -> None:
    prefix = acl_broker.prefix
    agent = run_agent(app_config(tmp_path, acl_broker))
    first_heartbeat(admin, acl_broker, agent)
    for base in (prefix, f"{prefix}/valve", f"{prefix}/blind", f"{prefix}/counter"):
        admin.wait_for(f"{base}/availability", lambda m: m.payload == b"online", timeout=BOUND)
    assert body(admin.wait_for(f"{prefix}/counter/state", timeout=BOUND)) == {"impulses": 7}
    admin.wait_for(f"{prefix}/blind/state", timeout=BOUND)

    # the three command subscriptions: {prefix}/set, {prefix}/+/set, {prefix}/+/+/set
    for topic, payload, state, expected in (
        (f"{prefix}/set", "eco", f"{prefix}/state", {"mode": "eco"}),
        (f"{prefix}/valve/set", "open", f"{prefix}/valve/state", {"state": "open"}),
        (f"{prefix}/blind/position/set", "42", f"{prefix}/blind/state", {"position": 42}),
    ):
        admin.publish(topic, payload)
        admin.wait_for(state, lambda m, e=expected: body(m) == e, timeout=BOUND)

    # bad commands: the device's error topic, and the root device's {prefix}/error
    admin.publish(f"{prefix}/valve/set", "sideways")
    admin.publish(f"{prefix}/set", "bad")
    admin.publish(f"{prefix}/valve/set", b"\xff\xfe")
    valve_error = admin.wait_for(f"{prefix}/valve/error", error_of("error"), timeout=BOUND)
    assert "sideways" in str(body(valve_error)["message"])
    # (every error is on {prefix}/error too: look for the root device's own)
    admin.wait_for(f"{prefix}/error", lambda m: b"main refuses 'bad'" in m.payload, timeout=BOUND)
    admin.wait_for(f"{prefix}/valve/error", error_of("invalid_payload"), timeout=BOUND)
    admin.publish(f"{prefix}/valve/set", "closed")  # and the device still serves
    admin.wait_for(f"{prefix}/valve/state", lambda m: body(m) == {"state": "closed"}, timeout=BOUND)

    # graceful shutdown: offline everywhere
    assert agent.terminate() == 0, agent.log()
    for base in (prefix, f"{prefix}/valve", f"{prefix}/blind", f"{prefix}/counter"):
        admin.wait_for(f"{base}/availability", lambda m: m.payload == b"offline", timeout=BOUND)
    admin.wait_for(f"{prefix}/status", lambda m: m.payload == b"offline", timeout=BOUND)
    log = agent.log()
    assert "Traceback" not in log and "not authori" not in log, log
    # the broker denied the agent nothing (the admin may do anything: any line is the agent's)
    assert acl_broker.denied() == [], acl_broker.server.log_text()[-4000:]


def test_the_last_will_passes_the_acl(
    acl_broker: AclBroker,
    admin: Observer,
    tmp_path: Path,
    run_agent: Callable[[Path], AgentProcess],
) -> None:
    """mosquitto drops a will on a topic the account may not write, when it fires."""
    prefix = acl_broker.prefix
    agent = run_agent(app_config(tmp_path, acl_broker))
    first_heartbeat(admin, acl_broker, agent)
    admin.clear()
    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait(BOUND)
    will = admin.wait_for(f"{prefix}/status", lambda m: m.payload == b"offline", timeout=15)
    assert will.qos == 1
    with closing(client(acl_broker, "acl-late")) as late:  # retained: live ones show retain=0
        assert late.wait_for(f"{prefix}/status", timeout=BOUND).payload == b"offline"
    assert acl_broker.denied() == [], acl_broker.server.log_text()[-4000:]


# -- the ACL bites ---------------------------------------------------------------------------


def test_the_agent_account_cannot_publish_outside_its_topics(
    acl_broker: AclBroker, admin: Observer
) -> None:
    prefix = acl_broker.prefix
    node = acl_broker.node
    denied = [
        "other/topic",
        f"{prefix}x/status",  # a prefix that merely starts like ours
        "homeassistant/status",  # Home Assistant's birth: only Home Assistant says it
        "homeassistant/sensor/other_node/temperature/config",  # another node's entity
        f"homeassistant/sensor/{node}/temperature/state",  # not a config topic
        f"homeassistant/sensor/{node}/x/temperature/config",  # one level too many
    ]
    allowed = [f"{prefix}/anything/at/all", f"homeassistant/sensor/{node}/temperature/config"]
    intruder = client(acl_broker, "acl-intruder", agent=True)
    try:
        for topic in denied + allowed:
            intruder.publish(topic, "from-agent-account")  # PUBACKed even when denied
        intruder.publish(f"{prefix}/probe", "probe")
    finally:
        intruder.close()
    admin.wait_for(f"{prefix}/probe", timeout=BOUND)  # what was let through came before it
    seen = [m.topic for m in admin.messages() if m.payload == b"from-agent-account"]
    assert seen == allowed
    lines = acl_broker.denied()
    assert len(lines) == len(denied), lines
    for line, topic in zip(lines, denied, strict=True):
        assert "Denied PUBLISH from acl-intruder" in line and f"'{topic}'" in line


def test_the_agent_account_reads_only_its_commands_and_the_birth_topic(
    acl_broker: AclBroker, admin: Observer
) -> None:
    prefix = acl_broker.prefix
    node = acl_broker.node
    readable = [
        f"{prefix}/set",
        f"{prefix}/valve/set",
        f"{prefix}/blind/position/set",
        "homeassistant/status",
    ]
    unreadable = [
        "other/topic",
        f"{prefix}/valve/state",  # its own states: it writes them, it need not read them
        f"{prefix}/status",
        f"{prefix}/a/b/c/set",  # deeper than any command topic
        "homeassistant/sensor/other_node/temperature/config",
        f"homeassistant/sensor/{node}/temperature/config",
    ]
    # Subscribed to each topic itself: mosquitto 2.0.11 grants any subscription and checks
    # each message as it delivers it, a broker refusing the subscription delivers nothing.
    probe = f"{prefix}/probe/set"
    topics = [*unreadable, *readable, probe]
    reader = client(acl_broker, "acl-reader", agent=True, topics=topics)
    try:
        for topic in unreadable + readable:
            admin.publish(topic, "from-admin")
        admin.publish(probe, "probe")
        reader.wait_for(probe, timeout=BOUND)
        assert [m.topic for m in reader.messages() if m.payload == b"from-admin"] == readable
    finally:
        reader.close()


# -- the daemon with Home Assistant discovery ------------------------------------------------

DAEMON = """name = "house"
[mqtt]
host = "{host}"
port = {port}
reconnect_min_delay = 0.1
{credentials}
[store]
backend = "json"
path = "{folder}/state.json"
[homeassistant]
enabled = true
[logging]
format = "text"

[[device]]
type = "file"
name = "boiler"
path = "{folder}/boiler"
field = "temperature"
scale = 0.001
unit = "°C"
device_class = "temperature"
interval = 3600

[[device]]
type = "exec_command"
name = "pi"
commands = {{ sync = ["/bin/true"] }}
"""


def test_the_daemon_with_discovery_works_under_the_acl(
    acl_broker: AclBroker,
    admin: Observer,
    tmp_path: Path,
    run_agent: Callable[[Path], AgentProcess],
) -> None:
    prefix = acl_broker.prefix
    node = acl_broker.node
    (tmp_path / "boiler").write_text("21500\n")
    config = tmp_path / "agent.toml"
    server = acl_broker.server
    config.write_text(
        DAEMON.format(
            host=server.host,
            port=server.port,
            credentials=credentials(acl_broker),
            folder=tmp_path,
        )
    )
    daemon = run_agent(config)
    configs = f"homeassistant/+/{node}/+/config"

    def announced() -> dict[str, Message]:
        return {m.topic: m for m in admin.messages(configs)}

    connectivity = f"homeassistant/binary_sensor/{node}/connectivity/config"
    boiler = f"homeassistant/sensor/{node}/boiler_temperature/config"
    eventually(
        lambda: {connectivity, boiler} < set(announced()),  # and the button(s) of "pi"
        BOUND,
        "the discovery configs",
        describe=daemon.log,
    )
    first_heartbeat(admin, acl_broker, daemon)
    admin.wait_for(
        f"{prefix}/boiler/state", lambda m: body(m) == {"temperature": 21.5}, timeout=BOUND
    )
    with closing(client(acl_broker, "acl-late")) as late:  # what Home Assistant gets
        late.publish("probe/done", "x")  # its PUBACK comes after the retained messages
        kept = {m.topic: m for m in late.messages(configs)}
    assert sorted(kept) == sorted(announced())
    for topic, message in kept.items():
        assert message.retain and message.qos == 1, message
        assert check_discovery(topic, body(message)) == [], (topic, message.payload)
    (button,) = (body(m) for t, m in kept.items() if t.startswith("homeassistant/button/"))

    # Home Assistant's birth message (read through the ACL): the configs and states again
    admin.clear()
    admin.publish("homeassistant/status", "online")
    admin.wait_for(connectivity, timeout=BOUND)
    admin.wait_for(boiler, timeout=BOUND)
    admin.wait_for(f"{prefix}/boiler/state", timeout=BOUND)

    # a press of the button, sent as Home Assistant sends it
    assert button["command_topic"] == f"{prefix}/pi/set"
    admin.publish(str(button["command_topic"]), str(button.get("payload_press", "PRESS")))
    done = admin.wait_for(f"{prefix}/pi/state", timeout=BOUND)
    assert body(done)["command"] == "sync" and body(done)["result"] == "ok", done

    assert daemon.terminate() == 0, daemon.log()
    admin.wait_for(f"{prefix}/status", lambda m: m.payload == b"offline", timeout=BOUND)
    assert "Traceback" not in daemon.log(), daemon.log()
    assert acl_broker.denied() == [], server.log_text()[-4000:]
