"""Attack: a trusted host redirects to a private host the upstream does not trust, or from
https down to http. Every hop of a redirect passes the same rules as the first request."""

from __future__ import annotations

from pathlib import Path

from conftest import tarball
from faultserver import Fault, FaultServer, self_signed, server_context
from trustkit import download

from eumirror.core.policy import Trust

BODY = tarball(13, 20_000)


async def test_a_redirect_to_an_untrusted_private_host_is_refused(tmp_path: Path) -> None:
    """127.0.0.1 is trusted; its redirects to localhost (a name) and to 127.0.0.2 (a literal),
    both untrusted, are refused before any connection to them."""
    async with FaultServer() as trusted, FaultServer(host="127.0.0.2") as inner:
        inner.put("/secret.tgz", BODY)
        trust = Trust(hosts=frozenset({"127.0.0.1"}))
        for target in (f"http://localhost:{inner.port}", inner.url):
            trusted.put("/x.tgz", BODY)
            trusted.set_fault("/x.tgz", Fault(redirect_to=f"{target}/secret.tgz"))
            got, line = await download(trusted.url_for("/x.tgz"), trust, tmp_path)
            host = target.partition("//")[2].rpartition(":")[0]
            assert got == 0
            assert line.startswith(f"redirected to {target}/secret.tgz: {host} "), line
            assert "non-public" in line or "not a public address" in line, line
        assert inner.requests() == 0


async def test_a_redirect_from_https_to_http_is_refused(tmp_path: Path) -> None:
    """An https image redirected to http, even on a trusted host, is never followed."""
    cert, key = self_signed(tmp_path)
    async with (
        FaultServer(ssl_context=server_context(cert, key)) as secure,
        FaultServer() as plain,
    ):
        plain.put("/x.tgz", BODY)
        secure.put("/x.tgz", BODY)
        secure.set_fault("/x.tgz", Fault(redirect_to=plain.url_for("/x.tgz")))
        trust = Trust(hosts=frozenset({"127.0.0.1"}), ca_file=str(cert))
        got, line = await download(secure.url_for("/x.tgz"), trust, tmp_path)
        assert (got, line) == (0, "redirects from https to http; refused")
        assert plain.requests() == 0 and secure.requests() == 1
