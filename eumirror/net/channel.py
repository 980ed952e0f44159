"""One upstream's way out: its own connection pool, resolver, proxies, CAs and credentials.

Upstreams never share a connection pool: a connection opened for a host one upstream trusts
could otherwise be reused, without a new lookup, by a request of another upstream that does not
trust it. Two upstreams with the same trust share a channel (nothing to borrow between them).
"""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver

from .. import __version__
from ..core.config import Limits
from ..core.errors import FetchError
from ..core.names import CHUNK
from ..core.policy import Trust, is_ip_literal, origin
from .proxy import Proxies, for_upstream
from .resolver import TrustResolver, check_literal


@dataclass
class Channel:
    trust: Trust
    session: aiohttp.ClientSession
    resolver: TrustResolver
    proxies: Proxies
    ssl: ssl.SSLContext | bool
    authorization: str | None

    async def admit(self, url: str, headers: dict[str, str]) -> dict[str, Any]:
        """The request options for one hop, after the address rule for what a proxy would
        resolve: a trusted host costs a set lookup, no proxy costs nothing more."""
        parts, host = _authority(url)
        options: dict[str, Any] = {"ssl": self.ssl, "headers": headers}
        route = None if self.proxies.empty else self.proxies.route(parts.scheme.lower(), host)
        if host not in self.trust.hosts:
            check_literal(host)
            if route is not None and not is_ip_literal(host):
                # The proxy would resolve it: the rule is applied to our own lookup first.
                port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
                await self.resolver.resolve(host, port, socket.AF_UNSPEC)
        if route is not None:
            options["proxy"] = route.url
            if route.auth is not None:
                # Plain http goes to the proxy as is; https as a CONNECT with its own headers.
                basic = {"Proxy-Authorization": aiohttp.encode_basic_auth(*route.auth)}
                if parts.scheme.lower() == "https":
                    options["proxy_headers"] = basic
                else:
                    options["headers"] = {**headers, **basic}
        if self.authorization is not None and origin(url) == self.trust.auth_origin:
            options["headers"] = {**options["headers"], "Authorization": self.authorization}
        return options

    async def close(self) -> None:
        await self.session.close()


def _authority(url: str) -> tuple[SplitResult, str]:
    """The url's scheme, host and port (as `urlsplit` of its part before the path, and the
    host normalised). Every image of an upstream shares it: parsed once, not per request (the
    whole url's `urlsplit` cost 6 us of the event loop's time per tarball)."""
    start = url.find("//")
    if start < 0:
        return _split_authority(url)
    end = len(url)
    for mark in "/?#":
        found = url.find(mark, start + 2, end)
        if found >= 0:
            end = found
    return _split_authority(url[:end])


@functools.lru_cache(maxsize=256)
def _split_authority(prefix: str) -> tuple[SplitResult, str]:
    parts = urlsplit(prefix)
    return parts, (parts.hostname or "").lower().rstrip(".")


def open_channel(
    trust: Trust,
    limits: Limits,
    environment: Callable[[], Proxies],
    inner: AbstractResolver | None = None,
) -> Channel:
    """A channel for `trust`; a bad ca_file or proxy setting is a FetchError (not transient)."""
    try:
        proxies = for_upstream(trust.proxy, environment())
    except ValueError as exc:
        raise FetchError(f"proxy setting refused: {exc}") from None
    context = _ssl_context(trust.ca_file)
    resolver = TrustResolver(trust.hosts | proxies.hosts(), inner)
    connector = aiohttp.TCPConnector(
        resolver=resolver, limit=64, ttl_dns_cache=None, use_dns_cache=False
    )
    session = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        # Proxies come from the channel; aiohttp's own trust_env would also re-read ~/.netrc
        # in a worker thread for every request.
        trust_env=False,
        read_bufsize=CHUNK,
        timeout=aiohttp.ClientTimeout(
            total=None,
            connect=None,
            sock_connect=limits.connect_timeout,
            sock_read=limits.low_speed_time,
        ),
        headers={"User-Agent": f"eumirror/{__version__}", "Accept-Encoding": "identity"},
    )
    authorization = aiohttp.encode_basic_auth(*trust.auth) if trust.auth is not None else None
    return Channel(trust, session, resolver, proxies, context, authorization)


def _ssl_context(ca_file: str) -> ssl.SSLContext | bool:
    """The system's CAs (and SSL_CERT_FILE / SSL_CERT_DIR), plus the upstream's ca_file."""
    if not ca_file:
        return True
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=ca_file)
    except ssl.SSLError:
        raise FetchError(
            f"ca_file {ca_file} cannot be loaded: not a PEM file of certificates"
        ) from None
    except OSError as exc:
        why = str(exc.strerror or "unreadable").lower()
        raise FetchError(f"ca_file {ca_file} cannot be loaded: {why}") from None
    return context
