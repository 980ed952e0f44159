"""The serving keys of the configuration: `[serve]`, `[status] trigger_token_file`, and
`[[upstream]] notify` / `notify_token_file`, parsed strictly like the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from eumirror.core.config import Config, Serve, parse_config
from eumirror.core.errors import ConfigError

PATH = Path("/etc/eumirror/eumirror.toml")
UPSTREAM = '[[upstream]]\nname = "up"\ncatalog = "http://example.org/catalog"\n'


def parse(text: str) -> Config:
    return parse_config(f'[mirror]\nroot = "/srv/m"\n{text}'.encode(), path=PATH)


def test_serve_absent_and_defaults() -> None:
    """No [serve]: nothing but the status endpoint; with it, the limits have defaults."""
    assert parse("").serve is None
    serve = parse('[serve]\nlisten = "0.0.0.0:8080"\n').serve
    assert serve == Serve("0.0.0.0", 8080, max_connections=1024, idle_timeout=75.0)
    assert serve.send_timeout == 60.0 and serve.tls_cert is None


def test_serve_full_and_relative_paths() -> None:
    """Every key, with the TLS files resolved against the config file's folder."""
    config = parse(
        '[serve]\nlisten = "[::]:8443"\ntls_cert = "tls/c.pem"\ntls_key = "/k.pem"\n'
        'max_connections = 10\nidle_timeout = "5s"\nsend_timeout = "2m"\n'
        '[status]\ntrigger_token_file = "trigger.token"\n'
        + UPSTREAM
        + 'notify = ["http://tier2:9105/sync"]\nnotify_token_file = "t2.token"\n'
    )
    assert config.serve == Serve(
        "::", 8443, Path("/etc/eumirror/tls/c.pem"), Path("/k.pem"), 10, 5.0, 120.0
    )
    assert config.status.trigger_token_file == Path("/etc/eumirror/trigger.token")
    up = config.upstreams[0]
    assert up.notify == ("http://tier2:9105/sync",)
    assert up.notify_token_file == Path("/etc/eumirror/t2.token")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[serve]\n", "serve.listen"),
        ('[serve]\nlisten = "0.0.0.0:8080"\nport = 1\n', "serve.port"),
        ('[serve]\nlisten = "127.0.0.1:8080"\ntls_cert = "c"\n', "serve.tls_key"),
        ('[serve]\nlisten = "127.0.0.1:8080"\nmax_connections = 0\n', "serve.max_connections"),
        ('[serve]\nlisten = "127.0.0.1:8080"\nsend_timeout = "0s"\n', "serve.send_timeout"),
        ('[serve]\nlisten = "127.0.0.1:9105"\n', "serve.listen"),
        ('[serve]\nlisten = "[::]:9200"\n[status]\nlisten = "127.0.0.1:9200"\n', "serve.listen"),
        ('[status]\ntrigger_token_file = ""\n', "status.trigger_token_file"),
        (UPSTREAM + 'notify = ["ftp://x/sync"]\n', "upstream[0].notify"),
        (UPSTREAM + "notify = [1]\n", "upstream[0].notify"),
        (UPSTREAM + 'notify = "http://x/sync"\n', "upstream[0].notify"),
    ],
)
def test_serving_key_errors_name_the_key(text: str, key: str) -> None:
    """A missing, unknown or invalid serving key is a configuration error naming it."""
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert f": {key}:" in caught.value.message


def test_serve_with_an_s3_root_is_refused() -> None:
    """The object store serves an s3 root; [serve] with one is a configuration error."""
    text = '[mirror]\nroot = "s3://bucket/p"\n[serve]\nlisten = "0.0.0.0:8080"\n'
    with pytest.raises(ConfigError, match="s3"):
        parse_config(text.encode(), path=PATH)


def test_ports_zero_never_clash() -> None:
    """Port 0 (pick a free one) on both is not the same address."""
    config = parse('[serve]\nlisten = "127.0.0.1:0"\n[status]\nlisten = "127.0.0.1:0"\n')
    assert config.serve is not None and config.serve.port == 0
