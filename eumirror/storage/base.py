"""The seam between the engine and where a mirror is published: a folder or an S3 bucket.

The engine never touches published paths itself; it asks a `Storage`. Both implementations keep
the same promises: a tarball becomes visible at its name-addressed path only once verified, the
catalog is replaced whole and last, and nothing else ever appears under `<U>/`. The local work
area (lock, state, history, partial downloads of a folder root) is always a folder: `Mirror`.

Methods without `async` block: the engine calls them from worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.config import Config
from ..net.fetch import Sink, Validators
from .filesindex import FilesIndex
from .fs import FileDigest, FsStorage, Mirror
from .statcheck import StatCheck


class Flag(Protocol):
    def is_set(self) -> bool: ...


Record = list[Any]
"""What the state keeps of a verified tarball: [name, size, version, md5]; `version` is what the
storage reports for the bytes as written (a file's mtime in ns, an object's ETag)."""
Stat = tuple[int, int | str]
"""Size and version of a published catalog."""


class Download(Sink, Protocol):
    """A tarball on its way in: hashed as it arrives, made visible by `seal` only if its name
    checks out, and otherwise thrown away."""

    async def open(self) -> Validators:
        """Resume what an earlier run kept, if anything; the validators it was fetched with."""
        ...

    async def drain(self) -> None: ...

    def current_name(self) -> str: ...

    async def seal(self, expected_name: str, then: Callable[[], Any]) -> tuple[FileDigest, Any]:
        """Verify; raise VerifyError (and keep nothing) on a mismatch; then `then()`."""
        ...

    async def keep_for_resume(self) -> None: ...

    def discard(self) -> None: ...

    def close_when_idle(self) -> None: ...

    def forget_meta(self) -> None: ...


@dataclass(frozen=True)
class Placed:
    """A sealed download handed to `Storage.place`."""

    dest: str
    download: Download
    digest: FileDigest
    final: Any
    """What `prepare_dest` returned for it."""


class Storage(Protocol):
    plus_encoded: bool
    """Published urls encode `+` as %2B (object stores may read a raw `+` as a space)."""
    indexed: bool
    """The state's stat index (`FilesIndex`) can vouch for what is published: a sync that
    changes nothing then never parses the state."""

    def index_holds(self, upstream: str, index: FilesIndex, cancelled: threading.Event) -> bool:
        """Every file the index records is still the one verified."""
        ...

    def where(self, upstream: str, dest: str = "") -> str:
        """How people see a published path: /srv/mirror/U/images/... or s3://bucket/key."""
        ...

    def check_upstream(self, upstream: str) -> None:
        """Refuse an upstream's published place before any request (a symlinked folder)."""
        ...

    def prepare_upstream(self, upstream: str) -> None: ...

    def prepare_dest(self, upstream: str, dest: str) -> Any: ...

    def new_download(
        self, upstream: str, dest: str, key: str, *, kept: frozenset[str], options: DownloadOptions
    ) -> Download:
        """`key` names a resumable partial of this upstream (the same url, the same key)."""
        ...

    def kept_partials(self, upstream: str) -> frozenset[str]:
        """Partial downloads an earlier run left to resume."""
        ...

    def place(
        self, upstream: str, items: list[Placed]
    ) -> tuple[dict[str, Record], list[tuple[Placed, Exception]]]:
        """Make sealed downloads visible; their records, and what was refused."""
        ...

    def link(self, source: str, upstream: str, dest: str, record: Record) -> Record:
        """Publish a second path for verified bytes (`source` is root-relative) without a
        request; the new path's record."""
        ...

    def flush(self) -> None:
        """Make new paths durable (a folder root syncs its filesystem once per batch)."""
        ...

    def publish_catalog(self, upstream: str, data: bytes | Iterable[bytes]) -> bool: ...

    def read_catalog(self, upstream: str) -> bytes | None: ...

    def catalog_stat(self, upstream: str) -> Stat | None: ...

    def still_verified(
        self, upstream: str, records: dict[str, Record]
    ) -> tuple[dict[str, Record], list[tuple[str, Record]]]:
        """The cheap check of every sync: records still matching their bytes' size and version,
        and records whose bytes exist but changed (to re-hash)."""
        ...

    def rehash(
        self, upstream: str, dest: str, cancelled: Flag | None, *, drop_cache: bool = False
    ) -> tuple[FileDigest, Record] | None:
        """Hash what is published at dest (None if it is gone); raises Cancelled. `drop_cache`:
        leave the page cache to the web server (a scheduled verify)."""
        ...

    def size_of(self, upstream: str, dest: str) -> int | None: ...

    def quarantine(self, upstream: str, dest: str) -> None:
        """Take damaged bytes away from their published path at once."""
        ...

    def scan_unknown(self, upstream: str, known: dict[str, Record]) -> Iterator[str]:
        """Dests under `<U>/images/<name>/` that `known` does not vouch for."""
        ...

    def delete(self, upstream: str, dest: str) -> None: ...

    def check(self, *, write: bool = True) -> None:
        """Before a run: the place is usable (a bucket exists and takes our credentials); with
        `write`, what a killed run left behind there is cleaned up."""
        ...

    def close(self) -> None: ...


def work_area(config: Config) -> Mirror:
    """The local folder of a mirror: the root itself, or an s3 root's state_dir."""
    return Mirror(config.root, work=config.root if config.s3 else None)


def open_storage(config: Config, mirror: Mirror, *, stat_check: StatCheck | None = None) -> Storage:
    """Where `config` publishes (blocking: an s3 client loads its service model)."""
    if config.s3 is None:
        return FsStorage(mirror, stat_check=stat_check)
    from .s3 import S3Storage

    return S3Storage(config.s3, connections=config.concurrency * 2 + 2)


@dataclass(frozen=True)
class DownloadOptions:
    budget: Any
    max_bytes: int
    on_length: Callable[[int], None] | None = None
