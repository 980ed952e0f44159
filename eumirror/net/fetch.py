"""The one HTTP seam: limits, redirects, retries, address rules, and streaming into a sink.

Every transfer goes through `Fetcher`, so no caller can forget the catalog size cap, the low-speed
abort, the redirect rules or the address filter. Each request names the trust of the upstream it
serves (`Upstream.trust`) and goes out through that upstream's own channel (net/channel.py).
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import email.utils
import functools
import itertools
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urljoin, urlsplit

import aiofiles
import aiofiles.os
import aiohttp
from aiohttp.abc import AbstractResolver

from ..core.config import Limits
from ..core.errors import CatalogError, FetchError, first_error
from ..core.names import CHUNK
from ..core.policy import HTTP_SCHEMES, Source, Trust, redact
from ..log import log
from ..tuning import enabled
from . import messages
from .channel import Channel, open_channel
from .proxy import Proxies, from_environment
from .ratelimit import bucket_for
from .resolver import AddressRefused

MAX_REDIRECTS = 5
MAX_RETRY_AFTER = 120.0
REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class Validators:
    etag: str | None = None
    last_modified: str | None = None

    def if_range(self) -> str | None:
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


class Sink(Protocol):
    """Where streamed bytes go; it can say how much it already holds (to resume)."""

    offset: int

    async def write_batch(self, chunks: list[bytes]) -> None: ...

    async def write_last(self, chunks: list[bytes]) -> None:
        """The final batch: the sink may hold it and write it after the download returns."""

    async def restart(self) -> None: ...

    def expect(self, remaining: int, validators: Validators) -> None:
        """Called once the response headers are in: may refuse (no space)."""


class Segment(Protocol):
    """One ranged part of a download, written at its own offset (not hashed as it arrives)."""

    offset: int
    """The next byte to write (absolute)."""
    end: int

    async def write(self, chunks: list[bytes]) -> None: ...


@runtime_checkable
class SplitSink(Sink, Protocol):
    """A sink that can take one download over several connections: the first range streams
    in and is hashed as it arrives; the others are written at their offsets and hashed, in
    order, from what was written, once the bytes before them are."""

    async def split(self, bounds: list[tuple[int, int]]) -> list[Segment]: ...

    async def hash_segments(self, segments: list[Segment]) -> None: ...

    async def unsplit(self) -> None:
        """The split attempt ended early: keep only the hashed prefix, to go on from it."""

    async def drain(self) -> None: ...


PIECE = 16 << 20
"""A split tarball comes in pieces of this much, taken in order by its connections: the bytes
arrive roughly in order, so hashing them in order follows closely instead of waiting for the
first of a few long ranges (on a real link each piece costs a round trip: not much smaller)."""
SEGMENT_BATCH = 256 << 10
"""A piece's bytes are written this much at a time: with 32 connections open, 1 MiB batches
held up to 32 MiB more (peak RSS). Also the read buffer of a piece's response: aiohttp holds up
to twice it before it stops reading (plus one socket read), so the session's 1 MiB let 32
connections, each capped by the link but read faster than they were written, hold up to 96 MiB
(link runs peaked at 156-182 MiB in 3 of 18, against 120-130 in the rest)."""
SEGMENT_ALIGN = 1 << 20
"""Piece boundaries: whole aligned blocks, so the first range's direct writes end clean."""


def segment_bounds(
    start: int, end: int, connections: int, split_above: int = 2 * PIECE
) -> list[tuple[int, int]]:
    """[start, end) in pieces of about PIECE bytes, cut on SEGMENT_ALIGN boundaries; one range
    when it is not above `split_above` or takes one connection."""
    if connections < 2 or end - start <= split_above:
        return [(start, end)]
    cuts = [start]
    cut = -(-(start + PIECE) // SEGMENT_ALIGN) * SEGMENT_ALIGN
    while cut < end:
        cuts.append(cut)
        cut += PIECE
    cuts.append(end)
    return list(itertools.pairwise(cuts))


class _Changed(Exception):
    """A ranged request got the whole tarball back: it changed since the download began."""


@dataclass
class CatalogFetch:
    body: bytes | bytearray | None
    """None when the upstream answered 'not modified'."""
    etag: str | None
    last_modified: str | None


@dataclass
class _Prefix:
    """The validators of the response that produced the bytes a sink holds: a retry within
    one download() resumes with them."""

    validators: Validators


def _larger_socket_reads() -> None:
    """asyncio reads a socket 256 KiB at a time; 1 MiB reads cut the per-read cost on the one
    thread that moves every byte (measured: 2 GiB of big tarballs 12 % faster). A class
    attribute of CPython's selector transport; left alone where it does not exist."""
    if not enabled("big-reads"):
        return
    transport = getattr(asyncio.selector_events, "_SelectorSocketTransport", None)
    if transport is not None and getattr(transport, "max_size", CHUNK) < CHUNK:
        transport.max_size = CHUNK


def settled(last_modified: str | None, date: str | None) -> bool:
    """A Last-Modified at least 2 s older than the answer: the one-second resolution of the
    header cannot hide a change made in the same second, so it is safe to revalidate with."""
    try:
        modified = email.utils.parsedate_to_datetime(last_modified or "").timestamp()
        now = email.utils.parsedate_to_datetime(date).timestamp() if date else time.time()
    except (TypeError, ValueError, IndexError):
        return False
    return now - modified >= 2


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter: about 0.5 s, 1 s, 2 s, ... capped at 30 s."""
    return float(min(30.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0))


class Fetcher:
    """Every transfer of a run; each request goes out through its upstream's own channel."""

    def __init__(
        self,
        limits: Limits,
        *,
        on_bytes: Callable[[int], None] | None = None,
        environ: Mapping[str, str] | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.limits = limits
        self.on_bytes = on_bytes or (lambda n: None)
        self._environ = os.environ if environ is None else environ
        self._resolver = resolver
        self._channels: dict[Trust, Channel] = {}
        self._proxies: Proxies | None = None
        self._entered = False

    async def __aenter__(self) -> Fetcher:
        _larger_socket_reads()
        self._entered = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._entered = False
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()

    def channel(self, trust: Trust) -> Channel:
        """The channel of one upstream's trust, opened on first use."""
        found = self._channels.get(trust)
        if found is None:
            assert self._entered, "use Fetcher as an async context manager"
            found = open_channel(trust, self.limits, self._environment, self._resolver)
            self._channels[trust] = found
        return found

    def _environment(self) -> Proxies:
        """The environment's proxies, read once per Fetcher (when a first channel opens)."""
        if self._proxies is None:
            self._proxies = from_environment(self._environ)
        return self._proxies

    # -- retries ----------------------------------------------------------------------------
    async def _with_retries(self, what: str, attempt_once: Callable[[], Awaitable[Any]]) -> Any:
        attempt = 0
        while True:
            try:
                return await attempt_once()
            except FetchError as exc:
                if not exc.transient or attempt >= self.limits.retries:
                    raise
                delay = exc.retry_after if exc.retry_after is not None else backoff(attempt)
                attempt += 1
                log.info(
                    "retry", what=what, attempt=attempt, delay=round(delay, 2), reason=exc.message
                )
                await asyncio.sleep(delay)

    # -- requests ---------------------------------------------------------------------------
    async def _open(
        self,
        channel: Channel,
        url: str,
        headers: dict[str, str],
        where: str,
        *,
        read_bufsize: int | None = None,
    ) -> _Opened:
        """GET with our redirect rules: a hop limit, http(s) only, never https to http; every
        hop passes the upstream's address rule (its channel's resolver, or admit() before a
        proxy).

        `where` starts each message ('catalog URL' or '' when the caller names the url).
        """
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            label = where if current == url else _join(where, f"redirected to {_show(current)}")
            try:
                options = await channel.admit(current, headers)
            except AddressRefused as exc:
                raise FetchError(_join(label, str(exc.strerror))) from None
            except OSError:  # our own lookup, before a proxy
                host = urlsplit(current).hostname or "?"
                raise FetchError(_join(label, f"cannot resolve {host}"), transient=True) from None
            try:
                resp = await channel.session.get(
                    current, allow_redirects=False, read_bufsize=read_bufsize, **options
                )
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, AddressRefused):
                    raise FetchError(_join(label, str(exc.os_error.strerror))) from None
                raise self._connect_failed(exc, current, label, channel) from None
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise self._connect_failed(exc, current, label, channel) from None
            if resp.status not in REDIRECTS:
                return _Opened(resp, label)
            location = resp.headers.get("Location", "")
            resp.release()
            target = urljoin(current, location)
            scheme = urlsplit(target).scheme.lower()
            if not location or scheme not in HTTP_SCHEMES:
                raise FetchError(_join(label, "redirects to an url that is not http(s)"))
            if urlsplit(current).scheme.lower() == "https" and scheme == "http":
                raise FetchError(_join(label, "redirects from https to http; refused"))
            current = target
        raise FetchError(_join(where, f"more than {MAX_REDIRECTS} redirects"))

    def _connect_failed(
        self, exc: BaseException, url: str, label: str, channel: Channel
    ) -> FetchError:
        sentence = messages.connect_problem(
            exc,
            _host_port(url),
            ca_file=channel.trust.ca_file,
            timeout=self.limits.connect_timeout,
        )
        permanent = isinstance(exc, aiohttp.ClientSSLError | aiohttp.InvalidURL)
        return FetchError(_join(label, sentence), transient=not permanent)

    async def _stream(
        self, opened: _Opened, *, stop: int | None = None, tarball: bool = True
    ) -> AsyncIterator[bytes]:
        """Body chunks with curl's low-speed rule: under N bytes/s for T seconds aborts.
        `stop`: only the first this many bytes (the rest of the body is left unread).
        A catalog's bytes (`tarball=False`) are not the progress's: its sizes are tarballs'."""
        resp = opened.response
        limit, window = self.limits.low_speed_limit, self.limits.low_speed_time
        started = time.monotonic()
        seen = total = 0
        bucket = bucket_for(self.limits)  # [limits] max_rate; None (no cost) when unset
        try:
            while True:
                # Chunks as they arrived: read(n) would join them into a copy first.
                chunk, _ = await resp.content.readchunk()
                if not chunk:
                    break
                last = False
                if stop is not None and total + len(chunk) >= stop:
                    chunk, last = chunk[: stop - total], True
                if bucket is not None:
                    started += await bucket.take(len(chunk))  # our own wait is not slowness
                seen += len(chunk)
                total += len(chunk)
                if tarball:
                    self.on_bytes(len(chunk))
                yield chunk
                if last:
                    return  # the rest of the body stays unread (the connection is closed)
                elapsed = time.monotonic() - started
                if elapsed >= window:
                    if seen / elapsed < limit:
                        raise FetchError(
                            _join(
                                opened.where,
                                f"slower than {limit} bytes/s for {window:g}s after "
                                f"{messages.of_bytes(total, resp.content_length)}; aborted",
                            ),
                            transient=True,
                        )
                    started, seen = time.monotonic(), 0
        except (
            aiohttp.ClientPayloadError,
            aiohttp.ClientConnectionError,
            aiohttp.ClientResponseError,
            TimeoutError,
            OSError,
        ) as exc:
            sentence = messages.body_problem(exc, total, resp.content_length, window)
            raise FetchError(_join(opened.where, sentence), transient=True) from None
        expected = resp.content_length
        if expected is not None and total < expected:
            raise FetchError(
                _join(
                    opened.where,
                    "the server closed the connection after " + messages.of_bytes(total, expected),
                ),
                transient=True,
            )

    # -- catalogs ---------------------------------------------------------------------------
    async def fetch_catalog(
        self,
        source: Source,
        known: Validators,
        on_changed: Callable[[], None] = lambda: None,
        *,
        trust: Trust | None = None,
    ) -> CatalogFetch:
        """The catalog, or a body of None when unchanged; `on_changed` is called as soon as it is
        known that a new body is coming (so the caller can start work that needs it).

        `trust` is the upstream's (Upstream.trust); without it only the catalog's host is."""
        if source.is_file:
            return await self._file_catalog(source, known, on_changed)
        channel = self.channel(trust or Trust(hosts=frozenset({source.host})))
        result: CatalogFetch = await self._with_retries(
            redact(source.url), lambda: self._http_catalog(channel, source.url, known, on_changed)
        )
        return result

    async def _http_catalog(
        self, channel: Channel, url: str, known: Validators, on_changed: Callable[[], None]
    ) -> CatalogFetch:
        headers: dict[str, str] = {}
        if known.etag:
            headers["If-None-Match"] = known.etag
        if known.last_modified:
            headers["If-Modified-Since"] = known.last_modified
        cap = self.limits.catalog_max_bytes
        where = f"catalog {_show(url)}"
        opened = await self._open(channel, url, headers, where)
        resp = opened.response
        async with resp:
            if resp.status == 304 and (known.etag or known.last_modified):
                return CatalogFetch(None, known.etag, known.last_modified)
            _raise_for_status(resp, opened.where)
            on_changed()
            kind = resp.headers.get("Content-Type", "")
            if kind.split(";", 1)[0].strip().lower() == "text/html":
                raise _html_page(where, kind)
            if resp.content_length is not None and resp.content_length > cap:
                raise CatalogError(
                    f"{where} is {messages.count(resp.content_length)} bytes, "
                    f"more than catalog_max_bytes ({messages.count(cap)})"
                )
            body = bytearray()
            async for chunk in self._stream(opened, tarball=False):
                body += chunk
                if len(body) > cap:
                    raise CatalogError(
                        f"{where} is larger than catalog_max_bytes ({messages.count(cap)}); refused"
                    )
            if body[:64].lstrip()[:1] == b"<":
                raise _html_page(where, kind)
            etag = resp.headers.get("ETag")
            modified = resp.headers.get("Last-Modified")
            if not etag and not settled(modified, resp.headers.get("Date")):
                modified = None
            return CatalogFetch(body, etag, modified)

    async def _file_catalog(
        self, source: Source, known: Validators, on_changed: Callable[[], None]
    ) -> CatalogFetch:
        path = Path(unquote(urlsplit(source.url).path))
        try:
            st = await aiofiles.os.stat(path)
            if st.st_size > self.limits.catalog_max_bytes:
                raise CatalogError(
                    f"catalog {path} is {st.st_size} bytes, more than "
                    f"catalog_max_bytes ({self.limits.catalog_max_bytes})"
                )
            tag = f'"{st.st_size}-{st.st_mtime_ns}"'
            if known.etag == tag:
                return CatalogFetch(None, tag, None)
            on_changed()
            async with aiofiles.open(path, "rb") as f:
                body = await f.read(self.limits.catalog_max_bytes + 1)
        except OSError as exc:
            raise FetchError(
                f"cannot read catalog {path}: {exc.strerror}",
                hint="check the path and that the media is mounted",
            ) from None
        if len(body) > self.limits.catalog_max_bytes:
            raise CatalogError(f"catalog {path} grew past catalog_max_bytes while read")
        return CatalogFetch(body, tag, None)

    # -- tarballs ---------------------------------------------------------------------------
    async def download(
        self, url: str, sink: Sink, known: Validators, *, trust: Trust
    ) -> Validators:
        """Stream `url` into `sink`, resuming from `sink.offset` when the upstream allows it.

        `trust` is the upstream's (Upstream.trust): its hosts are the only non-public ones
        this request, or any redirect of it, may reach. A retry resumes from what the failed
        attempt delivered, validated with the validators of the response that produced those
        bytes (not the caller's, which may be older).
        """
        if url.startswith("file:"):
            await self._file_download(url, sink)
            return Validators()
        channel = self.channel(trust)
        prefix = _Prefix(known)
        result: Validators = await self._with_retries(
            redact(url), lambda: self._http_download(channel, url, sink, prefix)
        )
        return result

    async def _http_download(
        self, channel: Channel, url: str, sink: Sink, prefix: _Prefix
    ) -> Validators:
        headers: dict[str, str] = {}
        if sink.offset and (if_range := prefix.validators.if_range()):
            headers["Range"] = f"bytes={sink.offset}-"
            headers["If-Range"] = if_range
        opened = await self._open(channel, url, headers, "")
        resp = opened.response
        async with resp:
            if resp.status == 416 and sink.offset:
                if _complete_length(resp.headers.get("Content-Range", "")) == sink.offset:
                    return prefix.validators  # the prefix is the whole file (a long header)
                await sink.restart()
                raise FetchError(
                    _join(opened.where, "the kept partial no longer fits; starting over"),
                    transient=True,
                    retry_after=0.0,
                )
            _raise_for_status(resp, opened.where)
            got = Validators(resp.headers.get("ETag"), resp.headers.get("Last-Modified"))
            if resp.status == 206:
                start = _range_start(resp.headers.get("Content-Range", ""))
                if start != sink.offset:
                    await sink.restart()
                    raise FetchError(
                        _join(opened.where, "unexpected Content-Range; starting over"),
                        transient=True,
                    )
                if not (got.etag or got.last_modified):
                    got = prefix.validators  # the same representation, as If-Range said
            elif sink.offset:
                await sink.restart()
            prefix.validators = got  # what the bytes written from here on belong to
            sink.expect(resp.content_length or 0, got)
            bounds = self._split(resp, sink, got)
            if len(bounds) > 1:
                assert isinstance(sink, SplitSink)
                await self._segmented(channel, url, opened, sink, bounds, got)
                return got
            await _pump(self._stream(opened), sink)
            return got

    def _split(
        self, resp: aiohttp.ClientResponse, sink: Sink, got: Validators
    ) -> list[tuple[int, int]]:
        """The ranges to fetch this response's bytes over, when a big tarball may be split:
        the server takes ranges, names the bytes with a strong validator, and sends them
        unencoded."""
        length = resp.content_length
        limits = self.limits
        # One connection (most tarballs): decided before the isinstance check on a runtime
        # Protocol, which costs tens of microseconds a call, every download of a 100k mirror.
        if not length or limits.connections_per_download < 2 or length <= limits.split_above:
            return []
        if (
            not isinstance(sink, SplitSink)
            or resp.headers.get("Content-Encoding", "identity").lower() != "identity"
            or not got.if_range()
            or (resp.status == 200 and resp.headers.get("Accept-Ranges", "").lower() != "bytes")
        ):
            return []
        return segment_bounds(
            sink.offset, sink.offset + length, limits.connections_per_download, limits.split_above
        )

    async def _segmented(
        self,
        channel: Channel,
        url: str,
        opened: _Opened,
        sink: SplitSink,
        bounds: list[tuple[int, int]],
        got: Validators,
    ) -> None:
        """The first piece from this response (hashed as it arrives); the others taken in order
        by the download's other connections, each retried from what it wrote, and hashed in
        order from what was written as soon as the bytes before them are."""
        validator = got.if_range() or ""
        segments = await sink.split(bounds[1:])
        first = bounds[0][1] - bounds[0][0]
        pieces = iter(segments)

        async def connection() -> None:
            for segment in pieces:
                await self._with_retries(
                    redact(url), functools.partial(self._fill, channel, url, segment, validator)
                )

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.limits.connections_per_download - 1, len(segments))):
                    group.create_task(connection())
                await _pump(self._stream(opened, stop=first), sink, hold_last=False)
                await sink.drain()
                await sink.hash_segments(segments)
        except BaseException as exc:
            await sink.unsplit()
            cause = first_error(exc)
            if isinstance(cause, _Changed):
                await sink.restart()
                raise FetchError(
                    _join(opened.where, "the tarball changed during the download; starting over"),
                    transient=True,
                    retry_after=0.0,
                ) from None
            if cause is not exc and isinstance(cause, Exception):
                raise cause from None
            raise

    async def _fill(self, channel: Channel, url: str, segment: Segment, validator: str) -> None:
        """One range into its segment, from what the segment already holds."""
        headers = {"Range": f"bytes={segment.offset}-{segment.end - 1}", "If-Range": validator}
        opened = await self._open(channel, url, headers, "", read_bufsize=SEGMENT_BATCH)
        resp = opened.response
        async with resp:
            _raise_for_status(resp, opened.where)
            if resp.status != 206:
                raise _Changed()
            if _range_start(resp.headers.get("Content-Range", "")) != segment.offset:
                raise FetchError(_join(opened.where, "unexpected Content-Range"), transient=True)
            batch: list[bytes] = []
            size = 0
            try:
                async for chunk in self._stream(opened, stop=segment.end - segment.offset):
                    batch.append(chunk)
                    size += len(chunk)
                    if size >= SEGMENT_BATCH:
                        await segment.write(batch)
                        batch, size = [], 0
            finally:
                if batch:
                    await segment.write(batch)
            if segment.offset < segment.end:
                raise FetchError(
                    _join(opened.where, "a range ended early"), transient=True, retry_after=0.0
                )

    async def _file_download(self, url: str, sink: Sink) -> None:
        path = Path(unquote(urlsplit(url).path))
        await sink.restart()

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async with aiofiles.open(path, "rb") as f:
                    while chunk := await f.read(CHUNK):
                        self.on_bytes(len(chunk))
                        yield chunk
            except OSError as exc:
                raise FetchError(f"cannot read {path}: {exc.strerror}") from None

        await _pump(chunks(), sink)


async def _pump(chunks: AsyncIterator[bytes], sink: Sink, *, hold_last: bool = True) -> int:
    """Batch chunks to about 1 MiB and let the sink hash and write one batch while we read on.

    When the transfer breaks, what did arrive is still written: it is a valid prefix to resume.
    """
    pending: asyncio.Future[None] | None = None
    batch: list[bytes] = []
    size = total = 0
    try:
        async for chunk in chunks:
            batch.append(chunk)
            size += len(chunk)
            total += len(chunk)
            if size >= CHUNK:
                if pending is not None:
                    await pending
                pending = asyncio.ensure_future(sink.write_batch(batch))
                batch, size = [], 0
    except FetchError:
        if pending is not None:
            await pending
            pending = None
        if batch:
            await sink.write_batch(batch)
        raise
    finally:
        if pending is not None and not pending.done():
            await asyncio.wait([pending])
    if pending is not None:
        await pending
    if batch:
        await (sink.write_last(batch) if hold_last else sink.write_batch(batch))
    return total


@dataclass
class _Opened:
    """A response and the words its messages start with (which url, which redirect hop)."""

    response: aiohttp.ClientResponse
    where: str


def _join(where: str, sentence: str) -> str:
    return messages.clip(f"{where}: {sentence}" if where else sentence)


def _show(url: str) -> str:
    """An url as a message shows it: credentials hidden, a very long one shortened."""
    return messages.shorten(redact(url))


def _host_port(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        return "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _html_page(where: str, kind: str) -> CatalogError:
    shown = messages.printable(kind) or "none"
    return CatalogError(
        f"{where} is an HTML page (Content-Type {shown}), not a catalog",
        hint="check the url and any login page or captive portal in between",
    )


def _range_start(content_range: str) -> int:
    try:
        unit, _, rest = content_range.partition(" ")
        return int(rest.split("-", 1)[0]) if unit == "bytes" else -1
    except ValueError:
        return -1


def _complete_length(content_range: str) -> int:
    """N of a 416's `Content-Range: bytes */N`, or -1."""
    unit, _, rest = content_range.partition(" ")
    size = rest.partition("/")[2]
    return int(size) if unit == "bytes" and size.isdigit() else -1


def _raise_for_status(resp: aiohttp.ClientResponse, where: str) -> None:
    if resp.status in (200, 206):
        return
    status = f"HTTP {resp.status} {messages.printable(resp.reason or '')}".rstrip()
    if resp.status == 429 or resp.status >= 500:
        wait = retry_after_seconds(resp.headers.get("Retry-After"))
        if wait is not None and wait > MAX_RETRY_AFTER:
            raise FetchError(
                _join(where, f"{status}, asked to retry after {wait:.0f}s"),
                hint="the next scheduled sync will try again",
            )
        raise FetchError(_join(where, status), transient=True, retry_after=wait)
    raise FetchError(_join(where, status))
