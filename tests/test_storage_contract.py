"""The Storage seam, written once and run against both implementations: a folder and a bucket
on a real Ceph RGW. What the engine relies on: nothing visible before `seal` checked the name,
a lie leaves nothing behind, the cheap check tells kept from changed, a link needs no bytes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import name_of, tarball
from s3kit import RGW

from eumirror.core.config import S3Root
from eumirror.core.errors import VerifyError
from eumirror.engine.budget import SpaceBudget
from eumirror.net.fetch import Validators
from eumirror.storage.base import DownloadOptions, Placed, Storage
from eumirror.storage.fs import FsStorage, Mirror

U = "up"
DATA = tarball(11, 9 << 20)  # past one S3 part: a multipart upload
NAME = name_of(DATA)
DEST = f"images/{NAME}/a.tgz"


@pytest.fixture(params=["folder", "bucket"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "folder":
        mirror = Mirror(tmp_path / "root")
        mirror.prepare()
        yield FsStorage(mirror)
        return
    rgw: RGW = request.getfixturevalue("rgw")
    from eumirror.storage.s3 import S3Storage

    patch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    for key, value in rgw.env().items():
        if key != "AWS_ENDPOINT_URL":
            patch.setenv(key, value)
    store = S3Storage(S3Root(bucket=rgw.bucket(), prefix="p", endpoint_url=rgw.endpoint))
    try:
        yield store
    finally:
        store.close()


def visible(storage: Storage) -> list[str]:
    return sorted(storage.scan_unknown(U, {}))


async def download(storage: Storage, data: bytes, expected: str, dest: str = DEST) -> Placed:
    options = DownloadOptions(budget=SpaceBudget(1 << 40, 0), max_bytes=1 << 30)
    sink = storage.new_download(U, dest, "k", kept=frozenset(), options=options)
    await sink.open()
    sink.expect(len(data), Validators('"v"'))
    for start in range(0, len(data), 1 << 20):
        await sink.write_batch([data[start : start + (1 << 20)]])
    await sink.drain()
    try:
        digest, final = await sink.seal(expected, lambda: storage.prepare_dest(U, dest))
    except VerifyError:
        sink.discard()
        raise
    return Placed(dest, sink, digest, final)


def place(storage: Storage, item: Placed) -> dict[str, Any]:
    records, refused = storage.place(U, [item])
    assert not refused
    storage.flush()
    return records


def test_nothing_is_visible_before_seal_and_a_lie_leaves_nothing(storage: Storage) -> None:
    storage.check()
    storage.prepare_upstream(U)
    with pytest.raises(VerifyError):
        asyncio.run(download(storage, tarball(12, 9 << 20), NAME))
    assert visible(storage) == []

    records = place(storage, asyncio.run(download(storage, DATA, NAME)))

    assert visible(storage) == [DEST]
    assert records[DEST][0] == NAME and records[DEST][1] == len(DATA)
    found = storage.rehash(U, DEST, None)
    assert found is not None and found[0].name == NAME and found[1] == records[DEST]


def test_the_cheap_check_tells_kept_from_changed_and_quarantine_takes_it_away(
    storage: Storage,
) -> None:
    storage.prepare_upstream(U)
    records = place(storage, asyncio.run(download(storage, DATA, NAME)))
    kept, changed = storage.still_verified(U, records)
    assert kept == records and changed == []
    stale = {DEST: [NAME, len(DATA), "not-the-version", records[DEST][3]]}
    kept, changed = storage.still_verified(U, stale)
    assert kept == {} and [d for d, _ in changed] == [DEST]
    gone = {"images/0000000001/x.tgz": ["0000000001", 1, 1, "x"]}
    assert storage.still_verified(U, gone) == ({}, [])

    storage.quarantine(U, DEST)

    assert visible(storage) == []
    assert storage.rehash(U, DEST, None) is None


def test_link_publishes_a_second_path_without_bytes_and_delete_removes(storage: Storage) -> None:
    storage.prepare_upstream(U)
    records = place(storage, asyncio.run(download(storage, DATA, NAME)))
    other = f"images/{NAME}/b.tgz"

    linked = storage.link(f"{U}/{DEST}", U, other, records[DEST])

    assert visible(storage) == sorted([DEST, other])
    assert linked[0] == NAME and linked[3] == records[DEST][3]
    assert storage.still_verified(U, {other: linked})[0] == {other: linked}
    storage.delete(U, DEST)
    assert visible(storage) == [other]


def test_the_catalog_is_replaced_whole_and_only_when_it_changed(storage: Storage) -> None:
    storage.prepare_upstream(U)
    assert storage.read_catalog(U) is None and storage.catalog_stat(U) is None

    assert storage.publish_catalog(U, [b'{"version": ', b'"x", "images": []}'])
    assert not storage.publish_catalog(U, b'{"version": "x", "images": []}')

    assert storage.read_catalog(U) == b'{"version": "x", "images": []}'
    stat = storage.catalog_stat(U)
    assert stat is not None and stat[0] == len(b'{"version": "x", "images": []}')
    assert storage.publish_catalog(U, b"{}")
    assert storage.catalog_stat(U) != stat


def test_rehash_checks_cancellation(storage: Storage) -> None:
    from eumirror.storage.fs import Cancelled

    storage.prepare_upstream(U)
    place(storage, asyncio.run(download(storage, DATA, NAME)))
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        storage.rehash(U, DEST, stop)
