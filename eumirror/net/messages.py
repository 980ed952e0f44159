"""Transfer failures in our words: one short sentence each, never a library's text.

A library's exception text may carry the url (with its credentials), raw bytes from the wire or
a repr several hundred characters long; what reaches an operator is built here from the facts
alone: which host, how many bytes, what to set.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl

import aiohttp
from aiohttp import http_exceptions

MAX_LINE = 300
MAX_URL = 100

# OpenSSL's X509_V_ERR_* codes that an operator can act on.
_CERT_PROBLEMS = {
    9: "is not valid yet",
    10: "has expired",
    18: "is self-signed",
    19: "is signed by a certificate authority that is not trusted (self-signed root)",
    20: "is signed by an unknown certificate authority",
    21: "is signed by an unknown certificate authority",
    62: "does not name this host",
    64: "does not name this address",
}


def count(n: int) -> str:
    """10000 -> '10,000': byte counts an operator can read at a glance."""
    return f"{n:,}"


def of_bytes(received: int, expected: int | None) -> str:
    if expected is None:
        return f"{count(received)} bytes"
    return f"{count(received)} of {count(expected)} bytes"


def shorten(url: str, limit: int = MAX_URL) -> str:
    """An url fit for a message line: the middle of a very long one elided (it is redacted
    before it gets here)."""
    if len(url) <= limit:
        return url
    keep = limit - 3
    return url[: keep // 2] + "..." + url[-(keep - keep // 2) :]


def clip(line: str) -> str:
    """At most MAX_LINE characters, whatever a server put in its reason phrase."""
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..."


def printable(text: str, limit: int = 60) -> str:
    """A server-chosen text (a reason phrase) made safe for one log line."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in text)
    return clean[:limit]


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _has(exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]) -> bool:
    if any(isinstance(e, kind) for e in _chain(exc)):
        return True
    # ClientPayloadError names the cause in its text only (aiohttp keeps no reference).
    return (
        isinstance(exc, aiohttp.ClientPayloadError)
        and kind is ConnectionResetError
        and "ConnectionResetError" in str(exc)
    )


def tls_problem(exc: BaseException, host_port: str, ca_file: str) -> str:
    """TLS: what is wrong with the certificate of HOST:PORT, and what to set."""
    what = "set SSL_CERT_FILE or the upstream's ca_file"
    if ca_file:
        what = f"check the upstream's ca_file {ca_file}"
    cert = getattr(exc, "certificate_error", None)
    if isinstance(cert, ssl.SSLCertVerificationError):
        problem = _CERT_PROBLEMS.get(cert.verify_code, "could not be verified")
        if cert.verify_code in (62, 64):
            what = "use the host name the certificate was issued for"
        return f"TLS: the certificate of {host_port} {problem} ({what})"
    reason = getattr(getattr(exc, "os_error", None) or exc, "reason", None)
    detail = f" ({printable(str(reason)).lower().replace('_', ' ')})" if reason else ""
    return f"TLS: the handshake with {host_port} failed{detail}"


def connect_problem(exc: BaseException, host_port: str, *, ca_file: str, timeout: float) -> str:
    """Why no answer came from HOST:PORT: refused, unresolvable, timed out, TLS."""
    if isinstance(exc, aiohttp.ClientSSLError):
        return tls_problem(exc, host_port, ca_file)
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return f"cannot connect to the proxy for {host_port}"
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return f"the proxy refused the tunnel to {host_port} (HTTP {exc.status})"
    if isinstance(exc, aiohttp.InvalidURL):
        return "the url cannot be used (its host or port is not valid)"
    if isinstance(exc, aiohttp.ConnectionTimeoutError) or (
        isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.SocketTimeoutError)
    ):
        return f"no connection to {host_port} within {timeout:g}s"
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return f"{host_port} sent no answer within the low_speed_time"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"{host_port} closed the connection before answering"
    if _has(exc, http_exceptions.HttpProcessingError):
        # Parsed a buffer at a time: garbage after a short body fails the headers with it.
        return (
            f"{host_port} sent an answer that is not valid HTTP "
            "(a bad status line, or more bytes than its Content-Length)"
        )
    os_error = getattr(exc, "os_error", None) or (exc if isinstance(exc, OSError) else None)
    if isinstance(os_error, socket.gaierror) or isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve {host_port.rpartition(':')[0].strip('[]')}"
    if isinstance(os_error, ConnectionRefusedError):
        return f"connection refused by {host_port}"
    if isinstance(os_error, OSError) and os_error.errno:
        return f"cannot connect to {host_port}: {_strerror(os_error.errno)}"
    return f"cannot connect to {host_port}"


def body_problem(exc: BaseException, received: int, expected: int | None, window: float) -> str:
    """Why a body stopped short: reset, closed, stalled, or more than announced."""
    if isinstance(exc, TimeoutError):
        return f"no data for {window:g}s after {of_bytes(received, expected)}"
    if _has(exc, http_exceptions.TransferEncodingError):
        return f"the chunked body broke off after {count(received)} bytes"
    if _has(exc, ConnectionResetError):
        return f"connection reset after {of_bytes(received, expected)}"
    if _has(exc, http_exceptions.ContentLengthError):
        return f"the server closed the connection after {of_bytes(received, expected)}"
    if _has(exc, http_exceptions.HttpProcessingError):
        # The parser found bytes where the next answer's status line should start.
        if expected is not None:
            return "the server sent more bytes than its Content-Length"
        return "the server sent a malformed body"
    return f"the server closed the connection after {of_bytes(received, expected)}"


def _strerror(code: int) -> str:
    try:
        return os.strerror(code).lower()
    except ValueError:
        return errno.errorcode.get(code, f"error {code}")
