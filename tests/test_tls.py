"""https upstreams: SSL_CERT_FILE is honoured, bad certificates fail clearly, no downgrade."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Mirror, Upstream, human_lines, run_cli, tarball, write_config
from faultserver import Fault, ThreadedFaultServer, self_signed, server_context
from test_sync_e2e import assert_published_verifies


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def https_server(
    upstream: Upstream, certificate: tuple[Path, Path]
) -> Iterator[ThreadedFaultServer]:
    with ThreadedFaultServer(upstream.folder, ssl_context=server_context(*certificate)) as srv:
        yield srv


def test_https_upstream_with_ca_from_ssl_cert_file(
    tmp_path: Path,
    upstream: Upstream,
    https_server: ThreadedFaultServer,
    certificate: tuple[Path, Path],
) -> None:
    """An https upstream whose CA comes from SSL_CERT_FILE mirrors; without it, one clear line."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.write()
    root = tmp_path / "root"
    config = write_config(
        tmp_path / "c.toml", root=root, upstreams={"up": f"{https_server.url}/catalog"}
    )

    refused = run_cli(
        "sync", "--once", "--config", str(config), env={"SSL_CERT_FILE": "/nonexistent-ca.pem"}
    )
    assert refused.returncode == 1
    lines = human_lines(refused.stderr)
    assert len(lines) == 1 and "certificate" in lines[0].lower(), refused.stderr

    done = run_cli(
        "sync", "--once", "--config", str(config), env={"SSL_CERT_FILE": str(certificate[0])}
    )
    assert done.returncode == 0, done.stderr
    assert_published_verifies(Mirror(root, config))


def test_https_to_http_redirect_is_refused(
    tmp_path: Path,
    upstream: Upstream,
    https_server: ThreadedFaultServer,
    server: ThreadedFaultServer,
    certificate: tuple[Path, Path],
) -> None:
    """A redirect from https to http is never followed, even to the same host."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.write()
    https_server.set_fault("/a/img.tgz", Fault(redirect_to=f"{server.url}/a/img.tgz"))
    config = write_config(
        tmp_path / "c.toml", root=tmp_path / "root", upstreams={"up": f"{https_server.url}/catalog"}
    )

    done = run_cli(
        "sync", "--once", "--config", str(config), env={"SSL_CERT_FILE": str(certificate[0])}
    )

    assert done.returncode == 1
    assert server.requests("/a/img.tgz") == 0
    assert any("https to http" in line for line in human_lines(done.stderr))


def test_https_upstream_with_its_own_ca_file(
    tmp_path: Path,
    upstream: Upstream,
    https_server: ThreadedFaultServer,
    certificate: tuple[Path, Path],
) -> None:
    """`ca_file` in the upstream's table trusts the private CA for that upstream alone; without
    it the line names host:port and what to set."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.write()
    root = tmp_path / "root"
    config = write_config(
        tmp_path / "c.toml", root=root, upstreams={"up": f"{https_server.url}/catalog"}
    )
    refused = run_cli("sync", "--once", "--config", str(config))
    port = https_server.url.rpartition(":")[2]
    assert human_lines(refused.stderr) == [
        f"eumirror: up: catalog {https_server.url}/catalog: TLS: the certificate of "
        f"127.0.0.1:{port} is self-signed (set SSL_CERT_FILE or the upstream's ca_file); "
        "nothing has been published for it yet; run `eumirror sync --once` again once that is "
        "fixed"
    ]

    config.write_text(config.read_text() + f"ca_file = {json.dumps(str(certificate[0]))}\n")
    done = run_cli("sync", "--once", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert_published_verifies(Mirror(root, config))
