"""The files state's stat index: what a sync that changes nothing needs of the state, cheap to
read, and the check of the published files against it.

Kept apart from the rest of the folder storage (and light to import) because the check runs
first thing in a child process of `sync --once` (see `statcheck`).
"""

from __future__ import annotations

import array
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

_INDEX_MAGIC = b"eumirror files index 1\n"
_DESTS = re.compile(r"images/[0-9]{10}/[^/\n]+(?:\nimages/[0-9]{10}/[^/\n]+)*")
MAX_NAME = "4294967295"
_IMAGES = "images/"


@dataclass
class FilesIndex:
    """What a sync that changes nothing needs of the files state, in a form cheap to read.

    The state of a 100k-tarball mirror is ~25 MB of JSON: parsing it into a million objects costs
    more than the stat check it feeds. The index holds each verified file's dest, size and mtime
    (packed arrays), which of them the published catalog points to, the published dests with no
    verified file, and the removal times. It is written only for a state whose every record is
    well formed, next to the JSON and tied to it by a random token that starts the JSON, and by
    the JSON's size and mtime; any mismatch makes the sync parse the JSON as before.
    """

    token: str
    state_stat: list[int]
    dests: list[str]
    sizes: array.array[int]
    mtimes: array.array[int]
    referenced: bytes
    """One byte per dest: 1 when the published catalog points to it."""
    extra_refs: list[str]
    """Dests the published catalog points to that have no verified record."""
    removed: dict[str, float]

    @staticmethod
    def encode(doc: dict[str, Any], token: str) -> Any:
        """A function of the state file's (size, mtime) giving the index bytes, or None when a
        record does not have the shape a verified record has."""
        files, published, removed = doc.get("files"), doc.get("published"), doc.get("removed")
        if not (
            isinstance(files, dict) and isinstance(published, dict) and isinstance(removed, dict)
        ):
            return None
        # Checked in bulk (C loops, not a Python test per record): this runs at every save.
        recs, refs_of = list(files.values()), list(published.values())
        if (recs and (set(map(type, recs)) != {list} or set(map(len, recs)) != {4})) or (
            refs_of and (set(map(type, refs_of)) != {list} or set(map(len, refs_of)) != {2})
        ):
            return None
        try:
            dests = "\n".join(files)
            names = "\n".join([r[0] for r in recs])
            sizes = array.array("q", [r[1] for r in recs])
            mtimes = array.array("q", [r[2] for r in recs])
        except (TypeError, OverflowError):
            return None
        # Every dest is images/<its record's name>/<a file name>, every name a valid one.
        if recs and not (
            _DESTS.fullmatch(dests)
            and names == "\n".join([d[7:17] for d in files])
            and dests.count("\n") == len(recs) - 1
            and max(names.split("\n")) <= MAX_NAME
        ):
            return None
        refs = {v[1] for v in refs_of}
        refs.discard("")
        if not set(map(type, refs)) <= {str}:
            return None
        if not all(isinstance(v, int | float) for v in removed.values()):
            return None
        referenced = bytes(map(refs.__contains__, files))
        # Usually every published dest has its record: then the (costly) difference is empty.
        extra = sorted(refs.difference(files)) if referenced.count(1) < len(refs) else []
        encoded = dests.encode()

        def finish(size: int, mtime_ns: int) -> bytes:
            head = {
                "token": token,
                "state": [size, mtime_ns],
                "count": len(files),
                "dests_bytes": len(encoded),
                "extra_refs": extra,
                "removed": removed,
            }
            return b"".join(
                (
                    _INDEX_MAGIC,
                    orjson.dumps(head),
                    b"\n",
                    encoded,
                    sizes.tobytes(),
                    mtimes.tobytes(),
                    referenced,
                )
            )

        return finish

    @classmethod
    def decode(cls, data: bytes) -> FilesIndex | None:
        if not data.startswith(_INDEX_MAGIC):
            return None
        start = len(_INDEX_MAGIC)
        end = data.index(b"\n", start)
        head = orjson.loads(data[start:end])
        count, length = int(head["count"]), int(head["dests_bytes"])
        pos = end + 1
        dests = data[pos : pos + length].decode().split("\n") if count else []
        pos += length
        sizes, mtimes = array.array("q"), array.array("q")
        sizes.frombytes(data[pos : pos + 8 * count])
        mtimes.frombytes(data[pos + 8 * count : pos + 16 * count])
        referenced = data[pos + 16 * count :]
        if not (len(dests) == len(sizes) == len(mtimes) == len(referenced) == count):
            return None
        return cls(
            str(head["token"]),
            list(head["state"]),
            dests,
            sizes,
            mtimes,
            referenced,
            list(head["extra_refs"]),
            dict(head["removed"]),
        )


def read_index(index_path: Path, state_path: Path) -> FilesIndex | None:
    """The stat index at `index_path` when it matches the state file exactly (the same token at
    its start, size and mtime); None otherwise (the JSON is parsed instead)."""
    try:
        found = FilesIndex.decode(index_path.read_bytes())
        if found is None:
            return None
        expected = b'{"index":"' + found.token.encode() + b'"'
        with open(state_path, "rb") as f:
            st = os.fstat(f.fileno())
            head = f.read(len(expected))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if head != expected or [st.st_size, st.st_mtime_ns] != found.state_stat:
        return None
    return found


def files_match(folder: Path, index: FilesIndex, part: slice = slice(None)) -> bool:
    """Every file the index records (within `part`) is still the one verified: a regular file
    of the same size and mtime, one lstat each relative to the upstream's `images/` folder (each
    path component looked up costs as much as the rest of the lstat on a small VM). Any
    difference sends the sync down the full check, which finds and handles it."""
    dests = index.dests[part]
    try:
        fd = os.open(folder / _IMAGES, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return not dests
    try:
        lstat, is_reg, skip = os.lstat, stat.S_ISREG, len(_IMAGES)
        for dest, size, mtime in zip(dests, index.sizes[part], index.mtimes[part], strict=True):
            if not dest.startswith(_IMAGES):
                return False
            try:
                st = lstat(dest[skip:], dir_fd=fd)
            except OSError:
                return False
            if st.st_size != size or st.st_mtime_ns != mtime or not is_reg(st.st_mode):
                return False
        return True
    finally:
        os.close(fd)
