"""`eumirror verify`: re-hash every tarball a web server may serve, published or kept.

Every file under `<root>/<U>/images/<name>/` (each object, in a bucket) is hashed against the
name of its folder (kept tarballs of `keep_removed` included), and every url of the published
catalog must lead to one of them under the image's name. A damaged tarball leaves its published
path at once (into `.eumirror/damaged/`; a damaged object is deleted), its record goes from the
state, and the failure is counted in `eumirror_verify_failures_total`: the next sync downloads
it again.
"""

from __future__ import annotations

import contextlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from ..core.catalog import parse_catalog
from ..core.config import Config
from ..core.errors import CatalogError, ExitCode, StorageError
from ..core.progress import Progress
from ..engine.inventory import record_damage
from ..log import log
from ..storage.base import Storage, open_storage, work_area
from ..storage.fs import Mirror
from .progress import progress_thread


def local_dest(config: Config, upstream: str, url: str) -> str | None:
    """The dest (`images/N/F`) an url of our own catalog points to, or None if it points
    elsewhere."""
    base = f"{config.public_url}{upstream}/" if config.public_url else ""
    if base and url.startswith(base):
        url = url[len(base) :]
    if urlsplit(url).scheme:
        return None
    relative = PurePosixPath(unquote(url))
    if relative.is_absolute() or ".." in relative.parts:
        return None
    return str(relative)


def check(storage: Storage, upstream: str, dest: str) -> tuple[str, int]:
    """The problem with a tarball ("" if none), and the bytes read."""
    where = storage.where(upstream, dest)
    try:
        found = storage.rehash(upstream, dest, None)
    except OSError as exc:
        return f"{where}: {exc.strerror}", 0
    except StorageError as exc:
        return f"{where}: {exc.message}", 0
    if found is None:
        return f"{where}: gone while verified", 0
    digest = found[0]
    name = dest.split("/")[1]
    if digest.name != name:
        return f"{where}: bytes have name {digest.name}, expected {name}", digest.size
    return "", digest.size


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def verify_mirror(config: Config) -> int:
    mirror = work_area(config)
    problems: list[str] = []
    checked = 0
    progress = Progress(phase="verify", started=time.monotonic())
    storage = open_storage(config, mirror)
    try:
        with (
            mirror.locked() if mirror.work.exists() else contextlib.nullcontext(),
            progress_thread(progress, sys.stderr, config.status.progress_interval),
        ):
            storage.check()
            for up in config.upstreams:
                found, count = _verify_upstream(config, mirror, storage, up.name, progress)
                problems += [f"{up.name}: {line}" for line in found]
                checked += count
    finally:
        storage.close()
    log.info("verify_done", checked=checked, problems=len(problems))
    for line in problems:
        print(f"eumirror: {line}", file=sys.stderr)
    print(f"{plural(checked, 'tarball')} checked, {plural(len(problems), 'problem')}")
    return int(ExitCode.FAILED if problems else ExitCode.OK)


def _verify_upstream(
    config: Config, mirror: Mirror, storage: Storage, upstream: str, progress: Progress
) -> tuple[list[str], int]:
    problems: list[str] = []
    on_disk = list(storage.scan_unknown(upstream, {}))
    body = storage.read_catalog(upstream)
    if body is None and not on_disk:
        log.info("verify_skipped", upstream=upstream, reason="nothing published yet")
        return [], 0
    progress.files_total += len(on_disk)
    for dest in on_disk:
        if (size := storage.size_of(upstream, dest)) is not None:
            progress.plan_bytes(size)
    results: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for dest, (problem, size) in pool.map(
            lambda dest: (dest, check(storage, upstream, dest)), on_disk
        ):
            results.append((dest, problem))
            progress.files_done += 1  # this thread alone counts; the display only reads
            progress.add_bytes(size)
    damaged = [dest for dest, problem in results if problem]
    problems += [problem for _, problem in results if problem]
    if body is not None:
        try:
            catalog = parse_catalog(body)
        except CatalogError as exc:
            problems.append(f"published catalog is malformed: {exc.message}")
        else:
            problems += [f"image #{bad.index}: {bad.reason}" for bad in catalog.bad]
            present = set(on_disk)
            for image in catalog.images:
                points = local_dest(config, upstream, image.url)
                if points is None:
                    problems.append(f"{image.url} is not a file of this mirror")
                elif points not in present or PurePosixPath(points).parent.name != image.name:
                    where = storage.where(upstream, points)
                    problems.append(f"{where}: missing (the catalog lists {image.name})")
    if mirror.work.exists():
        record_damage(mirror, storage, upstream, damaged, failures=len(damaged))
    return problems, len(on_disk)
