"""History, rollback and pins end to end: the CLI as real processes against a loopback upstream."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Mirror, Upstream, run_cli, tarball
from faultserver import ThreadedFaultServer
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from test_daemon import Daemon, daemon_config, daemons  # noqa: F401 (a fixture)
from test_sync_e2e import assert_published_verifies

from eumirror.core import history as gen
from eumirror.storage.fs import Mirror as Disk

ROLLBACK = (sys.executable, "-m", "eumirror", "rollback", "up", "--to", "1")


def cli(mirror: Mirror, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--config", str(mirror.config))


def history(mirror: Mirror) -> list[dict[str, Any]]:
    done = cli(mirror, "history", "up", "--json")
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def set_mirror_keys(mirror: Mirror, **keys: Any) -> None:
    lines = [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    text = mirror.config.read_text().replace("[mirror]", "[mirror]\n" + "\n".join(lines), 1)
    mirror.config.write_text(text)


def names(mirror: Mirror) -> set[str]:
    return {image["name"] for image in mirror.catalog()["images"]}


def synced(mirror: Mirror) -> None:
    done = mirror.sync()
    assert done.returncode == 0, done.stderr


def test_each_changed_publish_is_a_generation(upstream: Upstream, mirror: Mirror) -> None:
    """Changed catalogs make generations 1, 2, 3; an unchanged sync and a public_url change
    alone make none; `history` shows numbers, counts, times and which one is live."""
    a = upstream.add("a.tgz", tarball(1))
    upstream.write()
    synced(mirror)
    upstream.add("b.tgz", tarball(2))
    upstream.write()
    synced(mirror)
    upstream.images.remove(a)
    upstream.add("c.tgz", tarball(3))
    upstream.write()
    synced(mirror)
    synced(mirror)  # unchanged
    set_mirror_keys(mirror, public_url="http://frontend.example/eustore/")
    synced(mirror)
    assert mirror.catalog()["images"][0]["url"].startswith("http://frontend.example/eustore/up/")

    rows = history(mirror)
    assert [r["generation"] for r in rows] == [1, 2, 3]
    assert [(r["images"], r["added"], r["removed"]) for r in rows] == [
        (1, 1, 0),
        (2, 1, 0),
        (2, 1, 1),
    ]
    assert [r["live"] for r in rows] == [False, False, True]
    assert all(r["published"].endswith("Z") for r in rows)
    # the rebuilds that made no generation wrote its stored form, found it live, removed it
    kept = sorted(p.name for p in (mirror.root / ".eumirror" / "history" / "up").iterdir())
    assert kept == [f"{n}.{kind}" for n in (1, 2, 3) for kind in ("catalog", "dests")] + [
        "index.json"
    ]
    text = cli(mirror, "history", "up")
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert len(lines) == 4 and lines[-1].split()[0] == "3" and "live" in lines[-1]
    assert "live" not in lines[1]


def test_a_catalog_back_to_a_kept_generation_makes_no_new_one(
    upstream: Upstream, mirror: Mirror
) -> None:
    """An upstream that goes back to what generation 1 published makes generation 1 live again:
    no new number, no stray stored form."""
    upstream.add("a.tgz", tarball(1))
    upstream.write()
    synced(mirror)
    b = upstream.add("b.tgz", tarball(2))
    upstream.write()
    synced(mirror)
    upstream.images.remove(b)
    upstream.write()
    synced(mirror)
    rows = history(mirror)
    assert [(r["generation"], r["live"]) for r in rows] == [(1, True), (2, False)]
    folder = mirror.root / ".eumirror" / "history" / "up"
    assert not (folder / "3.catalog").exists()


def test_old_generations_keep_their_tarballs(upstream: Upstream, mirror: Mirror) -> None:
    """With keep_generations = 2 and keep_removed = 0s a dropped tarball stays while a kept
    generation points to it and goes with the sync that prunes that generation."""
    set_mirror_keys(mirror, keep_generations=2, keep_removed="0s")
    upstream.add("a.tgz", tarball(1))
    b = upstream.add("b.tgz", tarball(2))
    upstream.write()
    synced(mirror)
    upstream.images.remove(b)
    c = upstream.add("c.tgz", tarball(3))
    upstream.write()
    synced(mirror)
    assert f"images/{b['name']}/b.tgz" in mirror.files()  # generation 1 still points to it
    upstream.images.remove(c)
    upstream.add("d.tgz", tarball(4))
    upstream.write()
    synced(mirror)
    files = mirror.files()
    assert f"images/{b['name']}/b.tgz" not in files  # generation 1 is gone
    assert f"images/{c['name']}/c.tgz" in files  # generation 2 is kept
    assert [r["generation"] for r in history(mirror)] == [2, 3]


def test_rollback_pins_then_unpin_publishes_without_downloading(
    upstream: Upstream, server: ThreadedFaultServer, mirror: Mirror
) -> None:
    """Rollback publishes the previous generation and pins; a pinned sync downloads the new
    tarball but publishes nothing new; after unpin the next sync publishes with no download."""
    upstream.add("a.tgz", tarball(1))
    upstream.write()
    synced(mirror)
    first = mirror.catalog_bytes()
    b = upstream.add("b.tgz", tarball(2))
    upstream.write()
    synced(mirror)

    done = cli(mirror, "rollback", "up")
    assert done.returncode == 0, done.stderr
    assert mirror.catalog_bytes() == first
    assert_published_verifies(mirror)
    rows = history(mirror)
    assert [(r["generation"], r["live"]) for r in rows] == [(1, True), (2, False)]
    status = cli(mirror, "status")
    assert "pinned" in status.stdout, status.stdout

    d = upstream.add("d.tgz", tarball(4))
    upstream.write()
    pinned_sync = mirror.sync()
    assert pinned_sync.returncode == 0, pinned_sync.stderr
    assert mirror.catalog_bytes() == first
    assert f"images/{d['name']}/d.tgz" in mirror.files()
    assert len(history(mirror)) == 2

    assert cli(mirror, "unpin", "up").returncode == 0
    server.reset_counters()
    synced(mirror)
    assert names(mirror) == {upstream.images[0]["name"], b["name"], d["name"]}
    assert server.requests("/a.tgz") + server.requests("/b.tgz") + server.requests("/d.tgz") == 0
    assert [(r["generation"], r["live"]) for r in history(mirror)][-1] == (3, True)
    assert "pinned" not in cli(mirror, "status").stdout


def test_rollback_errors(upstream: Upstream, mirror: Mirror) -> None:
    """A generation that is not kept is exit 1; a held lock is exit 3; an unknown upstream 2."""
    upstream.add("a.tgz", tarball(1))
    upstream.write()
    synced(mirror)
    missing = cli(mirror, "rollback", "up", "--to", "7")
    assert missing.returncode == 1
    assert "generation 7 is not kept" in missing.stderr
    assert cli(mirror, "rollback", "up").returncode == 1  # no generation before the first
    assert cli(mirror, "rollback", "nope").returncode == 2
    disk = Disk(mirror.root)
    fd = disk.acquire_lock()
    try:
        held = cli(mirror, "rollback", "up", "--to", "1")
        assert held.returncode == 3, held.stderr
        assert cli(mirror, "unpin", "up").returncode == 3
    finally:
        disk.release_lock(fd)


def test_pinned_generation_follows_public_url(upstream: Upstream, mirror: Mirror) -> None:
    """A generation is stored before urls are rewritten: pinned, it follows public_url."""
    upstream.add("a.tgz", tarball(1))
    upstream.write()
    synced(mirror)
    upstream.add("b.tgz", tarball(2))
    upstream.write()
    synced(mirror)
    assert cli(mirror, "rollback", "up", "--to", "1").returncode == 0
    set_mirror_keys(mirror, public_url="http://frontend.example/eustore/")
    synced(mirror)
    images = mirror.catalog()["images"]
    assert len(images) == 1
    assert images[0]["url"].startswith("http://frontend.example/eustore/up/images/")


def test_sigkill_during_rollback_publishes_one_generation_whole(
    upstream: Upstream, mirror: Mirror
) -> None:
    """A rollback killed at any instant leaves generation 1 or 2 published whole, never a mix,
    and every url verifies."""
    upstream.add("a.tgz", tarball(1))
    upstream.write()
    synced(mirror)
    first = mirror.catalog_bytes()
    for i in range(40):
        upstream.add(f"many/{i}.tgz", tarball(100 + i, 512))
    upstream.write()
    synced(mirror)
    second = mirror.catalog_bytes()
    rng = random.Random(7)
    for _ in range(6):
        proc = subprocess.Popen(
            [*ROLLBACK, "--config", str(mirror.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.05, 0.6))  # the instant is what varies: the point of the test
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert mirror.catalog_bytes() in (first, second)
        assert_published_verifies(mirror)
        # back to generation 2 for the next round
        assert cli(mirror, "unpin", "up").returncode == 0
        synced(mirror)
        assert mirror.catalog_bytes() == second


@pytest.mark.parametrize("keep", [0, -1])
def test_keep_generations_must_be_positive(upstream: Upstream, mirror: Mirror, keep: int) -> None:
    """keep_generations below 1 is a configuration error naming the key (exit 2)."""
    set_mirror_keys(mirror, keep_generations=keep)
    done = mirror.sync()
    assert done.returncode == 2
    assert "mirror.keep_generations" in done.stderr


def metric(body: bytes, name: str, upstream: str = "up") -> float | None:
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("upstream") == upstream:
                return float(sample.value)
    return None


def test_daemon_shows_a_pin_and_stays_healthy(
    upstream: Upstream,
    server: ThreadedFaultServer,
    mirror: Mirror,
    daemons: Callable[..., Daemon],  # noqa: F811 (the fixture imported above)
) -> None:
    """A rollback while the daemon idles: /status says pinned, /healthz is 200 and says so,
    eumirror_pinned is 1; a pinned daemon sync downloads but keeps the pinned catalog; after
    unpin the metric is 0 again."""
    upstream.add("a.tgz", tarball(1))
    upstream.write()
    synced(mirror)
    first = mirror.catalog_bytes()
    upstream.add("b.tgz", tarball(2))
    upstream.write()
    daemon = daemons(daemon_config(mirror, server))
    daemon.idle_after(1)
    assert cli(mirror, "rollback", "up").returncode == 0

    doc = daemon.wait_status(lambda d: d["upstreams"]["up"]["state"] == "pinned", "pinned")
    info = doc["upstreams"]["up"]
    assert info["pinned"] == 1 and info["healthy"] is True
    assert "generation 1, by `eumirror rollback`" in info["reason"]
    health = daemon.wait_health(200)
    assert "pinned" in health
    _, _, body = daemon.http("GET", "/metrics")
    assert metric(body, "eumirror_pinned") == 1.0

    c = upstream.add("c.tgz", tarball(3))
    upstream.write()
    daemon.send(signal.SIGUSR1)
    daemon.idle_after(2)
    assert mirror.catalog_bytes() == first
    assert f"images/{c['name']}/c.tgz" in mirror.files()

    assert cli(mirror, "unpin", "up").returncode == 0
    daemon.send(signal.SIGUSR1)
    daemon.idle_after(3)
    assert len(mirror.catalog()["images"]) == 3
    _, _, body = daemon.http("GET", "/metrics")
    assert metric(body, "eumirror_pinned") == 0.0
    assert daemon.stop() == 0


@pytest.mark.parametrize(
    ("numbers", "live", "keep", "kept"),
    [
        ([1, 2, 3, 4], 4, 2, [3, 4]),
        ([1, 2, 3, 4], 1, 2, [1, 4]),  # a rolled-back live generation is never pruned
        ([1, 2, 3, 4], 2, 1, [2]),
        ([1, 2], None, 5, [1, 2]),
    ],
)
def test_kept_generations(numbers: list[int], live: int | None, keep: int, kept: list[int]) -> None:
    """The newest `keep` generations stay, the live one always among them."""
    assert gen.kept_generations(numbers, live=live, keep=keep) == kept


def test_stored_generation_renders_under_any_public_url() -> None:
    """A stored generation round-trips and renders its dests under today's base url, keeping
    each image's fields and their order; an entry without a dest keeps its url."""
    top = {"version": "v", "images": [{"big": 1}], "publisher": "x"}
    rows: list[gen.Row] = [
        ({"name": "0000000001", "url": "up/a.tgz", "x": 1}, "images/0000000001/a b.tgz"),
        ({"name": "0000000002", "url": "http://kept/b.tgz"}, ""),
    ]
    back_top, back_rows = gen.decode(gen.encode(top, rows))
    assert back_top == {"version": "v", "images": [], "publisher": "x"}
    assert list(gen.render(back_rows, "http://f/up/")) == [
        {"name": "0000000001", "url": "http://f/up/images/0000000001/a%20b.tgz", "x": 1},
        {"name": "0000000002", "url": "http://kept/b.tgz"},
    ]
    assert gen.names_of(gen.dests_of(back_rows)) == {"0000000001"}


@pytest.mark.parametrize("count", [0, 1, 1000, 2500])
def test_generation_bytes_are_one_orjson_document(count: int) -> None:
    """Encoded in slices (the GIL is let go between them), a generation is still byte for byte
    the one document it always was: kept generations keep their digests."""
    import orjson

    top = {"version": "v", "images": [], "x": [1]}
    rows: list[gen.Row] = [
        ({"name": f"{i:010d}", "é": i}, f"images/{i:010d}/f") for i in range(count)
    ]
    body = gen.encode(top, rows)
    assert body == orjson.dumps([top, [[f, d] for f, d in rows]])
    assert gen.decode(body) == (top, rows)


_DESTS = st.sets(
    st.builds(
        lambda n, f: f"images/{n:010d}/{f}",
        st.integers(0, 12),
        st.sampled_from(["a.tgz", "b.tgz", "c d.tgz"]),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(_DESTS, _DESTS)
def test_name_changes_are_the_difference_of_the_name_sets(now: set[str], before: set[str]) -> None:
    """The names a generation adds and removes, found from the dests that differ, are exactly
    the difference of the two whole name sets (a name moved to another file is neither)."""
    assert gen.name_changes(now, before) == (
        tuple(sorted(gen.names_of(now) - gen.names_of(before))),
        tuple(sorted(gen.names_of(before) - gen.names_of(now))),
    )


def test_generation_chunk_with_a_huge_integer_still_decodes() -> None:
    """A slice orjson refuses (an integer beyond 64 bits) is written by the standard library:
    the stream is still one document, and encoding it again gives the same bytes."""
    rows: list[gen.Row] = [
        ({"name": f"{i:010d}", "n": i}, f"images/{i:010d}/f") for i in range(1500)
    ]
    rows[1200] = ({"name": "0000001200", "n": 2**70}, "images/0000001200/f")
    top = {"version": "v", "images": []}
    body = gen.encode(top, rows)
    assert b"".join(gen.encode_chunks(top, rows)) == body
    assert gen.decode(body) == (top, rows)


def test_pinned_generation_never_publishes_a_damaged_tarball(
    upstream: Upstream, mirror: Mirror
) -> None:
    """A tarball only the pinned generation points to, found damaged by verify, leaves the
    catalog at the next sync rather than being served broken."""
    upstream.add("a.tgz", tarball(1))
    x = upstream.add("x.tgz", tarball(2))
    upstream.write()
    synced(mirror)
    upstream.images.remove(x)
    upstream.add("b.tgz", tarball(3))
    upstream.write()
    synced(mirror)
    assert cli(mirror, "rollback", "up", "--to", "1").returncode == 0
    path = mirror.root / "up" / "images" / x["name"] / "x.tgz"
    path.write_bytes(b"rotten" + path.read_bytes()[6:])
    assert cli(mirror, "verify").returncode == 1
    synced(mirror)
    assert names(mirror) == {upstream.images[0]["name"]}
    assert_published_verifies(mirror)
