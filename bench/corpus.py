"""Deterministic benchmark corpora: tarball-shaped files, eustore catalogs and md5sum check files.

Every byte comes from SHAKE-128 keyed by (corpus, file, chunk), so the same parameters give the
same files, names and catalogs on every machine. A corpus is built in a temporary folder beside
its final place and renamed into place once complete; an existing complete corpus (its
manifest.json matches the parameters) is reused as is.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GENERATOR_VERSION = 1
CATALOG_VERSION = "eustore-catalog-2011-12-29"
KiB = 1024
MiB = 1024 * KiB
CHUNK = MiB


def eustore_name(md5_hex: str) -> str:
    """The eustore name of a tarball, given the hex md5 of its bytes (see the contract)."""
    return str(zlib.crc32(md5_hex.encode("ascii")) & 0xFFFFFFFF).rjust(10, "0")


@dataclass(frozen=True)
class Params:
    """What a corpus is made of; the manifest records it, so a change forces a rebuild."""

    kind: str  # "big", "small", "catalog" or "link"
    count: int  # files in the (first) catalog
    size: int  # bytes per file
    changed: int = 0  # catalog kind: images whose tarball changes in the next version
    removed: int = 0  # ... dropped from the next version
    added: int = 0  # ... new in the next version
    seed: str = "eumirror-bench"
    generator: int = GENERATOR_VERSION


def params_for(kind: str, scale: float, *, size_factor: int = 1) -> Params:
    """The corpus of the issue, shrunk by `scale` (1.0 is full size); see bench/README.md."""
    if kind == "big":
        size = max(4 * KiB, round(256 * MiB * scale / (4 * KiB)) * 4 * KiB) * size_factor
        return Params("big" if size_factor == 1 else f"big{size_factor}x", 8, size)
    if kind == "small":
        return Params("small", max(8, round(2000 * scale)), 256 * KiB)
    if kind == "link":  # 4 x 512 MiB: big enough for several ranged connections per tarball
        return Params("link", 4, max(4 * KiB, round(512 * MiB * scale / (4 * KiB)) * 4 * KiB))
    if kind == "catalog":
        count = max(200, round(100_000 * scale))
        return Params(
            "catalog",
            count,
            KiB,
            changed=max(1, round(count * 0.01)),
            removed=max(1, round(count * 0.005)),
            added=max(1, round(count * 0.005)),
        )
    raise ValueError(f"unknown corpus kind {kind!r}")


@dataclass(frozen=True)
class Corpus:
    """A generated corpus on disk."""

    path: Path
    params: Params
    files: int  # tarballs in the first catalog
    bytes: int  # their total size
    manifest: dict[str, Any]

    @property
    def files_dir(self) -> Path:
        return self.path / "files"

    @property
    def catalog(self) -> Path:
        return self.path / "catalog.json"

    @property
    def next_catalog(self) -> Path:
        return self.path / "catalog.next.json"

    def check_file(self, part: int = 0) -> Path:
        """md5sum -c input for every tarball of the first catalog (part 0) or one half (1, 2)."""
        return self.path / ("check.md5" if part == 0 else f"check.{part}.md5")

    @property
    def relpaths(self) -> list[str]:
        """Tarballs of the first catalog, relative to files/, in catalog order."""
        return list(self.manifest["files"])


# -- generation -----------------------------------------------------------------------------------
def _relpath(params: Params, index: int, revision: int) -> str:
    suffix = "" if revision == 0 else f"-r{revision}"
    if params.kind == "catalog":
        return f"{index // 1000:03d}/img-{index:07d}{suffix}.tgz"
    return f"{params.kind}-{index:05d}{suffix}.tgz"


def _write_file(job: tuple[str, str, int, str]) -> tuple[str, int, str]:
    """Write one file of pseudo-random bytes; returns (relpath, size, md5 hex)."""
    root, relpath, size, key = job
    path = Path(root) / relpath
    md5 = hashlib.md5(usedforsecurity=False)
    with open(path, "wb", buffering=0) as out:
        done = 0
        chunk_no = 0
        while done < size:
            n = min(CHUNK, size - done)
            data = hashlib.shake_128(f"{key}/{chunk_no}".encode()).digest(n)
            md5.update(data)
            out.write(data)
            done += n
            chunk_no += 1
    return relpath, size, md5.hexdigest()


def _image(params: Params, index: int, relpath: str, md5_hex: str, revision: int) -> dict[str, Any]:
    arch = ("x86_64", "i386")[index % 2]
    os_name = ("centos", "debian", "ubuntu", "fedora")[index % 4]
    return {
        "name": eustore_name(md5_hex),
        "description": f"{os_name} {arch} benchmark image {index} (revision {revision})",
        "url": f"files/{relpath}",
        "version": f"{1 + revision}.{index % 10}",
        "architecture": arch,
        "os": os_name,
        "hypervisors-supported": ["kvm", "xen"],
        "date": "20111229",
        "contact": "bench@example.invalid",
    }


def _jobs(
    params: Params, root: Path
) -> Iterator[tuple[tuple[str, str, int, str], tuple[int, int]]]:
    """(write job, (index, revision)) for every file any catalog version refers to."""
    wanted: list[tuple[int, int]] = [(i, 0) for i in range(params.count)]
    wanted += [(i, 1) for i in _changed_indices(params)]
    wanted += [(params.count + i, 0) for i in range(params.added)]
    for index, revision in wanted:
        relpath = _relpath(params, index, revision)
        key = f"{params.seed}/{params.kind}/{params.size}/{index}/{revision}"
        yield (str(root), relpath, params.size, key), (index, revision)


def _changed_indices(params: Params) -> list[int]:
    return sorted(_pick(params)[0])


def _pick(params: Params) -> tuple[set[int], set[int]]:
    """Which images change and which are removed in the next version (disjoint, seeded)."""
    if not (params.changed or params.removed):
        return set(), set()
    rng = random.Random(f"{params.seed}/{params.kind}/{params.count}/pick")
    chosen = rng.sample(range(params.count), params.changed + params.removed)
    return set(chosen[: params.changed]), set(chosen[params.changed :])


def _write_check(path: Path, rows: list[tuple[str, str]]) -> None:
    path.write_text("".join(f"{md5}  {rel}\n" for rel, md5 in rows))


def _dump(path: Path, images: list[dict[str, Any]]) -> None:
    doc = {"version": CATALOG_VERSION, "images": images}
    path.write_text(json.dumps(doc, indent=2) + "\n")


def generate(params: Params, path: Path, *, workers: int = 2) -> None:
    """Build the corpus of `params` at `path` (which must not exist)."""
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    files = tmp / "files"
    files.mkdir(parents=True)
    jobs = list(_jobs(params, tmp / "files"))
    for folder in {os.path.dirname(job[1]) for job, _ in jobs}:
        (files / folder).mkdir(parents=True, exist_ok=True)
    chunksize = max(1, min(500, len(jobs) // (workers * 8) or 1))
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        results = pool.map(_write_file, [job for job, _ in jobs], chunksize=chunksize)
    by_key: dict[tuple[int, int], tuple[str, str]] = {}
    for (_, key), (relpath, _, md5_hex) in zip(jobs, results, strict=True):
        by_key[key] = (relpath, md5_hex)

    first = [by_key[(i, 0)] for i in range(params.count)]
    _dump(tmp / "catalog.json", [_image(params, i, r, m, 0) for i, (r, m) in enumerate(first)])
    _write_check(tmp / "check.md5", first)
    half = (len(first) + 1) // 2
    _write_check(tmp / "check.1.md5", first[:half])
    _write_check(tmp / "check.2.md5", first[half:])

    manifest: dict[str, Any] = {
        "params": asdict(params),
        "count": params.count,
        "bytes": params.count * params.size,
        "files": [r for r, _ in first],
    }
    if params.changed or params.removed or params.added:
        changed, removed = _pick(params)
        images: list[dict[str, Any]] = []
        new_rows: list[tuple[str, str]] = []
        for i in range(params.count):
            if i in removed:
                continue
            revision = 1 if i in changed else 0
            relpath, md5_hex = by_key[(i, revision)]
            images.append(_image(params, i, relpath, md5_hex, revision))
            if revision:
                new_rows.append((relpath, md5_hex))
        for j in range(params.added):
            index = params.count + j
            relpath, md5_hex = by_key[(index, 0)]
            images.append(_image(params, index, relpath, md5_hex, 0))
            new_rows.append((relpath, md5_hex))
        _dump(tmp / "catalog.next.json", images)
        _write_check(tmp / "check.next-new.md5", new_rows)
        manifest["next"] = {
            "images": len(images),
            "new_tarballs": len(new_rows),
            "changed": params.changed,
            "removed": params.removed,
            "added": params.added,
        }
    (tmp / "manifest.json").write_text(json.dumps(manifest) + "\n")
    os.replace(tmp, path)


def ensure(params: Params, base: Path, *, quiet: bool = False) -> Corpus:
    """The corpus of `params` under `base`, generated only when missing or stale."""
    tag = f"{params.kind}-{params.count}x{params.size}"
    path = base / tag
    manifest_path = path / "manifest.json"
    manifest: dict[str, Any] | None = None
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = None
        if manifest is not None and manifest.get("params") != asdict(params):
            manifest = None
    if manifest is None:
        shutil.rmtree(path, ignore_errors=True)
        if not quiet:
            total = params.count * params.size
            print(f"generating corpus {tag} ({params.count} files, {total / 1e6:.0f} MB) ...")
        base.mkdir(parents=True, exist_ok=True)
        generate(params, path)
        manifest = json.loads(manifest_path.read_text())
    return Corpus(path, params, int(manifest["count"]), int(manifest["bytes"]), manifest)
