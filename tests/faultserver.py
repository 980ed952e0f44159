"""Fault-injecting HTTP upstream for the eumirror test suite.

The server is built on :mod:`aiohttp.web`, listens on 127.0.0.1 (port 0 by default) and
serves files below ``root`` plus in-memory bodies registered with :meth:`FaultServer.put`.
Healthy answers carry Content-Length, ETag and Last-Modified, honour conditional requests
(If-None-Match / If-Modified-Since -> 304) and single byte ranges (206, If-Range, 416).

Per URL path a schedule of :class:`Fault` objects can be installed; each fault applies to
the first ``times`` matching requests (``None``: forever), then the next fault in the
schedule takes over, and once all are used up the path is served normally again.

Three ways to run it:

* ``async with FaultServer(root) as srv:`` inside the test's event loop;
* ``with ThreadedFaultServer(root) as srv:`` in a private thread and loop, for synchronous
  tests that drive the CLI as a subprocess (every public method is thread-safe);
* ``python tests/faultserver.py --root DIR --port-file F [--fault PATH=JSON ...]`` as a
  separate process, which prints its base URL on stdout and exposes a small JSON control
  API below ``/__faultserver__/`` (``stats``, ``fault``, ``reset``, ``put``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gzip
import hashlib
import http
import inspect
import json
import os
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "CONTROL_PREFIX",
    "HTML_BODY",
    "Fault",
    "FaultServer",
    "SeenRequest",
    "ThreadedFaultServer",
    "main",
    "self_signed",
    "server_context",
]

Framing = Literal["length", "chunked", "close"]
Gate = asyncio.Event | threading.Event
RequestHook = Callable[["SeenRequest"], object]

CONTROL_PREFIX = "/__faultserver__/"
HTML_BODY = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>"
    b"<body><p>Captive portal: please sign in to continue.</p></body></html>\n"
)
_CHUNK = 64 * 1024
_ENDLESS_FILLER = b"\0" * _CHUNK
_CONTENT_TYPES = {
    ".json": "application/json",
    ".tgz": "application/gzip",
    ".gz": "application/gzip",
    ".tar": "application/x-tar",
    ".txt": "text/plain; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".xml": "application/xml",
}


@dataclass(frozen=True)
class Fault:
    """What to do wrong for one path; fields compose, see each comment for precedence.

    Whole-answer substitutes are checked in the order ``redirect_to``, ``status``,
    ``html``, then the real content; the body/framing/delivery faults apply to whatever
    answer was chosen.
    """

    # --- scheduling -------------------------------------------------------------------
    times: int | None = None
    """Apply to the first N matching requests, then fall through; None: always."""
    methods: tuple[str, ...] = ("GET", "HEAD")
    """Requests with other methods are served normally and do not use up ``times``."""
    on_request: Gate | RequestHook | None = None
    """Event to set (or callable(SeenRequest), may be async) when the fault is applied."""
    delay_headers: float = 0.0
    """Server-side sleep before the status line is sent (time-to-first-byte)."""

    # --- whole-answer substitutes -----------------------------------------------------
    redirect_to: str | None = None
    """Answer a redirect with this Location (a path, the path itself, or any URL)."""
    redirect_status: int = 302
    status: int | None = None
    """Answer this status (404/500/503/429...) with a short text/plain body."""
    retry_after: str | None = None
    """Retry-After header value, added to whatever answer is sent."""
    html: bool = False
    """Answer 200 text/html (:data:`HTML_BODY`) instead of the content."""

    # --- content alterations ----------------------------------------------------------
    replace_body: bytes | None = None
    """Serve these bytes instead of the content (validators stay those of the content)."""
    content_type: str | None = None
    """Override the Content-Type header."""
    gzip_header: bool = False
    """Add ``Content-Encoding: gzip`` but send the bytes unchanged (e.g. a .tgz as-is)."""
    gzip_body: bool = False
    """Really gzip the body, with ``Content-Encoding: gzip``, weak ETag, no ranges."""
    no_range: bool = False
    """Ignore Range/If-Range: always 200 with the full body, no Accept-Ranges."""
    no_conditional: bool = False
    """Ignore If-None-Match/If-Modified-Since: never answer 304."""

    # --- framing ----------------------------------------------------------------------
    framing: Framing = "length"
    """``length``: Content-Length; ``chunked``; ``close``: neither, end = connection close."""
    length_delta: int = 0
    """Declared Content-Length = real length + delta (framing="length" only). Negative:
    the extra bytes are dropped; positive: the body is sent and the connection closed."""

    # --- delivery ---------------------------------------------------------------------
    truncate_after: int | None = None
    """Send only the first K body bytes, then close the connection (FIN)."""
    reset_after: int | None = None
    """Send the first K body bytes, then abort the connection with a TCP RST."""
    gate: Gate | None = None
    """Wait for this event after ``gate_after`` body bytes (headers already sent)."""
    gate_after: int = 0
    drip: bool = False
    """Send one byte per ``drip_interval`` seconds."""
    drip_interval: float = 1.0
    endless: bool = False
    """Repeat the body forever (chunked unless framing="close") until the client leaves."""
    excess: bytes = b""
    """Written raw after the body (framing="length"), past the declared Content-Length, then
    the connection is closed: a server that sends more than it announced."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.times is not None and self.times < 0:
            problems.append("times must be >= 0 or None")
        if not 300 <= self.redirect_status <= 399:
            problems.append("redirect_status must be a 3xx code")
        if self.status is not None and not 100 <= self.status <= 599:
            problems.append("status must be an HTTP status code")
        if self.framing not in ("length", "chunked", "close"):
            problems.append("framing must be 'length', 'chunked' or 'close'")
        for name in ("truncate_after", "reset_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                problems.append(f"{name} must be >= 0")
        if self.gate_after < 0:
            problems.append("gate_after must be >= 0")
        if self.drip_interval < 0 or self.delay_headers < 0:
            problems.append("drip_interval and delay_headers must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Build a fault from JSON-ish data (``replace_body`` as str is UTF-8 encoded)."""
        allowed = {f.name for f in dataclasses.fields(cls)} - {"gate", "on_request"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown or unsupported Fault fields: {sorted(unknown)}")
        kwargs = dict(data)
        if isinstance(kwargs.get("replace_body"), str):
            kwargs["replace_body"] = kwargs["replace_body"].encode()
        if "methods" in kwargs:
            kwargs["methods"] = tuple(str(m).upper() for m in kwargs["methods"])
        return cls(**kwargs)


_NO_FAULT = Fault()


@dataclass(frozen=True)
class SeenRequest:
    """One request as received by the server."""

    method: str
    path: str
    query_string: str
    headers: CIMultiDictProxy[str]
    fault: Fault | None


@dataclass(frozen=True)
class _Content:
    size: int
    etag: str
    last_modified: int
    content_type: str
    data: bytes | None = None
    file: Path | None = None

    def read_all(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.file is not None
        return self.file.read_bytes()


@dataclass(frozen=True)
class _Body:
    content: _Content
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


class _BodyReader:
    """Blocking reader over a body slice; local file reads are small and fast."""

    def __init__(self, body: _Body, *, endless: bool) -> None:
        if endless and body.content.data is None and body.size <= _CHUNK:
            # Wrapping around a small file would mean thousands of tiny reads per chunk.
            data = body.content.read_all()[body.start : body.end]
            body = _Body(dataclasses.replace(body.content, data=data, file=None), 0, len(data))
        self._body = body
        self._endless = endless
        self._pos = body.start
        self._fh: IO[bytes] | None = None

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes, b"" at the end; endless bodies wrap around (filling ``n``)."""
        if not self._endless:
            return self._read_once(n)
        if self._body.size == 0:
            return _ENDLESS_FILLER[:n]
        out = bytearray()
        while len(out) < n:
            if self._pos >= self._body.end:
                self._pos = self._body.start
            piece = self._read_once(n - len(out))
            if not piece:  # the file shrank under us
                return bytes(out) or _ENDLESS_FILLER[:n]
            out += piece
        return bytes(out)

    def _read_once(self, n: int) -> bytes:
        body = self._body
        n = min(n, body.end - self._pos)
        if n <= 0:
            return b""
        if body.content.data is not None:
            piece = body.content.data[self._pos : self._pos + n]
        else:
            if self._fh is None:
                assert body.content.file is not None
                self._fh = body.content.file.open("rb")
            self._fh.seek(self._pos)
            piece = self._fh.read(n)
        self._pos += len(piece)
        return piece

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclass
class _Schedule:
    faults: tuple[Fault, ...]
    used: list[int]


class _Stats:
    """Request/byte counters, safe to read from any thread and to wait on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._seen: dict[str, list[SeenRequest]] = {}
        self._bytes: dict[str, int] = {}
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def record(self, seen: SeenRequest) -> None:
        with self._cond:
            self._seen.setdefault(seen.path, []).append(seen)
            self._cond.notify_all()
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is already closed
                loop.call_soon_threadsafe(event.set)

    def add_bytes(self, path: str, n: int) -> None:
        with self._cond:
            self._bytes[path] = self._bytes.get(path, 0) + n

    def requests(self, path: str | None) -> int:
        with self._cond:
            if path is None:
                return sum(len(v) for v in self._seen.values())
            return len(self._seen.get(path, ()))

    def bytes_sent(self, path: str | None) -> int:
        with self._cond:
            if path is None:
                return sum(self._bytes.values())
            return self._bytes.get(path, 0)

    def seen(self, path: str) -> list[SeenRequest]:
        with self._cond:
            return list(self._seen.get(path, ()))

    def reset(self) -> None:
        with self._cond:
            self._seen.clear()
            self._bytes.clear()

    def wait_sync(self, path: str, n: int, timeout: float) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._seen.get(path, ())) >= n, timeout):
                got = len(self._seen.get(path, ()))
                raise TimeoutError(f"{path}: {got} request(s) after {timeout}s, wanted {n}")

    async def wait_async(self, path: str, n: int) -> None:
        key = (asyncio.get_running_loop(), asyncio.Event())
        with self._cond:
            self._waiters.add(key)
        try:
            while True:
                key[1].clear()
                if self.requests(path) >= n:
                    return
                await key[1].wait()
        finally:
            with self._cond:
                self._waiters.discard(key)


def _norm(path: str) -> str:
    return path if path.startswith("/") else "/" + path


def _strong_etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:20] + '"'


def _http_date(ts: int) -> str:
    return formatdate(ts, usegmt=True)


def _parse_http_date(value: str) -> int | None:
    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _etag_list_matches(header: str, etag: str) -> bool:
    """Weak comparison, as RFC 9110 requires for If-None-Match."""
    if header.strip() == "*":
        return True
    mine = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == mine for tag in header.split(","))


def _if_range_matches(value: str, etag: str, last_modified: int) -> bool:
    value = value.strip()
    if value.startswith(('"', "W/")):
        return not value.startswith("W/") and not etag.startswith("W/") and value == etag
    return _parse_http_date(value) == last_modified


_UNSATISFIABLE: Literal["unsatisfiable"] = "unsatisfiable"


def _parse_range(header: str, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """Return (start, end) exclusive, "unsatisfiable", or None to ignore the header."""
    unit, _, spec = header.partition("=")
    spec = spec.strip()
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # other units and multi-range requests: serve the full body
    first, dash, last = spec.partition("-")
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return _UNSATISFIABLE
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return _UNSATISFIABLE
    end = min(int(last) + 1, size) if last else size
    return start, end


def _guess_type(name: str) -> str:
    return _CONTENT_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


def _rst(transport: asyncio.Transport) -> None:
    """Abort so that the kernel sends RST instead of FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _abandoned(request: web.BaseRequest) -> web.StreamResponse:
    """Drop the connection; aiohttp's own attempt to answer then fails silently."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response()


class FaultServer:
    """The fault-injecting server, run inside the current event loop.

    All public synchronous methods are thread-safe.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        control: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.root = Path(root).resolve() if root is not None else None
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.control = control
        self._lock = threading.Lock()
        self._bodies: dict[str, _Content] = {}
        self._faults: dict[str, _Schedule] = {}
        self._stats = _Stats()
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self._url: str | None = None

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> str:
        """Start listening; return the base URL (``http://127.0.0.1:PORT``)."""
        if self._runner is not None:
            raise RuntimeError("FaultServer already started")
        self._closing = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=self.ssl_context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        scheme = "https" if self.ssl_context is not None else "http"
        self._url = f"{scheme}://{self.host}:{self.port}"
        return self._url

    async def stop(self) -> None:
        """Release every gate/drip/endless stream, drop connections and stop listening."""
        if self._closing is not None:
            self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """Base URL without trailing slash."""
        if self._url is None:
            raise RuntimeError("FaultServer not started")
        return self._url

    def url_for(self, path: str) -> str:
        return self.url + _norm(path)

    # --- content and faults -----------------------------------------------------------
    def put(
        self,
        path: str,
        body: bytes,
        content_type: str = "application/octet-stream",
        *,
        etag: str | None = None,
        last_modified: float | None = None,
    ) -> None:
        """Serve ``body`` at ``path`` (takes precedence over files below root).

        The ETag defaults to a hash of the body and Last-Modified to now; pass
        ``last_modified`` when a test re-puts a path within the same second and relies
        on If-Modified-Since.
        """
        lm = int(time.time() if last_modified is None else last_modified)
        content = _Content(
            size=len(body),
            etag=etag if etag is not None else _strong_etag(body),
            last_modified=lm,
            content_type=content_type,
            data=bytes(body),
        )
        with self._lock:
            self._bodies[_norm(path)] = content

    def remove(self, path: str) -> None:
        """Forget an in-memory body registered with :meth:`put`."""
        with self._lock:
            self._bodies.pop(_norm(path), None)

    def set_fault(self, path: str, *faults: Fault | None) -> None:
        """Install a schedule of faults for ``path`` (none, or None: serve normally).

        Each fault serves its ``times`` matching requests in turn; use counts restart.
        """
        schedule = tuple(f for f in faults if f is not None)
        with self._lock:
            if schedule:
                self._faults[_norm(path)] = _Schedule(schedule, [0] * len(schedule))
            else:
                self._faults.pop(_norm(path), None)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # --- counters ---------------------------------------------------------------------
    def requests(self, path: str | None = None) -> int:
        """Requests received for ``path`` (any method, HEAD included); None: all paths."""
        return self._stats.requests(None if path is None else _norm(path))

    def bytes_sent(self, path: str | None = None) -> int:
        """Body bytes handed to the socket for ``path`` (headers excluded); None: all."""
        return self._stats.bytes_sent(None if path is None else _norm(path))

    def seen(self, path: str) -> list[SeenRequest]:
        """Every request for ``path`` in arrival order."""
        return self._stats.seen(_norm(path))

    def headers(self, path: str) -> list[CIMultiDictProxy[str]]:
        """Request headers (case-insensitive mappings) for ``path`` in arrival order."""
        return [s.headers for s in self.seen(path)]

    def reset_counters(self) -> None:
        self._stats.reset()

    async def wait_for_requests(
        self,
        path: str,
        n: int = 1,
        timeout: float = 10.0,  # noqa: ASYNC109 - a default bound so a broken test fails
    ) -> None:
        """Wait until at least ``n`` requests for ``path`` have arrived (TimeoutError)."""
        try:
            async with asyncio.timeout(timeout):
                await self._stats.wait_async(_norm(path), n)
        except TimeoutError:
            got = self.requests(path)
            raise TimeoutError(f"{path}: {got} request(s) after {timeout}s, wanted {n}") from None

    # --- request handling -------------------------------------------------------------
    def _take_fault(self, path: str, method: str) -> Fault | None:
        with self._lock:
            schedule = self._faults.get(path)
            if schedule is None:
                return None
            for i, fault in enumerate(schedule.faults):
                if fault.times is not None and schedule.used[i] >= fault.times:
                    continue
                if method not in fault.methods:
                    return None
                schedule.used[i] += 1
                return fault
            return None

    def _lookup(self, path: str) -> _Content | None:
        with self._lock:
            content = self._bodies.get(path)
        if content is not None or self.root is None:
            return content
        target = (self.root / path.lstrip("/")).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        st = target.stat()
        return _Content(
            size=st.st_size,
            etag=f'"{st.st_size:x}-{st.st_mtime_ns:x}"',
            last_modified=int(st.st_mtime),
            content_type=_guess_type(target.name),
            file=target,
        )

    async def _pause(self, seconds: float) -> bool:
        """Sleep; return True early if the server is stopping."""
        assert self._closing is not None
        try:
            async with asyncio.timeout(seconds):
                await self._closing.wait()
        except TimeoutError:
            return False
        return True

    async def _wait_gate(self, gate: Gate, request: web.BaseRequest) -> bool:
        """Wait for ``gate``; False if the server stops or the client leaves first."""
        assert self._closing is not None
        if isinstance(gate, asyncio.Event):
            waiters = {
                asyncio.ensure_future(gate.wait()),
                asyncio.ensure_future(self._closing.wait()),
            }
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waiters:
                    task.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)
            return gate.is_set() and not self._closing.is_set()
        # A threading.Event cannot wake an event loop: poll it (server side only).
        while not gate.is_set():
            transport = request.transport
            if transport is None or transport.is_closing() or await self._pause(0.002):
                return False
        return not self._closing.is_set()

    async def _flush(self, request: web.BaseRequest) -> None:
        """Let the kernel take every buffered byte (bounded), before an RST drops it."""
        for _ in range(2000):
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            if transport.get_write_buffer_size() == 0 or await self._pause(0.001):
                return

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if self.control and path.startswith(CONTROL_PREFIX):
            return await self._handle_control(request, path.removeprefix(CONTROL_PREFIX))
        fault = self._take_fault(path, request.method)
        seen = SeenRequest(request.method, path, request.query_string, request.headers, fault)
        self._stats.record(seen)
        f = fault or _NO_FAULT
        hook = f.on_request
        if isinstance(hook, asyncio.Event | threading.Event):
            hook.set()
        elif hook is not None:
            result = hook(seen)
            if inspect.isawaitable(result):
                await result
        if f.delay_headers and await self._pause(f.delay_headers):
            return _abandoned(request)

        headers: CIMultiDict[str] = CIMultiDict()
        if f.retry_after is not None:
            headers["Retry-After"] = f.retry_after
        if request.method not in ("GET", "HEAD"):
            headers["Allow"] = "GET, HEAD"
            return await self._send_text(request, 405, headers, f)
        if f.redirect_to is not None:
            headers["Location"] = f.redirect_to
            return await self._send_text(request, f.redirect_status, headers, f)
        if f.status is not None:
            return await self._send_text(request, f.status, headers, f)
        if f.html:
            headers["Content-Type"] = "text/html; charset=utf-8"
            return await self._send_text(request, 200, headers, f, HTML_BODY)

        content = self._lookup(path)
        if content is None:
            if f.replace_body is None:
                return await self._send_text(request, 404, headers, f)
            content = self._memory(f.replace_body)
        etag, last_modified = content.etag, content.last_modified
        if f.replace_body is not None:
            content = dataclasses.replace(
                content, size=len(f.replace_body), data=f.replace_body, file=None
            )
        if f.gzip_body:
            data = gzip.compress(content.read_all(), mtime=0)
            content = dataclasses.replace(content, size=len(data), data=data, file=None)
            etag = "W/" + etag.removeprefix("W/")
        headers["Content-Type"] = f.content_type or content.content_type
        headers["ETag"] = etag
        headers["Last-Modified"] = _http_date(last_modified)
        if f.gzip_header or f.gzip_body:
            headers["Content-Encoding"] = "gzip"
        ranges_ok = not (f.no_range or f.gzip_body)
        if ranges_ok:
            headers["Accept-Ranges"] = "bytes"

        if not f.no_conditional:
            inm = request.headers.get("If-None-Match")
            ims = request.headers.get("If-Modified-Since")
            if inm is not None:
                not_modified = _etag_list_matches(inm, etag)
            elif ims is not None:
                ims_ts = _parse_http_date(ims)
                not_modified = ims_ts is not None and last_modified <= ims_ts
            else:
                not_modified = False
            if not_modified:
                del headers["Content-Type"]
                headers.popall("Content-Encoding", None)
                return await self._deliver(request, 304, headers, None, f)

        body = _Body(content, 0, content.size)
        status = 200
        range_header = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if (
            ranges_ok
            and range_header is not None
            and (if_range is None or _if_range_matches(if_range, etag, last_modified))
        ):
            parsed = _parse_range(range_header, content.size)
            if parsed == _UNSATISFIABLE:
                headers["Content-Range"] = f"bytes */{content.size}"
                return await self._send_text(request, 416, headers, f, b"")
            if isinstance(parsed, tuple):
                start, end = parsed
                status = 206
                body = _Body(content, start, end)
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{content.size}"
        return await self._deliver(request, status, headers, body, f)

    @staticmethod
    def _memory(data: bytes, content_type: str = "application/octet-stream") -> _Content:
        return _Content(
            size=len(data),
            etag=_strong_etag(data),
            last_modified=int(time.time()),
            content_type=content_type,
            data=data,
        )

    async def _send_text(
        self,
        request: web.BaseRequest,
        status: int,
        headers: CIMultiDict[str],
        f: Fault,
        text: bytes | None = None,
    ) -> web.StreamResponse:
        if text is None:
            try:
                phrase = http.HTTPStatus(status).phrase
            except ValueError:
                phrase = "Fault"
            location = headers.get("Location")
            text = f"{status} {phrase}\n".encode()
            if location is not None:
                text += f"Redirecting to {location}\n".encode()
        headers.setdefault("Content-Type", f.content_type or "text/plain; charset=utf-8")
        return await self._deliver(
            request, status, headers, _Body(self._memory(text), 0, len(text)), f
        )

    async def _deliver(
        self,
        request: web.BaseRequest,
        status: int,
        headers: CIMultiDict[str],
        body: _Body | None,
        f: Fault,
    ) -> web.StreamResponse:
        path = request.path
        resp = web.StreamResponse(status=status, headers=headers)
        framing = f.framing
        if f.endless and framing == "length":
            framing = "chunked"
        size = body.size if body is not None else 0
        declared: int | None = None
        if body is not None:
            if framing == "length":
                declared = max(0, size + f.length_delta)
                resp.content_length = declared
            elif framing == "chunked":
                resp.enable_chunked_encoding()
            else:  # "close": no Content-Length, no chunking, the close ends the body
                resp.force_close()
                resp._length_check = False
        try:
            await resp.prepare(request)
        except ConnectionError:
            return resp
        if body is None or request.method == "HEAD":
            with contextlib.suppress(ConnectionError):
                await resp.write_eof()
            return resp

        limit: int | None = None if f.endless else size
        for cap in (f.truncate_after, f.reset_after, declared):
            if cap is not None:
                limit = cap if limit is None else min(limit, cap)
        gate_at = f.gate_after if f.gate is not None else None
        step = 1 if f.drip else _CHUNK
        assert self._closing is not None
        sent = 0
        reader = _BodyReader(body, endless=f.endless)
        try:
            while True:
                if self._closing.is_set():
                    return _abandoned(request)
                if gate_at is not None and sent >= gate_at:
                    gate_at = None
                    assert f.gate is not None
                    if not await self._wait_gate(f.gate, request):
                        return _abandoned(request)
                if limit is not None and sent >= limit:
                    break
                want = step
                if limit is not None:
                    want = min(want, limit - sent)
                if gate_at is not None:
                    want = min(want, gate_at - sent)
                piece = reader.read(want)
                if not piece:
                    break
                if f.drip and sent and await self._pause(f.drip_interval):
                    return _abandoned(request)
                # Count first: a client in another thread may see the bytes at once.
                self._stats.add_bytes(path, len(piece))
                try:
                    await resp.write(piece)
                except ConnectionError:  # the client went away
                    self._stats.add_bytes(path, -len(piece))
                    return resp
                sent += len(piece)
        finally:
            reader.close()

        transport = request.transport
        if transport is None:
            return resp
        if f.excess:
            with contextlib.suppress(ConnectionError):
                await resp.write_eof()
            transport.write(f.excess)
            self._stats.add_bytes(path, len(f.excess))
            transport.close()
            return resp
        if f.reset_after is not None:
            await self._flush(request)
            _rst(transport)
            return resp
        expected = declared if declared is not None else size
        if sent < expected:
            transport.close()  # flushes what was written, then FIN: a short body
            return resp
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    async def _handle_control(self, request: web.Request, action: str) -> web.StreamResponse:
        try:
            if action == "stats" and request.method == "GET":
                path = request.query.get("path")
                stats: dict[str, Any] = {
                    "requests": self.requests(path),
                    "bytes_sent": self.bytes_sent(path),
                }
                if path is not None:
                    stats["headers"] = [dict(h) for h in self.headers(path)]
                return web.json_response(stats)
            if action == "fault" and request.method == "POST":
                data = await request.json()
                faults = [Fault.from_dict(d) for d in data.get("faults", [])]
                self.set_fault(str(data["path"]), *faults)
                return web.json_response({"ok": True})
            if action == "reset" and request.method == "POST":
                self.reset_counters()
                self.clear_faults()
                return web.json_response({"ok": True})
            if action == "put" and request.method == "POST":
                ctype = request.query.get("content_type", "application/octet-stream")
                self.put(request.query["path"], await request.read(), ctype)
                return web.json_response({"ok": True})
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"error": f"unknown control action {action!r}"}, status=404)


class ThreadedFaultServer:
    """A :class:`FaultServer` running in its own thread and event loop.

    For synchronous tests (e.g. ones that run the CLI as a subprocess). Every method is
    thread-safe. Use ``threading.Event`` for ``Fault.gate`` / ``Fault.on_request`` here:
    an ``asyncio.Event`` belongs to one loop and must not be set from another thread.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        control: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.server = FaultServer(
            root, host=host, port=port, control=control, ssl_context=ssl_context
        )
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> str:
        """Start the thread and the server; return the base URL."""
        if self._thread is not None:
            raise RuntimeError("ThreadedFaultServer already started")
        self._thread = threading.Thread(target=self._run, name="faultserver", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("fault server thread did not start")
        if self._error is not None:
            self._thread.join(timeout)
            raise RuntimeError("fault server failed to start") from self._error
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (releasing gates) and join the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stop_event = self._loop, self._stop_event
        if loop is not None and stop_event is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError("fault server thread did not stop")

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start()
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        await self.server.start()
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await self.server.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.server.url

    def url_for(self, path: str) -> str:
        return self.server.url_for(path)

    def put(
        self,
        path: str,
        body: bytes,
        content_type: str = "application/octet-stream",
        *,
        etag: str | None = None,
        last_modified: float | None = None,
    ) -> None:
        self.server.put(path, body, content_type, etag=etag, last_modified=last_modified)

    def remove(self, path: str) -> None:
        self.server.remove(path)

    def set_fault(self, path: str, *faults: Fault | None) -> None:
        self.server.set_fault(path, *faults)

    def clear_faults(self) -> None:
        self.server.clear_faults()

    def requests(self, path: str | None = None) -> int:
        return self.server.requests(path)

    def bytes_sent(self, path: str | None = None) -> int:
        return self.server.bytes_sent(path)

    def seen(self, path: str) -> list[SeenRequest]:
        return self.server.seen(path)

    def headers(self, path: str) -> list[CIMultiDictProxy[str]]:
        return self.server.headers(path)

    def reset_counters(self) -> None:
        self.server.reset_counters()

    def wait_for_requests(self, path: str, n: int = 1, timeout: float = 10.0) -> None:
        """Block until at least ``n`` requests for ``path`` arrived (TimeoutError)."""
        self.server._stats.wait_sync(_norm(path), n, timeout)


# --- command line ------------------------------------------------------------------------
def self_signed(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate and key for ``host`` (an IP address or a name), via openssl."""
    import ipaddress
    import subprocess

    try:
        ipaddress.ip_address(host)
        san = f"IP:{host}"
    except ValueError:
        san = f"DNS:{host}"
    cert, key = folder / f"{host}.cert.pem", folder / f"{host}.key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", f"/CN={host}", "-addext", f"subjectAltName={san}"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side TLS context serving ``cert``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def _write_port_file(path: str, port: int) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="ascii") as fh:
        fh.write(f"{port}\n")
    os.replace(tmp, path)


def _parse_fault_arg(spec: str) -> tuple[str, list[Fault]]:
    path, sep, raw = spec.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"expected PATH=JSON, got {spec!r}")
    data = json.loads(raw)
    items: Sequence[Mapping[str, Any]] = data if isinstance(data, list) else [data]
    return path, [Fault.from_dict(d) for d in items]


async def _serve(args: argparse.Namespace) -> None:
    srv = FaultServer(args.root, host=args.host, port=args.port, control=True)
    for path, faults in args.fault:
        srv.set_fault(path, *faults)
    url = await srv.start()
    try:
        if args.port_file:
            _write_port_file(args.port_file, srv.port)
        print(url, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await srv.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", help="directory to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write the chosen port here (atomically)")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        type=_parse_fault_arg,
        metavar="PATH=JSON",
        help='e.g. /catalog=\'{"status": 503, "times": 2, "retry_after": "1"}\' or a list',
    )
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
