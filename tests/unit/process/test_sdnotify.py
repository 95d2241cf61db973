"""Tests for forwarder.process.sdnotify: real datagrams on real AF_UNIX sockets."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator

import pytest

from forwarder.process import sdnotify


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A private directory with a short path: AF_UNIX paths are limited to 107 bytes."""
    path = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _receiver(address: str) -> socket.socket:
    """Bind a datagram socket at *address* that times out instead of hanging a test."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)
    return sock


@pytest.fixture
def path_socket(short_dir: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A filesystem notify socket, with NOTIFY_SOCKET pointing at it."""
    path = os.path.join(short_dir, "notify")
    sock = _receiver(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def abstract_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """An abstract notify socket ("@name"), with NOTIFY_SOCKET pointing at it."""
    name = f"forwarder-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = _receiver("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        yield sock
    finally:
        sock.close()


def _recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode("utf-8")


def _assert_nothing_pending(sock: socket.socket) -> None:
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)


def test_ready_sends_exact_datagram(path_socket: socket.socket) -> None:
    """READY=1 arrives as one datagram with exactly that content."""
    assert sdnotify.notify("READY=1") is True
    assert _recv(path_socket) == "READY=1"
    _assert_nothing_pending(path_socket)


def test_several_fields_are_newline_separated(path_socket: socket.socket) -> None:
    """All fields of one call travel in one datagram, one assignment per line."""
    assert sdnotify.notify("READY=1", "STATUS=serving 4 rules") is True
    assert _recv(path_socket) == "READY=1\nSTATUS=serving 4 rules"
    _assert_nothing_pending(path_socket)


def test_abstract_socket(abstract_socket: socket.socket) -> None:
    r"""NOTIFY_SOCKET=@name sends to the abstract socket \0name."""
    assert sdnotify.notify("STOPPING=1") is True
    assert _recv(abstract_socket) == "STOPPING=1"


def test_notifier_messages(path_socket: socket.socket) -> None:
    """Each Notifier method sends the documented fields."""
    n = sdnotify.Notifier()
    assert n.ready("serving 4 rules")
    assert _recv(path_socket) == "READY=1\nSTATUS=serving 4 rules"
    assert n.ready()
    assert _recv(path_socket) == "READY=1"
    assert n.status("reloading /etc/forwarder/forwarder.yaml")
    assert _recv(path_socket) == "STATUS=reloading /etc/forwarder/forwarder.yaml"
    assert n.stopping()
    assert _recv(path_socket) == "STOPPING=1"
    assert n.stopping("draining")
    assert _recv(path_socket) == "STOPPING=1\nSTATUS=draining"
    assert n.watchdog()
    assert _recv(path_socket) == "WATCHDOG=1"
    _assert_nothing_pending(path_socket)


def test_reloading_carries_monotonic_timestamp(path_socket: socket.socket) -> None:
    """RELOADING=1 comes with MONOTONIC_USEC taken from CLOCK_MONOTONIC at send time."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.Notifier().reloading() is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = _recv(path_socket).split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_status_text_is_kept_on_one_line(path_socket: socket.socket) -> None:
    """A multi-line status cannot inject extra assignments."""
    assert sdnotify.Notifier().status("bad config\nREADY=1")
    assert _recv(path_socket) == "STATUS=bad config READY=1"


def test_noop_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without NOTIFY_SOCKET nothing is sent and every call answers False."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    n = sdnotify.Notifier()
    assert n.ready("x") is False
    assert n.reloading() is False
    assert n.stopping() is False
    assert n.status("x") is False
    assert n.watchdog() is False


def test_empty_notify_socket_is_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert sdnotify.notify("READY=1") is False


def test_missing_socket_answers_false(short_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A NOTIFY_SOCKET that nobody listens on is reported, never raised."""
    monkeypatch.setenv("NOTIFY_SOCKET", os.path.join(short_dir, "gone"))
    assert sdnotify.notify("READY=1") is False


def test_unsupported_address_answers_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert sdnotify.notify("READY=1") is False


@pytest.mark.parametrize("field", ["READY", "STATUS=a\nREADY=1"])
def test_malformed_field_is_a_caller_bug(field: str, path_socket: socket.socket) -> None:
    with pytest.raises(ValueError):
        sdnotify.notify(field)
    _assert_nothing_pending(path_socket)


def test_notify_socket_address() -> None:
    assert sdnotify.notify_socket_address("@abc") == "\0abc"
    assert sdnotify.notify_socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert sdnotify.notify_socket_address("") is None
    assert sdnotify.notify_socket_address("relative/path") is None


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 30.0),
        ("500000", "self", 0.5),
        ("30000000", "1", None),  # meant for another process
        ("0", None, None),
        ("junk", None, None),
        ("30000000", "junk", None),
    ],
)
def test_watchdog_interval(
    usec: str | None, pid: str | None, expected: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert sdnotify.watchdog_interval() == expected


async def test_watchdog_loop_pings_every_half_interval(
    path_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """watchdog_loop pings at once and then every interval/2 until cancelled."""
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # 0.1 s -> a ping every 0.05 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    loop = asyncio.get_running_loop()
    path_socket.setblocking(False)
    task = asyncio.create_task(sdnotify.Notifier().watchdog_loop())
    pings, times = [], []
    try:
        for _ in range(3):  # wait for each ping as it arrives
            pings.append(await asyncio.wait_for(loop.sock_recv(path_socket, 4096), 5))
            times.append(loop.time())
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pings == [b"WATCHDOG=1"] * 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap >= 0.04 for gap in gaps)  # every interval/2 (0.05 s), not in a burst


async def test_watchdog_loop_returns_without_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    await asyncio.wait_for(sdnotify.Notifier().watchdog_loop(), timeout=1.0)
