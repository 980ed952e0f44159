"""Attack: a man in the middle presents a certificate of a CA the upstream never named.

An upstream's `ca_file` adds the CAs it trusts; a certificate from any other CA is refused
with one line naming host:port and the setting to check.
"""

from __future__ import annotations

from pathlib import Path

from conftest import tarball
from faultserver import FaultServer, self_signed, server_context
from trustkit import download

from eumirror.core.policy import Trust

BODY = tarball(15, 10_000)


async def test_ca_file_is_accepted_and_a_wrong_one_refused(tmp_path: Path) -> None:
    """With the server's CA in ca_file the download works; with another CA it is refused."""
    cert, key = self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    other, _ = self_signed(tmp_path / "other")
    async with FaultServer(ssl_context=server_context(cert, key)) as srv:
        srv.put("/x.tgz", BODY)
        url = srv.url_for("/x.tgz")
        good = Trust(hosts=frozenset({"127.0.0.1"}), ca_file=str(cert))
        assert await download(url, good, tmp_path) == (len(BODY), "")

        wrong = Trust(hosts=frozenset({"127.0.0.1"}), ca_file=str(other))
        got, line = await download(url, wrong, tmp_path)
        assert got == 0
        assert line == (
            f"TLS: the certificate of 127.0.0.1:{srv.port} is self-signed "
            f"(check the upstream's ca_file {other})"
        )
        assert srv.requests() == 1


async def test_a_ca_file_that_is_not_pem_is_one_clear_line(tmp_path: Path) -> None:
    """A ca_file that holds no certificate fails the upstream's requests with one line."""
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    trust = Trust(hosts=frozenset({"127.0.0.1"}), ca_file=str(bogus))
    got, line = await download("https://127.0.0.1:1/x.tgz", trust, tmp_path)
    assert (got, line) == (0, f"ca_file {bogus} cannot be loaded: not a PEM file of certificates")
