"""A TCP proxy for tests that can cut the network without closing anything.

``cut()`` makes the proxy stop forwarding, in both directions, on every connection, and
stop accepting new ones: bytes stay in the kernel's buffers (as TCP's retransmissions would
hold them on a real cut), connect attempts complete in the listen backlog and then hear
nothing. Neither side sees a FIN or a RST; only keepalives can tell. ``restore()`` lets
traffic flow again. Not a test module: nothing here is collected.
"""

from __future__ import annotations

import selectors
import socket
import threading

from agent.testing.mosquitto import free_port


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port`` on its own thread."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = free_port()
        self._listener = socket.create_server((self.host, self.port), backlog=16)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._flowing = threading.Event()
        self._flowing.set()
        self._closing = threading.Event()
        self.connections = 0  # accepted so far
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._thread.start()

    def cut(self) -> None:
        self._flowing.clear()

    def restore(self) -> None:
        # Connection attempts made during the cut wait in the listen backlog; on a real cut
        # their SYNs were lost. Forwarding them now would hand the broker stale CONNECTs
        # (a will, the client id of a live session): close them unanswered.
        self._listener.setblocking(False)
        try:
            while True:
                try:
                    stale, _ = self._listener.accept()
                except BlockingIOError:
                    break
                stale.close()
        finally:
            self._listener.setblocking(True)
        self._flowing.set()

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5.0)
        for sock in [self._listener, *self._peers]:
            sock.close()

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            while not self._closing.is_set():
                if not self._flowing.wait(0.05):
                    continue  # cut: read nothing, accept nothing
                for sock in [self._listener, *self._peers]:
                    selector.register(sock, selectors.EVENT_READ)
                try:
                    ready = selector.select(0.05)
                finally:
                    for sock in list(selector.get_map().values()):
                        selector.unregister(sock.fileobj)
                for key, _ in ready:
                    if not self._flowing.is_set():
                        break  # cut while selecting: forward nothing more
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._listener:
                        self._accept()
                    elif sock in self._peers:
                        self._forward(sock)

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        try:
            upstream = socket.create_connection(self._target, timeout=2.0)
        except OSError:
            client.close()
            return
        self.connections += 1
        self._peers[client] = upstream
        self._peers[upstream] = client

    def _forward(self, sock: socket.socket) -> None:
        peer = self._peers[sock]
        try:
            data = sock.recv(65536)
            if data:
                peer.sendall(data)
                return
        except OSError:
            pass
        for end in (sock, peer):  # one side closed: close the other, as a real path would
            self._peers.pop(end, None)
            end.close()
