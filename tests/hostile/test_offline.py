"""The suite is offline: connections and name lookups beyond this machine are refused.

tests/conftest.py sets this up for the whole session; these tests check that it
holds inside a test, that loopback (Ray, servers the tests start) still works,
and that the guard is back in place between tests.
"""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.request
from collections.abc import Iterator

import pytest
import pytest_socket

BLOCKED = (pytest_socket.SocketBlockedError, pytest_socket.SocketConnectBlockedError)


@pytest.mark.parametrize(
    "address", [("203.0.113.7", 80), ("8.8.8.8", 53), ("2001:db8::1", 443, 0, 0)]
)
def test_a_connection_beyond_this_machine_is_refused(address: tuple) -> None:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock, pytest.raises(BLOCKED):
        sock.connect(address)


@pytest.mark.parametrize("host", ["pypi.org", "storage.googleapis.com", "www.kaggle.com"])
def test_a_name_lookup_beyond_this_machine_is_refused(host: str) -> None:
    with pytest.raises(BLOCKED):
        socket.getaddrinfo(host, 443)
    with pytest.raises(BLOCKED):
        socket.gethostbyname(host)
    with pytest.raises(BLOCKED):
        urllib.request.urlopen(f"https://{host}/", timeout=5)  # network-free: asserts it's refused


@pytest.fixture
def loopback_server() -> Iterator[str]:
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello from loopback")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_a_server_on_loopback_works(loopback_server: str) -> None:
    local = loopback_server.replace("127.0.0.1", "localhost")
    with urllib.request.urlopen(loopback_server, timeout=10) as response:  # network-free: loopback
        assert response.read() == b"hello from loopback"
    with urllib.request.urlopen(local, timeout=10) as r:  # network-free: loopback, by name
        assert r.read() == b"hello from loopback"


def test_unix_sockets_work() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        left.sendall(b"x")
        assert right.recv(1) == b"x"


def test_the_guard_is_in_place_between_tests_too() -> None:
    """What pytest-socket lifts after each test, the conftest puts back (see its teardown)."""
    pytest_socket._remove_restrictions()  # what pytest-socket does at every teardown
    import conftest

    conftest.block_network()
    with socket.socket() as sock, pytest.raises(BLOCKED):
        sock.connect(("203.0.113.7", 80))
