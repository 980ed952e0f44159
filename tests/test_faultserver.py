"""Checks of the fault-injecting test upstream itself (tests/faultserver.py)."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import sys
import threading
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path

import aiohttp
import pytest
from faultserver import HTML_BODY, Fault, FaultServer, SeenRequest, ThreadedFaultServer

DATA = bytes(range(256)) * 800  # 204800 bytes, more than one server write chunk
TGZ = gzip.compress(b"pretend this is a tar archive\n" * 100, mtime=0)
BODY_ERRORS = (
    aiohttp.ClientPayloadError,
    aiohttp.ClientOSError,
    aiohttp.ServerDisconnectedError,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "data.bin").write_bytes(DATA)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "img.tgz").write_bytes(TGZ)
    (tmp_path / "catalog.json").write_text('{"images": []}\n')
    return tmp_path


@pytest.fixture
async def server(root: Path) -> AsyncIterator[FaultServer]:
    async with FaultServer(root) as srv:
        yield srv


@pytest.fixture
async def session(server: FaultServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(server.url, auto_decompress=False) as sess:
        yield sess


async def read_until_error(resp: aiohttp.ClientResponse) -> tuple[bytes, BaseException | None]:
    """Read the body chunk by chunk; return what arrived and the error that ended it."""
    got = bytearray()
    try:
        async for chunk in resp.content.iter_any():
            got += chunk
    except BODY_ERRORS as exc:
        return bytes(got), exc
    return bytes(got), None


async def test_plain_get_has_validators_and_records_headers(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    """A healthy GET returns the file with Content-Length, ETag, Last-Modified and is counted."""
    headers = {"Accept-Encoding": "identity", "User-Agent": "eumirror-test/1"}
    async with session.get("/data.bin", headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(DATA))
        assert resp.headers["ETag"].startswith('"')
        assert "Last-Modified" in resp.headers
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert await resp.read() == DATA
    async with session.head("/data.bin") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(DATA))
    assert server.requests("/data.bin") == 2
    assert server.bytes_sent("/data.bin") == len(DATA)
    first = server.headers("/data.bin")[0]
    assert first["accept-encoding"] == "identity"
    assert first["User-Agent"] == "eumirror-test/1"
    assert [s.method for s in server.seen("/data.bin")] == ["GET", "HEAD"]


async def test_in_memory_body_and_missing_path(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    """put() serves bytes with the given content type, unknown paths and escapes are 404."""
    server.put("/catalog", b'{"x": 1}', content_type="application/json")
    async with session.get("/catalog") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        assert await resp.read() == b'{"x": 1}'
    async with session.get("/nope") as resp:
        assert resp.status == 404
    async with session.get("/images/../../etc/passwd") as resp:
        assert resp.status == 404
    async with session.get("/images/img.tgz") as resp:
        assert resp.headers["Content-Type"] == "application/gzip"
        assert "Content-Encoding" not in resp.headers
        assert await resp.read() == TGZ


async def test_if_none_match_gives_304(server: FaultServer, session: aiohttp.ClientSession) -> None:
    """A matching If-None-Match is answered 304 without a body."""
    async with session.get("/data.bin") as resp:
        etag = resp.headers["ETag"]
        await resp.read()
    async with session.get("/data.bin", headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304
        assert resp.headers["ETag"] == etag
        assert await resp.read() == b""
    async with session.get("/data.bin", headers={"If-None-Match": '"other"'}) as resp:
        assert resp.status == 200
        await resp.read()
    assert server.headers("/data.bin")[1]["If-None-Match"] == etag


async def test_if_modified_since_gives_304(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    """If-Modified-Since at or after Last-Modified is answered 304, an older date gets 200."""
    server.put("/c", b"abc", last_modified=1_000_000)
    newer = {"If-Modified-Since": formatdate(1_000_000, usegmt=True)}
    async with session.get("/c", headers=newer) as resp:
        assert resp.status == 304
    older = {"If-Modified-Since": formatdate(999_999, usegmt=True)}
    async with session.get("/c", headers=older) as resp:
        assert resp.status == 200
        assert await resp.read() == b"abc"


async def test_range_requests(session: aiohttp.ClientSession) -> None:
    """Single byte ranges give 206 with Content-Range, out-of-range ones 416."""
    async with session.get("/data.bin", headers={"Range": "bytes=1000-"}) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == f"bytes 1000-{len(DATA) - 1}/{len(DATA)}"
        assert await resp.read() == DATA[1000:]
    async with session.get("/data.bin", headers={"Range": "bytes=10-19"}) as resp:
        assert resp.status == 206
        assert await resp.read() == DATA[10:20]
    async with session.get("/data.bin", headers={"Range": "bytes=-5"}) as resp:
        assert await resp.read() == DATA[-5:]
    async with session.get("/data.bin", headers={"Range": f"bytes={len(DATA)}-"}) as resp:
        assert resp.status == 416
        assert resp.headers["Content-Range"] == f"bytes */{len(DATA)}"


async def test_if_range_mismatch_serves_full_body(session: aiohttp.ClientSession) -> None:
    """A Range whose If-Range validator does not match is answered 200 with the full body."""
    async with session.head("/data.bin") as resp:
        etag = resp.headers["ETag"]
    stale = {"Range": "bytes=100-", "If-Range": '"stale"'}
    async with session.get("/data.bin", headers=stale) as resp:
        assert resp.status == 200
        assert await resp.read() == DATA
    fresh = {"Range": "bytes=100-", "If-Range": etag}
    async with session.get("/data.bin", headers=fresh) as resp:
        assert resp.status == 206
        assert await resp.read() == DATA[100:]


async def test_no_range_ignores_range(server: FaultServer, session: aiohttp.ClientSession) -> None:
    """With no_range the server answers 200 with the whole body and no Accept-Ranges."""
    server.set_fault("/data.bin", Fault(no_range=True))
    async with session.get("/data.bin", headers={"Range": "bytes=100-"}) as resp:
        assert resp.status == 200
        assert "Accept-Ranges" not in resp.headers
        assert await resp.read() == DATA
    assert server.headers("/data.bin")[0]["Range"] == "bytes=100-"


async def test_reset_after(server: FaultServer, session: aiohttp.ClientSession) -> None:
    """reset_after aborts the connection after K body bytes, the client sees an error."""
    server.set_fault("/data.bin", Fault(reset_after=5000))
    async with session.get("/data.bin") as resp:
        assert resp.status == 200
        got, error = await read_until_error(resp)
    assert error is not None
    assert len(got) <= 5000
    assert DATA.startswith(got)
    assert server.bytes_sent("/data.bin") == 5000


async def test_truncate_with_content_length(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    """truncate_after sends the full Content-Length but only K bytes, then closes."""
    server.set_fault("/data.bin", Fault(truncate_after=3000))
    async with session.get("/data.bin") as resp:
        assert resp.headers["Content-Length"] == str(len(DATA))
        got, error = await read_until_error(resp)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert got == DATA[:3000]
    assert server.bytes_sent("/data.bin") == 3000


async def test_truncate_chunked(server: FaultServer, session: aiohttp.ClientSession) -> None:
    """A chunked answer cut after K bytes lacks the last chunk, which the client detects."""
    server.set_fault("/data.bin", Fault(framing="chunked", truncate_after=3000))
    async with session.get("/data.bin") as resp:
        assert resp.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in resp.headers
        got, error = await read_until_error(resp)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert got == DATA[:3000]


async def test_truncate_close_framing(server: FaultServer, session: aiohttp.ClientSession) -> None:
    """With framing="close" a truncated body just ends at EOF and looks complete."""
    server.set_fault("/data.bin", Fault(framing="close", truncate_after=3000))
    async with session.get("/data.bin") as resp:
        assert "Content-Length" not in resp.headers
        assert "Transfer-Encoding" not in resp.headers
        assert resp.headers["Connection"] == "close"
        assert await resp.read() == DATA[:3000]


async def test_full_body_close_and_chunked_framing(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    """Without truncation the chunked and close framings deliver the whole body."""
    server.set_fault("/data.bin", Fault(framing="chunked", times=1), Fault(framing="close"))
    for _ in range(2):
        async with session.get("/data.bin") as resp:
            assert "Content-Length" not in resp.headers
            assert await resp.read() == DATA


async def test_content_length_shorter(server: FaultServer, session: aiohttp.ClientSession) -> None:
    """A negative length_delta declares a short Content-Length and drops the extra bytes."""
    server.set_fault("/data.bin", Fault(length_delta=-100))
    async with session.get("/data.bin") as resp:
        assert resp.headers["Content-Length"] == str(len(DATA) - 100)
        assert await resp.read() == DATA[:-100]
    assert server.bytes_sent("/data.bin") == len(DATA) - 100


async def test_content_length_larger(server: FaultServer, session: aiohttp.ClientSession) -> None:
    """A positive length_delta declares more bytes than are sent, so the body comes up short."""
    server.set_fault("/data.bin", Fault(length_delta=7))
    async with session.get("/data.bin") as resp:
        assert resp.headers["Content-Length"] == str(len(DATA) + 7)
        got, error = await read_until_error(resp)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert got == DATA


async def test_replace_body(server: FaultServer, session: aiohttp.ClientSession) -> None:
    """replace_body serves other bytes under the real content's ETag."""
    async with session.head("/data.bin") as resp:
        etag = resp.headers["ETag"]
    server.set_fault("/data.bin", Fault(replace_body=b"garbage"))
    async with session.get("/data.bin") as resp:
        assert resp.headers["ETag"] == etag
        assert resp.headers["Content-Length"] == "7"
        assert await resp.read() == b"garbage"


@pytest.mark.parametrize(
    ("status", "retry_after"), [(404, None), (500, None), (503, "7"), (429, "120")]
)
async def test_status_faults(
    server: FaultServer, session: aiohttp.ClientSession, status: int, retry_after: str | None
) -> None:
    """A status fault answers that status, with Retry-After when one is given."""
    server.set_fault("/data.bin", Fault(status=status, retry_after=retry_after))
    async with session.get("/data.bin") as resp:
        assert resp.status == status
        assert resp.headers.get("Retry-After") == retry_after
        assert str(status).encode() in await resp.read()


async def test_times_and_schedule(server: FaultServer, session: aiohttp.ClientSession) -> None:
    """Faults apply to their first `times` matching requests in turn, then the path heals."""
    server.set_fault("/data.bin", Fault(status=503, times=2), Fault(status=429, times=1))
    statuses = []
    for _ in range(4):
        async with session.get("/data.bin") as resp:
            statuses.append(resp.status)
            await resp.read()
    assert statuses == [503, 503, 429, 200]
    faults = [s.fault for s in server.seen("/data.bin")]
    assert faults[3] is None
    assert faults[0] is not None and faults[0].status == 503


async def test_methods_filter(server: FaultServer, session: aiohttp.ClientSession) -> None:
    """A fault limited to GET leaves HEAD alone and is not used up by it."""
    server.set_fault("/data.bin", Fault(status=500, times=1, methods=("GET",)))
    async with session.head("/data.bin") as resp:
        assert resp.status == 200
    async with session.get("/data.bin") as resp:
        assert resp.status == 500
    assert server.requests("/data.bin") == 2


async def test_drip(server: FaultServer, session: aiohttp.ClientSession) -> None:
    """drip sends the body one byte per drip_interval."""
    server.put("/slow", b"0123456789")
    server.set_fault("/slow", Fault(drip=True, drip_interval=0.01))
    started = time.monotonic()
    chunks = []
    async with session.get("/slow") as resp:
        async for chunk in resp.content.iter_any():
            chunks.append(chunk)
    assert b"".join(chunks) == b"0123456789"
    assert len(chunks) >= 2
    assert time.monotonic() - started >= 9 * 0.01 * 0.5


async def test_endless_body(server: FaultServer, session: aiohttp.ClientSession) -> None:
    """endless keeps streaming past the real size until the client hangs up."""
    server.set_fault("/catalog.json", Fault(endless=True))
    async with session.get("/catalog.json") as resp:
        assert resp.headers["Transfer-Encoding"] == "chunked"
        got = await resp.content.readexactly(1 << 20)
        resp.close()
    assert got.startswith(b'{"images": []}\n{"images": []}\n')
    assert server.bytes_sent("/catalog.json") >= 1 << 20


async def test_gzip_header_on_raw_bytes(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    """gzip_header labels the unchanged .tgz bytes with Content-Encoding: gzip."""
    server.set_fault("/images/img.tgz", Fault(gzip_header=True))
    async with session.get("/images/img.tgz") as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        assert resp.headers["Content-Length"] == str(len(TGZ))
        assert await resp.read() == TGZ


async def test_gzip_body_is_compressed(server: FaultServer, session: aiohttp.ClientSession) -> None:
    """gzip_body really compresses a plain file and ignores Range."""
    server.set_fault("/data.bin", Fault(gzip_body=True))
    async with session.get("/data.bin", headers={"Range": "bytes=5-"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Encoding"] == "gzip"
        assert resp.headers["ETag"].startswith("W/")
        body = await resp.read()
    assert len(body) < len(DATA)
    assert gzip.decompress(body) == DATA


async def test_html_instead_of_content(server: FaultServer, session: aiohttp.ClientSession) -> None:
    """html answers 200 text/html with a captive-portal page."""
    server.set_fault("/images/img.tgz", Fault(html=True))
    async with session.get("/images/img.tgz") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")
        assert await resp.read() == HTML_BODY


async def test_redirect_chain(server: FaultServer, session: aiohttp.ClientSession) -> None:
    """Redirect faults chain from path to path until the real content."""
    server.set_fault("/a", Fault(redirect_to="/b", redirect_status=301))
    server.set_fault("/b", Fault(redirect_to="/data.bin", redirect_status=307))
    async with session.get("/a") as resp:
        assert resp.status == 200
        assert [r.status for r in resp.history] == [301, 307]
        assert await resp.read() == DATA


async def test_redirect_loop(server: FaultServer, session: aiohttp.ClientSession) -> None:
    """A redirect to the path itself loops until the client gives up."""
    server.set_fault("/loop", Fault(redirect_to="/loop"))
    with pytest.raises(aiohttp.TooManyRedirects):
        async with session.get("/loop", max_redirects=5):
            pass
    assert server.requests("/loop") >= 5


async def test_redirect_to_absolute_url(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    """A redirect can point at any absolute URL, e.g. ftp:// or file://."""
    server.set_fault("/x", Fault(redirect_to="ftp://example.invalid/x", times=1))
    server.set_fault("/y", Fault(redirect_to="file:///etc/passwd", redirect_status=302))
    async with session.get("/x", allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == "ftp://example.invalid/x"
    async with session.get("/y", allow_redirects=False) as resp:
        assert resp.headers["Location"] == "file:///etc/passwd"


async def test_gate_freezes_mid_body(server: FaultServer, session: aiohttp.ClientSession) -> None:
    """A gate holds the body after gate_after bytes until the test sets the event."""
    gate = asyncio.Event()
    server.set_fault("/data.bin", Fault(gate=gate, gate_after=1000))
    async with session.get("/data.bin") as resp:
        assert await resp.content.readexactly(1000) == DATA[:1000]
        assert server.bytes_sent("/data.bin") == 1000
        gate.set()
        assert await resp.read() == DATA[1000:]


async def test_stop_releases_frozen_download(root: Path) -> None:
    """stop() finishes promptly even while a handler is held at a gate."""
    gate = asyncio.Event()
    srv = FaultServer(root)
    url = await srv.start()
    srv.set_fault("/data.bin", Fault(gate=gate, gate_after=10))
    async with (
        aiohttp.ClientSession(auto_decompress=False) as sess,
        sess.get(url + "/data.bin") as resp,
    ):
        await resp.content.readexactly(10)
        async with asyncio.timeout(5):
            await srv.stop()
        _, error = await read_until_error(resp)
    assert error is not None
    assert not gate.is_set()


async def test_on_request_and_wait_for_requests(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    """on_request fires when the fault is applied and wait_for_requests sees the request."""
    arrived = asyncio.Event()
    calls: list[SeenRequest] = []
    server.set_fault(
        "/data.bin", Fault(on_request=arrived, times=1), Fault(on_request=calls.append)
    )
    task = asyncio.create_task(session.get("/data.bin"))
    await server.wait_for_requests("/data.bin", 1, timeout=5)
    async with asyncio.timeout(5):
        await arrived.wait()
    async with await task as resp:
        await resp.read()
    async with session.get("/data.bin", headers={"Range": "bytes=1-"}) as resp:
        await resp.read()
    assert [c.headers["Range"] for c in calls] == ["bytes=1-"]
    with pytest.raises(TimeoutError):
        await server.wait_for_requests("/data.bin", 3, timeout=0.01)


async def test_delay_headers(server: FaultServer, session: aiohttp.ClientSession) -> None:
    """delay_headers holds back the status line so a client read timeout fires."""
    server.set_fault("/data.bin", Fault(delay_headers=30))
    with pytest.raises(asyncio.TimeoutError):
        async with session.get("/data.bin", timeout=aiohttp.ClientTimeout(sock_read=0.05)):
            pass


async def test_composed_faults(server: FaultServer, session: aiohttp.ClientSession) -> None:
    """Faults compose: a gzip-labelled, dripped, ranged answer truncated after a few bytes."""
    server.set_fault(
        "/images/img.tgz",
        Fault(gzip_header=True, drip=True, drip_interval=0.001, truncate_after=5),
    )
    async with session.get("/images/img.tgz", headers={"Range": "bytes=2-"}) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Encoding"] == "gzip"
        got, error = await read_until_error(resp)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert got == TGZ[2:7]


def test_threaded_server(root: Path) -> None:
    """ThreadedFaultServer serves synchronous clients and its methods work across threads."""
    gate = threading.Event()
    with ThreadedFaultServer(root) as srv:
        srv.set_fault("/data.bin", Fault(gate=gate, gate_after=100, times=1))
        host, port = srv.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("GET", "/data.bin", headers={"Accept-Encoding": "identity"})
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.read(100) == DATA[:100]
            srv.wait_for_requests("/data.bin", 1, timeout=5)
            assert srv.bytes_sent("/data.bin") == 100
            gate.set()
            assert resp.read() == DATA[100:]
            resp.close()
        finally:
            conn.close()
        assert srv.requests("/data.bin") == 1
        assert srv.headers("/data.bin")[0]["Accept-Encoding"] == "identity"
        srv.reset_counters()
        assert srv.requests() == 0
        assert srv.bytes_sent() == 0


async def test_separate_process(root: Path, tmp_path: Path) -> None:
    """The module runs as a script with --fault, a port file and a JSON control API."""
    port_file = tmp_path / "port"
    script = Path(__file__).with_name("faultserver.py")
    fault = json.dumps([{"status": 503, "times": 1, "retry_after": "1"}])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        "--root",
        str(root),
        "--port-file",
        str(port_file),
        "--fault",
        f"/data.bin={fault}",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            url = (await proc.stdout.readline()).decode().strip()
        assert url == f"http://127.0.0.1:{int(port_file.read_text())}"
        async with aiohttp.ClientSession(url, auto_decompress=False) as sess:
            async with sess.get("/data.bin") as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == "1"
            async with sess.get("/data.bin") as resp:
                assert await resp.read() == DATA
            control = {"path": "/data.bin", "faults": [{"truncate_after": 10}]}
            async with sess.post("/__faultserver__/fault", json=control) as resp:
                assert resp.status == 200
            async with sess.get("/data.bin") as resp:
                got, error = await read_until_error(resp)
            assert got == DATA[:10]
            assert isinstance(error, aiohttp.ClientPayloadError)
            async with sess.get("/__faultserver__/stats", params={"path": "/data.bin"}) as resp:
                stats = await resp.json()
            assert stats["requests"] == 3
            assert stats["bytes_sent"] == len(b"503 Service Unavailable\n") + len(DATA) + 10
    finally:
        if proc.returncode is None:
            proc.terminate()
        async with asyncio.timeout(20):
            await proc.communicate()
    assert proc.returncode == 0
