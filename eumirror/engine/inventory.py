"""What is verified on disk, and cleaning up what nothing needs any more.

The state records what was verified (name, size, md5, mtime); a cheap stat confirms a record. A
state that is missing or corrupt, or a run that was cut off while placing files, is rebuilt by
re-hashing the files under `<U>/images/`, never trusted blindly.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..core.names import is_valid_name
from ..core.plan import Inventory
from ..log import log
from ..storage.fs import Files, Mirror, hash_file, record_of, scan_unknown
from .gcpause import paused_gc

STALE_PARTIAL_SECONDS = 7 * 86400


def load_inventory(
    mirror: Mirror, upstreams: Iterable[str]
) -> tuple[dict[str, Files], Inventory, set[str]]:
    """Each upstream's files state, all verified files by name, and the rebuilt upstreams."""
    with paused_gc():
        return _load(mirror, upstreams)


def _load(mirror: Mirror, upstreams: Iterable[str]) -> tuple[dict[str, Files], Inventory, set[str]]:
    all_files: dict[str, Files] = {}
    inventory = Inventory()
    rebuilt: set[str] = set()
    for name in upstreams:
        files = Files.from_doc(mirror.load_state(name, "files"))
        folder = mirror.root / name
        kept = _still_verified(f"{folder}/", files.files)
        if not files.trusted or mirror.state_path(name, "dirty").exists():
            kept.update(_reverify(name, folder, kept))
            if not files.trusted:
                rebuilt.add(name)
                if kept:
                    log.info("state_rebuilt", upstream=name, verified=len(kept))
        files.files = kept
        all_files[name] = files
        paths = inventory.paths
        for dest, rec in kept.items():
            rooted = f"{name}/{dest}"
            found = paths.get(rec[0])
            if found is None:
                paths[rec[0]] = [rooted]
            elif rooted not in found:
                found.append(rooted)
    return all_files, inventory, rebuilt


def _still_verified(prefix: str, records: dict[str, Any]) -> dict[str, list[Any]]:
    """The records whose file is still the one verified: a regular file of the same size and
    modification time, at images/<its name>/. One stat each, no hashing (100k files: ~0.3 s)."""
    kept: dict[str, list[Any]] = {}
    lstat, is_reg = os.lstat, stat.S_ISREG
    for dest, rec in records.items():
        try:
            st = lstat(prefix + dest)
        except (OSError, TypeError, ValueError):
            continue
        if (
            type(rec) is list
            and len(rec) == 4
            and st.st_size == rec[1]
            and st.st_mtime_ns == rec[2]
            and is_reg(st.st_mode)
            and dest.startswith("images/")
            and dest[7:18] == f"{rec[0]}/"
            and is_valid_name(rec[0])
        ):
            kept[dest] = rec
    return kept


def _reverify(
    upstream: str, folder: Path, known: dict[str, list[object]]
) -> dict[str, list[object]]:
    found: dict[str, list[object]] = {}
    for dest, path in scan_unknown(folder, known):
        try:
            digest = hash_file(path)
        except OSError:
            continue
        if dest.split("/")[1] == digest.name:
            found[dest] = record_of(path, digest)
        else:
            log.warning("unverified_file", upstream=upstream, path=str(path), name=digest.name)
    return found


def collect_garbage(
    mirror: Mirror,
    upstream: str,
    files: Files,
    referenced: frozenset[str],
    *,
    now: float,
    keep_removed: float,
) -> int:
    """Delete files the live catalog no longer points to, once keep_removed has passed."""
    deleted = 0
    folder = mirror.root / upstream
    for dest in list(files.files):
        if dest in referenced:
            files.removed.pop(dest, None)
            continue
        since = files.removed.setdefault(dest, now)
        if now - since < keep_removed:
            continue
        path = folder / dest
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.suppress(OSError):
            path.parent.rmdir()
        files.files.pop(dest, None)
        files.removed.pop(dest, None)
        deleted += 1
        log.info("image_deleted", upstream=upstream, path=dest)
    for dest in list(files.removed):
        if dest not in files.files:
            files.removed.pop(dest)
    return deleted


def clean_partials(mirror: Mirror, *, keep: set[Path], upstreams: set[str]) -> None:
    """Drop partial downloads nobody will resume: not planned now, or very old."""
    now = time.time()
    try:
        entries = list(os.scandir(mirror.partial))
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        if path in keep or path.with_suffix(".part") in keep:
            continue
        upstream = entry.name.split(".", 1)[0]
        try:
            old = now - entry.stat().st_mtime > STALE_PARTIAL_SECONDS
        except OSError:
            continue
        if upstream in upstreams or old:
            with contextlib.suppress(OSError):
                path.unlink()
