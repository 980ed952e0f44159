"""Under fire: faulty and hostile upstreams, forged addresses, resumes, full disks, the root itself.

Each test names the attack; each asserts that the last good mirror stays served and that nothing
unverified becomes visible.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import (
    Mirror,
    Upstream,
    events,
    human_lines,
    name_of,
    tarball,
    write_config,
)
from faultserver import Fault, ThreadedFaultServer
from test_sync_e2e import assert_published_verifies


def only_verified_under(mirror: Mirror, upstream: str = "up") -> None:
    """<root>/<U>/ holds only the catalog and tarballs in images/<name>/ whose name verifies."""
    base = mirror.root / upstream
    if not base.exists():
        return
    for path in base.rglob("*"):
        if path.is_dir():
            continue
        rel = path.relative_to(base).parts
        if rel == ("catalog",):
            json.loads(path.read_bytes())
            continue
        assert rel[0] == "images" and len(rel) == 3, path
        assert name_of(path.read_bytes()) == rel[1], f"unverified bytes at {path}"


def sync_with(mirror: Mirror, server: ThreadedFaultServer, **limits: object) -> Mirror:
    config = write_config(
        mirror.config,
        root=mirror.root,
        upstreams={"up": f"{server.url}/catalog"},
        limits=dict(limits),
    )
    return Mirror(mirror.root, config)


# -- transfers that go wrong ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("fault", "requests"),
    [
        (Fault(status=503, times=1), 2),
        (Fault(status=429, retry_after="0", times=2), 3),
        (Fault(truncate_after=500, times=1), 2),
        (Fault(length_delta=100, times=1), 2),
        (Fault(reset_after=0, times=1), 2),
    ],
    ids=["503-once", "429-retry-after", "truncated", "short-body-for-length", "reset-at-once"],
)
def test_transient_failures_are_retried(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, fault: Fault, requests: int
) -> None:
    """Resets, truncated bodies, 5xx and 429 are retried with backoff and the sync succeeds."""
    upstream.add("a/img.tgz", tarball(1, 50_000))
    upstream.write()
    server.set_fault("/a/img.tgz", fault)

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    assert server.requests("/a/img.tgz") == requests
    assert_published_verifies(mirror)


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=404),
        Fault(status=500),
        Fault(html=True),
        Fault(truncate_after=10, framing="close"),
        Fault(replace_body=b"other bytes"),
        Fault(length_delta=-10),
    ],
    ids=["404", "500-always", "html", "truncated-no-length", "other-bytes", "long-length"],
)
def test_failed_image_keeps_previous_entry_and_publishes_nothing_unverified(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, fault: Fault
) -> None:
    """Whatever goes wrong with a changed tarball, its previous entry stays and exit is 1."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.write()
    assert mirror.sync().returncode == 0
    before = mirror.catalog()
    upstream.images.clear()
    upstream.add("a/img.tgz", tarball(2, 5000))
    upstream.write()
    server.set_fault("/a/img.tgz", fault)

    done = mirror.sync()

    assert done.returncode == 1
    assert mirror.catalog() == before
    only_verified_under(mirror)
    assert len(human_lines(done.stderr)) == 1
    assert "Traceback" not in done.stderr


def test_slow_drip_is_aborted_by_low_speed_limit(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A transfer under low_speed_limit for low_speed_time is aborted, not waited on forever."""
    upstream.add("a/img.tgz", tarball(1, 10_000))
    upstream.write()
    server.set_fault("/a/img.tgz", Fault(drip=True, drip_interval=0.05))
    slow = sync_with(mirror, server, low_speed_limit="1KiB", low_speed_time="1s", retries=0)

    done = slow.sync()

    assert done.returncode == 1
    assert any("slower than" in line for line in human_lines(done.stderr))


def test_endless_catalog_is_cut_at_the_cap(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """An endless catalog is refused once it passes catalog_max_bytes, while it streams."""
    upstream.write()
    server.set_fault("/catalog", Fault(endless=True))
    capped = sync_with(mirror, server, catalog_max_bytes="64KiB")

    done = capped.sync()

    assert done.returncode == 1
    assert any("catalog_max_bytes" in line for line in human_lines(done.stderr))
    assert server.bytes_sent("/catalog") < 8 << 20


def test_catalog_larger_than_cap_by_content_length(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A catalog whose Content-Length exceeds the cap is refused before its body is read."""
    for i in range(40):
        upstream.add(f"a/{i}.tgz", tarball(i, 10))
    upstream.write()
    capped = sync_with(mirror, server, catalog_max_bytes="1KiB")

    done = capped.sync()

    assert done.returncode == 1
    assert any("catalog_max_bytes" in line for line in human_lines(done.stderr))


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("/catalog", "redirects"),
        ("ftp://127.0.0.1/catalog", "not http(s)"),
        ("file:///etc/passwd", "not http(s)"),
    ],
    ids=["loop", "to-ftp", "to-file"],
)
def test_bad_redirects_fail_the_catalog(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, location: str, reason: str
) -> None:
    """Redirect loops and redirects to other schemes fail with one clear line."""
    upstream.write()
    server.set_fault("/catalog", Fault(redirect_to=location))

    done = mirror.sync()

    assert done.returncode == 1
    assert any(reason in line for line in human_lines(done.stderr))


def test_redirect_chain_within_limit_is_followed(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A couple of redirects to the same host are followed."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.write("real-catalog")
    server.set_fault("/catalog", Fault(redirect_to="/hop"))
    server.set_fault("/hop", Fault(redirect_to="/real-catalog", redirect_status=301))

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    assert_published_verifies(mirror)


def test_conditional_catalog_fetch_does_nothing_on_304(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """The second sync sends the remembered validators; a 304 is a success that changes nothing."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.write()
    assert mirror.sync().returncode == 0
    state = mirror.root / ".eumirror" / "state" / "up.files.json"
    before = state.stat().st_mtime_ns

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    last = server.seen("/catalog")[-1]
    assert last.headers.get("If-None-Match")
    assert any(e.get("event") == "catalog_unchanged" for e in events(done.stderr))
    assert state.stat().st_mtime_ns == before


# -- hostile catalogs -----------------------------------------------------------------------
HOSTILE_IMAGES = {
    "fullwidth-digits": {"name": "１２３４５６７８９０"},
    "number-name": {"name": 1234567890},
    "eleven-digits": {"name": "12345678901"},
    "above-32-bits": {"name": "4294967296"},
    "empty-url": {"url": ""},
    "url-not-string": {"url": ["a.tgz"]},
    "data-url": {"url": "data:application/gzip;base64,AAAA"},
    "ftp-url": {"url": "ftp://127.0.0.1/a.tgz"},
    "file-url": {"url": "file:///etc/passwd"},
    "backslashes": {"url": "..\\..\\etc\\passwd"},
}


def test_hostile_image_entries_fail_only_themselves(
    tmp_path: Path, upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """Each hostile entry fails alone with a line of its own; the good image is published."""
    good = upstream.add("a/good.tgz", tarball(1))
    for label, patch in HOSTILE_IMAGES.items():
        upstream.images.append({**good, "description": label, **patch})
    upstream.images.append("not an object")
    upstream.write()

    done = mirror.sync()

    assert done.returncode == 1
    assert [i["description"] for i in mirror.catalog()["images"]] == [good["description"]]
    assert len(human_lines(done.stderr)) == len(HOSTILE_IMAGES) + 1
    only_verified_under(mirror)
    assert sorted(p.name for p in mirror.root.iterdir()) == [".eumirror", "up"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["upstream", "mirror", "eumirror.toml"]
    )


@pytest.mark.parametrize(
    "url",
    [
        "../../../../tmp/x.tgz",
        "%2e%2e/%2e%2e/escape.tgz",
        "a/%2e%2e%2f%2e%2e%2fescape.tgz",
        "a/%252e%252e%252fescape.tgz",
        "/abs/escape.tgz",
        ".hidden.tgz",
        "a/..",
        "a/%00nul.tgz",
    ],
)
def test_traversal_urls_never_leave_the_root(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, url: str
) -> None:
    """Dot segments and encoded traversal only ever produce a sanitised file name under <U>/."""
    data = tarball(5)
    upstream.add("a/x.tgz", data)
    upstream.images[0]["url"] = url
    upstream.write()
    server.put("/" + url.lstrip("/"), data)

    mirror.sync()

    only_verified_under(mirror)
    assert sorted(p.name for p in mirror.root.iterdir()) in ([".eumirror", "up"], [".eumirror"])
    for image in mirror.catalog()["images"] if (mirror.root / "up" / "catalog").exists() else []:
        assert image["url"].startswith(f"images/{image['name']}/")
        assert "/." not in image["url"] and ".." not in image["url"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b'\xef\xbb\xbf{"version": "v", "images": []}', "byte order mark"),
        (b'{"version": "v", "version": "w", "images": []}', "duplicate key"),
        (b'{"version": "v", "images": [], "x": NaN}', "NaN"),
        (b'{"version": "v", "images": [], "x": 1e400}', "out of range"),
        (b'{"version": "v", "images": [], "x": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested"),
        (b'["version"]', "not a JSON object"),
        (b'{"images": []}', '"version"'),
        (b'{"version": "v", "images": {}}', '"images"'),
        (b"<html><body>Not here</body></html>", "is an HTML page"),
    ],
    ids=[
        "non-utf8",
        "bom",
        "dup-keys",
        "nan",
        "huge-float",
        "huge-int",
        "deep",
        "array",
        "no-version",
        "images-object",
        "html",
    ],
)
def test_malformed_catalogs_fail_the_upstream_with_one_line(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, body: bytes, reason: str
) -> None:
    """Every JSON trap fails the upstream with one clear line and the published catalog stays."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.write()
    assert mirror.sync().returncode == 0
    before = mirror.catalog_bytes()
    server.put("/catalog", body)

    done = mirror.sync()

    assert done.returncode == 1
    assert mirror.catalog_bytes() == before
    lines = human_lines(done.stderr)
    assert len(lines) == 1 and reason in lines[0], lines
    assert "Traceback" not in done.stderr


def test_same_url_with_two_names_fails_the_second(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """Two entries with one url and different names: the first is mirrored, the second fails."""
    first = upstream.add("a/img.tgz", tarball(1))
    upstream.images.append({**first, "name": name_of(tarball(2)), "description": "twin"})
    upstream.write()

    done = mirror.sync()

    assert done.returncode == 1
    assert [i["name"] for i in mirror.catalog()["images"]] == [first["name"]]
    assert server.requests("/a/img.tgz") == 1


def test_duplicate_names_download_once(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """Two urls with the same name are fetched once; the second is a hard link."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.add("b/img.tgz", tarball(1))
    upstream.write()

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    assert server.requests("/a/img.tgz") + server.requests("/b/img.tgz") == 1
    assert_published_verifies(mirror)


# -- server-side request forgery ------------------------------------------------------------
@pytest.mark.parametrize("host", ["localhost", "0x7f.1", "2130706433", "127.1", "[::ffff:7f00:1]"])
def test_image_on_another_private_host_is_refused(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror, host: str
) -> None:
    """An absolute image url on another host that is not public is refused, however spelt."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.images[0]["url"] = f"http://{host}:{server.server.port}/a/img.tgz"
    upstream.write()

    done = mirror.sync()

    assert done.returncode == 1
    assert server.requests("/a/img.tgz") == 0
    assert any(
        "not a public address" in line or "non-public" in line for line in human_lines(done.stderr)
    ), done.stderr


def test_allow_hosts_trusts_a_private_image_host(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A host listed in the upstream's allow_hosts may be private."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.images[0]["url"] = f"http://localhost:{server.server.port}/a/img.tgz"
    upstream.write()
    text = mirror.config.read_text() + 'allow_hosts = ["localhost"]\n'
    mirror.config.write_text(text)

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    assert_published_verifies(mirror)


def test_redirect_to_private_host_is_refused(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A redirect hop to another, private host is refused like an image url would be."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.write()
    server.set_fault(
        "/a/img.tgz", Fault(redirect_to=f"http://localhost:{server.server.port}/b/img.tgz")
    )

    done = mirror.sync()

    assert done.returncode == 1
    assert server.requests("/b/img.tgz") == 0


# -- resume ---------------------------------------------------------------------------------
def test_interrupted_download_resumes_with_range(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A download that failed after its retries is kept and resumed with Range and If-Range."""
    data = tarball(1, 300_000)
    upstream.add("a/img.tgz", data)
    upstream.write()
    server.set_fault("/a/img.tgz", Fault(reset_after=200_000, times=1))
    first = sync_with(mirror, server, retries=0).sync()
    assert first.returncode == 1
    partials = list((mirror.root / ".eumirror" / "partial").glob("up/*.part"))
    assert len(partials) == 1 and partials[0].stat().st_size > 0
    kept = partials[0].stat().st_size
    server.reset_counters()

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    request = server.seen("/a/img.tgz")[-1]
    assert request.headers.get("Range") == f"bytes={kept}-"
    assert request.headers.get("If-Range")
    assert server.bytes_sent("/a/img.tgz") == len(data) - kept
    assert_published_verifies(mirror)
    assert not [p for p in (mirror.root / ".eumirror" / "partial").rglob("*") if p.is_file()]


def test_resume_answered_with_200_starts_over(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """An upstream that ignores Range sends the whole file, which replaces the kept prefix."""
    data = tarball(1, 300_000)
    upstream.add("a/img.tgz", data)
    upstream.write()
    server.set_fault("/a/img.tgz", Fault(reset_after=100_000, times=1), Fault(no_range=True))
    assert sync_with(mirror, server, retries=0).sync().returncode == 1

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    assert_published_verifies(mirror)


def test_stale_partials_are_cleaned(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A partial download nobody plans any more is removed at the end of the next sync."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.write()
    assert mirror.sync().returncode == 0
    stale = mirror.root / ".eumirror" / "partial" / "up" / "0000000001.deadbeef.part"
    stale.write_bytes(b"old")

    assert mirror.sync().returncode == 0

    assert not stale.exists()


# -- the root itself ------------------------------------------------------------------------
def test_symlinked_upstream_folder_leading_outside_is_refused(
    tmp_path: Path, upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A <root>/<U> symlink to somewhere else is refused; nothing is written there."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.write()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    mirror.root.mkdir()
    (mirror.root / "up").symlink_to(elsewhere)

    done = mirror.sync()

    assert done.returncode == 1
    assert list(elsewhere.iterdir()) == []
    assert any("symlink" in line for line in human_lines(done.stderr))


def test_symlinked_images_folder_is_refused(
    tmp_path: Path, upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A symlinked images/ folder inside <U> that leads outside the root gets nothing written."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.write()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (mirror.root / "up").mkdir(parents=True)
    (mirror.root / "up" / "images").symlink_to(elsewhere)

    done = mirror.sync()

    assert done.returncode == 1
    assert list(elsewhere.rglob("*.tgz")) == []


# -- full disks and read-only roots ---------------------------------------------------------
def test_download_larger_than_free_space_is_refused(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """Content-Length beyond free space minus the reserve fails the image with need/have."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.write()
    assert mirror.sync().returncode == 0
    before = mirror.catalog_bytes()
    upstream.add("a/big.tgz", tarball(2, 100_000))
    upstream.write()
    full = sync_with(mirror, server, free_space_reserve="1000000GiB")

    done = full.sync()

    assert done.returncode == 1
    assert mirror.catalog()["images"] == json.loads(before)["images"]
    line = " ".join(human_lines(done.stderr))
    assert "need" in line and "have" in line


NAMESPACE_REASON = "needs root and unshare(1) for a private mount namespace"
can_unshare = os.geteuid() == 0 and shutil.which("unshare") is not None


def in_namespace(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-euc", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(not can_unshare, reason=NAMESPACE_REASON)
def test_enospc_mid_write_fails_the_image_and_keeps_the_catalog(
    tmp_path: Path, upstream: Upstream, server: ThreadedFaultServer
) -> None:
    """On a real ENOSPC the image fails, its temp file is removed, the old catalog stays."""
    upstream.add("a/small.tgz", tarball(1, 10_000))
    upstream.write()
    root = tmp_path / "tmpfs"
    root.mkdir()
    config = write_config(
        tmp_path / "c.toml",
        root=root,
        upstreams={"up": f"{server.url}/catalog"},
        limits={"free_space_reserve": "0B", "retries": 0},
    )
    cli = f"{sys.executable} -m eumirror sync --once --config {config}"
    upstream_two = Upstream(upstream.folder, list(upstream.images))
    upstream_two.add("a/huge.tgz", tarball(2, 3 << 20))
    (upstream.folder / "catalog2").write_text(json.dumps(upstream_two.document()))
    server.set_fault("/a/huge.tgz", Fault(framing="chunked"))
    script = f"""
mount -t tmpfs -o size=1m tmpfs {root}
{cli} 2>/dev/null
cp {root}/up/catalog {tmp_path}/before
mv {upstream.folder}/catalog2 {upstream.folder}/catalog
set +e
{cli} 2>{tmp_path}/err
echo "exit=$?"
set -e
cmp {root}/up/catalog {tmp_path}/before && echo same-catalog
ls -A {root}/.eumirror/partial {root}/.eumirror/tmp
find {root}/up -type f
"""
    done = in_namespace(script)

    assert "exit=1" in done.stdout, done.stdout + done.stderr
    assert "same-catalog" in done.stdout
    assert ".part" not in done.stdout
    assert "huge.tgz" not in done.stdout
    err = (tmp_path / "err").read_text()
    # the run's space budget refuses before the device does; either way one plain line
    assert ("no space left" in err or "not enough space" in err) and "Traceback" not in err


@pytest.mark.skipif(not can_unshare, reason=NAMESPACE_REASON)
def test_read_only_root_names_the_path_and_the_unit_setting(
    tmp_path: Path, upstream: Upstream, server: ThreadedFaultServer
) -> None:
    """EROFS on the root is one line naming the path and hinting at ReadWritePaths."""
    upstream.add("a/small.tgz", tarball(1))
    upstream.write()
    root = tmp_path / "ro"
    root.mkdir()
    config = write_config(tmp_path / "c.toml", root=root, upstreams={"up": f"{server.url}/catalog"})
    script = f"""
mount --bind {root} {root}
mount -o remount,bind,ro {root}
set +e
{sys.executable} -m eumirror sync --once --config {config} 2>{tmp_path}/err
echo "exit=$?"
"""
    done = in_namespace(script)

    assert "exit=1" in done.stdout, done.stdout + done.stderr
    lines = human_lines((tmp_path / "err").read_text())
    assert len(lines) == 1
    assert str(root) in lines[0] and "ReadWritePaths" in lines[0]


# -- signals --------------------------------------------------------------------------------
def test_sigterm_mid_download_cleans_up_and_exits_143(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """SIGTERM during a download: exit 128+15, nothing partial published, lock released."""
    upstream.add("a/img.tgz", tarball(1, 100_000))
    upstream.write()
    gate, arrived = threading.Event(), threading.Event()
    server.set_fault("/a/img.tgz", Fault(gate=gate, gate_after=50_000, on_request=arrived))
    proc = subprocess.Popen(
        [sys.executable, "-m", "eumirror", "sync", "--once", "--config", str(mirror.config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert arrived.wait(30)
        server.wait_for_requests("/a/img.tgz", 1, timeout=30)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 128 + signal.SIGTERM, err
    assert not (mirror.root / "up" / "catalog").exists()
    only_verified_under(mirror)
    assert mirror.sync().returncode == 0


def test_complete_partial_from_a_killed_run_is_published_without_a_request(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A partial that already holds every verified byte (killed before its rename) is reused."""
    import hashlib

    data = tarball(1, 100_000)
    upstream.add("a/img.tgz", data)
    upstream.write()
    partial_dir = mirror.root / ".eumirror" / "partial" / "up"
    partial_dir.mkdir(parents=True)
    key = hashlib.sha1(f"{server.url}/a/img.tgz".encode()).hexdigest()[:16]
    (partial_dir / f"{name_of(data)}.{key}.part").write_bytes(data)

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    assert server.requests("/a/img.tgz") == 0
    assert_published_verifies(mirror)


def test_a_published_file_changed_behind_our_back_is_not_trusted(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A tarball altered on disk fails the state's stat check and is fetched again."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    assert mirror.sync().returncode == 0
    url = mirror.catalog()["images"][0]["url"]
    (mirror.root / "up" / url).write_bytes(b"bit rot")
    upstream.add("a/two.tgz", tarball(2))
    upstream.write()
    server.reset_counters()

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    assert server.requests("/a/one.tgz") == 1
    assert_published_verifies(mirror)


@pytest.mark.skipif(not can_unshare, reason=NAMESPACE_REASON)
def test_catalog_that_does_not_fit_leaves_the_published_one_whole(
    tmp_path: Path, upstream: Upstream, server: ThreadedFaultServer
) -> None:
    """ENOSPC while writing the new catalog: the published catalog stays byte-identical."""
    upstream.add("a/small.tgz", tarball(1, 1000))
    upstream.write()
    root = tmp_path / "tmpfs"
    root.mkdir()
    config = write_config(
        tmp_path / "c.toml",
        root=root,
        upstreams={"up": f"{server.url}/catalog"},
        limits={"free_space_reserve": "0B", "catalog_max_bytes": "8MiB"},
    )
    cli = f"{sys.executable} -m eumirror sync --once --config {config}"
    bigger = Upstream(upstream.folder, [dict(upstream.images[0])])
    bigger.images[0]["description"] = "x" * (1536 * 1024)
    (upstream.folder / "catalog2").write_text(json.dumps(bigger.document()))
    script = f"""
mount -t tmpfs -o size=1m tmpfs {root}
{cli} 2>/dev/null
cp {root}/up/catalog {tmp_path}/before
mv {upstream.folder}/catalog2 {upstream.folder}/catalog
set +e
{cli} 2>{tmp_path}/err
echo "exit=$?"
set -e
cmp {root}/up/catalog {tmp_path}/before && echo same-catalog
ls -A {root}/.eumirror/tmp
"""
    done = in_namespace(script)

    assert "exit=1" in done.stdout, done.stdout + done.stderr
    assert "same-catalog" in done.stdout, done.stdout + done.stderr
    assert ".tmp" not in done.stdout
    assert "no space left" in (tmp_path / "err").read_text()
