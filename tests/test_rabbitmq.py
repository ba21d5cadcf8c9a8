"""The wire contract against RabbitMQ's MQTT plugin (Debian 12's rabbitmq-server 3.10), issue 14.

The same building blocks as the mosquitto suite — ``python -m agent --config F`` through
e2e_helpers, :class:`~agent.testing.mosquitto.Observer` as a plain paho client on the wire —
against a two-node RabbitMQ cluster on loopback (tests/rabbitmq.py), shared by the whole
module because a node takes about 10 s to start. Single-node behaviour is tested on node A;
every test has its own topic prefix and client ids, so they do not see each other.

Where RabbitMQ differs from mosquitto the test pins what RabbitMQ does, and docs/rabbitmq.md
says what it means for a user. The differences pinned here:

* retained messages go only to subscriptions of that exact topic, never to a wildcard
  subscription (``prefix/#``), and they are kept per node (not shared in a cluster);
* a ``.`` in a topic is a level separator (RabbitMQ routes on AMQP keys): ``a.b/c`` is
  delivered as ``a/b/c``, so a prefix or device name with a dot breaks the agent's commands;
* a persistent session (``clean_session = false``, the agent's default) expires after
  ``mqtt.subscription_ttl`` (24 h by default; mosquitto keeps it forever);
* MQTT 5 is refused (no CONNACK: the connection is closed).

``test_the_agent_moves_to_the_other_node_when_its_node_stops`` (at the end) brings its own
cluster and stops the node the agent is on: ``mqtt.hosts`` moves it to the other one.

A test that stops a node (the failover of issue 14) must bring its own :func:`cluster`: see
docs/rabbitmq.md for why a stopped node does not come back quickly.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from e2e_helpers import BOUND, AgentProcess, write_config
from rabbitmq import Cluster, RabbitMQ, cluster

from agent.testing.mosquitto import Message, Observer

pytestmark = pytest.mark.integration

KEEPALIVE = 5  # the agent's smallest keepalive: the will tests wait for the broker's timeout


@pytest.fixture(scope="module")
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two RabbitMQ nodes joined in a cluster, for the whole module (about 25 s to start)."""
    nodes = cluster(2, directory=tmp_path_factory.mktemp("rabbitmq"))
    with nodes:
        yield nodes


@pytest.fixture
def node_a(rabbit_cluster: Cluster) -> RabbitMQ:
    return rabbit_cluster.nodes[0]


@pytest.fixture
def node_b(rabbit_cluster: Cluster) -> RabbitMQ:
    return rabbit_cluster.nodes[1]


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A topic prefix (and client id stem) of this test's own."""
    return "rmq-" + request.node.name.removeprefix("test_").replace("_", "-")[:40]


def agent_config(folder: Path, node: RabbitMQ, prefix: str, *, mqtt_extra: str = "", **kw) -> Path:  # type: ignore[no-untyped-def]
    """The quick example's config for ``node``, with this test's prefix and client id."""
    return write_config(
        folder,
        node.port,
        mqtt_extra=f'topic_prefix = "{prefix}"\nclient_id = "{prefix}-agent"\n{mqtt_extra}',
        **kw,
    )


def watch(node: RabbitMQ, topics: list[str], client_id: str) -> Observer:
    return Observer(node.host, node.port, topics, client_id=client_id, timeout=BOUND)


def body(message: Message) -> object:
    return json.loads(message.payload)


def is_heartbeat(message: Message) -> bool:
    return message.payload.startswith(b"{") and body(message)["status"] == "online"


def is_offline(message: Message) -> bool:
    return message.payload == b"offline"


def wait_log(agent: AgentProcess, text: str, timeout: float = BOUND) -> str:
    """Wait (bounded) until the agent's log holds ``text``; return the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = agent.log()
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the agent's log within {timeout} s:\n{agent.log()}")


def settle(observer: Observer, topic: str, quiet: float = 1.0) -> list[Message]:
    """What ``observer`` got on ``topic`` within ``quiet`` s: for asserting an absence after a
    positive control has shown that the broker delivers to this observer."""
    time.sleep(quiet)
    return observer.messages(topic)


def contract_topics(prefix: str) -> list[str]:
    return [
        f"{prefix}/status",
        f"{prefix}/counter/availability",
        f"{prefix}/valve/availability",
        f"{prefix}/blind/availability",
        f"{prefix}/counter/state",
        f"{prefix}/blind/state",
    ]


# -- one node ---------------------------------------------------------------------------------


def test_retained_contract_reaches_exact_subscribers_only(
    node_a: RabbitMQ, prefix: str, tmp_path: Path, run_agent: Callable[[Path], AgentProcess]
) -> None:
    """Heartbeat, availability and states are published retained with QoS 1; a late subscriber
    to each exact topic gets them (retain flag set, QoS 1), as on mosquitto. A late subscriber
    to a wildcard (``prefix/#``, ``prefix/+/state``) gets none of them: RabbitMQ 3.10 looks up
    retained messages by the subscription's topic filter as a plain topic name."""
    with closing(watch(node_a, [f"{prefix}/#"], f"{prefix}-obs")) as observer:
        run_agent(agent_config(tmp_path, node_a, prefix))
        observer.wait_for(f"{prefix}/status", is_heartbeat, timeout=BOUND)
        for device in ("counter", "valve", "blind"):
            live = observer.wait_for(
                f"{prefix}/{device}/availability", lambda m: m.payload == b"online", timeout=BOUND
            )
            assert live.qos == 1 and not live.retain, live  # live delivery: no retain flag
        state = observer.wait_for(f"{prefix}/counter/state", timeout=BOUND)
        assert set(body(state)) == {"impulses", "volume_m3"}
        observer.wait_for(f"{prefix}/blind/state", timeout=BOUND)

    exact = contract_topics(prefix)
    with closing(watch(node_a, exact, f"{prefix}-late-exact")) as late:
        for topic in exact:
            message = late.wait_for(topic, timeout=BOUND)
            assert message.retain and message.qos == 1, message

    with closing(
        watch(node_a, [f"{prefix}/#", f"{prefix}/+/state"], f"{prefix}-late-wild")
    ) as wildcard:
        # Positive control: live states still arrive on this wildcard subscription ...
        wildcard.wait_for(f"{prefix}/counter/state", timeout=BOUND)
        # ... but no retained message ever does (mosquitto would send all six at once).
        retained = [m for m in settle(wildcard, f"{prefix}/#") if m.retain]
        assert retained == [], (
            "RabbitMQ now delivers retained messages to wildcard subscriptions: "
            f"update docs/rabbitmq.md ({retained})"
        )


def test_command_round_trip_and_error_reports(
    node_a: RabbitMQ, prefix: str, tmp_path: Path, run_agent: Callable[[Path], AgentProcess]
) -> None:
    """Commands in at QoS 1, states and error reports out, exactly as on mosquitto."""
    with closing(watch(node_a, [f"{prefix}/#"], f"{prefix}-obs")) as observer:
        run_agent(agent_config(tmp_path, node_a, prefix))
        observer.wait_for(f"{prefix}/status", is_heartbeat, timeout=BOUND)
        observer.wait_for(f"{prefix}/valve/availability", timeout=BOUND)
        observer.publish(f"{prefix}/valve/set", "open")
        state = observer.wait_for(
            f"{prefix}/valve/state", lambda m: body(m) == {"state": "open"}, timeout=BOUND
        )
        assert state.qos == 1
        observer.publish(f"{prefix}/blind/position/set", "42")
        observer.wait_for(
            f"{prefix}/blind/state", lambda m: body(m) == {"position": 42}, timeout=BOUND
        )
        observer.publish(f"{prefix}/valve/set", "sideways")
        error = observer.wait_for(f"{prefix}/valve/error", timeout=BOUND)
        assert error.qos == 1 and body(error)["device"] == "valve"  # type: ignore[index]
        # QoS 2 is not offered by RabbitMQ 3.10: a QoS 2 command is downgraded to 1, handled.
        observer.publish(f"{prefix}/valve/set", "closed", qos=2)
        observer.wait_for(
            f"{prefix}/valve/state", lambda m: body(m) == {"state": "closed"}, timeout=BOUND
        )
    with closing(watch(node_a, [f"{prefix}/valve/state"], f"{prefix}-late")) as late:
        message = late.wait_for(f"{prefix}/valve/state", timeout=BOUND)
        assert message.retain and body(message) == {"state": "closed"}


def test_last_will_after_kill_9(
    node_a: RabbitMQ, prefix: str, tmp_path: Path, run_agent: Callable[[Path], AgentProcess]
) -> None:
    """kill -9: the kernel closes the socket, RabbitMQ publishes the will at once (no wait for
    the keepalive), and keeps it retained for a late subscriber to the exact topic."""
    with closing(watch(node_a, [f"{prefix}/status"], f"{prefix}-obs")) as observer:
        agent = run_agent(agent_config(tmp_path, node_a, prefix, keepalive=KEEPALIVE))
        observer.wait_for(f"{prefix}/status", is_heartbeat, timeout=BOUND)
        observer.clear()
        killed = time.monotonic()
        agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait(BOUND)
        will = observer.wait_for(f"{prefix}/status", is_offline, timeout=BOUND)
        after = time.monotonic() - killed
        assert will.qos == 1
        assert after < KEEPALIVE, f"will after {after:.2f} s: RabbitMQ waited for the keepalive"
    with closing(watch(node_a, [f"{prefix}/status"], f"{prefix}-late")) as late:
        message = late.wait_for(f"{prefix}/status", timeout=BOUND)
        assert message.retain and is_offline(message), message


def test_last_will_when_the_agent_freezes_and_it_comes_back(
    node_a: RabbitMQ, prefix: str, tmp_path: Path, run_agent: Callable[[Path], AgentProcess]
) -> None:
    """SIGSTOP: the socket stays open and silent, as on a cut network. RabbitMQ gives up after
    3 x keepalive (mosquitto: 1.5 x) and publishes the will; after SIGCONT the agent notices
    the dead link and reconnects: online again."""
    with closing(watch(node_a, [f"{prefix}/status"], f"{prefix}-obs")) as observer:
        agent = run_agent(agent_config(tmp_path, node_a, prefix, keepalive=KEEPALIVE))
        observer.wait_for(f"{prefix}/status", is_heartbeat, timeout=BOUND)
        observer.clear()
        frozen = time.monotonic()
        agent.proc.send_signal(signal.SIGSTOP)
        try:
            observer.wait_for(f"{prefix}/status", is_offline, timeout=5 * KEEPALIVE)
            after = time.monotonic() - frozen
            print(f"RabbitMQ sent the will {after:.2f} s after SIGSTOP (keepalive {KEEPALIVE} s)")
            # MQTT 3.1.1 (3.1.2.10) and mosquitto: 1.5 x keepalive. RabbitMQ 3.10: 3 x
            # keepalive after the last packet it got (a PINGREQ up to keepalive / 2 earlier).
            assert 2.4 * KEEPALIVE <= after <= 3 * KEEPALIVE + 5, after
        finally:
            agent.proc.send_signal(signal.SIGCONT)
        observer.clear()
        observer.wait_for(f"{prefix}/status", is_heartbeat, timeout=3 * KEEPALIVE)
        assert agent.terminate() == 0, agent.log()


def test_commands_sent_while_away_arrive_after_return(
    node_a: RabbitMQ, prefix: str, tmp_path: Path, run_agent: Callable[[Path], AgentProcess]
) -> None:
    """clean_session = false (the default): RabbitMQ keeps the session's queue while the agent
    is stopped; QoS 1 commands sent meanwhile are delivered when it returns."""
    config = agent_config(tmp_path, node_a, prefix)
    with closing(watch(node_a, [f"{prefix}/#"], f"{prefix}-obs")) as observer:
        first = run_agent(config)
        observer.wait_for(f"{prefix}/status", is_heartbeat, timeout=BOUND)
        wait_log(first, "session present: no")
        assert first.terminate() == 0, first.log()
        observer.wait_for(f"{prefix}/status", is_offline, timeout=BOUND)
        observer.publish(f"{prefix}/valve/set", "open")
        observer.publish(f"{prefix}/blind/position/set", "7")
        observer.clear()
        second = run_agent(config)
        observer.wait_for(
            f"{prefix}/valve/state", lambda m: body(m) == {"state": "open"}, timeout=BOUND
        )
        observer.wait_for(
            f"{prefix}/blind/state", lambda m: body(m) == {"position": 7}, timeout=BOUND
        )
        wait_log(second, "session present: yes")


def _session_queue(node: RabbitMQ, client_id: str) -> str | None:
    """The row of ``rabbitmqctl list_queues`` for the client's session queue, or None."""
    name = f"mqtt-subscription-{client_id}qos1"
    listing = node.ctl("list_queues", "--quiet", "--no-table-headers", "name", "arguments")
    return next((row for row in listing.splitlines() if row.startswith(name + "\t")), None)


def test_persistent_session_expires(
    node_a: RabbitMQ, prefix: str, tmp_path: Path, run_agent: Callable[[Path], AgentProcess]
) -> None:
    """A session is RabbitMQ's durable queue ``mqtt-subscription-<client id>qos1``, created with
    ``x-expires`` = ``mqtt.subscription_ttl`` (24 h by default; mosquitto never expires a 3.1.1
    session). Once expired, commands sent while the agent was away are lost and it says
    ``session present: no``. Here a policy shortens the expiry to 1 s for this client only."""
    client_id = f"{prefix}-agent"
    config = agent_config(tmp_path, node_a, prefix)
    with closing(watch(node_a, [f"{prefix}/#"], f"{prefix}-obs")) as observer:
        first = run_agent(config)
        observer.wait_for(f"{prefix}/status", is_heartbeat, timeout=BOUND)
        row = _session_queue(node_a, client_id)
        assert row is not None and '"x-expires",86400000' in row.replace(" ", ""), row
        node_a.ctl(
            "set_policy",
            "--apply-to",
            "queues",
            f"{prefix}-expiry",
            f"^mqtt-subscription-{client_id}qos1$",
            json.dumps({"expires": 1000}),
        )
        try:
            assert first.terminate() == 0, first.log()
            deadline = time.monotonic() + 3 * BOUND
            while _session_queue(node_a, client_id) is not None:
                assert time.monotonic() < deadline, "the session queue did not expire"
                time.sleep(0.5)
            observer.publish(f"{prefix}/valve/set", "open")  # nobody will keep it
            second = run_agent(config)
            wait_log(second, "session present: no")
            observer.wait_for(f"{prefix}/valve/availability", timeout=BOUND)
            assert not [m for m in settle(observer, f"{prefix}/valve/state") if not m.retain]
        finally:
            node_a.ctl("clear_policy", f"{prefix}-expiry", check=False)


def test_mqtt_5_is_refused(
    node_a: RabbitMQ, prefix: str, tmp_path: Path, run_agent: Callable[[Path], AgentProcess]
) -> None:
    """RabbitMQ 3.10 speaks MQTT 3.1 and 3.1.1 only: it closes an MQTT 5 CONNECT without a
    CONNACK (its log: "MQTT cannot parse a frame"). The agent keeps retrying and its
    warning points at the protocol."""
    agent = run_agent(agent_config(tmp_path, node_a, prefix, mqtt_extra='protocol = "5"\n'))
    log = wait_log(agent, "MQTT cannot connect")
    print(next(line for line in log.splitlines() if "MQTT cannot connect" in line))
    # RabbitMQ's side: it cannot parse the MQTT 5 CONNECT (its properties) and drops the link.
    deadline = time.monotonic() + BOUND  # the node writes its log file a little later
    while "MQTT cannot parse a frame" not in node_a.log_text():
        assert time.monotonic() < deadline, "RabbitMQ logged no parse error for MQTT 5"
        time.sleep(0.1)
    assert "connection closed before the broker's CONNACK" in log, log
    assert (
        'does the broker speak MQTT 5? (RabbitMQ before 3.13 does not: set mqtt.protocol = "3.1.1")'
        in log
    )
    assert "MQTT connected" not in log
    assert agent.proc.poll() is None, "the agent gave up instead of retrying"
    assert agent.terminate() == 0, agent.log()


def test_a_dot_in_a_topic_is_a_level_separator(
    node_a: RabbitMQ, prefix: str, tmp_path: Path, run_agent: Callable[[Path], AgentProcess]
) -> None:
    """RabbitMQ routes MQTT on AMQP routing keys, where ``/`` becomes ``.``: a ``.`` in a topic
    turns into a level separator. With the prefix ``p.v1`` the agent's states reach
    subscribers as ``p/v1/...``, and its commands come in as ``p/v1/valve/set``, which is
    not its topic: the command is refused, and reported with the reason and the fix."""
    dotted = f"{prefix}.v1"
    with closing(watch(node_a, [f"{dotted}/#"], f"{prefix}-obs")) as observer:
        agent = run_agent(agent_config(tmp_path, node_a, dotted))
        state = observer.wait_for(f"{prefix}/v1/counter/state", timeout=BOUND)
        assert state.topic == f"{prefix}/v1/counter/state"
        assert not observer.messages(f"{dotted}/#"), "a topic kept its dot"
        observer.publish(f"{dotted}/valve/set", "open")
        report = observer.wait_for(f"{prefix}/v1/error", timeout=BOUND)
        assert "each '.' made a level separator, as RabbitMQ does" in body(report)["message"]
        assert body(report)["details"] == {"topic": f"{prefix}/v1/valve/set"}
        log = wait_log(agent, f"rejected a command on {prefix}/v1/valve/set")
        assert "use no dots in mqtt.topic_prefix" in log
        assert not settle(observer, f"{prefix}/v1/valve/state", quiet=1.0)


def test_raw_retained_messages_and_dots_on_one_node(node_a: RabbitMQ, prefix: str) -> None:
    """The broker alone, without the agent: what the tests above rely on. An empty retained
    message clears the topic (as on mosquitto); a retained message on ``a.b/c`` is found by
    subscribing to ``a.b/c`` and arrives as ``a/b/c``."""
    with closing(watch(node_a, [f"{prefix}/x"], f"{prefix}-pub")) as publisher:
        publisher.publish(f"{prefix}/retained", "1", retain=True)
        publisher.publish(f"{prefix}/cleared", "1", retain=True)
        publisher.publish(f"{prefix}/cleared", b"", retain=True)
        publisher.publish(f"{prefix}/dot.ted", "2", retain=True)
    topics = [f"{prefix}/retained", f"{prefix}/cleared", f"{prefix}/dot.ted"]
    with closing(watch(node_a, topics, f"{prefix}-late")) as late:
        assert late.wait_for(f"{prefix}/retained", timeout=BOUND).retain
        assert late.wait_for(f"{prefix}/dot/ted", timeout=BOUND).payload == b"2"
        assert not settle(late, f"{prefix}/cleared", quiet=0.5)


# -- the cluster ------------------------------------------------------------------------------


def test_cluster_agent_on_a_observer_on_b(
    node_a: RabbitMQ,
    node_b: RabbitMQ,
    prefix: str,
    tmp_path: Path,
    run_agent: Callable[[Path], AgentProcess],
) -> None:
    """The agent on node A, the observer on node B: heartbeat, availability, states and
    commands cross the cluster both ways. Retained messages do not: node B's store has none
    of what was published on node A, node A's has all."""
    with closing(watch(node_b, [f"{prefix}/#"], f"{prefix}-obs-b")) as observer:
        agent = run_agent(agent_config(tmp_path, node_a, prefix))
        observer.wait_for(f"{prefix}/status", is_heartbeat, timeout=BOUND)
        for device in ("counter", "valve", "blind"):
            observer.wait_for(
                f"{prefix}/{device}/availability", lambda m: m.payload == b"online", timeout=BOUND
            )
        observer.wait_for(f"{prefix}/counter/state", timeout=BOUND)
        observer.publish(f"{prefix}/valve/set", "open")
        observer.wait_for(
            f"{prefix}/valve/state", lambda m: body(m) == {"state": "open"}, timeout=BOUND
        )
        observer.publish(f"{prefix}/blind/position/set", "55")
        observer.wait_for(
            f"{prefix}/blind/state", lambda m: body(m) == {"position": 55}, timeout=BOUND
        )

        exact = [*contract_topics(prefix), f"{prefix}/valve/state"]
        with closing(watch(node_a, exact, f"{prefix}-late-a")) as late_a:
            for topic in exact:
                assert late_a.wait_for(topic, timeout=BOUND).retain
        with closing(watch(node_b, exact, f"{prefix}-late-b")) as late_b:
            # positive control: live states reach this subscriber on B ...
            late_b.wait_for(f"{prefix}/counter/state", timeout=BOUND)
            # ... but nothing retained on A is ever replayed from B's store
            assert not [m for m in settle(late_b, f"{prefix}/#") if m.retain]

        assert agent.terminate() == 0, agent.log()
        observer.wait_for(f"{prefix}/status", is_offline, timeout=BOUND)


def test_cluster_retained_store_is_per_node(
    node_a: RabbitMQ, node_b: RabbitMQ, prefix: str
) -> None:
    """The same topic retained through A and then through B: each node replays its own
    value, so after the agent moves between nodes a subscriber on the old node sees stale
    retained states (the agent republishes them on every connect, to the node it is on)."""
    topic = f"{prefix}/state"
    with closing(watch(node_a, [f"{prefix}/x"], f"{prefix}-pub-a")) as on_a:
        on_a.publish(topic, "from-a", retain=True)
    with closing(watch(node_b, [f"{prefix}/x"], f"{prefix}-pub-b")) as on_b:
        on_b.publish(topic, "from-b", retain=True)
    for node, expected in ((node_a, b"from-a"), (node_b, b"from-b")):
        with closing(watch(node, [topic], f"{prefix}-late-{expected.decode()}")) as late:
            message = late.wait_for(topic, timeout=BOUND)
            assert message.retain and message.payload == expected, (node.nodename, message)


def _raw_client(node: RabbitMQ, client_id: str) -> mqtt.Client:
    """A paho client connected to ``node`` whose loop the caller drives: no reconnecting."""
    if hasattr(mqtt, "CallbackAPIVersion"):  # paho 2.x
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    else:
        client = mqtt.Client(client_id=client_id)
    client.connect(node.host, node.port, keepalive=30)
    deadline = time.monotonic() + BOUND
    while not client.is_connected():
        assert time.monotonic() < deadline, f"{client_id} got no CONNACK from {node.nodename}"
        client.loop(timeout=0.05)
    return client


def test_cluster_client_id_is_unique_across_nodes(
    node_a: RabbitMQ, node_b: RabbitMQ, prefix: str
) -> None:
    """The same client id connecting to node B closes its connection on node A (cluster-wide
    client id tracking), as a second connection would on one mosquitto: an agent that moves
    to another node leaves no twin behind on the first."""
    client_id = f"{prefix}-twin"
    first = _raw_client(node_a, client_id)
    second = _raw_client(node_b, client_id)
    try:
        deadline = time.monotonic() + BOUND
        # loop() fails once node A has closed the first connection (paho 1.6's is_connected()
        # would still say True: it is not reset without its own network thread)
        while first.loop(timeout=0.05) == mqtt.MQTT_ERR_SUCCESS:
            assert time.monotonic() < deadline, "node A kept the first connection"
        assert second.loop(timeout=0.05) == mqtt.MQTT_ERR_SUCCESS and second.is_connected()
    finally:
        for client in (first, second):
            client.disconnect()


def test_nodes_are_rabbitmq_3_10(node_a: RabbitMQ) -> None:
    """This module pins RabbitMQ 3.10's behaviour (Debian 12): say so when it changes."""
    status = node_a.ctl("status")
    assert "RabbitMQ version: 3.10." in status, status[:400]


def test_the_agent_moves_to_the_other_node_when_its_node_stops(
    prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
    run_agent: Callable[[Path], AgentProcess],
) -> None:
    """``mqtt.hosts`` lists both nodes; the agent is on the first, the observer on the
    second. The agent's node stops: the agent moves to the other node (the session queues
    mirrored, as docs/rabbitmq.md says to), and heartbeat, availability, states and commands
    go on there; a QoS 1 command sent while it moved is handled. A cluster of its own: a
    stopped node does not come back quickly (docs/rabbitmq.md)."""
    with cluster(2, directory=tmp_path_factory.mktemp("failover")) as nodes:
        nodes.mirror_mqtt_sessions()
        # The agent starts on the node that joined: the seed node restarts slowly.
        first, other = nodes.nodes[1], nodes.nodes[0]
        hosts = ", ".join(
            f'"{h}:{p}"' for h, p in ((first.host, first.port), (other.host, other.port))
        )
        config = agent_config(tmp_path, first, prefix, keepalive=KEEPALIVE)
        text = config.read_text().replace(f"port = {first.port}\n", "", 1)
        config.write_text(text.replace('host = "127.0.0.1"\n', f"hosts = [{hosts}]\n", 1))
        with closing(watch(other, [f"{prefix}/#"], f"{prefix}-obs")) as observer:
            agent = run_agent(config)
            observer.wait_for(f"{prefix}/status", is_heartbeat, timeout=BOUND)
            observer.clear()
            first.stop()
            observer.publish(f"{prefix}/valve/set", "open")  # QoS 1, into the mirrored queue
            wait_log(agent, f"MQTT connected to {other.host}:{other.port}", timeout=30)
            observer.wait_for(
                f"{prefix}/status",
                lambda m: is_heartbeat(m) and body(m)["mqtt"]["reconnects"] >= 1,
                timeout=BOUND,
            )
            observer.wait_for(
                f"{prefix}/counter/availability", lambda m: m.payload == b"online", timeout=BOUND
            )
            observer.wait_for(f"{prefix}/counter/state", timeout=BOUND)
            observer.wait_for(
                f"{prefix}/valve/state", lambda m: body(m) == {"state": "open"}, timeout=BOUND
            )
            observer.publish(f"{prefix}/blind/position/set", "30")
            observer.wait_for(
                f"{prefix}/blind/state", lambda m: body(m) == {"position": 30}, timeout=BOUND
            )
            assert agent.terminate() == 0, agent.log()
            assert "Traceback" not in agent.log()
