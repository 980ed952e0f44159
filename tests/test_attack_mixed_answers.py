"""Attack: a name answers one harmless address and one private one, hoping the private one is
tried. Such a name is refused whole: no answer of it is connected to."""

from __future__ import annotations

from pathlib import Path

from conftest import tarball
from faultserver import FaultServer
from proxyserver import RecordingProxy
from trustkit import FixedAnswers, download

from eumirror.core.policy import Trust

BODY = tarball(14, 10_000)
# 192.0.2.1 is a documentation address: never contacted (the name is refused before).
MIXED = {"mixed.test": ("192.0.2.1", "127.0.0.2"), "catalog.test": ("192.0.2.1",)}


async def test_a_name_with_a_private_answer_is_refused_whole(tmp_path: Path) -> None:
    """Directly and through a proxy, mixed.test is refused with one line; the server behind its
    loopback answer and the proxy see nothing."""
    async with FaultServer(host="127.0.0.2") as srv, RecordingProxy() as proxy:
        srv.put("/x.tgz", BODY)
        url = f"http://mixed.test:{srv.port}/x.tgz"
        trust = Trust(hosts=frozenset({"catalog.test"}))
        for environ in ({}, {"http_proxy": proxy.url}):
            answers = FixedAnswers(MIXED)
            got, line = await download(url, trust, tmp_path, environ=environ, resolver=answers)
            assert got == 0
            assert line == (
                "mixed.test resolves to a non-public address; add it to the "
                "upstream's allow_hosts if it is meant to be reached"
            )
            assert answers.asked == ["mixed.test"]  # one lookup, no second rule's getaddrinfo
        assert srv.requests() == 0 and proxy.seen == []
