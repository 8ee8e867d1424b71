"""Shared test setup: an offline session, quiet TensorFlow, deterministic Hypothesis in CI.

The suite must pass on a fresh machine with no network, so no test may open a
connection beyond this machine: pytest-socket guards ``socket.connect`` for
every test (``--disable-socket --allow-hosts=127.0.0.1,::1,localhost
--allow-unix-socket``, set here so a plain ``pytest`` gets it), and between
tests — collection, module fixtures — the same guard stays in place. Loopback
stays open for Ray and for the servers tests start on 127.0.0.1. Name lookups
of anything but loopback names are refused too (a DNS query leaves the machine).
Downloads are switched off (``VISUALSIM_NO_DOWNLOAD``), so code that would fetch
data says so instead of waiting on the network.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ["VISUALSIM_NO_DOWNLOAD"] = "1"

import ipaddress
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_socket
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("ci" if os.environ.get("CI") else "default")

# -- no network ------------------------------------------------------------------------
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
"""Where tests may connect: this machine only."""

_true_getaddrinfo = socket.getaddrinfo
_true_gethostbyname = socket.gethostbyname


def _is_loopback(host: Any) -> bool:
    if host is None or host in ("", "localhost", "localhost.localdomain"):
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _is_literal(host: Any) -> bool:
    try:
        ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    return True


def _offline_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    # an IP literal resolves without asking anyone; connect() is guarded separately
    if _is_loopback(host) or _is_literal(host):
        return _true_getaddrinfo(host, *args, **kwargs)
    raise pytest_socket.SocketBlockedError(
        f"A test tried to resolve {host!r}: tests are offline (loopback only)."
    )


def _offline_gethostbyname(host: str) -> str:
    if _is_loopback(host) or _is_literal(host):
        return _true_gethostbyname(host)
    raise pytest_socket.SocketBlockedError(
        f"A test tried to resolve {host!r}: tests are offline (loopback only)."
    )


def block_network() -> None:
    """Allow connections to loopback and Unix sockets only, and loopback name lookups."""
    pytest_socket.socket_allow_hosts(list(LOOPBACK_HOSTS), allow_unix_socket=True)
    socket.getaddrinfo = _offline_getaddrinfo
    socket.gethostbyname = _offline_gethostbyname


block_network()  # from collection on, not only inside tests


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Give pytest-socket the offline options before it reads them."""
    config.option.disable_socket = True
    config.option.allow_hosts = ",".join(LOOPBACK_HOSTS)
    config.option.allow_unix_socket = True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """pytest-socket lifts its guard after each test; put it back for what runs between."""
    try:
        return (yield)
    finally:
        block_network()


# -- a stand-in Fashion-MNIST ------------------------------------------------------------
@pytest.fixture
def fashion_mnist_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Return ``make(n=300)``: writes a small Fashion-MNIST test split where Debian's goes.

    The files are real IDX files (gzipped, as Debian ships them) of ``n`` 28x28
    images whose brightness and stripes depend on the class, labels cycling
    9, 0, 1, ..., 8 (so item 0 is an "Ankle boot", as in the real test split).
    :data:`~visualsim.datasets.fashion_mnist.DEBIAN_DIR` points at them and the
    Keras cache at an empty folder for the test's duration.
    """
    from visualsim.datasets import fashion_mnist

    def make(n: int = 300, *, split: str = "t10k") -> Path:
        root = tmp_path / "usr-share-datasets" / "fashion-mnist"
        root.mkdir(parents=True, exist_ok=True)
        labels = (np.arange(n) + 9) % 10
        rng = np.random.default_rng(0)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, :, :: label + 2] += np.uint8(20 * label)
        fashion_mnist.write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        fashion_mnist.write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
        monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", root)
        monkeypatch.setattr(fashion_mnist, "KERAS_CACHE_DIR", tmp_path / "empty-keras-cache")
        return root

    return make
