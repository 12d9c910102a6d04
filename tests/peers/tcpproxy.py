"""A TCP proxy on 127.0.0.1 that a test can slow down or cut: how the fault tests make
PostgreSQL slow to commit, or unreachable for a while, without touching the server itself.

Threads are daemons and every blocking call is bounded (the listener polls its stop flag,
connections are shut down, not just closed, so a thread blocked in ``recv`` wakes up), so a
forgotten proxy can't keep a test run alive.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

CHUNK = 65536  # bytes read from one side before forwarding them to the other
ACCEPT_POLL_S = 0.2  # how often the listener looks at its stop flag


def _shut(sock: socket.socket) -> None:
    """Shutdown (wakes a thread blocked in recv on it), then close; never raises."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class _Link:
    """One proxied connection: the client's socket and ours to the server."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self._closed = False
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _shut(self.client)
        _shut(self.server)


class TcpProxy:
    """Forwards connections made to ``127.0.0.1:port`` to ``target_host:target_port``.

    - ``latency``: seconds slept before each chunk is forwarded toward the server (a slow
      database commit); may be changed while connections are open.
    - ``cut()``: closes every open connection, and from then on accepts and closes at once,
      so clients see the server as unreachable (not as a hang) until ``restore()``.
    """

    def __init__(self, target_host: str, target_port: int, *, latency: float = 0.0,
                 connect_timeout: float = 5.0) -> None:
        self.target = (target_host, target_port)
        self.latency = latency
        self.connect_timeout = connect_timeout
        self.accepted = 0
        """Connections accepted so far, refused ones (while cut) included."""
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._cut = False
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(ACCEPT_POLL_S)
        self.port: int = int(self._listener.getsockname()[1])
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"tcpproxy-{self.port}", daemon=True)

    @property
    def connections(self) -> int:
        """Connections open through the proxy right now."""
        with self._lock:
            return len(self._links)

    @property
    def is_cut(self) -> bool:
        return self._cut

    def start(self) -> TcpProxy:
        self._acceptor.start()
        return self

    def cut(self) -> int:
        """Close every open connection and refuse new ones; returns how many were closed."""
        with self._lock:
            self._cut = True
            links, self._links = self._links, set()
        for link in links:
            link.close()
        return len(links)

    def restore(self) -> None:
        """Forward new connections again (the ones cut stay closed: clients reconnect)."""
        with self._lock:
            self._cut = False

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening, close every connection and wait (bounded) for the listener to end."""
        self._stopping.set()
        self.cut()
        if self._acceptor.is_alive():
            self._acceptor.join(timeout)
        self._listener.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- threads ---------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # listener closed
            self.accepted += 1
            if self._cut or self._stopping.is_set():
                _shut(client)
                continue
            threading.Thread(target=self._open, args=(client,), name=f"tcpproxy-{self.port}-open",
                             daemon=True).start()

    def _open(self, client: socket.socket) -> None:
        """Connect to the target (bounded), then pump both ways, one thread per direction."""
        client.setblocking(True)
        try:
            server = socket.create_connection(self.target, timeout=self.connect_timeout)
        except OSError:
            _shut(client)
            return
        server.settimeout(None)
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(client, server)
        with self._lock:  # a cut() that ran while we connected must win
            if self._cut or self._stopping.is_set():
                link.close()
                return
            self._links.add(link)
        for src, dst, toward_server in ((client, server, True), (server, client, False)):
            threading.Thread(target=self._pump, args=(link, src, dst, toward_server),
                             name=f"tcpproxy-{self.port}-pump", daemon=True).start()

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket, toward_server: bool) -> None:
        """Copy ``src`` to ``dst`` until either side ends; then the whole link is closed."""
        try:
            while not link.closed:
                data = src.recv(CHUNK)
                if not data:
                    break
                if toward_server and self.latency > 0:
                    time.sleep(self.latency)
                if link.closed:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._links.discard(link)
            link.close()
