"""The fetch seam's pure helpers and its resolver, which no loopback server can exercise."""

from __future__ import annotations

import contextlib
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.abc import ResolveResult
from hypothesis import given, settings
from hypothesis import strategies as st

from eumirror.net.channel import _authority
from eumirror.net.fetch import retry_after_seconds, settled
from eumirror.net.proxy import Route, bypassed, for_upstream, from_environment, parse_route
from eumirror.net.resolver import AddressRefused, TrustResolver


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


def resolver(trusted: frozenset[str], *answers: str) -> TrustResolver:
    return TrustResolver(trusted, FixedAnswers(*answers))  # type: ignore[arg-type]


async def test_resolver_refuses_a_name_that_resolves_to_loopback() -> None:
    """An unlisted name answering 127.0.0.1 is refused at connect time (DNS rebinding)."""
    with pytest.raises(AddressRefused):
        await resolver(frozenset(), "127.0.0.1").resolve("evil.example", 80)


async def test_resolver_refuses_mixed_answers_whole() -> None:
    """One private answer among public ones refuses the name: no answer is connected to."""
    with pytest.raises(AddressRefused):
        await resolver(frozenset(), "8.8.8.8", "10.0.0.1").resolve("mixed.example", 80)


async def test_resolver_passes_public_answers() -> None:
    """A name with public answers only is resolved as it is."""
    got = await resolver(frozenset(), "8.8.8.8", "2001:4860:4860::8888").resolve("dns.example")
    assert [r["host"] for r in got] == ["8.8.8.8", "2001:4860:4860::8888"]


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


def test_proxies_are_read_from_the_environment_as_curl_reads_them() -> None:
    """http_proxy in lower case only; https_proxy either case, lower winning; all_proxy as the
    fallback; no_proxy split on commas and spaces; host:port means http://."""
    env = {
        "HTTP_PROXY": "http://ignored:1",
        "HTTPS_PROXY": "http://upper:2",
        "https_proxy": "lower:3",
        "ALL_PROXY": "http://all:4",
        "NO_PROXY": "a.example, .b.example",
    }
    proxies = from_environment(env)
    assert proxies.http is not None and proxies.http.url == "http://all:4"
    assert proxies.https is not None and proxies.https.url == "http://lower:3"
    assert proxies.no_proxy == ("a.example", ".b.example")
    assert from_environment({"http_proxy": "http://h:5"}).http == Route("http://h:5", "h")
    assert from_environment({}).empty


def test_proxy_credentials_are_split_off_and_only_http_proxies_accepted() -> None:
    """A proxy url's userinfo becomes Proxy-Authorization, never part of the url used."""
    assert parse_route("http://u%40x:p%3Aw@proxy:3128") == Route(
        "http://proxy:3128", "proxy", ("u@x", "p:w")
    )
    with pytest.raises(ValueError, match="only http://"):
        parse_route("socks5://proxy:1080")


@pytest.mark.parametrize(
    ("host", "entries", "bypass"),
    [
        ("a.example", ("a.example",), True),
        ("x.a.example", ("a.example",), True),
        ("x.a.example", (".a.example",), True),
        ("ba.example", ("a.example",), False),
        ("anything", ("*",), True),
        ("10.1.2.3", ("10.0.0.0/8",), True),
        ("192.0.2.1", ("10.0.0.0/8",), False),
        ("::1", ("::1",), True),
        ("localhost", ("localhost:8080",), True),
        ("localhost", (), False),
    ],
)
def test_no_proxy_matches_like_curl(host: str, entries: tuple[str, ...], bypass: bool) -> None:
    """Hosts, domain suffixes, '*', addresses and CIDR ranges; a port on an entry is ignored."""
    assert bypassed(host, entries) is bypass


def test_an_upstream_proxy_key_overrides_the_environment() -> None:
    """None follows the environment, "" means none, a url is used for http and https alike."""
    env = from_environment({"http_proxy": "http://e:1", "no_proxy": "n.example"})
    assert for_upstream(None, env) is env
    assert for_upstream("", env).empty
    own = for_upstream("http://own:2", env)
    assert own.route("https", "x.example") == Route("http://own:2", "own")
    assert own.route("http", "n.example") is None


def test_an_unusable_proxy_variable_is_named_without_its_value() -> None:
    """A socks or malformed proxy in the environment names the variable, never its password."""
    with pytest.raises(ValueError) as caught:
        from_environment({"https_proxy": "socks5://u:hunter2@p:1080"})
    assert str(caught.value) == "$https_proxy: only http:// proxies are supported"
    with pytest.raises(ValueError, match=r"\$ALL_PROXY: the proxy's port"):
        from_environment({"ALL_PROXY": "http://u:hunter2@p:99999"})


@settings(max_examples=800, deadline=None)
@given(
    st.sampled_from(["http", "https", "HTTP", "file", ""]),
    st.sampled_from(["", "//"]),
    st.text(alphabet="abcXYZ019.-_~:@[]%!$&'()*+,;=", max_size=30),
    st.text(alphabet="abc/?#=&.%:@", max_size=20),
)
def test_the_authority_parsed_once_agrees_with_urlsplit(
    scheme: str, slashes: str, authority: str, rest: str
) -> None:
    """admit() parses only the part of an url before its path (cached: every image of an
    upstream shares it); what it reads must be what urlsplit reads from the whole url."""
    url = f"{scheme}:{slashes}{authority}{rest}" if scheme else f"{slashes}{authority}{rest}"
    try:
        whole = urlsplit(url)
        expected: Any = (whole.scheme, whole.netloc, (whole.hostname or "").lower().rstrip("."))
    except ValueError:
        expected = ValueError
    try:
        parts, host = _authority(url)
        got: Any = (parts.scheme, parts.netloc, host)
    except ValueError:
        got = ValueError
    assert got == expected
    if expected is not ValueError:
        with contextlib.suppress(ValueError):
            assert parts.port == whole.port
