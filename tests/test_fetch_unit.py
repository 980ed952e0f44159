"""The fetch seam's pure helpers and its resolver, which no loopback server can exercise."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from aiohttp.abc import ResolveResult

from eumirror.net.fetch import AddressRefused, PublicOnlyResolver, retry_after_seconds, settled


class FixedAnswers:
    """A stand-in for the system resolver: what a (possibly rebinding) DNS would answer."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: Any = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        return None


def resolver(trusted: frozenset[str], *answers: str) -> PublicOnlyResolver:
    r = PublicOnlyResolver(trusted)
    r._inner = FixedAnswers(*answers)  # type: ignore[assignment]
    return r


async def test_resolver_refuses_a_name_that_resolves_to_loopback() -> None:
    """An unlisted name answering 127.0.0.1 is refused at connect time (DNS rebinding)."""
    with pytest.raises(AddressRefused):
        await resolver(frozenset(), "127.0.0.1").resolve("evil.example", 80)


async def test_resolver_drops_private_answers_and_keeps_public_ones() -> None:
    """Of mixed answers only the public addresses are ever connected to."""
    got = await resolver(frozenset(), "10.0.0.1", "8.8.8.8", "::1").resolve("mixed.example", 80)
    assert [r["host"] for r in got] == ["8.8.8.8"]


async def test_resolver_trusts_configured_hosts() -> None:
    """A catalog host or allow_hosts entry may resolve to a private address."""
    got = await resolver(frozenset({"mirror.internal"}), "10.1.2.3").resolve("mirror.internal")
    assert [r["host"] for r in got] == ["10.1.2.3"]


def test_last_modified_is_trusted_only_when_settled() -> None:
    """A Last-Modified within 2 s of the answer's Date could hide a same-second change."""
    assert settled("Tue, 01 Jan 2030 00:00:00 GMT", "Tue, 01 Jan 2030 00:00:05 GMT")
    assert not settled("Tue, 01 Jan 2030 00:00:04 GMT", "Tue, 01 Jan 2030 00:00:05 GMT")
    assert not settled(None, "Tue, 01 Jan 2030 00:00:05 GMT")
    assert not settled("garbage", None)


def test_retry_after_accepts_seconds_and_dates() -> None:
    """Retry-After is read as seconds or as an HTTP date; anything else is ignored."""
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Tue, 01 Jan 1980 00:00:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
