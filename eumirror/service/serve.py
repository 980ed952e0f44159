"""The content server: `<root>` over HTTP, like Pulp's content app (aiohttp).

Only the published layout is answered (service/paths.py decides from the raw path). A file is
reached by opening each component below the root with O_NOFOLLOW relative to the folder above,
so a symlink is never followed unawares and the headers come from one fstat of the very file that
is sent: a catalog replaced by rename mid-request is sent whole, old or new, never a mix. The body
goes to the kernel's sendfile (service/sendfile.py). No state is read per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import html
import os
import signal
import ssl
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from ..core.config import UPSTREAM_NAME, Config, Serve
from ..core.errors import ConfigError, EumirrorError
from ..log import debug_enabled, log
from .conditional import decide, http_date
from .paths import NAME, Route, route
from .sendfile import Outcome, Sender

HASH_CHUNK = 1 << 20
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)


class HttpCounters(Collector):
    """Plain counters (no lock per request), rendered into the status endpoint's /metrics."""

    def __init__(self) -> None:
        self.requests: dict[int, int] = {}
        self.sent_bytes = 0

    def count(self, code: int, sent: int) -> None:
        self.requests[code] = self.requests.get(code, 0) + 1
        self.sent_bytes += sent

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "eumirror_http_requests", "Requests answered by the content server.", labels=["code"]
        )
        for code, count in sorted(self.requests.items()):
            requests.add_metric([str(code)], float(count))
        yield requests
        sent = CounterMetricFamily(
            "eumirror_http_sent_bytes", "Body bytes the content server sent (files only)."
        )
        sent.add_metric([], float(self.sent_bytes))
        yield sent


class ContentApp:
    """The request handler over one root."""

    def __init__(self, root: Path, *, send_timeout: float, counters: HttpCounters) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self.send_timeout = send_timeout
        self.counters = counters
        self.debug = debug_enabled()
        self.sender = Sender(send_timeout)
        self._root_fd = -1
        self._etags: dict[tuple[int, ...], str] = {}
        self._hashing: dict[tuple[int, ...], asyncio.Future[str]] = {}

    def close(self) -> None:
        self.sender.close()
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        began = time.monotonic()
        sent = 0
        status = 500
        try:
            if request.method not in ("GET", "HEAD"):
                resp: web.StreamResponse = web.Response(
                    status=405, text="only GET and HEAD\n", headers={"Allow": "GET, HEAD"}
                )
                status = 405
            else:
                resp, sent, status = await self._answer(request)
            return resp
        finally:
            self.counters.count(status, sent)
            if self.debug:
                log.debug(
                    "http_request",
                    method=request.method,
                    path=request.raw_path,
                    status=status,
                    sent=sent,
                    remote=request.remote,
                    seconds=round(time.monotonic() - began, 6),
                )

    async def _answer(self, request: web.BaseRequest) -> tuple[web.StreamResponse, int, int]:
        """The response, the body bytes sent, and the status to count (499: the client went
        away, or was dropped as too slow, before the body was sent)."""
        found = route(request.raw_path)
        if found is None:
            return _not_found(), 0, 404
        if found.kind == "redirect":
            location = f"/{quote(found.upstream)}/"
            return web.Response(status=301, headers={"Location": location}), 0, 301
        if found.kind in ("index", "listing"):
            page = await asyncio.to_thread(self._listing, found)
            if page is None:
                return _not_found(), 0, 404
            return web.Response(text=page, content_type="text/html", charset="utf-8"), 0, 200
        opened = self._open(found.parts)
        if opened is None:
            return _not_found(), 0, 404
        fd, st = opened
        try:
            return await self._send(request, found, fd, st)
        finally:
            os.close(fd)

    # -- files ------------------------------------------------------------------------------
    def _root(self) -> int:
        if self._root_fd < 0:
            self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return self._root_fd

    def _open(self, parts: tuple[str, ...]) -> tuple[int, os.stat_result] | None:
        """Open a published file without following symlinks; one that is a symlink (or passes
        through one) is served only if it resolves inside the root's published part."""
        opened: list[int] = []
        try:
            folder = self._root()
            for part in parts[:-1]:
                folder = os.open(part, _OPEN_DIR, dir_fd=folder)
                opened.append(folder)
            fd = os.open(parts[-1], _OPEN_FILE, dir_fd=folder)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                return self._open_linked(parts)
            return None
        finally:
            for folder in opened:
                os.close(folder)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        return fd, st

    def _open_linked(self, parts: tuple[str, ...]) -> tuple[int, os.stat_result] | None:
        real = os.path.realpath(os.path.join(self.root, *parts))
        inside = os.path.relpath(real, self.real_root)
        pieces = inside.split(os.sep)
        if inside.startswith("..") or any(p.startswith(".") for p in pieces):
            return None
        try:
            fd = os.open(real, _OPEN_FILE)
        except OSError:
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        return fd, st

    async def _etag(self, found: Route, fd: int, st: os.stat_result) -> str:
        """Tarballs: inode, mtime and size (a path holds one name's bytes forever). Catalogs: a
        hash of the bytes, cached per file version, so unchanged bytes keep their ETag even if
        rewritten, and a new catalog of the same size in the same clock tick gets a new one."""
        if not found.is_catalog:
            return f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"'
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if (etag := self._etags.get(key)) is not None:
            return etag
        pending = self._hashing.get(key)
        if pending is None:
            pending = asyncio.ensure_future(asyncio.to_thread(_hash_fd, os.dup(fd)))
            self._hashing[key] = pending
            try:
                etag = await asyncio.shield(pending)
            finally:
                self._hashing.pop(key, None)
            if len(self._etags) > 256:
                self._etags.clear()
            self._etags[key] = etag
            return etag
        return await asyncio.shield(pending)

    async def _send(
        self, request: web.BaseRequest, found: Route, fd: int, st: os.stat_result
    ) -> tuple[web.StreamResponse, int, int]:
        etag = await self._etag(found, fd, st)
        answer = decide(request.headers, etag=etag, mtime=st.st_mtime, size=st.st_size)
        headers = {
            "ETag": etag,
            "Last-Modified": http_date(st.st_mtime),
            "Accept-Ranges": "bytes",
        }
        if found.is_catalog:
            headers["Cache-Control"] = "no-cache"
        if answer.status == 304:
            return web.Response(status=304, headers=headers), 0, 304
        if answer.status == 416:
            headers["Content-Range"] = f"bytes */{st.st_size}"
            return web.Response(status=416, headers=headers), 0, 416
        headers["Content-Type"] = (
            "application/json" if found.is_catalog else "application/octet-stream"
        )
        if answer.status == 206:
            headers["Content-Range"] = f"bytes {answer.start}-{answer.end - 1}/{st.st_size}"
        resp = web.StreamResponse(status=answer.status, headers=headers)
        resp.content_length = answer.end - answer.start
        await resp.prepare(request)
        if request.method == "HEAD" or answer.end == answer.start:
            return resp, 0, answer.status
        transport = request.transport
        if transport is None:
            return resp, 0, 499
        sent, outcome = await self.sender.send(transport, fd, answer.start, answer.end)
        if outcome is not Outcome.DONE:
            if outcome is Outcome.SLOW:
                log.info(
                    "http_client_too_slow",
                    remote=request.remote,
                    path=request.raw_path,
                    sent=sent,
                    send_timeout=self.send_timeout,
                )
            transport.abort()
            return resp, sent, 499  # aiohttp's write_eof on the closed transport is quiet
        await resp.write_eof()
        return resp, sent, answer.status

    # -- listings ---------------------------------------------------------------------------
    def _listing(self, found: Route) -> str | None:
        """The HTML listing of `/` (upstream folders) or `/<U>/` (catalog and tarballs)."""
        if found.kind == "index":
            title = "/"
            links = [(f"{quote(u)}/", f"{u}/") for u in self._upstreams()]
        else:
            base = os.path.join(self.root, found.upstream)
            if os.path.islink(base) or not os.path.isdir(base):
                return None
            title = f"/{found.upstream}/"
            links = list(_upstream_files(base))
        rows = "\n".join(
            f'<li><a href="{html.escape(h)}">{html.escape(t)}</a></li>' for h, t in links
        )
        name = html.escape(title)
        return (
            f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Index of {name}</title>'
            f"</head>\n<body><h1>Index of {name}</h1>\n<ul>\n{rows}\n</ul></body></html>\n"
        )

    def _upstreams(self) -> list[str]:
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return []
        return sorted(
            e.name
            for e in entries
            if UPSTREAM_NAME.match(e.name) and e.is_dir(follow_symlinks=False)
        )


def _upstream_files(base: str) -> Iterator[tuple[str, str]]:
    if os.path.isfile(os.path.join(base, "catalog")):
        yield "catalog", "catalog"
    with contextlib.suppress(OSError), os.scandir(os.path.join(base, "images")) as names:
        for folder in sorted(names, key=lambda e: e.name):
            if not NAME.match(folder.name) or not folder.is_dir(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError), os.scandir(folder.path) as files:
                for entry in sorted(files, key=lambda e: e.name):
                    if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                        continue
                    rel = f"images/{folder.name}/{entry.name}"
                    yield f"images/{folder.name}/{quote(entry.name, safe='')}", rel


def _hash_fd(fd: int) -> str:
    """A strong ETag from the bytes of an open file (the fd is closed here)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(fd, "rb", buffering=0) as f:
        offset = 0
        while chunk := os.pread(f.fileno(), HASH_CHUNK, offset):
            digest.update(chunk)
            offset += len(chunk)
    return f'"{digest.hexdigest()}"'


def _not_found() -> web.Response:
    return web.Response(status=404, text="not found\n")


class _Busy(asyncio.Protocol):
    """A connection over the limit: told 503 and closed, without an HTTP handler at all."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_BUSY)
        transport.close()


class LimitedServer(web.Server):
    """aiohttp's low-level server with a bound on open connections: one over the bound is
    answered 503 and closed at once (a slow client holds its one connection, never more)."""

    def __init__(self, handler: Any, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections

    def __call__(self) -> Any:
        """The protocol for a new connection (asyncio calls this once per accepted socket)."""
        if len(self.connections) >= self.max_connections:
            return _Busy()
        return super().__call__()


class ContentServer:
    """The listening site of `[serve]`: start, reload the TLS certificate, stop."""

    def __init__(self, root: Path, serve: Serve, counters: HttpCounters | None = None) -> None:
        self.serve = serve
        self.counters = counters or HttpCounters()
        self.app = ContentApp(root, send_timeout=serve.send_timeout, counters=self.counters)
        self.tls: ssl.SSLContext | None = None
        self.runner: web.ServerRunner | None = None
        self.listen = ""

    async def start(self) -> str:
        if self.serve.tls_cert is not None:
            self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._load_tls()
        server = LimitedServer(
            self.app.handle,
            max_connections=self.serve.max_connections,
            keepalive_timeout=self.serve.idle_timeout,
            access_log=None,  # ours is the `http_request` event
        )
        # Stopping waits for answers in flight only briefly (a stop must be prompt), and the
        # backlog takes a burst of clients at once as nginx's does (511), not aiohttp's 128.
        self.runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=2.0)
        await self.runner.setup()
        site = web.TCPSite(
            self.runner, self.serve.host, self.serve.port, ssl_context=self.tls, backlog=1024
        )
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise EumirrorError(
                f"cannot listen on {self.serve.host}:{self.serve.port}: {exc.strerror}",
                hint="change [serve] listen or stop what uses the port",
            ) from None
        host, port = self.runner.addresses[0][0], self.runner.addresses[0][1]
        self.listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        scheme = "https" if self.tls else "http"
        log.info("serve_listening", listen=self.listen, url=f"{scheme}://{self.listen}/")
        return self.listen

    def _load_tls(self) -> None:
        assert self.tls is not None and self.serve.tls_cert and self.serve.tls_key
        try:
            self.tls.load_cert_chain(self.serve.tls_cert, self.serve.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise EumirrorError(
                f"cannot load [serve] tls_cert {self.serve.tls_cert} / tls_key "
                f"{self.serve.tls_key}: {exc}",
                hint="check that both files exist, are readable and belong together",
            ) from None

    def reload_tls(self) -> None:
        """On SIGHUP: new handshakes use the certificate now on disk; a bad one keeps the old."""
        if self.tls is None:
            return
        try:
            self._load_tls()
        except EumirrorError as exc:
            log.error("tls_reload_failed", error=exc.line(), kept="previous certificate")
            return
        log.info("tls_reloaded", cert=str(self.serve.tls_cert))

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        self.app.close()


async def run_serve(config: Config) -> int:
    """`eumirror serve`: the content server without syncing, until SIGTERM/SIGINT (exit 0);
    SIGHUP reloads the TLS certificate."""
    if config.serve is None:
        raise ConfigError(
            f"{config.path}: serve: no [serve] section",
            hint='add [serve] listen = "0.0.0.0:8080"',
        )
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    server = ContentServer(config.root, config.serve)
    await server.start()
    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload_tls)
    try:
        await stopping.wait()
        log.info("stopping")
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        await server.stop()
    log.info("stopped")
    return 0
