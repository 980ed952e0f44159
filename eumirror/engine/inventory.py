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
import threading
import time
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.plan import Inventory
from ..log import log
from ..storage.base import Storage
from ..storage.filesindex import FilesIndex
from ..storage.fs import Cancelled, Files, Mirror, partial_name
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
    mirror: Mirror,
    storage: Storage,
    upstream: str,
    cancelled: threading.Event,
    *,
    write: bool = True,
) -> Loaded:
    """Read the upstream's files state and check every record against what is published (a
    dry run writes and moves nothing: `write` False). Where the storage keeps a stat index
    (a folder), a sync whose files all match it never parses the state."""
    dirty = mirror.state_path(upstream, "dirty").exists()
    index = None if dirty or not storage.indexed else mirror.load_files_index(upstream)
    if index is not None and storage.index_holds(upstream, index, cancelled):
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
        kept, changed = storage.still_verified(upstream, files.files)
        # No index (a state from before it, or a stale one): saving the state writes it.
        rebuild_index = storage.indexed and index is None and files.trusted and not dirty
        loaded = Loaded(files, dirty=dirty, rebuilt=rebuild_index)
        for dest, rec in changed:
            try:
                found = (
                    storage.rehash(upstream, dest, cancelled)
                    if rec[1] == storage.size_of(upstream, dest)
                    else None
                )
            except OSError:
                found = None  # unreadable: damaged
            if found is not None and found[0].name == rec[0]:
                kept[dest] = found[1]  # touched, not changed
                loaded.rebuilt = True
                continue
            if write:
                storage.quarantine(upstream, dest)
            loaded.damaged.append(dest)
        if loaded.damaged:
            loaded.rebuilt = True
        files.files = kept
        if not files.trusted or dirty:
            log.debug("reverify_started", upstream=upstream, known=len(kept))
            try:
                _reverify(storage, upstream, kept, cancelled)
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


def _save_partial_rebuild(mirror: Mirror, upstream: str, files: Files) -> None:
    """Keep what was re-hashed before a stop: the dirty marker makes the next run re-hash only
    the files this one did not reach."""
    with contextlib.suppress(Exception):
        mirror.state_path(upstream, "dirty").touch()
        mirror.save_state(upstream, "files", files.to_doc())
        log.info("state_partly_rebuilt", upstream=upstream, verified=len(files.files))


def _reverify(
    storage: Storage, upstream: str, known: dict[str, list[Any]], cancelled: threading.Event
) -> None:
    """Re-hash files the state does not vouch for, adding those that verify to `known`."""
    for dest in list(storage.scan_unknown(upstream, known)):
        if cancelled.is_set():
            raise Cancelled()
        try:
            found = storage.rehash(upstream, dest, cancelled)
        except OSError:
            continue
        if found is None:
            continue
        digest, record = found
        if dest.split("/")[1] == digest.name:
            known[dest] = record
            log.debug("file_reverified", upstream=upstream, path=dest)
        else:
            where = storage.where(upstream, dest)
            log.warning("unverified_file", upstream=upstream, path=where, name=digest.name)


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
    storage: Storage,
    upstream: str,
    files: Files,
    referenced: frozenset[str],
    *,
    now: float,
    keep_removed: float,
) -> int:
    """Delete files the live catalog no longer points to, once keep_removed has passed."""
    deleted = 0
    for dest in list(files.files):
        if dest in referenced:
            files.removed.pop(dest, None)
            continue
        since = files.removed.setdefault(dest, now)
        if now - since < keep_removed:
            continue
        storage.delete(upstream, dest)
        files.files.pop(dest, None)
        files.removed.pop(dest, None)
        deleted += 1
        log.info("image_deleted", upstream=upstream, path=dest)
    for dest in list(files.removed):
        if dest not in files.files:
            files.removed.pop(dest)
    return deleted


def clean_partials(mirror: Mirror, upstream: str, *, keep: AbstractSet[str]) -> None:
    """Drop the upstream's partial downloads nobody will resume (not planned now, or very old),
    and old quarantined files. Each upstream has its own folder, whatever its name; `keep`
    holds the file names (`<key>.part`) of this run's downloads."""
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


def _sweep(folder: Path, *, keep: AbstractSet[str], older_than: float, now: float) -> None:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if name in keep or partial_name(os.path.splitext(name)[0]) in keep:  # its .json too
            continue
        _remove_if_old(entry, older_than, now)


def _remove_if_old(entry: os.DirEntry[str], older_than: float, now: float) -> None:
    try:
        if older_than and now - entry.stat(follow_symlinks=False).st_mtime <= older_than:
            return
        os.unlink(entry.path)
    except OSError:
        return


def record_damage(
    mirror: Mirror, storage: Storage, upstream: str, damaged: list[str], *, failures: int
) -> None:
    """Damage leaves its published path now; the state forgets it, so the next sync repairs.
    (What `verify` and the scheduled scrub found.)"""
    if not damaged:
        return
    for dest in damaged:
        storage.quarantine(upstream, dest)
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
