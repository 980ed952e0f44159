"""`eumirror verify`: re-hash every published tarball against the name its catalog gives it."""

from __future__ import annotations

import contextlib
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..core.catalog import parse_catalog
from ..core.config import Config
from ..core.errors import CatalogError, ExitCode
from ..log import log
from ..storage.fs import Mirror, hash_file


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


def check(path: Path, name: str) -> str:
    try:
        digest = hash_file(path)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if digest.name != name:
        return f"{path}: bytes have name {digest.name}, the catalog says {name}"
    return ""


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def verify_mirror(config: Config) -> int:
    mirror = Mirror(config.root)
    problems: list[str] = []
    checked = 0
    with mirror.locked() if mirror.work.exists() else contextlib.nullcontext():
        jobs: list[tuple[str, Path, str]] = []
        for up in config.upstreams:
            body = mirror.read_catalog(up.name)
            if body is None:
                log.info("verify_skipped", upstream=up.name, reason="nothing published yet")
                continue
            try:
                catalog = parse_catalog(body)
            except CatalogError as exc:
                problems.append(f"{up.name}: published catalog is malformed: {exc.message}")
                continue
            problems.extend(f"{up.name}: image #{bad.index}: {bad.reason}" for bad in catalog.bad)
            for image in catalog.images:
                path = local_file(config, up.name, image.url)
                if path is None:
                    problems.append(f"{up.name}: {image.url} is not a file of this mirror")
                    continue
                jobs.append((up.name, path, image.name))
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = pool.map(lambda job: (job[0], check(job[1], job[2])), jobs)
            for upstream, problem in results:
                checked += 1
                if problem:
                    problems.append(f"{upstream}: {problem}")
    log.info("verify_done", checked=checked, problems=len(problems))
    for line in problems:
        print(f"eumirror: {line}", file=sys.stderr)
    print(f"{plural(checked, 'tarball')} checked, {plural(len(problems), 'problem')}")
    return int(ExitCode.FAILED if problems else ExitCode.OK)
