"""Which proxy, if any, a request goes through: the environment read the way curl reads it, or
an upstream's own `proxy` key.

curl reads `http_proxy` in lower case only (an upper-case HTTP_PROXY can be set by a web
server's client, "httpoxy"), `https_proxy`/`HTTPS_PROXY`, `all_proxy`/`ALL_PROXY` as the
fallback, and `no_proxy`/`NO_PROXY`; lower case wins where both are set.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit


@dataclass(frozen=True)
class Route:
    """Where a request is sent instead of its host: a proxy url without credentials, and the
    credentials (sent as Proxy-Authorization)."""

    url: str
    host: str
    auth: tuple[str, str] | None = None


@dataclass(frozen=True)
class Proxies:
    """The proxies of one upstream, per scheme, and the hosts that bypass them."""

    http: Route | None = None
    https: Route | None = None
    no_proxy: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.http is None and self.https is None

    def hosts(self) -> frozenset[str]:
        """The proxies' own hosts: configured by the operator, so trusted like a catalog host."""
        return frozenset(r.host for r in (self.http, self.https) if r is not None)

    def route(self, scheme: str, host: str) -> Route | None:
        """The proxy for a request to `host` over `scheme`, or None to connect directly."""
        chosen = self.https if scheme == "https" else self.http
        if chosen is None or bypassed(host, self.no_proxy):
            return None
        return chosen


def from_environment(environ: Mapping[str, str]) -> Proxies:
    """http_proxy, https_proxy, all_proxy and no_proxy as curl reads them."""

    def first(*names: str) -> tuple[str, str]:
        for name in names:
            value = environ.get(name, "").strip()
            if value:
                return name, value
        return "", ""

    def route(*names: str) -> Route | None:
        name, value = first(*names, "all_proxy", "ALL_PROXY")
        if not value:
            return None
        try:
            return parse_route(value)
        except ValueError as exc:
            raise ValueError(f"${name}: {exc}") from None  # the value may hold a password

    no_proxy = first("no_proxy", "NO_PROXY")[1]
    return Proxies(
        http=route("http_proxy"),
        https=route("https_proxy", "HTTPS_PROXY"),
        no_proxy=tuple(e for e in no_proxy.replace(" ", ",").split(",") if e),
    )


def for_upstream(proxy: str | None, environment: Proxies) -> Proxies:
    """An upstream's `proxy` key (None: the environment's; "": none) with no_proxy kept."""
    if proxy is None:
        return environment
    if not proxy:
        return Proxies()
    route = parse_route(proxy)
    return Proxies(http=route, https=route, no_proxy=environment.no_proxy)


def parse_route(value: str) -> Route:
    """A proxy url ("host:port" means http://host:port, as for curl), credentials split off.

    Raises ValueError for a scheme other than http (aiohttp speaks to http proxies only)."""
    text = value if "://" in value else f"http://{value}"
    parts = urlsplit(text)
    if parts.scheme.lower() != "http" or not parts.hostname:
        raise ValueError("only http:// proxies are supported")
    try:
        parts.port  # noqa: B018 (validates the port)
    except ValueError:
        raise ValueError("the proxy's port is not a number from 1 to 65535") from None
    netloc = parts.netloc.rpartition("@")[2]
    auth = None
    if parts.username is not None:
        auth = (unquote(parts.username), unquote(parts.password or ""))
    bare = urlunsplit(("http", netloc, parts.path or "", "", ""))
    return Route(url=bare, host=parts.hostname.lower(), auth=auth)


def bypassed(host: str, no_proxy: tuple[str, ...]) -> bool:
    """curl's no_proxy: `*`, a host or domain suffix (a leading dot optional), an IP address or
    a CIDR range. A `:port` on an entry is ignored, as curl does."""
    if not no_proxy:
        return False
    host = host.lower().rstrip(".").strip("[]")
    for raw in no_proxy:
        entry = raw.strip().lower()
        if entry == "*":
            return True
        if entry.startswith("[") and "]" in entry:
            entry = entry[1 : entry.index("]")]
        elif entry.count(":") == 1:
            entry = entry.partition(":")[0]
        entry = entry.lstrip(".").rstrip(".")
        if not entry:
            continue
        if host == entry or host.endswith("." + entry):
            return True
        if "/" in entry or entry[-1].isdigit() or ":" in entry:
            try:
                if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False
