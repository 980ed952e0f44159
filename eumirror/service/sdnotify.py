"""The sd_notify(3) datagram protocol, by hand.

The protocol is one datagram of newline-separated ``KEY=VALUE`` pairs sent to the AF_UNIX socket
named by ``$NOTIFY_SOCKET``; that is small enough that a dependency (or libsystemd) isn't worth it.
Outside systemd (a terminal, a container) every call is a cheap no-op.
"""

from __future__ import annotations

import os
import socket

__all__ = ["notify", "watchdog_period"]

# A bound on how long a send may block the event loop if systemd's queue is ever full: losing one
# STATUS= line is better than freezing the daemon (and the watchdog pings it is supposed to send).
_SEND_TIMEOUT = 1.0


def _address() -> str | None:
    """Return the socket address from $NOTIFY_SOCKET, or None when unset or unusable.

    systemd hands out an absolute path or an abstract name written with a leading '@'; anything
    else (a relative path, vsock: on newer systemd) is not ours to guess at.
    """
    path = os.environ.get("NOTIFY_SOCKET", "")
    if len(path) < 2:
        return None
    if path[0] == "@":
        return "\0" + path[1:]
    if path[0] == "/":
        return path
    return None


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) to the service manager; True if it was sent.

    Never raises: a daemon must keep mirroring even if its supervisor's socket is gone, so every
    failure (unset socket, refused, timed out, message not encodable) is reported as False only.
    """
    address = _address()
    if address is None or not message:
        return False
    try:
        data = message.encode("utf-8")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(_SEND_TIMEOUT)
            sock.connect(address)
            sent = sock.send(data)
    except (OSError, UnicodeError, ValueError):
        return False
    return sent == len(data)


def watchdog_period() -> float | None:
    """Return the watchdog timeout in seconds, or None if no watchdog expects this process.

    Reads WATCHDOG_USEC, honouring WATCHDOG_PID so a child that inherited the environment does
    not believe it is the one being watched. Callers should ping (``WATCHDOG=1``) at half of it.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not _is_decimal(usec) or (pid and not _is_decimal(pid)):
        return None
    if pid and int(pid) != os.getpid():
        return None
    value = int(usec)
    return value / 1_000_000 if value > 0 else None


def _is_decimal(text: str) -> bool:
    """Accept plain ASCII digits only, as systemd writes them (int() would take "1_0" or " 1")."""
    return text.isascii() and text.isdigit()
