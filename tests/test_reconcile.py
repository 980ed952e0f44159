"""A sync converges: what is published follows the upstream *and* the configuration, damage is
repaired, and a run owns its work (issue: reconcile, don't react).

Real loopback upstreams (tests/faultserver.py), real roots, the CLI as a real process.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from conftest import (
    CLI_TIMEOUT,
    Mirror,
    Upstream,
    events,
    human_lines,
    name_of,
    run_cli,
    tarball,
    write_config,
)
from faultserver import Fault, ThreadedFaultServer
from test_sync_e2e import assert_published_verifies


def meta_of(mirror: Mirror, upstream: str = "up") -> dict[str, object]:
    doc: dict[str, object] = json.loads(
        (mirror.root / ".eumirror" / "state" / f"{upstream}.meta.json").read_bytes()
    )
    return doc


def published_path(mirror: Mirror, index: int, upstream: str = "up") -> Path:
    return mirror.root / upstream / unquote(mirror.catalog(upstream)["images"][index]["url"])


# -- 1. configuration changes take effect on an unchanged upstream ---------------------------
def test_removing_public_url_rewrites_the_catalog_though_the_upstream_answers_304(
    tmp_path: Path, upstream: Upstream, server: ThreadedFaultServer
) -> None:
    """Dropping public_url republishes relative urls at the next sync, on a 304, with no
    tarball request."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    root, config = tmp_path / "m", tmp_path / "c.toml"
    catalog = {"up": f"{server.url}/catalog"}
    write_config(config, root=root, upstreams=catalog, mirror={"public_url": "http://f.example/e"})
    mirror = Mirror(root, config)
    assert mirror.sync().returncode == 0
    assert mirror.catalog()["images"][0]["url"].startswith("http://f.example/e/up/images/")
    write_config(config, root=root, upstreams=catalog)
    server.reset_counters()

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    assert server.seen("/catalog")[-1].headers.get("If-None-Match")  # answered 304
    assert server.requests("/a/one.tgz") == 0
    assert mirror.catalog()["images"][0]["url"].startswith("images/")
    assert_published_verifies(mirror)
    assert any(e.get("event") == "rebuilding" for e in events(done.stderr))


# -- 2. local damage is repaired -------------------------------------------------------------
def test_damaged_and_deleted_tarballs_are_downloaded_again_and_verify_passes(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A flipped byte and a deleted file: verify fails, the next sync restores both (exit 0),
    and verify passes again."""
    for i in range(3):
        upstream.add(f"a/{i}.tgz", tarball(i))
    upstream.write()
    assert mirror.sync().returncode == 0
    flipped, deleted = published_path(mirror, 0), published_path(mirror, 1)
    with open(flipped, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    deleted.unlink()

    checked = run_cli("verify", "--config", str(mirror.config))
    assert checked.returncode == 1
    assert not flipped.exists()  # damage leaves its published path at once
    server.reset_counters()

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    assert server.requests("/a/0.tgz") == 1 and server.requests("/a/1.tgz") == 1
    assert server.requests("/a/2.tgz") == 0
    assert_published_verifies(mirror)
    assert run_cli("verify", "--config", str(mirror.config)).returncode == 0


def test_a_changed_size_is_found_by_the_sync_alone_and_never_served(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """Without verify, the sync's cheap check (size, mtime) finds a truncated tarball, moves it
    out of the published path and downloads it again."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()
    assert mirror.sync().returncode == 0
    path = published_path(mirror, 0)
    path.write_bytes(b"truncated")

    done = mirror.sync()

    assert done.returncode == 0, done.stderr
    assert server.requests("/a/one.tgz") == 2
    assert_published_verifies(mirror)
    moved = list((mirror.root / ".eumirror" / "damaged" / "up").iterdir())
    assert [p.read_bytes() for p in moved] == [b"truncated"]


def test_damage_that_cannot_be_restored_drops_the_entry_and_fails(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """If the upstream no longer serves a damaged tarball, its entry leaves the catalog and the
    sync exits 1 naming it; the other image stays published."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.add("a/two.tgz", tarball(2))
    upstream.write()
    assert mirror.sync().returncode == 0
    published_path(mirror, 0).write_bytes(b"rot")
    server.set_fault("/a/one.tgz", Fault(status=404))

    done = mirror.sync()

    assert done.returncode == 1
    assert [i["name"] for i in mirror.catalog()["images"]] == [name_of(tarball(2))]
    line = " ".join(human_lines(done.stderr))
    assert "one.tgz" in line and "left out of the catalog" in line
    assert_published_verifies(mirror)


# -- 3. verify covers kept tarballs ----------------------------------------------------------
def test_verify_checks_tarballs_kept_during_keep_removed_and_counts_failures(
    tmp_path: Path, upstream: Upstream, server: ThreadedFaultServer
) -> None:
    """A tarball dropped upstream but kept for keep_removed is still served, so verify checks
    it, reports it and counts it in the verify failures total."""
    upstream.add("a/keep.tgz", tarball(1))
    gone = upstream.add("a/gone.tgz", tarball(2))
    upstream.write()
    config = write_config(
        tmp_path / "c.toml",
        root=tmp_path / "m",
        upstreams={"up": f"{server.url}/catalog"},
        mirror={"keep_removed": "1h"},
    )
    mirror = Mirror(tmp_path / "m", config)
    assert mirror.sync().returncode == 0
    kept = published_path(mirror, 1)
    upstream.images.remove(gone)
    upstream.write()
    assert mirror.sync("--allow-shrink").returncode == 0
    assert kept.exists()
    with open(kept, "r+b") as f:
        f.write(b"X")

    done = run_cli("verify", "--config", str(config))

    assert done.returncode == 1
    assert str(kept) in done.stderr
    assert "2 tarballs checked, 1 problem" in done.stdout
    totals = meta_of(mirror)["totals"]
    assert isinstance(totals, dict) and totals["verify_failures"] == 1


# -- 4. one upstream's unexpected error fails it alone --------------------------------------
def test_an_unexpected_error_in_one_upstream_fails_it_alone_while_the_other_finishes(
    tmp_path: Path, upstream: Upstream, server: ThreadedFaultServer
) -> None:
    """A symlink loop where one upstream's name folder was (RuntimeError or OSError from
    resolve(), not an expected error) fails that upstream with one line; the other downloads,
    publishes and saves its state, and the run returns only after it finished."""
    one = Upstream(upstream.folder)
    x = one.add("x/x.tgz", tarball(99))
    one.write("catalog_a")
    upstream.add("b/0.tgz", tarball(0, 2048))
    upstream.write()
    root = tmp_path / "m"
    config = write_config(
        tmp_path / "c.toml",
        root=root,
        upstreams={"a": f"{server.url}/catalog_a", "b": f"{server.url}/catalog"},
    )
    assert run_cli("sync", "--once", "--config", str(config)).returncode == 0
    folder = root / "a" / "images" / x["name"]
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()
    os.symlink(x["name"], folder)  # a loop: <name> -> <name>
    for i in range(1, 61):
        upstream.add(f"b/{i}.tgz", tarball(i, 2048))
    upstream.write()

    done = run_cli("sync", "--once", "--config", str(config))

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = human_lines(done.stderr)
    assert len([line for line in lines if line.startswith("eumirror: a:")]) == 1, lines
    mirror_b = Mirror(root, config)
    assert len(mirror_b.catalog("b")["images"]) == 61
    assert_published_verifies(mirror_b, "b")
    last = meta_of(mirror_b, "b")["last_run"]
    assert isinstance(last, dict) and last["result"] == "success"
    assert not (root / ".eumirror" / "state" / "b.dirty.json").exists()


# -- 9. the dirty marker precedes every publish ----------------------------------------------
async def test_the_dirty_marker_is_durable_before_a_catalog_is_published(
    tmp_path: Path, upstream: Upstream, server: ThreadedFaultServer
) -> None:
    """Even a change that only drops images (no download, no link) marks the upstream dirty
    before its catalog is renamed into place, so a crash before the state is saved makes the
    next run plan afresh instead of cleaning up with a stale reference set."""
    from eumirror.commands.once import run_sync
    from eumirror.core.config import load_config
    from eumirror.storage.fs import Mirror as DiskMirror

    upstream.add("a/one.tgz", tarball(1))
    two = upstream.add("a/two.tgz", tarball(2))
    upstream.write()
    config = load_config(
        write_config(
            tmp_path / "c.toml", root=tmp_path / "m", upstreams={"up": f"{server.url}/catalog"}
        )
    )
    seen: list[bool] = []

    class Watched(DiskMirror):
        def publish_catalog(self, upstream: str, data: object) -> bool:
            seen.append(self.state_path(upstream, "dirty").exists())
            return super().publish_catalog(upstream, data)  # type: ignore[arg-type]

    disk = Watched(config.root)
    disk.prepare()
    assert (await run_sync(config, disk)).ok
    upstream.images.remove(two)
    upstream.write()

    assert (await run_sync(config, disk, allow_shrink=True)).ok

    assert seen == [True, True]
    assert not disk.state_path("up", "dirty").exists()  # cleared once the state is saved


# -- 10. modes are explicit -----------------------------------------------------------------
def test_published_modes_do_not_follow_a_strict_umask(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """Under umask 077 the published folders are still 0755 and files 0644 (a web server
    running as another user must read them)."""
    upstream.add("a/one.tgz", tarball(1))
    upstream.write()

    done = subprocess.run(
        [sys.executable, "-m", "eumirror", "sync", "--once", "--config", str(mirror.config)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        preexec_fn=lambda: os.umask(0o077),
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(mirror.root.stat().st_mode) == 0o755
    for path in [mirror.root / "up", *(mirror.root / "up").rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


# -- 11. dotted upstream names ---------------------------------------------------------------
def test_a_success_of_one_upstream_keeps_the_partial_of_a_dotted_sibling(
    tmp_path: Path, upstream: Upstream, server: ThreadedFaultServer
) -> None:
    """Upstreams `a` and `a.b`: while a.b's catalog is unreachable, a's success never deletes
    a.b's resumable partial from an earlier run; a.b resumes it later with Range."""
    upstream.add("x/ok.tgz", tarball(1))
    upstream.write("catalog")
    other = Upstream(upstream.folder)
    other.add("y/big.tgz", tarball(2, 300_000))
    other.write("catalog2")
    server.set_fault("/y/big.tgz", Fault(reset_after=200_000))
    root = tmp_path / "m"
    config = write_config(
        tmp_path / "c.toml",
        root=root,
        upstreams={"a": f"{server.url}/catalog", "a.b": f"{server.url}/catalog2"},
        limits={"retries": 0},
    )
    assert run_cli("sync", "--once", "--config", str(config)).returncode == 1
    server.clear_faults()
    server.set_fault("/catalog2", Fault(status=500))

    done = run_cli("sync", "--once", "--config", str(config))

    assert done.returncode == 1
    kept = list((root / ".eumirror" / "partial").rglob("*.part"))
    assert len(kept) == 1 and kept[0].stat().st_size > 0, kept
    server.clear_faults()
    assert run_cli("sync", "--once", "--config", str(config)).returncode == 0
    assert server.seen("/y/big.tgz")[-1].headers.get("Range")


# -- 6. SIGTERM does not wait for a whole re-hash --------------------------------------------
def test_sigterm_during_a_state_rebuild_stops_promptly_and_keeps_what_was_rehashed(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """With the state deleted, a stop mid re-hash exits at once with 128+15, saving the records
    re-hashed so far; the next run re-hashes only the rest."""
    count, size = 8, 48 << 20
    for i in range(count):
        upstream.add(f"a/{i}.tgz", tarball(i, 4096) * (size // 4096))
    upstream.write()
    assert mirror.sync().returncode == 0
    (mirror.root / ".eumirror" / "state" / "up.files.json").unlink()
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eumirror",
            "sync",
            "--once",
            "--log-level",
            "debug",
            "--config",
            str(mirror.config),
        ],
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            if '"file_reverified"' in line:
                break
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.stderr.read()
        code = proc.wait(timeout=30)
        stopped_in = time.monotonic() - began

    assert code == 128 + signal.SIGTERM
    assert stopped_in < 5, stopped_in
    saved = json.loads((mirror.root / ".eumirror" / "state" / "up.files.json").read_bytes())
    assert 1 <= len(saved["files"]) < count
    done = run_cli("sync", "--once", "--log-level", "debug", "--config", str(mirror.config))
    assert done.returncode == 0, done.stderr
    rehashed = [e for e in events(done.stderr) if e.get("event") == "file_reverified"]
    assert len(rehashed) == count - len(saved["files"])
    assert server.requests("/a/0.tgz") == 1  # nothing downloaded again


# -- 8. the space budget -------------------------------------------------------------------
def test_a_body_without_length_stops_at_max_image_bytes(
    tmp_path: Path, upstream: Upstream, server: ThreadedFaultServer
) -> None:
    """An endless chunked tarball is cut at [limits] max_image_bytes, the image fails with one
    line, and nothing of it is kept."""
    upstream.add("a/endless.tgz", tarball(1, 64 << 10))
    upstream.write()
    server.set_fault("/a/endless.tgz", Fault(endless=True))
    root = tmp_path / "m"
    config = write_config(
        tmp_path / "c.toml",
        root=root,
        upstreams={"up": f"{server.url}/catalog"},
        limits={"max_image_bytes": "2MiB"},
    )

    done = run_cli("sync", "--once", "--config", str(config))

    assert done.returncode == 1
    assert "max_image_bytes" in " ".join(human_lines(done.stderr))
    assert server.bytes_sent("/a/endless.tgz") < 32 << 20
    assert not list((root / ".eumirror" / "partial").rglob("*.part"))


async def test_bytes_are_charged_as_written_and_given_back_on_discard(tmp_path: Path) -> None:
    """A restarted download pays once for what it keeps; a discarded one gives its bytes
    back; a download that would eat into the reserve is refused at the byte that would."""
    from eumirror.core.errors import StorageError
    from eumirror.engine.budget import SpaceBudget
    from eumirror.engine.download import PartialFile

    budget = SpaceBudget(free=10_000, reserve=2_000)
    part = PartialFile(tmp_path / "p.part", budget, exists=False)
    await part.open()
    await part.write_batch([b"x" * 6_000])
    await part.drain()
    assert budget.taken == 6_000
    await part.restart()  # the server ignored Range: start over
    assert budget.taken == 0
    await part.write_batch([b"y" * 7_000])
    await part.drain()
    with pytest.raises(StorageError, match="not enough space"):
        await part.write_batch([b"z" * 1_001])
    part.discard()
    assert budget.taken == 0


# -- 5. a partial file belongs to one job at a time ------------------------------------------
async def test_a_cancelled_download_never_closes_its_file_under_a_running_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sealing job still running when its download is cancelled keeps the file until it
    returns: no byte lands in another file that reused the descriptor number."""
    import asyncio
    import threading

    from eumirror.engine.budget import SpaceBudget
    from eumirror.engine.download import PartialFile

    entered, release = threading.Event(), threading.Event()
    original = PartialFile._hash

    def slow_hash(self: PartialFile, chunks: list[bytes]) -> None:
        entered.set()
        release.wait(10)  # widens the window between the job's start and its writes
        original(self, chunks)

    part = PartialFile(tmp_path / "p.part", SpaceBudget(1 << 30, 0), exists=False)
    await part.open()
    await part.write_batch([b"a" * 8192])
    await part.drain()
    await part.write_last([b"b" * 1808])
    monkeypatch.setattr(PartialFile, "_hash", slow_hash)
    sealing = asyncio.ensure_future(part.seal("0000000000", lambda: None))
    await asyncio.to_thread(entered.wait, 10)
    sealing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sealing
    part.close_when_idle()
    other = tmp_path / "other"
    fd = os.open(other, os.O_RDWR | os.O_CREAT, 0o644)  # likely reuses a freed number
    try:
        release.set()
        job = part._job
        assert job is not None
        await asyncio.wait([job])
        await asyncio.sleep(0)  # the done-callbacks (closing the file) run next
    finally:
        os.close(fd)
    assert other.read_bytes() == b""
    assert part.path.stat().st_size == 8192 + 1808  # the job wrote all it owned, then closed


# -- 12. the event loop stays free -----------------------------------------------------------
async def test_a_large_catalog_is_parsed_planned_and_published_off_the_event_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Parsing, planning and publishing a 60k-image catalog never hold the event loop for a
    quarter of a second (asyncio's own slow-callback detector), so the status endpoint answers
    during a sync."""
    import asyncio
    import logging

    from eumirror.commands.once import run_sync
    from eumirror.core.config import load_config
    from eumirror.storage.fs import Mirror as DiskMirror

    folder = tmp_path / "up"
    folder.mkdir()
    fields = {"description": "d", "version": "1", "architecture": "x86_64", "os": "debian"}
    images = [
        {**fields, "name": f"{i:010d}", "url": f"http://elsewhere.example/{i}.tgz"}
        for i in range(60_000)
    ]
    doc = {"version": "eustore-catalog-2011-12-29", "images": images}
    (folder / "catalog").write_text(json.dumps(doc))
    upstreams = {"up": str(folder / "catalog")}
    config = load_config(
        write_config(tmp_path / "c.toml", root=tmp_path / "m", upstreams=upstreams)
    )
    disk = DiskMirror(config.root)
    disk.prepare()
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 0.25

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        report = await run_sync(config, disk)

    assert report.upstreams[0].catalog_ok  # every image failed (not files of a file catalog)
    slow = [r.getMessage() for r in caplog.records if " took " in r.getMessage()]
    assert not slow, slow


# -- 13. messages in our words, at most 300 characters a line ---------------------------------
def test_end_of_run_lines_stay_within_300_characters_with_long_urls(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """A wrong-bytes failure under a very long url still gives one line of at most 300
    characters that names the image and says what happened to it."""
    long = "d" * 180 + "/" + "x" * 150 + ".tgz"
    upstream.add(long, tarball(1))
    upstream.write()
    server.set_fault(f"/{long}", Fault(replace_body=b"wrong bytes"))

    done = mirror.sync()

    assert done.returncode == 1
    lines = human_lines(done.stderr)
    assert lines and all(len(line) <= 300 for line in lines), [len(x) for x in lines]
    assert "left out of the catalog" in lines[0] and name_of(tarball(1)) in lines[0]


def test_a_full_disk_is_one_summary_line_with_a_count(
    tmp_path: Path, upstream: Upstream, server: ThreadedFaultServer
) -> None:
    """When many images fail for want of space, the run ends with one line and a count, not a
    line per image."""
    for i in range(6):
        upstream.add(f"a/{i}.tgz", tarball(i, 50_000))
    upstream.write()
    config = write_config(
        tmp_path / "c.toml",
        root=tmp_path / "m",
        upstreams={"up": f"{server.url}/catalog"},
        limits={"free_space_reserve": "1000000GiB"},
    )

    done = run_cli("sync", "--once", "--config", str(config))

    assert done.returncode == 1
    lines = human_lines(done.stderr)
    assert len(lines) == 1, lines
    assert "6 images failed" in lines[0] and "not enough space" in lines[0]


async def test_verified_downloads_are_placed_in_batches_as_they_come(
    tmp_path: Path, upstream: Upstream, server: ThreadedFaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first sync places what verified every PLACE_EVERY downloads (not all at the end, which
    kept 100k downloads' objects alive), and everything still ends up published and verified."""
    from eumirror.commands.once import run_sync
    from eumirror.core.config import load_config
    from eumirror.engine import run as run_module
    from eumirror.storage.fs import FsStorage
    from eumirror.storage.fs import Mirror as DiskMirror

    for i in range(5):
        upstream.add(f"a/t{i}.tgz", tarball(i))
    upstream.write()
    config = load_config(
        write_config(
            tmp_path / "c.toml", root=tmp_path / "m", upstreams={"up": f"{server.url}/catalog"}
        )
    )
    batches: list[int] = []
    real_place = FsStorage.place

    def counted(self: FsStorage, name: str, fetched: Any) -> Any:
        batches.append(len(fetched))
        return real_place(self, name, fetched)

    monkeypatch.setattr(run_module, "PLACE_EVERY", 2)
    monkeypatch.setattr(FsStorage, "place", counted)
    disk = DiskMirror(config.root)
    disk.prepare()
    report = await run_sync(config, disk)
    assert report.ok
    assert batches == [2, 2, 1]
    assert_published_verifies(Mirror(config.root, config.path))
