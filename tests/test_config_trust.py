"""The upstream keys of the trust model: proxy, ca_file, allow_hosts, credentials in urls."""

from __future__ import annotations

from pathlib import Path

import pytest

from eumirror.core.config import Config, parse_config
from eumirror.core.errors import ConfigError
from eumirror.core.policy import Trust


def parse(text: str, folder: Path) -> Config:
    return parse_config(f'[mirror]\nroot = "r"\n{text}'.encode(), path=folder / "c.toml")


def upstream(catalog: str, extra: str = "") -> str:
    return f'[[upstream]]\nname = "u"\ncatalog = "{catalog}"\n{extra}'


def test_an_upstreams_trust_is_its_catalog_host_and_its_allow_hosts(tmp_path: Path) -> None:
    """Trust is per upstream: the catalog's host and its own allow_hosts, nothing else."""
    (tmp_path / "ca.pem").write_text("x")
    config = parse(
        upstream("https://Cat.Example/c", 'allow_hosts = ["Img.Example."]\nca_file = "ca.pem"\n')
        + '[[upstream]]\nname = "v"\ncatalog = "http://other.example/c"\nproxy = ""\n',
        tmp_path,
    )
    first, second = config.upstreams
    assert first.trust == Trust(
        hosts=frozenset({"cat.example", "img.example"}), ca_file=str(tmp_path / "ca.pem")
    )
    assert second.trust == Trust(hosts=frozenset({"other.example"}), proxy="")


def test_catalog_credentials_leave_the_url_and_become_the_upstreams_auth(
    tmp_path: Path,
) -> None:
    """user:password in the catalog url is sent only as a header to the catalog's origin."""
    config = parse(upstream("http://us%40r:p%3Aw@cat.example:8080/c"), tmp_path)
    up = config.upstreams[0]
    assert up.source.url == "http://cat.example:8080/c"
    assert up.trust.auth == ("us@r", "p:w")
    assert up.trust.auth_origin == "http://cat.example:8080"
    assert "p:w" not in repr(up) and "p:w" not in repr(up.trust)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (upstream("http://h:65536/c"), "upstream[0].catalog"),
        (upstream("http://h:x/c"), "upstream[0].catalog"),
        (upstream("http://under_score..example/c"), "upstream[0].catalog"),
        (upstream("http://2130706433/c"), "upstream[0].catalog"),
        (upstream("http://h/c", 'proxy = "https://p:8"\n'), "upstream[0].proxy"),
        (upstream("http://h/c", 'proxy = "http://p:99999"\n'), "upstream[0].proxy"),
        (upstream("http://h/c", 'ca_file = "missing.pem"\n'), "upstream[0].ca_file"),
        ('public_url = "ftp://f/"\n', "mirror.public_url"),
        ('public_url = "http://u:pw@f/"\n', "mirror.public_url"),
    ],
    ids=[
        "port-range",
        "port-text",
        "bad-host",
        "legacy-ip",
        "proxy-scheme",
        "proxy-port",
        "ca-missing",
        "public-scheme",
        "public-credentials",
    ],
)
def test_urls_are_validated_at_load(tmp_path: Path, text: str, key: str) -> None:
    """Scheme, host and port of every configured url are checked at load (exit 2, key named)."""
    with pytest.raises(ConfigError) as info:
        parse(text, tmp_path)
    assert f": {key}: " in info.value.message
    assert "pw" not in info.value.message
