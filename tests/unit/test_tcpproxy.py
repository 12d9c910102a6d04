"""The fault tests' TCP proxy: forwards, slows, cuts, restores, and stops by itself."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.peers.tcpproxy import TcpProxy


@pytest.fixture
def echo_port() -> Iterator[int]:
    """An echo server on 127.0.0.1 (one thread per connection, all daemons)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(2)
    listener.close()


def round_trip(port: int, payload: bytes = b"ping") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_the_proxy_forwards_bytes_both_ways(echo_port):
    with TcpProxy("127.0.0.1", echo_port) as proxy:
        assert round_trip(proxy.port, b"x" * 200_000) == b"x" * 200_000


def test_latency_delays_each_chunk_toward_the_server(echo_port):
    with TcpProxy("127.0.0.1", echo_port, latency=0.2) as proxy:
        started = time.monotonic()
        assert round_trip(proxy.port) == b"ping"
        assert time.monotonic() - started >= 0.2


def test_a_cut_closes_open_connections_and_refuses_new_ones_until_restored(echo_port):
    with TcpProxy("127.0.0.1", echo_port) as proxy:
        open_conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        open_conn.sendall(b"a")
        assert open_conn.recv(10) == b"a"
        assert proxy.connections == 1

        assert proxy.cut() == 1
        try:
            assert open_conn.recv(10) == b""  # the server side is gone
        except ConnectionResetError:
            pass
        open_conn.close()
        assert round_trip(proxy.port) == b""  # accepted, then closed at once: not a hang

        proxy.restore()
        assert round_trip(proxy.port) == b"ping"


def test_closing_the_proxy_stops_its_threads_and_its_port(echo_port):
    before = threading.active_count()
    proxy = TcpProxy("127.0.0.1", echo_port).start()
    conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    conn.sendall(b"a")
    assert conn.recv(10) == b"a"
    proxy.close()
    conn.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
