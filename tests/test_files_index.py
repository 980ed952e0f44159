"""The files state's stat index: a sync that changes nothing checks every file against it without
parsing the state; any difference (a file, the state file, a bad record) falls back to the JSON."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from eumirror.engine.inventory import load_files
from eumirror.storage.fs import Files, FsStorage, Mirror, hash_file, record_of


def mirror_with(tmp_path: Path, count: int = 3) -> tuple[Mirror, Files]:
    """A mirror root whose upstream `up` has `count` verified tarballs, all published."""
    mirror = Mirror(tmp_path / "root")
    mirror.prepare()
    files = Files()
    for i in range(count):
        scratch = tmp_path / f"img{i}.tgz"
        scratch.write_bytes(os.urandom(100 + i))
        digest = hash_file(scratch)
        dest = f"images/{digest.name}/img{i}.tgz"
        final = mirror.root / "up" / dest
        final.parent.mkdir(parents=True)
        scratch.rename(final)
        files.files[dest] = record_of(final, digest)
        files.published[f"http://up/img{i}.tgz"] = [dest, dest]
    mirror.save_state("up", "files", files.to_doc())
    return mirror, files


def load(mirror: Mirror) -> tuple[bool, Files, list[str]]:
    """(used the index, the state as the sync sees it, what it found damaged)."""
    loaded = load_files(mirror, FsStorage(mirror), "up", threading.Event())
    indexed = loaded.index is not None
    return indexed, loaded.files, loaded.damaged


def test_an_unchanged_mirror_is_checked_from_the_index_and_parsed_only_on_demand(
    tmp_path: Path,
) -> None:
    mirror, files = mirror_with(tmp_path)
    loaded = load_files(mirror, FsStorage(mirror), "up", threading.Event())
    assert loaded.index is not None and loaded.trusted
    assert loaded.referenced == set(files.files) and loaded.missing == 0
    assert loaded.untouched(frozenset(files.files))
    assert not loaded.untouched(frozenset(list(files.files)[1:]))  # one would be collected
    assert loaded.files.files == files.files and loaded.files.published == files.published
    assert loaded.index is None and not loaded.untouched(frozenset(files.files))


def test_a_changed_file_falls_back_to_the_full_check(tmp_path: Path) -> None:
    mirror, files = mirror_with(tmp_path)
    dest = sorted(files.files)[0]
    with open(mirror.root / "up" / dest, "ab") as f:
        f.write(b"x")  # size changed: damaged

    indexed, seen, damaged = load(mirror)

    assert not indexed and damaged == [dest] and dest not in seen.files


def test_a_touched_file_is_rehashed_and_kept(tmp_path: Path) -> None:
    mirror, files = mirror_with(tmp_path)
    dest = sorted(files.files)[0]
    os.utime(mirror.root / "up" / dest, ns=(1, 1))

    indexed, seen, damaged = load(mirror)

    assert not indexed and damaged == [] and seen.files[dest][2] == 1


def test_a_missing_file_falls_back_and_counts_as_missing(tmp_path: Path) -> None:
    mirror, files = mirror_with(tmp_path)
    dest = sorted(files.files)[0]
    (mirror.root / "up" / dest).unlink()

    loaded = load_files(mirror, FsStorage(mirror), "up", threading.Event())

    assert loaded.index is None and loaded.missing == 1 and dest not in loaded.files.files


def test_a_state_rewritten_behind_eumirrors_back_is_parsed_not_the_index(tmp_path: Path) -> None:
    mirror, _ = mirror_with(tmp_path)
    path = mirror.state_path("up", "files")
    doc = json.loads(path.read_bytes())
    dest = sorted(doc["files"])[0]
    del doc["files"][dest]  # same token at the start, different content
    path.write_text(json.dumps(doc, separators=(",", ":")))

    indexed, seen, _ = load(mirror)

    assert not indexed and dest not in seen.files


def test_a_state_without_an_index_is_parsed_and_saving_writes_one(tmp_path: Path) -> None:
    mirror, _ = mirror_with(tmp_path)
    mirror.index_path("up").unlink()

    loaded = load_files(mirror, FsStorage(mirror), "up", threading.Event())

    assert loaded.index is None and loaded.rebuilt  # rebuilt: the run saves it, with an index
    mirror.save_state("up", "files", loaded.files.to_doc())
    assert load(mirror)[0]


def test_a_malformed_record_gets_no_index(tmp_path: Path) -> None:
    mirror, files = mirror_with(tmp_path)
    doc = files.to_doc()
    dest = sorted(doc["files"])[0]
    doc["files"][dest] = [doc["files"][dest][0], "big", 0, ""]

    mirror.save_state("up", "files", doc)

    assert not mirror.index_path("up").exists()
    indexed, seen, _ = load(mirror)
    assert not indexed and dest not in seen.files
