"""A TCP relay on loopback that can make connections die silently, the way a vanished host or a dropped
route does: no FIN, no RST, bytes simply stop arriving.

A closed connection is noticed at once by any client; a silent one only by a client that expects answers.
The relay forwards bytes both ways, remembers which connections issued a Redis ``SUBSCRIBE`` (the change
feed), and on :meth:`silence_subscribers` stops forwarding on those — sockets stay open, nothing flows —
while every other connection, and every new one, keeps working.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

from tests.support.redis_server import free_port


@dataclass
class _Link:
    client: socket.socket
    server: socket.socket
    subscriber: bool = False
    silenced: threading.Event = field(default_factory=threading.Event)


class TcpRelay:
    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            link = _Link(client, server)
            with self._lock:
                self._links.append(link)
            threading.Thread(target=self._pump, args=(link, client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(link, server, client, False), daemon=True).start()

    def _pump(self, link: _Link, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if upstream and b"SUBSCRIBE" in data.upper():
                    link.subscriber = True
                if link.silenced.is_set():
                    continue  # swallowed: the peer hears nothing, and nothing tells it so
                sink.sendall(data)
        except OSError:
            pass
        finally:
            if not link.silenced.is_set():
                for s in (source, sink):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)
                    s.close()

    def silence_subscribers(self) -> int:
        """Stop all traffic on the connections that subscribed; returns how many were silenced."""
        with self._lock:
            targets = [link for link in self._links if link.subscriber and not link.silenced.is_set()]
        for link in targets:
            link.silenced.set()
        return len(targets)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            for s in (link.client, link.server):
                with contextlib.suppress(OSError):
                    s.close()
