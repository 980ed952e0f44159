"""The hand-written sd_notify client, against real AF_UNIX datagram sockets."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from eumirror.service import sdnotify

# recv() would only block if notify() silently failed to send; fail the test instead of hanging.
RECV_TIMEOUT = 5.0


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def path_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    if len(os.fsencode(path)) >= 100:  # sun_path is 108 bytes; a deep TMPDIR can exceed it
        pytest.skip(f"tmp path too long for an AF_UNIX socket: {path}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(RECV_TIMEOUT)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


@pytest.fixture
def abstract_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    if not sys.platform.startswith("linux"):
        pytest.skip("abstract AF_UNIX names are Linux-only")
    name = f"eumirror-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(RECV_TIMEOUT)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        yield sock


@pytest.mark.parametrize("message", ["READY=1", "STATUS=syncing eucalyptus (3/12)", "WATCHDOG=1"])
def test_message_reaches_path_socket(path_socket: socket.socket, message: str) -> None:
    """Each message arrives as one datagram, byte for byte, on a filesystem socket."""
    assert sdnotify.notify(message) is True
    assert path_socket.recv(4096) == message.encode()


def test_message_reaches_abstract_socket(abstract_socket: socket.socket) -> None:
    """An '@' NOTIFY_SOCKET addresses the abstract namespace."""
    assert sdnotify.notify("READY=1") is True
    assert abstract_socket.recv(4096) == b"READY=1"


def test_multiline_and_unicode_sent_as_one_datagram(path_socket: socket.socket) -> None:
    """Several assignments in one message stay one datagram, UTF-8 encoded."""
    message = "READY=1\nSTATUS=listening on 127.0.0.1:9105 — idle"
    assert sdnotify.notify(message) is True
    assert path_socket.recv(4096) == message.encode("utf-8")


def test_messages_arrive_in_order(path_socket: socket.socket) -> None:
    """Consecutive notifications are separate datagrams in sending order."""
    messages = ["READY=1", "STATUS=syncing", "WATCHDOG=1"]
    for message in messages:
        assert sdnotify.notify(message)
    assert [path_socket.recv(4096) for _ in messages] == [m.encode() for m in messages]


def test_unset_socket_returns_false() -> None:
    """Without NOTIFY_SOCKET (not under systemd) notify is a silent no-op."""
    assert sdnotify.notify("READY=1") is False


@pytest.mark.parametrize("value", ["", "@", "/", "relative/notify.sock", "vsock:2:1234"])
def test_unusable_socket_value_returns_false(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """A NOTIFY_SOCKET that is neither an absolute path nor an abstract name is ignored."""
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert sdnotify.notify("READY=1") is False


def test_missing_socket_returns_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket path that does not exist makes notify return False instead of raising."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert sdnotify.notify("READY=1") is False


def test_closed_socket_returns_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket file whose receiver has gone away (connection refused) returns False."""
    path = tmp_path / "closed.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    assert sdnotify.notify("READY=1") is False


def test_empty_message_is_not_sent(path_socket: socket.socket) -> None:
    """An empty message is refused, as sd_notify(3) refuses an empty state."""
    assert sdnotify.notify("") is False
    path_socket.setblocking(False)
    with pytest.raises(BlockingIOError):
        path_socket.recv(4096)


def test_unencodable_message_returns_false(path_socket: socket.socket) -> None:
    """A message that is not valid UTF-8 text (a lone surrogate) yields False, not an exception."""
    assert sdnotify.notify("STATUS=\udcff") is False


def test_watchdog_unset() -> None:
    """No WATCHDOG_USEC means no watchdog."""
    assert sdnotify.watchdog_period() is None


def test_watchdog_usec_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """WATCHDOG_USEC is converted from microseconds to seconds."""
    monkeypatch.setenv("WATCHDOG_USEC", "300000000")
    assert sdnotify.watchdog_period() == 300.0


def test_watchdog_sub_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fractions of a second are kept."""
    monkeypatch.setenv("WATCHDOG_USEC", "1500")
    assert sdnotify.watchdog_period() == pytest.approx(0.0015)


def test_watchdog_pid_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """A WATCHDOG_PID naming this process keeps the watchdog."""
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_period() == 30.0


def test_watchdog_pid_other_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A WATCHDOG_PID naming another process (we inherited its environment) means no watchdog."""
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_period() is None


@pytest.mark.parametrize(
    ("usec", "pid"),
    [("0", ""), ("-5", ""), ("abc", ""), (" 30", ""), ("3_000", ""), ("30000000", "x")],
)
def test_watchdog_invalid_values(monkeypatch: pytest.MonkeyPatch, usec: str, pid: str) -> None:
    """Zero, negative or malformed values disable the watchdog rather than raising."""
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid:
        monkeypatch.setenv("WATCHDOG_PID", pid)
    assert sdnotify.watchdog_period() is None
