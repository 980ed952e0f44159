"""`eumirror sync --once` end to end: a loopback upstream, a real root, the CLI as a process."""

from __future__ import annotations

import gzip
import json
import os
import stat
from pathlib import Path
from urllib.parse import unquote

from conftest import Mirror, Upstream, events, human_lines, name_of, run_cli, tarball, write_config
from faultserver import Fault, ThreadedFaultServer

from eumirror.core.names import name_of_chunks


def assert_published_verifies(mirror: Mirror, upstream: str = "up") -> None:
    """Every url of the published catalog is a file under <root>/<U>/ whose name verifies."""
    doc = mirror.catalog(upstream)
    for image in doc["images"]:
        path = mirror.root / upstream / unquote(image["url"])
        assert path.resolve().is_relative_to((mirror.root / upstream).resolve())
        assert name_of_chunks([path.read_bytes()]) == image["name"], image["url"]


def test_basic_mirror_layout_and_fields(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """Relative urls in subfolders, an absolute same-server url, a %-encoded file name and two
    images with the same file name in different folders are all mirrored and verified."""
    a = upstream.add("starter-emis/a.tgz", tarball(1), extra={"nested": [1, 2.5, None]})
    upstream.add("other/b c.tgz", tarball(2), url="other/b%20c.tgz")
    upstream.add("abs/d.tgz", tarball(3), url=f"{server.url}/abs/d.tgz")
    upstream.add("one/same.tgz", tarball(4))
    upstream.add("two/same.tgz", tarball(5))
    upstream.extra_top = {"publisher": "test", "count": 5}
    upstream.write()

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    doc = mirror.catalog()
    assert list(doc) == ["version", "publisher", "count", "images"]
    assert doc["version"] == "eustore-catalog-2011-12-29"
    assert [i["name"] for i in doc["images"]] == [i["name"] for i in upstream.images]
    for got, want in zip(doc["images"], upstream.images, strict=True):
        assert {k: v for k, v in got.items() if k != "url"} == {
            k: v for k, v in want.items() if k != "url"
        }
        assert got["url"].startswith(f"images/{want['name']}/")
    assert doc["images"][0]["extra"] == a["extra"]
    assert doc["images"][1]["url"].endswith("/b%20c.tgz")
    assert_published_verifies(mirror)
    top = sorted(p.name for p in mirror.root.iterdir())
    assert top == [".eumirror", "up"]
    assert stat.S_IMODE((mirror.root / ".eumirror").stat().st_mode) == 0o700
    for path in (mirror.root / "up").rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), path


def test_second_sync_of_unchanged_upstream_requests_no_tarball(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A second sync makes zero tarball requests and leaves the catalog byte-identical."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.add("b/two.tgz", tarball(2))
    upstream.write()
    assert mirror.sync().returncode == 0
    before = mirror.catalog_bytes()
    server.reset_counters()

    again = mirror.sync()

    assert again.returncode == 0, again.stderr
    assert server.requests("/a/one.tgz") == 0
    assert server.requests("/b/two.tgz") == 0
    assert server.requests("/catalog") == 1
    assert mirror.catalog_bytes() == before


def test_changed_catalog_reuses_unchanged_tarballs(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """When the catalog changes, only new or changed tarballs are fetched."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    assert mirror.sync().returncode == 0
    upstream.add("a/new.tgz", tarball(9))
    upstream.write()
    server.reset_counters()

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    assert server.requests("/a/one.tgz") == 0
    assert server.requests("/a/new.tgz") == 1
    assert len(mirror.catalog()["images"]) == 2
    assert_published_verifies(mirror)


def test_changed_tarball_gets_new_path_and_old_file_survives_grace(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """Same url with a new name is downloaded to a new path; the old file is kept for the grace
    period, then deleted once unreferenced."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.write()
    assert mirror.sync().returncode == 0
    old_url = mirror.catalog()["images"][0]["url"]
    upstream.images.clear()
    upstream.add("a/img.tgz", tarball(2))
    upstream.write()

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    new_url = mirror.catalog()["images"][0]["url"]
    assert new_url != old_url
    assert (mirror.root / "up" / old_url).exists(), "kept during keep_removed"
    assert_published_verifies(mirror)
    short = write_config(
        mirror.config,
        root=mirror.root,
        upstreams={"up": f"{server.url}/catalog"},
        mirror={"keep_removed": "0s", "keep_generations": 1},  # no older generation keeps it
    )
    assert run_cli("sync", "--once", "--config", str(short)).returncode == 0
    assert not (mirror.root / "up" / old_url).exists()
    assert not (mirror.root / "up" / old_url).parent.exists()


def test_wrong_bytes_fail_the_image_and_keep_its_previous_entry(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """Bytes that do not match the name: exit 1, nothing unverified published, old entry kept."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.add("a/other.tgz", tarball(5))
    upstream.write()
    assert mirror.sync().returncode == 0
    before = mirror.catalog()
    upstream.images[0]["name"] = name_of(tarball(2))
    upstream.images[1]["description"] = "changed"
    upstream.write()

    done = mirror.sync()

    assert done.returncode == 1
    doc = mirror.catalog()
    assert doc["images"][0] == before["images"][0]
    assert doc["images"][1]["description"] == "changed"
    assert not (mirror.root / "up" / "images" / name_of(tarball(2))).exists()
    assert_published_verifies(mirror)
    lines = human_lines(done.stderr)
    assert any("a/img.tgz" in line and "kept its previous entry" in line for line in lines)
    assert not list((mirror.root / ".eumirror" / "partial").rglob("*.part"))


def test_new_image_with_wrong_bytes_is_left_out(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A new image that fails verification is left out; the rest publishes; exit 1."""
    upstream.add("a/good.tgz", tarball(1))
    upstream.add("a/bad.tgz", tarball(2))
    upstream.images[1]["name"] = name_of(tarball(3))
    upstream.write()

    done = mirror.sync()

    assert done.returncode == 1
    assert [i["name"] for i in mirror.catalog()["images"]] == [name_of(tarball(1))]
    assert any("left out" in line for line in human_lines(done.stderr))


def test_reset_on_first_attempt_is_retried(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A connection reset mid-body is transient: retried, and the sync succeeds."""
    upstream.add("a/img.tgz", tarball(1, 200_000))
    upstream.write()
    server.set_fault("/a/img.tgz", Fault(reset_after=1000, times=1))

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    assert server.requests("/a/img.tgz") == 2
    assert_published_verifies(mirror)


def test_catalog_500_keeps_published_catalog_byte_identical(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A catalog that keeps failing with 500: exit 1, one clear line, nothing changes."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.write()
    assert mirror.sync().returncode == 0
    before = mirror.catalog_bytes()
    files = mirror.files()
    server.set_fault("/catalog", Fault(status=500))

    done = mirror.sync()

    assert done.returncode == 1
    assert mirror.catalog_bytes() == before
    assert mirror.files() == files
    lines = human_lines(done.stderr)
    assert len(lines) == 1 and "HTTP 500" in lines[0] and "unchanged" in lines[0]
    assert "Traceback" not in done.stderr


def test_malformed_catalog_keeps_published_catalog(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """Malformed JSON fails the upstream with one line; the published catalog stays."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.write()
    assert mirror.sync().returncode == 0
    before = mirror.catalog_bytes()
    (upstream.folder / "catalog").write_text('{"version": "x", "images": [')

    done = mirror.sync()

    assert done.returncode == 1
    assert mirror.catalog_bytes() == before
    lines = human_lines(done.stderr)
    assert len(lines) == 1 and "not valid JSON" in lines[0]


def test_image_removed_upstream_is_dropped(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """An image gone upstream leaves the catalog; its file waits for keep_removed."""
    for i in range(4):
        upstream.add(f"a/{i}.tgz", tarball(i))
    upstream.write()
    assert mirror.sync().returncode == 0
    gone = upstream.images.pop()
    upstream.write()

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    names = [i["name"] for i in mirror.catalog()["images"]]
    assert gone["name"] not in names and len(names) == 3
    assert (mirror.root / "up" / "images" / gone["name"]).exists()


def test_shrink_guard_refuses_then_allow_shrink_publishes(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A catalog dropping most images is refused (exit 1) unless --allow-shrink."""
    for i in range(4):
        upstream.add(f"a/{i}.tgz", tarball(i))
    upstream.write()
    assert mirror.sync().returncode == 0
    before = mirror.catalog_bytes()
    del upstream.images[1:]
    upstream.write()

    refused = mirror.sync()

    assert refused.returncode == 1
    assert mirror.catalog_bytes() == before
    assert any("max_shrink" in line for line in human_lines(refused.stderr))
    allowed = mirror.sync("--allow-shrink")
    assert allowed.returncode == 0, allowed.stderr
    assert len(mirror.catalog()["images"]) == 1


def test_empty_catalog_is_refused(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """An upstream that suddenly publishes no images does not empty the mirror."""
    upstream.add("a/0.tgz", tarball(0))
    upstream.write()
    assert mirror.sync().returncode == 0
    before = mirror.catalog_bytes()
    upstream.images.clear()
    upstream.write()

    done = mirror.sync()

    assert done.returncode == 1
    assert mirror.catalog_bytes() == before
    assert any("empty" in line for line in human_lines(done.stderr))


def test_gzip_content_encoding_is_stored_byte_for_byte(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A .tgz served with Content-Encoding: gzip is stored exactly as served, not decompressed."""
    data = gzip.compress(tarball(7, 50_000), mtime=0)
    upstream.add("a/img.tgz", data)
    upstream.write()
    server.set_fault("/a/img.tgz", Fault(gzip_header=True))

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    (path,) = (mirror.root / "up" / "images").rglob("img.tgz")
    assert path.read_bytes() == data
    seen = server.seen("/a/img.tgz")
    assert seen[0].headers.get("Accept-Encoding") == "identity"
    assert seen[0].headers.get("User-Agent", "").startswith("eumirror/")


def test_file_upstream_and_plain_path(tmp_path: Path, upstream: Upstream) -> None:
    """file:// and plain-path catalogs mirror with the same verification."""
    upstream.add("sub/a.tgz", tarball(1))
    upstream.add("sub/b.tgz", tarball(2))
    upstream.write()
    root = tmp_path / "root"
    config = write_config(
        tmp_path / "c.toml",
        root=root,
        upstreams={"viaurl": (upstream.folder / "catalog").as_uri(), "viapath": "upstream/catalog"},
    )

    done = run_cli("sync", "--once", "--config", str(config))

    assert done.returncode == 0, done.stderr
    for name in ("viaurl", "viapath"):
        assert_published_verifies(Mirror(root, config), name)


def test_file_upstream_refuses_images_outside_its_folder(
    tmp_path: Path, upstream: Upstream
) -> None:
    """A file catalog's image outside the catalog's folder fails; nothing is read from there."""
    outside = tmp_path / "secret.tgz"
    outside.write_bytes(tarball(3))
    upstream.add("sub/a.tgz", tarball(1))
    upstream.images.append(
        {**upstream.images[0], "name": name_of(tarball(3)), "url": "../secret.tgz"}
    )
    (upstream.folder / "link.tgz").symlink_to(outside)
    upstream.images.append({**upstream.images[0], "name": name_of(tarball(3)), "url": "link.tgz"})
    upstream.write()
    root = tmp_path / "root"
    config = write_config(tmp_path / "c.toml", root=root, upstreams={"up": "upstream/catalog"})

    done = run_cli("sync", "--once", "--config", str(config))

    assert done.returncode == 1
    doc = Mirror(root, config).catalog()
    assert [i["name"] for i in doc["images"]] == [name_of(tarball(1))]
    assert not (root / "up" / "images" / name_of(tarball(3))).exists()


def test_dry_run_writes_nothing(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """--dry-run prints the plan and writes nothing, not even the root."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.write()

    done = mirror.sync("--dry-run")

    assert done.returncode == 0, done.stderr
    assert "download" in done.stdout and "new image" in done.stdout
    assert not mirror.root.exists()
    assert server.requests("/a/img.tgz") == 0


def test_dry_run_on_existing_mirror_changes_nothing(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """--dry-run on a synced mirror reports reuse and drop and leaves every file as it was."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.add("a/two.tgz", tarball(2))
    upstream.write()
    assert mirror.sync().returncode == 0
    snapshot = {p: p.read_bytes() for p in mirror.root.rglob("*") if p.is_file()}
    upstream.images.pop()
    upstream.add("a/three.tgz", tarball(3))
    upstream.write()

    done = mirror.sync("--dry-run")

    assert done.returncode == 0, done.stderr
    assert "reuse" in done.stdout and "drop" in done.stdout and "download" in done.stdout
    assert {p: p.read_bytes() for p in mirror.root.rglob("*") if p.is_file()} == snapshot


def test_lock_held_exits_3(upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror) -> None:
    """A second sync while the lock is held exits 3 at once, naming the holder's pid."""
    import fcntl

    upstream.add("a/img.tgz", tarball(1))
    upstream.write()
    assert mirror.sync().returncode == 0
    fd = os.open(mirror.root / ".eumirror" / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"4242\n", 0)
        done = mirror.sync()
        verify = run_cli("verify", "--config", str(mirror.config))
    finally:
        os.close(fd)

    assert done.returncode == 3
    assert "pid 4242" in done.stderr
    assert verify.returncode == 3


def test_verify_reports_a_corrupted_tarball(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """verify re-hashes every published tarball and names each mismatch (exit 1)."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.add("a/two.tgz", tarball(2))
    upstream.write()
    assert mirror.sync().returncode == 0
    assert run_cli("verify", "--config", str(mirror.config)).returncode == 0
    url = mirror.catalog()["images"][1]["url"]
    (mirror.root / "up" / url).write_bytes(b"corrupted")

    done = run_cli("verify", "--config", str(mirror.config))

    assert done.returncode == 1
    lines = human_lines(done.stderr)
    assert len(lines) == 1 and "two.tgz" in lines[0]


def test_corrupt_state_is_rebuilt_without_downloading(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """Corrupt or unknown-version state is rebuilt by re-verifying the files, not re-downloading."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    assert mirror.sync().returncode == 0
    state = mirror.root / ".eumirror" / "state"
    (state / "up.files.json").write_text("{not json")
    (state / "up.meta.json").write_text(json.dumps({"format": 999}))
    server.reset_counters()

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    assert server.requests("/a/one.tgz") == 0
    assert_published_verifies(mirror)


def test_same_name_elsewhere_is_linked_not_downloaded(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A tarball whose name is already verified in the mirror is not downloaded again."""
    upstream.add("a/img.tgz", tarball(1))
    upstream.write()
    assert mirror.sync().returncode == 0
    upstream.add("b/renamed.tgz", tarball(1))
    upstream.write()
    server.reset_counters()

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    assert server.requests("/b/renamed.tgz") == 0
    assert_published_verifies(mirror)
    assert any(
        e.get("event") == "upstream_done" and e.get("linked") == 1 for e in events(done.stderr)
    )


def test_verify_never_reads_outside_the_upstream_folder(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A tampered published catalog pointing at an encoded absolute path is reported, not read."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    assert mirror.sync().returncode == 0
    doc = mirror.catalog()
    doc["images"][0]["url"] = "%2Fetc%2Fpasswd"
    (mirror.root / "up" / "catalog").write_text(json.dumps(doc))

    done = run_cli("verify", "--config", str(mirror.config))

    assert done.returncode == 1
    assert any("not a file of this mirror" in line for line in human_lines(done.stderr))
