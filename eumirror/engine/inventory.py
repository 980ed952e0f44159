"""What is verified on disk, damage found cheaply, and cleaning up what nothing needs any more.

The state records what was verified (name, size, md5, mtime); one stat per file confirms a record
every sync. A file whose size changed is damaged; one whose mtime alone changed is re-hashed.
Damaged files leave their published path at once (into `.eumirror/damaged/`), so they are never
served knowingly, and the sync downloads them again. A state that is missing or corrupt, or a run
that was cut off while placing files, is rebuilt by re-hashing the files under `<U>/images/`.

These functions run in worker threads and own what they are handed until they return; long ones
check a cancellation flag between chunks and save what they have.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.names import is_valid_name
from ..core.plan import Inventory
from ..log import log
from ..storage.fs import (
    Cancelled,
    Files,
    FilesIndex,
    Mirror,
    hash_file,
    record_of,
    scan_unknown,
)
from .gcpause import paused_gc

STALE_PARTIAL_SECONDS = 7 * 86400
STALE_DAMAGED_SECONDS = 7 * 86400


@dataclass
class Loaded:
    """One upstream's files state after the cheap check (and a rebuild, if one was due).

    After a clean check against the stat index, the state itself is parsed only when something
    asks for `files` (a rebuild, a clean-up): a sync that changes nothing never parses it.
    """

    _files: Files | None
    damaged: list[str] = field(default_factory=list)
    """Dests found damaged this time and moved aside."""
    rebuilt: bool = False
    """The state had to be rebuilt from the files (save it even if nothing else changes)."""
    dirty: bool = False
    """The dirty marker was present: the last sync was cut off while placing files."""
    referenced: frozenset[str] = frozenset()
    """Dests the published catalog points to, per the state."""
    missing: int = 0
    """Of those, how many are not verified on disk now (missing or damaged)."""
    index: FilesIndex | None = None
    """The stat index the check used, while the state is not parsed."""
    _state: Callable[[], Files] | None = None

    @property
    def files(self) -> Files:
        """The parsed state (parsed here on first use: call it in a thread)."""
        if self._files is None:
            assert self._state is not None
            self._files = self._state()
            self.index = None
        return self._files

    @property
    def trusted(self) -> bool:
        return self._files is None or self._files.trusted

    def untouched(self, referenced: frozenset[str]) -> bool:
        """Nothing to delete, nothing to save: the state was never parsed, every file it
        records is still referenced and none waits for removal."""
        index = self.index
        if self._files is not None or index is None or index.removed or self.rebuilt:
            return False
        return referenced.issuperset(index.dests)


def load_files(
    mirror: Mirror, upstream: str, cancelled: threading.Event, *, write: bool = True
) -> Loaded:
    """Read the upstream's files state and check every record against the disk (a dry run
    writes and moves nothing: `write` False)."""
    dirty = mirror.state_path(upstream, "dirty").exists()
    index = None if dirty else mirror.load_files_index(upstream)
    if index is not None and _index_holds(mirror.root / upstream, index):
        return Loaded(
            None,
            referenced=frozenset(index.extra_refs).union(
                d for d, ref in zip(index.dests, index.referenced, strict=True) if ref
            ),
            missing=len(index.extra_refs),
            index=index,
            _state=lambda: _parse_state(mirror, upstream),
        )
    with paused_gc():
        files = Files.from_doc(mirror.load_state(upstream, "files"))
        folder = mirror.root / upstream
        kept, changed = _still_verified(f"{folder}/", files.files)
        # No index (a state from before it, or a stale one): saving the state writes it.
        loaded = Loaded(files, dirty=dirty, rebuilt=index is None and files.trusted)
        for dest, rec in changed:
            path = folder / dest
            try:
                digest = hash_file(path, cancelled) if rec[1] == _size(path) else None
            except OSError:
                digest = None
            if digest is not None and digest.name == rec[0]:
                kept[dest] = record_of(path, digest)  # touched, not changed
                loaded.rebuilt = True
                continue
            if write:
                quarantine(mirror, upstream, dest)
            loaded.damaged.append(dest)
        if loaded.damaged:
            loaded.rebuilt = True
        files.files = kept
        if not files.trusted or dirty:
            log.debug("reverify_started", upstream=upstream, known=len(kept))
            try:
                _reverify(upstream, folder, kept, cancelled)
            except Cancelled:
                if write:
                    _save_partial_rebuild(mirror, upstream, files)
                raise
            loaded.rebuilt = loaded.rebuilt or not files.trusted
            if not files.trusted and kept:
                log.info("state_rebuilt", upstream=upstream, verified=len(kept))
        loaded.referenced = frozenset(d for _, d in files.published.values() if d)
        loaded.missing = len(loaded.referenced - kept.keys())
        return loaded


def _parse_state(mirror: Mirror, upstream: str) -> Files:
    with paused_gc():
        return Files.from_doc(mirror.load_state(upstream, "files"))


def _index_holds(folder: Path, index: FilesIndex) -> bool:
    """Every file the index records is still the one verified: a regular file of the same size
    and mtime (one lstat each, relative to the upstream's folder). Any difference sends the sync
    down the full check, which finds and handles it."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return not index.dests
    try:
        lstat, is_reg = os.lstat, stat.S_ISREG
        for dest, size, mtime in zip(index.dests, index.sizes, index.mtimes, strict=True):
            try:
                st = lstat(dest, dir_fd=fd)
            except OSError:
                return False
            if st.st_size != size or st.st_mtime_ns != mtime or not is_reg(st.st_mode):
                return False
        return True
    finally:
        os.close(fd)


def _size(path: Path) -> int:
    return os.lstat(path).st_size


def _save_partial_rebuild(mirror: Mirror, upstream: str, files: Files) -> None:
    """Keep what was re-hashed before a stop: the dirty marker makes the next run re-hash only
    the files this one did not reach."""
    with contextlib.suppress(Exception):
        mirror.state_path(upstream, "dirty").touch()
        mirror.save_state(upstream, "files", files.to_doc())
        log.info("state_partly_rebuilt", upstream=upstream, verified=len(files.files))


def _still_verified(
    prefix: str, records: dict[str, Any]
) -> tuple[dict[str, list[Any]], list[tuple[str, list[Any]]]]:
    """Records whose file is still the one verified (a regular file of the same size and mtime
    at images/<its name>/), and records whose file exists but changed. One lstat each, no
    hashing: this runs every sync over every tarball, so it is kept to the bare minimum (a
    record's shape is checked too: the state file is input like any other)."""
    kept: dict[str, list[Any]] = {}
    changed: list[tuple[str, list[Any]]] = []
    lstat, is_reg = os.lstat, stat.S_ISREG
    for dest, rec in records.items():
        try:
            st = lstat(prefix + dest)
        except (OSError, TypeError, ValueError):
            continue  # missing: not kept
        if type(rec) is not list or len(rec) != 4 or not is_reg(st.st_mode):
            continue
        name = rec[0]
        if not (
            type(name) is str
            and dest[7:18] == name + "/"
            and dest[:7] == "images/"
            and "/" not in dest[18:]
            and is_valid_name(name)
        ):
            continue
        if st.st_size == rec[1] and st.st_mtime_ns == rec[2]:
            kept[dest] = rec
        else:
            changed.append((dest, rec))
    return kept, changed


def quarantine(mirror: Mirror, upstream: str, dest: str) -> Path | None:
    """Move a damaged tarball out of its published path into .eumirror/damaged/ at once."""
    source = mirror.root / upstream / dest
    folder = mirror.work / "damaged" / upstream
    target = folder / f"{dest.replace('/', '_')}.{time.time_ns()}"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.rename(source, target)
    except FileNotFoundError:
        return None
    except OSError as exc:
        # It cannot be moved: delete it rather than serve it.
        log.warning("damaged_not_moved", upstream=upstream, path=dest, error=str(exc))
        with contextlib.suppress(OSError):
            source.unlink()
        return None
    log.warning("image_damaged", upstream=upstream, path=dest, moved_to=str(target))
    return target


def _reverify(
    upstream: str, folder: Path, known: dict[str, list[Any]], cancelled: threading.Event
) -> None:
    """Re-hash files the state does not vouch for, adding those that verify to `known`."""
    for dest, path in scan_unknown(folder, known):
        if cancelled.is_set():
            raise Cancelled()
        try:
            digest = hash_file(path, cancelled)
        except OSError:
            continue
        if dest.split("/")[1] == digest.name:
            known[dest] = record_of(path, digest)
            log.debug("file_reverified", upstream=upstream, path=dest)
        else:
            log.warning("unverified_file", upstream=upstream, path=str(path), name=digest.name)


def build_inventory(verified: Iterable[tuple[str, dict[str, list[Any]]]]) -> Inventory:
    """Every verified file of the mirror by name, as root-relative paths."""
    inventory = Inventory()
    paths, by_path = inventory.paths, inventory.records
    with paused_gc():
        for upstream, records in verified:
            for dest, rec in records.items():
                rooted = f"{upstream}/{dest}"
                by_path[rooted] = rec
                found = paths.get(rec[0])
                if found is None:
                    paths[rec[0]] = [rooted]
                elif rooted not in found:
                    found.append(rooted)
    return inventory


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


def clean_partials(mirror: Mirror, upstream: str, *, keep: set[Path]) -> None:
    """Drop the upstream's partial downloads nobody will resume (not planned now, or very old),
    and old quarantined files. Each upstream has its own folder, whatever its name."""
    now = time.time()
    _sweep(mirror.partial_dir(upstream), keep=keep, older_than=0.0, now=now)
    _sweep(
        mirror.work / "damaged" / upstream, keep=set(), older_than=STALE_DAMAGED_SECONDS, now=now
    )


def clean_stale_partials(mirror: Mirror) -> None:
    """Very old partials of upstreams no longer configured (and of the older flat layout)."""
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(mirror.partial):
            if entry.is_dir(follow_symlinks=False):
                _sweep(Path(entry.path), keep=set(), older_than=STALE_PARTIAL_SECONDS, now=now)
            else:
                _remove_if_old(entry, STALE_PARTIAL_SECONDS, now)


def _sweep(folder: Path, *, keep: set[Path], older_than: float, now: float) -> None:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        if path in keep or path.with_suffix(".part") in keep:
            continue
        _remove_if_old(entry, older_than, now)


def _remove_if_old(entry: os.DirEntry[str], older_than: float, now: float) -> None:
    try:
        if older_than and now - entry.stat(follow_symlinks=False).st_mtime <= older_than:
            return
        os.unlink(entry.path)
    except OSError:
        return
