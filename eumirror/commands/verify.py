"""`eumirror verify`: re-hash every tarball a web server may serve, published or kept.

Every file under `<root>/<U>/images/<name>/` is hashed against the name of its folder (kept
tarballs of `keep_removed` included), and every url of the published catalog must lead to one of
them under the image's name. A damaged tarball leaves its published path at once (into
`.eumirror/damaged/`), its record goes from the state, and the failure is counted in
`eumirror_verify_failures_total`: the next sync downloads it again.
"""

from __future__ import annotations

import contextlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..core.catalog import parse_catalog
from ..core.config import Config
from ..core.errors import CatalogError, ExitCode
from ..core.progress import Progress
from ..engine.inventory import quarantine
from ..log import log
from ..storage.fs import Files, Mirror, hash_file, scan_unknown
from .progress import progress_thread


def local_file(config: Config, upstream: str, url: str) -> Path | None:
    """The published file an url of our own catalog points to, or None if it points elsewhere."""
    base = f"{config.public_url}{upstream}/" if config.public_url else ""
    if base and url.startswith(base):
        url = url[len(base) :]
    if urlsplit(url).scheme:
        return None
    relative = Path(unquote(url))
    if relative.is_absolute() or ".." in relative.parts:
        return None
    return config.root / upstream / relative


def check(path: Path, name: str) -> tuple[str, int]:
    """The problem with a tarball ("" if none), and the bytes read."""
    try:
        digest = hash_file(path)
    except OSError as exc:
        return f"{path}: {exc.strerror}", 0
    if digest.name != name:
        return f"{path}: bytes have name {digest.name}, expected {name}", digest.size
    return "", digest.size


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def verify_mirror(config: Config) -> int:
    mirror = Mirror(config.root)
    problems: list[str] = []
    checked = 0
    progress = Progress(phase="verify", started=time.monotonic())
    with (
        mirror.locked() if mirror.work.exists() else contextlib.nullcontext(),
        progress_thread(progress, sys.stderr, config.status.progress_interval),
    ):
        for up in config.upstreams:
            found, count = _verify_upstream(config, mirror, up.name, progress)
            problems += [f"{up.name}: {line}" for line in found]
            checked += count
    log.info("verify_done", checked=checked, problems=len(problems))
    for line in problems:
        print(f"eumirror: {line}", file=sys.stderr)
    print(f"{plural(checked, 'tarball')} checked, {plural(len(problems), 'problem')}")
    return int(ExitCode.FAILED if problems else ExitCode.OK)


def _verify_upstream(
    config: Config, mirror: Mirror, upstream: str, progress: Progress
) -> tuple[list[str], int]:
    problems: list[str] = []
    folder = mirror.root / upstream
    on_disk = list(scan_unknown(folder, {}))
    body = mirror.read_catalog(upstream)
    if body is None and not on_disk:
        log.info("verify_skipped", upstream=upstream, reason="nothing published yet")
        return [], 0
    jobs = [(dest, path, dest.split("/")[1]) for dest, path in on_disk]
    progress.files_total += len(jobs)
    for _, path, _ in jobs:
        with contextlib.suppress(OSError):
            progress.plan_bytes(path.stat().st_size)
    results: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for dest, (problem, size) in pool.map(lambda job: (job[0], check(job[1], job[2])), jobs):
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
            present = {path for _, path in on_disk}
            for image in catalog.images:
                local = local_file(config, upstream, image.url)
                if local is None:
                    problems.append(f"{image.url} is not a file of this mirror")
                elif local not in present or local.parent.name != image.name:
                    problems.append(f"{local}: missing (the catalog lists {image.name})")
    if mirror.work.exists():
        record_damage(mirror, upstream, damaged, failures=len(damaged))
    return problems, len(jobs)


def record_damage(mirror: Mirror, upstream: str, damaged: list[str], *, failures: int) -> None:
    """Damage leaves its published path now; the state forgets it, so the next sync repairs."""
    if not damaged:
        return
    for dest in damaged:
        quarantine(mirror, upstream, dest)
    files = Files.from_doc(mirror.load_state(upstream, "files"))
    if files.trusted:
        for dest in damaged:
            files.files.pop(dest, None)
        mirror.save_state(upstream, "files", files.to_doc())
    meta = mirror.load_state(upstream, "meta") or {}
    totals = dict(meta.get("totals") or {})
    totals["verify_failures"] = int(totals.get("verify_failures", 0)) + failures
    meta["totals"] = totals
    meta["damaged"] = sorted(set(meta.get("damaged") or []) | set(damaged))
    mirror.save_state(upstream, "meta", meta)
