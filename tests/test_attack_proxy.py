"""Attack: a proxy does the DNS lookup, so an image url at a private address slips past the rules.

Before a request for an untrusted host goes to a proxy, the host is checked here: a private
literal is refused without a lookup, a name is resolved and refused if any answer is private;
nothing of it reaches the proxy.
"""

from __future__ import annotations

import base64
from pathlib import Path

from conftest import tarball
from faultserver import FaultServer
from proxyserver import RecordingProxy
from trustkit import download

from eumirror.core.policy import Trust

BODY = tarball(12, 20_000)
UNRELATED = Trust(hosts=frozenset({"catalog.invalid"}))


async def test_a_private_literal_is_refused_before_the_proxy(tmp_path: Path) -> None:
    """http_proxy set: an image at 127.0.0.2 (untrusted) is refused and the proxy sees nothing."""
    async with FaultServer(host="127.0.0.2") as srv, RecordingProxy() as proxy:
        srv.put("/x.tgz", BODY)
        got, line = await download(
            srv.url_for("/x.tgz"), UNRELATED, tmp_path, environ={"http_proxy": proxy.url}
        )
        assert got == 0 and line.startswith("127.0.0.2 is not a public address"), line
        assert proxy.seen == [] and srv.requests() == 0


async def test_a_name_resolving_private_is_refused_before_the_proxy(tmp_path: Path) -> None:
    """http_proxy set: localhost (untrusted) is resolved here and refused; the proxy sees
    nothing. Trusted, the same url goes through the proxy."""
    async with FaultServer() as srv, RecordingProxy() as proxy:
        srv.put("/x.tgz", BODY)
        url = f"http://localhost:{srv.port}/x.tgz"
        env = {"http_proxy": proxy.url}
        got, line = await download(url, UNRELATED, tmp_path, environ=env)
        assert got == 0 and line.startswith("localhost resolves to a non-public address")
        assert proxy.seen == [] and srv.requests() == 0

        trusted = Trust(hosts=frozenset({"localhost"}))
        got, line = await download(url, trusted, tmp_path, environ=env)
        assert (got, line) == (len(BODY), "")
        assert [s.target for s in proxy.seen] == [url]


async def test_an_upstreams_own_proxy_key_and_no_proxy(tmp_path: Path) -> None:
    """`proxy` with credentials sends them as Proxy-Authorization; no_proxy still bypasses it;
    `proxy = ""` ignores the environment's proxy."""
    async with FaultServer() as srv, RecordingProxy() as proxy:
        srv.put("/x.tgz", BODY)
        url = f"http://localhost:{srv.port}/x.tgz"
        port = proxy.url.rpartition(":")[2]
        own = Trust(hosts=frozenset({"localhost"}), proxy=f"http://pu:pw@127.0.0.1:{port}")
        assert await download(url, own, tmp_path) == (len(BODY), "")
        assert proxy.seen[-1].proxy_authorization == "Basic " + base64.b64encode(b"pu:pw").decode(
            "ascii"
        )

        seen = len(proxy.seen)
        env = {"no_proxy": "example.org,localhost"}
        assert await download(url, own, tmp_path, environ=env) == (len(BODY), "")
        none = Trust(hosts=frozenset({"localhost"}), proxy="")
        assert await download(url, none, tmp_path, environ={"http_proxy": proxy.url}) == (
            len(BODY),
            "",
        )
        assert len(proxy.seen) == seen and srv.requests() == 3
