"""The real MQTT client: paho-mqtt behind the ports of :mod:`agent.mqtt.port`.

This is the only module of agent that imports paho, and the only place where paho 1.6
(Debian 12) and paho 2.x (PyPI) differ: the constructor's ``CallbackAPIVersion``, the
callback signatures and the reason-code types are all absorbed here (ADR-003).

How it behaves:

* ``start()`` returns at once. paho's own network thread (renamed ``mqtt-network``)
  connects in the background and retries forever with capped exponential backoff, also
  when the broker is down, the host name does not resolve or the network is not up yet.
  With several brokers (``mqtt.hosts``) each failed attempt moves on to the next one.
* A link that goes silent (a cut network: no FIN, no RST) is dropped after one keepalive
  without a byte from the broker, a PINGREQ having asked for one after half of it; paho
  alone would take two keepalives (ADR-013).
* ``publish()`` never hands paho more than :data:`WINDOW` QoS 1 messages not yet
  acknowledged and :data:`WINDOW_QOS0` QoS 0 ones not yet written. Everything else waits in
  a bounded :class:`~agent.mqtt.outbox.Outbox`: retained messages (states, availability,
  heartbeat) latest-per-topic and always first, other messages (error reports, events) in
  order behind them. So memory stays bounded whatever a flood does, and an error storm can
  never delay or push out a state (ADR-006). As the broker acknowledges, the next messages
  are handed over, on the network thread.
* Backpressure, not loss, while the link is up: a device thread publishing events faster
  than the broker takes them waits (up to :data:`BACKPRESSURE_WAIT`) for room in the full
  event lane, as a blocking socket would, instead of pushing out the oldest event. Only the
  threads the runtime registers (:meth:`MqttClient.wait_for_room_on`: the devices') ever
  wait, never while the link is down or once shutdown has begun: then the outbox keeps
  filling within its bounds, dropping the oldest event (ADR-012).
* After a reconnect: subscriptions are restored, the connect callbacks run, then the
  outbox drains.
* paho re-sends QoS 1 messages that were unacknowledged when the link died *after* our
  connect handler returns. A newer message for the same topic is therefore held back until
  the old one is acknowledged, so the broker never ends up retaining the stale one.
* Every failed connection attempt is logged with its reason (the first of each distinct
  reason at WARNING, repeats at INFO on the 2nd, 4th, 8th... time, all at DEBUG), also when
  the link drops after the TLS handshake but before the broker's CONNACK (e.g. a broker that
  requires a client certificate). paho 1.6 lets TLS and timeout errors on a socket end its
  network thread; they are turned into the connection errors it handles (reconnect).
* Callbacks registered by the runtime run on the network thread and must be quick; any
  exception they raise is logged and never reaches paho.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent import settings as agent_settings
from agent.mqtt.outbox import Outbox, Outgoing
from agent.mqtt.port import ConnectCallback, MessageCallback, WillConfig
from agent.settings import MqttSettings

logger = logging.getLogger(__name__)

PAHO_V2 = hasattr(mqtt, "CallbackAPIVersion")
"""True on paho-mqtt 2.x, whose constructor takes a callback API version first."""

SESSION_EXPIRY_SECONDS = 3600
"""MQTT 5 persistent session lifetime: QoS 1 commands survive disconnections this long."""

NETWORK_THREAD_NAME = "mqtt-network"

WINDOW = 20
"""At most this many QoS > 0 messages are in paho's hands at once (paho's own in-flight
limit for QoS 1, and mosquitto's default receive maximum), so paho's queue never grows."""

WINDOW_QOS0 = 256
"""At most this many QoS 0 messages are in paho's hands at once (handed over, not yet
written to the socket). Larger than :data:`WINDOW`: nothing waits for the broker here, only
for paho's network thread to write, and a window of 20 would make a QoS 0 stream pay a
thread hand-off every 20 messages. Still bounded, and small against the outbox."""

BACKPRESSURE_WAIT = 5.0
"""How long ``publish`` waits for room in a full event lane while the link is up (s)."""

LOW_WATER = 0.5
"""A publisher waiting for room is woken when the event lane is down to this fraction of
its capacity: one wake per half a lane, not one per acknowledgement."""

_EARLY_ACK_LIMIT = 1024

BURST_GAP = 0.0005
BURST_AFTER = 3
"""A thread whose writes came this many times in a row, each within ``BURST_GAP`` seconds of
the one before and with no message in between, is publishing a burst: its packets are
written by the network thread (see ``_PahoClient._bursting``)."""

READ_AHEAD = 65536
"""One ``recv`` takes up to this many bytes of what the broker sent; paho then reads its
packets from them (see ``_PahoClient._sock_recv``)."""

ACK_GRACE = 0.002
"""The network thread leaves a PUBACK it queued for up to this long (s) to a device thread's
next write, which carries it along (see ``_PahoClient.want_write``)..."""

ACKS_HELD = 10
"""... and only until this many packets wait: a flood of QoS 1 messages that nobody answers is
acknowledged in batches, not paced by the wait, as long as the broker's window of messages
sent but not acknowledged is at least this large (mosquitto: 20; RabbitMQ's ``mqtt.prefetch``:
10). A smaller window lets such a flood through one window per ``ACK_GRACE``."""

COALESCE_BYTES = 65536
"""Packets waiting to be written are joined into one ``send`` of up to this many bytes (see
``_PahoClient._coalesce``)."""


class _Written:
    """The MQTTMessageInfos of the QoS 0 messages in a coalesced packet: paho marks the
    packet published once it is written, and with it each of theirs. paho 2.x's
    ``reconnect()`` also sets ``rc`` (connection lost) on the info of every QoS 0 packet
    still queued: passed on to each of them too."""

    __slots__ = ("infos",)

    def __init__(self, infos: list[Any]) -> None:
        self.infos = infos

    @property
    def rc(self) -> int:
        return max((info.rc for info in self.infos), default=0)

    @rc.setter
    def rc(self, value: int) -> None:
        for info in self.infos:
            info.rc = value

    def _set_as_published(self) -> None:
        for info in self.infos:
            info._set_as_published()


class _WriterState(threading.local):
    """Per thread, for ``_PahoClient``'s direct writes: packets being handed over are only
    queued (``defer``), this thread's write loop is draining the queue (``writing``)."""

    # Class defaults: a getattr() default on a thread-local that lacks the attribute raises
    # and catches an AttributeError (~0.5 us), and these are read for every packet.
    defer = False
    writing = False
    wrote = 0.0  # time.monotonic() of this thread's last write_now()
    quick = 0  # how many write_now() in a row came within BURST_GAP of the one before,
    # with no message coming in between (see _PahoClient._bursting)


class _PahoClient(mqtt.Client):
    """paho's client, remembering why the last connection attempt failed.

    paho's ``on_connect_fail`` callback does not say why, and a link that drops before the
    CONNACK reaches ``on_disconnect`` with a bare "connection lost". Wrapping the public
    ``reconnect()`` (which the network loop calls for every attempt) and the socket calls
    keeps the exception text to log, e.g. a DNS failure, a certificate that did not verify
    or a TLS alert from a broker that wants a client certificate. ``reconnect()`` is also
    the hook that re-reads a rotated password before each attempt.
    """

    last_connect_error: BaseException | None = None
    last_io_error: BaseException | None = None
    before_connect: Callable[[], None] | None = None
    last_loop = 0.0  # time.monotonic() when the network loop last came round (watchdog)
    last_received = 0.0  # time.monotonic() when bytes last came from the broker
    last_message = 0.0  # time.monotonic() when a message last came in (see _bursting)
    direct_write = False  # see write_now(); plain TCP only
    on_ack: Callable[[int], None] | None = None  # a QoS > 0 message was acknowledged
    after_write: Callable[[], None] | None = None  # the network thread wrote packets

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._write_lock = threading.Lock()
        self._local = _WriterState()
        self._read_ahead = b""  # bytes received, not yet read by paho (network thread only)
        self._read_at = 0
        self._wake_sent = False  # a wake byte is on its way to the loop (see _wake_loop)
        self._ack_due = 0.0  # monotonic time by which held PUBACKs go out; 0: none held
        self._loop_queued = False  # the network thread queued more than PUBACKs

    # -- writing from the publishing thread (ADR-012) -------------------------------------
    #
    # paho writes only on its network thread: a publish from another thread queues the
    # packet and wakes that thread through a socket pair, which costs two thread switches
    # (about 130 us here) between a handler's publish and the bytes on the wire, and a wake
    # of the network thread for every message. With direct_write, a publish that MqttClient
    # hands over from a device thread only queues the packet; write_now() then writes the
    # queue on the calling thread. One lock serialises every write (the network thread's
    # too), so packets go out whole and in order; reconnect() holds it, so nothing is
    # written on a socket being replaced. Never with TLS: an SSL socket must not be written
    # on one thread while another reads it.

    def deferring(self) -> bool:
        """True on a thread that MqttClient is handing messages over on (it calls
        write_now() afterwards)."""
        return self._local.defer

    def set_deferring(self, on: bool) -> None:
        self._local.defer = on

    def _packet_queue(self, command: Any, packet: Any, mid: Any, qos: Any, info: Any = None) -> Any:
        # paho's own queueing, without the wake of the network thread when nobody needs it:
        # on a deferring thread write_now() follows; on the network thread itself (a PUBACK,
        # a PINGREQ) the loop's next round selects for writing anyway, as the queue is not
        # empty (a PUBACK: once it is due, see "acknowledging with the reply" below). paho
        # would write a byte to its socket pair and read it back each time.
        on_loop = threading.current_thread() is self._thread
        if not (on_loop or (self.deferring() and (command & 0xF0) == mqtt.PUBLISH)):
            return super()._packet_queue(command, packet, mid, qos, info)
        ack = on_loop and (command & 0xF0) == mqtt.PUBACK and self.direct_write
        if ack and not self._ack_due:  # set before the packet is queued: see below
            self._ack_due = time.monotonic() + ACK_GRACE
        self._out_packet.append(
            {"command": command, "mid": mid, "qos": qos, "pos": 0,
             "to_process": len(packet), "packet": packet, "info": info}
        )  # fmt: skip
        if on_loop and not ack:
            self._loop_queued = True
        return mqtt.MQTT_ERR_SUCCESS

    def _do_on_publish(self, mid: int, *args: Any) -> Any:
        # Instead of paho's on_publish callback: that one also runs for every QoS 0 packet
        # written, and paho 2.x builds a ReasonCode and a Properties object for each (half
        # the cost of a QoS 0 publish). Here only acknowledgements call back, after paho's
        # own bookkeeping (the message is published, its in-flight slot free).
        rc = super()._do_on_publish(mid, *args)
        if self.on_ack is not None:
            try:
                self.on_ack(mid)
            except Exception:  # never into paho's loop
                logger.exception("MQTT acknowledgement handling failed")
        return rc

    def _bursting(self, local: _WriterState) -> bool:
        """Whether this thread is publishing a burst: its last BURST_AFTER writes each came
        within BURST_GAP of the one before, and no message came in between.

        A direct write saves a reply the two thread switches of a hand-off, but it is a
        ``send`` on the publishing thread, one per publish: in a burst the thread spends as
        much time in those system calls as on its own work. Handed to the network thread
        instead, the packets are written there, joined (``_coalesce``), while this thread goes
        on publishing. One message, or a few in a row, is still written at once, and so is
        the reply to each of a stream of commands answered one by one, however quick: a
        command came in between. Any message counts, whichever device it is for: while
        messages come in, another thread's burst is written as it goes, one ``send`` a
        message (as before decision 9 of ADR-012), which costs system calls, nothing else.
        """
        now = time.monotonic()
        in_a_row = now - local.wrote < BURST_GAP and self.last_message < local.wrote
        local.quick = local.quick + 1 if in_a_row else 0
        local.wrote = now
        return local.quick >= BURST_AFTER

    def _handle_on_message(self, message: Any) -> None:
        self.last_message = time.monotonic()  # before it is handed on: see _bursting
        super()._handle_on_message(message)

    # -- acknowledging with the reply (ADR-012 decision 11) --------------------------------
    #
    # A command at QoS 1 makes paho queue its PUBACK on the network thread right after it
    # handed the message on, and the loop's next round wrote it: a send of its own, just as
    # the device thread that got the command woke up to answer, so the two threads took the
    # GIL and the write lock from each other. Now, with direct writes (plain TCP), the loop
    # holds the PUBACKs it queued itself for up to ACK_GRACE, until ACKS_HELD packets wait:
    # the device's reply, written on its own thread, takes them along in one send
    # (_coalesce). A command answered later or not at all has its PUBACK written by the loop
    # on its own, as before but up to ACK_GRACE later; so has one whose reply beat paho to
    # queueing it. Anything else the loop queues ends the hold, and so does a write that
    # left data queued (the socket is full: no reply can take them along sooner; or another
    # thread queued meanwhile, which costs a hold, nothing else). Packets from other threads
    # wake the loop through paho's socket pair, and it then writes everything.
    #
    # The state is racy by design and bounded either way: _ack_due is set before a PUBACK
    # is queued and cleared by a writer that emptied the queue, so a PUBACK may miss its
    # hold (written at once) or wait ACK_GRACE past the round that re-armed it; a deadline
    # that has passed is cleared by _select_timeout, so the loop never spins on it.

    def _select_timeout(self, timeout: float) -> float:
        """The network loop's select timeout, cut short to when held PUBACKs are due."""
        due = self._ack_due
        if due:
            left = due - time.monotonic()
            if left > 0:
                return min(timeout, left)
            self._ack_due = 0.0
        return timeout

    def _write_joined(self) -> Any:
        """paho's write of its queue, the packets at its head joined (``_coalesce``); the
        caller holds the write lock."""
        self._coalesce()
        rc = super()._packet_write()
        self._wrote()
        return rc

    def _wrote(self) -> None:
        """After a write, write lock held: nothing is held once the queue is empty, nor
        while the socket takes no more (or another thread queued meanwhile)."""
        if self._out_packet:
            self._loop_queued = True
        else:
            self._ack_due = 0.0
            self._loop_queued = False

    def want_write(self) -> bool:
        # Whether the loop selects for writing: not while what it queued itself are PUBACKs
        # being held (see above). And never paho's own way: paho 1.6 pops the head packet
        # and pushes it back to look at it; with direct writes a device thread could pop the
        # next one in between and write it first.
        if not self._out_packet:
            return False
        due = self._ack_due
        return (
            not due
            or self._loop_queued
            or len(self._out_packet) >= ACKS_HELD
            or time.monotonic() >= due
        )

    if PAHO_V2:

        def _loop(self, timeout: float = 1.0) -> Any:
            return super()._loop(self._select_timeout(timeout))

    else:

        def _loop(self, timeout: float = 1.0) -> Any:
            # paho 1.6.1's own, except its first lines: it looked at the head packet with
            # popleft/appendleft (see want_write). 1.6.1 is what Debian 12 ships, for good.
            if timeout < 0.0:
                raise ValueError("Invalid timeout.")
            timeout = self._select_timeout(timeout)
            wlist = [self._sock] if self.want_write() else []
            pending_bytes = 0  # bytes left in an SSL socket
            if hasattr(self._sock, "pending"):
                pending_bytes = self._sock.pending()
            if pending_bytes > 0:
                timeout = 0.0
            rlist = [self._sock]
            if self._sockpairR is not None:  # a publish from another thread wakes the select
                rlist.append(self._sockpairR)
            try:
                socklist = select.select(rlist, wlist, [], timeout)
            except (TypeError, ValueError):  # the socket is gone, or -1 just after reconnect
                return mqtt.MQTT_ERR_CONN_LOST
            except Exception:
                return mqtt.MQTT_ERR_UNKNOWN
            if self._sock in socklist[0] or pending_bytes > 0:
                rc = self.loop_read()
                if rc or self._sock is None:
                    return rc
            if self._sockpairR and self._sockpairR in socklist[0]:
                socklist[1].insert(0, self._sock)  # a publish was queued: write it
                with contextlib.suppress(BlockingIOError):
                    self._sockpairR.recv(10000)
            if self._sock in socklist[1]:
                rc = self.loop_write()
                if rc or self._sock is None:
                    return rc
            return self.loop_misc()

    def _coalesce(self) -> None:
        """Join the packets waiting at the head of paho's queue into one (write lock held).

        paho writes each packet with a ``send`` of its own: a burst of publishes, the
        messages an acknowledgement lets through, a PUBACK and the reply to a command, each
        a system call that lets go of the GIL. Joined, one ``send`` writes them in order.
        Only this lock's holder takes from the head of the queue (paho 1.6 also looked at it
        with ``popleft``/``appendleft``, in ``want_write`` and its loop: both replaced below),
        so the packets taken and the joined one put back cannot be reordered against
        anything; other threads only append at the tail. A packet partly written
        (``pos``) stays as it is, and a DISCONNECT is never joined (paho closes the socket
        once it is written). paho does its bookkeeping per packet once the whole of it is
        written: for a QoS 0 PUBLISH, marking its info published, which :class:`_Written`
        does for every one joined.
        """
        queue = self._out_packet
        if len(queue) < 2 or queue[0]["pos"] or self.on_publish is not None:
            return
        taken: list[Any] = []
        infos: list[Any] = []
        size = 0
        while queue:
            packet = queue[0]
            if (
                packet["pos"]
                or (packet["command"] & 0xF0) == mqtt.DISCONNECT
                or (taken and size + packet["to_process"] > COALESCE_BYTES)
            ):
                break
            taken.append(queue.popleft())
            size += packet["to_process"]
            if (
                (packet["command"] & 0xF0) == mqtt.PUBLISH
                and packet["qos"] == 0
                and packet["info"] is not None
            ):
                infos.append(packet["info"])
        if len(taken) < 2:
            queue.extendleft(taken)
            return
        parts = [packet["packet"] for packet in taken]
        queue.appendleft(
            {"command": mqtt.PUBLISH, "mid": 0, "qos": 0 if infos else 1, "pos": 0,
             "to_process": size, "packet": b"".join(parts), "info": _Written(infos)}
        )  # fmt: skip

    def _packet_write(self) -> Any:
        if not self.direct_write:
            rc = super()._packet_write()
        else:
            with self._write_lock:
                rc = self._write_joined()
        # Not after a failed write: the link is dead, what would be handed over now is lost.
        if self.after_write is not None and rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
            try:
                self.after_write()
            except Exception:
                logger.exception("MQTT after-write handling failed")
        return rc

    def write_now(self) -> bool:
        """Write what is queued, on this thread; if another thread is writing (or the socket
        is busy), or this thread is publishing a burst, wake the network thread to write it
        instead. Never raises. False when the link turned out to be dead: nothing more
        should be handed over to it."""
        local = self._local
        if not self._out_packet or local.writing:
            return True  # nothing to do, or this thread's write loop is already draining it
        rc = mqtt.MQTT_ERR_SUCCESS
        if (
            not self._bursting(local)
            and self._sock is not None
            and self._write_lock.acquire(blocking=False)
        ):
            local.writing = True
            try:
                rc = self._write_joined()  # errors leave the packet queued for the loop
            except Exception as exc:  # never into a device thread
                logger.debug("MQTT direct write failed, left to the network thread: %r", exc)
                rc = mqtt.MQTT_ERR_CONN_LOST
            finally:
                local.writing = False
                self._write_lock.release()
            if not self._out_packet:
                return True
        self._wake_loop()
        return rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN)

    def _wake_loop(self) -> None:
        """Wake the network loop to write what is queued: one byte on paho's socket pair,
        unless one is on its way already.

        A burst hands every publish over to the loop; a byte for each would be a ``send``
        per message on the publishing thread, and the loop reads them all at once anyway.
        ``loop_write`` clears the flag before it writes, so a packet queued after that
        sends a byte of its own, and one queued before it is among what it writes. Should a
        byte get lost (the pair closing), the loop still writes at its next round, as it
        selects for writing whenever paho's queue is not empty (up to ``ACK_GRACE`` later
        while it holds PUBACKs).
        """
        wake = getattr(self, "_sockpairW", None)
        if wake is None or self._wake_sent:
            return
        self._wake_sent = True
        # full (the loop is waking anyway) or closed (stopping): nothing to do
        with contextlib.suppress(OSError):
            wake.send(b"0")

    def loop_write(self, *args: Any) -> Any:  # paho 1.6 has a max_packets argument
        self._wake_sent = False  # before writing: see _wake_loop
        return super().loop_write(*args)

    # -- watching the link (issue 14) -----------------------------------------------------
    #
    # paho alone notices a cut network only after 2 x keepalive: it sends its PINGREQ when
    # nothing went out or came in for a keepalive, and gives up when the PINGRESP is still
    # missing a keepalive later. The broker gives up after 1.5 x keepalive. Here the inbound
    # side is watched on its own: after keepalive / 2 without a byte from the broker a PINGREQ
    # asks for one, and after a whole keepalive without one the link is dropped (as paho's
    # own keepalive timeout would drop it) and the reconnecting starts. So a cut is noticed
    # within a keepalive plus one loop round (<= 1 s), at the cost of at most one extra
    # PINGREQ per keepalive / 2 on a link where the broker has nothing to say.

    def loop_misc(self) -> Any:
        # paho's loop calls this once per round (at least every second while connected).
        self.last_loop = now = time.monotonic()
        if self._sock is not None and self._keepalive and self.is_connected():
            silent = now - self.last_received
            if silent >= self._keepalive:
                return self._drop_silent_link(silent)
            if silent >= self._keepalive / 2 and not self._ping_t:
                try:
                    self._send_pingreq()
                except Exception as exc:  # paho's own check closes the link then
                    logger.debug("MQTT: PINGREQ not queued: %r", exc)
                else:
                    # As paho does after its own PINGREQ: else paho 1.6's keepalive check,
                    # in this same round, would see a ping outstanding and nothing sent
                    # for a keepalive, and close a sound link.
                    with self._msgtime_mutex:
                        self._last_msg_out = now
        return super().loop_misc()

    def _drop_silent_link(self, silent: float) -> Any:
        # paho's own "no PINGRESP within keepalive" path in loop_misc(), for each version.
        logger.info("MQTT: nothing from the broker for %.1f s, dropping the link", silent)
        self._sock_close()
        if PAHO_V2:
            self._state = mqtt._ConnectionState.MQTT_CS_CONNECTION_LOST
            self._do_on_disconnect(packet_from_broker=False, v1_rc=mqtt.MQTT_ERR_KEEPALIVE)
        else:
            self._do_on_disconnect(mqtt.MQTT_ERR_KEEPALIVE)
        return mqtt.MQTT_ERR_CONN_LOST

    def reconnect(self) -> Any:
        self.last_loop = self.last_received = time.monotonic()
        self.last_connect_error = None
        self.last_io_error = None
        if self.before_connect is not None:
            self.before_connect()
        try:
            with self._write_lock:  # no direct write on the socket being replaced
                self._read_ahead, self._read_at = b"", 0
                self._ack_due, self._loop_queued = 0.0, False  # paho empties its queue
                return super().reconnect()
        except Exception as exc:
            self.last_connect_error = exc
            raise

    # -- reading ahead ----------------------------------------------------------------------
    #
    # paho reads a packet in three or more recv() calls: its first byte, each byte of its
    # length, then the rest; a PUBACK costs three system calls, each letting go of the GIL.
    # Here one recv() takes what the broker has sent (up to READ_AHEAD bytes) and paho's
    # reads are served from it. Only the network thread reads; reconnect() forgets what a
    # dead connection left.

    def _sock_recv(self, bufsize: int) -> Any:
        ahead, at = self._read_ahead, self._read_at
        if at < len(ahead):
            end = at + bufsize
            if end >= len(ahead):
                self._read_ahead, self._read_at = b"", 0
            else:
                self._read_at = end
            return ahead[at:end]
        try:
            data = super()._sock_recv(max(bufsize, READ_AHEAD))
        except BlockingIOError:
            raise
        except OSError as exc:
            raise self._as_connection_error(exc) from exc
        self.last_received = time.monotonic()
        if len(data) > bufsize:
            self._read_ahead, self._read_at = data, bufsize
            return data[:bufsize]
        return data

    def loop_read(self, max_packets: int = 1) -> Any:
        rc = super().loop_read(max_packets)
        # paho reads as many packets a round as it has messages in flight (one, if none):
        # what is read ahead beyond them would otherwise wait for the broker's next bytes.
        while rc == mqtt.MQTT_ERR_SUCCESS and self._read_at and self._sock is not None:
            rc = super().loop_read(max_packets)
        return rc

    def _sock_send(self, buf: Any) -> Any:
        try:
            return super()._sock_send(buf)
        except BlockingIOError:
            raise
        except OSError as exc:
            raise self._as_connection_error(exc) from exc

    def _as_connection_error(self, exc: OSError) -> ConnectionError:
        # paho 1.6 handles only ConnectionError here: an ssl.SSLError (a TLS alert) or a
        # TimeoutError (a cut network) would end its network thread for good.
        self.last_io_error = exc
        if isinstance(exc, ConnectionError):
            return exc
        return ConnectionAbortedError(f"{type(exc).__name__}: {exc}")


_HINTS = (
    ("CERTIFICATE_REQUIRED", "the broker requires a client certificate: set mqtt.cert_file "
     "and mqtt.key_file"),
    # Python 3.13+ verifies strictly (VERIFY_X509_STRICT): certificates made without these
    # extensions, accepted before, are refused; the usual verify hint would mislead.
    *(
        (needle, "a certificate lacks an extension Python 3.13's strict verification needs: "
         "reissue the CA / broker certificate with it (docs/packaging.md, TLS)")
        for needle in ("key usage", "Authority Key Identifier", "Basic Constraints")
    ),
    # OpenSSL's reason for a failed verification, most specific first.
    ("certificate has expired", "the broker's certificate has expired: renew it, or check "
     "this machine's clock"),
    ("certificate is not yet valid", "the broker's certificate is not valid yet: check this "
     "machine's clock"),
    ("mismatch, certificate is not valid for", "mqtt.host is not a name the broker's "
     "certificate lists (subjectAltName): connect by one of those, or reissue it"),
    # mosquitto sends its CA along: an untrusted private CA reads "self-signed ... in chain".
    *(
        (needle, "the broker's certificate comes from a CA this machine does not trust: set "
         "mqtt.ca_file to that CA's certificate")
        for needle in ("self-signed certificate in certificate chain",
                       "self signed certificate in certificate chain",
                       "unable to get local issuer certificate")
    ),
    *(
        (needle, "the broker presents a self-signed certificate: have it issued by the CA in "
         "mqtt.ca_file, or set mqtt.ca_file to this certificate to pin it")
        for needle in ("self-signed certificate", "self signed certificate")
    ),
    ("CERTIFICATE_VERIFY_FAILED", "the broker's certificate did not verify: check mqtt.ca_file "
     "and that mqtt.host matches the certificate"),
    ("WRONG_VERSION_NUMBER", "is this port speaking TLS? check mqtt.port and mqtt.tls"),
    ("not authori", "check mqtt.username and the password"),
    ("bad user name or password", "check mqtt.username and the password"),
    ("Connection refused", "is the broker running and listening on this port?"),
    ("Name or service not known", "check mqtt.host"),
    ("Temporary failure in name resolution", "no DNS yet, or check mqtt.host"),
)  # fmt: skip


def _with_hint(reason: str) -> str:
    for needle, hint in _HINTS:
        if needle.lower() in reason.lower():
            return f"{reason} — {hint}"
    return reason


def _describe(error: BaseException | None, fallback: str) -> str:
    if error is None:
        return fallback
    return f"{type(error).__name__}: {error}"


def _loud(seen: int) -> bool:
    """Whether the ``seen``-th repeat of one thing is logged loudly: the 1st, 2nd, 4th, 8th...
    (a falling rate: anyone who can repeat it cannot flood the journal), the rest at DEBUG."""
    return seen & (seen - 1) == 0


class _AttemptLog:
    """Logs failed connection attempts: every one at DEBUG, the first of each distinct
    reason at WARNING, a repeat at INFO on its 2nd, 4th, 8th... occurrence.

    A user must be able to see why the agent never connects without a log that grows by a
    line per retry for weeks. One attempt can fail through several callbacks (a refused
    CONNACK is followed by a disconnect): only its first report counts.
    """

    def __init__(self, address: str, max_delay: float) -> None:
        self.address = address  # the broker being tried (MqttClient moves it on)
        self._max_delay = max_delay
        self._reasons: Counter[tuple[str, str]] = Counter()
        self.failed = 0
        self.last_failed = False  # the latest attempt failed (no success since)
        self._open = False

    def begin(self) -> None:
        self._open = True

    def fail(self, reason: str) -> None:
        if not self._open:
            return
        self._open = False
        self.failed += 1
        self.last_failed = True
        self._reasons[self.address, reason] += 1
        seen = self._reasons[self.address, reason]
        if seen == 1:
            logger.warning(
                "MQTT cannot connect to %s: %s; retrying with backoff up to %g s",
                self.address,
                _with_hint(reason),
                self._max_delay,
            )
        elif _loud(seen):
            logger.info(
                "MQTT still cannot connect to %s after %d attempts: %s (%d times)",
                self.address,
                self.failed,
                reason,
                seen,
            )
        else:
            logger.debug(
                "MQTT connect attempt %d to %s failed: %s", self.failed, self.address, reason
            )

    def succeeded(self) -> int:
        """Forget the failures (the next outage starts afresh); returns how many there were."""
        failed, self.failed = self.failed, 0
        self._reasons.clear()
        self._open = False
        self.last_failed = False
        return failed


def _code(rc: Any) -> int:
    # paho 1.6 hands us ints (3.1.1) or ReasonCodes (5); 2.x hands ReasonCode objects.
    if isinstance(rc, int):
        return int(rc)
    return int(getattr(rc, "value", rc))


def _connack_text(rc: Any) -> str:
    return mqtt.connack_string(rc) if isinstance(rc, int) else str(rc)


def _disconnect_text(rc: Any) -> str:
    return mqtt.error_string(rc) if isinstance(rc, int) else str(rc)


def _session_present(flags: Any) -> bool:
    if isinstance(flags, dict):  # paho 1.6 and the 2.x VERSION1 API
        return bool(flags.get("session present"))
    return bool(getattr(flags, "session_present", False))


def _resolve_password(settings: MqttSettings) -> str | None:
    resolved = getattr(settings, "resolved_password", None)
    if callable(resolved):
        return resolved()
    if settings.password is not None:
        return settings.password
    if settings.password_file:
        with open(settings.password_file, encoding="utf-8") as handle:
            return handle.read().strip()
    return None


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _default_client_id(prefix: str) -> str:
    factory = getattr(agent_settings, "default_client_id", None)
    if callable(factory):
        return str(factory(prefix))
    # Stable across restarts on purpose: a persistent session is found by client id.
    return f"{prefix}-{socket.gethostname()}"


def _tls_context(settings: MqttSettings) -> ssl.SSLContext:
    """Verification always on: CERT_REQUIRED and host name check, system CAs by default.

    Built here rather than by paho's ``tls_set`` so both paho versions get the same
    context (1.6 would build a deprecated ``PROTOCOL_TLS`` one); ``tls_insecure_set`` is
    never called.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ca_file)
    if settings.cert_file:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    return context


def _protocol(name: str) -> int:
    if name in ("3.1.1", "311", "v311"):
        return mqtt.MQTTv311
    if name in ("5", "5.0", "v5"):
        return mqtt.MQTTv5
    raise ValueError(f"unsupported MQTT protocol {name!r}: use '3.1.1' or '5'")


def _written(info: Any) -> bool:
    """Whether paho wrote this QoS 0 message (or never will: its connection is gone).

    Read from the MQTTMessageInfo's fields (the same in paho 1.6 and 2.x) rather than
    ``is_published()``, which takes the info's lock: called for every QoS 0 message."""
    try:
        return info.rc > 0 or bool(info._published)  # rc > 0: failed, will never be written
    except AttributeError:  # not paho's MQTTMessageInfo
        return True


def _validate_topic(topic: str) -> None:
    if not topic or "+" in topic or "#" in topic or "\x00" in topic:
        raise ValueError(f"invalid publish topic {topic!r}")


class _Holding(threading.local):
    """Per thread: whether it holds its writes back (``MqttClient.hold_writes``)."""

    on = False  # class defaults: a getattr() default on a thread-local costs an exception


class MqttClient:
    """Production MQTT adapter on paho-mqtt 1.6 or 2.x.

    Implements every port of :mod:`agent.mqtt.port`. ``publish``/``subscribe`` are
    thread-safe and never block; ``publish`` raises ``ValueError`` only for a programming
    error (wildcard topic, bad QoS, payload over ``settings.max_payload_bytes``), never
    because the broker is away.

    Args:
        settings: broker address, credentials, TLS, protocol, session and backoff.
        will: the last will set on every connection (see ``build_will_config``).
        client_id: overrides ``settings.client_id``; default is derived from the prefix
            and the host name so it stays the same across restarts (persistent sessions).
        retained_topics: how many retained topics the owner publishes itself (the runtime:
            a state and an availability per device, the status); the outbox keeps room for
            room for that many, or ``settings.offline_buffer_size``, whichever is more.
    """

    def __init__(
        self,
        settings: MqttSettings,
        will: WillConfig | None = None,
        *,
        client_id: str | None = None,
        retained_topics: int = 0,
    ) -> None:
        self._settings = settings
        self._will = will
        self.client_id = (
            client_id or settings.client_id or _default_client_id(settings.topic_prefix or "agent")
        )
        self._protocol = _protocol(settings.protocol)
        # The brokers to try, in order (mqtt.hosts, else mqtt.host): after a failed attempt
        # the next one is tried; a link that was up is retried where it was first.
        self._brokers = settings.brokers()
        self._broker = 0
        self._address = _address(*self._brokers[0])
        # One condition guards all state below; flush() waits on it. It is never held
        # while calling into paho: paho calls on_publish holding its own lock, so the
        # opposite order would deadlock.
        self._cond = threading.Condition(threading.RLock())
        # Publishers waiting for room in the event lane wait here, on the same lock, and are
        # woken only when the lane has drained to LOW_WATER (not at every acknowledgement).
        self._room = threading.Condition(self._cond._lock)  # type: ignore[attr-defined]
        self._room_waiters = 0
        self._may_wait_threads: set[threading.Thread] = set()  # see wait_for_room_on()
        self._no_waiting = False
        self._paho: _PahoClient | None = None
        self._started = False
        self._stopping = False
        self._session_up = False  # CONNACK accepted, connect handling may still run
        self._connected = False  # handling done: the outbox may drain into paho
        self._subscriptions: dict[str, int] = {}
        self._suback_topics: dict[int, str] = {}  # mid of a SUBSCRIBE -> its topic
        self._bad_topics = 0  # messages dropped because their topic is not UTF-8
        self._redeliveries = 0  # messages that came with DUP set (see _on_message)
        # The SUBSCRIBEs of the latest connect not acknowledged yet: until they are, the
        # connection is not established (a link closed meanwhile is a failed attempt).
        self._connect_mids: set[int] = set()
        self._connect_note = ""  # the "connected" log line's details, said once confirmed
        self._delay_before_attempt: Any = None  # paho's backoff when the attempt began
        self._message_callbacks: tuple[MessageCallback, ...] = ()
        self._connect_callbacks: tuple[ConnectCallback, ...] = ()
        self._outbox = Outbox(settings.offline_buffer_size, retained_capacity=retained_topics)
        self._dropped = 0  # since the last connection (for its log line)
        self._dropped_total = 0
        self._connections = 0
        self._pending: dict[int, Outgoing] = {}  # mid -> message in paho's hands
        # Indexed [QoS 0, QoS > 0]: messages being handed to paho right now (mid not known
        # yet), and window slots taken (messages pending or being handed over).
        self._handing = [0, 0]
        self._in_paho = [0, 0]
        # QoS 0 messages handed over and maybe not written yet, oldest first: paho calls
        # nothing back for them (see _PahoClient._do_on_publish); their MQTTMessageInfo
        # says when they are written, in order.
        self._qos0_infos: deque[Any] = deque()
        self._pumping = False  # one thread at a time moves the outbox into paho
        self._early_acks: OrderedDict[int, None] = OrderedDict()
        self._stale: dict[int, str] = {}  # unacked mids from an earlier connection -> topic
        self._stale_topics: Counter[str] = Counter()  # held: nothing newer may overtake
        self._attempts = _AttemptLog(self._address, settings.reconnect_max_delay)
        self._network_thread: threading.Thread | None = None
        self._holding = _Holding()  # see writes_held()

    # -- ports ---------------------------------------------------------------------------

    def publish(
        self, topic: str, payload: str | bytes, *, retain: bool = False, qos: int = 1
    ) -> None:
        """Queue ``payload`` for ``topic`` and hand it to paho as soon as the window allows."""
        data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        _validate_topic(topic)
        if qos not in (0, 1, 2):
            raise ValueError(f"invalid QoS {qos!r}")
        if len(data) > self._settings.max_payload_bytes:
            raise ValueError(
                f"payload for {topic} is {len(data)} bytes, over max_payload_bytes="
                f"{self._settings.max_payload_bytes}"
            )
        message = Outgoing(topic, data, qos, bool(retain))
        holding = self._holding.on
        if holding and not retain and self._would_wait():
            self._pump()  # what waits goes in flight first: its acknowledgements make the room
        with self._cond:
            if not retain and self._outbox.events_full() and self._may_wait():
                self._room_waiters += 1
                try:
                    self._room.wait_for(self._room_or_no_link, BACKPRESSURE_WAIT)
                finally:
                    self._room_waiters -= 1
            dropped = self._outbox.put(message)
            if dropped is not None:
                self._dropped += 1
                self._dropped_total += 1
                count = self._dropped
            first = None if holding else self._claim_locked()
        if first is not None:
            self._pump_from(first)
        if dropped is not None and (count == 1 or count % 100 == 0):
            logger.warning(
                "MQTT outbox full (%d retained topics or %d other messages waiting): dropped "
                "the oldest (on %s), %d dropped so far",
                self._settings.offline_buffer_size,
                self._settings.offline_buffer_size,
                dropped.topic,
                count,
            )

    def wait_for_room_on(self, thread: threading.Thread) -> None:
        """Let ``thread`` (a device's) wait for room when it publishes into a full event
        lane, instead of pushing out the oldest event. No other thread ever waits: not
        paho's (it makes the room), not the scheduler's (the heartbeat and every other
        device's cadence hang on it), not the one that stops the agent."""
        with self._cond:
            self._may_wait_threads.add(thread)

    @contextlib.contextmanager
    def writes_held(self) -> Iterator[None]:
        """Within, this thread's messages wait in the outbox and go out together at the end
        of the block (see :meth:`hold_writes`); nested blocks end with the outermost."""
        if self._holding.on:
            yield
            return
        self.hold_writes()
        try:
            yield
        finally:
            self.release_writes()

    def hold_writes(self) -> None:
        """From now on, what this thread publishes waits in the outbox instead of being
        handed to paho and written at once, until :meth:`release_writes` (a telemetry group's
        quick readings of one tick).

        Written one by one, each message is a ``send`` that lets go of the GIL while the
        broker's acknowledgements of the ones before already keep paho's thread busy: the two
        threads trade the GIL at every message (ten groups of 100 devices, each alone in its
        phase slot, cost 1.5-2x the CPU of the same groups read all at once). Released, they
        are handed over back to back and written together; the acknowledgements come after.
        Only this thread's own messages wait: another thread publishing meanwhile hands over
        and writes as ever (taking along what waits ahead of its message), and so does
        paho's thread when an acknowledgement frees the window. A holder that would have to
        wait for room in the event lane sends what waits first."""
        self._holding.on = True

    def release_writes(self) -> None:
        """Hand over and write what this thread's :meth:`hold_writes` kept back (a no-op when
        it holds nothing)."""
        if self._holding.on:
            self._holding.on = False
            self._pump()

    def _would_wait(self) -> bool:
        """Whether an event published now would wait for room (see :meth:`publish`)."""
        with self._cond:
            return self._outbox.events_full() and self._may_wait()

    def stop_waiting(self) -> None:
        """From now on nobody waits for room (shutdown has begun); waiters give up at once."""
        with self._cond:
            self._no_waiting = True
            self._wake_publishers_locked(always=True)

    def _may_wait(self) -> bool:
        """Whether this publisher may wait for room: the link is up, nothing is stopping,
        and this thread was registered with :meth:`wait_for_room_on`. Lock held."""
        if not self._connected or self._stopping or self._no_waiting:
            return False
        return threading.current_thread() in self._may_wait_threads

    def _room_or_no_link(self) -> bool:
        return (
            not self._outbox.events_full()
            or not self._connected
            or self._stopping
            or self._no_waiting
        )

    def _wake_publishers_locked(self, always: bool = False) -> None:
        if self._room_waiters and (always or self._outbox.events_below(LOW_WATER)):
            self._room.notify_all()

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe now if connected; always restored after every reconnect."""
        with self._cond:
            self._subscriptions[topic] = qos
            send_now = self._session_up and self._paho is not None
        if send_now:
            assert self._paho is not None
            self._subscribe(self._paho, topic, qos)

    def on_message(self, callback: MessageCallback) -> None:
        """Register ``callback(topic, payload, retained)``; runs on the network thread."""
        with self._cond:
            self._message_callbacks = (*self._message_callbacks, callback)

    def on_connect(self, callback: ConnectCallback) -> None:
        """Register ``callback()`` for every (re)connect; runs on the network thread."""
        with self._cond:
            self._connect_callbacks = (*self._connect_callbacks, callback)

    @property
    def connected(self) -> bool:
        """True once a (re)connect has been fully handled, until the link drops."""
        with self._cond:
            return self._connected

    def stats(self) -> dict[str, object]:
        """For the heartbeat: connected, reconnects so far, messages waiting in the outbox,
        messages dropped from it (full while the broker was away or slow)."""
        with self._cond:
            return {
                # The session, not "handling done": the heartbeat sent while the connect
                # is being handled must say connected.
                "connected": self._session_up,
                "reconnects": max(0, self._connections - 1),
                "queued": len(self._outbox),
                "dropped": self._dropped_total,
            }

    def network_problem(self, wedged_after: float = 120.0) -> str | None:
        """Why paho's network thread is not sound (dead, or no loop round for
        ``wedged_after`` seconds beyond the reconnect backoff), or None."""
        client = self._paho
        if client is None or self._stopping:
            return None
        thread = self._network_thread
        if thread is not None and not thread.is_alive():
            return "the MQTT network thread has died"
        silent = time.monotonic() - client.last_loop
        if client.last_loop and silent > self._settings.reconnect_max_delay + wedged_after:
            return f"the MQTT network loop has not run for {silent:.0f} s"
        return None

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until no QoS>0 message is unacknowledged or buffered."""
        with self._cond:
            return self._cond.wait_for(self._all_acked, timeout=max(0.0, timeout))

    def start(self) -> None:
        """Start connecting in the background; returns at once, whatever the broker does.

        Raises only for configuration errors paho detects up front (e.g. an unreadable
        CA file).
        """
        with self._cond:
            if self._started:
                return
            self._started = True
        client = self._build_client()
        with self._cond:
            self._paho = client
        s = self._settings
        if self._protocol == mqtt.MQTTv5:
            properties = None
            if not s.clean_session:
                properties = Properties(PacketTypes.CONNECT)
                properties.SessionExpiryInterval = SESSION_EXPIRY_SECONDS
            host, port = self._brokers[0]
            client.connect_async(
                host,
                port,
                keepalive=s.keepalive,
                clean_start=bool(s.clean_session),
                properties=properties,
            )
        else:
            client.connect_async(*self._brokers[0], keepalive=s.keepalive)
        logger.info(
            "MQTT connecting to %s as %s (MQTT %s, TLS %s, persistent session %s)",
            self._address,
            self.client_id,
            s.protocol,
            "on" if s.tls else "off",
            "no" if s.clean_session else "yes",
        )

        client.loop_start()
        thread = getattr(client, "_thread", None)
        if isinstance(thread, threading.Thread):
            thread.name = NETWORK_THREAD_NAME
            # Our own reference: paho 2.x sets client._thread to None when the thread ends,
            # which would hide a dead network thread from network_problem().
            self._network_thread = thread

    def stop(self, timeout: float = 5.0) -> None:
        """Flush (bounded), disconnect cleanly (no last will) and stop the network thread.

        Idempotent. The runtime publishes ``offline`` itself before calling this; the
        flush makes sure the broker has it.
        """
        with self._cond:
            if not self._started or self._stopping:
                self._started = True
                self._stopping = True
                return
            self._stopping = True
            client = self._paho
            self._wake_publishers_locked(always=True)
        assert client is not None
        deadline = time.monotonic() + timeout
        if self.connected and not self.flush(timeout / 2):
            logger.warning("MQTT stop: some QoS>0 messages were not acknowledged in time")
        with self._cond:  # QoS 0 messages still waiting for the network thread to write
            self._cond.wait_for(
                lambda: not self._outbox or not self._connected,
                timeout=max(0.0, min(timeout / 4, deadline - time.monotonic())),
            )
        client.disconnect()
        # loop_stop() joins without a bound; a connect attempt stuck in DNS or TCP must
        # not hang shutdown, and paho's thread is a daemon anyway.
        stopper = threading.Thread(target=client.loop_stop, name="mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(max(0.1, deadline - time.monotonic()))
        if stopper.is_alive():
            logger.warning("MQTT network thread did not stop within %.1f s", timeout)
        with self._cond:
            left = len(self._outbox)
            self._connected = False
            self._session_up = False
        if left:
            logger.warning("MQTT stopped with %d unsent buffered messages", left)
        logger.info("MQTT client stopped (%s)", self._address)

    # -- paho wiring -------------------------------------------------------------------

    def _build_client(self) -> _PahoClient:
        s = self._settings
        kwargs: dict[str, Any] = {"client_id": self.client_id, "protocol": self._protocol}
        if self._protocol != mqtt.MQTTv5:
            # MQTT 5 has no clean_session: paho rejects it; clean_start is set on connect.
            kwargs["clean_session"] = bool(s.clean_session)
        if PAHO_V2:
            client = _PahoClient(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
        else:
            client = _PahoClient(**kwargs)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_ack = lambda mid: self._on_publish(client, None, mid)
        client.after_write = self._after_write
        client.on_socket_open = self._on_socket_open
        if self._will is not None:
            w = self._will
            client.will_set(w.topic, w.payload, qos=w.qos, retain=w.retain)
        if s.username:
            client.username_pw_set(s.username, _resolve_password(s))
        if s.tls:
            client.tls_set_context(_tls_context(s))
        client.reconnect_delay_set(s.reconnect_min_delay, s.reconnect_max_delay)
        client.max_inflight_messages_set(WINDOW)
        client.before_connect = self._before_attempt
        client.direct_write = not s.tls
        return client

    def _before_attempt(self) -> None:
        """Runs on the network thread before every connection attempt."""
        with self._cond:
            self._delay_before_attempt = getattr(self._paho, "_reconnect_delay", None)
            if self._attempts.last_failed and len(self._brokers) > 1:
                self._broker = (self._broker + 1) % len(self._brokers)
                host, port = self._brokers[self._broker]
                # paho's reconnect() connects to these (and checks TLS host names against
                # _host), in both 1.6 and 2.x.
                self._paho._host, self._paho._port = host, port  # type: ignore[union-attr]
                self._address = self._attempts.address = _address(host, port)
                logger.debug("MQTT trying the next broker: %s", self._address)
            self._attempts.begin()
        if self._settings.username:
            self._refresh_credentials()

    def _refresh_credentials(self) -> None:
        # On the network thread: an exception here would kill it, so keep the old password.
        client = self._paho
        try:
            password = _resolve_password(self._settings)
        except Exception as exc:
            logger.warning("MQTT: cannot re-read the password, keeping the previous one: %s", exc)
            return
        if client is not None:
            client.username_pw_set(self._settings.username, password)

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        # Nagle's algorithm delays small MQTT packets (and so QoS 1 round trips) by up to
        # ~40 ms waiting on delayed ACKs.
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError) as exc:  # e.g. a websocket wrapper
            logger.debug("MQTT: could not set TCP_NODELAY: %s", exc)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        error = getattr(client, "last_connect_error", None)
        with self._cond:
            self._attempts.fail(_describe(error, "unknown error"))

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, rc: Any, properties: Any = None
    ) -> None:
        if _code(rc) != 0:
            # paho closes the link and retries with backoff.
            with self._cond:
                self._attempts.fail(f"the broker refused the connection: {_connack_text(rc)}")
            return
        with self._cond:
            self._session_up = True
            topics = dict(self._subscriptions)
            # paho re-sends these after this handler returns; see _next_locked().
            self._stale = {mid: m.topic for mid, m in self._pending.items() if m.qos > 0}
            self._stale_topics = Counter(self._stale.values())
            callbacks = self._connect_callbacks
            dropped, self._dropped = self._dropped, 0
            self._connections += 1
            self._connect_note = "yes" if _session_present(flags) else "no"
            self._suback_topics.clear()
            self._connect_mids.clear()
        if dropped:
            logger.warning(
                "MQTT: %d message(s) were dropped from the full outbox since the last connection",
                dropped,
            )
        for topic, qos in topics.items():
            self._subscribe(client, topic, qos, at_connect=True)
        if not topics:
            self._confirm_connection()
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("MQTT connect callback %r failed", callback)
        with self._cond:
            if self._session_up:
                self._connected = True
                self._cond.notify_all()
        self._pump()

    def _subscribe(self, client: Any, topic: str, qos: int, *, at_connect: bool = False) -> None:
        rc, mid = client.subscribe(topic, qos)
        if mid is None or _code(rc) != 0:  # no link: restored at the next connect
            return
        with self._cond:
            if len(self._suback_topics) > 1000:  # SUBACKs that never came (links that died)
                self._suback_topics.clear()
            self._suback_topics[mid] = topic
            if at_connect:
                self._connect_mids.add(mid)

    def _confirm_connection(self) -> None:
        """Every SUBSCRIBE of the connect acknowledged: the connection is established."""
        with self._cond:
            attempts = self._attempts.succeeded()
            note = self._connect_note
        logger.info(
            "MQTT connected to %s (session present: %s%s)",
            self._address,
            note,
            f", after {attempts} failed attempts" if attempts else "",
        )

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, *args: Any) -> None:
        # A broker's ACL may refuse a subscription (SUBACK 0x80): without a word here,
        # commands would just never arrive. paho 1.6: (granted_qos[, properties]);
        # 2.x: (reason_codes, properties).
        with self._cond:
            topic = self._suback_topics.pop(mid, None)
            last = mid in self._connect_mids and len(self._connect_mids) == 1
            self._connect_mids.discard(mid)
        if last:
            self._confirm_connection()
        for code in args[0] if args else ():
            if _code(code) >= 0x80:
                logger.warning(
                    "MQTT: the broker refused the subscription to %s (%s): its commands will "
                    "not arrive; check the broker's ACL for this user",
                    topic or "a topic",
                    code,
                )

    def _on_disconnect(self, client: Any, userdata: Any, *args: Any) -> None:
        # 1.6: (rc) or (rc, properties); 2.x VERSION2: (flags, reason_code, properties).
        rc = args[1] if PAHO_V2 else args[0]
        with self._cond:
            was_up = self._session_up
            self._connected = False
            self._session_up = False
            # paho drops unsent QoS 0 packets on reconnect: they will never be written.
            self._qos0_infos.clear()
            self._in_paho[0] = self._handing[0]
            stopping = self._stopping
            # Closed before the SUBACKs of its connect: never established. A RabbitMQ node
            # whose session queue lives on a node that is down does this at every attempt;
            # as a failed attempt it gets the growing backoff and the falling log rate.
            flapped = was_up and bool(self._connect_mids) and not stopping
            self._connect_mids.clear()
            if flapped:
                self._attempts.fail(
                    f"the broker accepted the connection but closed it before confirming the "
                    f"subscriptions ({_disconnect_text(rc)})"
                )
                with contextlib.suppress(AttributeError):  # paho restarts the backoff at
                    client._reconnect_delay = self._delay_before_attempt  # each CONNACK
            elif not was_up and not stopping:
                # The link dropped after TCP (and TLS) but before the CONNACK.
                error = getattr(client, "last_io_error", None)
                reason = _describe(
                    error, f"connection closed before the broker's CONNACK ({_disconnect_text(rc)})"
                )
                closed_by_broker = "keep" not in _disconnect_text(rc).lower()  # not a timeout
                if self._protocol == mqtt.MQTTv5 and error is None and closed_by_broker:
                    reason += (
                        "; does the broker speak MQTT 5? (RabbitMQ before 3.13 does not: "
                        'set mqtt.protocol = "3.1.1")'
                    )
                self._attempts.fail(reason)
            self._cond.notify_all()
            self._wake_publishers_locked(always=True)  # no waiting for room while away
        if stopping:
            logger.info("MQTT disconnected from %s", self._address)
        elif was_up and not flapped:
            logger.warning(
                "MQTT lost connection to %s (%s); reconnecting with backoff %g..%g s",
                self._address,
                _disconnect_text(rc),
                self._settings.reconnect_min_delay,
                self._settings.reconnect_max_delay,
            )

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            # Anyone who may publish can send these: the 1st, 2nd, 4th, 8th... at WARNING
            # (with the count), the rest at DEBUG, so they cannot flood the journal.
            self._bad_topics += 1
            seen = self._bad_topics
            logger.log(
                logging.WARNING if _loud(seen) else logging.DEBUG,
                "MQTT: dropped a message whose topic is not UTF-8 (%d so far)",
                seen,
            )
            return
        payload = bytes(message.payload)
        retained = bool(message.retain)
        if message.dup:
            # The broker may have sent this before: a PUBACK of ours lost with the link, or
            # one it had not saved when it crashed (RabbitMQ, docs/rabbitmq.md). QoS 1 is at
            # least once and MQTT forbids concluding from DUP that the first copy came, so it
            # is handled again; the log says so (1st, 2nd, 4th, 8th... at INFO).
            self._redeliveries += 1
            seen = self._redeliveries
            logger.log(
                logging.INFO if _loud(seen) else logging.DEBUG,
                "MQTT: a message on %s came again, marked as a redelivery (DUP); it is "
                "handled again, as QoS 1 delivers at least once (%d so far)",
                topic,
                seen,
            )
        for callback in self._message_callbacks:
            try:
                callback(topic, payload, retained)
            except Exception:
                logger.exception("MQTT message callback failed for topic %s", topic)

    def _on_publish(self, client: Any, userdata: Any, mid: int, *rest: Any) -> None:
        with self._cond:
            message = self._pending.pop(mid, None)
            if message is None:
                # The ack beat _hand_over() to recording the mid (paho's known race).
                self._early_acks[mid] = None
                if len(self._early_acks) > _EARLY_ACK_LIMIT:
                    self._early_acks.popitem(last=False)
            else:
                self._in_paho[message.qos > 0] -= 1
            if self._stale:
                topic = self._stale.pop(mid, None)
                if topic is not None:
                    self._stale_topics[topic] -= 1
                    if self._stale_topics[topic] <= 0:
                        del self._stale_topics[topic]
            self._cond.notify_all()
            first = self._claim_locked()  # a slot in the window is free
        if first is not None:
            self._pump_from(first)

    # -- outbound flow -------------------------------------------------------------------

    def _pump(self) -> None:
        """Move messages from the outbox into paho while the window has room.

        Called by every publisher and, as acks free the window, on the network thread. Only
        one thread pumps at a time — the others just leave their message in the outbox for
        it — so messages reach paho in outbox order without holding our lock while calling
        paho. The flag is cleared under the same lock that ``_next_locked`` checks, so a
        message queued while the pumper is finishing is never stranded.
        """
        with self._cond:
            first = self._claim_locked()
        if first is not None:
            self._pump_from(first)

    def _claim_locked(self) -> Outgoing | None:
        """Become the pumper if no one is and something can go; the first message then."""
        if self._pumping:
            return None
        message = self._next_locked()
        if message is not None:
            self._pumping = True
        return message

    def _pump_from(self, message: Outgoing | None) -> None:
        """The pumper's loop: hand ``message`` over, then the next, until none can go.

        On a thread other than paho's, with direct writes on, paho only queues what it is
        handed and the packets are written here, at the end (see ``_PahoClient``). On paho's
        own thread (an acknowledgement freed a slot) ``_PahoClient`` queues without a wake
        by itself: the loop writes on its next round."""
        client = self._paho
        direct = (
            client is not None
            and getattr(client, "direct_write", False)
            and not self._stopping
            and threading.current_thread() is not getattr(client, "_thread", None)
        )
        while message is not None:
            if direct:
                assert client is not None
                client.set_deferring(True)
            try:
                while message is not None:
                    message = self._hand_over(message)
            finally:
                if direct:
                    assert client is not None
                    client.set_deferring(False)
                    written = client.write_now()
                if message is not None:  # an exception escaped: let another thread pump
                    with self._cond:
                        self._pumping = False
                        self._cond.notify_all()
            if direct and written:  # written: QoS 0 slots are free again, more may go
                with self._cond:
                    message = self._claim_locked()

    def _reap_qos0_locked(self) -> None:
        """Free the window slots of QoS 0 messages paho has written. Lock held."""
        infos = self._qos0_infos
        while infos and _written(infos[0]):
            infos.popleft()
            self._in_paho[0] -= 1

    def _after_write(self) -> None:
        """On paho's network thread after it wrote: QoS 0 messages waiting for a slot go."""
        if self._qos0_infos and len(self._outbox):
            self._pump()

    def _next_locked(self) -> Outgoing | None:
        """The next message paho may take now, reserving its window slot; caller holds the
        lock."""
        if not self._connected or self._paho is None:
            return None
        message = self._outbox.peek(held=self._stale_topics)
        if message is None:
            return None
        acknowledged = message.qos > 0
        if not acknowledged and self._in_paho[0] >= WINDOW_QOS0:
            self._reap_qos0_locked()
        if self._in_paho[acknowledged] >= (WINDOW if acknowledged else WINDOW_QOS0):
            return None  # in order: what follows waits behind it
        self._outbox.remove(message)
        if not message.retain:
            self._wake_publishers_locked()
        self._in_paho[acknowledged] += 1
        self._handing[acknowledged] += 1
        return message

    def _hand_over(self, message: Outgoing) -> Outgoing | None:
        """Give ``message`` to paho; return the next one to hand over, or None after giving
        up the pumper's role (nothing more can go now, or paho has no connection: the
        reconnect will pump again). Never called with ``self._cond`` held."""
        client = self._paho
        failure = None
        info = None
        connection = self._connections  # a reconnect while paho has it makes its info stale
        try:
            assert client is not None
            info = client.publish(message.topic, message.payload, message.qos, message.retain)
        except Exception as exc:  # paho refused it outright: report, never kill the caller
            failure = f"{type(exc).__name__}: {exc}"
        acknowledged = message.qos > 0
        with self._cond:
            self._handing[acknowledged] -= 1
            following = None
            if info is not None and (
                info.rc == mqtt.MQTT_ERR_SUCCESS
                or (info.rc == mqtt.MQTT_ERR_NO_CONN and message.qos > 0)
            ):
                # On NO_CONN paho keeps a QoS>0 message in its session and re-sends it after
                # the reconnect; queueing it again would send it twice.
                if not acknowledged:
                    if self._session_up and self._connections == connection:
                        self._qos0_infos.append(info)
                    else:
                        self._in_paho[0] -= 1  # paho drops unsent QoS 0 on a disconnect
                elif info.mid in self._early_acks:
                    del self._early_acks[info.mid]
                    self._in_paho[1] -= 1
                else:
                    self._pending[info.mid] = message
                following = self._next_locked()
            elif info is not None and info.rc == mqtt.MQTT_ERR_NO_CONN:
                self._in_paho[acknowledged] -= 1
                self._outbox.put_back(message)  # the link dropped between our check and paho's
            else:
                self._in_paho[acknowledged] -= 1
                if info is not None:
                    failure = mqtt.error_string(info.rc)
                following = self._next_locked()
            if following is None:
                self._pumping = False
                self._cond.notify_all()
        if failure is not None:
            logger.warning("MQTT publish to %s failed: %s", message.topic, failure)
        return following

    def _all_acked(self) -> bool:
        if self._session_up and not self._connected:
            return False  # connect handling is under way; the outbox drains right after
        return (
            not self._pumping
            and not any(self._handing)
            and not any(m.qos > 0 for m in self._pending.values())
            and not self._outbox.has_acknowledged()
        )
