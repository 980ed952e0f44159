"""Attack: credentials in a configured url leak into what eumirror writes or serves.

Credentials are taken out of the catalog url at load and travel only as an Authorization
header to the catalog's own origin; every url that reaches a message goes through one
redaction function; a url that cannot be requested is refused at load without its password.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Upstream, human_lines, run_cli, tarball
from faultserver import Fault, ThreadedFaultServer
from test_daemon import Daemon

SECRET = "s3cretPW"


def config_with(tmp_path: Path, catalog: str, extra: str = "", mirror: str = "") -> Path:
    path = tmp_path / "c.toml"
    path.write_text(
        f"[mirror]\nroot = {json.dumps(str(tmp_path / 'root'))}\n{mirror}"
        f'[limits]\nretries = 0\n[[upstream]]\nname = "up"\ncatalog = {json.dumps(catalog)}\n'
        + extra
    )
    return path


@pytest.mark.parametrize(
    ("catalog", "extra", "mirror", "key"),
    [
        (f"http://user:{SECRET}@127.0.0.1:99999/catalog", "", "", "upstream[0].catalog"),
        (f"http://user:{SECRET}@127.0.0.1:0/catalog", "", "", "upstream[0].catalog"),
        (f"http://user:{SECRET}@127.1/catalog", "", "", "upstream[0].catalog"),
        (
            "http://127.0.0.1:8/catalog",
            f'proxy = "http://p:{SECRET}@127.0.0.1:70000"\n',
            "",
            "upstream[0].proxy",
        ),
        (
            "http://127.0.0.1:8/catalog",
            "",
            f'public_url = "http://user:{SECRET}@front.invalid/eu/"\n',
            "mirror.public_url",
        ),
    ],
    ids=["port-range", "port-zero", "legacy-ip", "proxy-port", "public-url-credentials"],
)
def test_a_bad_url_is_refused_at_load_without_its_password(
    tmp_path: Path, catalog: str, extra: str, mirror: str, key: str
) -> None:
    """Exit 2 naming the key; the password shows as *** and nowhere in full."""
    done = run_cli("sync", "--once", "--config", str(config_with(tmp_path, catalog, extra, mirror)))
    assert done.returncode == 2, done.stderr
    assert key in done.stderr and "***" in done.stderr
    assert SECRET not in done.stderr + done.stdout
    assert not (tmp_path / "root").exists()


def test_no_output_channel_carries_a_credential(tmp_path: Path, upstream: Upstream) -> None:
    """A daemon run with a credentialed catalog url and failing images: the secret reaches the
    catalog server as a header and appears in no log line, stderr line, /status, /metrics,
    published catalog, state file, `status` or `verify` output."""
    upstream.add("a/ok.tgz", tarball(1))
    upstream.add("a/gone.tgz", tarball(2))
    upstream.add("a/inside.tgz", tarball(3), url="http://localhost:1/a/inside.tgz")
    upstream.write()
    with ThreadedFaultServer(upstream.folder) as server:
        server.set_fault("/a/gone.tgz", Fault(status=404))
        host = server.url.partition("//")[2]
        config = config_with(
            tmp_path,
            f"http://user:{SECRET}@{host}/catalog",
            mirror="",
        )
        config.write_text(
            config.read_text() + '[schedule]\ninterval = "1h"\n[status]\nlisten = "127.0.0.1:0"\n'
        )
        daemon = Daemon(config)
        try:
            doc = daemon.idle_after(1)
            _, _, status = daemon.http("GET", "/status")
            _, _, metrics = daemon.http("GET", "/metrics")
            _, _, health = daemon.http("GET", "/healthz")
        finally:
            assert daemon.stop() == 0
            daemon.kill()
        assert server.headers("/catalog")[0]["Authorization"].startswith("Basic ")
        once = run_cli("sync", "--once", "--config", str(config))
        report = run_cli("status", "--config", str(config))
        verify = run_cli("verify", "--config", str(config))

    assert doc["upstreams"], doc
    assert once.returncode == 1 and human_lines(once.stderr), once.stderr
    root = tmp_path / "root"
    written = b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())
    outputs = {
        "daemon log": "\n".join(daemon.raw),
        "/status": status.decode(),
        "/metrics": metrics.decode(),
        "/healthz": health.decode(),
        "sync --once stderr": once.stderr + once.stdout,
        "status command": report.stdout + report.stderr,
        "verify": verify.stdout + verify.stderr,
        "files under root": written.decode("latin-1"),
    }
    assert "HTTP 404" in outputs["daemon log"] and "HTTP 404" in outputs["/status"]
    for channel, text in outputs.items():
        assert SECRET not in text, channel
        assert "user:" not in text, channel
