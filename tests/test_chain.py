"""Mirrors of mirrors on loopback: three tiers pulling from each other's content servers, pushes
through `POST /sync`, and the daemon's content server and counters."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Mirror, Upstream, name_of, run_cli, tarball, write_config
from faultserver import ThreadedFaultServer
from prometheus_client.parser import text_string_to_metric_families
from serving import Process, serve_section
from test_sync_e2e import assert_published_verifies

TOKEN = "s3cr3t-token"


@pytest.fixture
def processes() -> Iterator[Callable[[str, Path], Process]]:
    """Start eumirror processes; every one is killed at the end of the test."""
    started: list[Process] = []

    def start(command: str, config: Path) -> Process:
        proc = Process(command, config)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()


def tier_config(
    folder: Path,
    catalog: str,
    *,
    notify: str = "",
    token_file: Path | None = None,
    daemon: bool = False,
) -> Path:
    """A tier's config: one upstream `up`, serving on a free loopback port."""
    extra = ""
    if notify:
        token = json.dumps(str(folder.parent / "token"))
        extra += f"notify = [{json.dumps(notify)}]\nnotify_token_file = {token}\n"
    extra += serve_section()
    if daemon:
        extra += '[status]\nlisten = "127.0.0.1:0"\n'
        if token_file is not None:
            extra += f"trigger_token_file = {json.dumps(str(token_file))}\n"
        extra += '[schedule]\ninterval = "1d"\n'
    folder.mkdir(exist_ok=True)
    return write_config(
        folder / "eumirror.toml", root=folder / "root", upstreams={"up": catalog}, extra=extra
    )


def names(mirror: Mirror) -> set[str]:
    return {image["name"] for image in mirror.catalog()["images"]}


def assert_tier_verifies(mirror: Mirror, expected: set[str]) -> None:
    """The tier's catalog lists exactly `expected`, every url verifies, and `verify` agrees."""
    assert names(mirror) == expected
    assert_published_verifies(mirror)
    done = run_cli("verify", "--config", str(mirror.config))
    assert done.returncode == 0, done.stderr


def test_three_tiers_pull_a_change_down(
    upstream: Upstream,
    server: ThreadedFaultServer,
    tmp_path: Path,
    processes: Callable[[str, Path], Process],
) -> None:
    """Tier 2 mirrors tier 1's `/up/catalog` and tier 3 tier 2's: every tier verifies, an
    unchanged tier 1 costs tier 2 one 304, and a change at the top reaches the bottom."""
    upstream.add("a.tgz", tarball(1))
    upstream.add("sub/b.tgz", tarball(2))
    upstream.write()
    tiers: list[Mirror] = []
    servers: list[Process] = []
    catalog = f"{server.url}/catalog"
    for level in (1, 2, 3):
        config = tier_config(tmp_path / f"tier{level}", catalog)
        tiers.append(Mirror(tmp_path / f"tier{level}" / "root", config))
        done = tiers[-1].sync()
        assert done.returncode == 0, done.stderr
        if level < 3:
            servers.append(processes("serve", config))
            catalog = f"{servers[-1].base()}/up/catalog"
    expected = {name_of(tarball(1)), name_of(tarball(2))}
    for mirror in tiers:
        assert_tier_verifies(mirror, expected)

    before = len(servers[0].events("http_request"))
    again = tiers[1].sync()
    assert again.returncode == 0, again.stderr
    assert '"catalog_unchanged"' in again.stderr
    served = servers[0].wait_event("http_request", count=before + 1)
    assert (served["path"], served["status"]) == ("/up/catalog", 304)
    assert len(servers[0].events("http_request")) == before + 1, "more than the one 304"

    upstream.add("c.tgz", tarball(3))
    upstream.write()
    for mirror in tiers:
        done = mirror.sync()
        assert done.returncode == 0, done.stderr
    for mirror in tiers:
        assert_tier_verifies(mirror, expected | {name_of(tarball(3))})


def test_pushes_carry_a_change_down_before_the_schedule(
    upstream: Upstream,
    server: ThreadedFaultServer,
    tmp_path: Path,
    processes: Callable[[str, Path], Process],
) -> None:
    """Three daemons on a one-day schedule: a change synced at tier 1 is pushed to tier 2 and
    on to tier 3 through `POST /sync` within seconds, verified at every tier."""
    upstream.add("a.tgz", tarball(1))
    upstream.write()
    (tmp_path / "token").write_text(TOKEN + "\n")
    catalog = f"{server.url}/catalog"
    configs: list[Path] = []
    daemons: list[Process] = []
    for level in (1, 2, 3):
        folder = tmp_path / f"tier{level}"
        configs.append(tier_config(folder, catalog, token_file=tmp_path / "token", daemon=True))
        daemons.append(processes("sync", configs[-1]))
        daemons[-1].idle_after(1)
        catalog = f"{daemons[-1].base()}/up/catalog"
    # Now that every status port is known, each tier notifies the one below; SIGHUP reloads.
    for level in (1, 2):
        below = daemons[level].listen
        folder = tmp_path / f"tier{level}"
        tier_config(
            folder,
            _catalog_of(configs[level - 1]),
            notify=f"http://{below}/sync",
            token_file=tmp_path / "token",
            daemon=True,
        )
        daemons[level - 1].send(signal.SIGHUP)
        daemons[level - 1].wait_event("reloaded")

    upstream.add("b.tgz", tarball(2))
    upstream.write()
    began = time.monotonic()
    daemons[0].send(signal.SIGUSR1)  # tier 1 notices the change (its schedule would, in a day)
    bottom = Mirror(tmp_path / "tier3" / "root", configs[2])
    want = name_of(tarball(2))
    deadline = began + 30
    while not ((bottom.root / "up" / "catalog").exists() and want in names(bottom)):
        assert time.monotonic() < deadline, "the change never reached tier 3"
        time.sleep(0.05)
    assert time.monotonic() - began < 30
    daemons[0].wait_event("downstream_notified")
    daemons[1].wait_event("downstream_notified")
    for proc in daemons:
        proc.idle_after(2)
        assert proc.stop() == 0
    for level, config in enumerate(configs, 1):
        assert_tier_verifies(
            Mirror(tmp_path / f"tier{level}" / "root", config), {name_of(tarball(1)), want}
        )


def _catalog_of(config: Path) -> str:
    for line in config.read_text().splitlines():
        if line.startswith("catalog = "):
            return str(json.loads(line.split("=", 1)[1]))
    raise AssertionError(f"no catalog in {config}")


def test_post_sync_needs_the_token_and_is_rate_limited(
    upstream: Upstream,
    server: ThreadedFaultServer,
    tmp_path: Path,
    processes: Callable[[str, Path], Process],
) -> None:
    """POST /sync: 401 without or with a wrong token, 202 with it (a sync follows), and 429 with
    Retry-After once a client asks too often."""
    upstream.add("a.tgz", tarball(1))
    upstream.write()
    (tmp_path / "token").write_text(TOKEN + "\n")
    config = tier_config(
        tmp_path / "t", f"{server.url}/catalog", token_file=tmp_path / "token", daemon=True
    )
    daemon = processes("sync", config)
    daemon.idle_after(1)
    post = "POST"
    code, _, _ = daemon.request(post, "/sync", event="status_listening")
    assert code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    code, headers, _ = daemon.request(post, "/sync", wrong, event="status_listening")
    assert code == 401 and headers["www-authenticate"] == "Bearer"
    right = {"Authorization": f"Bearer {TOKEN}"}
    code, _, _ = daemon.request(post, "/sync", right, event="status_listening")
    assert code == 202
    daemon.idle_after(2)
    codes = []
    for _ in range(12):
        code, headers, _ = daemon.request(post, "/sync", right, event="status_listening")
        codes.append(code)
        if code == 429:
            assert int(headers["retry-after"]) >= 1
            break
    assert codes[-1] == 429, codes


def test_post_sync_is_404_without_a_token_file(
    upstream: Upstream,
    server: ThreadedFaultServer,
    tmp_path: Path,
    processes: Callable[[str, Path], Process],
) -> None:
    """Without [status] trigger_token_file there is no POST /sync."""
    upstream.add("a.tgz", tarball(1))
    upstream.write()
    config = tier_config(tmp_path / "t", f"{server.url}/catalog", daemon=True)
    daemon = processes("sync", config)
    daemon.idle_after(1)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    code, _, _ = daemon.request("POST", "/sync", headers, event="status_listening")
    assert code == 404


def test_daemon_serves_and_counts(
    upstream: Upstream,
    server: ThreadedFaultServer,
    tmp_path: Path,
    processes: Callable[[str, Path], Process],
) -> None:
    """The daemon's [serve] answers the mirror; /metrics counts requests by code and bytes, and
    a downstream that refused its push."""
    upstream.add("a.tgz", tarball(1, 50_000))
    upstream.write()
    (tmp_path / "token").write_text(TOKEN)
    config = tier_config(
        tmp_path / "t", f"{server.url}/catalog", notify=f"{server.url}/nope", daemon=True
    )
    daemon = processes("sync", config)
    daemon.idle_after(1)
    code, _, body = daemon.request("GET", "/up/catalog")
    assert code == 200
    url = json.loads(body)["images"][0]["url"]
    code, _, data = daemon.request("GET", f"/up/{url}")
    assert code == 200 and len(data) == 50_000
    assert daemon.request("GET", "/up/nothing")[0] == 404
    daemon.wait_event("downstream_not_notified")
    _, _, text = daemon.request("GET", "/metrics", event="status_listening")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }
    assert samples[("eumirror_http_requests_total", (("code", "200"),))] >= 2
    assert samples[("eumirror_http_requests_total", (("code", "404"),))] >= 1
    assert samples[("eumirror_http_sent_bytes_total", ())] >= 50_000 + len(body)
    assert samples[("eumirror_notify_failures_total", (("upstream", "up"),))] == 1


def test_failed_notify_never_fails_the_sync(
    upstream: Upstream, server: ThreadedFaultServer, tmp_path: Path
) -> None:
    """A downstream that refuses the push is retried, logged and left: the sync still exits 0."""
    upstream.add("a.tgz", tarball(1))
    upstream.write()
    (tmp_path / "token").write_text(TOKEN)
    config = tier_config(
        tmp_path / "t", f"{server.url}/catalog", notify=f"{server.url}/no-such-sync"
    )
    done = run_cli("sync", "--once", "--config", str(config))
    assert done.returncode == 0, done.stderr
    failed = [json.loads(x) for x in done.stderr.splitlines() if "downstream_not_notified" in x]
    assert failed and failed[0]["upstream"] == "up" and "HTTP 405" in failed[0]["error"]
    unchanged = run_cli("sync", "--once", "--config", str(config))
    assert unchanged.returncode == 0
    assert "downstream_not_notified" not in unchanged.stderr, "no publish, no push"
