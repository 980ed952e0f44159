"""The one address rule, applied where a connection is made.

A host an upstream trusts (its catalog host, its allow_hosts, its proxy) may have any address.
Any other host must resolve to public addresses only: a name with one private answer among
public ones is refused whole, so no mix of answers can steer a connection inward. The rule is
checked at connect time (a name that re-binds after a first lookup still cannot reach a private
address) and, for a request handed to a proxy, just before it is handed over.
"""

from __future__ import annotations

import errno
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from ..core.policy import is_ip_literal, is_public_address


class AddressRefused(OSError):
    """A host with an address that is not public: refused, and not worth a retry."""


def refused(host: str, why: str) -> AddressRefused:
    return AddressRefused(
        errno.EACCES,
        f"{host} {why}; add it to the upstream's allow_hosts if it is meant to be reached",
    )


def check_literal(host: str) -> None:
    """An IP address written in the url, in any spelling the C library accepts (127.1,
    2130706433, 0x7f.1): refused at once if it is not public, without a lookup."""
    if not host or not (host[-1].isdigit() or ":" in host):
        return  # a name: the resolver checks it
    address: str | None = host
    if not is_ip_literal(host):
        try:
            address = socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            address = None
    if address is not None and not is_public_address(address):
        raise refused(host, "is not a public address")


class TrustResolver(AbstractResolver):
    """Resolves names for one upstream's connections, refusing untrusted non-public answers."""

    def __init__(self, trusted: frozenset[str], inner: AbstractResolver | None = None) -> None:
        self._trusted = trusted
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if host.lower().rstrip(".") in self._trusted:
            return results
        if not results or not all(is_public_address(r["host"]) for r in results):
            raise refused(host, "resolves to a non-public address")
        return results

    async def close(self) -> None:
        await self._inner.close()
