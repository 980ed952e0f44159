"""`eumirror serve` against a real synced root: the contract's serving rules, driven with curl,
http.client (paths sent exactly as written) and aiohttp."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Upstream, name_of, run_cli, tarball, write_config
from faultserver import ThreadedFaultServer
from serving import Process, serve_section

from eumirror.storage.fs import Mirror as Store

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")
BIG = 16 << 20


class Served:
    """A synced root and the `eumirror serve` process that serves it."""

    def __init__(self, root: Path, proc: Process) -> None:
        self.root = root
        self.proc = proc
        self.base = proc.base()
        self.catalog_bytes = (root / "up" / "catalog").read_bytes()
        self.catalog: dict[str, Any] = json.loads(self.catalog_bytes)

    def url_of(self, file_name: str) -> str:
        """The published relative url of the image whose file name is `file_name`."""
        for image in self.catalog["images"]:
            if image["url"].rsplit("/", 1)[-1] == file_name:
                return str(image["url"])
        raise KeyError(file_name)

    def path_of(self, file_name: str) -> Path:
        from urllib.parse import unquote

        return self.root / "up" / unquote(self.url_of(file_name))


def synced_root(folder: Path, *, big: bool = False) -> Path:
    """A real mirror: a loopback upstream synced by `eumirror sync --once`."""
    upstream = Upstream(folder / "upstream")
    upstream.folder.mkdir(parents=True)
    upstream.add("starter/a.tgz", tarball(1, 10_000))
    upstream.add("odd/<b>&x.tgz", tarball(2), url="odd/%3Cb%3E%26x.tgz")
    if big:
        upstream.add("big/big.tgz", tarball(3, BIG))
    upstream.write()
    root = folder / "mirror"
    with ThreadedFaultServer(upstream.folder) as server:
        config = write_config(
            folder / "sync.toml", root=root, upstreams={"up": f"{server.url}/catalog"}
        )
        done = run_cli("sync", "--once", "--config", str(config))
    assert done.returncode == 0, done.stderr
    return root


def start_serve(folder: Path, root: Path, **serve: Any) -> Process:
    config = folder / "serve.toml"
    config.write_text(f"[mirror]\nroot = {json.dumps(str(root))}\n" + serve_section(**serve))
    proc = Process("serve", config)
    proc.address()
    return proc


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("served")
    root = synced_root(folder)
    # Bait: files that exist and must never be served.
    (root / ".eumirror" / "secret").write_text("state\n")
    outside = folder / "outside"
    outside.mkdir()
    (outside / "catalog").write_text('{"images": []}\n')
    (outside / "passwd").write_text("root:x:0:0\n")
    (root / "escape").symlink_to(outside)
    bad = root / "up" / "images" / "0000000001"
    bad.mkdir()
    (bad / "passwd").symlink_to(outside / "passwd")
    (bad / "secret").symlink_to("../../../.eumirror/secret")  # inside the root, but unpublished
    (root / "alias").symlink_to("up")
    proc = start_serve(folder, root)
    try:
        yield Served(root, proc)
    finally:
        proc.kill()


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    assert CURL is not None
    return subprocess.run([CURL, "-sS", *args], capture_output=True, timeout=30, check=False)


def test_catalog_and_tarball_get_and_head(served: Served) -> None:
    """GET answers the bytes on disk with the right type and length; HEAD the same headers."""
    proc = served.proc
    code, headers, body = proc.request("GET", "/up/catalog")
    assert code == 200
    assert body == (served.root / "up" / "catalog").read_bytes()
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert headers["etag"].startswith('"') and headers["last-modified"].endswith("GMT")
    code, head, body = proc.request("HEAD", "/up/catalog")
    assert code == 200 and body == b""
    assert head["content-length"] == headers["content-length"]
    assert head["etag"] == headers["etag"]
    url = served.url_of("a.tgz")
    code, headers, body = proc.request("GET", f"/up/{url}")
    assert code == 200
    assert headers["content-type"] == "application/octet-stream"
    assert name_of(body) == url.split("/")[1]
    code, _, _ = proc.request("POST", "/up/catalog")
    assert code == 405


@needs_curl
def test_no_content_encoding_even_when_asked(served: Served) -> None:
    """`curl --compressed` and Accept-Encoding: gzip get the identity bytes, even with a `.gz`
    sibling of the same bytes beside the tarball (aiohttp's FileResponse would send that)."""
    target = served.path_of("a.tgz")
    sibling = target.with_name(target.name + ".gz")
    shutil.copyfile(target, sibling)
    try:
        url = f"{served.base}/up/{served.url_of('a.tgz')}"
        done = curl("--compressed", "-D", "-", "-o", os.devnull, url)
        assert done.returncode == 0, done.stderr
        assert b"content-encoding" not in done.stdout.lower()
        code, headers, body = served.proc.request(
            "GET", f"/up/{served.url_of('a.tgz')}", {"Accept-Encoding": "gzip, br"}
        )
        assert code == 200 and "content-encoding" not in headers
        assert body == target.read_bytes()
        code, headers, _ = served.proc.request("GET", "/up/catalog", {"Accept-Encoding": "gzip"})
        assert code == 200 and "content-encoding" not in headers
    finally:
        sibling.unlink()


@needs_curl
def test_conditional_gets_with_curl(served: Served, tmp_path: Path) -> None:
    """--etag-save then --etag-compare is a 304; -z with the file's date is a 304, an older
    date a 200."""
    url = f"{served.base}/up/catalog"
    etag = tmp_path / "etag"
    out = tmp_path / "catalog"
    first = curl("--etag-save", str(etag), "-o", str(out), "-w", "%{http_code}", url)
    assert first.stdout == b"200", first.stderr
    assert out.read_bytes() == (served.root / "up" / "catalog").read_bytes()
    again = curl("--etag-compare", str(etag), "-o", os.devnull, "-w", "%{http_code}", url)
    assert again.stdout == b"304", again.stderr
    mtime = (served.root / "up" / "catalog").stat().st_mtime
    stamp = tmp_path / "stamp"
    stamp.write_text("")
    os.utime(stamp, (mtime, mtime))
    since = curl("-z", str(stamp), "-o", os.devnull, "-w", "%{http_code}", url)
    assert since.stdout == b"304", since.stderr
    os.utime(stamp, (mtime - 3600, mtime - 3600))
    older = curl("-z", str(stamp), "-o", os.devnull, "-w", "%{http_code}", url)
    assert older.stdout == b"200", older.stderr


@needs_curl
def test_single_ranges_with_curl(served: Served) -> None:
    """-r gives 206 with the exact span and Content-Range; an unsatisfiable range is 416."""
    path = served.path_of("a.tgz")
    data = path.read_bytes()
    url = f"{served.base}/up/{served.url_of('a.tgz')}"
    for spec, want in (("0-99", data[:100]), ("9000-", data[9000:]), ("-50", data[-50:])):
        done = curl("-r", spec, "-D", "-", url)
        head, _, body = done.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 206"), head
        assert body == want, spec
        assert f"content-range: bytes {len(data) - len(want)}-" in head.decode().lower() or (
            spec == "0-99" and b"bytes 0-99/10000" in head
        )
    done = curl("-r", "20000-", "-o", os.devnull, "-D", "-", url)
    assert done.stdout.startswith(b"HTTP/1.1 416"), done.stdout
    assert b"bytes */10000" in done.stdout
    code, _, body = served.proc.request(
        "GET", f"/up/{served.url_of('a.tgz')}", {"Range": "bytes=0-9", "If-Range": '"other"'}
    )
    assert code == 200 and body == data, "a stale If-Range gets the whole file"


def test_aiohttp_client(served: Served) -> None:
    """aiohttp (auto-decompressing) reads the catalog untouched and revalidates it to a 304."""

    async def fetch() -> None:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{served.base}/up/catalog") as resp:
                assert resp.status == 200
                assert "Content-Encoding" not in resp.headers
                body = await resp.read()
                etag = resp.headers["ETag"]
            assert json.loads(body) == served.catalog
            headers = {"If-None-Match": etag}
            async with session.get(f"{served.base}/up/catalog", headers=headers) as resp:
                assert resp.status == 304
                assert await resp.read() == b""

    asyncio.run(fetch())


def test_listings_and_redirect(served: Served) -> None:
    """`/` and `/<U>/` list what is there as escaped HTML; `/<U>` redirects to `/<U>/`."""
    code, headers, body = served.proc.request("GET", "/")
    assert code == 200 and headers["content-type"].startswith("text/html")
    assert b'href="up/"' in body
    assert b".eumirror" not in body and b"escape" not in body
    code, _, body = served.proc.request("GET", "/up/")
    page = body.decode()
    assert code == 200
    assert 'href="catalog"' in page
    assert "&lt;b&gt;&amp;x.tgz" in page and "<b>" not in page
    assert f'href="{served.url_of("a.tgz")}"' in page
    code, headers, _ = served.proc.request("GET", "/up")
    assert code == 301 and headers["location"] == "/up/"


@pytest.mark.parametrize(
    "path",
    [
        "/.eumirror/secret",
        "/.eumirror/",
        "/up/../.eumirror/secret",
        "/up/%2e%2e/.eumirror/secret",
        "/up/%2E%2E/%2Eeumirror/secret",
        "/%2eeumirror/secret",
        "/up%2fcatalog",
        "/up/images%2F..%2F..%2F.eumirror%2Fsecret",
        "/%252e%252e/.eumirror/secret",
        "/up/%252e%252e%252f.eumirror%252fsecret",
        "/up\\..\\.eumirror\\secret",
        "/up/%5c..%5c.eumirror%5csecret",
        "/up/catalog%00",
        "//.eumirror/secret",
        "/up/./catalog",
        "/up//catalog",
        "/escape/catalog",
        "/up/images/0000000001/passwd",
        "/up/images/0000000001/secret",
        "/up/images/",
        "/up/images/1/x",
        "/nothing/catalog",
    ],
)
def test_never_served(served: Served, path: str) -> None:
    """`.eumirror/`, traversal in any encoding and symlinks leading out of the root are 404."""
    code, _, body = served.proc.request("GET", path)
    assert code == 404, (path, body[:200])


def test_symlink_inside_the_root_is_served(served: Served) -> None:
    """A symlink that stays inside the published part of the root is followed."""
    code, _, body = served.proc.request("GET", "/alias/catalog")
    assert code == 200 and body == (served.root / "up" / "catalog").read_bytes()


def test_access_log_at_debug(served: Served) -> None:
    """Every request leaves one `http_request` debug event with its path, status and bytes."""
    before = len(served.proc.events("http_request"))
    served.proc.request("GET", "/up/catalog?probe=1")
    count = before + 1
    while (event := served.proc.wait_event("http_request", count))["path"] != "/up/catalog?probe=1":
        count += 1  # a late event of an earlier request; each wait is bounded
    assert {"method", "path", "status", "sent", "remote"} <= set(event)
    assert event["status"] == 200 and event["sent"] == len(served.catalog_bytes)


def test_catalog_is_never_served_half_written(tmp_path: Path) -> None:
    """A client reading during 1,000 atomic publishes only ever sees whole catalogs."""
    root = tmp_path / "root"
    store = Store(root)
    store.prepare()
    docs = [
        json.dumps(
            {"version": "v", "images": [{"name": str(i), "pad": "x" * (i % 13) * 97}]}
        ).encode()
        for i in range(1000)
    ]
    store.publish_catalog("up", docs[0])
    proc = start_serve(tmp_path, root)
    try:
        done = threading.Event()
        failure: list[BaseException] = []

        def publish() -> None:
            try:
                for doc in docs[1:]:
                    store.publish_catalog("up", doc)
            except BaseException as exc:  # reported by the test thread
                failure.append(exc)
            finally:
                done.set()

        whole = set(docs)
        seen: set[bytes] = set()
        reads = 0
        import http.client

        host, port = proc.address()
        conn = http.client.HTTPConnection(host, port, timeout=10)
        writer = threading.Thread(target=publish)
        writer.start()
        while not done.is_set() or reads < 50:
            conn.request("GET", "/up/catalog")
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200
            assert body in whole, f"a catalog that was never published: {body[:80]!r}"
            assert int(resp.getheader("Content-Length") or -1) == len(body)
            seen.add(body)
            reads += 1
        writer.join()
        conn.close()
        assert not failure, failure
        assert len(seen) >= 2, "the reader saw no publish at all"
    finally:
        proc.kill()


def test_catalog_etag_follows_the_bytes(tmp_path: Path) -> None:
    """A catalog rewritten with the same bytes (new inode, new mtime) keeps its ETag, so a
    downstream's revalidation stays a 304; other bytes of the same size get a new one at once."""
    root = tmp_path / "root"
    store = Store(root)
    store.prepare()
    dest = root / "up" / "catalog"
    store.write_atomic(dest, b'{"images": [1]}\n')
    proc = start_serve(tmp_path, root)
    try:
        first = proc.request("GET", "/up/catalog")[1]["etag"]
        store.write_atomic(dest, b'{"images": [1]}\n')  # a forced rewrite, same bytes
        code, headers, _ = proc.request("GET", "/up/catalog", {"If-None-Match": first})
        assert code == 304 and headers["etag"] == first
        store.write_atomic(dest, b'{"images": [2]}\n')  # same size, same clock tick maybe
        code, headers, body = proc.request("GET", "/up/catalog", {"If-None-Match": first})
        assert code == 200 and body == b'{"images": [2]}\n'
        assert headers["etag"] != first
    finally:
        proc.kill()


def test_config_errors_are_exit_2(tmp_path: Path) -> None:
    """[serve] on the [status] address, [serve] with an s3 root, and `serve` without [serve]
    are configuration errors (exit 2) naming the key."""
    same = tmp_path / "same.toml"
    same.write_text(
        '[mirror]\nroot = "r"\n[status]\nlisten = "127.0.0.1:9105"\n'
        + serve_section("127.0.0.1:9105")
    )
    done = run_cli("serve", "--config", str(same))
    assert done.returncode == 2 and "serve.listen" in done.stderr
    wildcard = tmp_path / "wild.toml"
    wildcard.write_text('[mirror]\nroot = "r"\n' + serve_section("0.0.0.0:9105"))
    done = run_cli("sync", "--once", "--config", str(wildcard))
    assert done.returncode == 2 and "serve.listen" in done.stderr
    s3 = tmp_path / "s3.toml"
    s3.write_text('[mirror]\nroot = "s3://bucket/prefix"\n' + serve_section("127.0.0.1:8080"))
    done = run_cli("serve", "--config", str(s3))
    assert done.returncode == 2 and "serve" in done.stderr and "s3" in done.stderr
    bare = tmp_path / "bare.toml"
    bare.write_text('[mirror]\nroot = "r"\n')
    done = run_cli("serve", "--config", str(bare))
    assert done.returncode == 2 and "[serve]" in done.stderr


# -- limits -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("limited")
    root = synced_root(folder, big=True)
    proc = start_serve(folder, root, max_connections=3, idle_timeout="1s", send_timeout="1s")
    try:
        yield Served(root, proc)
    finally:
        proc.kill()


def _connect(served: Served, rcvbuf: int = 0) -> socket.socket:
    host, port = served.proc.address()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((host, port))
    return sock


def _head(sock: socket.socket, path: str = "/up/catalog") -> bytes:
    """One keep-alive HEAD on an open connection; its status line."""
    sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def _connect_live(served: Served) -> socket.socket:
    """A connection that got its slot: earlier tests' closed connections may take the server a
    moment to notice, so poll (bounded) until a HEAD on a new one is answered 200."""
    deadline = time.monotonic() + 10
    while True:
        sock = _connect(served)
        if _head(sock) == b"HTTP/1.1 200 OK":
            return sock
        sock.close()
        assert time.monotonic() < deadline, "no connection slot came free"


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(1 << 16):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def test_big_bodies_from_sender_threads_keep_the_connection_usable(limited: Served) -> None:
    """A big tarball (sent by a sender thread), then a range of it, then the catalog, all on one
    keep-alive connection: every body exact, nothing interleaved."""
    import http.client

    data = limited.path_of("big.tgz").read_bytes()
    host, port = limited.proc.address()
    deadline = time.monotonic() + 10
    while True:  # a free slot (earlier tests' connections may still be closing)
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("HEAD", "/up/catalog")
        head = conn.getresponse()
        head.read()
        if head.status == 200:
            break
        conn.close()
        assert time.monotonic() < deadline
    try:
        path = f"/up/{limited.url_of('big.tgz')}"
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == data
        conn.request("GET", path, headers={"Range": f"bytes=1000-{len(data) - 1001}"})
        resp = conn.getresponse()
        assert resp.status == 206 and resp.read() == data[1000:-1000]
        conn.request("GET", "/up/catalog")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == limited.catalog_bytes
    finally:
        conn.close()


def test_connection_limit(limited: Served) -> None:
    """Over max_connections a new connection gets 503 and is closed; a freed slot is reused."""
    held = [_connect_live(limited) for _ in range(3)]
    try:
        extra = _connect(limited)
        answer = _read_all(extra)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer
        held.pop().close()
        deadline = time.monotonic() + 10
        while True:
            sock = _connect(limited)
            status = _head(sock)
            sock.close()
            if status == b"HTTP/1.1 200 OK":
                break
            assert time.monotonic() < deadline, "the freed slot was never reused"
    finally:
        for sock in held:
            sock.close()


def test_idle_keep_alive_is_closed(limited: Served) -> None:
    """A keep-alive connection left idle longer than idle_timeout is closed by the server."""
    sock = _connect_live(limited)
    try:
        began = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - began < 8
    finally:
        sock.close()


def test_slow_client_holds_one_slot_and_is_dropped(limited: Served) -> None:
    """A client reading 1 byte/s keeps one connection slot (others are served meanwhile) and
    is dropped after send_timeout, far short of the whole tarball."""
    url = limited.url_of("big.tgz")
    _connect_live(limited).close()
    slow = _connect(limited, rcvbuf=4096)
    got = bytearray()

    def one_byte_a_second() -> None:
        try:
            while chunk := slow.recv(1):
                got.extend(chunk)
                time.sleep(1)  # the client's pace, not a synchronisation
        except OSError:
            pass

    reader = threading.Thread(target=one_byte_a_second, daemon=True)
    try:
        slow.sendall(f"GET /up/{url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        reader.start()
        code, _, body = limited.proc.request("GET", "/up/catalog")
        assert code == 200 and body
        limited.proc.wait_event("http_client_too_slow")
        slow.shutdown(socket.SHUT_RD)
        reader.join(10)
        assert got.startswith(b"HTTP/1.1 200") and len(got) < 100
    finally:
        slow.close()
    gone = _connect(limited)
    gone.sendall(f"GET /up/{url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert gone.recv(4096).startswith(b"HTTP/1.1 200")
    gone.close()  # mid-body: the server drops it quietly
    count = 1
    events = limited.proc.events
    while len(dropped := [e for e in events("http_request") if e["status"] == 499]) < 2:
        limited.proc.wait_event("http_request", count)  # the next event, bounded
        count += 1
    assert all(e["sent"] < BIG for e in dropped), "the slow and the gone client, counted as 499"
    assert not [line for line in limited.proc.raw if not line.startswith("{")], "not JSON log"
    held = [_connect_live(limited) for _ in range(3)]
    try:
        assert len(held) == 3
    finally:
        for sock in held:
            sock.close()


def test_stop_is_prompt_during_a_stalled_transfer(tmp_path: Path) -> None:
    """SIGTERM while a client has stopped reading a big tarball: exit 0 within seconds, not
    after send_timeout."""
    import signal

    root = tmp_path / "root"
    Store(root).prepare()
    Store(root).publish_catalog("up", b'{"images": []}\n')
    big = root / "up" / "images" / "0000000001" / "big.tgz"
    big.parent.mkdir(parents=True)
    big.write_bytes(tarball(9, BIG))
    proc = start_serve(tmp_path, root, send_timeout="10m")
    try:
        host, port = proc.address()
        stalled = socket.create_connection((host, port), timeout=10)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(b"GET /up/images/0000000001/big.tgz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert stalled.recv(64).startswith(b"HTTP/1.1 200")
        began = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(20) == 0
        assert time.monotonic() - began < 10
        stalled.close()
    finally:
        proc.kill()


# -- TLS ----------------------------------------------------------------------------------------
def _certificate(folder: Path, cn: str) -> tuple[Path, Path]:
    cert, key = folder / f"{cn}.crt", folder / f"{cn}.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", f"/CN={cn}", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tls_certificate_reloaded_on_sighup(tmp_path: Path) -> None:
    """With tls_cert/tls_key the server speaks https; SIGHUP makes new handshakes use the
    certificate now on disk."""
    import signal

    root = tmp_path / "root"
    Store(root).prepare()
    Store(root).publish_catalog("up", b'{"images": []}\n')
    first = _certificate(tmp_path, "first")
    second = _certificate(tmp_path, "second")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copyfile(first[0], cert)
    shutil.copyfile(first[1], key)
    proc = start_serve(tmp_path, root, tls_cert=str(cert), tls_key=str(key))
    try:
        address = proc.address()
        context = ssl.create_default_context(cafile=str(first[0]))
        context.check_hostname = False
        with (
            socket.create_connection(address, timeout=10) as raw,
            context.wrap_socket(raw) as tls,
        ):
            tls.sendall(b"GET /up/catalog HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert _read_all(tls).startswith(b"HTTP/1.1 200")
        shutil.copyfile(second[0], cert)
        shutil.copyfile(second[1], key)
        proc.proc.send_signal(signal.SIGHUP)
        proc.wait_event("tls_reloaded")
        served = ssl.get_server_certificate(address)
        assert served.strip() == second[0].read_text().strip()
    finally:
        proc.kill()
