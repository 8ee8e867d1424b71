"""The catalogue's lock is phase-fair: neither a stream of writers nor of readers starves."""

from __future__ import annotations

import threading
import time

from visualsim.indexes.base import ReadWriteLock


def _wait_until(check: object, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not check() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.001)
    assert check()  # type: ignore[operator]


def test_readers_waiting_at_a_release_go_before_the_next_writer() -> None:
    lock = ReadWriteLock()
    order: list[str] = []
    first = threading.Event()

    def writer(name: str, hold: threading.Event | None = None) -> None:
        with lock.write():
            order.append(name)
            if hold is not None:
                hold.wait(10)

    def reader(name: str) -> None:
        with lock.read():
            order.append(name)

    w1 = threading.Thread(target=writer, args=("w1", first))
    w1.start()
    _wait_until(lambda: order == ["w1"])
    r1 = threading.Thread(target=reader, args=("r1",))
    r1.start()
    _wait_until(lambda: lock._readers_waiting == 1)
    w2 = threading.Thread(target=writer, args=("w2",))
    w2.start()
    _wait_until(lambda: lock._writers_waiting == 1)
    first.set()  # w1 lets go: r1 was waiting, so it goes before w2
    for t in (w1, r1, w2):
        t.join(10)
    assert order == ["w1", "r1", "w2"]


def test_a_waiting_writer_holds_back_readers_that_come_after_it() -> None:
    lock = ReadWriteLock()
    order: list[str] = []
    inside = threading.Event()
    leave = threading.Event()

    def long_reader() -> None:
        with lock.read():
            inside.set()
            leave.wait(10)
            order.append("r0")

    def writer() -> None:
        with lock.write():
            order.append("w")

    def reader() -> None:
        with lock.read():
            order.append("r1")

    r0 = threading.Thread(target=long_reader)
    r0.start()
    inside.wait(10)
    w = threading.Thread(target=writer)
    w.start()
    _wait_until(lambda: lock._writers_waiting == 1)
    r1 = threading.Thread(target=reader)
    r1.start()
    _wait_until(lambda: lock._readers_waiting == 1)  # it waits behind the writer
    leave.set()
    for t in (r0, w, r1):
        t.join(10)
    assert order == ["r0", "w", "r1"]


def test_a_stream_of_writers_lets_readers_through() -> None:
    lock = ReadWriteLock()
    stop = threading.Event()
    counts = {"read": 0, "write": 0}

    def writer() -> None:
        while not stop.is_set():
            with lock.write():
                counts["write"] += 1

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    _wait_until(lambda: counts["write"] > 10)

    def reads() -> None:
        for _ in range(50):  # each read gets in within the writers' turns
            with lock.read():
                counts["read"] += 1

    reader = threading.Thread(target=reads)
    reader.start()
    reader.join(20)
    stop.set()
    reader.join(10)
    for t in threads:
        t.join(10)
    assert counts["read"] == 50
