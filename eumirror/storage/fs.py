"""The mirror on disk: layout, lock, atomic writes, name-addressed publishing, state and cleanup.

Layout under the root: `<U>/catalog` and `<U>/images/<name>/<file>` are published (verified bytes
only); everything else (partial downloads, the catalog being written, state, the lock) lives in
`.eumirror/`, on the same filesystem, so publishing is a rename followed by fsync of the folders.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import filecmp
import itertools
import os
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from ..core.errors import LockHeld, StorageError
from ..core.names import CHUNK, NameHasher, is_valid_name
from .filesindex import FilesIndex, files_match, read_index
from .statcheck import Job, StatCheck
from .statefile import iter_chunked, loads_chunked

STATE_FORMAT = 1
_SCRATCH = itertools.count()
# The C library the interpreter runs on (find_library would run `ldconfig -p` at every start).
_LIBC = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None
WORK = ".eumirror"


def storage_error(exc: OSError, path: Path | str, doing: str) -> StorageError:
    """Turn an OSError into one line that says which path and what to do."""
    code = exc.errno
    if code == errno.ENOSPC:
        return StorageError(
            f"no space left on the device while {doing} {path}",
            hint="free space on the mirror's filesystem, then sync again",
        )
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = "read-only filesystem" if code == errno.EROFS else "permission denied"
        return StorageError(
            f"{what} while {doing} {path}",
            hint="make the mirror root writable by eumirror (under systemd: "
            "StateDirectory= or ReadWritePaths= in the unit)",
        )
    if code == errno.EIO:
        return StorageError(
            f"I/O error while {doing} {path}",
            hint="check the disk (dmesg); nothing was published from it",
        )
    return StorageError(f"{exc.strerror or exc} while {doing} {path}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class FileDigest:
    name: str
    size: int
    md5: str


class Cancelled(Exception):
    """Thread work stopped between chunks because its run was cancelled."""


class _Flag(Protocol):
    def is_set(self) -> bool: ...


def hash_file(
    path: Path | str, cancelled: _Flag | None = None, *, drop_cache: bool = False
) -> FileDigest:
    """Stream a file through the name hasher in constant memory; checks `cancelled` between
    chunks so a stop never waits for a whole large file. `drop_cache`: tell the kernel each
    chunk read is not needed again (scheduled verification leaves the page cache to the web
    server)."""
    hasher = NameHasher()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            if cancelled is not None and cancelled.is_set():
                raise Cancelled()
            hasher.update(chunk)
            if drop_cache:
                os.posix_fadvise(f.fileno(), hasher.size - len(chunk), len(chunk), _DONTNEED)
    return FileDigest(hasher.name(), hasher.size, hasher.md5_hex())


_DONTNEED = getattr(os, "POSIX_FADV_DONTNEED", 4)


def make_dirs(path: Path, mode: int = 0o755) -> None:
    """Create `path` and missing parents with exactly `mode`, whatever the umask (a web server
    running as another user must be able to read the mirror)."""
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        return
    except FileNotFoundError:
        make_dirs(path.parent, mode)
        try:
            path.mkdir(mode=mode)
        except FileExistsError:
            return
    if _UMASK & mode:
        os.chmod(path, mode)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()
"""Read once at import (not thread-safe to read later): modes are only fixed when it strips."""


def partial_name(key: str) -> str:
    """The file name of a partial download in its upstream's partial folder (its resume
    validators sit beside it, the same stem with `.json`)."""
    return f"{key}.part"


class Mirror:
    """Paths of one mirror root and the operations that keep its promises."""

    def __init__(self, root: Path, *, work: Path | None = None) -> None:
        self.root = root
        self.work = work or root / WORK
        self.tmp = self.work / "tmp"
        self.partial = self.work / "partial"
        self.state_dir = self.work / "state"
        self.upstream_copies = self.work / "upstream"
        self.lock_path = self.work / "lock"
        self._partial_dirs: dict[str, Path] = {}

    # -- set-up -----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the root and the private work area with the contract's modes."""
        try:
            make_dirs(self.root)
            for path in (self.work, self.tmp, self.partial, self.state_dir, self.upstream_copies):
                path.mkdir(mode=0o700, exist_ok=True)
                if path.is_symlink():
                    raise StorageError(f"{path} is a symlink; refusing to use it")
            os.chmod(self.work, 0o700)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTDIR):
                paths = (self.tmp, self.partial, self.state_dir, self.work, self.root)
                blocker = next(
                    (p for p in (*paths, *self.root.parents) if p.exists() and not p.is_dir()),
                    self.root,
                )
                raise StorageError(
                    f"the mirror root {self.root} cannot be used: {blocker} is a file, "
                    "not a folder",
                    hint="point [mirror] root at a folder (or where one can be made), "
                    "or move the file away",
                ) from None
            raise storage_error(exc, self.root, "preparing the mirror root") from None

    def upstream_dir(self, upstream: str) -> Path:
        """`<root>/<U>`, refused if it (or anything on the way) leads outside the root."""
        path = self.root / upstream
        if path.is_symlink():
            raise StorageError(
                f"{path} is a symlink; refusing to publish through it",
                hint="replace it with a real folder inside the mirror root",
            )
        return path

    def partial_dir(self, upstream: str) -> Path:
        """Partial downloads of one upstream: its own folder, so no name can be mistaken for
        another upstream's (dots are allowed in upstream names). Asked once per download, on
        the event loop: built once per upstream."""
        found = self._partial_dirs.get(upstream)
        if found is None:
            found = self._partial_dirs[upstream] = self.partial / upstream
        return found

    def partial_path(self, upstream: str, key: str) -> Path:
        """Where the download with this resume key is written until it is verified."""
        return self.partial_dir(upstream) / partial_name(key)

    def prepare_upstream(self, upstream: str) -> None:
        """`<U>/images/` (0755) and the upstream's partial folder exist; nothing leads outside."""
        images = self.upstream_dir(upstream) / "images"
        try:
            make_dirs(images)
            self.partial_dir(upstream).mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, images, "creating") from None
        self.check_inside(images)

    def check_inside(self, path: Path) -> None:
        real_root = self.root.resolve()
        real = path.resolve()
        if real != real_root and real_root not in real.parents:
            raise StorageError(
                f"{path} leads outside the mirror root {self.root}",
                hint="remove the symlink under the root",
            )

    # -- lock -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fd = self.acquire_lock()
        try:
            yield
        finally:
            self.release_lock(fd)

    def acquire_lock(self, path: Path | None = None, *, held: str = "", hint: str = "") -> int:
        """flock `path` (the mirror's lock by default) at once, writing our pid into it; a
        holder makes it LockHeld naming its pid."""
        path = path or self.lock_path
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise storage_error(exc, path, "opening the lock") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LockHeld(
                (held or "another eumirror (pid {pid}) holds the lock {path}").format(
                    pid=holder, path=path
                ),
                hint=hint or "wait for it to finish, or stop it",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def release_lock(self, fd: int) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)

    # -- atomic writes ----------------------------------------------------------------------
    def clear_scratch(self) -> None:
        """Leftovers of a killed run; only ever called with the lock held."""
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.tmp):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)

    def scratch(self, label: str) -> Path:
        """A fresh path under .eumirror/tmp, unique across processes and concurrent writers."""
        return self.tmp / f"{label}.{os.getpid()}.{next(_SCRATCH)}.tmp"

    def write_atomic(
        self,
        dest: Path,
        data: bytes | bytearray | Iterable[bytes],
        *,
        mode: int = 0o644,
        unless_equal: bool = False,
        durable: bool = True,
    ) -> bool:
        """Write under .eumirror/tmp, fsync, rename over `dest`, fsync both folders.

        `data` may be a stream of chunks, so a large catalog is never held whole in memory. With
        `unless_equal`, a `dest` that already holds these bytes is left alone (returns False).
        Not `durable`: no fsyncs, for copies whose loss only costs a refetch, or files flushed
        together later; their writeback starts at once all the same.
        """
        tmp = self.scratch(dest.name)
        try:
            make_dirs(dest.parent)
            with open(tmp, "wb", buffering=CHUNK) as f:
                os.fchmod(f.fileno(), mode)
                if isinstance(data, bytes | bytearray):
                    f.write(data)
                else:
                    for chunk in data:
                        f.write(chunk)
                f.flush()
                if unless_equal and dest.exists() and filecmp.cmp(tmp, dest, shallow=False):
                    tmp.unlink()
                    return False
                if durable:
                    os.fsync(f.fileno())
                else:  # on its way to disk now: a later flush (any fsync) need not wait for it
                    start_writeback(f.fileno(), 0, 0)
            os.rename(tmp, dest)
            if durable:
                fsync_dir(dest.parent)
                fsync_dir(self.tmp)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise storage_error(exc, dest, "writing") from None
        return True

    def publish_catalog(self, upstream: str, data: bytes | Iterable[bytes]) -> bool:
        """Atomically replace `<root>/<U>/catalog`; False when it already holds these bytes."""
        dest = self.upstream_dir(upstream) / "catalog"
        return self.write_atomic(dest, data, unless_equal=True)

    def catalog_stat(self, upstream: str) -> tuple[int, int] | None:
        """Size and mtime of the published catalog: the state records them to notice a catalog
        file that was altered or replaced behind eumirror's back."""
        try:
            st = os.lstat(self.root / upstream / "catalog")
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def save_upstream_copy(self, upstream: str, body: bytes | bytearray) -> None:
        """The upstream's catalog as fetched: a 304 can then still be re-planned (a changed
        configuration, a repair) without fetching it again. Its digest in the state vouches
        for it, so it needs no fsync."""
        self.write_atomic(
            self.upstream_copies / f"{upstream}.catalog", body, mode=0o600, durable=False
        )

    def read_upstream_copy(self, upstream: str) -> bytes | None:
        try:
            return (self.upstream_copies / f"{upstream}.catalog").read_bytes()
        except OSError:
            return None

    def mark_dirty(self, upstream: str) -> None:
        """Durably say that files are being placed for `upstream`: until the state is saved,
        the next run re-verifies what the state does not vouch for and plans afresh."""
        path = self.state_path(upstream, "dirty")
        if path.exists():
            return
        try:
            path.touch(mode=0o600)
            fsync_dir(self.state_dir)
        except OSError as exc:
            raise storage_error(exc, path, "marking the sync in progress") from None

    def clear_dirty(self, upstream: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.state_path(upstream, "dirty").unlink()

    def read_catalog(self, upstream: str) -> bytes | None:
        try:
            return (self.root / upstream / "catalog").read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise storage_error(exc, self.root / upstream / "catalog", "reading") from None

    def prepare_dest(self, upstream: str, dest: str) -> Path:
        """Create the name's folder ahead of the rename, and refuse one that leads outside."""
        final = self.upstream_dir(upstream) / dest
        try:
            try:
                final.parent.mkdir(mode=0o755)
                if _UMASK & 0o755:
                    os.chmod(final.parent, 0o755)
            except FileExistsError:
                self.check_inside(final.parent)
            except FileNotFoundError:
                make_dirs(final.parent)
                self.check_inside(final.parent)
        except OSError as exc:
            raise storage_error(exc, final.parent, "creating") from None
        return final

    def place(self, src: Path, final: Path) -> None:
        """Rename a verified, flushed file into its prepared name-addressed path."""
        try:
            os.rename(src, final)
        except OSError as exc:
            raise storage_error(exc, final, "publishing") from None

    def link(self, source_rel: str, upstream: str, dest: str) -> Path:
        """Publish a second path for already verified bytes, without a request."""
        src = self.root / source_rel
        final = self.upstream_dir(upstream) / dest
        staged = self.scratch("link")
        try:
            make_dirs(final.parent)
            self.check_inside(final.parent)
            self.check_inside(src.parent)
            os.link(src, staged)
            os.rename(staged, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                staged.unlink()
            raise storage_error(exc, final, "linking") from None
        return final

    # -- state ------------------------------------------------------------------------------
    def state_path(self, upstream: str, part: str) -> Path:
        return self.state_dir / f"{upstream}.{part}.json"

    def load_state(self, upstream: str, part: str) -> dict[str, Any] | None:
        """A state document, or None when missing, corrupt or of another format version."""
        try:
            doc = loads_chunked(self.state_path(upstream, part).read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
            return None
        return doc

    def save_state(self, upstream: str, part: str, doc: dict[str, Any]) -> None:
        if part == "files":
            self._save_files(upstream, doc)
            return
        body = orjson.dumps({**doc, "format": STATE_FORMAT})
        self.write_atomic(self.state_path(upstream, part), body, mode=0o600)

    # -- the files state's stat index -------------------------------------------------------
    def index_path(self, upstream: str) -> Path:
        return self.state_dir / f"{upstream}.files.idx"

    def check_job(self, upstream: str) -> Job:
        """What a `StatCheck` child needs to check the upstream's files against its index."""
        return Job(
            upstream,
            self.root / upstream,
            self.index_path(upstream),
            self.state_path(upstream, "files"),
            self.state_path(upstream, "dirty"),
        )

    def _save_files(self, upstream: str, doc: dict[str, Any]) -> None:
        """The files state, then its stat index (see `FilesIndex`): the JSON stays the truth,
        the index only lets a sync that changes nothing skip parsing it."""
        token = os.urandom(8).hex()
        body = iter_chunked({"index": token, **doc, "format": STATE_FORMAT})
        state = self.state_path(upstream, "files")
        index = self.index_path(upstream)
        # A crash between the two writes leaves an index whose token the JSON no longer has.
        self.write_atomic(state, body, mode=0o600)
        encoded = FilesIndex.encode(doc, token)
        if encoded is None:  # a record the index cannot stand for: the JSON is checked instead
            with contextlib.suppress(FileNotFoundError):
                index.unlink()
            return
        try:
            st = os.stat(state)
        except OSError as exc:
            raise storage_error(exc, state, "reading") from None
        # Not durable: a lost index only costs one full parse.
        self.write_atomic(index, encoded(st.st_size, st.st_mtime_ns), mode=0o600, durable=False)

    def load_files_index(self, upstream: str) -> FilesIndex | None:
        """The stat index of the files state, when it matches the state file exactly (the same
        token at its start, size and mtime); None otherwise (the JSON is parsed instead)."""
        return read_index(self.index_path(upstream), self.state_path(upstream, "files"))

    def free_bytes(self) -> int:
        st = os.statvfs(self.work)
        return st.f_bavail * st.f_frsize


@dataclass
class Files:
    """What is verified under one upstream's folder, and what the catalog published."""

    files: dict[str, list[Any]] = field(default_factory=dict)
    """dest -> [name, size, mtime_ns, md5] for verified files under <U>/."""
    published: dict[str, list[str]] = field(default_factory=dict)
    """source url -> [url in the published catalog, dest]."""
    removed: dict[str, float] = field(default_factory=dict)
    """dest -> when the published catalog stopped pointing at it (unix time)."""
    trusted: bool = True
    """False when the state was missing or unreadable and had to be rebuilt."""

    def to_doc(self) -> dict[str, Any]:
        return {"files": self.files, "published": self.published, "removed": self.removed}

    @classmethod
    def from_doc(cls, doc: dict[str, Any] | None) -> Files:
        if doc is None:
            return cls(trusted=False)
        files, published, removed = doc.get("files"), doc.get("published"), doc.get("removed")
        if not (
            isinstance(files, dict) and isinstance(published, dict) and isinstance(removed, dict)
        ):
            return cls(trusted=False)
        # Records are checked one by one where they are used (the inventory's stat check);
        # the published map must hold [url, dest] string pairs, cheap to confirm in bulk.
        for pair in published.values():
            if not (type(pair) is list and len(pair) == 2):
                return cls(trusted=False)
            url, dest = pair
            if not (type(url) is str and type(dest) is str):
                return cls(trusted=False)
            if url == dest:  # a relative url is its dest: one string for both, as when built
                pair[0] = dest
        if not all(isinstance(v, int | float) for v in removed.values()):
            return cls(trusted=False)
        return cls(files, published, removed)


def record_of(path: Path, digest: FileDigest) -> list[Any]:
    st = os.lstat(path)
    return [digest.name, digest.size, st.st_mtime_ns, digest.md5]


def scan_unknown(upstream_dir: Path, known: dict[str, list[Any]]) -> Iterator[tuple[str, Path]]:
    """Files under `<U>/images/<name>/` that the state does not vouch for (to re-verify)."""
    images = upstream_dir / "images"
    try:
        folders = list(os.scandir(images))
    except OSError:
        return
    for folder in folders:
        if not folder.is_dir(follow_symlinks=False) or not is_valid_name(folder.name):
            continue
        try:
            entries = list(os.scandir(folder.path))
        except OSError:
            continue
        for entry in entries:
            dest = f"images/{folder.name}/{entry.name}"
            if dest not in known and entry.is_file(follow_symlinks=False):
                yield dest, Path(entry.path)


SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk now, without waiting for it.

    Streaming writes then reach the disk while the download goes on, so the one flush before
    publishing has little left to do. A no-op where sync_file_range is missing.
    """
    if _LIBC is not None and hasattr(_LIBC, "sync_file_range"):
        _LIBC.sync_file_range(
            fd, ctypes.c_int64(offset), ctypes.c_int64(length), SYNC_FILE_RANGE_WRITE
        )


def syncfs(path: Path) -> None:
    """Flush the filesystem that holds `path`: one call for a whole batch of files."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _LIBC is not None and hasattr(_LIBC, "syncfs"):
            if _LIBC.syncfs(fd) != 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code))
        else:
            os.sync()
    finally:
        os.close(fd)


def start_stat_check(root: Path, upstreams: Iterable[str]) -> StatCheck | None:
    """The check of the upstreams' published files against their stat index, in child
    processes (see `statcheck`): what `sync --once` starts before importing the engine."""
    mirror = Mirror(root)
    return StatCheck.start([mirror.check_job(name) for name in upstreams])


class FsStorage:
    """`Storage` on a folder: partial files renamed into place after one filesystem sync."""

    plus_encoded = False
    indexed = True

    def __init__(self, mirror: Mirror, *, stat_check: StatCheck | None = None) -> None:
        self.mirror = mirror
        self.root = mirror.root
        self.stat_check = stat_check

    def where(self, upstream: str, dest: str = "") -> str:
        return str(self.root / upstream / dest) if dest else str(self.root / upstream)

    def check_upstream(self, upstream: str) -> None:
        self.mirror.upstream_dir(upstream)

    def prepare_upstream(self, upstream: str) -> None:
        self.mirror.prepare_upstream(upstream)

    def prepare_dest(self, upstream: str, dest: str) -> Path:
        return self.mirror.prepare_dest(upstream, dest)

    def kept_partials(self, upstream: str) -> frozenset[str]:
        try:
            return frozenset(os.listdir(self.mirror.partial_dir(upstream)))
        except OSError:
            return frozenset()

    def new_download(
        self, upstream: str, dest: str, key: str, *, kept: frozenset[str], options: Any
    ) -> Any:
        from ..engine.download import PartialFile  # the engine's; imported late (a cycle)

        path = self.mirror.partial_path(upstream, key)
        return PartialFile(
            path,
            options.budget,
            exists=path.name in kept,
            max_bytes=options.max_bytes,
            on_length=options.on_length,
        )

    def place(self, upstream: str, items: list[Any]) -> tuple[dict[str, list[Any]], list[Any]]:
        """One flush for all verified downloads, then the renames into their published paths.

        Batching durability (one syncfs instead of an fsync per file) is what makes many small
        tarballs cheap; the data is durable before any rename makes it visible.
        """
        from ..tuning import PER_FILE_FLUSH

        try:
            if not PER_FILE_FLUSH:  # else each was flushed by its verifying job
                syncfs(self.mirror.partial)
        except OSError as exc:
            error = storage_error(exc, self.mirror.partial, "flushing downloads")
            return {}, [(item, error) for item in items]
        placed: dict[str, list[Any]] = {}
        refused: list[Any] = []
        for item in items:
            try:
                self.mirror.place(item.download.path, item.final)
            except StorageError as exc:
                refused.append((item, exc))
                continue
            item.download.forget_meta()
            placed[item.dest] = record_of(item.final, item.digest)
        return placed, refused

    def link(self, source: str, upstream: str, dest: str, record: list[Any]) -> list[Any]:
        path = self.mirror.link(source, upstream, dest)
        return [record[0], record[1], os.lstat(path).st_mtime_ns, record[3]]

    def flush(self) -> None:
        try:
            syncfs(self.root)
        except OSError as exc:
            raise storage_error(exc, self.root, "flushing new files") from None

    def publish_catalog(self, upstream: str, data: bytes | Iterable[bytes]) -> bool:
        return self.mirror.publish_catalog(upstream, data)

    def read_catalog(self, upstream: str) -> bytes | None:
        return self.mirror.read_catalog(upstream)

    def catalog_stat(self, upstream: str) -> tuple[int, int] | None:
        return self.mirror.catalog_stat(upstream)

    def still_verified(
        self, upstream: str, records: dict[str, list[Any]]
    ) -> tuple[dict[str, list[Any]], list[tuple[str, list[Any]]]]:
        return still_verified(f"{self.root / upstream}/", records)

    def index_holds(self, upstream: str, index: FilesIndex, cancelled: threading.Event) -> bool:
        """Every file the index records is still the one verified (the answer of the check
        started before the imports, when there is one for this very index)."""
        from ..log import log

        check = self.stat_check
        found = check.answer(upstream, index.token, cancelled) if check is not None else None
        by = "stat_check"
        if found is None:
            by, found = "run", files_match(self.root / upstream, index)
        log.debug("files_checked", upstream=upstream, by=by, verified=found)
        return found

    def rehash(
        self, upstream: str, dest: str, cancelled: _Flag | None, *, drop_cache: bool = False
    ) -> tuple[FileDigest, list[Any]] | None:
        """None when the file is gone; other read errors (EIO) are raised."""
        path = self.root / upstream / dest
        try:
            digest = hash_file(path, cancelled, drop_cache=drop_cache)
            return digest, record_of(path, digest)
        except FileNotFoundError:
            return None

    def size_of(self, upstream: str, dest: str) -> int | None:
        try:
            return os.lstat(self.root / upstream / dest).st_size
        except OSError:
            return None

    def quarantine(self, upstream: str, dest: str) -> None:
        """Move damaged bytes into .eumirror/damaged/ (kept a while, for a look)."""
        from ..log import log

        source = self.root / upstream / dest
        folder = self.mirror.work / "damaged" / upstream
        target = folder / f"{dest.replace('/', '_')}.{time.time_ns()}"
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.rename(source, target)
        except FileNotFoundError:
            return
        except OSError as exc:
            # It cannot be moved: delete it rather than serve it.
            log.warning("damaged_not_moved", upstream=upstream, path=dest, error=str(exc))
            with contextlib.suppress(OSError):
                source.unlink()
            return
        log.warning("image_damaged", upstream=upstream, path=dest, moved_to=str(target))

    def scan_unknown(self, upstream: str, known: dict[str, list[Any]]) -> Iterator[str]:
        for dest, _ in scan_unknown(self.root / upstream, known):
            yield dest

    def delete(self, upstream: str, dest: str) -> None:
        path = self.root / upstream / dest
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.suppress(OSError):
            path.parent.rmdir()

    def check(self, *, write: bool = True) -> None:
        return None

    def close(self) -> None:
        return None


def still_verified(
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
        name = rec[0]  # record_fits, inlined: this loop runs over every tarball, every sync
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


def record_fits(dest: str, rec: list[Any]) -> bool:
    """A state record is input like any other: its name and its dest must agree."""
    name = rec[0]
    return (
        type(name) is str
        and dest[7:18] == name + "/"
        and dest[:7] == "images/"
        and "/" not in dest[18:]
        and is_valid_name(name)
    )
