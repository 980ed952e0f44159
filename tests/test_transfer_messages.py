"""Every transfer failure reads as one sentence of ours: the facts, no library text, <= 300."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import Mirror, Upstream, human_lines, tarball
from faultserver import HTML_BODY, Fault, FaultServer, ThreadedFaultServer, self_signed
from faultserver import server_context as tls_context
from trustkit import FixedAnswers, download

from eumirror.core.config import Limits
from eumirror.core.errors import CatalogError, EumirrorError, FetchError
from eumirror.core.policy import Source, Trust
from eumirror.engine.download import PartialFile, SpaceBudget
from eumirror.net.fetch import Fetcher, Validators

LIMITS = Limits(retries=0, connect_timeout=5.0, low_speed_time=10.0)
LOOPBACK = Trust(hosts=frozenset({"127.0.0.1"}))
BODY = tarball(5, 20_000)


@pytest.fixture
async def srv() -> AsyncIterator[FaultServer]:
    async with FaultServer() as server:
        server.put("/t.tgz", BODY)
        yield server


async def failure(url: str, tmp_path: Path) -> str:
    """The one line a download of `url` fails with."""
    partial = PartialFile(tmp_path / "t.part", SpaceBudget(1 << 40, 0), exists=False)
    await partial.open()
    async with Fetcher(LIMITS) as fetcher:
        with pytest.raises(FetchError) as caught:
            await fetcher.download(url, partial, Validators(), trust=LOOPBACK)
    await partial.keep_for_resume()
    return assert_ours(caught.value)


def assert_ours(exc: EumirrorError) -> str:
    line = exc.line()
    assert len(line) <= 300, line
    for library_text in ("Error(", "Error:", "b'", "<", "\\x", "aiohttp", "payload"):
        assert library_text not in line, line
    return line


@pytest.mark.parametrize(
    ("fault", "sentence"),
    [
        (Fault(reset_after=10_000), "connection reset after 10,000 of 20,000 bytes"),
        (
            Fault(truncate_after=10_000),
            "the server closed the connection after 10,000 of 20,000 bytes",
        ),
        (Fault(length_delta=100), "the server closed the connection after 20,000 of 20,100 bytes"),
        (Fault(status=404), "HTTP 404 Not Found"),
        (Fault(framing="chunked", truncate_after=10_000), "the chunked body broke off after"),
    ],
    ids=["reset", "closed", "long-length", "404", "chunked"],
)
async def test_a_broken_body_is_one_sentence_of_ours(
    srv: FaultServer, tmp_path: Path, fault: Fault, sentence: str
) -> None:
    """Resets, short and long Content-Lengths and statuses read as the facts, in our words."""
    srv.set_fault("/t.tgz", fault)
    line = await failure(srv.url_for("/t.tgz"), tmp_path)
    assert line.startswith(sentence), line


async def test_bytes_past_the_content_length_are_named_never_shown(
    srv: FaultServer, tmp_path: Path
) -> None:
    """A body longer than announced is named as such; the stray bytes never reach the line."""
    srv.set_fault("/t.tgz", Fault(length_delta=-100, excess=b"\xd4 =\x96" * 30))
    line = await failure(srv.url_for("/t.tgz"), tmp_path)
    assert line.endswith("more bytes than its Content-Length)") or line == (
        "the server sent more bytes than its Content-Length"
    ), line
    assert "\ufffd" not in line and "=" not in line


async def test_a_refused_connection_names_host_and_port(tmp_path: Path) -> None:
    """Nothing listening: 'connection refused by 127.0.0.1:PORT'."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    line = await failure(f"http://127.0.0.1:{port}/t.tgz", tmp_path)
    assert line == f"connection refused by 127.0.0.1:{port}"


async def test_a_self_signed_certificate_names_host_port_and_what_to_set(tmp_path: Path) -> None:
    """TLS: the certificate of HOST:PORT is self-signed, and SSL_CERT_FILE is the way out."""
    cert, key = self_signed(tmp_path)
    async with FaultServer(ssl_context=tls_context(cert, key)) as server:
        server.put("/t.tgz", BODY)
        line = await failure(server.url_for("/t.tgz"), tmp_path)
    assert line == (
        f"TLS: the certificate of 127.0.0.1:{server.port} is self-signed "
        "(set SSL_CERT_FILE or the upstream's ca_file)"
    )


async def test_a_redirect_hop_is_named_once(srv: FaultServer, tmp_path: Path) -> None:
    """A failure after a redirect names the hop it happened at, once."""
    srv.put("/u.tgz", BODY)
    srv.set_fault("/t.tgz", Fault(redirect_to="/u.tgz"))
    srv.set_fault("/u.tgz", Fault(reset_after=10_000))
    line = await failure(srv.url_for("/t.tgz"), tmp_path)
    assert line == (
        f"redirected to {srv.url_for('/u.tgz')}: connection reset after 10,000 of 20,000 bytes"
    )


@pytest.mark.parametrize(
    "fault",
    [Fault(html=True), Fault(replace_body=b"  <!DOCTYPE html><p>sign in</p>")],
    ids=["content-type", "body"],
)
async def test_an_html_catalog_is_a_catalog_error_naming_url_and_type(
    srv: FaultServer, fault: Fault
) -> None:
    """A captive portal's HTML page is refused as a catalog, by type or by its first byte."""
    srv.put("/catalog", b'{"version": "1", "images": []}', "application/json")
    srv.set_fault("/catalog", fault)
    url = srv.url_for("/catalog")
    async with Fetcher(LIMITS) as fetcher:
        with pytest.raises(CatalogError) as caught:
            await fetcher.fetch_catalog(Source(url), Validators())
    line = assert_ours(caught.value)
    kind = "text/html; charset=utf-8" if fault.html else "application/json"
    assert line.startswith(f"catalog {url} is an HTML page (Content-Type {kind}), not a catalog")
    assert "check the url" in line
    assert HTML_BODY[:20].decode() not in line


def test_each_failed_image_is_one_line_with_its_url_once(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A real sync: every failure line names its url once and stays within 300 characters."""
    faults = {
        "reset": Fault(reset_after=1000),
        "gone": Fault(status=410),
    }
    for i, name in enumerate(faults):
        upstream.add(f"a/{name}-{'x' * 60}.tgz", tarball(i, 5000))
    upstream.write()
    for name, fault in faults.items():
        server.set_fault(f"/a/{name}-{'x' * 60}.tgz", fault)

    done = mirror.sync()

    assert done.returncode == 1
    lines = human_lines(done.stderr)
    assert len(lines) == len(faults), done.stderr
    for line in lines:
        assert len(line) <= 300, line
        assert line.count("http://") == 1, line
        assert "b'" not in line and "Error" not in line, line
    joined = "\n".join(lines)
    # Each retry resumes, so the last attempt asked for what was still missing.
    assert re.search(r"connection reset after 1,000 of [1-5],000 bytes", joined), joined
    assert "HTTP 410 Gone" in joined


async def test_an_unresolvable_name_is_named(tmp_path: Path) -> None:
    """A name that does not resolve: 'cannot resolve NAME', directly or before a proxy."""
    names = FixedAnswers({})  # no DNS traffic: a test resolver that knows no name
    for environ in ({}, {"http_proxy": "http://127.0.0.1:9"}):
        got, line = await download(
            "http://nowhere.test:8080/t.tgz", Trust(), tmp_path, environ=environ, resolver=names
        )
        assert (got, line) == (0, "cannot resolve nowhere.test")
