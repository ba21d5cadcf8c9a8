"""How ``_PahoClient`` reads and writes its socket (ADR-012 decision 9), on a socket pair.

paho reads a packet in three or more ``recv`` calls and writes each packet with a ``send`` of
its own; agent's client reads ahead and joins what waits to be written. These tests drive
the client's own read and write paths against the other end of a socket pair, on paho 1.6
and 2.x alike, without a broker: the wire itself is tested in test_mqtt_client.py.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

import agent.mqtt.paho as paho_module
from agent.mqtt.paho import COALESCE_BYTES, PAHO_V2, READ_AHEAD, _PahoClient, _written


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(topic: str, payload: bytes) -> bytes:
    """An MQTT PUBLISH at QoS 0, as a broker sends it."""
    name = topic.encode()
    body = len(name).to_bytes(2, "big") + name + payload
    return b"\x30" + _remaining_length(len(body)) + body


@pytest.fixture
def pair() -> Iterator[tuple[_PahoClient, socket.socket]]:
    """A client whose socket is one end of a socket pair; the test holds the other end."""
    if PAHO_V2:
        client = _PahoClient(mqtt.CallbackAPIVersion.VERSION2, client_id="socket-test")
    else:
        client = _PahoClient(client_id="socket-test")
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    client.direct_write = True
    try:
        yield client, theirs
    finally:
        ours.close()
        theirs.close()


def count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Count the calls of paho's own ``Client.<name>`` (the system call under agent's)."""
    count, original = [0], getattr(mqtt.Client, name)

    def counted(self: Any, *args: Any) -> Any:
        count[0] += 1
        return original(self, *args)

    monkeypatch.setattr(mqtt.Client, name, counted)
    return count


def received(client: _PahoClient) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    client.on_message = lambda _c, _u, message: got.append((message.topic, message.payload))
    return got


# -- reading ahead -------------------------------------------------------------------------


def test_packets_that_arrive_together_are_read_with_one_recv_in_one_round(
    pair: tuple[_PahoClient, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, broker = pair
    got = received(client)
    recvs = count_calls(monkeypatch, "_sock_recv")
    broker.sendall(b"".join(publish_packet(f"t/{i}", b"p%d" % i) for i in range(5)))
    assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
    # paho alone: one packet this round (nothing in flight), the rest left unread until the
    # broker sends again, and three recv() calls a packet.
    assert got == [(f"t/{i}", b"p%d" % i) for i in range(5)]
    assert recvs[0] == 1
    assert client._read_ahead == b"" and client._read_at == 0


def test_a_message_larger_than_the_read_ahead_arrives_whole(
    pair: tuple[_PahoClient, socket.socket],
) -> None:
    client, broker = pair
    got = received(client)
    payload = bytes(range(256)) * (3 * READ_AHEAD // 256 + 7)
    packets = publish_packet("t/big", payload) + publish_packet("t/after", b"x")
    writer = threading.Thread(target=broker.sendall, args=(packets,), name="test-broker")
    writer.start()
    deadline = time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < deadline:
        select.select([client._sock], [], [], 0.5)
        assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
    writer.join(5)
    assert got == [("t/big", payload), ("t/after", b"x")]


def test_a_reconnect_forgets_what_the_old_connection_left_unread(
    pair: tuple[_PahoClient, socket.socket],
) -> None:
    client, _ = pair
    client._read_ahead, client._read_at = b"\x30\x05half a packet", 2
    with socket.socket() as spare:  # a port nobody listens on
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    client.connect_async("127.0.0.1", port)
    with pytest.raises(OSError):
        client.reconnect()
    assert client._read_ahead == b"" and client._read_at == 0


# -- joining writes ------------------------------------------------------------------------


def queue_packets(client: _PahoClient, packets: list[tuple[int, bytes, int, Any]]) -> None:
    """Queue (command, bytes, qos, info) as paho's ``_packet_queue`` does, without writing."""
    for mid, (command, data, qos, info) in enumerate(packets, start=1):
        client._out_packet.append(
            {"command": command, "mid": mid, "qos": qos, "pos": 0, "to_process": len(data),
             "packet": bytearray(data), "info": info}
        )  # fmt: skip


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    sock.settimeout(5)
    while len(data) < n:
        data += sock.recv(n - len(data))
    return data


def test_queued_packets_are_written_with_one_send_in_order(
    pair: tuple[_PahoClient, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, broker = pair
    sends = count_calls(monkeypatch, "_sock_send")
    infos = [mqtt.MQTTMessageInfo(mid) for mid in (1, 3)]
    packets = [
        (mqtt.PUBLISH, publish_packet("t/a", b"0"), 0, infos[0]),
        (mqtt.PUBLISH | 0x02, b"\x32\x07\x00\x03t/b\x00\x02", 1, None),  # QoS 1
        (mqtt.PUBLISH, publish_packet("t/c", b"2"), 0, infos[1]),
        (mqtt.PUBACK, b"\x40\x02\x00\x07", 0, None),
    ]
    queue_packets(client, packets)
    assert client.want_write()
    assert client.write_now()
    expected = b"".join(data for _, data, _, _ in packets)
    assert read_exactly(broker, len(expected)) == expected
    assert sends[0] == 1
    assert not client.want_write()
    assert all(info.is_published() for info in infos)


def test_a_disconnect_or_a_packet_partly_written_is_never_joined(
    pair: tuple[_PahoClient, socket.socket],
) -> None:
    client, _ = pair
    one, two, three = (publish_packet(f"t/{i}", b"x") for i in range(3))
    queue_packets(
        client,
        [(mqtt.PUBLISH, one, 0, None), (mqtt.PUBLISH, two, 0, None),
         (mqtt.DISCONNECT, b"\xe0\x00", 0, None), (mqtt.PUBLISH, three, 0, None)],
    )  # fmt: skip
    client._coalesce()
    queued = [(p["command"] & 0xF0, bytes(p["packet"])) for p in client._out_packet]
    # paho closes the socket once a DISCONNECT is written: what follows it stays apart.
    assert queued == [
        (mqtt.PUBLISH, one + two),
        (mqtt.DISCONNECT, b"\xe0\x00"),
        (mqtt.PUBLISH, three),
    ]
    client._out_packet.clear()
    queue_packets(client, [(mqtt.PUBLISH, one, 0, None), (mqtt.PUBLISH, two, 0, None)])
    client._out_packet[0]["pos"] = 1  # its first byte is on the wire already
    before = list(client._out_packet)
    client._coalesce()
    assert list(client._out_packet) == before


def test_a_reconnect_with_a_joined_packet_still_queued_goes_through(
    pair: tuple[_PahoClient, socket.socket],
) -> None:
    # paho 2.x marks the info of every QoS 0 packet still queued as failed when it
    # reconnects (a joined packet's too: a failed send puts it back); paho 1.6 drops them.
    client, _ = pair
    infos = [mqtt.MQTTMessageInfo(mid) for mid in (1, 2)]
    queue_packets(
        client,
        [(mqtt.PUBLISH, publish_packet("t/a", b"0"), 0, infos[0]),
         (mqtt.PUBLISH, publish_packet("t/b", b"1"), 0, infos[1])],
    )  # fmt: skip
    client._coalesce()
    assert len(client._out_packet) == 1
    with socket.socket() as spare:  # a port nobody listens on
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    client.connect_async("127.0.0.1", port)
    with pytest.raises(OSError):  # refused: what paho's loop catches, and retries
        client.reconnect()
    if PAHO_V2:
        assert all(info.rc == mqtt.MQTT_ERR_CONN_LOST for info in infos)
        assert all(_written(info) for info in infos)


def test_joined_packets_stay_under_the_bound(pair: tuple[_PahoClient, socket.socket]) -> None:
    client, _ = pair
    big = publish_packet("t/big", b"x" * 100)
    count = 2 * COALESCE_BYTES // len(big) + 3
    queue_packets(client, [(mqtt.PUBLISH, big, 0, None)] * count)
    client._coalesce()
    head = client._out_packet[0]
    assert COALESCE_BYTES - len(big) < head["to_process"] <= COALESCE_BYTES
    assert head["to_process"] + len(big) * (len(client._out_packet) - 1) == len(big) * count


def test_only_the_writer_takes_packets_off_the_queue(
    pair: tuple[_PahoClient, socket.socket],
) -> None:
    # paho 1.6 looked at the head packet with popleft/appendleft, in want_write() and in its
    # network loop, outside the write lock: a device thread writing at that moment could
    # take the next packet and write it first.
    client, broker = pair
    pops: list[bool] = []  # for each popleft: was the write lock held?

    class Watched(deque):  # type: ignore[type-arg]
        def popleft(self) -> Any:
            pops.append(client._write_lock.locked())
            return super().popleft()

    client._out_packet = Watched()
    assert not client.want_write()
    packet = publish_packet("t/a", b"0")
    queue_packets(client, [(mqtt.PUBLISH, packet, 0, mqtt.MQTTMessageInfo(1))])
    assert client.want_write()
    assert pops == []
    client._loop(0.5)  # selects for writing: the socket is writable, the packet goes
    assert read_exactly(broker, len(packet)) == packet
    assert pops and all(pops)


# -- bursts --------------------------------------------------------------------------------


@pytest.fixture
def quick(pair: tuple[_PahoClient, socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write of the test comes "quickly" after the one before; the first one's
    predecessor, long ago."""
    pair[0]._local.wrote = -1e9
    monkeypatch.setattr(paho_module, "BURST_GAP", 3600.0)


def test_a_thread_is_bursting_after_a_few_quick_writes_in_a_row(
    pair: tuple[_PahoClient, socket.socket], quick: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = pair
    local = client._local
    seen = [client._bursting(local) for _ in range(paho_module.BURST_AFTER + 2)]
    assert seen == [False] * paho_module.BURST_AFTER + [True, True]
    monkeypatch.setattr(paho_module, "BURST_GAP", 0.0)  # no write is
    assert not client._bursting(local)
    assert local.quick == 0


def test_replies_to_a_quick_stream_of_commands_are_no_burst(
    pair: tuple[_PahoClient, socket.socket], quick: None
) -> None:
    client, _ = pair
    local = client._local
    seen = []
    for _ in range(paho_module.BURST_AFTER + 2):
        client._handle_on_message(mqtt.MQTTMessage(topic=b"t/set"))  # this write answers it
        seen.append(client._bursting(local))
    assert seen == [False] * (paho_module.BURST_AFTER + 2)
    # Then nothing comes in: the last reply and the writes after it make a burst.
    seen = [client._bursting(local) for _ in range(paho_module.BURST_AFTER)]
    assert seen == [False] * (paho_module.BURST_AFTER - 1) + [True]


def unread(sock: socket.socket) -> bytes:
    """Take up to 1000 bytes already waiting on ``sock``; b"" if none. Only on a socket
    without a timeout (``read_exactly`` sets one: then this would wait for it)."""
    try:
        return sock.recv(1000, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


def test_a_burst_wakes_the_loop_once_until_the_loop_writes(
    pair: tuple[_PahoClient, socket.socket], quick: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, broker = pair
    wake_r, wake_w = socket.socketpair()  # paho's own pair: what wakes its loop
    wake_r.setblocking(False)
    client._sockpairR, client._sockpairW = wake_r, wake_w
    try:
        sends = count_calls(monkeypatch, "_sock_send")
        flags: list[bool] = []  # the flag at each send: the loop clears it before writing
        counted = mqtt.Client._sock_send

        def noting(self: Any, buf: Any) -> Any:
            flags.append(self._wake_sent)
            return counted(self, buf)

        monkeypatch.setattr(mqtt.Client, "_sock_send", noting)
        packet = publish_packet("t/burst", b"x")
        infos: list[Any] = []

        def publish() -> None:
            infos.append(mqtt.MQTTMessageInfo(len(infos) + 1))
            queue_packets(client, [(mqtt.PUBLISH, packet, 0, infos[-1])])
            assert client.write_now()

        for _ in range(paho_module.BURST_AFTER):  # written at once, on this thread
            publish()
        assert sends[0] == paho_module.BURST_AFTER
        assert unread(wake_r) == b""
        for _ in range(50):  # a burst: left to the loop, woken once, not 50 times
            publish()
        assert sends[0] == paho_module.BURST_AFTER
        assert unread(wake_r) == b"0"
        assert client.loop_write() == mqtt.MQTT_ERR_SUCCESS  # the loop's round
        assert sends[0] == paho_module.BURST_AFTER + 1  # the 50, joined
        assert not client.want_write()
        publish()  # queued after the loop's write: it wakes the loop again
        assert unread(wake_r) == b"0"
        assert client.loop_write() == mqtt.MQTT_ERR_SUCCESS
        count = paho_module.BURST_AFTER + 51
        assert read_exactly(broker, count * len(packet)) == packet * count
        assert all(info.is_published() for info in infos)
        assert flags == [False] * (paho_module.BURST_AFTER + 2)
    finally:
        wake_r.close()
        wake_w.close()


# -- acknowledging with the reply ------------------------------------------------------------

PUBACK_7 = b"\x40\x02\x00\x07"  # what paho queues to acknowledge the message with mid 7


@pytest.fixture
def on_loop(
    pair: tuple[_PahoClient, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> _PahoClient:
    """The test's thread plays paho's network thread (what queues PUBACKs); a PUBACK is
    held for an hour unless the test says otherwise (no test depends on being quick)."""
    monkeypatch.setattr(paho_module, "ACK_GRACE", 3600.0)
    client = pair[0]
    client._thread = threading.current_thread()
    return client


def publish_from_device(client: _PahoClient, packet: bytes) -> bool:
    """A QoS 0 publish as MqttClient hands one over on a device thread: queued, then
    ``write_now``; what that returned."""
    client.set_deferring(True)
    queue_packets(client, [(mqtt.PUBLISH, packet, 0, mqtt.MQTTMessageInfo(1))])
    client.set_deferring(False)
    return client.write_now()


def on_a_device_thread(work: Callable[[], object]) -> None:
    """Run ``work`` on a thread of its own, as a device would; its failure is the test's."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # handed to the test's thread
            failures.append(exc)

    thread = threading.Thread(target=run, name="device:test")
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    if failures:
        raise failures[0]


@pytest.fixture
def selects(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, float]]:
    """(selected for writing, timeout) of each ``select`` of the network loop; the select
    itself only polls, so a round never sleeps."""
    seen: list[tuple[bool, float]] = []
    real = select.select

    def polling(r: Any, w: Any, x: Any, timeout: float) -> Any:
        seen.append((bool(w), timeout))
        return real(r, w, x, 0)

    monkeypatch.setattr(select, "select", polling)
    return seen


def test_a_puback_waits_for_the_reply_and_goes_out_with_it(
    pair: tuple[_PahoClient, socket.socket], on_loop: _PahoClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, broker = pair
    sends = count_calls(monkeypatch, "_sock_send")
    client._send_puback(7)
    assert not client.want_write()  # held: the loop does not select for writing
    assert unread(broker) == b""
    reply = publish_packet("t/reply", b"r")

    def answer() -> None:  # the thread the command went to answers it
        assert publish_from_device(client, reply)

    on_a_device_thread(answer)
    assert read_exactly(broker, len(PUBACK_7 + reply)) == PUBACK_7 + reply
    assert sends[0] == 1  # one send, on the device's thread
    assert not client._out_packet and client._ack_due == 0.0


def test_a_held_puback_is_written_by_the_loop_once_it_is_due(
    pair: tuple[_PahoClient, socket.socket],
    on_loop: _PahoClient,
    selects: list[tuple[bool, float]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, broker = pair
    client._send_puback(7)  # due in an hour (on_loop)
    client._loop(7200.0)
    writing, timeout = selects[-1]
    assert not writing and 3500.0 < timeout <= 3600.0  # the round ends when the ack is due
    assert unread(broker) == b""
    client._ack_due = time.monotonic() - 0.001  # no reply came within the grace
    client._loop(7200.0)
    assert selects[-1] == (True, 7200.0)
    assert read_exactly(broker, len(PUBACK_7)) == PUBACK_7
    assert client._ack_due == 0.0


def test_a_deadline_that_passed_is_cleared_not_selected_on(
    on_loop: _PahoClient, selects: list[tuple[bool, float]]
) -> None:
    client = on_loop
    client._ack_due = time.monotonic() - 1.0  # its PUBACK was written by another thread
    client._loop(0.25)
    assert selects[-1] == (False, 0.25)
    assert client._ack_due == 0.0


def test_only_pubacks_wait_and_only_with_direct_writes(
    pair: tuple[_PahoClient, socket.socket], on_loop: _PahoClient
) -> None:
    client, broker = pair
    client._send_puback(7)
    client._send_pingreq()  # anything else the loop queues ends the hold
    assert client.want_write()
    assert client.loop_write() == mqtt.MQTT_ERR_SUCCESS
    assert read_exactly(broker, len(PUBACK_7) + 2) == PUBACK_7 + b"\xc0\x00"
    assert client._ack_due == 0.0 and not client._loop_queued
    for mid in range(1, paho_module.ACKS_HELD):
        client._send_puback(mid)
    assert not client.want_write()
    client._send_puback(paho_module.ACKS_HELD)  # a flood: acknowledged in batches
    assert client.want_write()
    assert client.loop_write() == mqtt.MQTT_ERR_SUCCESS
    client.direct_write = False  # TLS: every packet is the loop's to write
    client._send_puback(7)
    assert client.want_write()


def test_a_write_that_leaves_data_queued_ends_the_hold(
    pair: tuple[_PahoClient, socket.socket], on_loop: _PahoClient
) -> None:
    client, _ = pair
    client._send_puback(7)
    big = publish_packet("t/big", b"x" * (8 << 20))  # more than the socket pair takes
    on_a_device_thread(lambda: publish_from_device(client, big))
    assert client._out_packet  # the socket took only part of it
    assert client.want_write()  # the loop goes on writing as the socket drains
